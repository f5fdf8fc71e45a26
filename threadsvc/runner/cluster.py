"""Nodes sharing a store hear one another: new threads, cancels and changes are announced
(PostgreSQL NOTIFY) so that another node claims, cancels and wakes its waiting clients at
once. Announcements may be lost; the runner's polling makes up for them, later.

Messages are `KIND NODE PAYLOAD`: `new NODE -`, `cancel NODE ID BY`, `changed NODE ID,ID,...`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from threadsvc.changes import Changes
from threadsvc.errors import ThreadsvcError
from threadsvc.models import Level, NewLogEvent
from threadsvc.store.base import Store

log = logging.getLogger(__name__)

IDS_PER_MESSAGE = 150  # 150 ids of 33 bytes stay well under NOTIFY's 8,000-byte payload


Wake = Callable[[], None]
CancelHeard = Callable[[str, str], Coroutine[Any, Any, bool]]


class Cluster:
    """Telling is open from the start (the change feed is built with `changed` as its
    announcer); hearing is `listen`, given what it feeds: the change feed, the runner's wake-up
    and its cancel."""

    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        self._changed: set[str] = set()
        self._flushing = False
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- telling ----------------------------------------------------------------------------
    def thread_added(self) -> None:
        self._spawn(self._announce(f"new {self.node} -"))

    def cancel_elsewhere(self, thread_id: str, by: str) -> None:
        self._spawn(self._announce(f"cancel {self.node} {thread_id} {by}"))

    def changed(self, ids: set[str]) -> None:
        """Coalesced: changes made while one announcement is on its way go in the next."""
        self._changed |= ids
        if not self._flushing:
            self._flushing = True
            self._spawn(self._flush_changed())

    async def _flush_changed(self) -> None:
        try:
            while self._changed:
                ids, self._changed = sorted(self._changed), set()
                for start in range(0, len(ids), IDS_PER_MESSAGE):
                    chunk = ",".join(ids[start : start + IDS_PER_MESSAGE])
                    await self._announce(f"changed {self.node} {chunk}")
        finally:
            self._flushing = False

    async def _announce(self, message: str) -> None:
        try:
            await self.store.announce(message)
        except ThreadsvcError as exc:
            log.warning("could not announce to other nodes: %s", exc)

    # -- hearing ----------------------------------------------------------------------------
    async def listen(self, changes: Changes, wake: Wake, cancel: CancelHeard) -> None:
        async for message in self.store.announcements():
            kind, node, payload = (message.split(" ", 2) + ["", ""])[:3]
            if node == self.node:
                continue
            if kind == "new":
                wake()
            elif kind == "cancel":
                thread_id, _, by = payload.partition(" ")
                self._spawn(cancel(thread_id, by))
            elif kind == "changed":
                watched = {i for i in payload.split(",") if changes.watched(i)}
                fresh = watched - self._refreshing
                self._refreshing |= fresh
                for thread_id in fresh:
                    self._spawn(self._refresh(changes, thread_id))

    async def _refresh(self, changes: Changes, thread_id: str) -> None:
        """One read of a changed thread (and its new log events) for all its local watchers."""
        try:
            thread = await self.store.get_thread(thread_id)
            since = changes.log_seq(thread_id)
            events: list[NewLogEvent] = []
            if since is not None:
                page = await self.store.get_logs(thread_id, since, 10_000, Level.DEBUG)
                events = [NewLogEvent(thread_id, e) for e in page.events]
            if thread is not None:
                changes.publish([thread], events, here=False)
        except ThreadsvcError as exc:
            log.warning("could not read thread %s changed elsewhere: %s", thread_id, exc)
        finally:
            self._refreshing.discard(thread_id)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
