"""What the administrative CLI does, as plain async functions on a store."""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

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
async def opened(settings: Settings) -> AsyncIterator[Admin]:
    store = make_store(settings)
    await store.open()
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


async def show_user(admin: Admin, username: str) -> tuple[UserEntry, list[tuple[Group, Role]]]:
    """The user (disabled or not) and their groups with their role in each."""
    entry = next((e for e in await admin.store.list_users() if e.user.username == username), None)
    if entry is None:
        raise NotFound(f"no user '{username}'")
    return entry, await admin.store.groups_of(entry.user.id)


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
