"""Waiting for a thread to change: ETags and long-polls on progress, and Server-Sent Events.

Waiters subscribe to the change feed (threadsvc.changes) and wake with the new state in hand:
a thousand waiting clients cost no store query per change.

Threat model: a wait outlives the check its request passed. A member removed, a role lowered
or a user removed meanwhile must not go on reading the thread, nor be handed a freshly signed
result link; so each wait checks its caller again (`Caller`) every `auth-cache-seconds` (5 s
when 0) and ends when the right is gone. And one user must not hold every connection: open
streams and long-polls count against one per-user quota (`StreamQuota`).
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from threadsvc.changes import Changes, Watcher
from threadsvc.errors import AuthenticationFailed, BadParameter, ThreadsvcError, TooManyStreams
from threadsvc.identity import Identity
from threadsvc.models import LogEvent, Principal, Thread
from threadsvc.service import Service
from threadsvc.xml import render

MAX_WAIT = 60
STATUS_INTERVAL = 0.25  # at most 4 status events a second
KEEPALIVE = 15.0
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+)", re.IGNORECASE)
P = ParamSpec("P")


class StreamQuota:
    """Open event streams and long-polls per user, so that one client cannot hold every
    connection (`max-streams-per-user`; 429 beyond it)."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: dict[str, int] = {}

    def acquire(self, username: str) -> None:
        if self._open.get(username, 0) >= self.per_user:
            raise TooManyStreams(
                f"User '{username}' has {self.per_user} open event streams and long-polls"
            )
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


class Rechecks:
    """The callers of waits, read again from the store. Every wait checks at the same instants
    (multiples of `interval` on the monotonic clock), so that however many waits one user holds,
    their checks share one read per instant; a change in the store is seen by every wait of
    that user within `interval`."""

    def __init__(self, identity: Identity, interval: float) -> None:
        self.interval = interval
        self._identity = identity
        self._tick = -1
        self._reads: dict[tuple[int, str], asyncio.Future[Principal | None]] = {}

    def tick(self) -> int:
        return int(time.monotonic() // self.interval)

    def until_next(self) -> float:
        return self.interval - time.monotonic() % self.interval

    async def principal(self, who: Principal) -> Principal | None:
        """`who` as the store has them at this instant; None when the user is gone."""
        tick = self.tick()
        if tick != self._tick:
            self._tick, self._reads = tick, {}
        key = (who.user.id, who.username)
        read = self._reads.get(key)
        if read is None:
            read = self._reads[key] = asyncio.ensure_future(self._identity.recheck(who))
            read.add_done_callback(_retrieve)
        # shielded: a waiter whose client left must not cancel the read the others await
        return await asyncio.shield(read)


def _retrieve(read: asyncio.Future[Any]) -> None:
    if not read.cancelled():
        read.exception()  # read, so that a failure every waiter gave up on is not reported


class Caller:
    """Who waits, kept current: at each of `rechecks`' instants the user and roles are read
    again and `access(who)` is asked for the thread, which raises what the same request would
    be answered now (401 user gone, 403 role too low, 404 not theirs)."""

    def __init__(
        self, rechecks: Rechecks, who: Principal, access: Callable[[Principal], Awaitable[Thread]]
    ) -> None:
        self.who = who
        self._rechecks = rechecks
        self._access = access
        self._tick = rechecks.tick()  # the request's own check stands for the current instant

    def until_due(self) -> float:
        return 0.0 if self._rechecks.tick() != self._tick else self._rechecks.until_next()

    async def reread(self) -> Thread:
        return await self._access(self.who)

    async def check_if_due(self) -> Thread | None:
        """The thread as re-read by a check, when one was due and found the caller changed;
        raises when the right is gone."""
        tick = self._rechecks.tick()
        if tick == self._tick:
            return None
        self._tick = tick
        who = await self._rechecks.principal(self.who)
        if who is None:
            raise AuthenticationFailed(f"User '{self.who.username}' no longer exists")
        if who == self.who:  # the same user with the same roles: the same answer, unasked
            return None
        self.who = who
        return await self._access(who)


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
    caller: Caller,
    unchanged: Callable[[Thread], bool],
) -> Thread:
    """The thread once `unchanged(thread)` stops holding, or as it is after `seconds`; raises
    as soon as a check finds the caller's right gone."""
    with changes.watch(thread.id) as watcher:
        thread = await caller.reread()  # it may have changed before we subscribed
        deadline = time.monotonic() + seconds
        while unchanged(thread) and not thread.final and not changes.closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await watcher.wait(min(remaining, caller.until_due()))
            if watcher.thread is not None and watcher.thread.version > thread.version:
                thread = watcher.thread
            checked = await caller.check_if_due()
            if checked is not None and checked.version > thread.version:
                thread = checked
    return thread


def last_event_id(request: Request) -> tuple[int, int]:
    """(log seq, thread version) from Last-Event-ID `SEQ:VERSION`; (0, 0) when absent or bad."""
    found = re.fullmatch(r"(\d{1,15}):(\d{1,15})", request.headers.get("last-event-id", "").strip())
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def _fail_closed(stream: Callable[P, AsyncIterator[str]]) -> Callable[P, AsyncIterator[str]]:
    @functools.wraps(stream)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[str]:
        try:
            async for item in stream(*args, **kwargs):
                yield item
        except ThreadsvcError:  # the right is gone (or the store is, for the check): fail closed
            return

    return guarded


@_fail_closed
async def event_stream(
    service: Service,
    changes: Changes,
    thread: Thread,
    since: tuple[int, int],
    caller: Caller,
    render_thread: Callable[[Principal, Thread], str],
) -> AsyncIterator[str]:
    """`status` events, and `log` events while the caller may read the log, until the thread's
    final status has been sent; or until a check finds the caller's right gone (the stream
    just ends: a client that reconnects is answered what its request deserves)."""
    seq, version = since
    may_read_log = service.may_read_log
    logs = may_read_log(caller.who, thread)
    with changes.watch(thread.id, logs=logs) as watcher:
        thread = await caller.reread()
        more = logs
        while more:  # the log so far, from the store, then live from the feed
            page = await service.read_log(caller.who, thread, seq, 1000)
            for event in page.events:
                seq = watcher.seq = event.seq
                yield _sse("log", seq, version, render.to_line(render.event_element(event)))
            if (checked := await caller.check_if_due()) is not None:
                logs = logs and may_read_log(caller.who, checked)  # for the live part too
            more = page.more and logs
        last_status = 0.0
        last_sent = time.monotonic()
        while True:
            checked = await caller.check_if_due()  # before anything more is sent
            if checked is not None:
                logs = logs and may_read_log(caller.who, checked)
                if checked.version > thread.version:
                    thread = checked
            if watcher.take_overflow() and logs:
                page = await service.read_log(caller.who, thread, seq, 10_000)
                watcher.events.extend(page.events)
            for event in _arrived(watcher, seq, logs):
                seq = event.seq
                last_sent = time.monotonic()
                yield _sse("log", seq, version, render.to_line(render.event_element(event)))
            if watcher.thread is not None and watcher.thread.version > thread.version:
                thread = watcher.thread
            if thread.version != version:
                pause = last_status + STATUS_INTERVAL - time.monotonic()
                if pause > 0 and not thread.final and not changes.closing:
                    await asyncio.sleep(pause)  # coalesce: send the latest state after the pause
                    continue
                version = thread.version
                last_status = last_sent = time.monotonic()
                yield _sse("status", seq, version, render_thread(caller.who, thread))
            if thread.final or changes.closing:  # closing: the server stops; clients resume
                return
            quiet = last_sent + KEEPALIVE - time.monotonic()
            arrived = await watcher.wait(min(quiet, caller.until_due()))
            if not arrived and time.monotonic() >= last_sent + KEEPALIVE:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"


def _arrived(watcher: Watcher, seq: int, logs: bool) -> list[LogEvent]:
    """The log events the watcher has received after `seq`, to send when the caller may read
    the log; else none (they are dropped, and not asked for again)."""
    arrived = []
    while watcher.events:
        event = watcher.events.popleft()
        if event.seq > seq:  # not a repeat (a re-read after an overflow may repeat some)
            seq = watcher.seq = event.seq
            if logs:
                arrived.append(event)
    return arrived


def _sse(kind: str, seq: int, version: int, data: str) -> str:
    return f"id: {seq}:{version}\nevent: {kind}\ndata: {data}\n\n"
