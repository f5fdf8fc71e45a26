"""What only the SQLite store promises: its schema, its migrations, and reads beside a writer."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from threadsvc.models import ThreadFilter
from threadsvc.store.migrate import apply_migrations, latest_version, migrate_sqlite, statements
from threadsvc.store.queries import load_queries, migrations, sql_dir
from threadsvc.store.sqlite import SQLiteStore


def _shape(conn: sqlite3.Connection) -> dict[str, object]:
    """Tables by their columns and foreign keys; indexes by their SQL (ALTER TABLE rewrites a
    table's CREATE text, so that text cannot be compared)."""
    shape: dict[str, object] = {}
    for kind, name, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
    ):
        if kind == "table":
            columns = conn.execute(f"PRAGMA table_info({name})").fetchall()
            keys = conn.execute(f"PRAGMA foreign_key_list({name})").fetchall()
            without_rowid = "WITHOUT ROWID" in sql.upper()
            shape[name] = (columns, keys, without_rowid)
        else:
            shape[name] = " ".join(sql.split())
    return shape


def test_migrations_reach_the_schema(tmp_path: Path) -> None:
    fresh = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    assert migrate_sqlite(fresh) == latest_version()
    migrated = sqlite3.connect(tmp_path / "migrated.db", isolation_level=None)
    migrated.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    migrated.execute("INSERT INTO schema_version VALUES (0)")
    migrated.execute("BEGIN")
    assert apply_migrations(migrated, 0) == latest_version()
    migrated.execute("COMMIT")
    assert _shape(fresh) == _shape(migrated)
    # and migrating an up-to-date database changes nothing
    assert migrate_sqlite(migrated) == latest_version()


def test_every_query_parses(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    migrate_sqlite(conn)
    for name, sql in load_queries("sqlite").items():
        if name.startswith("filter_"):  # a fragment of a list's WHERE
            table = "audit_log" if name.startswith("filter_audit_") else "threads"
            sql = f"SELECT 1 FROM {table} WHERE {sql}"
        elif name.startswith("order_"):  # the order of a sorted list
            sql = f"SELECT 1 FROM threads ORDER BY {sql}"
        conn.execute("EXPLAIN " + sql.format(where="1", order="seq"), _null_args(sql))


def _null_args(sql: str) -> dict[str, None] | tuple[None, ...]:
    """NULL for every parameter: named (:name), or positional (?) in the few that are."""
    import re

    if "?" in sql:
        return (None,) * sql.count("?")
    return {name: None for name in re.findall(r":([a-z_]+)", sql)}


# Queries only one dialect needs, and why. PostgreSQL: transaction-level advisory locks that make
# a read-then-write atomic under READ COMMITTED (SQLite has one writer at a time, BEGIN IMMEDIATE).
# PostgreSQL also: COPY, for big batches of log events; a start's insert that also reads the
# counts and finds the idempotency key (its message holds the locks only while the server works),
# and both locks in one statement. SQLite finds the key and inserts in statements of their own.
# SQLite: whether any webhook exists, before queueing deliveries change by change (PostgreSQL
# queues a transaction's changes in one statement, which finds that out for itself); the active
# threads of a user and a group from the counts its triggers keep (migration 0005); the claimed
# threads' last log seqs in a query of their own (PostgreSQL returns them from the claim; in
# SQLite, a subquery in RETURNING costs half a millisecond a row).
DIALECT_ONLY = {
    "postgres": {
        "lock_user", "lock_user_and_group", "lock_group_ids", "lock_claims", "lock_delivery_claims",
        "lock_webhooks", "lock_audit", "copy_log_events",
        "insert_thread_within_limits", "lock_users", "lock_groups", "insert_threads_within_limits",
    },
    "sqlite": {
        "any_webhooks", "count_active", "last_log_seqs", "insert_thread", "find_idempotent",
    },
}


def test_dialects_define_the_same_queries() -> None:
    dialects = [p.name for p in sql_dir("sqlite").parent.iterdir() if p.is_dir()]
    names = {d: set(load_queries(d)) - DIALECT_ONLY.get(d, set()) for d in dialects}
    assert all(found == names["sqlite"] for found in names.values()), {
        d: found ^ names["sqlite"] for d, found in names.items()
    }
    for dialect, only in DIALECT_ONLY.items():
        assert only <= set(load_queries(dialect)), f"{dialect} no longer defines them all"


def test_queries_are_written_once_with_named_parameters() -> None:
    """sql/*.sql is written with :name parameters, which PostgreSQL's queries get as psycopg's
    %(name)s when loaded; its `::type` casts stay as they are."""
    sqlite, postgres = load_queries("sqlite"), load_queries("postgres")
    assert sqlite["get_thread"] == "SELECT * FROM threads WHERE id = :id"
    assert postgres["get_thread"] == "SELECT * FROM threads WHERE id = %(id)s"
    assert "(%(bucket)s::bigint + 1)" in postgres["filter_below_bucket"]
    assert not [name for name, sql in postgres.items() if re.search(r"(?<![:\w]):\w", sql)]


def test_statements_split_whole_statements() -> None:
    script = "-- c\nCREATE TABLE a (x);\n\nCREATE TRIGGER t AFTER INSERT ON a BEGIN SELECT 1; END;\n"
    assert len(statements(script)) == 2


@pytest.mark.anyio
async def test_reads_do_not_wait_behind_a_writer(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await store.open()
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO groups (name) VALUES ('held')")
        # The write lock is held and uncommitted: a read must still answer, from its snapshot.
        page = await store.list_threads(ThreadFilter())
        assert page.total == 0
        assert await store.get_group("held") is None
        other.execute("COMMIT")
        assert await store.get_group("held") is not None
    finally:
        other.close()
        await store.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_active_counts_follow_every_change(tmp_path: Path) -> None:
    """The counts the limits read (migration 0005) equal a count of the threads, through
    inserts, claims, warnings, ends, re-queues and deletes, and a migration back-fills them."""
    conn = sqlite3.connect(tmp_path / "counts.db", isolation_level=None)
    migrate_sqlite(conn)
    active = "('initialised', 'inprogress', 'warning', 'error')"

    def insert(n: int, user: str, group: int, status: str) -> None:
        conn.execute(
            "INSERT INTO threads (id, name, username, group_id, job, params, status, created,"
            " version) VALUES (?, 'n', ?, ?, 'sleep', '{}', ?, 0, 1)",
            (f"{n:032x}", user, group, status),
        )

    def check() -> None:
        by_user = dict(conn.execute(f"SELECT username, count(*) FROM threads WHERE status IN {active} GROUP BY username"))
        by_group = dict(conn.execute(f"SELECT group_id, count(*) FROM threads WHERE status IN {active} GROUP BY group_id"))
        kept_user = {k: v for k, v in conn.execute("SELECT username, n FROM active_by_user") if v}
        kept_group = {k: v for k, v in conn.execute("SELECT group_id, n FROM active_by_group") if v}
        assert (kept_user, kept_group) == (by_user, by_group)

    for n in range(30):
        insert(n, f"u{n % 3}", 240 + n % 2, "completed" if n % 5 == 0 else "initialised")
    check()
    for new, where in [("inprogress", "rowid % 2 = 0"), ("warning", "rowid % 3 = 0"),
                       ("completed", "rowid % 4 = 0"), ("initialised", "rowid % 7 = 0"),
                       ("cancelled", "rowid % 11 = 0"), ("failed", "status = 'warning'")]:
        conn.execute(f"UPDATE threads SET status = ? WHERE {where}", (new,))
        check()
    conn.execute("DELETE FROM threads WHERE rowid % 3 = 1")
    check()
    # a database from before 0005: the migration counts what is there
    conn.execute("DELETE FROM active_by_user")
    conn.execute("DELETE FROM active_by_group")
    conn.execute("BEGIN")
    for _, script in [m for m in migrations("sqlite") if m[0] == 5]:
        for statement in statements(script):
            code = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
            if not code.startswith("CREATE"):  # the back-fill
                conn.execute(code)
    conn.execute("COMMIT")
    check()
