"""Where uploads and results are kept: one `FileStorage` interface (base.py), three backends.

`local` keeps files under `data-dir` (one node, or a directory every node mounts), `postgres`
keeps them in the store's own database, `s3` in an S3-compatible bucket. `make_files` picks one
from the `files` setting (checked by `Settings`: a kind it names is one of these).
"""

from __future__ import annotations

from pathlib import Path

from threadsvc.files.base import FileStorage
from threadsvc.settings import Settings, SettingsError


def make_files(settings: Settings) -> FileStorage:
    """The storage the `files` setting names, not yet opened; each backend is imported only
    when chosen, as each needs its own client library."""
    kind = settings.files_kind
    try:
        if kind == "postgres":
            from threadsvc.files.postgres import PostgresFiles

            return PostgresFiles(settings.db)
        if kind == "s3":
            from threadsvc.files.s3 import S3Files

            return S3Files(
                endpoint=settings.s3_endpoint, bucket=settings.s3_bucket,
                prefix=settings.s3_prefix, region=settings.s3_region, presign=settings.s3_presign,
            )
    except ImportError as exc:
        raise SettingsError(
            f"setting 'files': {kind} files need {exc.name or 'a library'} ({exc}); "
            f"install threadsvc[{kind}]"
        ) from exc
    from threadsvc.files.local import LocalFiles

    return LocalFiles(Path(settings.data_dir))
