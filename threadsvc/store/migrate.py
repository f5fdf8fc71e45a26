"""Bring a SQLite database to the latest schema: schema.sql when fresh, else migrations."""

from __future__ import annotations

import sqlite3

from threadsvc.store.queries import migrations, schema


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


def latest_version() -> int:
    return max(version for version, _ in migrations("sqlite"))


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
