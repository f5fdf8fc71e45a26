"""The audit log's rules (threadsvc/store/audit.py), on every store: each audited change writes
exactly one entry in its own transaction, a change that does not happen writes none, pages and
filters, the purge by time, and the log line."""

from __future__ import annotations

import logging

import pytest

from tests.store.test_contract import add
from threadsvc.errors import Conflict, NotFound, TooManyWebhooks
from threadsvc.models import (
    AUDIT_ACTIONS,
    Actor,
    AuditEntry,
    AuditFilter,
    Level,
    LogEvent,
    Role,
    now_ms,
)
from threadsvc.store import audit
from threadsvc.store.audit import DETAIL_MAX, TARGET_MAX, Audit
from threadsvc.store.base import Store
from threadsvc.store.dialect import Tx

pytestmark = pytest.mark.anyio
BY = Actor("root-admin", "192.0.2.7")
CLI = Actor("cli:operator")


async def entries(store: Store, **query: object) -> list[AuditEntry]:
    return (await store.audit_entries(AuditFilter(**query))).entries  # type: ignore[arg-type]


def fields(entry: AuditEntry) -> tuple[object, ...]:
    return entry.actor, entry.action, entry.target, entry.group, entry.address, entry.detail


async def test_each_identity_change_writes_one_entry(store: Store) -> None:
    before = now_ms()
    user = await store.create_user("alice", "hash", False, by=BY)
    await store.update_user("alice", "hash2", True, by=CLI)
    assert await store.set_password("alice", "hash3", by=BY)
    await store.add_api_token(user.id, "tokenhash", by=BY)
    assert await store.remove_api_token("tokenhash", by=BY)
    await store.add_oauth_client(user.id, "tsc_1", "secrethash", by=BY)
    assert await store.remove_oauth_client("tsc_1", by=BY)
    group = await store.create_group("dev", 240, by=BY)
    await store.set_membership(group.id, user.id, Role.CONTRIBUTOR, by=BY)
    await store.set_membership(group.id, user.id, Role.MANAGER, by=BY)
    await store.set_membership(group.id, user.id, Role.MANAGER, by=BY)  # no change: no entry
    assert await store.remove_membership(group.id, user.id, by=BY)
    await store.add_api_token(user.id, "second", by=BY)
    await store.add_oauth_client(user.id, "tsc_2", "secrethash", by=BY)
    assert await store.set_disabled("alice", True, by=BY)
    assert await store.set_disabled("alice", False, by=BY)
    await store.reserve_login_attempt("alice", "", now_ms(), 60_000, 5)
    assert await store.clear_login_failures("alice", by=CLI)
    assert not await store.clear_login_failures("alice", by=CLI)  # none: nothing unlocked
    assert await store.remove_user("alice", by=BY)
    found = await entries(store)
    assert [fields(e) for e in found] == [
        ("root-admin", "user.add", "alice", None, "192.0.2.7", "user"),
        ("cli:operator", "user.update", "alice", None, None, "new password, administrator"),
        ("root-admin", "user.passwd", "alice", None, "192.0.2.7", ""),
        ("root-admin", "token.add", "alice", None, "192.0.2.7", ""),
        ("root-admin", "token.revoke", "alice", None, "192.0.2.7", ""),
        ("root-admin", "client.add", "alice", None, "192.0.2.7", "tsc_1"),
        ("root-admin", "client.remove", "alice", None, "192.0.2.7", "tsc_1"),
        ("root-admin", "group.add", "dev", "dev", "192.0.2.7", "id 240"),
        ("root-admin", "member.add", "alice", "dev", "192.0.2.7", "role contributor"),
        ("root-admin", "member.role", "alice", "dev", "192.0.2.7", "role contributor to manager"),
        ("root-admin", "member.remove", "alice", "dev", "192.0.2.7", "role manager"),
        ("root-admin", "token.add", "alice", None, "192.0.2.7", ""),
        ("root-admin", "client.add", "alice", None, "192.0.2.7", "tsc_2"),
        ("root-admin", "user.disable", "alice", None, "192.0.2.7",
         "1 API tokens and 1 OAuth clients deleted"),
        ("root-admin", "user.enable", "alice", None, "192.0.2.7", ""),
        ("cli:operator", "user.unlock", "alice", None, None, ""),
        ("root-admin", "user.remove", "alice", None, "192.0.2.7", ""),
    ]
    assert all(e.timestamp >= before for e in found)
    assert [e.id for e in found] == sorted({e.id for e in found})
    assert {e.action for e in found} <= AUDIT_ACTIONS


async def test_threads_and_webhooks_write_one_entry_each(store: Store) -> None:
    await store.create_group("dev", 240)
    waiting = await add(store, now_ms())
    event = LogEvent(0, now_ms(), Level.INFO, "Status: cancelled")
    assert await store.cancel_initialised(waiting.id, "Cancelled", event, by=BY) is not None
    running = await add(store, now_ms(), job="validate")
    await store.claim_threads("n", 1, now_ms())
    assert await store.request_cancel(running.id, by=BY)
    assert await store.delete_thread(waiting.id, by=BY)
    server = await add(store, now_ms(), group=-1)
    await store.cancel_initialised(server.id, "Cancelled", event, by=BY)
    hook = await store.create_webhook(240, "https://hooks.example:8443/in?token=abc", "s3cret",
                                      "final", "root-admin", now_ms(), by=BY)
    assert await store.delete_webhook(hook.id, by=BY)
    assert [fields(e) for e in await entries(store)] == [
        ("root-admin", "thread.cancel", waiting.id, "dev", "192.0.2.7", "sleep, initialised"),
        ("root-admin", "thread.cancel", running.id, "dev", "192.0.2.7", "validate, inprogress"),
        ("root-admin", "thread.delete", waiting.id, "dev", "192.0.2.7", "sleep, cancelled"),
        ("root-admin", "thread.cancel", server.id, None, "192.0.2.7", "sleep, initialised"),
        ("root-admin", "webhook.add", str(hook.id), "dev", "192.0.2.7",
         "https://hooks.example:8443"),
        ("root-admin", "webhook.remove", str(hook.id), "dev", "192.0.2.7",
         "https://hooks.example:8443"),
    ]


async def test_a_change_that_does_not_happen_writes_nothing(store: Store) -> None:
    user = await store.create_user("alice", "hash", False, by=BY)
    with pytest.raises(Conflict):
        await store.create_user("alice", "other", True, by=BY)
    with pytest.raises(NotFound):
        await store.update_user("nobody", "hash", False, by=BY)
    assert not await store.set_password("nobody", "hash", by=BY)
    assert not await store.set_disabled("nobody", True, by=BY)
    assert not await store.remove_user("nobody", by=BY)
    assert not await store.remove_api_token("nohash", by=BY)
    assert not await store.remove_oauth_client("tsc_none", by=BY)
    group = await store.create_group("dev", 240, by=BY)
    with pytest.raises(Conflict):
        await store.create_group("dev", 241, by=BY)
    assert not await store.remove_membership(group.id, user.id, by=BY)
    thread = await add(store, now_ms())
    await store.claim_threads("n", 1, now_ms())
    event = LogEvent(0, now_ms(), Level.INFO, "x")
    assert await store.cancel_initialised(thread.id, "x", event, by=BY) is None  # running
    assert not await store.delete_thread(thread.id, by=BY)  # not final
    assert not await store.request_cancel("f" * 32, by=BY)
    await store.create_webhook(240, "https://a.example/", "s3cret", "final", "x", now_ms())
    with pytest.raises(TooManyWebhooks):
        await store.create_webhook(240, "https://b.example/", "s3cret", "final", "x", now_ms(),
                                   most_in_group=1, by=BY)
    assert not await store.delete_webhook(999_999, by=BY)
    assert [e.action for e in await entries(store)] == ["user.add", "group.add"]


async def test_without_an_actor_nothing_is_written(store: Store) -> None:
    """The server's own changes (the purge's deletes) and changes made without saying who."""
    user = await store.create_user("alice", "hash", False)
    group = await store.create_group("dev", 240)
    await store.set_membership(group.id, user.id, Role.MANAGER)
    thread = await add(store, now_ms())
    await store.cancel_initialised(thread.id, "x", LogEvent(0, now_ms(), Level.INFO, "x"))
    assert await store.delete_thread(thread.id)
    assert await store.remove_user("alice")
    assert await entries(store) == []


async def test_entry_and_change_commit_together(store: Store) -> None:
    """A rule that fails after writing its entry leaves neither, and logs nothing."""
    await store.create_group("dev", 240)

    async def fails(tx: Tx, audit: Audit) -> None:
        await tx.run("insert_group", {"id": 250, "name": "half"})
        await audit(tx, "group.add", "half", group_id=250)
        raise NotFound("changed my mind")

    with pytest.raises(NotFound):
        await store._audited(BY, fails)
    assert await store.get_group("half") is None
    assert await entries(store) == []


async def test_signin_failures_and_lockout(store: Store) -> None:
    nobody = Actor(None, "198.51.100.9")
    await store.record_signin_failure("mallory", nobody, locked=False, detail="1 of 2")
    await store.record_signin_failure("mallory", nobody, locked=True, detail="2 of 2")
    await store.record_signin_failure("client:tsc_x", nobody, locked=False)
    assert [fields(e) for e in await entries(store)] == [
        (None, "signin.failure", "mallory", None, "198.51.100.9", "1 of 2"),
        (None, "signin.failure", "mallory", None, "198.51.100.9", "2 of 2"),
        (None, "signin.lockout", "mallory", None, "198.51.100.9", "2 of 2"),
        (None, "signin.failure", "client:tsc_x", None, "198.51.100.9", ""),
    ]


async def test_pages_filters_and_latest(store: Store) -> None:
    for n in range(7):
        await store.create_group(f"g{n}", 300 + n, by=Actor(f"admin{n % 2}"))
    first = await store.audit_entries(AuditFilter(limit=3))
    assert [e.target for e in first.entries] == ["g0", "g1", "g2"] and first.more
    second = await store.audit_entries(AuditFilter(since=first.next, limit=3))
    third = await store.audit_entries(AuditFilter(since=second.next, limit=3))
    assert [e.target for e in second.entries + third.entries] == ["g3", "g4", "g5", "g6"]
    assert second.more and not third.more
    empty = await store.audit_entries(AuditFilter(since=third.next))
    assert empty.entries == [] and empty.next == third.next and not empty.more
    assert [e.target for e in await entries(store, user="admin1")] == ["g1", "g3", "g5"]
    assert [e.target for e in await entries(store, user="g4")] == ["g4"]  # the target counts
    assert await entries(store, action="user.add") == []
    latest = await store.audit_entries(AuditFilter(limit=2, latest=True))
    assert [e.target for e in latest.entries] == ["g5", "g6"] and not latest.more
    assert [e.target for e in await entries(store, limit=2, latest=True, user="admin0")] == [
        "g4", "g6"]
    assert latest.older and not (await store.audit_entries(AuditFilter(latest=True))).older
    older = await store.audit_entries(AuditFilter(limit=2, latest=True,
                                                  before=latest.entries[0].id))
    assert [e.target for e in older.entries] == ["g3", "g4"] and older.older
    oldest = await store.audit_entries(AuditFilter(limit=3, latest=True,
                                                   before=older.entries[0].id, user="admin0"))
    assert [e.target for e in oldest.entries] == ["g0", "g2"] and not oldest.older
    moment = (await entries(store))[4].timestamp
    assert all(e.timestamp >= moment for e in await entries(store, from_ts=moment))
    assert await entries(store, from_ts=now_ms() + 60_000) == []


async def test_forget_audit_deletes_by_time(store: Store) -> None:
    await store.create_group("old", 300, by=BY)
    cutoff = now_ms() + 1
    while now_ms() <= cutoff:  # the next entry is written at a later millisecond
        pass
    await store.create_group("new", 301, by=BY)
    assert await store.forget_audit(cutoff) == 1
    assert [e.target for e in await entries(store)] == ["new"]
    assert await store.forget_audit(cutoff) == 0


async def test_forget_audit_goes_a_batch_at_a_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit, "FORGET_BATCH", 2)
    for n in range(5):
        await store.create_group(f"g{n}", 300 + n, by=BY)
    assert await store.forget_audit(now_ms() + 1) == 5
    assert await entries(store) == []


async def test_bounded_text_and_one_log_line(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = "evil\n2026-01-01 INFO forged\x1b[2J<b>&'\"" + "x" * 1000
    with caplog.at_level(logging.INFO, logger="threadsvc.audit"):
        await store.record_signin_failure(hostile, Actor(None, "::1"), locked=False,
                                          detail=hostile)
    [entry] = await entries(store)
    assert len(entry.target) == TARGET_MAX and entry.target.startswith("evil\n2026")
    assert len(entry.detail) == DETAIL_MAX
    [record] = [r for r in caplog.records if r.name == "threadsvc.audit"]
    line = record.getMessage()
    assert "\n" not in line and "\x1b" not in line
    assert line.startswith("signin.failure by no one signed in from '::1': 'evil\\n2026")


async def test_log_lines_hold_no_secret(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    user = await store.create_user("alice", "scrypt$hash", False)
    with caplog.at_level(logging.INFO, logger="threadsvc.audit"):
        await store.set_password("alice", "scrypt$newhash", by=BY)
        await store.add_api_token(user.id, "tokenhash-123", by=BY)
        await store.add_oauth_client(user.id, "tsc_9", "secrethash-456", by=BY)
        await store.remove_api_token("tokenhash-123", by=BY)
    lines = [r.getMessage() for r in caplog.records if r.name == "threadsvc.audit"]
    assert len(lines) == 4
    for secret in ("scrypt$newhash", "tokenhash-123", "secrethash-456"):
        assert not any(secret in line for line in lines)
    stored = " ".join(repr(fields(e)) for e in await entries(store))
    assert not any(s in stored for s in ("scrypt$newhash", "tokenhash-123", "secrethash-456"))
