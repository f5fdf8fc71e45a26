"""Running named queries on a PostgreSQL connection: the few helpers both parts of the store use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from threadsvc.models import LoginFailures, User
from threadsvc.store.queries import load_queries

Conn = AsyncConnection[DictRow]
Q = load_queries("postgres")


def user_from_row(row: Mapping[str, Any]) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        is_admin=bool(row["is_admin"]),
        credential_version=row["credential_version"],
    )


async def fetch_one(conn: Conn, name: str, args: Mapping[str, Any] | None = None) -> DictRow | None:
    return await (await conn.execute(Q[name], args)).fetchone()


async def fetch_all(conn: Conn, sql: str, args: Mapping[str, Any] | None = None) -> list[DictRow]:
    return await (await conn.execute(sql, args)).fetchall()


async def fetch_value(conn: Conn, sql: str, args: Mapping[str, Any] | None = None) -> Any:
    """The first column of the one row `sql` returns."""
    row = await (await conn.execute(sql, args)).fetchone()
    assert row is not None
    return next(iter(row.values()))


async def execute(conn: Conn, name: str, args: Mapping[str, Any] | None = None) -> int:
    """Execute a named statement; how many rows it changed."""
    return (await conn.execute(Q[name], args)).rowcount


def failures_from_row(row: Mapping[str, Any]) -> LoginFailures:
    return LoginFailures(row["failures"], row["window_start"], row["locked_until"])
