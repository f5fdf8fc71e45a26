"""Bring a database to the latest schema: schema.sql when fresh, else the numbered migrations."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from threadsvc.store.queries import migrations, schema

if TYPE_CHECKING:
    from psycopg import AsyncConnection


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


def migrate_sqlite(conn: sqlite3.Connection) -> int:
    """Migrate inside one write transaction, so processes starting together do it once."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not exists:
            for statement in statements(schema("sqlite")):
                conn.execute(statement)
            version = latest_version()
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        else:
            version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
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


async def migrate_postgres(conn: AsyncConnection[Any]) -> int:
    """Migrate inside one transaction holding an advisory lock, so that nodes starting together
    migrate once (DDL is transactional: a failed migration leaves nothing behind)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SET LOCAL statement_timeout = 0")  # a migration may take its time
        await cur.execute(_PG_MIGRATE_LOCK)
        await cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
        row = await cur.fetchone()
        if row is None or not _first(row):
            await cur.execute(schema("postgres"))  # no parameters: a whole script at once
            version = latest_version("postgres")
            await cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        else:
            await cur.execute("SELECT version FROM schema_version")
            found = await cur.fetchone()
            assert found is not None, "schema_version is empty"
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
