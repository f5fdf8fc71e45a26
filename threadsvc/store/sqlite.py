"""The embedded store: one SQLite file in WAL mode.

One writer connection on its own thread serialises every write; readers have connections of
their own on a small pool of threads, so reads never wait behind the writer (WAL).

Here: the connections, the writer thread and its group commit; the dialect primitives and a
start's insert are in sqlite_tx.py, every other rule is both stores' (threads.py, identity.py,
webhooks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from threadsvc import private
from threadsvc.errors import Conflict, StoreUnavailable, ThreadsvcError
from threadsvc.models import Thread
from threadsvc.store.base import Store
from threadsvc.store.dialect import Rule
from threadsvc.store.migrate import NotAStore, has_schema_sqlite, migrate_sqlite
from threadsvc.store.sqlite_tx import SQLiteTx, insert_start, run_now
from threadsvc.store.starts import Start

T = TypeVar("T")
# How long a write waits for a lock another process holds (from the call); then StoreUnavailable.
BUSY_TIMEOUT_MS = 10_000


class SQLiteStore(Store):
    shared = False  # one node owns an embedded store

    def __init__(self, path: str | Path, readers: int = 4) -> None:
        super().__init__()
        self.path = Path(path)
        self._readers = readers
        self._local = threading.local()
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._queued: list[_QueuedWrite] = []  # writes waiting for the writer thread
        self._draining = False  # whether the writer thread is taking them

    # -- plumbing ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        # NORMAL in WAL mode: a commit survives a crash of the process; see README, Operations.
        conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            self._all.append(conn)
        return conn

    async def open(self, create: bool = True) -> None:
        if not create and not self.path.is_file():
            raise NotAStore(f"no store at {self.path}")
        if self.path.parent and not self.path.parent.exists():
            private.make_dirs(self.path.parent)
        if str(self.path) != ":memory:":
            # Owner-only before SQLite opens it: SQLite gives its -wal and -shm files the mode
            # of the database file.
            with contextlib.suppress(OSError):  # SQLite itself says what is wrong
                os.close(os.open(self.path, os.O_RDONLY | os.O_CREAT, private.FILE_MODE))
            for suffix in ("", "-wal", "-shm"):
                private.restrict(Path(f"{self.path}{suffix}"))
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(self._readers, thread_name_prefix="sqlite-reader")

        def setup() -> None:
            conn = self._connect()
            if not create and not has_schema_sqlite(conn):  # before WAL changes a foreign file
                raise NotAStore(f"{self.path} is not a threadsvc store (no schema_version)")
            conn.execute("PRAGMA journal_mode = WAL")
            migrate_sqlite(conn, create)
            self._writer = conn

        try:
            await self._run(self._writer_pool, setup)
        except BaseException:  # refused (NotAStore, NewerSchema) or failed: nothing left open
            await self.close()
            raise

    async def close(self) -> None:
        for pool in (self._writer_pool, self._reader_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._writer_pool = self._reader_pool = None

    async def _run(self, pool: ThreadPoolExecutor | None, fn: Callable[[], T]) -> T:
        if pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn)
        except sqlite3.Error as exc:
            error = _store_error(exc)
            if isinstance(error, StoreUnavailable):
                self.errors += 1
            raise error from exc

    async def _write(self, rule: Rule[T]) -> T:
        return await self._submit(lambda conn: run_now(rule(SQLiteTx(conn))))

    async def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a write transaction: its own savepoint inside one transaction shared
        with every write queued meanwhile (group commit: concurrent starts cost one commit,
        not one each). `fn` raising undoes its own changes only."""
        if self._writer_pool is None:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queued.append(_QueuedWrite(fn, future, loop, time.monotonic()))
            start = not self._draining
            self._draining = True
        if start:
            try:
                loop.run_in_executor(self._writer_pool, self._drain)
            except RuntimeError:  # the pool shut down meanwhile: the store is closing
                with self._lock:
                    self._queued, self._draining = [], False
                raise StoreUnavailable("the store is closed") from None
        try:
            return await future
        except StoreUnavailable:
            self.errors += 1
            raise

    def _drain(self) -> None:
        """On the writer thread: commit what is queued, batch after batch, until none is."""
        while True:
            with self._lock:
                batch, self._queued = self._queued, []
                if not batch:
                    self._draining = False
                    return
            try:
                outcomes = self._commit(batch)
            except sqlite3.Error as exc:  # a savepoint could not be undone: undo everything
                with contextlib.suppress(sqlite3.Error):
                    self._writer.execute("ROLLBACK")  # type: ignore[union-attr]
                outcomes = [_store_error(exc)] * len(batch)
            for write, outcome in zip(batch, outcomes, strict=True):
                with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                    write.loop.call_soon_threadsafe(_settle, write.future, outcome)

    def _commit(self, batch: list[_QueuedWrite]) -> list[BaseException | tuple[object]]:
        conn = self._writer
        assert conn is not None
        # The busy timeout counts from the oldest write's call, not from the writer thread's
        # turn: while another process holds the write lock, writes queued behind one that
        # waits would otherwise each wait it again in turn, and a start answer after minutes.
        queued = int((time.monotonic() - batch[0].submitted) * 1000)
        try:
            if queued > 100:
                conn.execute(f"PRAGMA busy_timeout = {max(0, BUSY_TIMEOUT_MS - queued)}")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                if queued > 100:
                    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:
            return [_store_error(exc)] * len(batch)
        outcomes: list[BaseException | tuple[object]] = []
        for write in batch:
            conn.execute("SAVEPOINT one")
            try:
                outcomes.append((write.fn(conn),))
                conn.execute("RELEASE one")
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, not lost
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                outcomes.append(_store_error(exc) if isinstance(exc, sqlite3.Error) else exc)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            return [_store_error(exc)] * len(batch)
        return outcomes

    async def _read(self, rule: Rule[T]) -> T:
        def on_reader() -> T:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect()
                conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")  # one snapshot for every statement of the rule
            try:
                return run_now(rule(SQLiteTx(conn)))
            finally:
                conn.execute("COMMIT")

        return await self._run(self._reader_pool, on_reader)

    _snapshot = _read  # a reader's every statement shares one snapshot already

    # -- between nodes: there are none ------------------------------------------------------
    async def announce(self, message: str) -> None:
        pass

    async def announcements(self) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield ""  # never reached: makes this an async generator

    # -- a start: the rest of the threads' methods are ThreadRules' ----------------------------
    async def _insert(self, start: Start) -> tuple[Thread, bool]:
        return await self._write(lambda tx: insert_start(tx, start))


@dataclass(eq=False)
class _QueuedWrite:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    submitted: float  # time.monotonic() of the call


def _store_error(exc: sqlite3.Error) -> ThreadsvcError:
    error: ThreadsvcError
    if isinstance(exc, sqlite3.IntegrityError):
        error = Conflict(str(exc))
    else:
        error = StoreUnavailable(f"SQLite store: {exc}")
    error.__cause__ = exc
    return error


def _settle(future: asyncio.Future[Any], outcome: BaseException | tuple[object]) -> None:
    if future.cancelled():  # the caller gave up; the write stands (as with any commit)
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome[0])
