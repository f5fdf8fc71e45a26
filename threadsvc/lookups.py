"""A short-lived cache of store lookups, in which the callers that miss one key while its lookup
is under way wait for that lookup rather than each asking the store.

Why: many clients poll with the same credentials. When a cached entry expires (every
`auth-cache-seconds`), every request in flight misses it at the same moment; on PostgreSQL
64 pollers then sent 64 copies of each lookup through the connection pool, and polls waited
up to a second, every two seconds.

Sharing alone still made every poller wait for the one lookup at each expiry (a burst of slow
polls every two seconds under load), so an entry used in the second half of its time is looked
up again in the background while callers go on with it: what is used steadily never expires.

A value served is never older than `ttl`, as without sharing. `forget` drops an entry and
detaches a lookup under way, whose answer (read before the change that made the caller
forget) then goes only to those already waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedLookups(Generic[K, V]):
    """Values kept for `ttl` seconds (at most `size` of them: past that, the one kept longest
    goes); `ttl` ≤ 0 keeps nothing and shares nothing: every call looks up. A dict, not
    cachetools' TTLCache: it is read several times by every request, and costs a third."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size = size
        self._ttl = ttl
        # value, then (monotonic) when a use looks it up again, and when it expires
        self._kept: dict[K, tuple[V, float, float]] = {}
        self._under_way: dict[K, asyncio.Future[V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._fresh(key, time.monotonic())
        return entry[0] if entry is not None else None

    def put(self, key: K, value: V) -> None:
        if self._ttl <= 0:
            return
        now = time.monotonic()
        self._kept.pop(key, None)  # put again: it goes to the end of the order
        if len(self._kept) >= self._size:
            del self._kept[next(iter(self._kept))]
        self._kept[key] = (value, now + self._ttl / 2, now + self._ttl)

    def forget(self, key: K) -> None:
        self._kept.pop(key, None)
        self._under_way.pop(key, None)

    async def get_or_look_up(self, key: K, look_up: Callable[[], Awaitable[V]]) -> V:
        if self._ttl <= 0:
            return await look_up()
        now = time.monotonic()
        entry = self._fresh(key, now)
        lookup = self._under_way.get(key)
        if entry is not None:
            if lookup is None and entry[1] <= now:
                self._look_up(key, look_up)  # in the background: callers go on with the value
            return entry[0]
        if lookup is None:
            lookup = self._look_up(key, look_up)
        return await asyncio.shield(lookup)

    def _fresh(self, key: K, now: float) -> tuple[V, float, float] | None:
        entry = self._kept.get(key)
        if entry is not None and entry[2] <= now:
            del self._kept[key]
            return None
        return entry

    def _look_up(self, key: K, look_up: Callable[[], Awaitable[V]]) -> asyncio.Future[V]:
        # a task of its own: a caller that is cancelled cancels no one else's lookup
        lookup = asyncio.ensure_future(look_up())
        self._under_way[key] = lookup
        lookup.add_done_callback(lambda done: self._settle(key, done))
        return lookup

    def _settle(self, key: K, done: asyncio.Future[V]) -> None:
        if self._under_way.get(key) is not done:  # forgotten meanwhile: not kept
            if not done.cancelled():
                done.exception()  # seen, even when every caller was cancelled
            return
        del self._under_way[key]
        if not done.cancelled() and done.exception() is None:
            self.put(key, done.result())
