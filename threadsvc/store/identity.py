"""The store's server settings and identities: users, tokens, clients, groups, lockouts; written
once over the dialect primitives (dialect.py)."""

from __future__ import annotations

from threadsvc.errors import Conflict, NotFound
from threadsvc.models import Actor, Group, LoginFailures, Role, User, UserEntry, now_ms
from threadsvc.store.audit import Audit, AuditRules
from threadsvc.store.dialect import Args, Tx
from threadsvc.store.rows import failures_from_row, user_from_row


def reserve_attempt(
    current: LoginFailures | None, now: int, window_ms: int, attempts: int
) -> LoginFailures | None:
    """The counts once one more attempt is reserved, or None when none may be made now.

    The attempt that reaches `attempts` locks the name at once, before its password is checked,
    so that however many arrive together no more than `attempts` are ever checked in a window;
    its own check still runs, and a success lifts the lock (the store's caller clears it)."""
    if current is not None and current.locked_until > now:
        return None
    if current is None or current.window_start <= now - window_ms:
        count, start = 1, now
    else:
        count, start = current.failures + 1, current.window_start
    if count > max(1, attempts):
        return None  # only when a lock was cleared by hand inside its window
    return LoginFailures(count, start, now + window_ms if count >= attempts else 0)


async def _changed(tx: Tx, name: str, args: Args) -> bool:
    """Whether statement `name` (which returns the rows it changed) changed any."""
    return await tx.one(name, args) is not None


class IdentityRules(AuditRules):
    """Each change taking `by` writes its audit entry in its transaction (store/audit.py)."""

    # -- server settings --------------------------------------------------------------------
    async def get_or_put_setting(self, key: str, value: str) -> str:
        """The stored value of `key`, storing `value` first when there is none."""
        async def do(tx: Tx) -> str:
            await tx.run("put_setting_if_absent", {"key": key, "value": value})
            return str(await tx.value("get_setting", {"key": key}))

        return await self._write(do)

    async def put_setting(self, key: str, value: str) -> None:
        await self._write(lambda tx: tx.run("put_setting", {"key": key, "value": value}))

    # -- identity ---------------------------------------------------------------------------
    async def create_user(
        self, username: str, password_hash: str | None, is_admin: bool, *, by: Actor | None = None
    ) -> User:
        """Raises Conflict when the username is taken."""
        args = {
            "username": username,
            "password_hash": password_hash,
            "is_admin": is_admin,
            "created": now_ms(),
        }

        async def do(tx: Tx, audit: Audit) -> User:
            user_id = await tx.value("insert_user", args)
            await audit(tx, "user.add", username, detail=_kind(is_admin))
            return User(id=user_id, username=username, is_admin=is_admin)

        try:
            return await self._audited(by, do)
        except Conflict:
            raise Conflict(f"user '{username}' already exists") from None

    async def update_user(
        self, username: str, password_hash: str | None, is_admin: bool, *, by: Actor | None = None
    ) -> User:
        """Raises NotFound when there is no such user."""
        async def do(tx: Tx, audit: Audit) -> User:
            args = {"username": username, "password_hash": password_hash, "is_admin": is_admin}
            row = await tx.one("update_user", args)
            if row is None:
                raise NotFound(f"no user '{username}'")
            await audit(tx, "user.update", username, detail=f"new password, {_kind(is_admin)}")
            return User(row["id"], username, is_admin, row["credential_version"])

        return await self._audited(by, do)

    async def get_user(self, username: str) -> tuple[User, str | None] | None:
        """The user and their password hash; None for a disabled user, as for an unknown one
        (every credential is looked up through here, `user_for_token` or `get_oauth_client`,
        which also ignore disabled users)."""
        async def do(tx: Tx) -> tuple[User, str | None] | None:
            row = await tx.one("get_user_by_name", {"username": username})
            return None if row is None else (user_from_row(row), row["password_hash"])

        return await self._read(do)

    async def list_users(self) -> list[UserEntry]:
        async def do(tx: Tx) -> list[UserEntry]:
            rows = await tx.all("list_users")
            return [
                UserEntry(User(r["id"], r["username"], bool(r["is_admin"])), bool(r["disabled"]),
                          r["created"])
                for r in rows
            ]

        return await self._read(do)

    async def find_users(
        self, search: str, offset: int, limit: int
    ) -> tuple[list[UserEntry], int]:
        """The users whose name holds `search` (ASCII letters in any case), by name: at most
        `limit` from the `offset`th, and how many match in all (one snapshot)."""
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        args = {"pattern": f"%{escaped}%", "offset": offset, "limit": limit}

        async def do(tx: Tx) -> tuple[list[UserEntry], int]:
            rows = await tx.all("find_users", args)
            total = int(await tx.value("count_found_users", args))
            return [UserEntry(User(r["id"], r["username"], bool(r["is_admin"])),
                              bool(r["disabled"]), r["created"]) for r in rows], total

        return await self._snapshot(do)

    async def set_password(
        self, username: str, password_hash: str | None, *, by: Actor | None = None
    ) -> bool:
        """Bumps the credential version; False when there is no such user."""
        args = {"username": username, "password_hash": password_hash}

        async def do(tx: Tx, audit: Audit) -> bool:
            if not await _changed(tx, "set_password", args):
                return False
            await audit(tx, "user.passwd", username,
                        detail="" if password_hash else "no password: tokens only")
            return True

        return await self._audited(by, do)

    async def set_disabled(self, username: str, disabled: bool, *, by: Actor | None = None) -> bool:
        """Disabling bumps the credential version and deletes the user's API tokens and OAuth
        clients, in one transaction; False when there is no such user."""
        async def do(tx: Tx, audit: Audit) -> bool:
            query = "disable_user" if disabled else "enable_user"
            row = await tx.one(query, {"username": username})
            if row is None:
                return False
            if disabled:
                tokens = await tx.run("delete_tokens_of_user", {"user_id": row["id"]})
                clients = await tx.run("delete_clients_of_user", {"user_id": row["id"]})
                detail = f"{tokens} API tokens and {clients} OAuth clients deleted"
                await audit(tx, "user.disable", username, detail=detail)
            else:
                await audit(tx, "user.enable", username)
            return True

        return await self._audited(by, do)

    async def remove_user(self, username: str, *, by: Actor | None = None) -> bool:
        """With their memberships, tokens and clients (their threads stay); False when none."""
        async def do(tx: Tx, audit: Audit) -> bool:
            gone = await _changed(tx, "delete_user", {"username": username})
            await tx.run("clear_login_failures", {"username": username})
            if gone:
                await audit(tx, "user.remove", username)
            return gone

        return await self._audited(by, do)

    async def revoke_credentials(
        self, username: str, *, by: Actor | None = None
    ) -> tuple[int, int] | None:
        """Ends every credential of the user but their password, in one transaction: deletes
        their API tokens and OAuth clients (which ends the clients' access tokens) and bumps the
        credential version (which ends their console sessions). The numbers of tokens and
        clients deleted; None when there is no such user. Audited as one `token.revoke`."""
        async def do(tx: Tx, audit: Audit) -> tuple[int, int] | None:
            row = await tx.one("bump_credential_version", {"username": username})
            if row is None:
                return None
            tokens = await tx.run("delete_tokens_of_user", {"user_id": row["id"]})
            clients = await tx.run("delete_clients_of_user", {"user_id": row["id"]})
            detail = f"every credential: {tokens} API tokens and {clients} OAuth clients deleted"
            await audit(tx, "token.revoke", username, detail=detail)
            return tokens, clients

        return await self._audited(by, do)

    async def count_api_tokens(self, user_id: int) -> int:
        return int(await self._read(lambda tx: tx.value("count_tokens_of_user",
                                                        {"user_id": user_id})))

    async def add_api_token(
        self, user_id: int, token_hash: str, *, by: Actor | None = None
    ) -> None:
        args = {"token_hash": token_hash, "user_id": user_id, "created": now_ms()}

        async def do(tx: Tx, audit: Audit) -> None:
            await tx.run("insert_api_token", args)
            await audit(tx, "token.add", await _username(tx, user_id))

        await self._audited(by, do)

    async def user_for_token(self, token_hash: str) -> User | None:
        async def do(tx: Tx) -> User | None:
            row = await tx.one("user_for_token", {"token_hash": token_hash})
            return None if row is None else user_from_row(row)

        return await self._read(do)

    async def remove_api_token(self, token_hash: str, *, by: Actor | None = None) -> bool:
        """False when there was no such token."""
        async def do(tx: Tx, audit: Audit) -> bool:
            row = await tx.one("delete_api_token", {"token_hash": token_hash})
            if row is None:
                return False
            await audit(tx, "token.revoke", await _username(tx, row["user_id"]))
            return True

        return await self._audited(by, do)

    async def add_oauth_client(
        self, user_id: int, client_id: str, secret_hash: str, *, by: Actor | None = None
    ) -> None:
        args = {
            "client_id": client_id,
            "user_id": user_id,
            "secret_hash": secret_hash,
            "created": now_ms(),
        }

        async def do(tx: Tx, audit: Audit) -> None:
            await tx.run("insert_oauth_client", args)
            await audit(tx, "client.add", await _username(tx, user_id), detail=client_id)

        await self._audited(by, do)

    async def get_oauth_client(self, client_id: str) -> tuple[User, str] | None:
        """The client's user and the hash of its secret."""
        async def do(tx: Tx) -> tuple[User, str] | None:
            row = await tx.one("get_oauth_client", {"client_id": client_id})
            return None if row is None else (user_from_row(row), row["secret_hash"])

        return await self._read(do)

    async def remove_oauth_client(self, client_id: str, *, by: Actor | None = None) -> bool:
        async def do(tx: Tx, audit: Audit) -> bool:
            row = await tx.one("delete_oauth_client", {"client_id": client_id})
            if row is None:
                return False
            await audit(tx, "client.remove", await _username(tx, row["user_id"]), detail=client_id)
            return True

        return await self._audited(by, do)

    async def list_oauth_clients(self) -> list[tuple[str, str, int]]:
        """(client id, username, created) of every client."""
        async def do(tx: Tx) -> list[tuple[str, str, int]]:
            rows = await tx.all("list_oauth_clients")
            return [(r["client_id"], r["username"], r["created"]) for r in rows]

        return await self._read(do)

    async def create_group(
        self, name: str, group_id: int | None = None, *, by: Actor | None = None
    ) -> Group:
        """Raises Conflict when the name or id is taken."""
        async def do(tx: Tx, audit: Audit) -> Group:
            await tx.lock("lock_group_ids")
            new_id = await tx.value("insert_group", {"id": group_id, "name": name})
            await audit(tx, "group.add", name, group_id=new_id, detail=f"id {new_id}")
            return Group(id=new_id, name=name)

        try:
            return await self._audited(by, do)
        except Conflict:
            raise Conflict(f"a group named '{name}' or with id {group_id} exists") from None

    async def get_group(self, name: str) -> Group | None:
        async def do(tx: Tx) -> Group | None:
            row = await tx.one("get_group_by_name", {"name": name})
            return None if row is None else Group(id=row["id"], name=row["name"])

        return await self._read(do)

    async def get_group_by_id(self, group_id: int) -> Group | None:
        async def do(tx: Tx) -> Group | None:
            row = await tx.one("get_group_by_id", {"id": group_id})
            return None if row is None else Group(id=row["id"], name=row["name"])

        return await self._read(do)

    async def set_membership(
        self, group_id: int, user_id: int, role: Role, *, by: Actor | None = None
    ) -> None:
        """Add the member, or change their role (the same role again changes nothing)."""
        args = {"group_id": group_id, "user_id": user_id, "role": int(role)}

        async def do(tx: Tx, audit: Audit) -> None:
            before = await tx.one("audit_role", args) if audit.by else None
            await tx.run("set_membership", args)
            if audit.by is None:
                return
            if before is None:
                detail = f"role {role.label}"
                await audit(tx, "member.add", await _username(tx, user_id), group_id=group_id,
                            detail=detail)
            elif before["role"] != int(role):
                detail = f"role {Role(before['role']).label} to {role.label}"
                await audit(tx, "member.role", await _username(tx, user_id), group_id=group_id,
                            detail=detail)

        await self._audited(by, do)

    async def remove_membership(
        self, group_id: int, user_id: int, *, by: Actor | None = None
    ) -> bool:
        """False when the user was not a member of the group."""
        args = {"group_id": group_id, "user_id": user_id}

        async def do(tx: Tx, audit: Audit) -> bool:
            row = await tx.one("delete_membership", args)
            if row is None:
                return False
            await audit(tx, "member.remove", await _username(tx, user_id), group_id=group_id,
                        detail=f"role {Role(row['role']).label}")
            return True

        return await self._audited(by, do)

    async def roles_of(self, user_id: int) -> dict[int, Role]:
        async def do(tx: Tx) -> dict[int, Role]:
            rows = await tx.all("roles_of", {"user_id": user_id})
            return {row["group_id"]: Role(row["role"]) for row in rows}

        return await self._read(do)

    async def groups_of(self, user_id: int) -> list[tuple[Group, Role]]:
        async def do(tx: Tx) -> list[tuple[Group, Role]]:
            rows = await tx.all("groups_of", {"user_id": user_id})
            return [(Group(id=row["id"], name=row["name"]), Role(row["role"])) for row in rows]

        return await self._read(do)

    async def list_groups(self) -> list[tuple[Group, int]]:
        """Every group, by name, with its number of members."""
        async def do(tx: Tx) -> list[tuple[Group, int]]:
            rows = await tx.all("list_groups")
            return [(Group(id=r["id"], name=r["name"]), int(r["members"])) for r in rows]

        return await self._read(do)

    async def members_of(self, group_id: int) -> list[tuple[UserEntry, Role]]:
        """The group's members (disabled ones too), by username, with their role."""
        async def do(tx: Tx) -> list[tuple[UserEntry, Role]]:
            rows = await tx.all("members_of", {"group_id": group_id})
            return [
                (UserEntry(User(r["id"], r["username"], bool(r["is_admin"])),
                           bool(r["disabled"]), r["created"]), Role(r["role"]))
                for r in rows
            ]

        return await self._read(do)

    async def get_login_failures(self, username: str, address: str = "") -> LoginFailures | None:
        return await self._read(lambda tx: _failures(tx, username, address))

    async def reserve_login_attempt(
        self, username: str, address: str, now: int, window_ms: int, attempts: int
    ) -> tuple[LoginFailures | None, bool]:
        """Reserve one sign-in attempt atomically (across nodes) by `reserve_attempt`: the
        counts as they stand afterwards, and whether the attempt may be made."""
        async def do(tx: Tx) -> tuple[LoginFailures | None, bool]:
            # Attempts on one name, from any node, wait for each other here: no two read the
            # same count (the lock is the user's, which their thread starts take too).
            await tx.lock("lock_user", {"username": username})
            current = await _failures(tx, username, address)
            reserved = reserve_attempt(current, now, window_ms, attempts)
            if reserved is None:
                return current, False
            args = {"username": username, "address": address, "failures": reserved.failures,
                    "window_start": reserved.window_start, "locked_until": reserved.locked_until}
            await tx.run("put_login_failures", args)
            return reserved, True

        return await self._write(do)

    async def clear_login_failures(
        self, username: str, address: str | None = None, *, by: Actor | None = None
    ) -> bool:
        """Forget the attempts of `username` from `address`, or from everywhere (None); False
        when there were none. With `by`, an unlock by hand (audited when there was one)."""
        if address is None:
            name, args = "clear_login_failures", {"username": username}
        else:
            name, args = "clear_login_failures_from", {"username": username, "address": address}

        async def do(tx: Tx, audit: Audit) -> bool:
            cleared = await tx.run(name, args)
            if cleared:
                await audit(tx, "user.unlock", username)
            return cleared > 0

        return await self._audited(by, do)

    async def forget_login_failures(self, now: int, window_ms: int) -> int:
        """Delete the counts that no longer matter: window over and no lock; how many. (Each
        made-up name tried makes one, so they must not stay.)"""
        args = {"now": now, "window_over": now - window_ms}
        return await self._write(lambda tx: tx.run("forget_login_failures", args))


def _kind(is_admin: bool) -> str:
    return "administrator" if is_admin else "user"


async def _username(tx: Tx, user_id: int) -> str:
    """The user's name, for an entry (a user removed meanwhile is named by id)."""
    row = await tx.one("audit_username", {"id": user_id})
    return str(row["username"]) if row is not None else f"#{user_id}"


async def _failures(tx: Tx, username: str, address: str) -> LoginFailures | None:
    row = await tx.one("get_login_failures", {"username": username, "address": address})
    return None if row is None else failures_from_row(row)
