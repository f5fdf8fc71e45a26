"""The administrators' controls as the store keeps them (store/controls.py), on every store:
paused jobs, which every claim passes over, and the nodes' rows, beats and orders."""

from __future__ import annotations

import dataclasses

import pytest

from tests.store.test_contract import add
from threadsvc.models import Actor, AuditFilter, Status, now_ms
from threadsvc.store.base import Store

pytestmark = pytest.mark.anyio
ADMIN = Actor("root-admin", "192.0.2.7")


async def test_a_paused_job_waits_on_every_node_and_hides_nothing_behind_it(store: Store) -> None:
    base = now_ms()
    paused = [await add(store, base + i, job="paused") for i in range(3)]
    other = await add(store, base + 10, job="sleep")
    assert await store.pause_job("paused", base, by=ADMIN)
    assert not await store.pause_job("paused", base + 1, by=ADMIN)  # already: no change
    assert [(p.job, p.actor) for p in await store.paused_jobs()] == [("paused", "root-admin")]
    # Both claim forms (with and without concurrency limits) pass over it, on any node.
    assert [t.id for t in await store.claim_threads("node-a", 4, base + 20)] == [other.id]
    more = await add(store, base + 30, job="sleep")
    claimed = await store.claim_threads("node-b", 4, base + 31, concurrency={"sleep": 5})
    assert [t.id for t in claimed] == [more.id]
    assert await store.claim_threads("node-c", 4, base + 32) == []
    assert await store.resume_job("paused", by=ADMIN)
    assert not await store.resume_job("paused", by=ADMIN)
    assert await store.paused_jobs() == []
    resumed = await store.claim_threads("node-a", 4, base + 40)
    assert [t.id for t in resumed] == [t.id for t in paused]
    entries = (await store.audit_entries(AuditFilter())).entries
    assert [(e.action, e.target, e.actor) for e in entries] == [
        ("job.pause", "paused", "root-admin"), ("job.resume", "paused", "root-admin"),
    ]


async def test_a_pause_lets_running_threads_of_the_job_go_on(store: Store) -> None:
    base = now_ms()
    first = await add(store, base, job="paused")
    [running] = await store.claim_threads("node-a", 1, base + 1)
    assert running.id == first.id
    await store.pause_job("paused", base + 2)
    done = dataclasses.replace(running, status=Status.COMPLETED, ended=base + 3, version=9)
    assert await store.write_batch("node-a", [done], [done], [], base + 3) == set()
    stored = await store.get_thread(first.id)
    assert stored is not None and stored.status is Status.COMPLETED


async def test_a_node_beats_and_reads_back_what_it_is_asked(store: Store) -> None:
    base = now_ms()
    await store.node_started("node-a", base, 8)
    assert await store.set_node_max_running("node-b", 3, by=ADMIN) is None  # never beat
    orders = await store.node_beat("node-a", base + 1, running=2, capacity=8, drained=False)
    assert (orders.max_running, orders.draining) == (None, False)
    row = await store.set_node_max_running("node-a", 3, by=ADMIN)
    assert row is not None and row.max_running == 3 and row.capacity == 8
    orders = await store.node_beat("node-a", base + 2, running=2, capacity=3, drained=False)
    assert orders.max_running == 3
    drained = await store.set_node_draining("node-a", True, by=ADMIN)
    assert drained is not None and drained.draining and not drained.empty
    orders = await store.node_beat("node-a", base + 3, running=1, capacity=3, drained=True)
    assert orders.draining
    node = await store.get_node("node-a")
    assert node is not None and not node.empty  # one still runs
    await store.node_beat("node-a", base + 4, running=0, capacity=3, drained=True)
    node = await store.get_node("node-a")
    assert node is not None and node.empty and node.seen == base + 4
    undrained = await store.set_node_draining("node-a", False, by=ADMIN)
    assert undrained is not None and not undrained.draining and not undrained.drained
    # A restart takes its settings again: nothing asked of the earlier run holds.
    await store.set_node_draining("node-a", True, by=ADMIN)
    await store.node_started("node-a", base + 5, 8)
    node = await store.get_node("node-a")
    assert node is not None and (node.max_running, node.draining, node.capacity) == (None, False, 8)
    entries = (await store.audit_entries(AuditFilter())).entries
    assert [(e.action, e.detail) for e in entries] == [
        ("node.max-running", "3"), ("node.drain", ""), ("node.undrain", ""), ("node.drain", ""),
    ]


async def test_nodes_are_listed_by_name_from_a_moment_on(store: Store) -> None:
    base = now_ms()
    await store.node_started("old", base - 100_000, 4)
    await store.node_started("b", base, 4)
    await store.node_beat("a", base + 1, running=1, capacity=2, drained=False)  # no start seen
    assert [n.node for n in await store.list_nodes(base - 1)] == ["a", "b"]
    assert [n.node for n in await store.list_nodes(0)] == ["a", "b", "old"]
