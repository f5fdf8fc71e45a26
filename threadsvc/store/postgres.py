"""The shared store: PostgreSQL through psycopg 3, on a pool of connections, for one or many nodes.

Each method is one transaction on a pooled connection (which is in autocommit outside them).
Writes run under READ COMMITTED. Where SQLite's single writer makes a read-then-write atomic (the
limits and idempotency key of a start, a failed login, a group's id), this store first takes a
transaction-level advisory lock (sql/postgres/overrides.sql, "Only PostgreSQL"). A read of several
statements shares one REPEATABLE READ snapshot, as SQLite's readers do. Deadlocks and
serialization failures roll the whole transaction back, so it is run again, a few times at most.

Here: the pool, the transactions, LISTEN/NOTIFY and a start's insert (in one message); the
dialect primitives are in postgres_tx.py, every other rule is both stores' (threads.py,
identity.py, webhooks.py).

Driver errors stop here: unique and other integrity violations become Conflict, everything else
(no server, pool exhausted, broken connection) StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncClientCursor, AsyncConnection, IsolationLevel
from psycopg.errors import DeadlockDetected, SerializationFailure, TransactionRollback
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from threadsvc.errors import Conflict, StoreUnavailable
from threadsvc.models import SERVER_GROUP_ID, ActiveLimits, Thread
from threadsvc.retry import Backoff, doubled
from threadsvc.store import RedactStoreUrl, redact
from threadsvc.store.base import Store
from threadsvc.store.batch import Batcher
from threadsvc.store.coalesce import Coalescer
from threadsvc.store.dialect import Rule
from threadsvc.store.migrate import migrate_postgres
from threadsvc.store.postgres_tx import Conn, PostgresTx, Q
from threadsvc.store.rows import columns, insert_args
from threadsvc.store.starts import Start, check_limits, check_replay, count_active_args

T = TypeVar("T")
ATTEMPTS = 3  # runs of a transaction that a deadlock or serialization failure rolled back
# Seconds before the second run (doubled for the third), with jitter: a run that starts again at
# once can take a row back before the transaction that won the deadlock locked it, and deadlock
# with it anew (seen in CI under load).
RETRY_PAUSE = 0.01
log = logging.getLogger(__name__)
CHANNEL = "threadsvc"  # the NOTIFY channel nodes announce on
DRIVER_LOGGERS = ("psycopg", "psycopg.pool")
# Seconds a call waits for a pooled connection once the server was found unreachable (instead of
# the pool's `timeout`), until a call succeeds again: during an outage requests are 503 at once
# rather than each holding its client for the whole timeout.
DOWN_WAIT = 1.0

# SQLSTATE class 40: the server rolled the whole transaction back, so running it again is safe.
_ROLLED_BACK = (DeadlockDetected, SerializationFailure, TransactionRollback)
NO_LIMITS = ActiveLimits(per_user=2**62, per_group=2**62)  # a start that no limit applies to
BATCH_STARTS = 256  # the most starts written in one transaction
_BATCH_COLUMNS = (
    "id", "name", "username", "group_id", "job", "params", "status", "created", "seq", "ts",
    "level", "text", "per_user", "per_group",
)


# Every statement of the store's connections: none may run longer than this (a query that
# would, as a generic plan gone stale did, fails as StoreUnavailable instead of holding a
# connection and its locks), and each is planned for its own parameters, never from a cached
# generic plan made when the tables held other data.
STATEMENT_TIMEOUT_MS = 30_000
_SESSION = (
    f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SET plan_cache_mode = force_custom_plan"
)


async def _configure(conn: Conn) -> None:
    await conn.execute(_SESSION)


class PostgresStore(Store):
    shared = True  # nodes share it: they announce with NOTIFY and hear with LISTEN

    def __init__(
        self, dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0
    ) -> None:
        """`dsn`: a libpq URL (postgresql://...) or key=value string. `timeout`: seconds to wait
        for the server at open, and for a free connection of the pool at each call."""
        super().__init__()
        self.dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._down = False  # the last call could not reach the server
        self._coalesced_notify = Coalescer(self._notify)
        self._batched_starts = Batcher(self._insert_batch, BATCH_STARTS)
        self._redact_logs = RedactStoreUrl(dsn)

    # -- plumbing ---------------------------------------------------------------------------
    async def open(self, create: bool = True) -> None:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.dsn,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._timeout,
            configure=_configure,
            open=False,
            name="threadsvc",
        )
        for name in DRIVER_LOGGERS:  # the pool logs each failed connection, quoting libpq
            logging.getLogger(name).addFilter(self._redact_logs)
        try:
            await pool.open(wait=True, timeout=self._timeout)
            async with pool.connection() as conn:
                await migrate_postgres(conn, create)
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
                    self.errors += 1
                    raise StoreUnavailable(
                        f"PostgreSQL store: {_describe(exc, self.dsn)}"
                    ) from _safe(exc, self.dsn)
                await asyncio.sleep(doubled(RETRY_PAUSE, 1.0, attempt - 1) * random.uniform(1, 2))
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
        self.errors += 1
        return StoreUnavailable(f"PostgreSQL store: {_describe(exc, self.dsn)}")

    async def _write(self, rule: Rule[T]) -> T:
        """Run `rule` in one READ COMMITTED transaction."""
        return await self._transaction(lambda conn: rule(PostgresTx(conn)), snapshot=False)

    async def _snapshot(self, rule: Rule[T]) -> T:
        """Run the statements of `rule` on one snapshot (REPEATABLE READ, READ ONLY)."""
        return await self._transaction(lambda conn: rule(PostgresTx(conn)), snapshot=True)

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

    async def _read(self, rule: Rule[T]) -> T:
        """Run `rule`, one statement, outside a transaction (no BEGIN and COMMIT to wait for)."""
        return await self._on_connection(lambda conn: rule(PostgresTx(conn)))

    async def _on_connection(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn` on a pooled connection, in autocommit."""
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

        await self._on_connection(notify)

    async def announcements(self) -> AsyncIterator[str]:
        """LISTEN on a connection of its own; after a lost connection, listen again (what was
        announced meanwhile is lost, which the nodes' polling makes up for)."""
        backoff = Backoff(first=0.1)
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            except psycopg.Error as exc:
                log.warning("cannot listen for other nodes, retrying in %.1fs: %s", backoff.delay,
                            _describe(exc, self.dsn))
                await backoff.wait()
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    backoff.reset()
                    async for notify in conn.notifies():
                        yield notify.payload
            except psycopg.Error as exc:
                log.warning("lost the connection listening for other nodes: %s",
                            _describe(exc, self.dsn))
                await asyncio.sleep(backoff.delay)  # then connect at once, backing off from there

    # -- a start: the rest of the threads' methods are ThreadRules' ----------------------------
    async def _insert(self, start: Start) -> tuple[Thread, bool]:
        # Group commit: the starts without a key that wait at the same moment share one
        # transaction (one user's starts take its lock one after another, so one each was what
        # bounded them). A start with a key goes alone: it may name an earlier thread.
        if start.idempotency_key is not None:
            return await self._insert_one(start)
        return await self._batched_starts(start)

    async def _insert_batch(self, starts: list[Start]) -> list[tuple[Thread, bool] | BaseException]:
        """All of `starts` in one transaction when none is refused; else (or when that
        transaction fails) each on its own, concurrently, with its own answer."""
        if len(starts) > 1:
            try:
                if await self._insert_all(starts):
                    return [(start.thread, True) for start in starts]
            except (StoreUnavailable, Conflict):
                pass  # rolled back: nothing of it is stored, each is tried on its own
        return await asyncio.gather(
            *(self._insert_one(start) for start in starts), return_exceptions=True
        )

    async def _insert_all(self, starts: list[Start]) -> bool:
        """Store all of `starts` (none with a key) in one message, or none (False) when one would
        pass a limit."""
        rows = []
        for start in starts:
            limits = count_active_args(start.thread, start.limits or NO_LIMITS)
            rows.append({**insert_args(start.thread, start.first_event, None, None), **limits})
        args = columns(rows, _BATCH_COLUMNS)
        args["usernames"] = sorted({row["username"] for row in rows})
        args["group_ids"] = sorted({row["group_id"] for row in rows} - {SERVER_GROUP_ID})
        found = await self._in_one_trip(
            [Q["lock_users"], Q["lock_groups"], Q["insert_threads_within_limits"]], args
        )
        assert found is not None
        return bool(found["inserted"])

    async def _insert_one(self, start: Start) -> tuple[Thread, bool]:
        # One message: the user's lock (and the group's, for a group's limit), the user's
        # expired use of the key released, then the thread inserted unless the key names a
        # thread or a limit is reached; the locks make that check-and-insert atomic.
        thread, key = start.thread, start.idempotency_key
        limits = start.limits or NO_LIMITS
        group_level = thread.group_id != SERVER_GROUP_ID
        statements = [Q["lock_user_and_group" if group_level else "lock_user"]]
        if key is not None:
            statements.append(Q["release_idempotency_key"])
        statements.append(Q["insert_thread_within_limits"])
        args = {
            **insert_args(thread, start.first_event, key, start.request_hash),
            **count_active_args(thread, limits),
            "key": key,
            "since": start.idempotency_since,
        }
        found = await self._in_one_trip(statements, args)
        assert found is not None
        if found["existing"] is not None:
            assert key is not None
            check_replay(key, found["existing_hash"], start.request_hash)
            existing = await self.get_thread(found["existing"])
            if existing is None:  # deleted since: its key went with it
                return await self._insert_one(start)
            return existing, False
        if not found["inserted"]:
            check_limits(thread, limits, found["user_active"], found["group_active"])
            raise AssertionError("a start within the limits was not stored")
        return thread, True


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
