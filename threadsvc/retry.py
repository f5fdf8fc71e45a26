"""Waiting between the retries of what fails for a while (a store outage, a lost connection):
delays that double from `first` up to `most`, and start again from `first` after a success."""

from __future__ import annotations

import asyncio


class Backoff:
    def __init__(self, first: float = 0.05, most: float = 5.0) -> None:
        self.first = first
        self.most = most
        self.delay = first  # what the next `wait` sleeps

    async def wait(self) -> None:
        """Sleep the current delay, then double it (up to `most`)."""
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self.delay = self.first
