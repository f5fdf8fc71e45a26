"""The SQLite store's server settings and identities: users, tokens, clients, groups, lockouts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from threadsvc.errors import Conflict, NotFound
from threadsvc.models import Group, Role, User, now_ms
from threadsvc.store.base import LoginFailures
from threadsvc.store.queries import load_queries

Q = load_queries("sqlite")
T = TypeVar("T")


def _user(row: sqlite3.Row) -> User:
    return User(id=row[0], username=row[1], is_admin=bool(row[2]))


class IdentityQueries:
    """Mixed into SQLiteStore, whose `_read` and `_write` run these in its transactions."""

    if TYPE_CHECKING:

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    # -- server settings --------------------------------------------------------------------
    async def get_or_put_setting(self, key: str, value: str) -> str:
        def do(conn: sqlite3.Connection) -> str:
            conn.execute(Q["put_setting_if_absent"], {"key": key, "value": value})
            return str(conn.execute(Q["get_setting"], {"key": key}).fetchone()[0])

        return await self._write(do)

    # -- identity ---------------------------------------------------------------------------
    async def create_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        def do(conn: sqlite3.Connection) -> User:
            row = conn.execute(
                Q["insert_user"],
                {
                    "username": username,
                    "password_hash": password_hash,
                    "is_admin": int(is_admin),
                    "created": now_ms(),
                },
            ).fetchone()
            return User(id=row[0], username=username, is_admin=is_admin)

        try:
            return await self._write(do)
        except Conflict:
            raise Conflict(f"user '{username}' already exists") from None

    async def update_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        def do(conn: sqlite3.Connection) -> User:
            args = {"username": username, "password_hash": password_hash, "is_admin": is_admin}
            row = conn.execute(Q["update_user"], args).fetchone()
            if row is None:
                raise NotFound(f"no user '{username}'")
            return User(id=row[0], username=username, is_admin=is_admin)

        return await self._write(do)

    async def get_user(self, username: str) -> tuple[User, str | None] | None:
        def do(conn: sqlite3.Connection) -> tuple[User, str | None] | None:
            row = conn.execute(Q["get_user_by_name"], {"username": username}).fetchone()
            return None if row is None else (_user(row), row[3])

        return await self._read(do)

    async def add_api_token(self, user_id: int, token_hash: str) -> None:
        args = {"token_hash": token_hash, "user_id": user_id, "created": now_ms()}
        await self._write(lambda conn: conn.execute(Q["insert_api_token"], args))

    async def user_for_token(self, token_hash: str) -> User | None:
        def do(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(Q["user_for_token"], {"token_hash": token_hash}).fetchone()
            return None if row is None else _user(row)

        return await self._read(do)

    async def remove_api_token(self, token_hash: str) -> bool:
        args = {"token_hash": token_hash}
        return await self._write(
            lambda conn: conn.execute(Q["delete_api_token"], args).fetchone() is not None
        )

    async def add_oauth_client(self, user_id: int, client_id: str, secret_hash: str) -> None:
        args = {
            "client_id": client_id,
            "user_id": user_id,
            "secret_hash": secret_hash,
            "created": now_ms(),
        }
        await self._write(lambda conn: conn.execute(Q["insert_oauth_client"], args))

    async def get_oauth_client(self, client_id: str) -> tuple[User, str] | None:
        def do(conn: sqlite3.Connection) -> tuple[User, str] | None:
            row = conn.execute(Q["get_oauth_client"], {"client_id": client_id}).fetchone()
            return None if row is None else (_user(row), row[3])

        return await self._read(do)

    async def create_group(self, name: str, group_id: int | None = None) -> Group:
        def do(conn: sqlite3.Connection) -> Group:
            row = conn.execute(Q["insert_group"], {"id": group_id, "name": name}).fetchone()
            return Group(id=row[0], name=name)

        try:
            return await self._write(do)
        except Conflict:
            raise Conflict(f"a group named '{name}' or with id {group_id} exists") from None

    async def get_group(self, name: str) -> Group | None:
        def do(conn: sqlite3.Connection) -> Group | None:
            row = conn.execute(Q["get_group_by_name"], {"name": name}).fetchone()
            return None if row is None else Group(id=row[0], name=row[1])

        return await self._read(do)

    async def get_group_by_id(self, group_id: int) -> Group | None:
        def do(conn: sqlite3.Connection) -> Group | None:
            row = conn.execute(Q["get_group_by_id"], {"id": group_id}).fetchone()
            return None if row is None else Group(id=row[0], name=row[1])

        return await self._read(do)

    async def set_membership(self, group_id: int, user_id: int, role: Role) -> None:
        args = {"group_id": group_id, "user_id": user_id, "role": int(role)}
        await self._write(lambda conn: conn.execute(Q["set_membership"], args))

    async def remove_membership(self, group_id: int, user_id: int) -> bool:
        args = {"group_id": group_id, "user_id": user_id}
        return await self._write(
            lambda conn: conn.execute(Q["delete_membership"], args).fetchone() is not None
        )

    async def roles_of(self, user_id: int) -> dict[int, Role]:
        def do(conn: sqlite3.Connection) -> dict[int, Role]:
            rows = conn.execute(Q["roles_of"], {"user_id": user_id}).fetchall()
            return {row[0]: Role(row[1]) for row in rows}

        return await self._read(do)

    async def groups_of(self, user_id: int) -> list[tuple[Group, Role]]:
        def do(conn: sqlite3.Connection) -> list[tuple[Group, Role]]:
            rows = conn.execute(Q["groups_of"], {"user_id": user_id}).fetchall()
            return [(Group(id=row[0], name=row[1]), Role(row[2])) for row in rows]

        return await self._read(do)

    async def get_login_failures(self, username: str) -> LoginFailures | None:
        def do(conn: sqlite3.Connection) -> LoginFailures | None:
            row = conn.execute(Q["get_login_failures"], {"username": username}).fetchone()
            return None if row is None else LoginFailures(row[0], row[1], row[2])

        return await self._read(do)

    async def record_login_failure(
        self, username: str, now: int, window_ms: int, attempts: int
    ) -> LoginFailures:
        def do(conn: sqlite3.Connection) -> LoginFailures:
            row = conn.execute(Q["get_login_failures"], {"username": username}).fetchone()
            if row is None or row[1] <= now - window_ms:
                failures = LoginFailures(1, now, 0)
            else:
                failures = LoginFailures(row[0] + 1, row[1], row[2])
            if failures.failures >= attempts:
                failures = LoginFailures(failures.failures, failures.window_start, now + window_ms)
            conn.execute(
                Q["put_login_failures"],
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
        await self._write(lambda conn: conn.execute(Q["clear_login_failures"], args))

    async def forget_login_failures(self, now: int, window_ms: int) -> int:
        args = {"now": now, "window_over": now - window_ms}
        return await self._write(lambda conn: conn.execute(Q["forget_login_failures"], args).rowcount)

