"""@job's controls in-process (the real-server cases are tests/test_job_controls.py): what
`Retry`, `timeout` and `concurrency` accept, which failures a retry lets through, and a timeout
of blocking code that never checks (the thread waits for it, saying it is being stopped)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tests.runner.test_runner import ADMIN, running, start, until_final
from threadsvc import Retry
from threadsvc.models import Level, Scope, Status
from threadsvc.runner.context import Context, JobCancelled
from threadsvc.runner.registry import Registry, job

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_retry_accepts_a_type_or_types_and_refuses_nonsense() -> None:
    assert Retry(on=ValueError).on == (ValueError,)
    assert Retry(attempts=2, backoff=0.1).delay(1) == 0.1
    assert Retry(backoff=1.0, most=3.0).delay(5) == 3.0  # doubled, up to `most`
    for bad in ({"attempts": 0}, {"backoff": -1}, {"backoff": 10, "most": 5},
                {"on": KeyboardInterrupt}, {"on": ()}, {"on": "ValueError"}):
        with pytest.raises(ValueError):
            Retry(**bad)
    with pytest.raises(TypeError):
        Retry(attempts=2.5)  # type: ignore[arg-type]
    assert not Retry().qualifies(JobCancelled("cancelled"))  # a cancel is never retried


def test_timeout_and_concurrency_must_be_positive() -> None:
    async def fn(ctx: Context) -> None: ...

    for bad in ({"timeout": 0}, {"timeout": -1.0}, {"concurrency": 0}, {"concurrency": 1.5},
                {"concurrency": True}):
        with pytest.raises(ValueError):
            job("bad", **bad)(fn)
    specs = [job("a", concurrency=3)(fn), job("b")(fn), job("c", timeout=0.5)(fn)]
    assert Registry(specs).concurrency_limits() == {"a": 3}


tries: dict[str, int] = {}


@job("picky", scope=Scope.SERVER, retry=Retry(attempts=5, backoff=0, on=(ConnectionError,)))
async def picky(ctx: Context) -> None:
    tries[ctx.thread_id] = tries.get(ctx.thread_id, 0) + 1
    raise ValueError("not a connection problem")


async def test_an_exception_that_does_not_qualify_fails_at_once(tmp_path: Path) -> None:
    async with running(tmp_path, [picky]) as (service, _, store):
        thread = await start(service, "picky", [])
        final = await until_final(service, thread)
        warned = await store.get_logs(thread.id, 0, 100, Level.WARN)
    assert final.status is Status.FAILED and final.message == "ValueError: not a connection problem"
    assert tries[thread.id] == 1
    assert [e.text for e in warned.events] == ["ValueError: not a connection problem"]  # its ERROR only


release = threading.Event()
entered = threading.Event()


@job("slow-deaf", scope=Scope.SERVER, timeout=0.2)
async def slow_deaf(ctx: Context) -> None:
    def work() -> None:
        entered.set()
        release.wait(10)  # never checks for a cancel

    await ctx.run_sync(work)


async def test_a_timeout_waits_for_blocking_code_and_says_so(tmp_path: Path) -> None:
    async with running(tmp_path, [slow_deaf], max_running=1) as (service, runner, _):
        thread = await start(service, "slow-deaf", [])
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)
        for _ in range(200):
            current = await service.get_thread(ADMIN, None, thread.id)
            if current.message:
                break
            await asyncio.sleep(0.02)
        assert current.status is Status.INPROGRESS
        assert current.message == "Timed out after 0.2 s; stopping"
        assert runner.running_count == 1  # its slot is still taken
        release.set()
        final = await until_final(service, thread)
    assert final.status is Status.FAILED and final.message == "Timed out after 0.2 s"


held = threading.Event()
holding = threading.Event()


@job("deaf-at-shutdown", scope=Scope.SERVER)
async def deaf_at_shutdown(ctx: Context) -> None:
    def work() -> None:
        holding.set()
        held.wait(30)

    await ctx.run_sync(work)


async def test_a_shutdown_hands_back_blocking_code_without_waiting_for_it(tmp_path: Path) -> None:
    async with running(tmp_path, [deaf_at_shutdown]) as (service, runner, store):
        thread = await start(service, "deaf-at-shutdown", [])
        await asyncio.get_running_loop().run_in_executor(None, holding.wait, 5)
        await runner.stop()
        stored = await store.get_thread(thread.id)
        still_blocked = not held.is_set()
        held.set()
    assert still_blocked
    assert stored is not None and stored.status is Status.FAILED
    assert stored.message == "Interrupted: the server shut down while the thread was running"
