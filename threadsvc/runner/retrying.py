"""A job's further attempts (`@job(retry=Retry(...))`): what qualifies, how long to wait, and
the loop that runs the attempts inside ONE thread.

Opt-in, as running a job's code again is only safe when the job says so. Only exceptions of the
declared types qualify: a cancel (JobCancelled, CancelledError) or a time-out never does, so a
retry can never outlive a cancel or the job's `timeout` (which covers every attempt and wait).
Each failed attempt is a WARN event of the thread's log, and its message says when the next
starts; the thread stays running and ends `failed` only when the last attempt fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from threadsvc.retry import doubled
from threadsvc.runner.context import Context, JobCancelled, failure_text


@dataclass(frozen=True)
class Retry:
    """Run a job up to `attempts` times in all (the first included) while it raises one of
    `on`; the wait before the second attempt is `backoff` seconds, doubled before each next
    one up to `most`."""

    attempts: int = 3
    backoff: float = 1.0
    on: type[Exception] | tuple[type[Exception], ...] = Exception
    most: float = 300.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError("Retry attempts must be an int")
        if self.attempts < 1:
            raise ValueError("Retry attempts must be at least 1")
        if not 0 <= self.backoff <= self.most:
            raise ValueError("Retry backoff must be between 0 and `most` seconds")
        types = self.on if isinstance(self.on, tuple) else (self.on,)
        if not types or not all(isinstance(t, type) and issubclass(t, Exception) for t in types):
            raise ValueError("Retry on must be Exception subclasses")
        object.__setattr__(self, "on", types)

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt."""
        return doubled(self.backoff, self.most, failures - 1)

    def qualifies(self, exc: BaseException) -> bool:
        return isinstance(exc, self.on) and not isinstance(exc, JobCancelled)


JobCall = Callable[[Context], Coroutine[Any, Any, Any]]


async def attempts(fn: JobCall, ctx: Context, retry: Retry | None) -> object:
    """Run `fn(ctx)`, again after a failure that `retry` lets through, until it returns or the
    last attempt fails (its exception is raised: the thread fails with it)."""
    failed = 0
    while True:
        try:
            return await fn(ctx)
        except Exception as exc:
            if retry is None or failed + 1 >= retry.attempts or not retry.qualifies(exc):
                raise
            if ctx.cancelled:  # stopping (a job that turned the cancel into another error)
                raise
            failed += 1
            delay = retry.delay(failed)
            reason = failure_text(exc, fn.__module__)
            await ctx._attempt_failed(failed, retry.attempts, reason, delay)
            await asyncio.sleep(delay)
            await ctx.message(f"Attempt {failed + 1} of {retry.attempts}")
