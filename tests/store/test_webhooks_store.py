"""The webhook part of the store contract: webhooks, the outbox each status change fills, and
claiming deliveries in order with a lease."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from threadsvc.models import (
    SERVER_GROUP_ID,
    Level,
    LogEvent,
    Result,
    Status,
    Thread,
    Webhook,
    now_ms,
)
from threadsvc.store.base import Store

pytestmark = pytest.mark.anyio
LEASE = 60_000


async def add_thread(store: Store, group: int = 240) -> Thread:
    now = now_ms()
    thread = Thread(
        id=secrets.token_hex(16),
        name="Sleep thread",
        username="alice",
        group_id=group,
        job="sleep",
        params={"seconds": 1},
        status=Status.INITIALISED,
        created=now,
        version=1,
    )
    await store.insert_thread(thread, LogEvent(1, now, Level.INFO, "created"))
    return thread


async def hook(store: Store, group: int = 240, events: str = "final", url: str = "") -> Webhook:
    return await store.create_webhook(
        group,
        url or f"http://hooks.example/{secrets.token_hex(4)}",
        "s3cret",
        events,
        "manager",
        now_ms(),  # type: ignore[arg-type]
    )


async def run(store: Store, thread: Thread) -> Thread:
    """Claim `thread` (the only initialised one): it is inprogress on node n."""
    [claimed] = await store.claim_threads("n", 1, now_ms())
    assert claimed.id == thread.id
    return claimed


async def change(store: Store, thread: Thread, status: Status, **more: object) -> Thread:
    ended = now_ms() if status.final else None
    changed = dataclasses.replace(
        thread, status=status, ended=ended, version=thread.version + 1, **more
    )
    assert await store.write_batch("n", [changed], [changed], [], now_ms()) == set()
    return changed


async def claim_all(
    store: Store, now: int | None = None, limit: int = 100
) -> list[tuple[str, str]]:
    """What a claim took, sorted (a claim chooses by group and webhook, not in queue order)."""
    claimed = await store.claim_deliveries(now or now_ms(), LEASE, limit)
    return sorted((d.webhook.url, d.delivery.event) for d in claimed)


async def test_webhooks_round_trip(store: Store) -> None:
    first = await hook(store, 240, "all", "http://a.example/1")
    second = await hook(store, 240)
    server = await hook(store, SERVER_GROUP_ID)
    assert first.id != second.id and first.events == "all" and first.secret == "s3cret"
    assert await store.get_webhook(first.id) == first
    assert await store.get_webhook(10**9) is None
    assert await store.list_webhooks(240) == [first, second]
    assert await store.list_webhooks(SERVER_GROUP_ID) == [server]
    assert await store.list_webhooks(241) == []
    assert await store.delete_webhook(first.id) is True
    assert await store.delete_webhook(first.id) is False
    assert await store.list_webhooks(240) == [second]


async def test_a_final_status_queues_one_delivery_per_webhook_that_hears_it(store: Store) -> None:
    mine = await hook(store, 240, "final", "http://a.example/mine")
    everything = await hook(store, 240, "all", "http://a.example/all")
    await hook(store, 241, "all", "http://a.example/other-group")
    server = await hook(store, SERVER_GROUP_ID, "final", "http://a.example/server")
    thread = await add_thread(store)
    assert await store.next_delivery_due() is None  # creation is not a change webhooks hear of
    running = await run(store, thread)
    await change(store, running, Status.COMPLETED, message="Done")
    claimed = await claim_all(store)
    assert claimed == [
        ("http://a.example/all", "status"),  # inprogress, for events=all only
        ("http://a.example/mine", "final"),
        # the final one of /all waits for its earlier one, of the same (webhook, thread)
        ("http://a.example/server", "final"),
    ]
    events = {
        w.id: [d.event for d in await store.recent_deliveries(w.id, 10)]
        for w in (mine, everything, server)
    }
    assert events == {mine.id: ["final"], everything.id: ["final", "status"], server.id: ["final"]}


async def test_claiming_gives_snapshots_in_order_with_a_lease(store: Store) -> None:
    webhook = await hook(store, 240, "all")
    thread = await add_thread(store)
    running = await run(store, thread)
    warned = await change(store, running, Status.WARNING, warnings=1, message="careful")
    back = await change(store, warned, Status.INPROGRESS, progress_current=3, progress_total=4)
    result = Result("f", "text/plain", 5, "result.txt", now_ms() + 1000)
    await change(store, back, Status.COMPLETED, result=result)
    seen = []
    for _ in range(4):
        now = now_ms()
        [due] = await store.claim_deliveries(now, LEASE, 10)
        assert due.webhook == webhook
        assert due.delivery.thread_id == thread.id and due.thread.id == thread.id
        # leased: nothing more to claim until it is recorded
        assert await store.claim_deliveries(now, LEASE, 10) == []
        assert await store.next_delivery_due() == now + LEASE
        seen.append((due.delivery.event, due.thread))
        await store.record_attempt(due.delivery.id, now, 204, "delivered", now)
    assert await store.next_delivery_due() is None
    assert [(event, t.status) for event, t in seen] == [
        ("status", Status.INPROGRESS),
        ("status", Status.WARNING),
        ("status", Status.INPROGRESS),
        ("final", Status.COMPLETED),
    ]
    assert seen[1][1].message == "careful" and seen[1][1].warnings == 1
    assert seen[2][1].progress_current == 3 and seen[2][1].progress_total == 4
    assert seen[3][1].result == result and seen[3][1].ended is not None
    assert seen[0][1].started is not None and seen[0][1].name == "Sleep thread"
    deliveries = await store.recent_deliveries(webhook.id, 10)
    assert [d.status for d in deliveries] == ["delivered"] * 4
    assert [d.event for d in deliveries] == ["final", "status", "status", "status"]  # newest first
    assert len(await store.recent_deliveries(webhook.id, 2)) == 2


async def test_threads_do_not_wait_for_each_other(store: Store) -> None:
    await hook(store, 240, "final")
    first, second = await add_thread(store), await add_thread(store)
    claimed = await store.claim_threads("n", 2, now_ms())
    for running in claimed:
        await change(store, running, Status.FAILED)
    due = await store.claim_deliveries(now_ms(), LEASE, 10)
    assert {d.delivery.thread_id for d in due} == {first.id, second.id}
    assert [d.delivery.event for d in due] == ["final", "final"]


async def test_failed_attempts_keep_later_changes_waiting(store: Store) -> None:
    webhook = await hook(store, 240, "all")
    running = await run(store, await add_thread(store))
    await change(store, running, Status.CANCELLED)
    now = now_ms()
    [first] = await store.claim_deliveries(now, LEASE, 10)
    await store.record_attempt(first.delivery.id, now, 500, "pending", now + 5_000)
    assert await store.claim_deliveries(now + 1_000, LEASE, 10) == []  # not due, and blocking
    assert await store.next_delivery_due() == now + 5_000
    [again] = await store.claim_deliveries(now + 5_000, LEASE, 10)
    assert again.delivery.id == first.delivery.id and again.delivery.attempts == 1
    await store.record_attempt(first.delivery.id, now + 5_000, 0, "failed", now + 5_000)
    [final] = await store.claim_deliveries(now + 5_000, LEASE, 10)
    assert final.delivery.event == "final"  # a failed one no longer holds the next back
    [latest, earliest] = await store.recent_deliveries(webhook.id, 10)
    assert (earliest.status, earliest.attempts, earliest.code) == ("failed", 2, 0)
    assert earliest.last_attempt == now + 5_000
    assert (latest.status, latest.attempts, latest.code, latest.last_attempt) == (
        "pending",
        0,
        None,
        None,
    )


async def test_release_makes_a_claimed_delivery_due_again(store: Store) -> None:
    await hook(store, 240)
    running = await run(store, await add_thread(store))
    await change(store, running, Status.COMPLETED)
    now = now_ms()
    [due] = await store.claim_deliveries(now, LEASE, 10)
    await store.release_delivery(due.delivery.id, now + 1)
    [again] = await store.claim_deliveries(now + 1, LEASE, 10)
    assert again.delivery.id == due.delivery.id and again.delivery.attempts == 0


async def test_cancel_and_recovery_queue_final_deliveries(store: Store) -> None:
    webhook = await hook(store, SERVER_GROUP_ID, "all")
    initialised = await add_thread(store, group=SERVER_GROUP_ID)
    event = LogEvent(0, now_ms(), Level.INFO, "Status: cancelled")
    cancelled = await store.cancel_initialised(initialised.id, "Cancelled by admin", event)
    assert cancelled is not None
    running = await run(store, await add_thread(store, group=241))
    recovered = await store.recover_thread(running, False, "interrupted", now_ms(), Level.ERROR)
    assert recovered is not None and recovered.status is Status.FAILED
    deliveries = await store.recent_deliveries(webhook.id, 10)
    assert [(d.thread_id, d.event) for d in reversed(deliveries)] == [
        (initialised.id, "final"),
        (running.id, "status"),
        (running.id, "final"),
    ]
    snapshots = {
        d.delivery.thread_id: d.thread for d in await store.claim_deliveries(now_ms(), LEASE, 10)
    }
    assert snapshots[initialised.id].status is Status.CANCELLED
    assert snapshots[initialised.id].message == "Cancelled by admin"
    assert snapshots[initialised.id].started is None


async def test_a_requeued_thread_queues_nothing(store: Store) -> None:
    webhook = await hook(store, 240, "all")
    running = await run(store, await add_thread(store))
    await store.recover_thread(running, True, "handed back", now_ms(), Level.WARN)
    assert [d.event for d in await store.recent_deliveries(webhook.id, 10)] == ["status"]


async def test_a_lost_thread_queues_nothing(store: Store) -> None:
    webhook = await hook(store, 240)
    running = await run(store, await add_thread(store))
    final = dataclasses.replace(running, status=Status.COMPLETED, ended=now_ms())
    assert await store.write_batch("elsewhere", [final], [final], [], now_ms()) == {running.id}
    assert await store.recent_deliveries(webhook.id, 10) == []


async def test_deleting_a_webhook_deletes_its_deliveries(store: Store) -> None:
    webhook = await hook(store, 240)
    running = await run(store, await add_thread(store))
    await change(store, running, Status.COMPLETED)
    assert len(await store.recent_deliveries(webhook.id, 10)) == 1
    assert await store.delete_webhook(webhook.id)
    assert await store.recent_deliveries(webhook.id, 10) == []
    assert await store.next_delivery_due() is None


async def test_prune_deletes_only_old_finished_deliveries(store: Store) -> None:
    webhook = await hook(store, 240, "all")
    running = await run(store, await add_thread(store))
    await change(store, running, Status.COMPLETED)
    now = now_ms()
    [due] = await store.claim_deliveries(now, LEASE, 10)
    await store.record_attempt(due.delivery.id, now, 200, "delivered", now)
    assert await store.prune_deliveries(now - 60_000) == 0
    assert await store.prune_deliveries(now_ms() + 1) == 1  # the delivered one, not the pending
    [left] = await store.recent_deliveries(webhook.id, 10)
    assert left.status == "pending" and left.event == "final"


async def test_a_snapshot_keeps_awkward_text_as_it_was(store: Store) -> None:
    """The changes of a transaction reach the outbox as the thread was: quotes, backslashes,
    escapes, placeholders and any character."""
    await hook(store, 240, "all")
    running = await run(store, await add_thread(store))
    awkward = "it's 100% \\ \"q\" \\u0041 %(id)s $1 {\"a\": [1]} \u00e9\u6f22\u2028\U0001f600\x01"
    await change(store, running, Status.WARNING, message=awkward)
    [first] = await store.claim_deliveries(now_ms(), LEASE, 10)
    assert first.thread.message is None
    await store.record_attempt(first.delivery.id, now_ms(), 204, "delivered", now_ms())
    [second] = await store.claim_deliveries(now_ms(), LEASE, 10)  # it waited behind the first
    assert second.thread.message == awkward
