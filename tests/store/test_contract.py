"""The store contract (threadsvc/store/base.py), on every store."""

from __future__ import annotations

import dataclasses
import random
import secrets
from collections import Counter

import pytest

from threadsvc.errors import Conflict, TooManyActiveThreads
from threadsvc.models import (
    FINAL,
    ActiveLimits,
    Level,
    LogEvent,
    NewLogEvent,
    Role,
    Status,
    Thread,
    ThreadFilter,
    now_ms,
)
from threadsvc.store import fair
from threadsvc.store.base import Store

pytestmark = pytest.mark.anyio


def new_thread(created: int, *, group: int = 240, user: str = "alice", job: str = "sleep") -> Thread:
    return Thread(
        id=secrets.token_hex(16),
        name="Sleep thread",
        username=user,
        group_id=group,
        job=job,
        params={"seconds": 1.5},
        status=Status.INITIALISED,
        created=created,
        version=1,
    )


async def add(store: Store, created: int, **kwargs: object) -> Thread:
    thread = new_thread(created, **kwargs)  # type: ignore[arg-type]
    await store.insert_thread(thread, LogEvent(1, created, Level.INFO, "created"))
    return thread


async def test_identity_round_trip(store: Store) -> None:
    user = await store.create_user("alice", "hash", False)
    with pytest.raises(Conflict):
        await store.create_user("alice", "other", True)
    found = await store.get_user("alice")
    assert found is not None and found[0] == user and found[1] == "hash"
    assert await store.get_user("bob") is None
    await store.add_api_token(user.id, "tokenhash")
    assert await store.user_for_token("tokenhash") == user
    assert await store.user_for_token("nope") is None
    await store.add_oauth_client(user.id, "client", "secrethash")
    assert await store.get_oauth_client("client") == (user, "secrethash")
    group = await store.create_group("dev", 240)
    with pytest.raises(Conflict):
        await store.create_group("dev")
    with pytest.raises(Conflict):
        await store.create_group("other", 240)
    assert await store.get_group("dev") == group
    assert await store.get_group_by_id(240) == group
    await store.set_membership(240, user.id, Role.REVIEWER)
    await store.set_membership(240, user.id, Role.MANAGER)
    assert await store.roles_of(user.id) == {240: Role.MANAGER}
    assert await store.groups_of(user.id) == [(group, Role.MANAGER)]


async def test_login_attempts_are_reserved_and_lock_at_the_limit(store: Store) -> None:
    now = 1_000_000
    for attempt in range(1, 3):
        failures, reserved = await store.reserve_login_attempt("alice", "", now + attempt, 900_000, 3)
        assert reserved and failures is not None
        assert failures.failures == attempt and failures.locked_until == 0
    # the attempt that reaches the limit is made, and locks before its password is checked
    failures, reserved = await store.reserve_login_attempt("alice", "", now + 3, 900_000, 3)
    assert reserved and failures is not None and failures.locked_until == now + 3 + 900_000
    refused, reserved = await store.reserve_login_attempt("alice", "", now + 4, 900_000, 3)
    assert not reserved and refused == failures  # unchanged
    # another address is another count; a new window once the old one and the lock are over
    other, reserved = await store.reserve_login_attempt("alice", "10.0.0.1", now + 5, 900_000, 3)
    assert reserved and other is not None and other.failures == 1
    later, reserved = await store.reserve_login_attempt("alice", "", now + 2_000_000, 900_000, 3)
    assert reserved and later is not None and later.failures == 1 and later.locked_until == 0
    assert await store.clear_login_failures("alice", "")
    assert await store.get_login_failures("alice") is None
    assert await store.get_login_failures("alice", "10.0.0.1") is not None
    assert await store.clear_login_failures("alice")  # every address
    assert await store.get_login_failures("alice", "10.0.0.1") is None
    assert not await store.clear_login_failures("alice")


async def test_login_failures_are_forgotten_once_window_and_lock_are_over(store: Store) -> None:
    window = 900_000
    await store.reserve_login_attempt("once", "", 1_000, window, 3)  # window over at 901_000
    for attempt in range(3):  # locked at 2_002 until 902_002
        await store.reserve_login_attempt("locked", "", 2_000 + attempt, window, 3)
    await store.reserve_login_attempt("recent", "", 500_000, window, 3)
    assert await store.forget_login_failures(901_000, window) == 1
    assert await store.get_login_failures("once") is None
    assert await store.get_login_failures("locked") is not None  # window over, lock not
    assert await store.forget_login_failures(902_002, window) == 1
    assert await store.get_login_failures("locked") is None
    recent = await store.get_login_failures("recent")
    assert recent is not None and recent.failures == 1


async def test_disabled_and_removed_users_are_no_users(store: Store) -> None:
    user = await store.create_user("bob", "hash", False)
    assert user.credential_version == 0
    await store.add_api_token(user.id, "token-hash")
    await store.add_oauth_client(user.id, "tsc_bob", "secret-hash")
    assert await store.set_password("bob", "other-hash")
    found = await store.get_user("bob")
    assert found is not None and found[0].credential_version == 1
    assert await store.set_disabled("bob", True)
    assert await store.get_user("bob") is None
    assert await store.user_for_token("token-hash") is None
    assert await store.get_oauth_client("tsc_bob") is None
    assert await store.set_disabled("bob", False)
    found = await store.get_user("bob")
    assert found is not None and found[0].credential_version == 2
    assert await store.user_for_token("token-hash") is None  # deleted, not hidden
    assert [e.user.username for e in await store.list_users()] == ["bob"]
    assert await store.remove_user("bob")
    assert not await store.remove_user("bob")
    namesake = await store.create_user("bob", None, True)
    assert namesake.id != user.id  # the newest user removed: its id is still not given again
    assert await store.remove_user("bob")
    assert not await store.set_password("bob", None)
    assert not await store.set_disabled("bob", True)


async def test_users_are_found_by_part_of_their_name_a_page_at_a_time(store: Store) -> None:
    for name in ("ann", "Annie", "bob", "joanna", "a_b", "a%b", "ax\\b"):
        await store.create_user(name, None, False)
    await store.set_disabled("bob", True)

    async def found(search: str, offset: int = 0, limit: int = 10) -> tuple[list[str], int]:
        users, total = await store.find_users(search, offset, limit)
        return [e.user.username for e in users], total

    names = sorted(["ann", "Annie", "bob", "joanna", "a_b", "a%b", "ax\\b"])
    assert await found("") == (names, 7)  # disabled users too
    assert set((await found("ANN"))[0]) == {"ann", "Annie", "joanna"}  # any case
    first, total = await found("ann", 0, 2)
    rest, _ = await found("ann", 2, 2)
    assert total == 3 and len(first) == 2 and len(rest) == 1 and not set(first) & set(rest)
    assert await found("_") == (["a_b"], 1)  # LIKE's wildcards are plain characters
    assert await found("%") == (["a%b"], 1)
    assert await found("\\") == (["ax\\b"], 1)
    assert await found("nobody") == ([], 0)
    assert (await store.find_users("", 0, 1))[0][0].disabled in (True, False)


async def test_an_idempotency_key_names_one_thread_for_a_day(store: Store) -> None:
    limits = ActiveLimits(per_user=2, per_group=10)

    async def start(created: int, key: str, user: str = "alice") -> tuple[Thread, bool]:
        event = LogEvent(1, created, Level.INFO, "created")
        return await store.insert_thread(new_thread(created, user=user), event, limits=limits,
                                         idempotency_key=key, idempotency_since=created - 1000)

    first, created = await start(10_000, "k")
    assert created
    again, created = await start(10_500, "k")
    assert (again.id, created) == (first.id, False)
    await start(10_600, "other")  # alice is at her limit now, yet a repeat still answers
    assert (await start(10_700, "k"))[0].id == first.id
    with pytest.raises(TooManyActiveThreads):
        await start(10_800, "new")
    assert (await start(10_900, "k", user="bob"))[1]  # a key is the user's own
    # a day later (here: more than 1,000 ms), the key names a new thread
    for thread in (first, again):
        event = LogEvent(0, 12_000, Level.INFO, "Status: cancelled")
        await store.cancel_initialised(thread.id, "Cancelled", event)
    later, created = await start(12_000, "k")
    assert created and later.id != first.id
    assert (await start(12_100, "k"))[0].id == later.id


async def test_an_idempotency_key_is_scoped_to_its_group_and_to_what_was_asked(
    store: Store,
) -> None:
    async def start(key: str, group: int, asked: str | None) -> tuple[Thread, bool]:
        event = LogEvent(1, 10_000, Level.INFO, "created")
        return await store.insert_thread(new_thread(10_000, group=group), event,
                                         idempotency_key=key, idempotency_since=0,
                                         request_hash=asked)

    in_a, created = await start("k", 240, "h1")
    assert created
    in_b, created = await start("k", 241, "h2")  # another group: another key
    assert created and in_b.id != in_a.id
    server, created = await start("k", -1, "h3")  # and the server level another still
    assert created and server.id not in (in_a.id, in_b.id)
    assert await start("k", 240, "h1") == (in_a, False)  # the same request replays
    with pytest.raises(Conflict):
        await start("k", 240, "h2")  # the same key asking something else
    with pytest.raises(Conflict):
        await start("k", -1, "h1")
    assert (await start("k", 241, None))[0].id == in_b.id  # no hash to compare: a replay
    assert len((await store.list_threads(ThreadFilter())).threads) == 3  # nothing else stored


async def test_secret_setting_is_kept(store: Store) -> None:
    assert await store.get_or_put_setting("k", "first") == "first"
    assert await store.get_or_put_setting("k", "second") == "first"


async def test_list_newest_first_with_filters_and_pages(store: Store) -> None:
    base = now_ms()
    threads = [await add(store, base + i, user="alice" if i % 2 else "bob") for i in range(7)]
    await add(store, base + 100, group=241, user="carol")
    page = await store.list_threads(ThreadFilter(group_id=240, pagesize=3))
    assert [t.id for t in page.threads] == [t.id for t in reversed(threads)][:3]
    assert page.total == 7
    page3 = await store.list_threads(ThreadFilter(group_id=240, pagesize=3, page=3))
    assert [t.id for t in page3.threads] == [threads[0].id]
    alice = await store.list_threads(ThreadFilter(username="alice"))
    assert alice.total == 3
    window = await store.list_threads(ThreadFilter(since=base + 2, until=base + 4, group_id=240))
    assert [t.created for t in window.threads] == [base + 4, base + 3, base + 2]
    finished = await store.list_threads(ThreadFilter(statuses=FINAL))
    assert finished.total == 0
    assert (await store.list_threads(ThreadFilter(job="other"))).total == 0
    assert (await store.list_threads(ThreadFilter())).total == 8


async def test_claim_oldest_first_up_to_limit(store: Store) -> None:
    base = now_ms()
    threads = [await add(store, base + i) for i in range(5)]
    claimed = await store.claim_threads("node-a", 2, base + 10)
    assert [t.id for t in claimed] == [threads[0].id, threads[1].id]
    assert all(t.status is Status.INPROGRESS and t.node == "node-a" for t in claimed)
    assert all(t.started == base + 10 for t in claimed)
    rest = await store.claim_threads("node-b", 10, base + 11)
    assert [t.id for t in rest] == [t.id for t in threads[2:]]
    assert await store.claim_threads("node-a", 10, base + 12) == []


async def test_claims_share_a_node_between_groups_then_users(store: Store) -> None:
    """One user's burst does not hold every slot while another group waits; the node's own
    running threads count, another node's do not."""
    base = now_ms()
    burst = [await add(store, base + i, user="alice") for i in range(20)]
    other = await add(store, base + 50, group=241, user="olga")
    first = await store.claim_threads("node-a", 4, base + 60, slots=8, share=0.5)
    assert other.id in {t.id for t in first}
    assert [t.id for t in first if t.id != other.id] == [t.id for t in burst[:3]]
    late = await add(store, base + 70, group=241, user="oscar")
    # alice's group holds 3 of node-a's 8 slots, olga's 1: oscar's thread goes first, then
    # alice's may take every slot left, her group alone waiting.
    second = await store.claim_threads("node-a", 4, base + 80, slots=8, share=0.5)
    assert {t.id for t in second} == {late.id} | {t.id for t in burst[3:6]}
    # Another node starts from its own (empty) count; within one group, the user running
    # fewer goes first (alice and bob hold none: alice, older; then bob; then alice again).
    bob = [await add(store, base + 90 + i, user="bob") for i in range(2)]
    third = await store.claim_threads("node-b", 3, base + 100, slots=8, share=0.5)
    assert {t.id for t in third} == {burst[6].id, bob[0].id, burst[7].id}


@pytest.mark.parametrize("seed", range(4))
async def test_a_claim_takes_what_a_fair_pick_of_every_waiting_thread_takes(
    store: Store, seed: int
) -> None:
    """A claim reads only the waiting threads a fair pick could choose (not the whole queue),
    and chooses as if it had read them all: over many owners of several groups, some with
    threads running on the node, each claim takes exactly what store/fair.py picks from every
    waiting thread."""
    rng = random.Random(seed)
    base = now_ms()
    waiting: list[tuple[fair.Waiting, str]] = []  # in the order stored: seq order
    owners = [(group, f"u{user}") for group in (240, 241, 242, -1) for user in range(6)]
    for i in range(150):
        group, user = rng.choice(owners[: rng.choice((4, 12, 24))])
        thread = await add(store, base + i, group=group, user=user)
        waiting.append((fair.Waiting(i, group, user), thread.id))
    running: Counter[tuple[int, str]] = Counter()
    share = rng.choice((0.25, 0.5, 1.0))
    for round_ in range(12):
        limit = rng.randint(1, 4)
        chosen = set(fair.pick(running.items(), [w for w, _ in waiting], limit, 40, share))
        expected = {thread_id for w, thread_id in waiting if w.seq in chosen}
        claimed = await store.claim_threads("node-a", limit, base + 1000 + round_, slots=40,
                                            share=share)
        assert {t.id for t in claimed} == expected
        running.update((w.group_id, w.username) for w, _ in waiting if w.seq in chosen)
        waiting = [(w, thread_id) for w, thread_id in waiting if w.seq not in chosen]


async def test_a_share_bounds_a_group_while_another_waits(store: Store) -> None:
    """share 0.25 of 4 slots: one each while both groups wait, the other slots stay free."""
    base = now_ms()
    for i in range(3):
        await add(store, base + i, user="alice")
        await add(store, base + 10 + i, group=241, user="olga")
    claimed = await store.claim_threads("node-a", 4, base + 20, slots=4, share=0.25)
    assert sorted((t.group_id, t.username) for t in claimed) == [(240, "alice"), (241, "olga")]
    server = await add(store, base + 30, group=-1, user="system")  # one more group
    [claimed_server] = await store.claim_threads("node-a", 2, base + 40, slots=4, share=0.25)
    assert claimed_server.id == server.id


async def test_claims_hold_a_jobs_concurrency_on_every_node(store: Store) -> None:
    """At most 2 threads of "capped" run across nodes; its others wait and hide no other job's
    threads behind them; a slot of it frees when one of its threads ends."""
    base = now_ms()
    capped = [await add(store, base + i, job="capped") for i in range(4)]
    other = await add(store, base + 10, job="sleep")
    limits = {"capped": 2}
    [first] = await store.claim_threads("node-a", 1, base + 20, concurrency=limits)
    assert first.id == capped[0].id
    second = await store.claim_threads("node-b", 4, base + 21, concurrency=limits)
    assert [t.id for t in second] == [capped[1].id, other.id]
    assert await store.claim_threads("node-c", 4, base + 22, concurrency=limits) == []
    ended = dataclasses.replace(
        first, status=Status.COMPLETED, ended=base + 30, version=first.version + 1
    )
    assert await store.write_batch("node-a", [ended], [ended], [], base + 30) == set()
    third = await store.claim_threads("node-c", 4, base + 31, concurrency=limits)
    assert [t.id for t in third] == [capped[2].id]
    waiting = await store.list_threads(ThreadFilter(statuses=frozenset({Status.INITIALISED})))
    assert [t.id for t in waiting.threads] == [capped[3].id]


async def test_batch_writes_events_and_state_of_own_threads_only(store: Store) -> None:
    thread = await add(store, now_ms())
    [claimed] = await store.claim_threads("node-a", 1, now_ms())
    state = dataclasses.replace(
        claimed, status=Status.WARNING, message="careful", progress_current=3,
        progress_total=10, warnings=1, version=claimed.version + 1,
    )
    event = NewLogEvent(thread.id, LogEvent(2, now_ms(), Level.WARN, "careful"))
    assert await store.write_batch("node-a", [state], [state], [event], now_ms()) == set()
    stored = await store.get_thread(thread.id)
    assert stored is not None
    assert (stored.status, stored.message, stored.progress_current, stored.warnings) == (
        Status.WARNING, "careful", 3, 1
    )
    # another node may not write it
    assert await store.write_batch("node-b", [state], [], [], now_ms()) == {thread.id}
    logs = await store.get_logs(thread.id, 0, 10, Level.DEBUG)
    assert [e.seq for e in logs.events] == [1, 2]


async def test_final_state_is_never_overwritten(store: Store) -> None:
    thread = await add(store, now_ms())
    [claimed] = await store.claim_threads("n", 1, now_ms())
    final = dataclasses.replace(claimed, status=Status.COMPLETED, ended=now_ms(), version=5)
    assert await store.write_batch("n", [final], [final], [], now_ms()) == set()
    again = dataclasses.replace(claimed, status=Status.INPROGRESS, version=6)
    assert await store.write_batch("n", [again], [again], [], now_ms()) == {thread.id}
    stored = await store.get_thread(thread.id)
    assert stored is not None and stored.status is Status.COMPLETED


async def test_cancel_initialised_only(store: Store) -> None:
    waiting = await add(store, now_ms())
    event = LogEvent(0, now_ms(), Level.INFO, "Status: cancelled")
    cancelled = await store.cancel_initialised(waiting.id, "Cancelled by alice", event)
    assert cancelled is not None and cancelled.status is Status.CANCELLED
    assert cancelled.started is None and cancelled.ended == event.timestamp
    assert cancelled.message == "Cancelled by alice"
    assert await store.cancel_initialised(waiting.id, "again", event) is None
    logs = await store.get_logs(waiting.id, 0, 10, Level.DEBUG)
    assert [e.text for e in logs.events] == ["created", "Status: cancelled"]
    running = await add(store, now_ms())
    await store.claim_threads("n", 1, now_ms())
    assert await store.cancel_initialised(running.id, "no", event) is None
    await store.request_cancel(running.id)
    assert await store.cancel_requests("n") == [running.id]
    assert await store.cancel_requests("other") == []


async def test_recover_happens_once(store: Store) -> None:
    thread = await add(store, now_ms())
    [claimed] = await store.claim_threads("dead", 1, now_ms())
    assert [t.id for t in await store.running_threads()] == [thread.id]
    first = await store.recover_thread(claimed, False, "Interrupted", now_ms(), Level.ERROR)
    assert first is not None and first.status is Status.FAILED and first.message == "Interrupted"
    assert await store.recover_thread(claimed, False, "again", now_ms(), Level.ERROR) is None
    other = await add(store, now_ms())
    [claimed2] = await store.claim_threads("dead", 1, now_ms())
    requeued = await store.recover_thread(claimed2, True, "again", now_ms(), Level.WARN)
    assert requeued is not None and requeued.status is Status.INITIALISED and requeued.node is None
    assert other.id == requeued.id
    logs = await store.get_logs(other.id, 0, 10, Level.DEBUG)
    assert [(e.seq, e.level) for e in logs.events] == [(1, Level.INFO), (2, Level.WARN)]


async def test_delete_only_final(store: Store) -> None:
    thread = await add(store, now_ms())
    assert not await store.delete_thread(thread.id)
    event = LogEvent(0, now_ms(), Level.INFO, "x")
    await store.cancel_initialised(thread.id, "x", event)
    assert await store.delete_thread(thread.id)
    assert await store.get_thread(thread.id) is None
    assert (await store.get_logs(thread.id, 0, 10, Level.DEBUG)).total == 0
    assert not await store.delete_thread(thread.id)


async def test_log_pages(store: Store) -> None:
    thread = await add(store, now_ms())
    await store.claim_threads("n", 1, now_ms())
    levels = [Level.DEBUG, Level.INFO, Level.WARN, Level.ERROR] * 5
    events = [
        NewLogEvent(thread.id, LogEvent(seq, now_ms(), level, f"e{seq}"))
        for seq, level in enumerate(levels, start=2)
    ]
    await store.write_batch("n", [], [], events, now_ms())
    first = await store.get_logs(thread.id, 0, 8, Level.DEBUG)
    assert [e.seq for e in first.events] == list(range(1, 9))
    assert (first.total, first.next, first.more) == (21, 8, True)
    last = await store.get_logs(thread.id, first.next, 100, Level.DEBUG)
    assert [e.seq for e in last.events] == list(range(9, 22)) and not last.more
    errors = await store.get_logs(thread.id, 0, 100, Level.ERROR)
    assert all(e.level is Level.ERROR for e in errors.events) and len(errors.events) == 5
    assert errors.total == 21
    empty = await store.get_logs(thread.id, 21, 100, Level.DEBUG)
    assert empty.events == [] and empty.next == 21 and not empty.more
