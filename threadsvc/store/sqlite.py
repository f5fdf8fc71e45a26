"""The embedded store: one SQLite file in WAL mode.

One writer connection on its own thread serialises every write; readers have connections of
their own on a small pool of threads, so reads never wait behind the writer (WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from threadsvc.models import (
    ActiveLimits,
    Level,
    LogEvent,
    LogPage,
    NewLogEvent,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
)
from threadsvc.store.common import (
    ClaimedLogSeqs,
    check_limits,
    check_replay,
    count_active_args,
    insert_args,
    list_query,
    state_args,
    thread_from_row,
)
from threadsvc.store.migrate import migrate_sqlite
from threadsvc.store.queries import load_queries
from threadsvc.store.sqlite_identity import IdentityQueries
from threadsvc.store.sqlite_webhooks import WebhookQueries

T = TypeVar("T")
Q = load_queries("sqlite")
# How long a write waits for a lock another process holds (from the call); then StoreUnavailable.
BUSY_TIMEOUT_MS = 10_000

def _check_limits(conn: sqlite3.Connection, thread: Thread, limits: ActiveLimits) -> None:
    mine, group = conn.execute(Q["count_active"], count_active_args(thread, limits)).fetchone()
    check_limits(thread, limits, mine, group)


def _event_tuple(thread_id: str, event: LogEvent) -> tuple[str, int, int, int, str]:
    """The positional arguments of insert_log_events."""
    return (thread_id, event.seq, event.timestamp, int(event.level), event.text)


class SQLiteStore(IdentityQueries, WebhookQueries):
    shared = False  # one node owns an embedded store

    def __init__(self, path: str | Path, readers: int = 4) -> None:
        self.path = Path(path)
        self._readers = readers
        self._local = threading.local()
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._writer: sqlite3.Connection | None = None
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._claimed_seqs = ClaimedLogSeqs()
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

    async def open(self) -> None:
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
            conn.execute("PRAGMA journal_mode = WAL")
            migrate_sqlite(conn)
            self._writer = conn

        await self._run(self._writer_pool, setup)

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
            raise _store_error(exc) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
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
        return await future

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

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def on_reader() -> T:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect()
                conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")  # one snapshot for every statement of `fn`
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await self._run(self._reader_pool, on_reader)

    # -- between nodes: there are none ------------------------------------------------------
    async def announce(self, message: str) -> None:
        pass

    async def announcements(self) -> AsyncIterator[str]:
        await asyncio.Event().wait()
        yield ""  # never reached: makes this an async generator

    # -- threads ----------------------------------------------------------------------------
    async def insert_thread(
        self,
        thread: Thread,
        first_event: LogEvent,
        *,
        limits: ActiveLimits | None = None,
        idempotency_key: str | None = None,
        idempotency_since: int = 0,
        request_hash: str | None = None,
    ) -> tuple[Thread, bool]:
        args = insert_args(thread, first_event, idempotency_key, request_hash)

        def do(conn: sqlite3.Connection) -> tuple[Thread, bool]:
            # One write transaction at a time (BEGIN IMMEDIATE): the checks and the insert are
            # atomic, so concurrent starts cannot overshoot a limit or duplicate a key.
            if idempotency_key is not None:
                key = {
                    "username": thread.username, "group_id": thread.group_id, "key": idempotency_key
                }
                row = conn.execute(
                    Q["find_idempotent"], {**key, "since": idempotency_since}
                ).fetchone()
                if row is not None:
                    check_replay(idempotency_key, row["request_hash"], request_hash)
                    return thread_from_row(row), False
                conn.execute(Q["release_idempotency_key"], {**key, "since": idempotency_since})
            if limits is not None:
                _check_limits(conn, thread, limits)
            conn.execute(Q["insert_thread"], args)  # with its idempotency key
            conn.execute(Q["insert_log_events"], _event_tuple(thread.id, first_event))
            return thread, True

        return await self._write(do)

    async def get_thread(self, thread_id: str) -> Thread | None:
        def do(conn: sqlite3.Connection) -> Thread | None:
            row = conn.execute(Q["get_thread"], {"id": thread_id}).fetchone()
            return None if row is None else thread_from_row(row)

        return await self._read(do)

    async def list_threads(self, query: ThreadFilter) -> ThreadPage:
        plan = list_query(query, Q, json.dumps(sorted(s.value for s in query.statuses)))

        def do(conn: sqlite3.Connection) -> ThreadPage:
            if plan.counted:
                total, bucket, newer = conn.execute(*plan.counts(Q)).fetchone()
                rows = [] if bucket is None else conn.execute(*plan.rows(Q, bucket, newer)).fetchall()
            else:
                rows = conn.execute(*plan.rows(Q)).fetchall()
                total = conn.execute(*plan.total(Q)).fetchone()[0]
            return ThreadPage(
                threads=[thread_from_row(row) for row in rows],
                total=total,
                page=query.page,
                pagesize=query.pagesize,
            )

        return await self._read(do)

    async def claim_threads(self, node: str, limit: int, now: int) -> list[Thread]:
        def do(conn: sqlite3.Connection) -> tuple[list[Thread], dict[str, int]]:
            args = {"node": node, "limit": limit, "now": now}
            rows = conn.execute(Q["claim_threads"], args).fetchall()
            claimed = [thread_from_row(row) for row in sorted(rows, key=lambda r: r["seq"])]
            self._status_changed(conn, claimed)
            ids = json.dumps([thread.id for thread in claimed])
            seqs = dict.fromkeys((thread.id for thread in claimed), 0)
            seqs.update(conn.execute(Q["last_log_seqs"], {"ids": ids}).fetchall())
            return claimed, seqs

        claimed, seqs = await self._write(do)
        self._claimed_seqs.remember(seqs)  # once committed: a rolled-back claim took nothing
        return claimed

    async def write_batch(
        self,
        node: str,
        threads: list[Thread],
        status_changes: list[Thread],
        events: list[NewLogEvent],
        now: int,
    ) -> set[str]:
        def do(conn: sqlite3.Connection) -> set[str]:
            conn.executemany(
                Q["insert_log_events"], [_event_tuple(e.thread_id, e.event) for e in events]
            )
            lost = set()
            for thread in threads:
                if conn.execute(Q["update_running_thread"], state_args(thread, node, now)).rowcount == 0:
                    lost.add(thread.id)
            self._status_changed(conn, [t for t in status_changes if t.id not in lost])
            return lost

        return await self._write(do)

    async def cancel_initialised(
        self, thread_id: str, message: str, event: LogEvent
    ) -> Thread | None:
        now = event.timestamp

        def do(conn: sqlite3.Connection) -> Thread | None:
            args = {"id": thread_id, "now": now, "message": message}
            row = conn.execute(Q["cancel_initialised"], args).fetchone()
            if row is None:
                return None
            conn.execute(
                Q["append_log_event"],
                {"thread_id": thread_id, "ts": now, "level": int(event.level), "text": event.text},
            )
            cancelled = thread_from_row(row)
            self._status_changed(conn, [cancelled])
            return cancelled

        return await self._write(do)

    async def request_cancel(self, thread_id: str) -> None:
        await self._write(lambda conn: conn.execute(Q["request_cancel"], {"id": thread_id}))

    async def cancel_requests(self, node: str) -> list[str]:
        def do(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(Q["cancel_requests"], {"node": node})]

        return await self._read(do)

    async def heartbeat(self, node: str, now: int) -> None:
        await self._write(lambda conn: conn.execute(Q["heartbeat"], {"node": node, "now": now}))

    async def running_threads(self) -> list[Thread]:
        def do(conn: sqlite3.Connection) -> list[Thread]:
            return [thread_from_row(row) for row in conn.execute(Q["running_threads"])]

        return await self._read(do)

    async def recover_thread(
        self, thread: Thread, requeue: bool, message: str, now: int, level: Level
    ) -> Thread | None:
        def do(conn: sqlite3.Connection) -> Thread | None:
            query = Q["requeue_orphan"] if requeue else Q["fail_orphan"]
            args = {"id": thread.id, "node": thread.node, "now": now, "message": message}
            row = conn.execute(query, args).fetchone()
            if row is None:
                return None
            conn.execute(
                Q["append_log_event"],
                {"thread_id": thread.id, "ts": now, "level": int(level), "text": message},
            )
            recovered = thread_from_row(row)
            self._status_changed(conn, [recovered])
            return recovered

        return await self._write(do)

    async def delete_thread(self, thread_id: str) -> bool:
        def do(conn: sqlite3.Connection) -> bool:
            if conn.execute(Q["delete_thread"], {"id": thread_id}).rowcount == 0:
                return False
            conn.execute(Q["delete_logs"], {"id": thread_id})
            return True

        return await self._write(do)

    async def get_logs(self, thread_id: str, since: int, limit: int, level: Level) -> LogPage:
        def do(conn: sqlite3.Connection) -> LogPage:
            args = {"thread_id": thread_id, "since": since, "limit": limit + 1, "level": int(level)}
            rows = conn.execute(Q["get_logs"], args).fetchall()
            total = conn.execute(Q["last_log_seq"], {"thread_id": thread_id}).fetchone()[0]
            events = [LogEvent(row[0], row[1], Level(row[2]), row[3]) for row in rows[:limit]]
            return LogPage(
                thread_id=thread_id,
                events=events,
                total=total,
                next=events[-1].seq if events else since,
                more=len(rows) > limit,
            )

        return await self._read(do)

    async def expired_results(self, now: int, limit: int) -> list[Thread]:
        def do(conn: sqlite3.Connection) -> list[Thread]:
            rows = conn.execute(Q["expired_results"], {"now": now, "limit": limit}).fetchall()
            return [thread_from_row(row) for row in rows]

        return await self._read(do)

    async def forget_result_file(self, thread_id: str) -> None:
        await self._write(lambda conn: conn.execute(Q["forget_result_file"], {"id": thread_id}))

    async def ended_before(self, moment: int, limit: int) -> list[Thread]:
        def do(conn: sqlite3.Connection) -> list[Thread]:
            rows = conn.execute(Q["ended_before"], {"moment": moment, "limit": limit}).fetchall()
            return [thread_from_row(row) for row in rows]

        return await self._read(do)

    async def forget_idempotency_keys(self, created_before: int) -> int:
        def do(conn: sqlite3.Connection) -> int:
            return conn.execute(Q["forget_idempotency_keys"], {"before": created_before}).rowcount

        return await self._write(do)

    async def last_log_seq(self, thread_id: str) -> int:
        claimed = self._claimed_seqs.take(thread_id)
        if claimed is not None:
            return claimed

        def do(conn: sqlite3.Connection) -> int:
            return int(conn.execute(Q["last_log_seq"], {"thread_id": thread_id}).fetchone()[0])

        return await self._read(do)

    async def count_by_status(self) -> dict[Status, int]:
        def do(conn: sqlite3.Connection) -> dict[Status, int]:
            rows = conn.execute(Q["count_threads_by_status"]).fetchall()
            return {Status(row[0]): row[1] for row in rows}

        return await self._read(do)


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
