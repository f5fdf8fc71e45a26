"""threadsvc.testing itself: what a run reports (statuses, log, result, levels, cancel), the
async Harness, and the FakeContext's status rules and worker-thread reports."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from tests.jobs_for_tests import checksum
from threadsvc import Context, Level, Scope, Status, job
from threadsvc.errors import BadParameter
from threadsvc.runner.context import JobCancelled
from threadsvc.testing import FakeContext, Harness, JobRunner, call, run_job


@job("admin-only", scope=Scope.SERVER)
async def admin_only(ctx: Context) -> None:
    await ctx.message(f"server level: {ctx.thread.server_level}")


@job("blocking")
async def blocking(ctx: Context) -> None:
    def work() -> int:
        for step in range(1, 4):
            ctx.check_cancelled()
            ctx.sync.progress(step, 3)
        ctx.sync.warning("halfway odd")
        ctx.sync.log("detail", Level.DEBUG)
        return 3

    await ctx.message(f"{await ctx.run_sync(work)} steps")


def test_a_built_in_job_by_name_with_its_result(job_runner: JobRunner) -> None:
    outcome = job_runner.run("sleep", {"seconds": 0, "steps": 2, "warn": 1, "result": "done"})
    assert outcome.status is Status.COMPLETED
    assert (outcome.result, outcome.media_type, outcome.result_name) == (
        b"done", "text/plain", "result.txt")
    assert outcome.progress == (2, 2) and outcome.warnings == 1
    assert outcome.logs(Level.WARN) == ["Warning at step 1"]
    assert outcome.logs(Level.INFO, only=True)[:2] == [
        "Status: initialised (job sleep, by tester)", "Status: inprogress (node testing)"]
    assert outcome.events[-1].text == "Status: completed"
    assert outcome.thread.name == "Sleep thread for group testing"


def test_a_job_that_raises_or_reports_an_error_fails(job_runner: JobRunner) -> None:
    raised = job_runner.run("sleep", {"seconds": 0, "steps": 3, "fail": 2})
    assert raised.status is Status.FAILED and raised.result is None
    assert raised.message is not None and "Failed at step 2 as asked" in raised.message
    reported = job_runner.run("sleep", {"seconds": 0, "steps": 3, "error": 2})
    assert (reported.status, reported.errors) == (Status.FAILED, 1)
    assert reported.logs(Level.ERROR) == ["Error at step 2"]


def test_a_server_job_runs_at_server_level_and_a_group_job_may_not(tmp_path: Path) -> None:
    outcome = run_job(admin_only)
    assert outcome.thread.server_level and outcome.message == "server level: True"
    with pytest.raises(BadParameter, match="job"):
        JobRunner(tmp_path).run(blocking, server=True)


def test_several_files_and_a_path(job_runner: JobRunner, tmp_path: Path) -> None:
    given = tmp_path / "given.bin"
    given.write_bytes(b"from a path")
    outcome = job_runner.run(
        checksum, {"label": "x"}, {"files": [("a.txt", b"first", "text/plain"), given]})
    assert outcome.status is Status.COMPLETED, outcome.logs()
    digest = hashlib.sha256(b"first").hexdigest()
    assert outcome.logs(Level.INFO, only=True)[2] == f"a.txt 5 {digest}"
    assert outcome.result is not None and b"given.bin 11 " in outcome.result


def test_reports_from_a_worker_thread(job_runner: JobRunner) -> None:
    outcome = job_runner.run(blocking)
    assert outcome.status is Status.COMPLETED
    assert outcome.progress == (3, 3) and outcome.warnings == 1
    assert outcome.logs(Level.DEBUG, only=True) == ["detail"]
    assert outcome.message == "3 steps"


def test_cancel_when_a_state_is_reached(job_runner: JobRunner) -> None:
    outcome = job_runner.run("sleep", {"seconds": 600, "steps": 600},
                             cancel_when=lambda thread: thread.progress_current == 1)
    assert outcome.status is Status.CANCELLED
    assert outcome.message == "Cancelled by tester"
    assert outcome.progress == (1, 600)


@pytest.mark.anyio
async def test_the_harness_runs_threads_side_by_side(tmp_path: Path) -> None:
    async with Harness(tmp_path, max_running=2) as harness:
        first = await harness.start("sleep", {"seconds": 600, "steps": 600})
        second = await harness.start("sleep", {"seconds": 0, "steps": 1})
        await harness.wait(first.id, lambda thread: thread.status is Status.INPROGRESS)
        assert (await harness.outcome(second.id)).status is Status.COMPLETED
        assert harness.runner.running_count == 1
        await harness.cancel(first.id)
        assert (await harness.outcome(first.id)).status is Status.CANCELLED


@pytest.mark.anyio
async def test_the_fake_context_applies_the_status_rules() -> None:
    @job("rules")
    async def rules(ctx: Context) -> None:
        await ctx.warning("careful")
        assert ctx.thread.status is Status.WARNING
        await ctx.progress(1, 2)
        await ctx.error("bad")
        await ctx.message("on")

    ctx = FakeContext.for_job(rules)
    await call(rules, ctx)
    assert ctx.events == [
        (Level.WARN, "careful"), (Level.INFO, "Status: inprogress"), (Level.ERROR, "bad"),
        (Level.INFO, "Status: inprogress"), (Level.INFO, "on"),
    ]
    assert (ctx.thread.status, ctx.thread.warnings, ctx.thread.errors) == (
        Status.INPROGRESS, 1, 1)
    assert ctx.progress_calls == [(1, 2)]
    with pytest.raises(ValueError, match="beyond the total"):
        await ctx.progress(3, 2)  # the real checks
    with pytest.raises(ValueError, match="at most"):
        await ctx.progress(10**30, 10**31)  # beyond what a store keeps: refused, not stuck


@pytest.mark.anyio
async def test_the_fake_context_in_a_worker_thread_and_cancelled() -> None:
    ctx = FakeContext.for_job(blocking)
    await call(blocking, ctx)
    assert ctx.progress_calls == [(1, 3), (2, 3), (3, 3)]
    assert ctx.logs(Level.WARN) == ["halfway odd"]
    cancelled = FakeContext.for_job(blocking)
    cancelled.cancel()
    with pytest.raises(JobCancelled):
        await call(blocking, cancelled)
    assert cancelled.progress_calls == []


@pytest.mark.anyio
async def test_a_fake_context_gives_the_loop_a_turn() -> None:
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ctx = FakeContext()
    task = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    before = turns
    for i in range(5):
        await ctx.progress(i)
    task.cancel()
    assert turns > before


@job("chatty")
async def chatty(ctx: Context) -> None:
    for i in range(2500):
        await ctx.log(f"line {i}", Level.DEBUG)


def test_the_whole_log_whatever_its_length(job_runner: JobRunner) -> None:
    outcome = job_runner.run(chatty)
    assert outcome.logs(Level.DEBUG, only=True) == [f"line {i}" for i in range(2500)]
    assert [event.seq for event in outcome.events] == list(range(1, len(outcome.events) + 1))
