"""The outbox under many tenants, on both stores: what is due is found without looking past
what waits, a failing webhook pauses, caps hold, and claims share the workers by group."""

from __future__ import annotations

import sqlite3

import pytest

from tests.store.test_webhooks_store import LEASE, add_thread, change, hook, run
from threadsvc.errors import TooManyWebhooks
from threadsvc.models import SERVER_GROUP_ID, Status, now_ms
from threadsvc.store.base import Store
from threadsvc.store.postgres import PostgresStore
from threadsvc.store.sqlite import SQLiteStore
from threadsvc.xml import render

pytestmark = pytest.mark.anyio


async def test_a_delivery_behind_an_earlier_one_waits_until_it_is_done(store: Store) -> None:
    everything = await hook(store, 240, "all")
    thread = await add_thread(store)
    running = await run(store, thread)  # inprogress: a `status` delivery
    await change(store, running, Status.COMPLETED)  # final: waits behind it
    now = now_ms()
    [first] = await store.claim_deliveries(now, LEASE, 10)
    assert first.delivery.event == "status"
    assert await store.claim_deliveries(now, LEASE, 10) == []  # the final one waits
    behind = [d for d in await store.recent_deliveries(everything.id, 10) if d.event == "final"]
    shown = render.delivery_element(behind[0])  # waiting behind: no next attempt to show
    assert shown.get("status") == "pending" and shown.get("next-attempt") is None
    # due again only when its lease ends; the other waits behind it, never due meanwhile
    assert await store.next_delivery_due() == now + LEASE
    assert await store.record_attempt(first.delivery.id, now, 204, "delivered", now) == 0
    [final] = await store.claim_deliveries(now_ms(), LEASE, 10)
    assert final.delivery.event == "final" and final.webhook.id == everything.id


async def test_a_failing_webhook_counts_failures_and_a_pause_hides_it(store: Store) -> None:
    dead = await hook(store, 240)
    for _ in range(3):
        await change(store, await run(store, await add_thread(store)), Status.COMPLETED)
    now = now_ms()
    claimed = await store.claim_deliveries(now, LEASE, 10)
    assert len(claimed) == 3
    counts = [
        await store.record_attempt(d.delivery.id, now, 503, "pending", now) for d in claimed
    ]
    assert counts == [1, 2, 3]  # consecutive failed attempts of the webhook
    await store.pause_webhook(dead.id, now + 60_000)
    assert await store.claim_deliveries(now + 1, LEASE, 10) == []
    assert await store.next_delivery_due() == now + 60_000
    [again, *_] = await store.claim_deliveries(now + 60_000, LEASE, 10)
    assert await store.record_attempt(again.delivery.id, now, 200, "delivered", now) == 0
    assert await store.record_attempt(claimed[1].delivery.id, now, 500, "pending", now) == 1


async def test_the_oldest_past_the_cap_are_given_up(store: Store) -> None:
    everything = await hook(store, 240, "all")
    threads = [await add_thread(store) for _ in range(3)]
    for thread in threads:  # two deliveries each: inprogress, then the final one behind it
        await change(store, await run(store, thread), Status.COMPLETED)
    assert await store.give_up_excess(10, now_ms()) == {}
    assert await store.give_up_excess(4, now_ms()) == {everything.id: 2}
    states = sorted(
        (d.thread_id, d.event, d.status) for d in await store.recent_deliveries(everything.id, 10)
    )
    first_thread = sorted(t.id for t in threads).index(threads[0].id)
    assert states[first_thread * 2 : first_thread * 2 + 2] == [
        (threads[0].id, "final", "failed"), (threads[0].id, "status", "failed"),
    ]
    claimed = await store.claim_deliveries(now_ms(), LEASE, 10)
    # the other two threads' first deliveries; their finals still wait behind them
    assert sorted(d.delivery.event for d in claimed) == ["status", "status"]
    assert threads[0].id not in {d.delivery.thread_id for d in claimed}


async def test_webhook_caps(store: Store) -> None:
    caps = {"most_in_group": 2, "most_in_all": 3}
    for _ in range(2):
        await store.create_webhook(240, "http://a.example/", "s3cret", "final", "m", 1, **caps)
    with pytest.raises(TooManyWebhooks, match="The group has 2"):
        await store.create_webhook(240, "http://a.example/", "s3cret", "final", "m", 1, **caps)
    await store.create_webhook(SERVER_GROUP_ID, "http://a.example/", "s3cret", "final", "m", 1,
                               **caps)
    with pytest.raises(TooManyWebhooks, match="The server has 3"):
        await store.create_webhook(241, "http://a.example/", "s3cret", "final", "m", 1, **caps)
    assert len(await store.list_webhooks(241)) == 0


async def test_claims_share_the_workers_between_groups(store: Store) -> None:
    slow = [await hook(store, 240) for _ in range(4)]
    live = await hook(store, 241)
    for _ in range(2):
        await change(store, await run(store, await add_thread(store, 240)), Status.COMPLETED)
    for _ in range(3):
        await change(store, await run(store, await add_thread(store, 241)), Status.COMPLETED)
    # Group 240's receivers already hold 2 of 4 workers (its share): while 241's deliveries
    # wait, the free workers are 241's, though 240's deliveries are older.
    busy = [((240, str(slow[0].id)), 2)]
    claimed = await store.claim_deliveries(now_ms(), LEASE, 2, busy=busy, workers=4, share=0.5)
    assert [d.webhook.id for d in claimed] == [live.id, live.id]
    # Of 6 workers (a share of 3 each), both holding 2: the older delivery, 240's.
    busy.append(((241, str(live.id)), 2))
    [after] = await store.claim_deliveries(now_ms(), LEASE, 1, busy=busy, workers=6, share=0.5)
    assert after.webhook.group_id == 240


async def test_a_delivery_whose_snapshot_cannot_be_read_is_given_up(store: Store) -> None:
    """A row not written by a status change (by hand, or damaged) stops no other delivery."""
    await hook(store, 240)
    for _ in range(2):
        await change(store, await run(store, await add_thread(store)), Status.COMPLETED)
    raw(store, "UPDATE webhook_deliveries SET snapshot = '{\"id\": 1}' "
               "WHERE seq = (SELECT min(seq) FROM webhook_deliveries)")
    [claimed] = await store.claim_deliveries(now_ms(), LEASE, 10)
    statuses = sorted(d.status for d in await store.recent_deliveries(claimed.webhook.id, 10))
    assert statuses == ["failed", "pending"]


def raw(store: Store, sql: str) -> None:
    """Run `sql` on the store's database behind its back."""
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(sql)
        return
    import psycopg

    assert isinstance(store, PostgresStore)
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        conn.execute(sql.encode())
