"""The administrators' controls as the runner obeys them, in-process on a real SQLite store: a
paused job's threads wait while other jobs run, and run once it is resumed; a node's
max-running changed while it runs; a drain (claims nothing more, then says it is empty)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runner.test_runner import ADMIN, running, start, until_final
from threadsvc import controls
from threadsvc.models import Actor, Scope, Status
from threadsvc.runner import runner as runner_module
from threadsvc.runner.context import Context
from threadsvc.runner.registry import job
from threadsvc.service import Service

pytestmark = pytest.mark.anyio
BY = Actor("cli:test")
gates: list[asyncio.Event] = []  # the test's own (an event belongs to one loop)
active = 0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def quick_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "NODE_SECONDS", 0.05)
    gates[:] = [asyncio.Event()]


def open_gate() -> None:
    gates[0].set()


@job("quick", scope=Scope.SERVER)
async def quick(ctx: Context) -> None:
    pass


@job("held", scope=Scope.SERVER)
async def held(ctx: Context) -> None:
    """Runs until the test opens the gate."""
    global active
    active += 1
    try:
        await gates[0].wait()
    finally:
        active -= 1


async def until(check: Callable[[], object], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "never came true"
        await asyncio.sleep(0.02)


async def status(service: Service, thread_id: str) -> Status:
    return (await service.get_thread(ADMIN, None, thread_id)).status


async def test_a_paused_jobs_thread_waits_while_another_jobs_runs(tmp_path: Path) -> None:
    async with running(tmp_path, [quick, held]) as (service, _runner, _store):
        assert await service.pause_job(ADMIN, "quick")
        waiting = await start(service, "quick", [])
        other = await start(service, "held", [])
        open_gate()
        assert (await until_final(service, other)).status is Status.COMPLETED
        await asyncio.sleep(3 * runner_module.POLL_SECONDS)  # claims came and passed it over
        assert await status(service, waiting.id) is Status.INITIALISED
        assert await service.pause_job(ADMIN, "quick", paused=False)
        assert (await until_final(service, waiting)).status is Status.COMPLETED


async def test_max_running_changes_while_the_node_runs(tmp_path: Path) -> None:
    async with running(tmp_path, [held], max_running=1) as (service, runner, store):
        threads = [await start(service, "held", []) for _ in range(4)]
        await until(lambda: active == 1)
        await until(lambda: runner.max_running == 1)
        await controls.set_max_running(store, runner.node, 3, BY)
        await until(lambda: active == 3)
        assert runner.max_running == 3
        await asyncio.sleep(0.3)  # a few beats: the node's row says what it now claims up to
        node = await store.get_node(runner.node)
        assert node is not None and (node.capacity, node.max_running, node.running) == (3, 3, 3)
        await controls.set_max_running(store, runner.node, "default", BY)
        await until(lambda: runner.max_running == 1)
        open_gate()
        for thread in threads:
            assert (await until_final(service, thread)).status is Status.COMPLETED


async def test_a_drained_node_claims_nothing_more_and_says_when_it_is_empty(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, [held]) as (service, runner, store):
        first = await start(service, "held", [])
        await until(lambda: active == 1)
        await until(lambda: runner._node_started)
        await controls.drain(store, runner.node, BY)
        await until(lambda: runner.draining)
        later = await start(service, "held", [])
        not_yet = await controls.wait_until_empty(store, runner.node, 30, 0.3)
        assert not not_yet.row.empty and not_yet.row.running == 1
        open_gate()
        assert (await until_final(service, first)).status is Status.COMPLETED
        empty = await controls.wait_until_empty(store, runner.node, 30, 10)
        assert empty.row.empty and empty.row.draining
        assert await status(service, later.id) is Status.INITIALISED
        await controls.drain(store, runner.node, BY, draining=False)
        assert (await until_final(service, later)).status is Status.COMPLETED


async def test_bad_names_and_values_are_refused_before_the_store(tmp_path: Path) -> None:
    async with running(tmp_path, [quick]) as (_service, runner, store):
        for bad in ("", "two words", "x" * 201, "tab\there"):
            with pytest.raises(Exception, match="Parameter 'job'"):
                await controls.pause_job(store, bad, BY)
        for value in ("0", "-1", "10001", "1.5", "many"):
            with pytest.raises(Exception, match="Parameter 'max-running'"):
                await controls.set_max_running(store, runner.node, value, BY)
        with pytest.raises(Exception, match="Parameter 'node'"):
            await controls.drain(store, "no-such-node", BY)
        assert await store.paused_jobs() == []
