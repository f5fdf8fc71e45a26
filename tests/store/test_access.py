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


async def test_revoking_a_users_credentials_leaves_others_and_the_password(store: Store) -> None:
    alice = await store.create_user("alice", "hash", False)
    bob = await store.create_user("bob", None, False)
    for token, user in (("a1", alice), ("a2", alice), ("b1", bob)):
        await store.add_api_token(user.id, token)
    await store.add_oauth_client(alice.id, "tsc_a", "secret")
    await store.add_oauth_client(bob.id, "tsc_b", "secret")
    assert await store.count_api_tokens(alice.id) == 2
    assert await store.revoke_credentials("alice") == (2, 1)
    assert await store.user_for_token("a1") is None and await store.get_oauth_client("tsc_a") is None
    assert await store.user_for_token("b1") == bob and await store.get_oauth_client("tsc_b")
    after = await store.get_user("alice")
    assert after is not None and after[1] == "hash"  # the password stays
    assert after[0].credential_version == alice.credential_version + 1  # sessions end
    assert await store.count_api_tokens(alice.id) == 0
    assert await store.revoke_credentials("alice") == (0, 0)
    assert await store.revoke_credentials("nobody") is None


async def test_groups_and_members_listed(store: Store) -> None:
    alice = await store.create_user("alice", None, True)
    bob = await store.create_user("bob", None, False)
    await store.create_group("dev", 240)
    await store.create_group("alone", 7)
    await store.set_membership(240, bob.id, Role.REVIEWER)
    await store.set_membership(240, alice.id, Role.MANAGER)
    await store.set_disabled("bob", True)
    assert [(g.name, g.id, n) for g, n in await store.list_groups()] == [
        ("alone", 7, 0), ("dev", 240, 2)]
    members = await store.members_of(240)
    assert [(e.user.username, e.user.is_admin, e.disabled, r) for e, r in members] == [
        ("alice", True, False, Role.MANAGER), ("bob", False, True, Role.REVIEWER)]
    assert await store.members_of(7) == []
