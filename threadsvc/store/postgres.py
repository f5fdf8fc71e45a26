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
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection, IsolationLevel
from psycopg.errors import DeadlockDetected, SerializationFailure, TransactionRollback
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from threadsvc.errors import Conflict, NotFound, StoreUnavailable, TooManyActiveThreads
from threadsvc.models import (
    SERVER_GROUP_ID,
    Group,
    Level,
    LogEvent,
    LogPage,
    Role,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
    User,
    now_ms,
)
from threadsvc.store.base import ActiveLimits, LoginFailures, NewLogEvent
from threadsvc.store.common import event_row, state_args, thread_from_row
from threadsvc.store.migrate import migrate_postgres
from threadsvc.store.postgres_webhooks import Conn, PostgresWebhookQueries
from threadsvc.store.queries import load_queries

T = TypeVar("T")
Q = load_queries("postgres")
ATTEMPTS = 3  # runs of a transaction that a deadlock or serialization failure rolled back
log = logging.getLogger(__name__)
CHANNEL = "threadsvc"  # the NOTIFY channel nodes announce on

# SQLSTATE class 40: the server rolled the whole transaction back, so running it again is safe.
_ROLLED_BACK = (DeadlockDetected, SerializationFailure, TransactionRollback)
_FILTERS = {
    "group_id": "filter_group",
    "username": "filter_username",
    "job": "filter_job",
    "since": "filter_since",
    "until": "filter_until",
    "deletion_before": "filter_deletion_before",
}


def _user(row: Mapping[str, Any]) -> User:
    return User(id=row["id"], username=row["username"], is_admin=bool(row["is_admin"]))


async def _one(conn: Conn, name: str, args: Mapping[str, Any] | None = None) -> DictRow | None:
    return await (await conn.execute(Q[name], args)).fetchone()


async def _all(conn: Conn, sql: str, args: Mapping[str, Any] | None = None) -> list[DictRow]:
    return await (await conn.execute(sql, args)).fetchall()


async def _value(conn: Conn, sql: str, args: Mapping[str, Any] | None = None) -> Any:
    """The first column of the one row `sql` returns."""
    row = await (await conn.execute(sql, args)).fetchone()
    assert row is not None
    return next(iter(row.values()))


async def _run(conn: Conn, name: str, args: Mapping[str, Any] | None = None) -> int:
    """Execute a named statement; how many rows it changed."""
    return (await conn.execute(Q[name], args)).rowcount


async def _check_limits(conn: Conn, thread: Thread, limits: ActiveLimits) -> None:
    mine = await _value(conn, Q["count_active_of_user"], {"username": thread.username})
    if mine >= limits.per_user:
        raise TooManyActiveThreads(
            f"User '{thread.username}' has {mine} active threads, the most allowed"
        )
    if thread.group_id != SERVER_GROUP_ID:
        group = await _value(conn, Q["count_active_of_group"], {"group_id": thread.group_id})
        if group >= limits.per_group:
            raise TooManyActiveThreads(f"The group has {group} active threads, the most allowed")


class PostgresStore(PostgresWebhookQueries):
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
        try:
            await pool.open(wait=True, timeout=self._timeout)
            async with pool.connection() as conn:
                await migrate_postgres(conn)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, psycopg.Error):
                raise StoreUnavailable(f"PostgreSQL store: {_describe(exc)}") from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _transaction(self, fn: Callable[[Conn], Awaitable[T]], snapshot: bool) -> T:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is closed")
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with pool.connection() as conn:
                    await _set_mode(conn, snapshot)
                    async with conn.transaction():
                        return await fn(conn)
            except _ROLLED_BACK as exc:
                if attempt == ATTEMPTS:
                    raise StoreUnavailable(f"PostgreSQL store: {_describe(exc)}") from exc
            except psycopg.IntegrityError as exc:
                raise Conflict(_describe(exc)) from exc
            except (psycopg.Error, PoolTimeout, PoolClosed) as exc:
                raise StoreUnavailable(f"PostgreSQL store: {_describe(exc)}") from exc
        raise AssertionError("unreachable")

    async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn` in one READ COMMITTED transaction."""
        return await self._transaction(fn, snapshot=False)

    async def _snapshot(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run the statements of `fn` on one snapshot (REPEATABLE READ, READ ONLY)."""
        return await self._transaction(fn, snapshot=True)

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `fn`, one statement, outside a transaction (no BEGIN and COMMIT to wait for)."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with pool.connection() as conn:
                return await fn(conn)
        except psycopg.IntegrityError as exc:
            raise Conflict(_describe(exc)) from exc
        except (psycopg.Error, PoolTimeout, PoolClosed) as exc:
            raise StoreUnavailable(f"PostgreSQL store: {_describe(exc)}") from exc

    # -- between nodes ----------------------------------------------------------------------
    async def announce(self, message: str) -> None:
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
                log.warning("cannot listen for other nodes, retrying in %.1fs: %s", delay, exc)
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
                log.warning("lost the connection listening for other nodes: %s", exc)
                await asyncio.sleep(delay)

    # -- server settings --------------------------------------------------------------------
    async def get_or_put_setting(self, key: str, value: str) -> str:
        async def do(conn: Conn) -> str:
            await _run(conn, "put_setting_if_absent", {"key": key, "value": value})
            return str(await _value(conn, Q["get_setting"], {"key": key}))

        return await self._write(do)

    # -- identity ---------------------------------------------------------------------------
    async def create_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        async def do(conn: Conn) -> User:
            args = {
                "username": username,
                "password_hash": password_hash,
                "is_admin": is_admin,
                "created": now_ms(),
            }
            user_id = await _value(conn, Q["insert_user"], args)
            return User(id=user_id, username=username, is_admin=is_admin)

        try:
            return await self._write(do)
        except Conflict:
            raise Conflict(f"user '{username}' already exists") from None

    async def update_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        async def do(conn: Conn) -> User:
            args = {"username": username, "password_hash": password_hash, "is_admin": is_admin}
            row = await _one(conn, "update_user", args)
            if row is None:
                raise NotFound(f"no user '{username}'")
            return User(id=row["id"], username=username, is_admin=is_admin)

        return await self._write(do)

    async def get_user(self, username: str) -> tuple[User, str | None] | None:
        async def do(conn: Conn) -> tuple[User, str | None] | None:
            row = await _one(conn, "get_user_by_name", {"username": username})
            return None if row is None else (_user(row), row["password_hash"])

        return await self._read(do)

    async def add_api_token(self, user_id: int, token_hash: str) -> None:
        args = {"token_hash": token_hash, "user_id": user_id, "created": now_ms()}
        await self._write(lambda conn: _run(conn, "insert_api_token", args))

    async def user_for_token(self, token_hash: str) -> User | None:
        async def do(conn: Conn) -> User | None:
            row = await _one(conn, "user_for_token", {"token_hash": token_hash})
            return None if row is None else _user(row)

        return await self._read(do)

    async def add_oauth_client(self, user_id: int, client_id: str, secret_hash: str) -> None:
        args = {
            "client_id": client_id,
            "user_id": user_id,
            "secret_hash": secret_hash,
            "created": now_ms(),
        }
        await self._write(lambda conn: _run(conn, "insert_oauth_client", args))

    async def get_oauth_client(self, client_id: str) -> tuple[User, str] | None:
        async def do(conn: Conn) -> tuple[User, str] | None:
            row = await _one(conn, "get_oauth_client", {"client_id": client_id})
            return None if row is None else (_user(row), row["secret_hash"])

        return await self._read(do)

    async def create_group(self, name: str, group_id: int | None = None) -> Group:
        async def do(conn: Conn) -> Group:
            await _run(conn, "lock_group_ids")
            new_id = await _value(conn, Q["insert_group"], {"id": group_id, "name": name})
            return Group(id=new_id, name=name)

        try:
            return await self._write(do)
        except Conflict:
            raise Conflict(f"a group named '{name}' or with id {group_id} exists") from None

    async def get_group(self, name: str) -> Group | None:
        async def do(conn: Conn) -> Group | None:
            row = await _one(conn, "get_group_by_name", {"name": name})
            return None if row is None else Group(id=row["id"], name=row["name"])

        return await self._read(do)

    async def get_group_by_id(self, group_id: int) -> Group | None:
        async def do(conn: Conn) -> Group | None:
            row = await _one(conn, "get_group_by_id", {"id": group_id})
            return None if row is None else Group(id=row["id"], name=row["name"])

        return await self._read(do)

    async def set_membership(self, group_id: int, user_id: int, role: Role) -> None:
        args = {"group_id": group_id, "user_id": user_id, "role": int(role)}
        await self._write(lambda conn: _run(conn, "set_membership", args))

    async def roles_of(self, user_id: int) -> dict[int, Role]:
        async def do(conn: Conn) -> dict[int, Role]:
            rows = await _all(conn, Q["roles_of"], {"user_id": user_id})
            return {row["group_id"]: Role(row["role"]) for row in rows}

        return await self._read(do)

    async def groups_of(self, user_id: int) -> list[tuple[Group, Role]]:
        async def do(conn: Conn) -> list[tuple[Group, Role]]:
            rows = await _all(conn, Q["groups_of"], {"user_id": user_id})
            return [(Group(id=row["id"], name=row["name"]), Role(row["role"])) for row in rows]

        return await self._read(do)

    async def get_login_failures(self, username: str) -> LoginFailures | None:
        async def do(conn: Conn) -> LoginFailures | None:
            row = await _one(conn, "get_login_failures", {"username": username})
            return None if row is None else _failures(row)

        return await self._read(do)

    async def record_login_failure(
        self, username: str, now: int, window_ms: int, attempts: int
    ) -> LoginFailures:
        async def do(conn: Conn) -> LoginFailures:
            # Failures of one name counted together must not both read the same count.
            await _run(conn, "lock_user", {"username": username})
            row = await _one(conn, "get_login_failures", {"username": username})
            if row is None or row["window_start"] <= now - window_ms:
                failures = LoginFailures(1, now, 0)
            else:
                failures = LoginFailures(row["failures"] + 1, row["window_start"], row["locked_until"])
            if failures.failures >= attempts:
                failures = LoginFailures(failures.failures, failures.window_start, now + window_ms)
            await _run(
                conn,
                "put_login_failures",
                {
                    "username": username,
                    "failures": failures.failures,
                    "window_start": failures.window_start,
                    "locked_until": failures.locked_until,
                },
            )
            return failures

        return await self._write(do)

    async def clear_login_failures(self, username: str) -> None:
        args = {"username": username}
        await self._write(lambda conn: _run(conn, "clear_login_failures", args))

    # -- threads ----------------------------------------------------------------------------
    async def insert_thread(
        self,
        thread: Thread,
        first_event: LogEvent,
        *,
        limits: ActiveLimits | None = None,
        idempotency_key: str | None = None,
        idempotency_since: int = 0,
    ) -> tuple[Thread, bool]:
        args = {
            "id": thread.id,
            "name": thread.name,
            "username": thread.username,
            "group_id": thread.group_id,
            "job": thread.job,
            "params": json.dumps(thread.params),
            "status": thread.status.value,
            "created": thread.created,
        }

        async def do(conn: Conn) -> tuple[Thread, bool]:
            # The user's lock, then the group's (always in that order): concurrent starts of the
            # same user or group wait here, so the checks and the insert are atomic, and each
            # statement after the locks sees what the previous holder committed.
            if idempotency_key is not None or limits is not None:
                await _run(conn, "lock_user", {"username": thread.username})
            if limits is not None and thread.group_id != SERVER_GROUP_ID:
                await _run(conn, "lock_group", {"group_id": thread.group_id})
            if idempotency_key is not None:
                key = {"username": thread.username, "key": idempotency_key}
                row = await _one(conn, "find_idempotent", {**key, "since": idempotency_since})
                if row is not None:
                    return thread_from_row(row), False
                await _run(conn, "release_idempotency_key", {**key, "since": idempotency_since})
            if limits is not None:
                await _check_limits(conn, thread, limits)
            await _run(conn, "insert_thread", args)
            await _run(conn, "insert_log_event", event_row(thread.id, first_event))
            if idempotency_key is not None:
                await _run(conn, "set_idempotency_key", {"id": thread.id, "key": idempotency_key})
            return thread, True

        return await self._write(do)

    async def get_thread(self, thread_id: str) -> Thread | None:
        async def do(conn: Conn) -> Thread | None:
            row = await _one(conn, "get_thread", {"id": thread_id})
            return None if row is None else thread_from_row(row)

        return await self._read(do)

    async def list_threads(self, query: ThreadFilter) -> ThreadPage:
        args: dict[str, Any] = {"statuses": sorted(s.value for s in query.statuses)}
        where = [Q["filter_statuses"]]
        for name, fragment in _FILTERS.items():
            value = getattr(query, name)
            if value is not None:
                where.append(Q[fragment])
                args[name] = value
        clause = " AND ".join(f"({part})" for part in where)
        page_args = {
            **args,
            "limit": query.pagesize,
            "offset": (query.page - 1) * query.pagesize,
        }

        async def do(conn: Conn) -> ThreadPage:
            rows = await _all(conn, Q["list_threads"].format(where=clause), page_args)
            total = await _value(conn, Q["count_threads"].format(where=clause), args)
            return ThreadPage(
                threads=[thread_from_row(row) for row in rows],
                total=total,
                page=query.page,
                pagesize=query.pagesize,
            )

        return await self._snapshot(do)

    async def claim_threads(self, node: str, limit: int, now: int) -> list[Thread]:
        async def do(conn: Conn) -> list[Thread]:
            args = {"node": node, "limit": limit, "now": now}
            rows = await _all(conn, Q["claim_threads"], args)
            claimed = [thread_from_row(row) for row in sorted(rows, key=lambda r: r["seq"])]
            for thread in claimed:
                await self._status_changed(conn, thread)
            return claimed

        return await self._write(do)

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
            lost = set()
            for thread in threads:
                if await _run(conn, "update_running_thread", state_args(thread, node, now)) == 0:
                    lost.add(thread.id)
            if events:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        Q["insert_log_event"], [event_row(e.thread_id, e.event) for e in events]
                    )
            for thread in status_changes:
                if thread.id not in lost:
                    await self._status_changed(conn, thread)
            return lost

        return await self._write(do)

    async def cancel_initialised(
        self, thread_id: str, message: str, event: LogEvent
    ) -> Thread | None:
        now = event.timestamp

        async def do(conn: Conn) -> Thread | None:
            args = {"id": thread_id, "now": now, "message": message}
            row = await _one(conn, "cancel_initialised", args)
            if row is None:
                return None
            await _run(
                conn,
                "append_log_event",
                {"thread_id": thread_id, "ts": now, "level": int(event.level), "text": event.text},
            )
            cancelled = thread_from_row(row)
            await self._status_changed(conn, cancelled)
            return cancelled

        return await self._write(do)

    async def request_cancel(self, thread_id: str) -> None:
        await self._write(lambda conn: _run(conn, "request_cancel", {"id": thread_id}))

    async def cancel_requests(self, node: str) -> list[str]:
        async def do(conn: Conn) -> list[str]:
            return [row["id"] for row in await _all(conn, Q["cancel_requests"], {"node": node})]

        return await self._read(do)

    async def heartbeat(self, node: str, now: int) -> None:
        await self._write(lambda conn: _run(conn, "heartbeat", {"node": node, "now": now}))

    async def running_threads(self) -> list[Thread]:
        async def do(conn: Conn) -> list[Thread]:
            return [thread_from_row(row) for row in await _all(conn, Q["running_threads"])]

        return await self._read(do)

    async def recover_thread(
        self, thread: Thread, requeue: bool, message: str, now: int, level: Level
    ) -> Thread | None:
        async def do(conn: Conn) -> Thread | None:
            query = "requeue_orphan" if requeue else "fail_orphan"
            args = {"id": thread.id, "node": thread.node, "now": now, "message": message}
            row = await _one(conn, query, args)
            if row is None:
                return None
            await _run(
                conn,
                "append_log_event",
                {"thread_id": thread.id, "ts": now, "level": int(level), "text": message},
            )
            recovered = thread_from_row(row)
            await self._status_changed(conn, recovered)
            return recovered

        return await self._write(do)

    async def delete_thread(self, thread_id: str) -> bool:
        async def do(conn: Conn) -> bool:
            if await _run(conn, "delete_thread", {"id": thread_id}) == 0:
                return False
            await _run(conn, "delete_logs", {"id": thread_id})
            return True

        return await self._write(do)

    async def get_logs(self, thread_id: str, since: int, limit: int, level: Level) -> LogPage:
        async def do(conn: Conn) -> LogPage:
            args = {"thread_id": thread_id, "since": since, "limit": limit + 1, "level": int(level)}
            rows = await _all(conn, Q["get_logs"], args)
            total = await _value(conn, Q["last_log_seq"], {"thread_id": thread_id})
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
            rows = await _all(conn, Q["expired_results"], {"now": now, "limit": limit})
            return [thread_from_row(row) for row in rows]

        return await self._read(do)

    async def forget_result_file(self, thread_id: str) -> None:
        await self._write(lambda conn: _run(conn, "forget_result_file", {"id": thread_id}))

    async def ended_before(self, moment: int, limit: int) -> list[Thread]:
        async def do(conn: Conn) -> list[Thread]:
            rows = await _all(conn, Q["ended_before"], {"moment": moment, "limit": limit})
            return [thread_from_row(row) for row in rows]

        return await self._read(do)

    async def forget_idempotency_keys(self, created_before: int) -> int:
        return await self._write(
            lambda conn: _run(conn, "forget_idempotency_keys", {"before": created_before})
        )

    async def last_log_seq(self, thread_id: str) -> int:
        async def do(conn: Conn) -> int:
            return int(await _value(conn, Q["last_log_seq"], {"thread_id": thread_id}))

        return await self._read(do)

    async def count_by_status(self) -> dict[Status, int]:
        async def do(conn: Conn) -> dict[Status, int]:
            rows = await _all(conn, Q["count_threads_by_status"])
            return {Status(row["status"]): row["count"] for row in rows}

        return await self._read(do)


def _failures(row: Mapping[str, Any]) -> LoginFailures:
    return LoginFailures(row["failures"], row["window_start"], row["locked_until"])


async def _set_mode(conn: Conn, snapshot: bool) -> None:
    """The kind of transaction the next BEGIN starts (no round trip: psycopg writes the BEGIN)."""
    level = IsolationLevel.REPEATABLE_READ if snapshot else None
    read_only = True if snapshot else None
    if conn.isolation_level != level:
        await conn.set_isolation_level(level)
    if conn.read_only != read_only:
        await conn.set_read_only(read_only)


def _describe(exc: BaseException) -> str:
    """The driver's message on one line (server messages may carry DETAIL lines)."""
    return " ".join(str(exc).split()) or type(exc).__name__
