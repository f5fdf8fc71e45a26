"""The SQLite store's server settings and identities: users, tokens, clients, groups, lockouts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from threadsvc.errors import Conflict, NotFound
from threadsvc.models import Group, LoginFailures, Role, User, now_ms
from threadsvc.store.base import UserEntry, reserve_attempt
from threadsvc.store.queries import load_queries

Q = load_queries("sqlite")
T = TypeVar("T")


def _user(row: sqlite3.Row) -> User:
    """A user from (id, username, is_admin, any, credential_version)."""
    return User(id=row[0], username=row[1], is_admin=bool(row[2]), credential_version=row[4])


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

    async def put_setting(self, key: str, value: str) -> None:
        await self._write(lambda conn: conn.execute(Q["put_setting"], {"key": key, "value": value}))

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
            return User(row[0], username, is_admin, credential_version=row[1])

        return await self._write(do)

    async def get_user(self, username: str) -> tuple[User, str | None] | None:
        def do(conn: sqlite3.Connection) -> tuple[User, str | None] | None:
            row = conn.execute(Q["get_user_by_name"], {"username": username}).fetchone()
            return None if row is None else (_user(row), row[3])

        return await self._read(do)

    async def list_users(self) -> list[UserEntry]:
        def do(conn: sqlite3.Connection) -> list[UserEntry]:
            rows = conn.execute(Q["list_users"]).fetchall()
            return [UserEntry(User(r[0], r[1], bool(r[2])), bool(r[3]), r[4]) for r in rows]

        return await self._read(do)

    async def set_password(self, username: str, password_hash: str | None) -> bool:
        args = {"username": username, "password_hash": password_hash}
        return await self._write(
            lambda conn: conn.execute(Q["set_password"], args).fetchone() is not None
        )

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        def do(conn: sqlite3.Connection) -> bool:
            query = Q["disable_user"] if disabled else Q["enable_user"]
            row = conn.execute(query, {"username": username}).fetchone()
            if row is not None and disabled:
                conn.execute(Q["delete_tokens_of_user"], {"user_id": row[0]})
                conn.execute(Q["delete_clients_of_user"], {"user_id": row[0]})
            return row is not None

        return await self._write(do)

    async def remove_user(self, username: str) -> bool:
        def do(conn: sqlite3.Connection) -> bool:
            gone = conn.execute(Q["delete_user"], {"username": username}).fetchone() is not None
            conn.execute(Q["clear_login_failures"], {"username": username})
            return gone

        return await self._write(do)

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

    async def remove_oauth_client(self, client_id: str) -> bool:
        args = {"client_id": client_id}
        return await self._write(
            lambda conn: conn.execute(Q["delete_oauth_client"], args).fetchone() is not None
        )

    async def list_oauth_clients(self) -> list[tuple[str, str, int]]:
        def do(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
            return [(r[0], r[1], r[2]) for r in conn.execute(Q["list_oauth_clients"]).fetchall()]

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

    async def get_login_failures(self, username: str, address: str = "") -> LoginFailures | None:
        def do(conn: sqlite3.Connection) -> LoginFailures | None:
            return _failures(conn, username, address)

        return await self._read(do)

    async def reserve_login_attempt(
        self, username: str, address: str, now: int, window_ms: int, attempts: int
    ) -> tuple[LoginFailures | None, bool]:
        def do(conn: sqlite3.Connection) -> tuple[LoginFailures | None, bool]:
            current = _failures(conn, username, address)  # one writer at a time: atomic
            reserved = reserve_attempt(current, now, window_ms, attempts)
            if reserved is None:
                return current, False
            args = {"username": username, "address": address, "failures": reserved.failures,
                    "window_start": reserved.window_start, "locked_until": reserved.locked_until}
            conn.execute(Q["put_login_failures"], args)
            return reserved, True

        return await self._write(do)

    async def clear_login_failures(self, username: str, address: str | None = None) -> bool:
        if address is None:
            query, args = Q["clear_login_failures"], {"username": username}
        else:
            query, args = Q["clear_login_failures_from"], {"username": username, "address": address}
        return await self._write(lambda conn: conn.execute(query, args).rowcount > 0)

    async def forget_login_failures(self, now: int, window_ms: int) -> int:
        args = {"now": now, "window_over": now - window_ms}
        return await self._write(lambda conn: conn.execute(Q["forget_login_failures"], args).rowcount)



def _failures(conn: sqlite3.Connection, username: str, address: str) -> LoginFailures | None:
    args = {"username": username, "address": address}
    row = conn.execute(Q["get_login_failures"], args).fetchone()
    return None if row is None else LoginFailures(row[0], row[1], row[2])
