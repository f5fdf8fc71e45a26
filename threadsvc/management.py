"""Administration with rights: the command line's changes (threadsvc.admin), for a signed-in
`Principal` rather than the operator, each checked here and nowhere else.

The command line carries no rights check (its operator owns the store); the console (and an
administrative HTTP API, should one come) goes through this module, which decides who may:

- users (list, add, disable, enable, unlock, reset a password, revoke tokens) and OAuth
  clients: administrators only. A manager never touches an account, only memberships.
- groups: administrators list and add every group; a manager sees the groups they manage.
- memberships of a group: administrators, and members whose role there is manager or above
  (as for the group's webhooks, delivery/service.py). Such a member grants roles up to their
  own (a manager may make another manager, not an approver) and changes or removes only
  members whose role is at most their own.

Threat model: a signed-in user (a manager of one group, say) sends any form field with any
value: another group's name, a role above theirs, a username that does not exist, their own
name. Every check is made on the store's current state before the change, which is written by
the same store method as the command line's, audited with the principal as the actor (their
username and address; the command line writes `cli:OSUSER`). A role changed between the check
and the write by someone else is a race this module accepts: the write is still one whose
author held the right a moment before.
"""

from __future__ import annotations

from dataclasses import dataclass

from threadsvc import admin
from threadsvc.errors import BadParameter, Forbidden, GroupNotFound, NotFound
from threadsvc.identity import LONGEST_NAME, Identity
from threadsvc.models import Group, LoginFailures, Principal, Role, UserEntry, now_ms
from threadsvc.service import valid_group_name
from threadsvc.store.base import Store

USERS_PAGE = 50  # users a page of the list
PASSWORD_MAX = 1024  # characters: a form field, not a passphrase file


@dataclass(frozen=True)
class ManagedGroup:
    group: Group
    members: int | None  # known to administrators (the store counts them in the list)
    role: Role | None  # the viewer's own role there; None for an administrator not a member


@dataclass(frozen=True)
class UsersPage:
    users: list[UserEntry]
    total: int
    page: int
    last: int


@dataclass(frozen=True)
class Account:
    """A user as an administrator sees them."""

    details: admin.UserDetails
    locked_until: int | None  # epoch ms, while locked


def may_manage_users(who: Principal) -> bool:
    """Accounts, OAuth clients and groups: administrators only."""
    return who.is_admin


def may_manage_members(who: Principal, group_id: int) -> bool:
    return who.has_role(group_id, Role.MANAGER)


def may_administer(who: Principal) -> bool:
    """Whether any administration page is theirs: administrators, and managers of a group."""
    return who.is_admin or any(role >= Role.MANAGER for role in who.roles.values())


def grantable(who: Principal, group_id: int) -> list[Role]:
    """The roles `who` may give in the group (none when they may not manage it)."""
    if who.is_admin:
        return list(Role)
    own = who.roles.get(group_id)
    if own is None or own < Role.MANAGER:
        return []
    return [role for role in Role if role <= own]


def may_change_member(who: Principal, group_id: int, current: Role) -> bool:
    """Whether `who` may change or remove a member whose role is `current`."""
    return current in grantable(who, group_id)


class Management:
    """Rights-checked administration over the store and identity of the server."""

    def __init__(self, store: Store, identity: Identity) -> None:
        self.store = store
        self.identity = identity

    def _as(self, who: Principal) -> admin.Admin:
        """The command line's functions, with `who` as the audit log's actor."""
        return admin.Admin(self.store, self.identity, by=who.actor)

    @staticmethod
    def _admin_only(who: Principal, what: str) -> None:
        if not may_manage_users(who):
            raise Forbidden(f"Only administrators may {what}")

    # -- users ------------------------------------------------------------------------------
    async def users(self, who: Principal, search: str = "", page: int = 1) -> UsersPage:
        """Users whose name holds `search` (ASCII letters in any case), by name, USERS_PAGE a
        page (the page past the last is the last)."""
        self._admin_only(who, "list users")
        needle = "".join(c for c in search.strip() if c.isprintable())  # no name holds others
        found, total = await self.store.find_users(needle, (max(1, page) - 1) * USERS_PAGE,
                                                   USERS_PAGE)
        last = max(1, -(-total // USERS_PAGE))
        if page > last:  # past the end (the list shrank, or a made-up number): the last page
            page = last
            found, total = await self.store.find_users(needle, (last - 1) * USERS_PAGE,
                                                       USERS_PAGE)
        return UsersPage(found, total, max(1, page), last)

    async def account(self, who: Principal, username: str) -> Account:
        self._admin_only(who, "see accounts")
        details = await admin.show_user(self._as(who), stored(username))
        failures: LoginFailures | None = await self.store.get_login_failures(username)
        locked = failures.locked_until if failures and failures.locked_until > now_ms() else None
        return Account(details, locked)

    async def add_user(
        self, who: Principal, username: str, password: str, again: str, is_admin: bool
    ) -> None:
        """A new user; an empty password makes a user who signs in with tokens only (as
        `threadsvc user add` without one)."""
        self._admin_only(who, "add users")
        if password:
            check_password(password, again)
        await self.identity.add_user(username, password or None, is_admin, who.actor)

    async def set_password(self, who: Principal, username: str, password: str, again: str) -> None:
        self._admin_only(who, "reset passwords")
        check_password(password, again)
        await admin.set_password(self._as(who), stored(username), password)

    async def disable(self, who: Principal, username: str) -> None:
        self._admin_only(who, "disable users")
        if username == who.username:
            raise BadParameter("username", "is yours: another administrator must disable you")
        await admin.disable_user(self._as(who), stored(username))

    async def enable(self, who: Principal, username: str) -> None:
        self._admin_only(who, "enable users")
        await admin.enable_user(self._as(who), stored(username))

    async def unlock(self, who: Principal, username: str) -> bool:
        self._admin_only(who, "unlock users")
        await self._user(stored(username))
        return await admin.unlock_user(self._as(who), username)

    async def revoke_tokens(self, who: Principal, username: str) -> tuple[int, int]:
        self._admin_only(who, "revoke tokens")
        return await admin.revoke_tokens(self._as(who), stored(username))

    async def _user(self, username: str) -> None:
        if await self.store.get_user(username) is None:
            raise NotFound(f"no user '{username[:80]}'")

    # -- OAuth clients ----------------------------------------------------------------------
    async def clients(self, who: Principal) -> list[tuple[str, str, int]]:
        """(client id, username, created) of every OAuth client."""
        self._admin_only(who, "list OAuth clients")
        return await self.store.list_oauth_clients()

    async def remove_client(self, who: Principal, client_id: str) -> None:
        self._admin_only(who, "remove OAuth clients")
        await admin.remove_client(self._as(who), stored(client_id, "client"))

    # -- groups -----------------------------------------------------------------------------
    async def groups(self, who: Principal) -> list[ManagedGroup]:
        """Every group for an administrator; the groups a manager manages, for them."""
        if who.is_admin:
            mine = dict(who.roles)
            return [ManagedGroup(g, n, mine.get(g.id))
                    for g, n in await admin.list_groups(self._as(who))]
        return [ManagedGroup(g, None, role) for g, role in await self.store.groups_of(who.user.id)
                if may_manage_members(who, g.id)]

    async def add_group(self, who: Principal, name: str) -> Group:
        self._admin_only(who, "add groups")
        return await admin.add_group(self._as(who), name.strip())

    async def group(self, who: Principal, name: str) -> Group:
        """The group, when `who` may manage its members (else Forbidden; none: not found)."""
        group = await self.store.get_group(name) if valid_group_name(name) else None
        if group is None:
            raise GroupNotFound(f"No group '{name[:80]}'")
        if not may_manage_members(who, group.id):
            raise Forbidden(f"Members of group '{group.name}' are managed by its managers")
        return group

    async def members(self, who: Principal, group: Group) -> list[tuple[UserEntry, Role]]:
        await self.group(who, group.name)
        return await admin.members_of(self._as(who), group.name)

    # -- memberships ------------------------------------------------------------------------
    async def set_member(self, who: Principal, group_name: str, username: str, role: str) -> bool:
        """Add `username` to the group with `role`, or change their role there; True when
        they were a member already."""
        group = await self.group(who, group_name)
        try:
            wanted = Role.parse(role)
        except ValueError:
            raise BadParameter("role", "must be reviewer, contributor, manager or approver") from None
        if wanted not in grantable(who, group.id):
            raise Forbidden(f"You may give roles up to {grantable(who, group.id)[-1].label}")
        try:
            found = await self.store.get_user(stored(username))
        except NotFound:
            found = None
        if found is None:
            raise BadParameter("username", f"names no user ('{username[:80]}')")
        current = (await self.store.roles_of(found[0].id)).get(group.id)
        if current is not None and not may_change_member(who, group.id, current):
            raise Forbidden(f"'{username}' is {current.label} in '{group.name}': "
                            "above your own role")
        await admin.add_member(self._as(who), group.name, username, wanted.label)
        return current is not None

    async def member_role(self, who: Principal, group_name: str, username: str) -> Role:
        """The member's role, when `who` may change or remove them."""
        group = await self.group(who, group_name)
        found = await self.store.get_user(stored(username))
        current = (await self.store.roles_of(found[0].id)).get(group.id) if found else None
        if current is None:
            raise NotFound(f"'{username[:80]}' is not a member of group '{group.name}'")
        if not may_change_member(who, group.id, current):
            raise Forbidden(f"'{username}' is {current.label} in '{group.name}': "
                            "above your own role")
        return current

    async def remove_member(self, who: Principal, group_name: str, username: str) -> None:
        await self.member_role(who, group_name, username)
        await admin.remove_member(self._as(who), group_name, username)


def stored(name: str, what: str = "user") -> str:
    """A name as typed, when a store could hold it: one with a NUL (which PostgreSQL refuses in
    text) or longer than any name is no one's, said as for a name not found."""
    if "\x00" in name or len(name) > LONGEST_NAME:
        raise NotFound(f"no {what} '{name[:80].replace(chr(0), '')}'")
    return name


def check_password(password: str, again: str) -> None:
    """The command line's rule (not empty; at a terminal, typed twice alike), and a bound."""
    if not password:
        raise BadParameter("password", "must not be empty")
    if len(password) > PASSWORD_MAX:
        raise BadParameter("password", f"is longer than {PASSWORD_MAX} characters")
    if password != again:
        raise BadParameter("again", "differs from the password: type the same twice")
