"""The console's reading pages: the user's groups, thread lists, a thread (its log part is
logview.py's), and cancel.

Every page asks the service, as the API does, and shows what the service answers: a Forbidden
or NotFound from it is what the user sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import Forbidden, NotFound
from threadsvc.models import (
    SERVER_GROUP_ID,
    Principal,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
    now_ms,
)
from threadsvc.service import Service
from threadsvc.web import params
from threadsvc.web.console import logview
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
    state, who = await viewer(request)
    found = []
    for group, role in await state.service.groups_of(who):
        try:
            active = await state.service.list_threads(  # by id: a stored name may be odd
                who, str(group.id), ThreadFilter(pagesize=1)
            )
            count: int | None = active.total
        except Forbidden:
            count = None  # this role may not list the group's threads
        found.append((group, role, count))
    return render(request, "groups.html", {"groups": found, "nav": "groups"})


@page
async def open_group(request: Request) -> Response:
    """The group a name or id names (GroupNotFound: 404), for the form on the groups page."""
    state, _ = await viewer(request)
    group = await state.service.group(request.query_params.get("name", "").strip())
    return see_other(f"{ui_base(group.name)}/threads")


# -- lists ------------------------------------------------------------------------------------
@page
async def group_threads(request: Request) -> Response:
    state, who = await viewer(request)
    ref = request.path_params["group"]
    group = await state.service.group(ref)
    context = {"group": group, "base": ui_base(group.name), "nav": "groups",
               "jobs": state.service.startable(who, group)}
    try:
        listing = await _listing(request, state.service, who, group.name)
    except Forbidden as exc:
        return render(request, "threads.html", {**context, "forbidden": str(exc)}, 403)
    return render(request, "threads.html", {**context, **listing, "forbidden": None})


@page
async def all_threads(request: Request) -> Response:
    """Administrators: every thread of the server (the service refuses anyone else)."""
    state, who = await viewer(request)
    listing = await _listing(request, state.service, who, None)
    return render(request, "threads.html", {
        **listing, "group": None, "base": ui_base(None), "nav": "threads", "forbidden": None,
        "jobs": state.service.startable(who, None),
    })


async def _listing(
    request: Request, service: Service, who: Principal, group: str | None,
    default_status: str = "all",
) -> dict[str, object]:
    q = request.query_params
    status = q.get("status") or default_status
    query = ThreadFilter(
        statuses=params.statuses(status),
        username=params.text("user", q.get("user")),
        job=params.text("job", q.get("job")),
        page=params.integer("page", q.get("page"), 1, 1, 10**9),
        pagesize=PAGESIZE,
    )
    found = await service.list_threads(who, group, query)
    filters = {"status": status, "user": q.get("user", ""), "job": q.get("job", "")}
    return {
        "rows": await rows(service, found, group),
        "total": found.total,
        "filters": filters,
        "statuses": STATUS_FILTERS,
        "job_names": [spec.name for spec in service.registry],
        "pages": _pages(request.url.path, found, filters),
    }


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
