"""Taking access away: revoking API tokens and removing memberships, on every store."""

from __future__ import annotations

import pytest

from threadsvc.models import Role
from threadsvc.store.base import Store

pytestmark = pytest.mark.anyio


async def test_a_revoked_token_names_nobody(store: Store) -> None:
    user = await store.create_user("alice", None, False)
    await store.add_api_token(user.id, "one")
    await store.add_api_token(user.id, "two")
    assert await store.remove_api_token("one") is True
    assert await store.user_for_token("one") is None
    assert await store.user_for_token("two") == user  # the user's other tokens still work
    assert await store.remove_api_token("one") is False


async def test_a_removed_member_has_no_role_there(store: Store) -> None:
    user = await store.create_user("alice", None, False)
    await store.create_group("dev", 240)
    await store.create_group("other", 241)
    await store.set_membership(240, user.id, Role.MANAGER)
    await store.set_membership(241, user.id, Role.REVIEWER)
    assert await store.remove_membership(240, user.id) is True
    assert await store.roles_of(user.id) == {241: Role.REVIEWER}
    assert await store.remove_membership(240, user.id) is False
