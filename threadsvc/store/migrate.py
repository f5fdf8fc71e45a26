"""Bring a database to the latest schema: schema.sql when fresh, else the numbered migrations;
or say what would run (`threadsvc migrate --check`).

Two refusals keep a store whole: a command that may not create a store (all but `serve`,
`user add` and `group add`) finds no schema and stops (`NotAStore`) rather than making tables
in a mistyped or foreign database; and a store whose schema is newer than this code knows
(an old binary after an upgrade) is refused (`NewerSchema`) rather than run on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from threadsvc.errors import StoreUnavailable, ThreadsvcError
from threadsvc.store.queries import migrations, schema, sql_dir

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from threadsvc.settings import Settings


class NotAStore(ThreadsvcError):
    """No store there: no SQLite file, or a database without threadsvc's schema."""


class NewerSchema(ThreadsvcError):
    """The store's schema is newer than this threadsvc knows."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the store's schema is version {found}, newer than this threadsvc knows "
            f"(up to {known}): it was upgraded by a newer threadsvc; run that version"
        )


def check_version(found: int, dialect: str) -> None:
    """Refuse a store whose schema this code does not know."""
    if found > latest_version(dialect):
        raise NewerSchema(found, latest_version(dialect))


def migration_files(dialect: str) -> list[tuple[int, str]]:
    """(version, file name) of every numbered migration, in order."""
    paths = sorted((sql_dir(dialect) / "migrations").glob("[0-9]*.sql"))
    return [(int(path.name.split("_", 1)[0]), path.name) for path in paths]


def pending(dialect: str, current: int) -> list[tuple[int, str]]:
    """The migrations a store at version `current` would get, in order."""
    return [(version, name) for version, name in migration_files(dialect) if version > current]


async def stored_version(settings: Settings) -> int:
    """The schema version of the store `settings` name, read without changing anything.

    Raises NotAStore (nothing there, or no threadsvc schema) and StoreUnavailable."""
    path = settings.sqlite_path
    if path is not None:
        return _sqlite_version(path)
    return await _postgres_version(settings.db)


def _sqlite_version(path: Path) -> int:
    if not path.is_file():
        raise NotAStore(f"no store at {path}")
    try:
        # read-write but only read: a read-only connection would leave -wal and -shm behind
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
        try:
            row = conn.execute("SELECT version FROM schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise NotAStore(f"{path} is not a threadsvc store (no schema_version)") from None
        raise StoreUnavailable(f"SQLite store {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:  # not a database at all
        raise NotAStore(f"{path} is not a threadsvc store ({exc})") from None
    if row is None:
        raise NotAStore(f"{path} is not a threadsvc store (no schema version)")
    return int(row[0])


async def _postgres_version(dsn: str) -> int:
    import psycopg

    from threadsvc.store import redact

    try:
        conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=10, autocommit=True)
        async with conn:
            cur = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
            row = await cur.fetchone()
            if row is None or not row[0]:
                raise NotAStore("the database holds no threadsvc store (no schema_version)")
            cur = await conn.execute("SELECT version FROM schema_version")
            found = await cur.fetchone()
    except psycopg.Error as exc:
        raise StoreUnavailable(f"PostgreSQL store: {redact(str(exc), dsn)}") from None
    if found is None:
        raise NotAStore("the database holds no threadsvc store (no schema version)")
    return int(found[0])


def statements(script: str) -> list[str]:
    """Split a script into whole statements (sqlite3.complete_statement knows about triggers)."""
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip().strip(";").strip() and not _only_comments(pending):
                found.append(pending.strip())
            pending = ""
    return found


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def latest_version(dialect: str = "sqlite") -> int:
    return max(version for version, _ in migrations(dialect))


def has_schema_sqlite(conn: sqlite3.Connection) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone() is not None


def migrate_sqlite(conn: sqlite3.Connection, create: bool = True) -> int:
    """Migrate inside one write transaction, so processes starting together do it once.
    `create`: give a database without the schema schema.sql (else NotAStore)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not has_schema_sqlite(conn):
            if not create:
                raise NotAStore("not a threadsvc store (no schema_version)")
            for statement in statements(schema("sqlite")):
                conn.execute(statement)
            version = latest_version()
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        else:
            version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
            check_version(version, "sqlite")
            version = apply_migrations(conn, version)
        conn.execute("COMMIT")
        return int(version)
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def apply_migrations(conn: sqlite3.Connection, current: int) -> int:
    """Apply every migration above `current` (the caller holds the transaction)."""
    for version, script in migrations("sqlite"):
        if version > current:
            for statement in statements(script):
                conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (version,))
            current = version
    return current


# -- PostgreSQL -----------------------------------------------------------------------------
# Held (per transaction) while a node checks and migrates: nodes starting together queue up, and
# each after the first finds the work done, since every statement under READ COMMITTED sees what
# was committed before it.
_PG_MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('threadsvc.migrate'), 0)"


async def migrate_postgres(conn: AsyncConnection[Any], create: bool = True) -> int:
    """Migrate inside one transaction holding an advisory lock, so that nodes starting together
    migrate once (DDL is transactional: a failed migration leaves nothing behind). `create`:
    give a database without the schema schema.sql (else NotAStore)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SET LOCAL statement_timeout = 0")  # a migration may take its time
        await cur.execute(_PG_MIGRATE_LOCK)
        await cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        row = await cur.fetchone()
        if row is None or not _first(row):
            if not create:
                raise NotAStore("the database holds no threadsvc store (no schema_version)")
            await cur.execute(schema("postgres"))  # no parameters: a whole script at once
            version = latest_version("postgres")
            await cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        else:
            await cur.execute("SELECT version FROM schema_version")
            found = await cur.fetchone()
            assert found is not None, "schema_version is empty"
            check_version(int(_first(found)), "postgres")
            version = await apply_postgres_migrations(conn, int(_first(found)))
    return version


async def apply_postgres_migrations(conn: AsyncConnection[Any], current: int) -> int:
    """Apply every migration above `current` (the caller holds the transaction)."""
    async with conn.cursor() as cur:
        for version, script in migrations("postgres"):
            if version > current:
                await cur.execute(script)
                await cur.execute("UPDATE schema_version SET version = %s", (version,))
                current = version
    return current


def _first(row: Any) -> Any:
    """The first column, whatever the connection's row factory (tuple or dict)."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
