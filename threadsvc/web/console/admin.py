"""Pages for administrators: the queue and the nodes. Both read through Service.list_threads at
server level, which refuses anyone but an administrator (so do these pages)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.models import RUNNING, Status, ThreadFilter, now_ms
from threadsvc.web.console.pages import page, render, ui_base, viewer
from threadsvc.web.console.views import list_page, search_status

RUNNING_SHOWN = 1000  # running threads read to draw the nodes


@dataclass(frozen=True)
class Node:
    name: str
    running: int
    heartbeat: int | None  # the latest of its running threads (epoch ms)
    age: float | None  # seconds since then
    stale: bool  # older than lease-timeout: other nodes will recover its threads
    here: bool  # the node answering this page


@page
async def queue(request: Request) -> Response:
    """The waiting threads: a list like the others (search, sort, bulk cancel), its status
    fixed."""
    state, who = await viewer(request)
    listing = await list_page(request, state.service, who, None, status="initialised")
    return render(request, "queue.html", {**listing, "base": ui_base(None), "nav": "queue"},
                  search_status(listing))


@page
async def nodes(request: Request) -> Response:
    """Nodes as their running threads show them (a node records its heartbeat on the threads
    it runs), this node always, and how many threads there are in each status."""
    state, who = await viewer(request)
    running = await state.service.list_threads(
        who, None, ThreadFilter(statuses=RUNNING, pagesize=RUNNING_SHOWN)
    )
    counts = {}
    for status in Status:
        found = await state.service.list_threads(
            who, None, ThreadFilter(statuses=frozenset({status}), pagesize=1)
        )
        counts[status.value] = found.total
    now = now_ms()
    seen: dict[str, int] = {state.runner.node: 0}
    beats: dict[str, int] = {}
    for thread in running.threads:
        name = thread.node or "(unknown)"
        seen[name] = seen.get(name, 0) + 1
        if thread.heartbeat is not None:
            beats[name] = max(beats.get(name, 0), thread.heartbeat)
    lease = state.settings.lease_timeout
    found_nodes = []
    for name, count in sorted(seen.items()):
        beat = beats.get(name)
        age = (now - beat) / 1000 if beat is not None else None
        found_nodes.append(Node(name, count, beat, age,
                                age is not None and age > lease, name == state.runner.node))
    return render(request, "nodes.html", {
        "nodes": found_nodes,
        "counts": counts,
        "running_total": running.total,
        "shown": RUNNING_SHOWN,
        "lease": lease,
        "nav": "nodes",
    })
