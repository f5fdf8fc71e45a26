"""What the administrative CLI does, as plain async functions on a store.

Threat model: an operator runs these as root on the service's own store. SQLite then makes its
`-wal` and `-shm` files root's, and a new store or file root's too, which the service (another
user) can no longer write: `foreign_owner` finds that case so that the command refuses it."""

from __future__ import annotations

import contextlib
import getpass
import os
import pwd
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from threadsvc.errors import BadParameter, Conflict, NotFound
from threadsvc.identity import Identity, token_hash
from threadsvc.keys import secret_keys
from threadsvc.models import Actor, Group, Role, UserEntry
from threadsvc.service import valid_group_name
from threadsvc.settings import Settings
from threadsvc.store import make_store
from threadsvc.store.base import Store

DEMO_GROUP = "demo"
DEMO_ADMIN = "demo-admin"


def command_line_actor() -> Actor:
    """Who the audit log says made a change from the command line: `cli:` and the OS user."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no name for this uid (a container's)
        name = f"uid {os.getuid()}"
    return Actor(f"cli:{name}")


@dataclass(frozen=True)
class Admin:
    store: Store
    identity: Identity
    by: Actor = field(default_factory=command_line_actor)  # for the audit log


@contextlib.asynccontextmanager
async def opened(settings: Settings, create: bool = True) -> AsyncIterator[Admin]:
    """The store `settings` name, opened (and migrated); without `create`, a store that is not
    there raises NotAStore and nothing is created."""
    store = make_store(settings)
    await store.open(create)
    try:
        yield Admin(store, Identity(store, settings, await secret_keys(settings, store)))
    finally:
        await store.close()


async def add_group(admin: Admin, name: str, group_id: int | None = None) -> Group:
    if not valid_group_name(name) or name.isdigit():
        raise BadParameter("name", "must match [a-z0-9][a-z0-9._-]{0,63} and not be all digits")
    if group_id is not None and group_id < 1:
        raise BadParameter("id", "must be a positive integer")
    return await admin.store.create_group(name, group_id, by=admin.by)


def foreign_owner(settings: Settings, files: bool = False) -> tuple[Path, str] | None:
    """When this process runs as root: a path it would write that belongs to another user, and
    that user's name. The SQLite store (or, when there is none yet, its directory) and, with
    `files` for commands that write files and local storage, `data-dir`."""
    if os.geteuid() != 0:
        return None
    paths = []
    store = settings.sqlite_path
    if store is not None:
        paths.append(store if store.exists() else store.absolute().parent)
    if files and settings.files_kind == "local":
        paths.append(Path(settings.data_dir))
    for path in paths:
        try:
            uid = path.stat().st_uid
        except OSError:
            continue  # not there: nothing of another user's to spoil
        if uid != 0:
            try:
                return path, pwd.getpwuid(uid).pw_name
            except KeyError:
                return path, str(uid)
    return None


async def list_groups(admin: Admin) -> list[tuple[Group, int]]:
    return await admin.store.list_groups()


async def members_of(admin: Admin, group_name: str) -> list[tuple[UserEntry, Role]]:
    group = await admin.store.get_group(group_name)
    if group is None:
        raise NotFound(f"no group '{group_name}'")
    return await admin.store.members_of(group.id)


async def add_member(admin: Admin, group_name: str, username: str, role: str) -> None:
    group = await admin.store.get_group(group_name)
    if group is None:
        raise NotFound(f"no group '{group_name}'")
    found = await admin.store.get_user(username)
    if found is None:
        raise NotFound(f"no user '{username}'")
    try:
        parsed = Role.parse(role)
    except ValueError:
        raise BadParameter("role", "must be reviewer, contributor, manager or approver") from None
    await admin.store.set_membership(group.id, found[0].id, parsed, by=admin.by)


async def remove_member(admin: Admin, group_name: str, username: str) -> None:
    group = await admin.store.get_group(group_name)
    found = await admin.store.get_user(username)
    if group is None or found is None or not await admin.store.remove_membership(
        group.id, found[0].id, by=admin.by
    ):
        raise NotFound(f"'{username}' is not a member of group '{group_name}'")


async def set_password(admin: Admin, username: str, password: str) -> None:
    """A new password; the user's console sessions end (on every node, at their next request)."""
    if not password:
        raise BadParameter("password", "must not be empty")
    await admin.identity.set_password(username, password, admin.by)


async def disable_user(admin: Admin, username: str) -> None:
    """Refuse every credential of the user (their threads stay): sessions and access tokens end,
    API tokens and OAuth clients are deleted."""
    if not await admin.store.set_disabled(username, True, by=admin.by):
        raise NotFound(f"no user '{username}'")


async def enable_user(admin: Admin, username: str) -> None:
    """Their password works again; tokens and clients deleted when disabled stay deleted."""
    if not await admin.store.set_disabled(username, False, by=admin.by):
        raise NotFound(f"no user '{username}'")


async def remove_user(admin: Admin, username: str) -> None:
    """The user, their memberships, tokens and clients; their threads stay."""
    if not await admin.store.remove_user(username, by=admin.by):
        raise NotFound(f"no user '{username}'")


async def unlock_user(admin: Admin, username: str) -> bool:
    """Lift a lockout of the name (from every address); False when there was none."""
    return await admin.store.clear_login_failures(username, by=admin.by)


async def list_users(admin: Admin) -> list[UserEntry]:
    return await admin.store.list_users()


@dataclass(frozen=True)
class UserDetails:
    """A user as `threadsvc user show` prints them."""

    entry: UserEntry
    groups: list[tuple[Group, Role]]
    api_tokens: int
    clients: list[str]


async def show_user(admin: Admin, username: str) -> UserDetails:
    """The user (disabled or not), their groups with their role in each, how many API tokens
    they have and their OAuth clients' ids."""
    entry = next((e for e in await admin.store.list_users() if e.user.username == username), None)
    if entry is None:
        raise NotFound(f"no user '{username}'")
    clients = [c for c, name, _ in await admin.store.list_oauth_clients() if name == username]
    return UserDetails(entry, await admin.store.groups_of(entry.user.id),
                       await admin.store.count_api_tokens(entry.user.id), clients)


async def revoke_tokens(admin: Admin, username: str) -> tuple[int, int]:
    """End every credential of the user but the password: API tokens and OAuth clients deleted
    (their access tokens end with them), console sessions ended. (tokens, clients) deleted."""
    revoked = await admin.store.revoke_credentials(username, by=admin.by)
    if revoked is None:
        raise NotFound(f"no user '{username}'")
    return revoked


async def remove_client(admin: Admin, client_id: str) -> None:
    """The client; its access tokens end (within `auth-cache-seconds` on a running server)."""
    if not await admin.store.remove_oauth_client(client_id, by=admin.by):
        raise NotFound(f"no client '{client_id}'")


async def revoke_token(admin: Admin, token: str) -> None:
    if not await admin.store.remove_api_token(token_hash(token), by=admin.by):
        raise NotFound("no such API token")


async def ensure_demo(admin: Admin) -> list[tuple[str, str, str]]:
    """Create (when absent) the demo group and accounts; give each account a new password.

    Returns (username, password, what) for each account."""
    group = await admin.store.get_group(DEMO_GROUP) or await add_group(admin, DEMO_GROUP)
    accounts = [(DEMO_ADMIN, None)] + [(f"demo-{r.label}", r) for r in Role]
    printed = []
    for username, role in accounts:
        password = secrets.token_urlsafe(12)
        is_admin = role is None
        try:
            user = await admin.identity.add_user(username, password, is_admin, admin.by)
        except Conflict:
            user = await admin.identity.set_user(username, password, is_admin, admin.by)
        if role is not None:
            await admin.store.set_membership(group.id, user.id, role, by=admin.by)
        what = f"{role.label} in group {DEMO_GROUP}" if role is not None else "administrator"
        printed.append((username, password, what))
    return printed
