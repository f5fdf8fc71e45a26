"""Jobs only the hostile-input tests need, registered through the `jobs` setting: one keeps a
result whose file name and media type are whatever the caller gave (a careless job author's
job), so that the tests can see what reaches the download's headers; one declares text
parameters with patterns."""

from __future__ import annotations

from threadsvc import Context, Role, Scope, job
from threadsvc.runner.params import Text


@job("named-result", scope=Scope.GROUP, role=Role.CONTRIBUTOR,
     params={"name": Text(max_length=500, required=True),
             "media": Text(max_length=500, default="text/plain")})
async def named_result(ctx: Context) -> None:
    """Complete with a small text result named `name`, of media type `media`."""
    await ctx.set_result("the result", ctx.params["media"], ctx.params["name"])


@job("patterned", scope=Scope.GROUP, role=Role.CONTRIBUTOR,
     params={"digits": Text(pattern=r"^\d+$"), "word": Text(pattern=r"(?i)^[a-z]\w*$")})
async def patterned(ctx: Context) -> None:
    """Complete at once: its parameters' patterns are what is tested."""
    await ctx.message(f"digits={ctx.params['digits']} word={ctx.params['word']}")
