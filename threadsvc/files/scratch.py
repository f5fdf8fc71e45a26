"""This process's scratch directory on the node's own disk: `data-dir/work/NAME/`.

A result is written here as the job produces it and an upload as it arrives, then each is `put`
into the file storage whole; a job whose storage keeps no local copies reads its uploads from
here too. Nothing here is ever served. A process holds an exclusive `flock` on `NAME.lock` for
as long as it runs, so at start-up every directory whose lock nobody holds (its process was
killed) is removed, while those of live processes sharing `data-dir` are left alone. The lock
file is locked before it gets its name, so no other process ever sees it unlocked while its
owner lives.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from threadsvc import private

log = logging.getLogger(__name__)


class Scratch:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "work"
        self._name = uuid.uuid4().hex
        self.directory = self.root / self._name
        self._lock: int | None = None

    def open(self) -> int:
        """Remove what killed processes left, then take this process's directory; returns how
        many directories were removed."""
        private.make_dirs(self.root)
        removed = sweep(self.root)
        claiming = self.root / f".{self._name}.new"
        fd = os.open(claiming, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(claiming, self.root / f"{self._name}.lock")
        self._lock = fd
        private.make_dirs(self.directory)
        return removed

    def close(self) -> None:
        if self._lock is None:
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        (self.root / f"{self._name}.lock").unlink(missing_ok=True)
        os.close(self._lock)
        self._lock = None

    def file(self, what: str) -> Path:
        """A new path for one file (`what` is made by the server: a thread id, a key's tail)."""
        return self.directory / f"{what}.{uuid.uuid4().hex}"

    def folder(self, what: str) -> Path:
        """A new directory (a thread's fetched uploads); the caller removes it."""
        path = self.directory / f"{what}.{uuid.uuid4().hex}"
        private.make_dirs(path)
        return path


def sweep(root: Path) -> int:
    """Remove the scratch of every process that no longer holds its lock."""
    removed = 0
    names = {p.name for p in root.iterdir()}
    for name in names:
        lock = name.endswith(".lock") or (name.startswith(".") and name.endswith(".new"))
        if lock and _dead(root / name) and not _claiming(root / name):
            owner = name.removesuffix(".lock")
            if not owner.startswith("."):
                removed += _remove(root / owner)
            (root / name).unlink(missing_ok=True)
    for name in names:  # a directory without its lock file: its owner is gone (a directory
        # is made after its lock file is named, so the lock file is looked for afresh)
        ours = not name.startswith(".") and not name.endswith(".lock")
        if ours and not (root / f"{name}.lock").exists():
            removed += _remove(root / name)
    return removed


def _claiming(path: Path) -> bool:
    """A `.new` file made in the last minute may be about to be locked by a starting process."""
    try:
        return path.name.endswith(".new") and time.time() - path.stat().st_mtime < 60
    except FileNotFoundError:
        return True


def _dead(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its process is alive
    finally:
        os.close(fd)  # releases the lock if it was taken
    return True


def _remove(path: Path) -> int:
    if not path.exists():
        return 0
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    log.info("removed scratch left by a stopped process: %s", path)
    return 1
