"""The PostgreSQL store's server settings and identities: users, tokens, clients, groups, lockouts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from threadsvc.errors import Conflict, NotFound
from threadsvc.models import (
    Group,
    LoginFailures,
    Role,
    User,
    now_ms,
)
from threadsvc.store.base import UserEntry, reserve_attempt
from threadsvc.store.postgres_sql import (
    Conn,
    Q,
    execute,
    failures_from_row,
    fetch_all,
    fetch_one,
    fetch_value,
    user_from_row,
)

T = TypeVar("T")


class PostgresIdentityQueries:
    """Mixed into PostgresStore, whose `_read`, `_write` and `_snapshot` run these."""

    if TYPE_CHECKING:

        async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

        async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

    # -- server settings --------------------------------------------------------------------
    async def get_or_put_setting(self, key: str, value: str) -> str:
        async def do(conn: Conn) -> str:
            await execute(conn, "put_setting_if_absent", {"key": key, "value": value})
            return str(await fetch_value(conn, Q["get_setting"], {"key": key}))

        return await self._write(do)

    async def put_setting(self, key: str, value: str) -> None:
        await self._write(lambda conn: execute(conn, "put_setting", {"key": key, "value": value}))

    # -- identity ---------------------------------------------------------------------------
    async def create_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        async def do(conn: Conn) -> User:
            args = {
                "username": username,
                "password_hash": password_hash,
                "is_admin": is_admin,
                "created": now_ms(),
            }
            user_id = await fetch_value(conn, Q["insert_user"], args)
            return User(id=user_id, username=username, is_admin=is_admin)

        try:
            return await self._write(do)
        except Conflict:
            raise Conflict(f"user '{username}' already exists") from None

    async def update_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        async def do(conn: Conn) -> User:
            args = {"username": username, "password_hash": password_hash, "is_admin": is_admin}
            row = await fetch_one(conn, "update_user", args)
            if row is None:
                raise NotFound(f"no user '{username}'")
            return User(row["id"], username, is_admin, row["credential_version"])

        return await self._write(do)

    async def get_user(self, username: str) -> tuple[User, str | None] | None:
        async def do(conn: Conn) -> tuple[User, str | None] | None:
            row = await fetch_one(conn, "get_user_by_name", {"username": username})
            return None if row is None else (user_from_row(row), row["password_hash"])

        return await self._read(do)

    async def list_users(self) -> list[UserEntry]:
        async def do(conn: Conn) -> list[UserEntry]:
            rows = await fetch_all(conn, Q["list_users"])
            return [
                UserEntry(User(r["id"], r["username"], r["is_admin"]), r["disabled"], r["created"])
                for r in rows
            ]

        return await self._read(do)

    async def set_password(self, username: str, password_hash: str | None) -> bool:
        args = {"username": username, "password_hash": password_hash}
        return await self._write(lambda conn: execute(conn, "set_password", args)) > 0

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        async def do(conn: Conn) -> bool:
            query = "disable_user" if disabled else "enable_user"
            row = await fetch_one(conn, query, {"username": username})
            if row is not None and disabled:
                await execute(conn, "delete_tokens_of_user", {"user_id": row["id"]})
                await execute(conn, "delete_clients_of_user", {"user_id": row["id"]})
            return row is not None

        return await self._write(do)

    async def remove_user(self, username: str) -> bool:
        async def do(conn: Conn) -> bool:
            gone = await execute(conn, "delete_user", {"username": username}) > 0
            await execute(conn, "clear_login_failures", {"username": username})
            return gone

        return await self._write(do)

    async def add_api_token(self, user_id: int, token_hash: str) -> None:
        args = {"token_hash": token_hash, "user_id": user_id, "created": now_ms()}
        await self._write(lambda conn: execute(conn, "insert_api_token", args))

    async def user_for_token(self, token_hash: str) -> User | None:
        async def do(conn: Conn) -> User | None:
            row = await fetch_one(conn, "user_for_token", {"token_hash": token_hash})
            return None if row is None else user_from_row(row)

        return await self._read(do)

    async def remove_api_token(self, token_hash: str) -> bool:
        args = {"token_hash": token_hash}
        return await self._write(lambda conn: execute(conn, "delete_api_token", args)) > 0

    async def add_oauth_client(self, user_id: int, client_id: str, secret_hash: str) -> None:
        args = {
            "client_id": client_id,
            "user_id": user_id,
            "secret_hash": secret_hash,
            "created": now_ms(),
        }
        await self._write(lambda conn: execute(conn, "insert_oauth_client", args))

    async def get_oauth_client(self, client_id: str) -> tuple[User, str] | None:
        async def do(conn: Conn) -> tuple[User, str] | None:
            row = await fetch_one(conn, "get_oauth_client", {"client_id": client_id})
            return None if row is None else (user_from_row(row), row["secret_hash"])

        return await self._read(do)

    async def remove_oauth_client(self, client_id: str) -> bool:
        args = {"client_id": client_id}
        return await self._write(lambda conn: execute(conn, "delete_oauth_client", args)) > 0

    async def list_oauth_clients(self) -> list[tuple[str, str, int]]:
        async def do(conn: Conn) -> list[tuple[str, str, int]]:
            rows = await fetch_all(conn, Q["list_oauth_clients"])
            return [(r["client_id"], r["username"], r["created"]) for r in rows]

        return await self._read(do)

    async def create_group(self, name: str, group_id: int | None = None) -> Group:
        async def do(conn: Conn) -> Group:
            await execute(conn, "lock_group_ids")
            new_id = await fetch_value(conn, Q["insert_group"], {"id": group_id, "name": name})
            return Group(id=new_id, name=name)

        try:
            return await self._write(do)
        except Conflict:
            raise Conflict(f"a group named '{name}' or with id {group_id} exists") from None

    async def get_group(self, name: str) -> Group | None:
        async def do(conn: Conn) -> Group | None:
            row = await fetch_one(conn, "get_group_by_name", {"name": name})
            return None if row is None else Group(id=row["id"], name=row["name"])

        return await self._read(do)

    async def get_group_by_id(self, group_id: int) -> Group | None:
        async def do(conn: Conn) -> Group | None:
            row = await fetch_one(conn, "get_group_by_id", {"id": group_id})
            return None if row is None else Group(id=row["id"], name=row["name"])

        return await self._read(do)

    async def set_membership(self, group_id: int, user_id: int, role: Role) -> None:
        args = {"group_id": group_id, "user_id": user_id, "role": int(role)}
        await self._write(lambda conn: execute(conn, "set_membership", args))

    async def remove_membership(self, group_id: int, user_id: int) -> bool:
        args = {"group_id": group_id, "user_id": user_id}
        return await self._write(lambda conn: execute(conn, "delete_membership", args)) > 0

    async def roles_of(self, user_id: int) -> dict[int, Role]:
        async def do(conn: Conn) -> dict[int, Role]:
            rows = await fetch_all(conn, Q["roles_of"], {"user_id": user_id})
            return {row["group_id"]: Role(row["role"]) for row in rows}

        return await self._read(do)

    async def groups_of(self, user_id: int) -> list[tuple[Group, Role]]:
        async def do(conn: Conn) -> list[tuple[Group, Role]]:
            rows = await fetch_all(conn, Q["groups_of"], {"user_id": user_id})
            return [(Group(id=row["id"], name=row["name"]), Role(row["role"])) for row in rows]

        return await self._read(do)

    async def get_login_failures(self, username: str, address: str = "") -> LoginFailures | None:
        async def do(conn: Conn) -> LoginFailures | None:
            args = {"username": username, "address": address}
            row = await fetch_one(conn, "get_login_failures", args)
            return None if row is None else failures_from_row(row)

        return await self._read(do)

    async def reserve_login_attempt(
        self, username: str, address: str, now: int, window_ms: int, attempts: int
    ) -> tuple[LoginFailures | None, bool]:
        async def do(conn: Conn) -> tuple[LoginFailures | None, bool]:
            # Attempts on one name, from any node, wait for each other here: no two read the
            # same count (the lock is the user's, which their thread starts take too).
            await execute(conn, "lock_user", {"username": username})
            args = {"username": username, "address": address}
            row = await fetch_one(conn, "get_login_failures", args)
            current = None if row is None else failures_from_row(row)
            reserved = reserve_attempt(current, now, window_ms, attempts)
            if reserved is None:
                return current, False
            await execute(conn, "put_login_failures", {
                **args, "failures": reserved.failures, "window_start": reserved.window_start,
                "locked_until": reserved.locked_until})
            return reserved, True

        return await self._write(do)

    async def clear_login_failures(self, username: str, address: str | None = None) -> bool:
        if address is None:
            name, args = "clear_login_failures", {"username": username}
        else:
            name, args = "clear_login_failures_from", {"username": username, "address": address}
        return await self._write(lambda conn: execute(conn, name, args)) > 0

    async def forget_login_failures(self, now: int, window_ms: int) -> int:
        args = {"now": now, "window_over": now - window_ms}
        return await self._write(lambda conn: execute(conn, "forget_login_failures", args))

