"""The runner in-process, on a real SQLite file: limits, order, cancel, blocking work, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from threadsvc.changes import Changes
from threadsvc.files.local import LocalFiles
from threadsvc.files.scratch import Scratch
from threadsvc.models import (
    Level,
    LogEvent,
    Principal,
    Role,
    Scope,
    Status,
    Thread,
    ThreadFilter,
    User,
)
from threadsvc.results import ResultFiles, ResultLinks
from threadsvc.runner.clock import ClockCheck
from threadsvc.runner.context import Context
from threadsvc.runner.registry import JobSpec, Registry, job
from threadsvc.runner.runner import Runner, node_id
from threadsvc.runner.supervisor import Supervisor
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.store.sqlite import SQLiteStore
from threadsvc.uploads import Uploads

pytestmark = pytest.mark.anyio
ADMIN = Principal(User(1, "root", True))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def running(
    path: Path, jobs: list[JobSpec], **settings: Any
) -> AsyncIterator[tuple[Service, Runner, SQLiteStore]]:
    store = SQLiteStore(path / "r.db")
    await store.open()
    config = Settings(**{"shutdown_grace": 0.2, "lease_timeout": 3,
                         "data_dir": str(path / "data"), **settings})
    registry = Registry(jobs)
    changes = Changes()
    storage = LocalFiles(config.data_dir)
    await storage.open()
    scratch = Scratch(config.data_dir)
    scratch.open()
    files = ResultFiles(storage, scratch)
    uploads = Uploads(storage, scratch, config.max_upload_file)
    runner = Runner(
        store, registry, config, node=node_id(config), changes=changes, files=files,
        uploads=uploads, supervisor=Supervisor(), clock=ClockCheck(store),
    )
    service = Service(
        store, registry, runner, config, ResultLinks(("k",), 300), files=files, uploads=uploads,
        changes=changes,
    )
    await runner.start()
    try:
        yield service, runner, store
    finally:
        await runner.stop()
        scratch.close()
        await store.close()


async def start(service: Service, job_name: str, fields: list[tuple[str, str]]) -> Thread:
    thread, created = await service.start(ADMIN, None, job_name, fields)
    assert created
    return thread


async def until_final(service: Service, thread: Thread, seconds: float = 10.0) -> Thread:
    deadline = time.monotonic() + seconds
    while True:
        current = await service.get_thread(ADMIN, None, thread.id)
        if current.final:
            return current
        assert time.monotonic() < deadline, f"not final: {current}"
        await asyncio.sleep(0.01)


active = 0
peak = 0
order: list[str] = []


@job("counted", scope=Scope.SERVER)
async def counted(ctx: Context) -> None:
    global active, peak
    order.append(ctx.thread_id)
    active += 1
    peak = max(peak, active)
    await asyncio.sleep(0.05)
    active -= 1


async def test_max_running_and_start_order(tmp_path: Path) -> None:
    order.clear()
    async with running(tmp_path, [counted], max_running=2) as (service, _runner, _):
        threads = [await start(service, "counted", []) for _ in range(7)]
        for thread in threads:
            assert (await until_final(service, thread)).status is Status.COMPLETED
    assert peak == 2
    assert order == [t.id for t in threads]


@job("reporter", scope=Scope.SERVER)
async def reporter(ctx: Context) -> None:
    for i in range(500):
        await ctx.log(f"line {i}", Level.DEBUG)
    await ctx.progress(5, 10)
    await ctx.warning("odd")
    await ctx.progress(6, 10)
    await ctx.message("done")


async def test_every_event_is_stored_before_the_final_status(tmp_path: Path) -> None:
    async with running(tmp_path, [reporter]) as (service, _, store):
        thread = await start(service, "reporter", [])
        final = await until_final(service, thread)
        logs = await store.get_logs(thread.id, 0, 10_000, Level.DEBUG)
    assert final.status is Status.COMPLETED and final.warnings == 1
    assert final.message == "done" and final.progress_current == 6
    assert [e.seq for e in logs.events] == list(range(1, logs.total + 1))
    texts = [e.text for e in logs.events]
    assert texts[2:502] == [f"line {i}" for i in range(500)]
    assert texts[-1] == "Status: completed"
    assert "Status: inprogress" in texts[502:]  # after the warning, the next step


step_seen = threading.Event()


@job("blocking", scope=Scope.SERVER)
async def blocking(ctx: Context) -> None:
    def work() -> None:
        for i in range(1000):
            ctx.check_cancelled()
            ctx.sync.progress(i, 1000)
            step_seen.set()
            time.sleep(0.01)

    await ctx.run_sync(work)


async def test_blocking_work_reports_and_is_cancelled(tmp_path: Path) -> None:
    async with running(tmp_path, [blocking]) as (service, _, _store):
        thread = await start(service, "blocking", [])
        await asyncio.get_running_loop().run_in_executor(None, step_seen.wait, 5)
        cancelled = await service.cancel(ADMIN, None, thread.id)
        assert cancelled is not None and cancelled.status is Status.CANCELLED
        assert cancelled.message == "Cancelled by root"
        assert cancelled.progress_total == 1000


@job("raises", scope=Scope.SERVER)
async def raises(ctx: Context) -> None:
    await ctx.error("first problem")
    raise ValueError("broken <input> & more")


async def test_a_raising_job_fails_with_its_message(tmp_path: Path) -> None:
    async with running(tmp_path, [raises]) as (service, _, store):
        thread = await start(service, "raises", [])
        final = await until_final(service, thread)
        logs = await store.get_logs(thread.id, 0, 100, Level.ERROR)
    # ValueError is a built-in exception: its type is named in the message and the log.
    said = "ValueError: broken <input> & more"
    assert final.status is Status.FAILED and final.message == said
    assert final.errors == 1
    assert [e.text for e in logs.events] == ["first problem", said]


class OwnFailure(Exception):
    """An exception class of the job's own package: its text is the author's message."""


@job("keyerror", scope=Scope.SERVER)
async def keyerror(ctx: Context) -> None:
    _ = {}["min_len"]


@job("own-failure", scope=Scope.SERVER)
async def own_failure(ctx: Context) -> None:
    raise OwnFailure("The input holds no words")


@job("bare", scope=Scope.SERVER)
async def bare(ctx: Context) -> None:
    raise KeyError


@pytest.mark.parametrize(("name", "message"), [
    ("keyerror", "KeyError: 'min_len'"),
    ("own-failure", "The input holds no words"),
    ("bare", "KeyError"),
])
async def test_a_failure_names_the_exception_type_unless_the_job_made_it(
    tmp_path: Path, name: str, message: str
) -> None:
    async with running(tmp_path, [keyerror, own_failure, bare]) as (service, _, store):
        thread = await start(service, name, [])
        final = await until_final(service, thread)
        logs = await store.get_logs(thread.id, 0, 100, Level.INFO)
    assert final.status is Status.FAILED and final.message == message
    assert [e.text for e in logs.events][-2:] == [message, f"Status: failed: {message}"]


@job("stubborn", scope=Scope.SERVER)
async def stubborn(ctx: Context) -> None:
    await asyncio.sleep(3600)


@job("again", scope=Scope.SERVER, retry_safe=True)
async def again(ctx: Context) -> None:
    await asyncio.sleep(3600)


async def test_shutdown_hands_threads_back(tmp_path: Path) -> None:
    async with running(tmp_path, [stubborn, again]) as (service, runner, store):
        plain = await start(service, "stubborn", [])
        safe = await start(service, "again", [])
        while runner.running_count < 2:  # noqa: ASYNC110 (the runner's count has no event)
            await asyncio.sleep(0.01)
    store = SQLiteStore(tmp_path / "r.db")
    await store.open()
    try:
        failed = await store.get_thread(plain.id)
        requeued = await store.get_thread(safe.id)
    finally:
        await store.close()
    assert failed is not None and failed.status is Status.FAILED
    assert failed.message is not None and "Interrupted" in failed.message
    assert requeued is not None and requeued.status is Status.INITIALISED


async def test_start_up_recovers_what_a_crash_left_running(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db")
    await store.open()
    for name in ("stubborn", "again"):
        thread = Thread(
            id=secrets.token_hex(16),
            name=name, username="root", group_id=-1, job=name, params={},
            status=Status.INITIALISED, created=1, version=1,
        )
        await store.insert_thread(thread, LogEvent(1, 1, Level.INFO, "created"))
    await store.claim_threads("crashed-node", 10, 2)
    await store.close()
    async with running(tmp_path, [stubborn, again]) as (_service, runner, store):
        threads = (await store.list_threads(ThreadFilter(statuses=frozenset(Status)))).threads
        by_job = {t.job: t for t in threads}
        assert by_job["stubborn"].status is Status.FAILED
        assert "interrupted" in (by_job["stubborn"].message or "").lower()
        # the retry-safe one was put back and is running again on this node
        deadline = time.monotonic() + 5
        while (await store.get_thread(by_job["again"].id)).node != runner.node:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        logs = await store.get_logs(by_job["stubborn"].id, 0, 100, Level.DEBUG)
        assert logs.events[0].text == "created" and logs.events[-1].level is Level.ERROR


@job("needs-manager", role=Role.MANAGER)
async def needs_manager(ctx: Context) -> None:
    pass


def test_registry_reports_unknown_jobs_and_duplicates() -> None:
    registry = Registry([needs_manager])
    with pytest.raises(Exception, match="no job named"):
        registry.get("nope")
    with pytest.raises(ValueError):
        registry.add(JobSpec("needs-manager", fn=needs_manager.fn))
    loaded = Registry.load(["tests.runner.test_runner"])
    assert loaded.get("needs-manager").role is Role.MANAGER
    assert loaded.get("sleep").scope is Scope.BOTH


@job("overshoots", scope=Scope.SERVER)
async def overshoots(ctx: Context) -> None:
    await ctx.progress(11, 10)


async def test_progress_beyond_total_is_a_job_error(tmp_path: Path) -> None:
    async with running(tmp_path, [overshoots]) as (service, _, _store):
        final = await until_final(service, await start(service, "overshoots", []))
    assert final.status is Status.FAILED and "beyond the total" in (final.message or "")


@job("brief", scope=Scope.SERVER)
async def brief(ctx: Context) -> None:
    await ctx.message("done")


async def test_a_store_outage_at_launch_does_not_stop_claiming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading a claimed thread's log position fails (the store is away) twice: the thread
    still runs once it answers, and threads started after it run too."""
    from threadsvc.errors import StoreUnavailable

    failures = 2
    original = SQLiteStore.last_log_seq

    async def flaky(self: SQLiteStore, thread_id: str) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise StoreUnavailable("SQLite store: disk I/O error (injected)")
        return await original(self, thread_id)

    monkeypatch.setattr(SQLiteStore, "last_log_seq", flaky)
    async with running(tmp_path, [brief]) as (service, _, _store):
        first = await start(service, "brief", [])
        assert (await until_final(service, first)).status is Status.COMPLETED
        assert failures == 0  # the outage was met, and outlived
        later = await start(service, "brief", [])
        assert (await until_final(service, later)).status is Status.COMPLETED
