"""Jobs declared `process=True`, for the tests and the benchmark of jobs in their own process
(registered in test servers through the `jobs` setting)."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

from threadsvc import Context, Role, Scope, job
from threadsvc.models import Level
from threadsvc.runner.params import File, Integer, Text


@job("proc-report", scope=Scope.GROUP, role=Role.CONTRIBUTOR, process=True,
     params={"steps": Integer(minimum=1, maximum=100, default=3),
             "files": File(multiple=True), "label": Text(max_length=50)})
async def proc_report(ctx: Context) -> None:
    """Report progress, a message, logs and a warning, then a result naming its process and
    the digests of the uploaded files."""
    steps: int = ctx.params["steps"]
    for step in range(1, steps + 1):
        await ctx.progress(step, steps)
        await ctx.log(f"step {step} in process {os.getpid()}", Level.DEBUG)
    await ctx.message(f"label {ctx.params['label']}")
    await ctx.warning("a warning from the child")
    lines = [f"pid {os.getpid()}"]
    for item in ctx.files("files"):
        lines.append(f"{item.name} {item.size} {hashlib.sha256(item.path.read_bytes()).hexdigest()}")
    await ctx.set_result("\n".join(lines), "text/plain", "report.txt")


@job("proc-spin", scope=Scope.GROUP, role=Role.CONTRIBUTOR, process=True,
     params={"seconds": Integer(minimum=1, maximum=3600, default=600),
             "pidfile": Text(max_length=500), "sigterm": Text(pattern="obey|ignore", default="obey")})
async def proc_spin(ctx: Context) -> None:
    """CPU-bound for `seconds` without ever checking for a cancel (nor yielding); writes its
    process id to `pidfile` first; with `sigterm=ignore` only SIGKILL ends it."""
    if ctx.params["pidfile"]:
        Path(ctx.params["pidfile"]).write_text(str(os.getpid()))  # noqa: ASYNC240 (its own process)
    if ctx.params["sigterm"] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    await ctx.progress(0, 1)
    _spin(ctx.params["seconds"])
    await ctx.progress(1, 1)


def _spin(seconds: float) -> int:
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        for i in range(10_000):
            total += i * i
    return total


@job("inproc-spin", scope=Scope.GROUP, role=Role.CONTRIBUTOR,
     params={"seconds": Integer(minimum=1, maximum=3600, default=600)})
async def inproc_spin(ctx: Context) -> None:
    """The same CPU-bound loop as proc-spin, in a worker thread of the server (run_sync)."""
    await ctx.progress(0, 1)

    def work() -> None:
        deadline = time.monotonic() + ctx.params["seconds"]
        while time.monotonic() < deadline:
            ctx.check_cancelled()
            _spin(0.05)

    await ctx.run_sync(work)
    await ctx.progress(1, 1)


@job("proc-die", scope=Scope.GROUP, role=Role.CONTRIBUTOR, process=True,
     params={"how": Text(pattern="segv|exit|raise", default="segv")})
async def proc_die(ctx: Context) -> None:
    """Ends its own process: SIGSEGV, os._exit(7), or raises a KeyError."""
    await ctx.progress(0, 1)
    how = ctx.params["how"]
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "exit":
        os._exit(7)
    raise KeyError("min_len")


@job("proc-flood", scope=Scope.GROUP, role=Role.CONTRIBUTOR, process=True,
     params={"reports": Integer(minimum=1, maximum=10_000_000, default=200_000)})
async def proc_flood(ctx: Context) -> None:
    """Reports progress as fast as it can, `reports` times."""
    total: int = ctx.params["reports"]
    for i in range(1, total + 1):
        await ctx.progress(i, total)
