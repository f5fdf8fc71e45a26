"""The side tasks of a node (the batch writer, the claim loop, the heartbeat, the cluster's
listener, the purge schedule, the webhook deliveries) run under one supervisor, so that none dies silently.

A side task that raises is logged and started again after a pause that doubles with each death
in a row (FIRST_DELAY up to MAX_DELAY). One that has died FAILING_AFTER times in a row is
reported failing, and /ready answers 503 naming it, until it has run HEALTHY_AFTER seconds
without dying again. A side task that returns has done its work: it is not started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

FIRST_DELAY = 0.1  # seconds before the first restart
MAX_DELAY = 30.0
FAILING_AFTER = 3  # deaths in a row after which the task is reported failing
HEALTHY_AFTER = 60.0  # seconds a restarted task must run for its deaths to be forgotten

SideTask = Callable[[], Awaitable[None]]


class Supervised:
    """One side task: the task running it, and how it has been dying."""

    def __init__(self, name: str, run: SideTask) -> None:
        self.name = name
        self.deaths = 0  # in a row
        self.last_error = ""
        self._run = run
        self._loop = asyncio.get_running_loop()
        self._since = self._loop.time()  # when it was last (re)started
        self._task = asyncio.create_task(self._keep(), name=name)

    @property
    def failing(self) -> bool:
        healthy = self._loop.time() - self._since >= HEALTHY_AFTER
        return self.deaths >= FAILING_AFTER and not healthy and not self._task.done()

    def describe(self) -> str:
        return f"{self.name}: died {self.deaths} times in a row, last with {self.last_error}"

    async def join(self, seconds: float) -> None:
        """Wait up to `seconds` for the task to end by itself (its owner asked it to)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), seconds)

    async def stop(self) -> None:
        """Cancel the task (in its work or its pause) and wait for it to end."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _keep(self) -> None:
        delay = FIRST_DELAY
        while True:
            self._since = self._loop.time()
            try:
                await self._run()
                return
            except Exception as exc:  # cancellation is not an Exception: it ends the task
                if self._loop.time() - self._since >= HEALTHY_AFTER:
                    self.deaths, delay = 0, FIRST_DELAY
                self.deaths += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                log.exception(
                    "side task %s died (%d in a row); starting it again in %.1f s",
                    self.name, self.deaths, delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)


class Supervisor:
    """Starts side tasks and says which of them keep dying (for /ready)."""

    def __init__(self) -> None:
        self._tasks: list[Supervised] = []

    def spawn(self, name: str, run: SideTask) -> Supervised:
        """Run `run()` as the side task `name`; the owner stops it with `.stop()`."""
        supervised = Supervised(name, run)
        self._tasks.append(supervised)
        return supervised

    def failing(self) -> list[str]:
        """What is wrong with each side task that keeps dying; empty when all is well."""
        return [task.describe() for task in self._tasks if task.failing]
