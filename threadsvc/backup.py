"""`threadsvc backup DEST`: a consistent copy of a SQLite store and its local files, taken while
the server runs.

DEST gets `threadsvc.db` (SQLite's `VACUUM INTO`: one read transaction, so one moment of the
store, taken beside the running writer, which WAL does not block) and `files/` (the uploads
and results of a `local` file storage, under their keys). Files are never changed once put
(a result or an upload is put whole, then only deleted), so copying them before and after the
database copy gives every file the copied database names, but one made and deleted again
while the backup ran. A PostgreSQL store is backed up with pg_dump (with `files = "postgres"`
its files are in the database); an s3 bucket by its own means: this refuses, saying so,
rather than pretend.

Threat model: DEST is the operator's; it must not exist or be empty, so nothing of someone
else's is overwritten, and what is made there is owner-only (0700/0600), as the store is.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

from threadsvc import private
from threadsvc.errors import ThreadsvcError
from threadsvc.files.base import FileStorage, is_key
from threadsvc.settings import Settings

DATABASE = "threadsvc.db"
FILES = "files"
PREFIXES = ("results/", "uploads/")


class BackupRefused(ThreadsvcError):
    """This store or storage is not backed up by `threadsvc backup` (the message says how)."""


@dataclass
class Copied:
    files: int = 0
    bytes: int = 0  # of the files
    database_bytes: int = 0


def check_backup(settings: Settings) -> Path:
    """The SQLite database to back up; BackupRefused, saying what to do, for PostgreSQL."""
    path = settings.sqlite_path
    if path is None:
        extra = {
            "postgres": "its files are in the database, so the dump holds them",
            "s3": f"back up the bucket '{settings.s3_bucket}' by its own means (versioning, "
                  "replication)",
            "local": f"copy data-dir ({settings.data_dir}) too, after the dump",
        }[settings.files_kind]
        raise BackupRefused(
            "a PostgreSQL store is backed up with PostgreSQL's own tools: pg_dump --format=custom "
            f"(restore with pg_restore into an empty database); {extra}"
        )
    if not path.exists():
        raise BackupRefused(f"there is no store at {path}")
    return path


def prepare(dest: Path) -> None:
    """Make DEST owner-only; it must not exist or be an empty directory."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupRefused(f"{dest} exists and is not an empty directory")
    private.make_dirs(dest)
    os.chmod(dest, private.DIR_MODE)


def copy_database(source: Path, target: Path) -> int:
    """VACUUM INTO `target` (created empty and owner-only first, as SQLite would follow the
    umask); its size."""
    private.create(target).close()
    conn = sqlite3.connect(source, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("VACUUM INTO ?", (str(target),))
    finally:
        conn.close()
    return target.stat().st_size


def _copy_file(source: Path, target: Path) -> int:
    private.make_dirs(target.parent)
    with open(source, "rb") as read, private.create(target) as write:
        shutil.copyfileobj(read, write, 1024 * 1024)
    return target.stat().st_size


async def copy_files(files: FileStorage, root: Path, copied: Copied) -> None:
    """Copy every upload and result not yet under `root` (a key there is whole: it was copied
    to its end before, as files never change once put)."""
    for prefix in PREFIXES:
        keys = sorted([key async for key in files.keys(prefix) if is_key(key)])
        for key in keys:
            source, target = files.local_path(key), root / key
            if source is None or target.exists():
                continue
            try:
                size = await anyio.to_thread.run_sync(_copy_file, source, target)
            except FileNotFoundError:  # deleted since listed (a purge): nothing to keep
                target.unlink(missing_ok=True)
                continue
            copied.files += 1
            copied.bytes += size


async def backup(settings: Settings, files: FileStorage, dest: Path,
                 say: Callable[[str], None]) -> Copied:
    """Back up the SQLite store of `settings` and, when local, its files into `dest`."""
    database = check_backup(settings)
    await anyio.to_thread.run_sync(prepare, dest)
    copied = Copied()
    local = files.kind == "local"
    if local:
        await copy_files(files, dest / FILES, copied)  # most of them, before the database
    copied.database_bytes = await anyio.to_thread.run_sync(
        copy_database, database, dest / DATABASE)
    if local:
        await copy_files(files, dest / FILES, copied)  # those made meanwhile
    else:
        say(f"the files are in {files.kind}: back up the bucket '{settings.s3_bucket}' by its "
            "own means")
    return copied
