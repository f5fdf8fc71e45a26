"""The dashboard's figures (store/dashboard.py), on every store: counts by time bucket and
status, the queue, and nearest-rank percentiles of waits and run times."""

from __future__ import annotations

import dataclasses

import pytest

from tests.store.test_contract import add
from threadsvc.models import Status, Thread, now_ms
from threadsvc.store.base import Store
from threadsvc.store.dashboard import Spread

pytestmark = pytest.mark.anyio
MINUTE = 60_000


async def finish(store: Store, thread: Thread, started: int, ended: int, status: Status) -> None:
    """Claim `thread` at `started` and end it at `ended` with `status`."""
    [claimed] = await store.claim_threads("node-a", 1, started)
    assert claimed.id == thread.id
    done = dataclasses.replace(claimed, status=status, ended=ended, version=claimed.version + 1)
    assert await store.write_batch("node-a", [done], [done], [], ended) == set()


async def test_figures_count_by_bucket_status_and_group(store: Store) -> None:
    since = now_ms() - 10 * MINUTE
    # Group 240: 10 threads of "a" created in minute 1, each waiting 100 ms and running
    # 1..10 s; the last 3 fail.
    for i in range(10):
        thread = await add(store, since + MINUTE + i, job="a")
        start = thread.created + 100
        await finish(store, thread, start, start + (i + 1) * 1000,
                     Status.FAILED if i >= 7 else Status.COMPLETED)
    # Group 7: 2 threads of "b" in minute 3, one cancelled while it ran, one still waiting.
    other = await add(store, since + 3 * MINUTE, group=7, job="b")
    await finish(store, other, other.created + 5000, other.created + 6000, Status.CANCELLED)
    await store.pause_job("b", now_ms())
    await add(store, since + 3 * MINUTE + 1, group=7, job="b")
    await add(store, since - MINUTE)  # before the range (added last: never claimed): queued

    figures = await store.dashboard(since, MINUTE, 10, None)
    assert figures.created == [0, 10, 0, 2, 0, 0, 0, 0, 0, 0]
    assert sum(figures.ended[Status.COMPLETED]) == 7 and sum(figures.ended[Status.FAILED]) == 3
    assert figures.ended[Status.CANCELLED][3] == 1
    assert figures.failure_rate == pytest.approx(3 / 11)
    assert (figures.queued, figures.queued_paused) == (2, 1)
    assert figures.oldest_queued == since - MINUTE
    assert figures.run_times["a"] == Spread(10, 5000, 9000, 10000, 10000)
    assert figures.run_times["b"] == Spread(1, 1000, 1000, 1000, 1000)
    assert figures.waits == Spread(11, 100, 100, 5000, 5000)

    mine = await store.dashboard(since, MINUTE, 10, [7])
    assert mine.created == [0, 0, 0, 2, 0, 0, 0, 0, 0, 0]
    assert list(mine.run_times) == ["b"] and mine.queued == 1 and mine.oldest_queued is not None
    assert (await store.dashboard(since, MINUTE, 10, [])).created == [0] * 10


async def test_an_empty_range_has_no_failure_rate(store: Store) -> None:
    figures = await store.dashboard(now_ms(), MINUTE, 60, None)
    assert figures.failure_rate is None and figures.queued == 0 and figures.oldest_queued is None
    assert figures.waits == Spread() and figures.run_times == {}
