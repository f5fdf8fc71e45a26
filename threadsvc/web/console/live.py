"""A list page that stays live: one Server-Sent Events stream per list page, carrying the new
state of the threads on it as the runner publishes them (threadsvc/changes.py), so that rows
update in place with no reload and no request per row.

Threat model: the stream is a GET, authenticated as every page is (the session cookie; a
cross-site page can open it but cannot read it). It gives what the list itself gives, by the
list's own right (`Service.may_watch_list`: contributors of the group, administrators at
server level), asked when it opens and again at every recheck instant: a user removed or
demoted has the stream end within `auth-cache-seconds`. The ids come from the query and are
only the threads to follow: a thread of another group named there is never sent, as the
state of each change is checked against the list's group before it goes out. At most
MAX_IDS ids (a page); each stream counts against the user's stream quota, as the services'.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import BadParameter, ThreadsvcError
from threadsvc.models import Group, Principal, Thread, iso
from threadsvc.state import AppState
from threadsvc.web.console.pages import page, viewer, when
from threadsvc.web.waiting import KEEPALIVE, STATUS_INTERVAL, EventStreamResponse

MAX_IDS = 100  # the largest page
_SHOWN = re.compile(r"([0-9a-f]{32}):([0-9]{1,15})")


def row_state(thread: Thread) -> dict[str, Any]:
    """What a list row shows of a thread, as the `row` event's JSON."""
    total, current = thread.progress_total, thread.progress_current
    return {
        "id": thread.id,
        "status": thread.status.value,
        "final": thread.final,
        "message": thread.message or "",
        "current": current,
        "total": total,
        "percent": 100 * (current or 0) // total if total else None,
        "warnings": thread.warnings,
        "errors": thread.errors,
        "ended": iso(thread.ended) if thread.ended is not None else None,
        "ended_text": when(thread.ended),
    }


@page
async def list_events(request: Request) -> Response:
    """GET {list}/live?t=ID:VERSION…: `row` events for the threads named, until each has
    ended; first those already newer than the version the page showed."""
    state, who = await viewer(request)
    ref = request.path_params.get("group")
    group = await state.service.may_watch_list(who, ref)
    shown: dict[str, int] = {}
    for item in request.query_params.getlist("t")[: MAX_IDS + 1]:
        found = _SHOWN.fullmatch(item)
        if found is None or len(shown) >= MAX_IDS:
            raise BadParameter("t", f"must be at most {MAX_IDS} thread ids, each ID:VERSION")
        shown[found.group(1)] = int(found.group(2))
    stream = _stream(state, who, ref, group, shown)
    state.streams.acquire(who.username)  # 429 beyond the user's quota; given back at the end
    return EventStreamResponse(stream, state.streams, who.username)


async def _stream(
    state: AppState, who: Principal, ref: str | None, group: Group | None, shown: dict[str, int],
) -> AsyncIterator[str]:
    rechecks, changes = state.rechecks, state.changes
    tick = rechecks.tick()
    open_ids = set(shown)
    with changes.watch_many(shown) as watcher:
        yield "retry: 5000\n\n"
        # What changed between the page and this stream: read once, after watching began.
        states = await state.service.current_states(group, list(shown))
        open_ids &= {thread.id for thread in states}  # none of another list, none gone
        for thread in states:
            if thread.version > shown[thread.id]:
                watcher.latest.setdefault(thread.id, thread)
            elif thread.final:
                open_ids.discard(thread.id)
        last_sent = time.monotonic()
        while open_ids and not changes.closing:
            if rechecks.tick() != tick:  # the list's right, asked again
                tick = rechecks.tick()
                current = await _recheck(state, who, ref)
                if current is None:
                    return
                who = current
            for thread in watcher.take():
                if thread.id not in open_ids or not state.service.may_see_in_list(group, thread):
                    continue
                if thread.final:
                    open_ids.discard(thread.id)
                last_sent = time.monotonic()
                yield f"event: row\ndata: {json.dumps(row_state(thread))}\n\n"
            if not open_ids:
                break
            quiet = max(0.0, last_sent + KEEPALIVE - time.monotonic())
            arrived = await watcher.wait(min(quiet, rechecks.until_next()))
            if arrived:
                await _coalesce()
            elif time.monotonic() >= last_sent + KEEPALIVE:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
        if not open_ids:  # every thread has ended: the page stops following (no reconnect)
            yield "event: done\ndata: {}\n\n"


async def _recheck(state: AppState, who: Principal, ref: str | None) -> Principal | None:
    """`who` as the store has them now, if they may still follow the list; else None."""
    current = await state.rechecks.principal(who)
    if current is None or current == who:
        return current
    try:
        await state.service.may_watch_list(current, ref)
    except ThreadsvcError:
        return None
    return current


async def _coalesce() -> None:
    """A short pause after a wake, so that a burst of changes goes out as one set of rows."""
    await asyncio.sleep(STATUS_INTERVAL)
