"""Jobs for the tests of @job's execution controls (timeout, retry, concurrency) and of how a
cancel lands; registered in test servers through the `jobs` setting.

Jobs that take a `dir` mark themselves present in it while their code runs (`present`): each
writes down how many it saw present at once, so a test can check a bound across processes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from threadsvc import Context, Retry, Scope, job
from threadsvc.runner.params import Integer, Number, Text

_attempts: dict[str, int] = {}  # thread id -> attempts so far, in this process


@contextlib.contextmanager
def present(directory: str, name: str) -> Iterator[None]:
    """Mark `name` present in `directory` and write down how many are: were more running at
    once than allowed, the last of them to arrive sees them all."""
    here = Path(directory) / f"{name}.present"
    here.touch()
    try:
        count = len(list(Path(directory).glob("*.present")))
        (Path(directory) / f"{name}.seen").write_text(str(count))
        yield
    finally:
        here.unlink()


@job("flaky", scope=Scope.GROUP, retry=Retry(attempts=3, backoff=0.5, on=(ConnectionError,)),
     params={"fail": Integer(minimum=0, maximum=10, default=2)})
async def flaky(ctx: Context) -> None:
    """Raise ConnectionError on the first `fail` attempts; then complete."""
    attempt = _attempts[ctx.thread_id] = _attempts.get(ctx.thread_id, 0) + 1
    await ctx.progress(attempt, 3)
    if attempt <= ctx.params["fail"]:
        raise ConnectionError(f"refused on attempt {attempt}")
    await ctx.message(f"done on attempt {attempt}")


@job("deadline", scope=Scope.GROUP, timeout=1.0)
async def deadline(ctx: Context) -> None:
    """Never ends by itself: its timeout (1 s) stops it."""
    await ctx.progress(0, 1)
    await asyncio.sleep(3600)


@job("capped", scope=Scope.GROUP, concurrency=2,
     params={"dir": Text(max_length=1000, required=True),
             "seconds": Number(minimum=0, maximum=60, default=0.5)})
async def capped(ctx: Context) -> None:
    """At most 2 run at once, on all nodes: present in `dir` for `seconds`."""
    with present(ctx.params["dir"], ctx.thread_id):
        await ctx.progress(0, 1)
        await asyncio.sleep(ctx.params["seconds"])


@job("spinner", scope=Scope.GROUP, params={"times": Integer(minimum=1, default=2_000_000)})
async def spinner(ctx: Context) -> None:
    """Report progress `times` times, awaiting nothing else."""
    times: int = ctx.params["times"]
    for i in range(times):
        await ctx.progress(i, times)


@job("deaf", scope=Scope.GROUP,
     params={"dir": Text(max_length=1000, required=True),
             "seconds": Number(minimum=0, maximum=60, default=2)})
async def deaf(ctx: Context) -> None:
    """Blocking code that never checks for a cancel: present in `dir` while it runs."""
    await ctx.progress(0, 1)

    def work() -> None:
        with present(ctx.params["dir"], ctx.thread_id):
            time.sleep(ctx.params["seconds"])

    await ctx.run_sync(work)
