"""Waiting for a thread to change: ETags and long-polls on progress, and Server-Sent Events.

Waiters subscribe to the change feed (threadsvc.changes) and wake with the new state in hand:
a thousand waiting clients cost no store query per change.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from threadsvc.changes import Changes
from threadsvc.errors import BadParameter, TooManyStreams
from threadsvc.models import Level, Thread
from threadsvc.store.base import Store
from threadsvc.xml import render

MAX_WAIT = 60
STATUS_INTERVAL = 0.25  # at most 4 status events a second
KEEPALIVE = 15.0
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+)", re.IGNORECASE)


class StreamQuota:
    """Open event streams per user, so that one client cannot hold every connection."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[str, int] = {}

    def acquire(self, username: str) -> None:
        if self._open.get(username, 0) >= self.per_user:
            raise TooManyStreams(f"User '{username}' has {self.per_user} open event streams")
        self._open[username] = self._open.get(username, 0) + 1

    def release(self, username: str) -> None:
        self._open[username] -= 1
        if not self._open[username]:
            del self._open[username]


class EventStreamResponse(StreamingResponse):
    """An event stream that gives its user's quota back however it ends (the response is
    always called, even when the client is already gone)."""

    def __init__(self, stream: AsyncIterator[str], quota: StreamQuota, username: str) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(stream, media_type="text/event-stream", headers=headers)
        self._quota, self._username = quota, username

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._quota.release(self._username)


def etag(thread: Thread) -> str:
    # Weak: administrators see a heartbeat that moves without a visible change.
    return f'W/"{thread.version}"'


def matches(request: Request, thread: Thread) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = {tag.strip() for tag in header.split(",")}
    mine = etag(thread)
    return "*" in tags or mine in tags or mine.removeprefix("W/") in tags


def wait_seconds(request: Request) -> int | None:
    # Most polls have no query: skip parsing one (it shows in the cost of every poll).
    raw = request.query_params.get("wait") if request.scope.get("query_string") else None
    name = "wait"
    if raw is None:
        found = _PREFER_WAIT.search(request.headers.get("prefer", ""))
        raw, name = (found.group(1), "Prefer") if found else (None, name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"[0-9]{1,3}", raw) or int(raw) > MAX_WAIT:
        raise BadParameter(name, f"must be a whole number of seconds from 0 to {MAX_WAIT}")
    return int(raw)


async def wait_for_change(
    changes: Changes,
    thread: Thread,
    seconds: int,
    reread: Callable[[], Awaitable[Thread]],
    unchanged: Callable[[Thread], bool],
) -> Thread:
    """The thread once `unchanged(thread)` stops holding, or as it is after `seconds`."""
    with changes.watch(thread.id) as watcher:
        thread = await reread()  # it may have changed before we subscribed
        deadline = time.monotonic() + seconds
        while unchanged(thread) and not thread.final and not changes.closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await watcher.wait(remaining)
            if watcher.thread is not None and watcher.thread.version > thread.version:
                thread = watcher.thread
    return thread


def last_event_id(request: Request) -> tuple[int, int]:
    """(log seq, thread version) from Last-Event-ID `SEQ:VERSION`; (0, 0) when absent or bad."""
    found = re.fullmatch(r"(\d{1,15}):(\d{1,15})", request.headers.get("last-event-id", "").strip())
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


async def event_stream(
    store: Store,
    changes: Changes,
    thread: Thread,
    since: tuple[int, int],
    reread: Callable[[], Awaitable[Thread]],
    render_thread: Callable[[Thread], str],
) -> AsyncIterator[str]:
    """`status` and `log` events until the thread's final status has been sent."""
    seq, version = since
    with changes.watch(thread.id, logs=True) as watcher:
        thread = await reread()
        more = True
        while more:  # the log so far, from the store, then live from the feed
            page = await store.get_logs(thread.id, seq, 1000, Level.DEBUG)
            for event in page.events:
                seq = watcher.seq = event.seq
                yield _sse("log", seq, version, render.to_line(render.event_element(event)))
            more = page.more
        last_status = 0.0
        while True:
            if watcher.overflowed:
                watcher.overflowed = False
                page = await store.get_logs(thread.id, seq, 10_000, Level.DEBUG)
                watcher.events.extend(page.events)
            while watcher.events:
                event = watcher.events.popleft()
                if event.seq > seq:
                    seq = watcher.seq = event.seq
                    yield _sse("log", seq, version, render.to_line(render.event_element(event)))
            if watcher.thread is not None and watcher.thread.version > thread.version:
                thread = watcher.thread
            if thread.version != version:
                pause = last_status + STATUS_INTERVAL - time.monotonic()
                if pause > 0 and not thread.final and not changes.closing:
                    await asyncio.sleep(pause)  # coalesce: send the latest state after the pause
                    continue
                version = thread.version
                last_status = time.monotonic()
                yield _sse("status", seq, version, render_thread(thread))
            if thread.final or changes.closing:  # closing: the server stops; clients resume
                return
            if not await watcher.wait(KEEPALIVE):
                yield ": keep-alive\n\n"


def _sse(kind: str, seq: int, version: int, data: str) -> str:
    return f"id: {seq}:{version}\nevent: {kind}\ndata: {data}\n\n"
