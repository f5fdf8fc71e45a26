"""threadsvc.management, the rights of administration, in process on a real SQLite store: who
may do what (administrators; members whose role is manager or above, for their group's
memberships only), that a refused change writes nothing, and that each change is audited with
the principal as its actor."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from threadsvc import admin
from threadsvc.errors import BadParameter, Forbidden, GroupNotFound, NotFound
from threadsvc.identity import Identity
from threadsvc.management import USERS_PAGE, Management, grantable, may_administer
from threadsvc.models import AuditFilter, Principal, Role
from threadsvc.settings import Settings
from threadsvc.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class World:
    manage: Management
    store: SQLiteStore
    ops: admin.Admin  # the command line, for the setting up

    async def who(self, username: str) -> Principal:
        found = await self.store.get_user(username)
        assert found is not None
        return Principal(found[0], await self.store.roles_of(found[0].id), address="192.0.2.7")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    identity = Identity(store, Settings(), ("a-key-for-the-tests",))
    ops = admin.Admin(store, identity)
    try:
        for name in ("root", "boss", "approver", "worker", "stranger", "otherboss"):
            await identity.add_user(name, f"{name}-pw", name == "root")
        await admin.add_group(ops, "dev")
        await admin.add_group(ops, "other")
        for name, role in (("boss", "manager"), ("approver", "approver"), ("worker", "contributor")):
            await admin.add_member(ops, "dev", name, role)
        await admin.add_member(ops, "other", "otherboss", "manager")
        yield World(Management(store, identity), store, ops)
    finally:
        await store.close()


async def role_in(world: World, group: str, username: str) -> Role | None:
    members = await admin.members_of(world.ops, group)
    return next((role for entry, role in members if entry.user.username == username), None)


async def test_who_sees_administration(world: World) -> None:
    assert may_administer(await world.who("root"))
    assert may_administer(await world.who("boss"))
    assert may_administer(await world.who("approver"))  # above manager
    assert not may_administer(await world.who("worker"))
    assert not may_administer(await world.who("stranger"))
    boss = await world.who("boss")
    assert [g.group.name for g in await world.manage.groups(boss)] == ["dev"]
    root = await world.who("root")
    assert {g.group.name: g.members for g in await world.manage.groups(root)} == {
        "dev": 3, "other": 1}


async def test_accounts_are_for_administrators_only(world: World) -> None:
    for name in ("boss", "approver", "worker"):
        who = await world.who(name)
        with pytest.raises(Forbidden):
            await world.manage.users(who)
        with pytest.raises(Forbidden):
            await world.manage.add_user(who, "mallory", "pw", "pw", True)
        with pytest.raises(Forbidden):
            await world.manage.set_password(who, "worker", "new", "new")
        with pytest.raises(Forbidden):
            await world.manage.disable(who, "worker")
        with pytest.raises(Forbidden):
            await world.manage.revoke_tokens(who, "worker")
        with pytest.raises(Forbidden):
            await world.manage.unlock(who, "worker")
        with pytest.raises(Forbidden):
            await world.manage.clients(who)
        with pytest.raises(Forbidden):
            await world.manage.add_group(who, "mine")
    assert await world.store.get_user("mallory") is None
    assert await world.store.get_group("mine") is None
    assert not (await world.store.audit_entries(AuditFilter(action="user.disable"))).entries


async def test_an_administrator_changes_accounts_as_themselves(world: World) -> None:
    root = await world.who("root")
    await world.manage.add_user(root, "carol", "", "", False)  # tokens only, as the CLI
    with pytest.raises(BadParameter) as refused:
        await world.manage.set_password(root, "carol", "one", "two")
    assert refused.value.name == "again"
    with pytest.raises(BadParameter):
        await world.manage.set_password(root, "carol", "", "")
    await world.manage.set_password(root, "carol", "carol-pw", "carol-pw")
    await world.manage.disable(root, "carol")
    with pytest.raises(BadParameter):
        await world.manage.disable(root, "root")  # not themselves
    with pytest.raises(NotFound):
        await world.manage.unlock(root, "nobody")
    entries = (await world.store.audit_entries(AuditFilter(user="carol"))).entries
    assert [(e.action, e.actor, e.address) for e in entries] == [
        ("user.add", "root", "192.0.2.7"), ("user.passwd", "root", "192.0.2.7"),
        ("user.disable", "root", "192.0.2.7")]
    assert (await world.manage.account(root, "carol")).details.entry.disabled


async def test_users_are_searched_and_paged(world: World) -> None:
    root = await world.who("root")
    for n in range(USERS_PAGE + 5):
        await world.store.create_user(f"user{n:03}", None, False)
    first = await world.manage.users(root, "USER0")
    assert first.total == USERS_PAGE + 5 and first.last == 2 and len(first.users) == USERS_PAGE
    second = await world.manage.users(root, "user0", page=2)
    assert [e.user.username for e in second.users][-1] == f"user{USERS_PAGE + 4:03}"
    assert (await world.manage.users(root, "user0", page=99)).page == 2
    assert (await world.manage.users(root, "nobody")).total == 0


async def test_a_manager_grants_up_to_their_own_role_in_their_group_only(world: World) -> None:
    boss = await world.who("boss")
    dev = (await world.store.get_group("dev"))
    assert dev is not None
    assert grantable(boss, dev.id) == [Role.REVIEWER, Role.CONTRIBUTOR, Role.MANAGER]
    assert not await world.manage.set_member(boss, "dev", "stranger", "contributor")
    assert await world.manage.set_member(boss, "dev", "stranger", "manager")
    assert await role_in(world, "dev", "stranger") is Role.MANAGER
    with pytest.raises(Forbidden):
        await world.manage.set_member(boss, "dev", "stranger", "approver")  # above theirs
    with pytest.raises(Forbidden):
        await world.manage.set_member(boss, "dev", "approver", "reviewer")  # a member above
    with pytest.raises(Forbidden):
        await world.manage.remove_member(boss, "dev", "approver")
    with pytest.raises(Forbidden):
        await world.manage.set_member(boss, "other", "stranger", "reviewer")  # not theirs
    with pytest.raises(Forbidden):
        await world.manage.remove_member(boss, "other", "otherboss")
    with pytest.raises(GroupNotFound):
        await world.manage.set_member(boss, "nowhere", "stranger", "reviewer")
    with pytest.raises(BadParameter):
        await world.manage.set_member(boss, "dev", "nobody", "reviewer")
    with pytest.raises(BadParameter):
        await world.manage.set_member(boss, "dev", "stranger", "king")
    await world.manage.remove_member(boss, "dev", "stranger")
    with pytest.raises(NotFound):
        await world.manage.remove_member(boss, "dev", "stranger")
    assert await role_in(world, "dev", "approver") is Role.APPROVER
    assert await role_in(world, "other", "otherboss") is Role.MANAGER
    entries = (await world.store.audit_entries(AuditFilter(user="stranger"))).entries
    assert [(e.action, e.actor, e.group, e.detail) for e in entries] == [
        ("member.add", "boss", "dev", "role contributor"),
        ("member.role", "boss", "dev", "role contributor to manager"),
        ("member.remove", "boss", "dev", "role manager"),
    ]


async def test_others_touch_no_membership(world: World) -> None:
    for name in ("worker", "stranger", "otherboss"):
        who = await world.who(name)
        with pytest.raises(Forbidden):
            await world.manage.set_member(who, "dev", "stranger", "reviewer")
        with pytest.raises(Forbidden):
            await world.manage.remove_member(who, "dev", "worker")
    approver = await world.who("approver")  # above manager: may give approver
    await world.manage.set_member(approver, "dev", "worker", "approver")
    root = await world.who("root")
    await world.manage.remove_member(root, "dev", "approver")
    assert await role_in(world, "dev", "stranger") is None
    assert await role_in(world, "dev", "worker") is Role.APPROVER


async def test_names_no_store_could_hold_are_no_ones(world: World) -> None:
    """A NUL (which PostgreSQL refuses in text) or an overlong name is said as not found, before
    the store is asked."""
    root = await world.who("root")
    for name in ("wor\x00ker", "w" * 201):
        with pytest.raises(NotFound):
            await world.manage.account(root, name)
        with pytest.raises(NotFound):
            await world.manage.disable(root, name)
        with pytest.raises(NotFound):
            await world.manage.remove_member(root, "dev", name)
        with pytest.raises(BadParameter):
            await world.manage.set_member(root, "dev", name, "reviewer")
    with pytest.raises(NotFound):
        await world.manage.remove_client(root, "tsc_\x00")
    assert (await world.manage.users(root, "wor\x00ker\x07")).total == 1  # worker
