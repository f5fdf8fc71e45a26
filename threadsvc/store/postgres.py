"""The shared store: PostgreSQL through psycopg 3, on a pool of connections, for one or many nodes.

Each method is one transaction on a pooled connection (which is in autocommit outside them).
Writes run under READ COMMITTED. Where SQLite's single writer makes a read-then-write atomic (the
limits and idempotency key of a start, a failed login, a group's id), this store first takes a
transaction-level advisory lock (queries.sql, "Only PostgreSQL"). A read of several statements
shares one REPEATABLE READ snapshot, as SQLite's readers do. Deadlocks and serialization failures
roll the whole transaction back, so it is run again, a few times at most.

Driver errors stop here: unique and other integrity violations become Conflict, everything else
(no server, pool exhausted, broken connection) StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncClientCursor, AsyncConnection, IsolationLevel
from psycopg.errors import DeadlockDetected, SerializationFailure, TransactionRollback
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from threadsvc.errors import Conflict, StoreUnavailable
from threadsvc.models import (
    SERVER_GROUP_ID,
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
from threadsvc.store import RedactStoreUrl, redact
from threadsvc.store.coalesce import Coalescer
from threadsvc.store.common import (
    ClaimedLogSeqs,
    check_limits,
    check_replay,
    columns,
    count_active_args,
    event_row,
    insert_args,
    list_query,
    state_args,
    thread_from_row,
)
from threadsvc.store.migrate import migrate_postgres
from threadsvc.store.postgres_identity import PostgresIdentityQueries
from threadsvc.store.postgres_sql import (
    Conn,
    Q,
    execute,
    fetch_all,
    fetch_one,
    fetch_value,
)
from threadsvc.store.postgres_webhooks import PostgresWebhookQueries

T = TypeVar("T")
ATTEMPTS = 3  # runs of a transaction that a deadlock or serialization failure rolled back
log = logging.getLogger(__name__)
CHANNEL = "threadsvc"  # the NOTIFY channel nodes announce on
DRIVER_LOGGERS = ("psycopg", "psycopg.pool")
# Seconds a call waits for a pooled connection once the server was found unreachable (instead of
# the pool's `timeout`), until a call succeeds again: during an outage requests are 503 at once
# rather than each holding its client for the whole timeout.
DOWN_WAIT = 1.0
COPY_FROM = 500  # log events in a batch from which COPY stores them

# SQLSTATE class 40: the server rolled the whole transaction back, so running it again is safe.
_ROLLED_BACK = (DeadlockDetected, SerializationFailure, TransactionRollback)
NO_LIMITS = ActiveLimits(per_user=2**62, per_group=2**62)  # a start that no limit applies to


class PostgresStore(PostgresIdentityQueries, PostgresWebhookQueries):
    shared = True  # nodes share it: they announce with NOTIFY and hear with LISTEN

    def __init__(
        self, dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0
    ) -> None:
        """`dsn`: a libpq URL (postgresql://...) or key=value string. `timeout`: seconds to wait
        for the server at open, and for a free connection of the pool at each call."""
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._down = False  # the last call could not reach the server
        self._claimed_seqs = ClaimedLogSeqs()
        self._coalesced_notify = Coalescer(self._notify)
        self._redact_logs = RedactStoreUrl(dsn)

    # -- plumbing ---------------------------------------------------------------------------
    async def open(self) -> None:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.dsn,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            open=False,
            name="threadsvc",
        )
        for name in DRIVER_LOGGERS:  # the pool logs each failed connection, quoting libpq
            logging.getLogger(name).addFilter(self._redact_logs)
        try:
            await pool.open(wait=True, timeout=self._timeout)
            async with pool.connection() as conn:
                await migrate_postgres(conn)
        except BaseException as exc:
            await pool.close()
            self._remove_log_filters()
            if isinstance(exc, psycopg.Error):
                reason = _describe(exc, self.dsn)
                if isinstance(exc, PoolTimeout):  # the pool says only that it gave up: why?
                    reason = await self._why_not(reason)
                raise StoreUnavailable(f"PostgreSQL store: {reason}") from _safe(exc, self.dsn)
            raise
        self._pool = pool

    async def _why_not(self, default: str) -> str:
        """The driver's reason for refusing a connection now (a wrong password, an unknown
        host...), redacted; `default` when it connects after all."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=5)
        except psycopg.Error as exc:
            return _describe(exc, self.dsn)
        await conn.close()
        return default

    def _remove_log_filters(self) -> None:
        for name in DRIVER_LOGGERS:
            logging.getLogger(name).removeFilter(self._redact_logs)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        self._remove_log_filters()

    async def _transaction(
        self, fn: Callable[[Conn], Awaitable[T]], snapshot: bool, *, begin: bool = True
    ) -> T:
        """Run `fn` in a transaction, again after a rollback by the server; `begin=False`: `fn`
        sends its own BEGIN and COMMIT."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is closed")
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with pool.connection(timeout=self._wait()) as conn:
                    if begin:
                        await _set_mode(conn, snapshot)
                        async with conn.transaction():
                            result = await fn(conn)
                    else:
                        result = await fn(conn)
                self._down = False
                return result
            except _ROLLED_BACK as exc:
                if attempt == ATTEMPTS:
                    raise StoreUnavailable(
                        f"PostgreSQL store: {_describe(exc, self.dsn)}"
                    ) from _safe(exc, self.dsn)
            except psycopg.IntegrityError as exc:
                raise Conflict(_describe(exc)) from exc
            except (psycopg.Error, PoolTimeout, PoolClosed) as exc:
                raise self._unavailable(exc) from _safe(exc, self.dsn)
        raise AssertionError("unreachable")

    def _wait(self) -> float | None:
        """How long to wait for a pooled connection: the pool's timeout, or less when down."""
        return DOWN_WAIT if self._down else None

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        """The error a driver or pool failure becomes; notes when the server is unreachable."""
        if isinstance(exc, psycopg.OperationalError | PoolTimeout):
            self._down = True
        return StoreUnavailable(f"PostgreSQL store: {_describe(exc, self.dsn)}")

    async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn` in one READ COMMITTED transaction."""
        return await self._transaction(fn, snapshot=False)

    async def _snapshot(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run the statements of `fn` on one snapshot (REPEATABLE READ, READ ONLY)."""
        return await self._transaction(fn, snapshot=True)

    async def _in_one_trip(self, statements: list[str], args: dict[str, Any]) -> DictRow | None:
        """Run `statements` as one transaction sent in one message (`BEGIN; …; COMMIT`, the
        arguments bound by the client); the first row of the last statement. A lock the first
        statement takes is then held only while the server works, never while a reply travels
        or waits for a busy event loop (which is what serialized one user's starts)."""
        sql = "; ".join(["BEGIN", *statements, "COMMIT"])

        async def do(conn: Conn) -> DictRow | None:
            # When a statement fails the server skips the rest, COMMIT too; the pool's
            # connection context then rolls the transaction back.
            cursor = AsyncClientCursor(conn, row_factory=dict_row)
            await cursor.execute(sql, args)
            for _ in statements:  # past BEGIN's result to the last statement's
                cursor.nextset()
            return await cursor.fetchone()

        return await self._transaction(do, snapshot=False, begin=False)

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn`, one statement, outside a transaction (no BEGIN and COMMIT to wait for)."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with pool.connection(timeout=self._wait()) as conn:
                result = await fn(conn)
            self._down = False
            return result
        except psycopg.IntegrityError as exc:
            raise Conflict(_describe(exc)) from exc
        except (psycopg.Error, PoolTimeout, PoolClosed) as exc:
            raise self._unavailable(exc) from exc

    # -- between nodes ----------------------------------------------------------------------
    async def announce(self, message: str) -> None:
        # Coalesced: a node announces `new` after each start, and one NOTIFY sent after a start
        # was stored tells the other nodes as much as one NOTIFY per start.
        await self._coalesced_notify(message)

    async def _notify(self, message: str) -> None:
        async def notify(conn: Conn) -> None:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, message))

        await self._read(notify)

    async def announcements(self) -> AsyncIterator[str]:
        """LISTEN on a connection of its own; after a lost connection, listen again (what was
        announced meanwhile is lost, which the nodes' polling makes up for)."""
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            except psycopg.Error as exc:
                log.warning("cannot listen for other nodes, retrying in %.1fs: %s", delay,
                            _describe(exc, self.dsn))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.1
                    async for notify in conn.notifies():
                        yield notify.payload
            except psycopg.Error as exc:
                log.warning("lost the connection listening for other nodes: %s",
                            _describe(exc, self.dsn))
                await asyncio.sleep(delay)

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
        # One message: the user's lock (and the group's, for a group's limit), the user's
        # expired use of the key released, then the thread inserted unless the key names a
        # thread or a limit is reached; the locks make that check-and-insert atomic.
        limits = limits or NO_LIMITS
        group_level = thread.group_id != SERVER_GROUP_ID
        statements = [Q["lock_user_and_group" if group_level else "lock_user"]]
        if idempotency_key is not None:
            statements.append(Q["release_idempotency_key"])
        statements.append(Q["insert_thread_within_limits"])
        args = {
            **insert_args(thread, first_event, idempotency_key, request_hash),
            **count_active_args(thread, limits),
            "key": idempotency_key,
            "since": idempotency_since,
        }
        found = await self._in_one_trip(statements, args)
        assert found is not None
        if found["existing"] is not None:
            assert idempotency_key is not None
            check_replay(idempotency_key, found["existing_hash"], request_hash)
            existing = await self.get_thread(found["existing"])
            if existing is None:  # deleted since: its key went with it
                return await self.insert_thread(
                    thread, first_event, limits=limits, idempotency_key=idempotency_key,
                    idempotency_since=idempotency_since, request_hash=request_hash,
                )
            return existing, False
        if not found["inserted"]:
            check_limits(thread, limits, found["user_active"], found["group_active"])
            raise AssertionError("a start within the limits was not stored")
        return thread, True

    async def get_thread(self, thread_id: str) -> Thread | None:
        async def do(conn: Conn) -> Thread | None:
            row = await fetch_one(conn, "get_thread", {"id": thread_id})
            return None if row is None else thread_from_row(row)

        return await self._read(do)

    async def list_threads(self, query: ThreadFilter) -> ThreadPage:
        plan = list_query(query, Q, sorted(s.value for s in query.statuses))

        async def do(conn: Conn) -> ThreadPage:
            rows: list[DictRow] = []
            if plan.counted:
                found = await fetch_all(conn, *plan.counts(Q))
                total, bucket, newer = found[0]["total"], found[0]["bucket"], found[0]["newer"]
                if bucket is not None:
                    rows = await fetch_all(conn, *plan.rows(Q, bucket, newer))
            else:
                rows = await fetch_all(conn, *plan.rows(Q))
                total = await fetch_value(conn, *plan.total(Q))
            return ThreadPage(
                threads=[thread_from_row(row) for row in rows],
                total=total,
                page=query.page,
                pagesize=query.pagesize,
            )

        return await self._snapshot(do)

    async def claim_threads(self, node: str, limit: int, now: int) -> list[Thread]:
        async def do(conn: Conn) -> tuple[list[Thread], dict[str, int]]:
            args = {"node": node, "limit": limit, "now": now}
            rows = await fetch_all(conn, Q["claim_threads"], args)
            claimed = [thread_from_row(row) for row in sorted(rows, key=lambda r: r["seq"])]
            await self._status_changed(conn, claimed)
            return claimed, {row["id"]: row["log_seq"] for row in rows}

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
        async def do(conn: Conn) -> set[str]:
            # The same writes as SQLite's, in one transaction, but the threads' rows first: a
            # recovery (which locks the row, then appends to the log) then waits for this batch
            # instead of deadlocking with it. Inside the transaction the order is not visible.
            # Each kind of write is one statement for the whole batch, whatever its size.
            lost = await _update_running(conn, node, threads, now)
            await _insert_events(conn, events)
            await self._status_changed(conn, [t for t in status_changes if t.id not in lost])
            return lost

        return await self._write(do)

    async def cancel_initialised(
        self, thread_id: str, message: str, event: LogEvent
    ) -> Thread | None:
        now = event.timestamp

        async def do(conn: Conn) -> Thread | None:
            args = {"id": thread_id, "now": now, "message": message}
            row = await fetch_one(conn, "cancel_initialised", args)
            if row is None:
                return None
            await execute(
                conn,
                "append_log_event",
                {"thread_id": thread_id, "ts": now, "level": int(event.level), "text": event.text},
            )
            cancelled = thread_from_row(row)
            await self._status_changed(conn, [cancelled])
            return cancelled

        return await self._write(do)

    async def request_cancel(self, thread_id: str) -> None:
        await self._write(lambda conn: execute(conn, "request_cancel", {"id": thread_id}))

    async def cancel_requests(self, node: str) -> list[str]:
        async def do(conn: Conn) -> list[str]:
            return [row["id"] for row in await fetch_all(conn, Q["cancel_requests"], {"node": node})]

        return await self._read(do)

    async def heartbeat(self, node: str, now: int) -> None:
        await self._write(lambda conn: execute(conn, "heartbeat", {"node": node, "now": now}))

    async def running_threads(self) -> list[Thread]:
        async def do(conn: Conn) -> list[Thread]:
            return [thread_from_row(row) for row in await fetch_all(conn, Q["running_threads"])]

        return await self._read(do)

    async def recover_thread(
        self, thread: Thread, requeue: bool, message: str, now: int, level: Level
    ) -> Thread | None:
        async def do(conn: Conn) -> Thread | None:
            query = "requeue_orphan" if requeue else "fail_orphan"
            args = {"id": thread.id, "node": thread.node, "now": now, "message": message}
            row = await fetch_one(conn, query, args)
            if row is None:
                return None
            await execute(
                conn,
                "append_log_event",
                {"thread_id": thread.id, "ts": now, "level": int(level), "text": message},
            )
            recovered = thread_from_row(row)
            await self._status_changed(conn, [recovered])
            return recovered

        return await self._write(do)

    async def delete_thread(self, thread_id: str) -> bool:
        async def do(conn: Conn) -> bool:
            if await execute(conn, "delete_thread", {"id": thread_id}) == 0:
                return False
            await execute(conn, "delete_logs", {"id": thread_id})
            return True

        return await self._write(do)

    async def get_logs(self, thread_id: str, since: int, limit: int, level: Level) -> LogPage:
        async def do(conn: Conn) -> LogPage:
            args = {"thread_id": thread_id, "since": since, "limit": limit + 1, "level": int(level)}
            rows = await fetch_all(conn, Q["get_logs"], args)
            total = await fetch_value(conn, Q["last_log_seq"], {"thread_id": thread_id})
            events = [
                LogEvent(row["seq"], row["ts"], Level(row["level"]), row["text"])
                for row in rows[:limit]
            ]
            return LogPage(
                thread_id=thread_id,
                events=events,
                total=total,
                next=events[-1].seq if events else since,
                more=len(rows) > limit,
            )

        return await self._snapshot(do)

    async def expired_results(self, now: int, limit: int) -> list[Thread]:
        async def do(conn: Conn) -> list[Thread]:
            rows = await fetch_all(conn, Q["expired_results"], {"now": now, "limit": limit})
            return [thread_from_row(row) for row in rows]

        return await self._read(do)

    async def forget_result_file(self, thread_id: str) -> None:
        await self._write(lambda conn: execute(conn, "forget_result_file", {"id": thread_id}))

    async def ended_before(self, moment: int, limit: int) -> list[Thread]:
        async def do(conn: Conn) -> list[Thread]:
            rows = await fetch_all(conn, Q["ended_before"], {"moment": moment, "limit": limit})
            return [thread_from_row(row) for row in rows]

        return await self._read(do)

    async def forget_idempotency_keys(self, created_before: int) -> int:
        return await self._write(
            lambda conn: execute(conn, "forget_idempotency_keys", {"before": created_before})
        )

    async def last_log_seq(self, thread_id: str) -> int:
        claimed = self._claimed_seqs.take(thread_id)
        if claimed is not None:
            return claimed

        async def do(conn: Conn) -> int:
            return int(await fetch_value(conn, Q["last_log_seq"], {"thread_id": thread_id}))

        return await self._read(do)

    async def count_by_status(self) -> dict[Status, int]:
        async def do(conn: Conn) -> dict[Status, int]:
            rows = await fetch_all(conn, Q["count_threads_by_status"])
            return {Status(row["status"]): row["count"] for row in rows}

        return await self._read(do)


_STATE_ARRAYS = (
    "id", "status", "message", "progress_current", "progress_total", "warnings", "errors",
    "ended", "version", "result_file", "result_type", "result_size", "result_name",
    "result_deletion",
)
_EVENT_ARRAYS = ("thread_id", "seq", "ts", "level", "text")
_EVENT_TYPES = ["text", "int8", "int8", "int4", "text"]  # of COPY's binary format, column by column


async def _update_running(conn: Conn, node: str, threads: list[Thread], now: int) -> set[str]:
    """Write the state of `node`'s threads; the ids not written (no longer the node's)."""
    if not threads:
        return set()
    # One state per thread, its latest, as updates one after another would leave it (a row
    # matched twice by UPDATE ... FROM would take either).
    latest = {thread.id: thread for thread in threads}
    states = [state_args(thread, node, now) for thread in latest.values()]
    args = {**columns(states, _STATE_ARRAYS), "node": node, "heartbeat": now}
    rows = await fetch_all(conn, Q["update_running_thread"], args)
    return set(latest) - {row["id"] for row in rows}


async def _insert_events(conn: Conn, events: list[NewLogEvent]) -> None:
    """A batch's log events: one INSERT for a few, COPY for many (a thread logging fast gives
    batches of thousands, which binary COPY stores two to three times as fast as the INSERT;
    it costs one more round trip)."""
    if len(events) >= COPY_FROM:
        async with conn.cursor() as cur, cur.copy(Q["copy_log_events"]) as copy:
            copy.set_types(_EVENT_TYPES)
            for e in events:
                event = e.event
                await copy.write_row(
                    (e.thread_id, event.seq, event.timestamp, int(event.level), event.text)
                )
    elif events:
        rows = [event_row(e.thread_id, e.event) for e in events]
        await conn.execute(Q["insert_log_events"], columns(rows, _EVENT_ARRAYS))


async def _set_mode(conn: Conn, snapshot: bool) -> None:
    """The kind of transaction the next BEGIN starts (no round trip: psycopg writes the BEGIN)."""
    level = IsolationLevel.REPEATABLE_READ if snapshot else None
    read_only = True if snapshot else None
    if conn.isolation_level != level:
        await conn.set_isolation_level(level)
    if conn.read_only != read_only:
        await conn.set_read_only(read_only)


def _describe(exc: BaseException, dsn: str | None = None) -> str:
    """The driver's message on one line (server messages may carry DETAIL lines), without
    the store URL's password (libpq quotes a connection string it cannot parse)."""
    return redact(" ".join(str(exc).split()), dsn) or type(exc).__name__


def _safe(exc: BaseException, dsn: str) -> BaseException | None:
    """`exc` as the cause of the error raised for it, unless its text (which a logged
    traceback shows) holds the password."""
    return exc if redact(str(exc), dsn) == str(exc) else None
