"""Waiting between the retries of what fails for a while (a store outage, a lost connection, a
webhook's receiver): delays that double from `first` up to `most`."""

from __future__ import annotations

import asyncio


def doubled(first: float, most: float, times: int) -> float:
    """`first` doubled `times` times, at most `most`."""
    return min(most, first * 2.0 ** min(times, 40))


class Backoff:
    """The delays of a retry loop, which start again from `first` after a success."""

    def __init__(self, first: float = 0.05, most: float = 5.0) -> None:
        self.first = first
        self.most = most
        self.failures = 0  # since the last success

    @property
    def delay(self) -> float:
        """What the next `wait` sleeps."""
        return doubled(self.first, self.most, self.failures)

    async def wait(self) -> None:
        """Sleep the current delay; the next one is twice as long (up to `most`)."""
        await asyncio.sleep(self.delay)
        self.failures += 1

    def reset(self) -> None:
        """After a success: the next failure waits `first` again."""
        self.failures = 0
