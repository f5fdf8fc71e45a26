"""The console's reading pages: the user's groups, thread lists, a thread (its log part is
logview.py's), and cancel.

Every page asks the service, as the API does, and shows what the service answers: a Forbidden
or NotFound from it is what the user sees.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import BadParameter, NotFound
from threadsvc.identity import LONGEST_NAME
from threadsvc.models import (
    SERVER_GROUP_ID,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
    now_ms,
)
from threadsvc.service import Service
from threadsvc.web import params
from threadsvc.web.console import details, logview
from threadsvc.web.console.pages import (
    page,
    poster,
    render,
    safe_next,
    see_other,
    service_base,
    ui_base,
    viewer,
)

PAGESIZE = 25
T = TypeVar("T")
STATUS_FILTERS = ("all", "active", "finished", *(s.value for s in Status))


@dataclass(frozen=True)
class Row:
    """A thread in a list, with where its page is and the name of its group."""

    thread: Thread
    href: str
    group: str


# -- groups -----------------------------------------------------------------------------------
@page
async def groups(request: Request) -> Response:
    """The groups the viewer may open (every group for an administrator), with their threads
    by status where the viewer may list them."""
    state, who = await viewer(request)
    summaries = await state.service.group_summaries(who)
    return render(request, "groups.html", {"groups": summaries, "nav": "groups",
                                           "statuses": list(Status)})


@page
async def open_group(request: Request) -> Response:
    """The group a name or id names (GroupNotFound: 404), for the form on the groups page."""
    state, _ = await viewer(request)
    group = await state.service.group(request.query_params.get("name", "").strip())
    return see_other(f"{ui_base(group.name)}/threads")


# -- lists ------------------------------------------------------------------------------------
@page
async def group_threads(request: Request) -> Response:
    """A group's threads; a member who may not list them all (a reviewer) gets the threads
    they started there instead of a refusal (Service.own_threads)."""
    state, who = await viewer(request)
    ref = request.path_params["group"]
    group = await state.service.group(ref)
    context = {"group": group, "base": ui_base(group.name), "nav": "groups",
               "jobs": state.service.startable(who, group)}
    if not state.service.may_list(who, group):
        own: Lister = lambda q: state.service.own_threads(who, group.name, q)
        listing, status = await _listing(request, state.service, own, group.name)
        return render(request, "own_threads.html", {**context, **listing}, status)
    every: Lister = lambda q: state.service.list_threads(who, group.name, q)
    listing, status = await _listing(request, state.service, every, group.name)
    return render(request, "threads.html", {**context, **listing, "forbidden": None}, status)


@page
async def all_threads(request: Request) -> Response:
    """Administrators: every thread of the server (the service refuses anyone else)."""
    state, who = await viewer(request)
    listing, status = await _listing(
        request, state.service, lambda q: state.service.list_threads(who, None, q), None)
    return render(request, "threads.html", {
        **listing, "group": None, "base": ui_base(None), "nav": "threads", "forbidden": None,
        "jobs": state.service.startable(who, None),
    }, status)


Lister = Callable[[ThreadFilter], Awaitable[ThreadPage]]


def _filter(request: Request) -> tuple[ThreadFilter, dict[str, str], dict[str, str]]:
    """The list's query from the query string, the filters as typed (to show them again), and
    each bad one's problem by field name (then the query holds the defaults in its place)."""
    q = request.query_params
    errors: dict[str, str] = {}

    def checked(name: str, parse: Callable[[], T], default: T) -> T:
        try:
            return parse()
        except BadParameter as exc:
            errors[name] = str(exc)
            return default

    status = q.get("status") or "all"
    user = checked("user", lambda: params.text("user", q.get("user")), None)
    if user is not None and len(user) > LONGEST_NAME:
        errors["user"] = (f"Parameter 'user' is longer than {LONGEST_NAME} characters: "
                          "no user has such a name")
        user = None
    query = ThreadFilter(
        statuses=checked("status", lambda: params.statuses(status), frozenset(Status)),
        username=user,
        job=checked("job", lambda: params.text("job", q.get("job")), None),
        page=checked("page", lambda: params.integer("page", q.get("page"), 1, 1, 10**9), 1),
        pagesize=PAGESIZE,
    )
    filters = {"status": status, "user": q.get("user", ""), "job": q.get("job", "")}
    return query, filters, errors


async def _listing(
    request: Request, service: Service, lister: Lister, group: str | None,
) -> tuple[dict[str, object], int]:
    """A list page's context and status: 400, with the form as sent and each problem next to
    its field, when a filter is bad (nothing is listed then)."""
    query, filters, errors = _filter(request)
    if errors:
        await lister(ThreadFilter(pagesize=1))  # a bad filter must not hide a refusal
        found = ThreadPage([], 0, 1, PAGESIZE)
    else:
        found = await lister(query)
    return {
        "rows": await rows(service, found, group),
        "total": found.total,
        "filters": filters,
        "errors": errors,
        "statuses": STATUS_FILTERS,
        "job_names": [spec.name for spec in service.registry],
        "pages": _pages(request.url.path, found, filters),
    }, 400 if errors else 200


async def rows(service: Service, found: ThreadPage, group: str | None) -> list[Row]:
    """Each thread with its page: under the group for a group's list, else under the server
    routes (which administrators and owners may use)."""
    names: dict[int, str] = {SERVER_GROUP_ID: "server"}
    result = []
    for thread in found.threads:
        if thread.group_id not in names:
            try:
                names[thread.group_id] = (await service.group(str(thread.group_id))).name
            except NotFound:
                names[thread.group_id] = str(thread.group_id)
        result.append(Row(thread, f"{ui_base(group)}/threads/{thread.id}", names[thread.group_id]))
    return result


def _pages(path: str, found: ThreadPage, filters: dict[str, str]) -> dict[str, object]:
    last = max(1, -(-found.total // found.pagesize))

    def link(number: int) -> str:
        query = {k: v for k, v in filters.items() if v}
        if number > 1:
            query["page"] = str(number)
        return f"{path}?{urlencode(query)}" if query else path

    return {
        "number": found.page,
        "last": last,
        "newer": link(found.page - 1) if found.page > 1 else None,
        "older": link(found.page + 1) if found.page < last else None,
        "first": (found.page - 1) * found.pagesize + 1 if found.threads else 0,
        "end": (found.page - 1) * found.pagesize + len(found.threads),
    }


# -- one thread -------------------------------------------------------------------------------
@page
async def thread_page(request: Request) -> Response:
    state, who = await viewer(request)
    ref = request.path_params.get("group")
    thread = await state.service.get_thread(who, ref, request.path_params["id"])
    group = await state.service.group(ref) if ref is not None else None
    group_name = group.name if group else await _group_name(state.service, thread)
    base = ui_base(group.name if group else None)
    href = f"{base}/threads/{thread.id}"
    log = await logview.log_view(request, state.service, who, ref, thread, href)
    api = f"{service_base(group.name if group else None)}/threads/{thread.id}"
    result = thread.result
    kept = result is not None and result.kept(now_ms()) and thread.final
    return render(request, "thread.html", {
        "thread": thread,
        "group_name": group_name,
        "base": base,
        "href": href,
        "events": f"{api}/events",
        "result_href": f"{api}/result",
        "result_kept": kept,
        "log": log,
        "last_seq": log.last_seq if log else 0,
        "may_cancel": state.service.may_cancel(who, ref, thread),
        "nav": "groups" if group else "threads",
        "percent": percent(thread),
        "queued": details.queued(thread, now_ms()),
        "ran": details.ran(thread, now_ms()),
        "timeline": details.timeline(thread),
        "parameters": details.parameters(state.service.parameters(who, thread)),
    })


def percent(thread: Thread) -> int | None:
    total, current = thread.progress_total, thread.progress_current or 0
    return 100 * current // total if total else None


async def _group_name(service: Service, thread: Thread) -> str:
    if thread.server_level:
        return "server"
    try:
        return (await service.group(str(thread.group_id))).name
    except NotFound:
        return str(thread.group_id)


@page
async def cancel(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=10) as form:
        state, who = await poster(request, form)
        back = form.get("back")
    ref, thread_id = request.path_params.get("group"), request.path_params["id"]
    thread = await state.service.cancel(who, ref, thread_id)
    if thread is None:
        raise NotFound(f"No thread '{thread_id[:64]}' here: nothing was cancelled")
    here = f"{ui_base(ref)}/threads/{thread.id}"
    target = safe_next(back, here)
    joiner = "&" if "?" in target else "?"
    if thread.status is Status.CANCELLED:
        notice = "cancelled"
    else:
        notice = "finished" if thread.final else "cancelling"
    return see_other(f"{target}{joiner}notice={notice}")
