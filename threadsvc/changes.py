"""One notification path for thread changes: whoever stores a change publishes it here, and every
long-poll and event stream waiting on that thread wakes with the new state in hand, so waiting
clients cost no store query per change. (With several nodes, one listener per node feeds it.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable, Iterator

from threadsvc.models import LogEvent, Thread
from threadsvc.store.base import NewLogEvent

MAX_BACKLOG = 10_000  # log events a slow watcher may fall behind before it must re-read


class Watcher:
    """What one waiting client has seen arrive for one thread."""

    def __init__(self) -> None:
        self.thread: Thread | None = None  # the latest state published, if any
        self.events: deque[LogEvent] = deque()
        self.overflowed = False
        self._wake = asyncio.Event()

    def _push(self, thread: Thread | None, events: Iterable[LogEvent]) -> None:
        if thread is not None and (self.thread is None or thread.version >= self.thread.version):
            self.thread = thread
        for event in events:
            if len(self.events) >= MAX_BACKLOG:
                self.overflowed = True
                self.events.clear()
            self.events.append(event)
        self._wake.set()

    async def wait(self, timeout: float) -> bool:
        """True when something arrived (now or within `timeout` seconds)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)
        arrived = self._wake.is_set()
        self._wake.clear()
        return arrived


class Changes:
    def __init__(self) -> None:
        self._watchers: dict[str, set[Watcher]] = {}

    def publish(self, threads: Iterable[Thread], events: Iterable[NewLogEvent] = ()) -> None:
        by_thread: dict[str, list[LogEvent]] = {}
        for new in events:
            by_thread.setdefault(new.thread_id, []).append(new.event)
        latest = {thread.id: thread for thread in threads}
        for thread_id in latest.keys() | by_thread.keys():
            for watcher in self._watchers.get(thread_id, ()):
                watcher._push(latest.get(thread_id), by_thread.get(thread_id, ()))

    @contextlib.contextmanager
    def watch(self, thread_id: str) -> Iterator[Watcher]:
        watcher = Watcher()
        self._watchers.setdefault(thread_id, set()).add(watcher)
        try:
            yield watcher
        finally:
            watchers = self._watchers.get(thread_id)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[thread_id]

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._watchers.values())
