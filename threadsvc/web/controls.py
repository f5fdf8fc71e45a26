"""The administrators' control services (docs/api.md#controls): the nodes, a node's
max-running, draining a node, and pausing jobs. Each reads its parameters and calls the one
`Service` method the console also calls, which refuses anyone but an administrator (403).

Threat model: names come from the path and the max-running from the query or a form; both are
checked by threadsvc/controls.py (400 `0201` when bad); the form is small and has no files."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from threadsvc.models import Principal
from threadsvc.state import AppState, app_state
from threadsvc.web.auth import authenticate
from threadsvc.web.responses import document
from threadsvc.xml import render


async def _who(request: Request) -> tuple[AppState, Principal]:
    state = app_state(request)
    return state, await authenticate(request, state.identity)


async def list_nodes(request: Request) -> Response:
    state, who = await _who(request)
    return document(request, render.nodes_element(await state.service.nodes(who)))


async def max_running(request: Request) -> Response:
    """`value`: 1 to 10000, or `default` (the node's own setting), in the query or a form."""
    state, who = await _who(request)
    value = request.query_params.get("value")
    if value is None:
        async with request.form(max_files=0, max_fields=5) as form:
            found = form.get("value")
            value = found if isinstance(found, str) else None
    node = await state.service.set_max_running(who, request.path_params["node"], value or "")
    return document(request, render.node_element(node))


async def drain(request: Request) -> Response:
    state, who = await _who(request)
    node = await state.service.drain(who, request.path_params["node"])
    return document(request, render.node_element(node))


async def undrain(request: Request) -> Response:
    state, who = await _who(request)
    node = await state.service.drain(who, request.path_params["node"], draining=False)
    return document(request, render.node_element(node))


async def paused_jobs(request: Request) -> Response:
    state, who = await _who(request)
    return document(request, render.paused_jobs_element(await state.service.paused_jobs(who)))


async def pause(request: Request) -> Response:
    """Pause the job; answers the paused jobs (it among them), whether or not it was before."""
    state, who = await _who(request)
    await state.service.pause_job(who, request.path_params["job"])
    return document(request, render.paused_jobs_element(await state.service.paused_jobs(who)))


async def resume(request: Request) -> Response:
    state, who = await _who(request)
    await state.service.pause_job(who, request.path_params["job"], paused=False)
    return document(request, render.paused_jobs_element(await state.service.paused_jobs(who)))
