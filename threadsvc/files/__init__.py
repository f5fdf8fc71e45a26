"""Where uploads and results are kept: one `FileStorage` interface (base.py), three backends.

`local` keeps files under `data-dir` (one node, or a directory every node mounts), `postgres`
keeps them in the store's own database, `s3` in an S3-compatible bucket. `make_files` picks one
from the `files` setting (checked by `Settings`: a kind it names is one of these).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, cast

from threadsvc.files.base import FileStorage
from threadsvc.settings import Settings, SettingsError


def make_files(settings: Settings) -> FileStorage:
    kind = settings.files_kind
    if kind == "postgres":
        backend = _backend("postgres", "PostgresFiles", "postgres")
        return cast(FileStorage, backend(settings.db))
    if kind == "s3":
        backend = _backend("s3", "S3Files", "s3")
        return cast(FileStorage, backend(
            endpoint=settings.s3_endpoint, bucket=settings.s3_bucket, prefix=settings.s3_prefix,
            region=settings.s3_region, presign=settings.s3_presign,
        ))
    from threadsvc.files.local import LocalFiles

    return LocalFiles(Path(settings.data_dir))


def _backend(module: str, name: str, extra: str) -> Any:
    """A backend's class, imported only when chosen (each needs its own client library)."""
    try:
        return getattr(importlib.import_module(f"threadsvc.files.{module}"), name)
    except ImportError as exc:
        raise SettingsError(
            f"setting 'files': {module} files need {exc.name or 'a library'} ({exc}); "
            f"install threadsvc[{extra}]"
        ) from exc
