"""A job a reviewer may start, registered through the `jobs` setting by the modules that need
one: with it, "may start something here" and "may start this job" are different questions."""

from __future__ import annotations

from threadsvc import Context, Role, Scope, job
from threadsvc.runner.params import Text


@job("note", scope=Scope.GROUP, role=Role.REVIEWER, params={"text": Text(max_length=100)})
async def note(ctx: Context) -> None:
    """Complete at once."""
