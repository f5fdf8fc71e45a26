"""A job only the hostile-input tests need, registered through the `jobs` setting: it keeps a
result whose file name and media type are whatever the caller gave (a careless job author's
job), so that the tests can see what reaches the download's headers."""

from __future__ import annotations

from threadsvc import Context, Role, Scope, job
from threadsvc.runner.params import Text


@job("named-result", scope=Scope.GROUP, role=Role.CONTRIBUTOR,
     params={"name": Text(max_length=500, required=True),
             "media": Text(max_length=500, default="text/plain")})
async def named_result(ctx: Context) -> None:
    """Complete with a small text result named `name`, of media type `media`."""
    await ctx.set_result("the result", ctx.params["media"], ctx.params["name"])
