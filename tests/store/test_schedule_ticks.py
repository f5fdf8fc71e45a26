"""The ticks of the schedules (store/schedules.py), on every store: one claim per tick, a claim
taken over only when stale and unrecorded, a record only by the holder, the latest kept."""

from __future__ import annotations

import pytest

from threadsvc.store.base import Store

pytestmark = pytest.mark.anyio


async def test_a_tick_is_claimed_once(store: Store) -> None:
    assert await store.claim_tick("nightly", 1000, "n1", 5) is True
    assert await store.claim_tick("nightly", 1000, "n2", 6) is False
    assert await store.claim_tick("nightly", 1000, "n1", 7) is False  # nor again by its claimer
    assert await store.claim_tick("nightly", 2000, "n2", 8) is True  # the next tick is new
    assert await store.claim_tick("hourly", 1000, "n2", 9) is True  # and so is another schedule


async def test_only_a_stale_unrecorded_claim_is_taken_over(store: Store) -> None:
    await store.claim_tick("s", 1000, "dead", now=100)
    await store.claim_tick("s", 2000, "alive", now=900)
    await store.claim_tick("s", 3000, "done", now=100)
    assert await store.record_tick("s", 3000, "done", thread_id="t3", outcome=None,
                                   forget_before=0)
    # claimed before 500 and never recorded: only the dead node's
    assert await store.stale_ticks(stale=500, since=0) == [("s", 1000)]
    assert await store.stale_ticks(stale=500, since=1001) == []  # too old to start now
    assert await store.retake_tick("s", 2000, "n2", now=1000, stale=500) is False
    assert await store.retake_tick("s", 3000, "n2", now=1000, stale=500) is False
    assert await store.retake_tick("s", 1000, "n2", now=1000, stale=500) is True
    assert await store.retake_tick("s", 1000, "n3", now=1000, stale=500) is False  # n2 has it
    # the dead node, back, can no longer record the tick it lost
    assert await store.record_tick("s", 1000, "dead", thread_id="x", outcome=None,
                                   forget_before=0) is False
    assert await store.record_tick("s", 1000, "n2", thread_id="t1", outcome=None,
                                   forget_before=0) is True
    assert await store.stale_ticks(stale=10_000, since=0) == [("s", 2000)]


async def test_the_last_ticks_and_forgetting_the_old_ones(store: Store) -> None:
    assert await store.last_ticks() == {}
    for tick in (1000, 2000, 3000):
        await store.claim_tick("s", tick, "n1", tick)
    await store.claim_tick("other", 500, "n1", 500)
    await store.record_tick("other", 500, "n1", thread_id=None, outcome="refused: limit",
                            forget_before=0)
    last = await store.last_ticks()
    assert sorted(last) == ["other", "s"]
    assert (last["s"].tick, last["s"].node, last["s"].thread_id) == (3000, "n1", None)
    assert (last["other"].thread_id, last["other"].outcome) == (None, "refused: limit")
    # forgetting before 2500 leaves 3000; forgetting everything still keeps each latest
    await store.record_tick("s", 3000, "n1", thread_id="t", outcome=None, forget_before=2500)
    assert await store.stale_ticks(stale=10_000, since=0) == []
    await store.record_tick("other", 500, "n1", thread_id=None, outcome="x",
                            forget_before=10**12)
    assert (await store.last_ticks())["other"].tick == 500
    assert await store.claim_tick("s", 1000, "n2", 4000) is True  # forgotten: claimable again
