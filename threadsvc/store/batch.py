"""Group commit: the calls that arrive while one batch is being written go together in the next
one, so that N concurrent callers cost one transaction, not N (PostgreSQL's starts)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

I = TypeVar("I")
R = TypeVar("R")


class Batcher(Generic[I, R]):
    """Hands each item to `run` with the others waiting beside it (at most `most` at once), one
    batch at a time; each caller gets its own item's outcome. `run` never raises: it answers
    every item, so one refused item fails no other."""

    def __init__(self, run: Callable[[list[I]], Awaitable[list[R | BaseException]]], most: int):
        self._run = run
        self._most = most
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        # Shielded: a caller that gives up leaves its item in the batch (stored or not, as the
        # others), never a transaction cancelled under the whole batch.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        batch: list[tuple[I, asyncio.Future[R]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._most], self._queue[self._most :]
                outcomes = await self._run([item for item, _ in batch])
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
                batch = []
        finally:
            self._task = None
            for _, future in batch + self._queue:  # cancelled (the loop is closing): no answer
                future.cancel()
            self._queue = []
