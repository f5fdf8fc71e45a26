"""One notification path for thread changes: whoever stores a change publishes it here, and every
long-poll and event stream waiting on that thread wakes with the new state in hand, so waiting
clients cost no store query per change. (With several nodes, one listener per node feeds it.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from threadsvc.models import LogEvent, NewLogEvent, Thread

MAX_BACKLOG = 10_000  # log events a slow watcher may fall behind before it must re-read


class Watcher:
    """What one waiting client has seen arrive for one thread."""

    def __init__(self, logs: bool) -> None:
        self.logs = logs  # whether this watcher streams log events
        self.seq = 0  # the last log event it has (for changes heard from other nodes)
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

    def take_overflow(self) -> bool:
        """Whether log events were dropped since the last call (the caller reads them again)."""
        overflowed, self.overflowed = self.overflowed, False
        return overflowed

    async def wait(self, seconds: float) -> bool:
        """True when something arrived (now or within `seconds`)."""
        # asyncio.timeout rather than wait_for: no extra task per wait (thousands wake at once)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        arrived = self._wake.is_set()
        self._wake.clear()
        return arrived


class ListWatcher(Watcher):
    """One waiting client for many threads (a list page): the latest state of each."""

    def __init__(self) -> None:
        super().__init__(logs=False)
        self.latest: dict[str, Thread] = {}

    def _push(self, thread: Thread | None, events: Iterable[LogEvent]) -> None:
        if thread is not None:
            seen = self.latest.get(thread.id)
            if seen is None or thread.version >= seen.version:
                self.latest[thread.id] = thread
            self._wake.set()

    def take(self) -> list[Thread]:
        """The states arrived since the last call."""
        arrived, self.latest = list(self.latest.values()), {}
        return arrived


W = TypeVar("W", bound=Watcher)


class Changes:
    def __init__(self, announce: Callable[[set[str]], None] | None = None) -> None:
        self._watchers: dict[str, set[Watcher]] = {}
        # Given where nodes share the store: called with the ids of every change made here.
        self._announce = announce
        self.closing = False  # the server is stopping: waiting clients are answered now

    def close(self) -> None:
        """Wake every watcher for good: the server stops, and waits no more."""
        self.closing = True
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher._wake.set()

    def publish(
        self, threads: Iterable[Thread], events: Iterable[NewLogEvent] = (), *, here: bool = True
    ) -> None:
        """Wake the watchers of these threads; `here` False for changes heard from other nodes."""
        threads = list(threads)
        events = list(events)
        if here and self._announce is not None and (threads or events):
            self._announce({t.id for t in threads} | {e.thread_id for e in events})
        by_thread: dict[str, list[LogEvent]] = {}
        for new in events:
            by_thread.setdefault(new.thread_id, []).append(new.event)
        latest = {thread.id: thread for thread in threads}
        for thread_id in latest.keys() | by_thread.keys():
            for watcher in self._watchers.get(thread_id, ()):
                watcher._push(latest.get(thread_id), by_thread.get(thread_id, ()))

    def watched(self, thread_id: str) -> bool:
        return thread_id in self._watchers

    def log_seq(self, thread_id: str) -> int | None:
        """The oldest log position a streaming watcher of the thread has, None if none streams."""
        seqs = [w.seq for w in self._watchers.get(thread_id, ()) if w.logs]
        return min(seqs) if seqs else None

    @contextlib.contextmanager
    def watch(self, thread_id: str, logs: bool = False) -> Iterator[Watcher]:
        with self._registered(Watcher(logs), {thread_id}) as watcher:
            yield watcher

    @contextlib.contextmanager
    def watch_many(self, thread_ids: Iterable[str]) -> Iterator[ListWatcher]:
        """One watcher for several threads (their states only, no log events)."""
        with self._registered(ListWatcher(), set(thread_ids)) as watcher:
            yield watcher

    @contextlib.contextmanager
    def _registered(self, watcher: W, thread_ids: set[str]) -> Iterator[W]:
        for thread_id in thread_ids:
            self._watchers.setdefault(thread_id, set()).add(watcher)
        try:
            yield watcher
        finally:
            for thread_id in thread_ids:
                watchers = self._watchers.get(thread_id)
                if watchers is not None:
                    watchers.discard(watcher)
                    if not watchers:
                        del self._watchers[thread_id]

    @property
    def watching(self) -> int:
        return sum(len(w) for w in self._watchers.values())
