"""Jobs only the fault tests need (the `jobs` setting names this module)."""

from __future__ import annotations

import asyncio

from threadsvc import Context, Role, Scope, job
from threadsvc.runner.params import Number


@job("again", scope=Scope.GROUP, role=Role.CONTRIBUTOR, retry_safe=True,
     params={"seconds": Number(minimum=0, maximum=3600, default=1.0)})
async def again(ctx: Context) -> None:
    """Like `sleep` in one step, but safe to run again from the start after a lost node."""
    await ctx.progress(0, 1)
    await asyncio.sleep(ctx.params["seconds"])
    await ctx.progress(1, 1)
