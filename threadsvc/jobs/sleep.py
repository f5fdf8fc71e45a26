"""`sleep`: a job for trying things out, able to drive every status (docs/api.md#jobs)."""

from __future__ import annotations

import asyncio

from threadsvc.models import Role, Scope
from threadsvc.runner.context import Context
from threadsvc.runner.params import Integer, Number, Text
from threadsvc.runner.registry import job


@job(
    "sleep",
    scope=Scope.BOTH,
    role=Role.CONTRIBUTOR,
    title="Sleep thread",
    params={
        "seconds": Number(minimum=0, maximum=3600, default=1.0, doc="total seconds"),
        "steps": Integer(minimum=1, maximum=10_000, default=10, doc="progress total"),
        "warn": Integer(minimum=1, maximum=10_000, doc="step that reports a warning"),
        "error": Integer(minimum=1, maximum=10_000, doc="step that reports an error"),
        "fail": Integer(minimum=1, maximum=10_000, doc="step that raises"),
        "result": Text(max_length=1_000_000, doc="complete with this text as a text/plain result"),
    },
)
async def sleep(ctx: Context) -> None:
    """Sleep `seconds` in `steps` steps, reporting progress after each."""
    seconds: float = ctx.params["seconds"]
    steps: int = ctx.params["steps"]
    pause = seconds / steps
    await ctx.progress(0, steps)
    for step in range(1, steps + 1):
        await asyncio.sleep(pause)
        await ctx.progress(step, steps)
        if step == ctx.params["warn"]:
            await ctx.warning(f"Warning at step {step}")
        if step == ctx.params["error"]:
            await ctx.error(f"Error at step {step}")
        if step == ctx.params["fail"]:
            raise RuntimeError(f"Failed at step {step} as asked")
    if ctx.params["result"] is not None:
        await ctx.set_result(ctx.params["result"], "text/plain", "result.txt")
    await ctx.message(f"Slept {seconds:g} seconds in {steps} steps")
