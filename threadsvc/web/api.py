"""The service handlers: parse the request, call the service, render the answer.

No SQL and no XML building here: the service decides, `xml.render` builds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from threadsvc.errors import AuthenticationFailed, BadParameter, Forbidden, StoreUnavailable
from threadsvc.identity import Identity
from threadsvc.models import Principal, Thread, ThreadFilter
from threadsvc.runner.runner import Runner
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.store.base import Store
from threadsvc.web import params
from threadsvc.web.auth import authenticate, parse_basic
from threadsvc.web.responses import JSONResponse, document, prefix, wants
from threadsvc.xml import render
from threadsvc.xml.parse import parse_job_body


@dataclass(frozen=True)
class AppState:
    settings: Settings
    store: Store
    identity: Identity
    runner: Runner
    service: Service


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.threadsvc
    return state


async def _who(request: Request) -> tuple[AppState, Principal]:
    state = app_state(request)
    return state, await authenticate(request, state.identity)


def _group(request: Request) -> str | None:
    return request.path_params.get("group")


def _thread_url(request: Request, thread: Thread) -> str:
    group = _group(request)
    where = f"/groups/{group}" if group is not None else ""
    return f"{prefix(request)}{where}/threads/{thread.id}"


# -- threads ----------------------------------------------------------------------------------
async def list_threads(request: Request) -> Response:
    state, who = await _who(request)
    q = request.query_params
    query = ThreadFilter(
        statuses=params.statuses(q.get("status")),
        username=q.get("username") or None,
        job=q.get("type") or None,
        since=params.timestamp("since", q.get("since")),
        until=params.timestamp("until", q.get("until")),
        page=params.integer("page", q.get("page"), 1, 1, 10**9),
        pagesize=params.integer("pagesize", q.get("pagesize"), 100, 1, 1000),
    )
    page = await state.service.list_threads(who, _group(request), query)
    return document(request, render.threads_element(page, admin=who.is_admin))


async def start_thread(request: Request) -> Response:
    state, who = await _who(request)
    job, fields = await _job_request(request)
    thread = await state.service.start(who, _group(request), job, fields)
    url = _thread_url(request, thread)
    headers = {
        "Content-Location": f"{url}/progress",
        "Location": f"{url}/result",
        "Retry-After": "1",
    }
    return document(request, render.thread_element(thread, admin=who.is_admin), 202, headers)


async def _job_request(request: Request) -> tuple[str, list[tuple[str, str]]]:
    """The job name and its fields: from the query, and a form or a `<job>` XML body."""
    fields = list(request.query_params.multi_items())
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in ("application/xml", "text/xml"):
        name, body_fields = parse_job_body(await request.body())
        fields = [("job", name), *fields, *body_fields]
    elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form(max_files=1000, max_fields=1000) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    raise BadParameter(key, "must be text, not a file, for this job")
                fields.append((key, value))
    elif await request.body():
        raise BadParameter("body", "must be form fields or a <job> XML document")
    jobs = [value for key, value in fields if key == "job"]
    if not jobs or not jobs[0].strip():
        raise BadParameter("job", "is required")
    if len(jobs) > 1:
        raise BadParameter("job", "is given more than once")
    return jobs[0].strip(), [(k, v) for k, v in fields if k != "job"]


async def get_thread(request: Request) -> Response:
    """The task resource."""
    state, who = await _who(request)
    thread = await state.service.get_thread(who, _group(request), request.path_params["id"])
    return document(request, render.thread_element(thread, admin=who.is_admin))


async def progress(request: Request) -> Response:
    state, who = await _who(request)
    thread = await state.service.get_thread(who, _group(request), request.path_params["id"])
    return document(request, render.thread_element(thread, admin=who.is_admin))


async def logs(request: Request) -> Response:
    state, who = await _who(request)
    q = request.query_params
    page = await state.service.logs(
        who,
        _group(request),
        request.path_params["id"],
        since=params.integer("since", q.get("since"), 0, 0, 10**15),
        limit=params.integer("limit", q.get("limit"), 1000, 1, 10_000),
        level=params.level(q.get("level")),
    )
    if wants(request, "text/plain"):
        return PlainTextResponse(render.logs_text(page.events))
    return document(request, render.logs_element(page))


async def cancel(request: Request) -> Response:
    state, who = await _who(request)
    thread = await state.service.cancel(who, _group(request), request.path_params["id"])
    return document(request, render.thread_cancel_element(thread, admin=who.is_admin))


async def delete(request: Request) -> Response:
    state, who = await _who(request)
    await state.service.delete(who, _group(request), request.path_params["id"])
    return Response(status_code=204)


# -- the rest ---------------------------------------------------------------------------------
async def oauth_token(request: Request) -> Response:
    """OAuth 2 client credentials: the client's id and secret in Basic or in the form."""
    state = app_state(request)
    async with request.form(max_files=0, max_fields=20) as form:
        values = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    if values.get("grant_type") != "client_credentials":
        raise BadParameter("grant_type", "must be client_credentials")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        client_id, secret = parse_basic(header[6:])
    else:
        client_id, secret = values.get("client_id", ""), values.get("client_secret", "")
    if not client_id or not secret:
        raise AuthenticationFailed("client_id and client_secret are required")
    token = await state.identity.issue_access_token(client_id, secret)
    body = {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
    }
    return JSONResponse(
        json.dumps(body).encode(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


async def health(request: Request) -> Response:
    state = app_state(request)
    try:
        await state.store.count_by_status()
    except StoreUnavailable:
        return PlainTextResponse("store unavailable\n", status_code=503)
    return PlainTextResponse(f"ok node={state.runner.node} running={state.runner.running_count}\n")


async def metrics(request: Request) -> Response:
    state, who = await _who(request)
    if not who.is_admin:
        raise Forbidden("Only administrators may read the metrics")
    counts = await state.store.count_by_status()
    lines = [
        "# HELP threadsvc_threads Threads in the store by status.",
        "# TYPE threadsvc_threads gauge",
        *(f'threadsvc_threads{{status="{s.value}"}} {n}' for s, n in sorted(counts.items())),
        "# HELP threadsvc_running_threads Threads this node is running.",
        "# TYPE threadsvc_running_threads gauge",
        f'threadsvc_running_threads{{node="{state.runner.node}"}} {state.runner.running_count}',
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> Response:
    data = (resources.files("threadsvc") / "schemas" / "openapi.json").read_bytes()
    return Response(data, media_type="application/json")
