"""The batch writer: every change a node's running threads report goes to the store through here.

Changes wait in memory only until the writer's next transaction, which takes all of them at
once (group commit); so one thread logging fast and thousands of threads reporting progress
both cost few transactions. `flush()` returns once everything put before it is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from threadsvc.errors import StoreUnavailable
from threadsvc.models import NewLogEvent, Thread, now_ms
from threadsvc.retry import Backoff
from threadsvc.store.base import Store

log = logging.getLogger(__name__)

HIGH_WATER = 10_000  # pending log events beyond which reporting jobs wait for the writer


class BatchWriter:
    def __init__(
        self,
        store: Store,
        node: str,
        on_written: Callable[[list[Thread], list[NewLogEvent]], None] | None = None,
        on_lost: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._store = store
        self._node = node
        self._threads: dict[str, Thread] = {}  # the latest state of each thread
        self._changes: list[Thread] = []  # every status change, for webhooks
        self._events: list[NewLogEvent] = []
        self._put = 0  # how many puts were made
        self._written = 0  # how many of them are stored
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()
        self._on_written = on_written
        self._on_lost = on_lost

    def put(
        self, thread: Thread | None, event: NewLogEvent | None, status_changed: bool = False
    ) -> None:
        if thread is not None:
            self._threads[thread.id] = thread
            if status_changed:
                self._changes.append(thread)
        if event is not None:
            self._events.append(event)
        self._put += 1
        self._wake.set()

    @property
    def congested(self) -> bool:
        return len(self._events) >= HIGH_WATER

    async def flush(self) -> None:
        target = self._put
        async with self._done:
            await self._done.wait_for(lambda: self._written >= target)

    async def run(self) -> None:
        """Write batches until cancelled; a store failure keeps the batch and retries."""
        backoff = Backoff()
        while True:
            await self._wake.wait()
            self._wake.clear()
            threads, changes, events = list(self._threads.values()), self._changes, self._events
            upto = self._put
            self._threads, self._changes, self._events = {}, [], []
            while True:
                try:
                    lost = await self._store.write_batch(
                        self._node, threads, changes, events, now_ms()
                    )
                    backoff.reset()
                    break
                except StoreUnavailable as exc:
                    log.warning("store unavailable, retrying in %.2fs: %s", backoff.delay, exc)
                    await backoff.wait()
                except Exception:
                    # A batch the store refuses for good (a bug, not an outage): say so loudly
                    # rather than retry forever and stall every thread of the node.
                    log.exception("dropped a batch: %d states, %d events", len(threads), len(events))
                    lost = set()
                    break
            async with self._done:
                self._written = upto
                self._done.notify_all()
            if lost and self._on_lost:
                self._on_lost(lost)
            if self._on_written and (threads or events):
                self._on_written([t for t in threads if t.id not in lost], events)
