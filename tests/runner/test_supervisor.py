"""Side tasks under the supervisor: a task that raises starts again after a growing pause, one
that keeps dying is named by /ready (503), and one that recovers is forgotten."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from threadsvc.app import create_app
from threadsvc.runner import supervisor
from threadsvc.runner.supervisor import FAILING_AFTER, Supervisor
from threadsvc.settings import Settings
from threadsvc.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "FIRST_DELAY", 0.01)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_a_dying_task_restarts_with_growing_pauses_and_is_reported() -> None:
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def broken() -> None:
        starts.append(loop.time())
        raise RuntimeError("injected fault")

    tasks = Supervisor()
    task = tasks.spawn("broken", broken)
    try:
        await until(lambda: len(starts) > FAILING_AFTER)
        pauses = [later - earlier for earlier, later in itertools.pairwise(starts)]
        planned = [supervisor.FIRST_DELAY * 2**n for n in range(len(pauses))]  # doubling
        assert all(p >= 0.9 * want for p, want in zip(pauses, planned, strict=True)), pauses
        [problem] = tasks.failing()
        assert problem.startswith("broken: died ")
        assert "RuntimeError: injected fault" in problem
    finally:
        await task.stop()
    assert tasks.failing() == []  # stopped: nothing is wrong with it any more


async def test_a_task_that_recovers_is_not_reported() -> None:
    deaths = 0
    running = asyncio.Event()

    async def flaky() -> None:
        nonlocal deaths
        if deaths < FAILING_AFTER - 1:
            deaths += 1
            raise RuntimeError("not yet")
        running.set()
        await asyncio.sleep(3600)

    tasks = Supervisor()
    task = tasks.spawn("flaky", flaky)
    try:
        await asyncio.wait_for(running.wait(), 5.0)
        assert tasks.failing() == []
    finally:
        await task.stop()


async def test_a_task_that_returns_is_not_started_again() -> None:
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    tasks = Supervisor()
    task = tasks.spawn("once", once)
    await asyncio.sleep(0.1)
    assert runs == 1 and tasks.failing() == []
    await task.stop()


async def test_ready_names_a_runner_loop_that_keeps_dying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: the claim loop made to raise (not a store outage, which it rides out)."""

    async def claim_fault(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(SQLiteStore, "claim_threads", claim_fault)
    settings = Settings(
        db=f"sqlite:///{tmp_path / 'ready.db'}", data_dir=str(tmp_path / "data"),
        secret_key=("k" * 32,),
    )
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://threadsvc") as client,
    ):
        for _ in range(500):
            answer = await client.get("/ready")
            if answer.status_code == 503:
                break
            await asyncio.sleep(0.01)
        assert answer.status_code == 503, answer.text
        assert "side task claim: died" in answer.text
        assert "RuntimeError: injected fault" in answer.text
        assert "store unavailable" not in answer.text
        assert (await client.get("/health")).text == "ok\n"
