"""The console's reading pages: the user's groups, thread lists, a thread (its log part is
logview.py's), and cancel.

Every page asks the service, as the API does, and shows what the service answers: a Forbidden
or NotFound from it is what the user sees.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import NotFound
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
from threadsvc.web.console import details, logview
from threadsvc.web.console.again import run_again_link
from threadsvc.web.console.bulk import outcome_of
from threadsvc.web.console.finding import (
    LABELS,
    PAGESIZES,
    STATUS_FILTERS,
    Search,
    read_search,
    sort_choices,
)
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
    own = not state.service.may_list(who, group)  # a reviewer: the threads they started
    listing = await list_page(request, state.service, who, group.name, own=own)
    return render(request, "own_threads.html" if own else "threads.html",
                  {**context, **listing, "forbidden": None}, search_status(listing))


@page
async def all_threads(request: Request) -> Response:
    """Administrators: every thread of the server (the service refuses anyone else)."""
    state, who = await viewer(request)
    listing = await list_page(request, state.service, who, None)
    return render(request, "threads.html", {
        **listing, "group": None, "base": ui_base(None), "nav": "threads", "forbidden": None,
        "jobs": state.service.startable(who, None),
    }, search_status(listing))


async def list_page(
    request: Request, service: Service, who: Principal, group: str | None,
    status: str | None = None, own: bool = False,
) -> dict[str, object]:
    """A list page's search (finding.py), its rows, pages and bulk actions; a bad field is
    named on the page and nothing is listed. `own`: the threads `who` started in `group`
    (`Service.own_threads`), for a member who may not list them all; not followed live (the
    stream is the whole list's right)."""
    search = read_search(request.query_params, status=status)

    def lister(query: ThreadFilter) -> Awaitable[ThreadPage]:
        if own:
            assert group is not None
            return service.own_threads(who, group, query)
        return service.list_threads(who, group, query)

    where = await service.group(group) if group is not None else None
    context: dict[str, object] = {
        "search": search, "rows": [], "total": 0, "pages": None,
        "statuses": STATUS_FILTERS, "sorts": sort_choices(), "pagesizes": PAGESIZES,
        "job_names": [spec.name for spec in service.registry],
        "may_cancel": service.may_cancel_here(who, where),
        "may_delete": service.may_delete(who, where),
        "list_path": request.url.path, "labels": LABELS, "live": None,
    }
    outcome = outcome_of(dict(request.query_params))
    if outcome is not None:  # after a bulk action: what it did, from whole numbers only
        context["notice"] = outcome.text()
    if search.query is None:
        await lister(ThreadFilter(pagesize=1))  # a bad field must not hide a refusal
        return context
    found = await lister(search.query)
    last = max(1, -(-found.total // found.pagesize))
    path = request.url.path
    following = [f"{t.id}:{t.version}" for t in found.threads if not t.final]
    live = f"{ui_base(group)}/threads/live?" + urlencode([("t", t) for t in following])
    context.update(
        live=live if following and not own else None,
        rows=await rows(service, found, group),
        total=found.total,
        pages={
            "number": found.page,
            "last": last,
            "newer": search.link(path, found.page - 1) if found.page > 1 else None,
            "older": search.link(path, found.page + 1) if found.page < last else None,
            "first": (found.page - 1) * found.pagesize + 1 if found.threads else 0,
            "end": (found.page - 1) * found.pagesize + len(found.threads),
        },
    )
    return context


def search_status(listing: dict[str, object]) -> int:
    """400 for a page whose search has a bad value (shown on it, with the form), else 200."""
    search = listing["search"]
    return 400 if isinstance(search, Search) and search.problems else 200


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
        "run_again": run_again_link(state.service, who, base, thread, group),
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
