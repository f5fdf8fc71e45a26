"""Reading a thread's log in the console: the log part of the thread page (its last events,
a page of it, the window around one event, or the events of a level or holding a text), the
jump to a warning or error, and the whole log to download as text or JSON.

Every read goes through `Service.logs` with the signed-in user, as the logs service does: a
user who may not read the log gets no log, no controls and no links to them (the thread page
shows none), and a download or jump asked for directly is refused by the service.

Threat model: the query (`level`, `q`, `since`, `at`, `after`) is the user's own input. Each is
checked by the services' own parsers (web/params.py), and a bad one is said on the page beside
the form, which keeps what was typed; the page then shows the log's last events. The search
text goes to the store as a bound LIKE pattern with its wildcards escaped (store/threads.py),
never into SQL; event texts are escaped by the templates (autoescape) and written as JSON by
json.dumps. The downloads are streamed a page at a time, so a log of millions of events never
sits in memory whole, and each page asks the service again (a right lost meanwhile ends it).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from threadsvc.errors import BadParameter, Forbidden
from threadsvc.models import Level, LogEvent, LogPage, Principal, Thread, iso
from threadsvc.service import Service
from threadsvc.web import params
from threadsvc.web.console.pages import HEADERS, page, see_other, ui_base, viewer
from threadsvc.xml.render import logs_text, xml_safe

WINDOW = 200  # events a view shows
BEFORE = 100  # of them, before the event a link points at
DOWNLOAD_PAGE = 5000  # events read at a time for a download
LEVELS = tuple(level.name.lower() for level in Level)
LABELS = {"level": "Level", "q": "Search", "since": "Page", "at": "Event"}  # the fields' names


@dataclass
class LogLinks:
    """The log part's links; None: not offered here."""

    text: str = ""  # the downloads
    json: str = ""
    first_problem: str = ""
    next_problem: str | None = None
    earlier: str | None = None  # pages of the whole log
    later: str | None = None
    latest: str | None = None
    more: str | None = None  # pages of a level or a search
    start: str | None = None
    clear: str | None = None


@dataclass
class LogView:
    """What the log part of a thread page shows, and its links (None: not offered)."""

    mode: str  # tail (the last events, live), page, around (an event), filtered (level, text)
    events: list[LogEvent]
    total: int
    level: str = "debug"  # the form's values, as typed when one is refused
    q: str = ""
    at: int | None = None
    error: str | None = None
    more: bool = False
    since: int = 0  # where a level's or a search's page starts
    links: LogLinks = field(default_factory=LogLinks)

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def parts(self, text: str) -> list[tuple[str, bool]]:
        """The text in pieces, each with whether it is the searched text (to be marked): A-Z
        in either case, as the store matches."""
        if not self.q:
            return [(text, False)]
        pieces = re.split(f"({re.escape(self.q)})", text, flags=re.IGNORECASE | re.ASCII)
        return [(piece, n % 2 == 1) for n, piece in enumerate(pieces) if piece]

    @property
    def live(self) -> bool:
        """Live events are added to the tail only: any other view is a fixed page."""
        return self.mode == "tail"


async def log_view(
    request: Request, service: Service, who: Principal, ref: str | None, thread: Thread,
    href: str,
) -> LogView | None:
    """The log part of the thread page at `href` for this query; None when the user may not
    read the log."""
    q = request.query_params
    try:
        level = params.level(q.get("level"))
        text = params.search_text("q", q.get("q"))
        since = params.integer("since", q.get("since"), -1, 0, 10**15)
        at = params.integer("at", q.get("at"), 0, 1, 10**15) or None
    except BadParameter as exc:
        try:
            view = await _tail(service, who, ref, thread.id)
        except Forbidden:
            return None
        view.error = _said(exc)
        view.level = (q.get("level") or "debug").lower()[:20]
        view.q = q.get("q", "")[:params.SEARCH_MAX * 2]
        _link(view, href)
        return view
    try:
        if at is not None:
            view = await _around(service, who, ref, thread.id, at)
        elif text or level > Level.DEBUG:
            view = await _filtered(service, who, ref, thread.id, level, text, max(since, 0))
        elif since >= 0:
            view = await _page(service, who, ref, thread.id, since)
        else:
            view = await _tail(service, who, ref, thread.id)
    except Forbidden:
        return None
    _link(view, href)
    return view


def _said(exc: BadParameter) -> str:
    """The parser's complaint, named by the form's label rather than the parameter."""
    problem = str(exc).removeprefix(f"Parameter '{exc.name}' ")
    return f"{LABELS.get(exc.name, exc.name)}: {problem}"


async def _tail(service: Service, who: Principal, ref: str | None, thread_id: str) -> LogView:
    found = await service.logs(who, ref, thread_id, 0, WINDOW, Level.DEBUG)
    if found.more:  # events are numbered from 1 without gaps: ask for the last ones
        found = await service.logs(who, ref, thread_id, max(0, found.total - WINDOW), WINDOW,
                                   Level.DEBUG)
    return LogView("tail", found.events, found.total)


async def _page(
    service: Service, who: Principal, ref: str | None, thread_id: str, since: int
) -> LogView:
    found = await service.logs(who, ref, thread_id, since, WINDOW, Level.DEBUG)
    return LogView("page", found.events, found.total, more=found.more)


async def _around(
    service: Service, who: Principal, ref: str | None, thread_id: str, at: int
) -> LogView:
    found = await service.logs(who, ref, thread_id, max(0, at - BEFORE - 1), WINDOW, Level.DEBUG)
    if at > found.total:
        view = await _tail(service, who, ref, thread_id)
        view.error = f"Event: there is no event {at}; the log has {view.total}"
        return view
    return LogView("around", found.events, found.total, at=at, more=found.more)


async def _filtered(
    service: Service, who: Principal, ref: str | None, thread_id: str, level: Level,
    text: str | None, since: int,
) -> LogView:
    found: LogPage = await service.logs(who, ref, thread_id, since, WINDOW, level, text)
    return LogView("filtered", found.events, found.total, level=level.name.lower(), q=text or "",
                   more=found.more, since=since)


def _link(view: LogView, href: str) -> None:
    """The view's paging and jumping links, each keeping the filters it needs."""
    def to(**query: object) -> str:
        kept = {k: str(v) for k, v in query.items() if v not in (None, "")}
        return f"{href}?{urlencode(kept)}" if kept else href

    first = view.events[0].seq if view.events else 0
    links = view.links
    if view.mode == "filtered":
        level = view.level if view.level != "debug" else None
        if view.more:
            links.more = to(level=level, q=view.q, since=view.last_seq)
        if view.since > 0:
            links.start = to(level=level, q=view.q)
        links.clear = href
    else:
        if first > 1:
            links.earlier = to(since=max(0, first - 1 - WINDOW))
        if view.mode != "tail":
            if view.more:
                links.later = to(since=view.last_seq)
            links.latest = href
    links.first_problem = f"{href}/log/problem"
    if view.at is not None:
        links.next_problem = f"{href}/log/problem?{urlencode({'after': view.at})}"
    links.text = f"{href}/log.txt"
    links.json = f"{href}/log.json"


def event_link(href: str, seq: int) -> str:
    """Where one event is shown, scrolled to and marked."""
    return f"{href}?at={seq}#e-{seq}"


# -- jumping to a warning or an error ---------------------------------------------------------
@page
async def next_problem(request: Request) -> Response:
    """The first warning or error after `after` (0: the first of the log), shown on the
    thread page; none: the page says so."""
    state, who = await viewer(request)
    ref, thread_id = request.path_params.get("group"), request.path_params["id"]
    href = f"{ui_base(ref)}/threads/{thread_id}"
    try:
        after = params.integer("after", request.query_params.get("after"), 0, 0, 10**15)
    except BadParameter:
        after = 0
    found = await state.service.logs(who, ref, thread_id, after, 1, Level.WARN)
    if found.events:
        return see_other(event_link(href, found.events[0].seq))
    if after:
        return see_other(f"{href}?at={after}&notice=no-problem#e-{after}")
    return see_other(f"{href}?notice=no-problem")


# -- downloads --------------------------------------------------------------------------------
@page
async def log_text(request: Request) -> Response:
    """The whole log as text (as `Accept: text/plain` on the logs service)."""
    state, who = await viewer(request)
    ref, thread_id = request.path_params.get("group"), request.path_params["id"]
    first = await state.service.logs(who, ref, thread_id, 0, DOWNLOAD_PAGE, Level.DEBUG)

    async def lines() -> AsyncIterator[str]:
        async for found in _pages(state.service, who, ref, thread_id, first):
            yield logs_text(found.events)

    headers = {**HEADERS, "Content-Disposition": f'inline; filename="{thread_id}.log"'}
    return StreamingResponse(lines(), media_type="text/plain; charset=utf-8", headers=headers)


@page
async def log_json(request: Request) -> Response:
    """The whole log as one JSON document, shaped as the logs service's JSON page:
    `{"thread": ID, "logs": [{seq, timestamp, datetime, level, text}, ...], "total": N}`
    (`total`: the events written), streamed a page at a time."""
    state, who = await viewer(request)
    ref, thread_id = request.path_params.get("group"), request.path_params["id"]
    first = await state.service.logs(who, ref, thread_id, 0, DOWNLOAD_PAGE, Level.DEBUG)

    async def chunks() -> AsyncIterator[str]:
        yield f'{{"thread":{_json(first.thread_id)},"logs":['
        count = 0
        async for found in _pages(state.service, who, ref, thread_id, first):
            if found.events:
                parts = (_json(event_json(e)) for e in found.events)
                yield ("," if count else "") + ",".join(parts)
                count += len(found.events)
        yield f'],"total":{count}}}\n'

    headers = {**HEADERS,
               "Content-Disposition": f'attachment; filename="{thread_id}.log.json"'}
    return StreamingResponse(chunks(), media_type="application/json", headers=headers)


def event_json(event: LogEvent) -> dict[str, object]:
    """An event as the logs service writes it in JSON."""
    return {"seq": event.seq, "timestamp": event.timestamp, "datetime": iso(event.timestamp),
            "level": event.level.name, "text": xml_safe(event.text)}


_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


async def _pages(
    service: Service, who: Principal, ref: str | None, thread_id: str, first: LogPage
) -> AsyncIterator[LogPage]:
    found = first
    while True:
        yield found
        if not found.more:
            return
        found = await service.logs(who, ref, thread_id, found.next, DOWNLOAD_PAGE, Level.DEBUG)
