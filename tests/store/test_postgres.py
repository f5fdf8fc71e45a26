"""What only the PostgreSQL store promises: its schema and migrations, migrating once when nodes
start together, atomic checks under concurrency, and driver errors translated at its boundary.
The contract it shares with SQLite is tested in test_contract.py and test_webhooks_store.py."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.pg import PostgresCluster
from threadsvc.errors import Conflict, StoreUnavailable, TooManyActiveThreads
from threadsvc.models import ActiveLimits, Level, LogEvent, Status, Thread, ThreadFilter, now_ms
from threadsvc.settings import Settings
from threadsvc.store import make_store
from threadsvc.store.migrate import apply_postgres_migrations, latest_version, migrate_postgres
from threadsvc.store.postgres import PostgresStore
from threadsvc.store.postgres_tx import Conn
from threadsvc.store.queries import load_queries, migrations

pytestmark = pytest.mark.anyio


@pytest.fixture
def dsn(postgres: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database."""
    made = postgres.new_database()
    try:
        yield made
    finally:
        postgres.drop_database(made)


@pytest.fixture
async def store(dsn: str) -> AsyncIterator[PostgresStore]:
    opened = PostgresStore(dsn)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def new_thread(user: str = "alice", group: int = 240) -> Thread:
    return Thread(
        id=secrets.token_hex(16),
        name="Sleep thread",
        username=user,
        group_id=group,
        job="sleep",
        params={"seconds": 1},
        status=Status.INITIALISED,
        created=now_ms(),
        version=1,
    )


def first_event() -> LogEvent:
    return LogEvent(1, now_ms(), Level.INFO, "created")


# -- schema and migrations --------------------------------------------------------------------
_SHAPE = {
    "columns": """
        SELECT table_name, column_name, ordinal_position, data_type, is_nullable,
               column_default, is_identity, identity_generation
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, ordinal_position""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
        ORDER BY tablename, indexname""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2""",
    "functions": """
        SELECT proname, prosrc FROM pg_proc WHERE pronamespace = 'public'::regnamespace
        ORDER BY 1""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal ORDER BY 1, 2""",
}


async def _shape(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return {
            name: await (await conn.execute(query)).fetchall() for name, query in _SHAPE.items()
        }


async def test_migrations_reach_the_schema(postgres: PostgresCluster) -> None:
    fresh, migrated = postgres.new_database(), postgres.new_database()
    try:
        async with await psycopg.AsyncConnection.connect(fresh, autocommit=True) as conn:
            assert await migrate_postgres(conn) == latest_version("postgres")
        async with (
            await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn,
            conn.transaction(),
        ):
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO schema_version VALUES (0)")
            assert await apply_postgres_migrations(conn, 0) == latest_version("postgres")
        fresh_shape, migrated_shape = await _shape(fresh), await _shape(migrated)
        assert fresh_shape["columns"] and fresh_shape["indexes"]
        assert fresh_shape == migrated_shape
        # and migrating an up-to-date database changes nothing
        async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
            assert await migrate_postgres(conn) == latest_version("postgres")
        assert await _shape(migrated) == migrated_shape
    finally:
        postgres.drop_database(fresh)
        postgres.drop_database(migrated)


async def test_active_counts_follow_every_change(postgres: PostgresCluster) -> None:
    """The counts of active threads per user (migration 0006) equal a count of the threads,
    after the back-fill of a database that had threads, and through inserts, moves of many
    users' threads in one statement, re-queues and deletes."""
    dsn = postgres.new_database()
    active = "('initialised', 'inprogress', 'warning', 'error')"
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

            async def insert(first: int, count: int, status: str) -> None:
                for n in range(first, first + count):
                    await conn.execute(
                        "INSERT INTO threads (id, name, username, group_id, job, params, status,"
                        " created, version) VALUES (%s, 'n', %s, %s, 'sleep', '{}', %s, 0, 1)",
                        (f"{n:032x}", f"u{n % 3}", 240 + n % 2, status))

            async def check() -> None:
                counted = await (await conn.execute(
                    f"SELECT username, count(*) FROM threads WHERE status IN {active}"
                    " GROUP BY username ORDER BY 1")).fetchall()
                kept = await (await conn.execute(
                    "SELECT username, n FROM active_by_user WHERE n <> 0 ORDER BY 1")).fetchall()
                assert kept == counted

            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            await conn.execute("INSERT INTO schema_version VALUES (0)")
            async with conn.transaction():
                for version, script in migrations("postgres"):
                    if version < 6:
                        await conn.execute(script)
            await insert(0, 20, "initialised")
            await insert(20, 10, "completed")
            async with conn.transaction():
                assert await apply_postgres_migrations(conn, 5) == latest_version("postgres")
            await check()
            await insert(30, 12, "initialised")
            await check()
            for new, where in [("inprogress", "seq %% 2 = 0"), ("warning", "seq %% 3 = 0"),
                               ("completed", "seq %% 4 = 0"), ("initialised", "seq %% 7 = 0"),
                               ("cancelled", "seq %% 11 = 0"), ("failed", "status = 'warning'")]:
                await conn.execute(f"UPDATE threads SET status = %s WHERE {where}", (new,))
                await check()
            await conn.execute("DELETE FROM threads WHERE seq % 3 = 1")
            await check()
    finally:
        postgres.drop_database(dsn)


def test_the_migrations_are_those_of_sqlite() -> None:
    assert latest_version("postgres") == latest_version("sqlite")


async def test_every_query_prepares(store: PostgresStore, dsn: str) -> None:
    """Each named query parses and names real tables and columns (PREPARE checks both)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for name, sql in load_queries("postgres").items():
            if name.startswith("filter_"):  # a fragment of a list's WHERE
                table = "audit_log" if name.startswith("filter_audit_") else "threads"
                sql = f"SELECT 1 FROM {table} WHERE {sql}"
            elif name.startswith("order_"):  # the order of a sorted list
                sql = f"SELECT 1 FROM threads ORDER BY {sql}"
            if sql.startswith("COPY"):  # cannot be prepared: run it, with no rows to copy
                async with conn.cursor() as cur, cur.copy(sql):
                    continue
            try:
                await conn.execute(f"PREPARE q AS {_numbered(sql.format(where='true', order='seq'))}".encode())
            except psycopg.Error as exc:
                pytest.fail(f"query {name}: {exc}")
            await conn.execute("DEALLOCATE q")


def _numbered(sql: str) -> str:
    """psycopg's %(name)s placeholders as PostgreSQL's $1, $2... (the same name, the same one)."""
    numbers: dict[str, int] = {}
    return re.sub(
        r"%\((\w+)\)s", lambda m: f"${numbers.setdefault(m.group(1), len(numbers) + 1)}", sql
    )


async def test_nodes_starting_together_migrate_once(dsn: str) -> None:
    stores = [PostgresStore(dsn, min_size=1, max_size=2) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            rows = await (await conn.execute("SELECT version FROM schema_version")).fetchall()
        assert rows == [(latest_version("postgres"),)]
        # every one of them works on the same database
        users = await asyncio.gather(
            *(s.create_user(f"u{i}", None, False) for i, s in enumerate(stores))
        )
        assert len({u.id for u in users}) == len(stores)
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# -- atomic under concurrency -----------------------------------------------------------------
async def test_limits_hold_when_starts_race(dsn: str) -> None:
    # Two nodes, each with several connections: READ COMMITTED alone would let several starts
    # count 3 active threads and all insert; the user's advisory lock makes count-and-insert one.
    nodes = [PostgresStore(dsn, max_size=8) for _ in range(2)]
    await asyncio.gather(*(n.open() for n in nodes))
    try:
        limits = ActiveLimits(per_user=4, per_group=100)
        outcomes = await asyncio.gather(
            *(
                nodes[i % 2].insert_thread(new_thread(), first_event(), limits=limits)
                for i in range(16)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(o, tuple) and o[1] for o in outcomes) == 4
        assert sum(isinstance(o, TooManyActiveThreads) for o in outcomes) == 12
        # the group's limit, across users
        group_limits = ActiveLimits(per_user=100, per_group=3)
        outcomes = await asyncio.gather(
            *(
                nodes[i % 2].insert_thread(
                    new_thread(user=f"user{i}", group=241), first_event(), limits=group_limits
                )
                for i in range(12)
            ),
            return_exceptions=True,
        )
        assert sum(isinstance(o, tuple) and o[1] for o in outcomes) == 3
        assert sum(isinstance(o, TooManyActiveThreads) for o in outcomes) == 9
    finally:
        await asyncio.gather(*(n.close() for n in nodes))


class CountingStore(PostgresStore):
    """Counts the transactions sent in one message (a start's, or a batch of starts')."""

    trips = 0

    async def _in_one_trip(self, statements: list[str], args: dict[str, Any]) -> Any:
        self.trips += 1
        return await super()._in_one_trip(statements, args)


async def test_starts_waiting_together_share_a_transaction_each_with_its_own_answer(
    dsn: str,
) -> None:
    store = CountingStore(dsn)
    await store.open()
    try:
        limits = ActiveLimits(per_user=3, per_group=100)
        taken = new_thread(user="carol")
        await store.insert_thread(taken, first_event(), limits=limits)
        store.trips = 0
        starts = [new_thread(user="alice") for _ in range(5)]  # 3 fit
        starts += [new_thread(user=f"user{i}", group=241 + i % 2) for i in range(30)]
        starts.append(dataclasses.replace(new_thread(user="carol"), id=taken.id))  # its id taken
        starts.append(new_thread(user="server", group=-1))
        outcomes = await asyncio.gather(
            *(store.insert_thread(t, first_event(), limits=limits) for t in starts),
            return_exceptions=True,
        )
        assert sum(isinstance(o, TooManyActiveThreads) for o in outcomes[:5]) == 2
        assert all(o == (t, True) for t, o in zip(starts[5:-2], outcomes[5:-2], strict=True))
        assert isinstance(outcomes[-2], Conflict)
        assert outcomes[-1] == (starts[-1], True)
        assert (await store.count_by_status())[Status.INITIALISED] == 1 + 3 + 30 + 1
        # a batch that one start would take past a limit runs again one start at a time
        more = [new_thread(user="dave") for _ in range(20)]
        outcomes = await asyncio.gather(
            *(store.insert_thread(t, first_event(), limits=limits) for t in more),
            return_exceptions=True,
        )
        assert sum(isinstance(o, tuple) for o in outcomes) == 3
        for thread, outcome in zip(more, outcomes, strict=True):  # which 3: the order they ran
            logs = await store.get_logs(thread.id, 0, 10, Level.DEBUG)
            expected = ["created"] if isinstance(outcome, tuple) else []  # a refusal: nothing
            assert [e.text for e in logs.events] == expected
        store.trips = 0
        free = [new_thread(user="erin") for _ in range(20)]
        await asyncio.gather(*(store.insert_thread(t, first_event()) for t in free))
        assert store.trips <= 3  # one alone, then the 19 that waited (in one or two batches)
        for thread in free:
            logs = await store.get_logs(thread.id, 0, 10, Level.DEBUG)
            assert [e.text for e in logs.events] == ["created"]
    finally:
        await store.close()


async def test_a_start_keeps_awkward_text_as_it_was(store: PostgresStore) -> None:
    """A start's arguments are bound by the client (one message): quotes, backslashes, percent
    signs, placeholders and any character come back unchanged."""
    awkward = "it's 100% \\ \"q\" %(id)s $1 ; COMMIT; -- \u00e9\u6f22\u2028\U0001f600\x01"
    thread = dataclasses.replace(
        new_thread(user="o'brien %s"), name=awkward, params={"p": awkward, awkward: [awkward]})
    event = LogEvent(1, now_ms(), Level.INFO, awkward)
    limits = ActiveLimits(per_user=10, per_group=10)
    assert await store.insert_thread(thread, event, limits=limits) == (thread, True)
    stored = await store.get_thread(thread.id)
    assert stored is not None
    assert (stored.name, stored.username, stored.params) == (thread.name, thread.username,
                                                             thread.params)
    logs = await store.get_logs(thread.id, 0, 10, Level.DEBUG)
    assert [e.text for e in logs.events] == [awkward]


async def test_a_failed_start_leaves_its_connection_usable(dsn: str) -> None:
    """A start is one message (BEGIN; lock; insert; COMMIT): when its insert fails the server
    skips the rest, COMMIT included, and the transaction must be rolled back before the
    connection serves again. One connection: the next start must find it clean."""
    store = PostgresStore(dsn, max_size=1)
    await store.open()
    try:
        limits = ActiveLimits(per_user=10, per_group=10)
        first = new_thread()
        await store.insert_thread(first, first_event(), limits=limits)
        with pytest.raises(Conflict):
            await store.insert_thread(first, first_event(), limits=limits)  # the same id
        second = new_thread()
        assert await store.insert_thread(second, first_event(), limits=limits) == (second, True)
        found = await store.get_thread(second.id)
        assert found is not None and found.status is Status.INITIALISED
        with pytest.raises(TooManyActiveThreads):
            await store.insert_thread(new_thread(), first_event(),
                                      limits=ActiveLimits(per_user=2, per_group=10))
        assert (await store.list_threads(ThreadFilter(username="alice"))).total == 2
    finally:
        await store.close()


async def test_one_thread_per_idempotency_key_when_starts_race(store: PostgresStore) -> None:
    outcomes = await asyncio.gather(
        *(
            store.insert_thread(
                new_thread(), first_event(), idempotency_key="key-1", idempotency_since=0
            )
            for _ in range(10)
        )
    )
    created = [thread for thread, new in outcomes if new]
    assert len(created) == 1
    assert {thread.id for thread, _ in outcomes} == {created[0].id}


async def test_nodes_claiming_together_take_different_threads(dsn: str) -> None:
    nodes = [PostgresStore(dsn, max_size=4) for _ in range(3)]
    await asyncio.gather(*(n.open() for n in nodes))
    try:
        threads = [new_thread() for _ in range(30)]
        for thread in threads:
            await nodes[0].insert_thread(thread, first_event())
        claims = await asyncio.gather(
            *(nodes[i % 3].claim_threads(f"node-{i}", 4, now_ms()) for i in range(12))
        )
        claimed = [t.id for claim in claims for t in claim]
        assert len(claimed) == len(set(claimed)) == 30
        assert {t.id for t in threads} == set(claimed)
    finally:
        await asyncio.gather(*(n.close() for n in nodes))


async def test_login_attempts_reserved_together_are_all_counted(store: PostgresStore) -> None:
    results = await asyncio.gather(
        *(store.reserve_login_attempt("alice", "", now_ms(), 900_000, 5) for _ in range(20))
    )
    assert sum(reserved for _, reserved in results) == 5
    failures = await store.get_login_failures("alice")
    assert failures is not None and failures.failures == 5 and failures.locked_until > 0


async def test_explicit_group_ids_do_not_collide_with_automatic_ones(
    store: PostgresStore,
) -> None:
    first = await store.create_group("first")
    explicit = await store.create_group("explicit", first.id + 1)
    after = await store.create_group("after")
    assert after.id > explicit.id
    low = await store.create_group("low", 10_000)
    lower = await store.create_group("lower", 5_000)  # below the sequence: it stays ahead
    assert (await store.create_group("next")).id == 10_001
    assert lower.id == 5_000 and low.id == 10_000
    names = await asyncio.gather(*(store.create_group(f"g{i}") for i in range(10)))
    assert len({g.id for g in names}) == 10


async def test_params_round_trip(store: PostgresStore) -> None:
    params = {"text": "naïve \u0000 \"quoted\" 100%", "n": 1.5, "big": 2**62, "list": [1, None]}
    thread = dataclasses.replace(new_thread(), params=params)
    await store.insert_thread(thread, first_event())
    stored = await store.get_thread(thread.id)
    assert stored is not None and stored.params == params


async def test_a_deadlocked_transaction_runs_again(store: PostgresStore) -> None:
    """Of two transactions that deadlock, the server rolls one back: the store runs it again."""
    await store.create_group("a", 1)
    await store.create_group("b", 2)
    both_hold_one = asyncio.Barrier(2)
    runs = {"ab": 0, "ba": 0}

    def locking(first: int, second: int, key: str) -> Callable[[Conn], Awaitable[str]]:
        async def fn(conn: Conn) -> str:
            runs[key] += 1
            await conn.execute("SELECT 1 FROM groups WHERE id = %s FOR UPDATE", (first,))
            if runs[key] == 1:
                await both_hold_one.wait()
            await conn.execute("SELECT 1 FROM groups WHERE id = %s FOR UPDATE", (second,))
            return key

        return fn

    done = await asyncio.gather(
        store._transaction(locking(1, 2, "ab"), snapshot=False),
        store._transaction(locking(2, 1, "ba"), snapshot=False),
    )
    # at least one ran again; a retry can meet the other before it took its second lock and
    # deadlock anew (either side), so more than one retry is possible
    assert list(done) == ["ab", "ba"] and max(runs.values()) >= 2


# -- errors at the boundary -------------------------------------------------------------------
async def test_no_server_is_store_unavailable() -> None:
    with socket_free_port() as port:
        store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/nothing", timeout=1)
        with pytest.raises(StoreUnavailable):
            await store.open()


async def test_a_closed_store_is_unavailable(dsn: str) -> None:
    store = PostgresStore(dsn)
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get_thread("x")
    with pytest.raises(StoreUnavailable):
        await store.heartbeat("n", now_ms())


async def test_an_exhausted_pool_is_unavailable(dsn: str) -> None:
    store = PostgresStore(dsn, min_size=1, max_size=1, timeout=0.5)
    await store.open()
    try:
        assert store._pool is not None
        async with store._pool.connection():  # the only connection, held
            with pytest.raises(StoreUnavailable):
                await store.get_thread("x")
        assert await store.get_thread("x") is None
    finally:
        await store.close()


async def test_a_dropped_connection_is_unavailable_then_replaced(
    store: PostgresStore, dsn: str
) -> None:
    await store.create_user("alice", None, False)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    for _ in range(20):  # the pool's connections were killed: each fails once, then is replaced
        try:
            found = await store.get_user("alice")
        except StoreUnavailable:
            continue
        assert found is not None
        break
    else:
        pytest.fail("the pool never replaced its dropped connections")


def test_make_store_picks_postgres_for_its_urls() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        store = make_store(Settings(db=url))
        assert isinstance(store, PostgresStore) and store.dsn == url


class socket_free_port:
    """A port with nothing listening on it, kept bound (not listening) while in use."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return int(self._sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


async def test_statements_are_bounded_and_planned_for_their_parameters(dsn: str) -> None:
    """Every pooled connection: a statement timeout (a runaway query fails instead of holding
    a connection) and no cached generic plans (which went stale on the outbox once)."""
    store = PostgresStore(dsn, max_size=2)
    await store.open()
    try:
        assert store._pool is not None
        async with store._pool.connection() as conn:
            timeout = await (await conn.execute("SHOW statement_timeout")).fetchone()
            mode = await (await conn.execute("SHOW plan_cache_mode")).fetchone()
            assert timeout == {"statement_timeout": "30s"}
            assert mode == {"plan_cache_mode": "force_custom_plan"}
    finally:
        await store.close()
