"""`threadsvc backup DEST`, `threadsvc export > dump` and `threadsvc import < dump`.

`backup` copies a SQLite store and its local files while the server runs (threadsvc/backup.py);
`export` and `import` move a whole deployment between stores and file storages as one stream
(threadsvc/transfer.py). What a person reads goes to standard error; the dump alone is on
standard output.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread
import click

from threadsvc import backup as backups
from threadsvc import transfer
from threadsvc.cli.admin import refuse_foreign, run_said, settings_from, store_options
from threadsvc.files import make_files
from threadsvc.files.base import FileStorage
from threadsvc.settings import Settings
from threadsvc.store import make_store
from threadsvc.store.base import Store

T = TypeVar("T")


def _say(text: str) -> None:
    click.echo(text, err=True)


async def _with_store(settings: Settings, action: Callable[[Store, FileStorage], Awaitable[T]],
                      create: bool) -> T:
    store, files = make_store(settings), make_files(settings)
    await store.open(create)
    try:
        await files.open()
        try:
            return await action(store, files)
        finally:
            await files.close()
    finally:
        await store.close()


@click.command("backup")
@store_options
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def backup(config: str | None, db: str | None, dest: Path) -> None:
    """Copy the SQLite store and its local files into DEST (new or empty), while the server
    runs. Restore: see Operations in the README."""
    settings = settings_from(config, db=db)
    refuse_foreign(settings)

    async def run() -> backups.Copied:
        backups.check_backup(settings)  # before opening anything
        files = make_files(settings)
        await files.open()
        try:
            return await backups.backup(settings, files, dest, _say)
        finally:
            await files.close()

    copied = run_said(settings, run)
    _say(f"backed up the store ({copied.database_bytes} bytes) and {copied.files} files "
         f"({copied.bytes} bytes) into {dest}")


@click.command("export")
@store_options
def export(config: str | None, db: str | None) -> None:
    """Write the whole deployment (users, groups, tokens, clients, threads, logs, files,
    webhooks) to standard output, for `threadsvc import`. Stop the nodes first."""
    if sys.stdout.isatty():
        raise click.UsageError("the dump is binary-safe JSON lines: redirect it to a file")
    settings = settings_from(config, db=db)
    refuse_foreign(settings)
    _keep_private(sys.stdout.fileno())
    out = anyio.wrap_file(sys.stdout.buffer)

    async def run() -> transfer.Counts:
        counts = await _with_store(settings, lambda s, f: transfer.export(s, f, out.write),
                                   create=False)
        await out.flush()
        return counts

    counts = run_said(settings, run)
    _say(f"exported {_rows(counts)} and {counts.files} files ({counts.bytes} bytes)")


@click.command("import")
@store_options
def import_(config: str | None, db: str | None) -> None:
    """Read a dump of `threadsvc export` from standard input into this store, which must be
    new (empty), and its file storage. Interrupted, run it again: it starts over."""
    if sys.stdin.isatty():
        raise click.UsageError("give the dump on standard input: threadsvc import < dump")
    settings = settings_from(config, db=db)
    refuse_foreign(settings, files=True)
    source = sys.stdin.buffer

    async def read_line(limit: int) -> bytes:
        return await anyio.to_thread.run_sync(source.readline, limit)

    async def into(store: Store, files: FileStorage) -> transfer.Counts:
        def restarting() -> None:
            _say("an earlier import stopped part-way: starting over")

        with tempfile.TemporaryDirectory(prefix="threadsvc-import-") as scratch:
            return await transfer.import_dump(store, files, read_line, Path(scratch),
                                              restarting)

    counts = run_said(settings, lambda: _with_store(settings, into, create=True))
    _say(f"imported {_rows(counts)} and {counts.files} files ({counts.bytes} bytes)")


def _keep_private(fd: int) -> None:
    """The dump holds password hashes and webhook secrets: a file it goes to is made
    owner-only, as the store is, whatever the umask it was created under."""
    found = os.fstat(fd)
    if stat.S_ISREG(found.st_mode) and found.st_mode & 0o077:
        try:
            os.fchmod(fd, stat.S_IMODE(found.st_mode) & 0o700)
        except OSError as exc:
            _say(f"the dump may be readable by other users: {exc}")


def _rows(counts: transfer.Counts) -> str:
    return ", ".join(f"{n} {name}" for name, n in counts.rows.items() if n) or "no rows"


COMMANDS = (backup, export, import_)
