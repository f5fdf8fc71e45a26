"""Jobs for the benchmarks, registered through the server's `jobs` setting
(`jobs = ["tests.bench.jobs"]`).

- `noop`: returns at once (starting and finishing threads).
- `ticker`: reports progress every second, `seconds` times (many threads at once).
- `hold`: reports progress once, then sleeps `seconds` (a running thread that does not change:
  polling, long-polls and event streams).
- `logger`: logs `events` INFO events as fast as the context takes them (big logs).
"""

from __future__ import annotations

import asyncio

from threadsvc.models import Role, Scope
from threadsvc.runner.context import Context
from threadsvc.runner.params import Integer
from threadsvc.runner.registry import job


@job("noop", scope=Scope.BOTH, role=Role.CONTRIBUTOR, title="No-op thread")
async def noop(ctx: Context) -> None:
    """Nothing at all."""


@job(
    "ticker",
    scope=Scope.BOTH,
    role=Role.CONTRIBUTOR,
    title="Ticker thread",
    params={"seconds": Integer(minimum=1, maximum=86_400, default=60)},
)
async def ticker(ctx: Context) -> None:
    """Report progress every second, `seconds` times: step N is due N seconds after the start
    (a late wake-up does not push the later steps back)."""
    total = ctx.params["seconds"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    for step in range(1, total + 1):
        await asyncio.sleep(max(0.0, start + step - loop.time()))
        await ctx.progress(step, total)


@job(
    "hold",
    scope=Scope.BOTH,
    role=Role.CONTRIBUTOR,
    title="Hold thread",
    params={"seconds": Integer(minimum=1, maximum=86_400, default=3600)},
)
async def hold(ctx: Context) -> None:
    """Report progress once, then sleep `seconds` without a change."""
    await ctx.progress(1, 2)
    await asyncio.sleep(ctx.params["seconds"])


@job(
    "logger",
    scope=Scope.BOTH,
    role=Role.CONTRIBUTOR,
    title="Logger thread",
    params={"events": Integer(minimum=1, maximum=100_000_000, default=1_000_000)},
)
async def logger(ctx: Context) -> None:
    """Log `events` INFO events, each one line of about 60 characters, as fast as possible."""
    total = ctx.params["events"]
    for i in range(1, total + 1):
        await ctx.log(f"event {i:>9} of {total}: the quick brown fox jumps over")
    await ctx.progress(total, total)
