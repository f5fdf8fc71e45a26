"""The service handlers: parse the request, call the service, render the answer.

No SQL and no XML building here: the service decides, `xml.render` builds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response

from threadsvc.errors import (
    AuthenticationFailed,
    BadParameter,
    FileMissing,
    FileUnavailable,
    StoreUnavailable,
)
from threadsvc.files.base import CHUNK
from threadsvc.models import AuditFilter, Principal, Status, Thread, ThreadFilter, now_ms
from threadsvc.state import AppState, app_state
from threadsvc.uploads import Upload
from threadsvc.web import job_body, params, waiting
from threadsvc.web import metrics as web_metrics
from threadsvc.web.auth import authenticate, client_address, parse_basic
from threadsvc.web.responses import (
    JSONResponse,
    document,
    prefix,
    respond,
    wants,
    wants_json,
)
from threadsvc.web.stored import stored_file
from threadsvc.web.urls import absolute
from threadsvc.xml import render

SERVICE = "/ps/service"
log = logging.getLogger(__name__)
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_MEDIA_TYPE = re.compile(r"[\x21-\x7e]+/[\x21-\x7e]+(?:[ \t]*;[ \t]*[\x21-\x7e]+)*")
BYTES = "application/octet-stream"


async def _who(request: Request) -> tuple[AppState, Principal]:
    state = app_state(request)
    return state, await authenticate(request, state.identity)


def _group(request: Request) -> str | None:
    return request.path_params.get("group")


def _thread_url(request: Request, thread: Thread) -> str:
    """The thread's absolute URL under the prefix and group the request named it by."""
    group = _group(request)
    where = f"/groups/{group}" if group is not None else ""
    return absolute(request, f"{prefix(request)}{where}/threads/{thread.id}")


def _link(request: Request, state: AppState, thread: Thread) -> render.ResultLink | None:
    """A freshly signed link to the thread's result, when it has one still kept: the file
    storage's own pre-signed URL when it signs its own (s3-presign), else the server's."""
    result = thread.result
    if result is None or not result.kept(now_ms()) or not thread.final:
        return None
    ttl = state.service.links.ttl
    # Whole seconds, taken before signing: the storage's URL works until at least then.
    expires = now_ms() // 1000 * 1000 + ttl * 1000
    presigned = state.service.files.storage.presigned_url(
        state.service.files.key(result), ttl, result.name, _media_type(result.media_type)
    )
    if presigned is not None:
        return render.ResultLink(presigned, expires)
    link = state.service.links.sign(thread.id)
    return render.ResultLink(absolute(request, f"{SERVICE}/results/{link.token}"), link.expires)


def _media_type(declared: str) -> str:
    """A job may have named any media type; one that cannot be a header value is sent as bytes."""
    return declared if _MEDIA_TYPE.fullmatch(declared) else BYTES


def _thread_doc(
    request: Request,
    state: AppState,
    who: Principal,
    thread: Thread,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    link = _link(request, state, thread)
    if link is not None:  # freshly signed each time
        element = render.thread_element(thread, admin=who.is_admin, link=link)
        return document(request, element, status_code, headers)
    as_json = wants_json(request)
    body = state.renderings.document(thread, who.is_admin, as_json)
    return respond(as_json, body, status_code, headers)


# -- threads ----------------------------------------------------------------------------------
async def list_threads(request: Request) -> Response:
    state, who = await _who(request)
    q = request.query_params
    query = ThreadFilter(
        statuses=params.statuses(q.get("status")),
        username=params.text("username", q.get("username")),
        job=params.text("type", q.get("type")),
        since=params.timestamp("since", q.get("since")),
        until=params.timestamp("until", q.get("until")),
        deletion_before=params.timestamp("deletion-before", q.get("deletion-before")),
        id_prefix=params.id_prefix(q.get("id")),
        name=params.search("name", q.get("name")),
        text=params.search("text", q.get("text")),
        ended_since=params.timestamp("ended-since", q.get("ended-since")),
        ended_until=params.timestamp("ended-until", q.get("ended-until")),
        sort=params.sort(q.get("sort")),
        descending=params.descending(q.get("order")),
        page=params.integer("page", q.get("page"), 1, 1, 10**9),
        pagesize=params.integer("pagesize", q.get("pagesize"), 100, 1, 1000),
    )
    page = await state.service.list_threads(who, _group(request), query)
    links = {t.id: link for t in page.threads if (link := _link(request, state, t))}
    return document(request, render.threads_element(page, admin=who.is_admin, links=links))


async def start_thread(request: Request) -> Response:
    state, who = await _who(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise BadParameter("Idempotency-Key", "must be 1 to 255 visible ASCII characters")
    service = state.service
    # Before a byte of the body is read: a caller who may start nothing here, or not the job
    # the query names, is refused at once (and the connection closed, the body unread).
    group = await service.may_start(who, _group(request), _named_job(request))

    def check_job(name: str) -> None:
        service.job_for(who, group, name)

    async with _job_request(request, check_job) as (job, fields):
        thread, created = await service.start(who, _group(request), job, fields, key)
    url = _thread_url(request, thread)
    headers = {
        "Content-Location": f"{url}/progress",
        "Location": f"{url}/result",
        "Retry-After": "1",
    }
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return _thread_doc(request, state, who, thread, 202, headers)


Fields = list[tuple[str, "str | Upload"]]


def _named_job(request: Request) -> str | None:
    """The job the query names, when it names exactly one."""
    named = [v.strip() for v in request.query_params.getlist("job")]
    return named[0] if len(named) == 1 and named[0] else None


@contextlib.asynccontextmanager
async def _job_request(
    request: Request, check_job: job_body.JobCheck
) -> AsyncIterator[tuple[str, Fields]]:
    """The job name and its fields: from the query, and a form (uploaded files stay readable
    inside the `async with`) or a `<job>` XML body. `check_job` refuses a job named in a form
    as soon as its field has arrived, before the rest is read."""
    fields: Fields = list(request.query_params.multi_items())
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    async with contextlib.AsyncExitStack() as stack:
        if media in ("application/xml", "text/xml"):
            name, body_fields = await job_body.read_job_xml(request)
            fields = [("job", name), *fields, *body_fields]
        elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await job_body.read_form(request, media == "multipart/form-data", check_job)
            stack.push_async_callback(form.close)
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    upload = Upload(
                        value.filename or "", value.content_type or "application/octet-stream",
                        value.file,
                    )
                    fields.append((key, upload))
                else:
                    fields.append((key, value))
        elif await job_body.has_body(request):
            raise BadParameter("body", "must be form fields or a <job> XML document")
        jobs = [value for key, value in fields if key == "job"]
        if not jobs or not isinstance(jobs[0], str) or not jobs[0].strip():
            raise BadParameter("job", "is required (as text)")
        if len(jobs) > 1:
            raise BadParameter("job", "is given more than once")
        yield jobs[0].strip(), [(k, v) for k, v in fields if k != "job"]


async def list_jobs(request: Request) -> Response:
    """The jobs the caller may start here, with their parameters."""
    state, who = await _who(request)
    specs = await state.service.jobs(who, _group(request))
    if wants_json(request):
        return respond(True, render.jobs_to_json(specs))
    return document(request, render.jobs_element(specs))


async def get_thread(request: Request) -> Response:
    """The task resource: the thread, or 303 to the result once completed with one."""
    state, who = await _who(request)
    thread = await state.service.get_thread(who, _group(request), request.path_params["id"])
    if thread.status is Status.COMPLETED and _link(request, state, thread) is not None:
        headers = {"Location": f"{_thread_url(request, thread)}/result"}
        return _thread_doc(request, state, who, thread, 303, headers)
    return _thread_doc(request, state, who, thread)


async def progress(request: Request) -> Response:
    """The thread with an ETag; If-None-Match gives 304, and with `wait` a long-poll."""
    state, who = await _who(request)
    group, thread_id = _group(request), request.path_params["id"]
    thread = await state.service.get_thread(who, group, thread_id)
    seconds = waiting.wait_seconds(request)
    if seconds is not None and (waiting.matches(request, thread) or not request.headers.get("if-none-match")):
        baseline = thread.version
        caller = _caller(state, who, group, thread_id)
        state.streams.acquire(who.username)  # 429 beyond the user's quota
        try:
            thread = await waiting.wait_for_change(
                state.changes, thread, seconds, caller, lambda t: t.version == baseline
            )
        finally:
            state.streams.release(who.username)
        who = caller.who  # as last checked: what it shows and signs is for them as they are
        if thread.version == baseline and not request.headers.get("if-none-match"):
            return Response(status_code=304, headers={"ETag": waiting.etag(thread)})
    headers = {"ETag": waiting.etag(thread), "Cache-Control": "no-cache"}
    if waiting.matches(request, thread):
        return Response(status_code=304, headers=headers)
    return _thread_doc(request, state, who, thread, headers=headers)


def _caller(state: AppState, who: Principal, group: str | None, thread_id: str) -> waiting.Caller:
    """The caller of a wait, checked again as it goes with the same rule as its request."""

    async def access(current: Principal) -> Thread:
        return await state.service.get_thread(current, group, thread_id)

    return waiting.Caller(state.rechecks, who, access)


async def events(request: Request) -> Response:
    """Server-Sent Events: `status` and (for those who may read the log) `log` until the
    final status."""
    state, who = await _who(request)
    group, thread_id = _group(request), request.path_params["id"]
    thread = await state.service.get_thread(who, group, thread_id)

    def render_thread(current_who: Principal, current: Thread) -> str:
        """The thread on one line; shared by every stream of the same state."""
        link = _link(request, state, current)
        if link is not None:
            return render.to_line(
                render.thread_element(current, admin=current_who.is_admin, link=link)
            )
        return state.renderings.line(current, current_who.is_admin)

    stream = waiting.event_stream(
        state.service, state.changes, thread, waiting.last_event_id(request),
        _caller(state, who, group, thread_id), render_thread,
    )
    state.streams.acquire(who.username)  # 429 beyond the user's quota; the response gives it back
    return waiting.EventStreamResponse(stream, state.streams, who.username)


async def result(request: Request) -> Response:
    """202 while running; 302 to a pre-signed URL; 204 completed without a result."""
    state, who = await _who(request)
    thread = await state.service.result(who, _group(request), request.path_params["id"])
    if not thread.final:
        return _thread_doc(request, state, who, thread, 202, {"Retry-After": "1"})
    link = _link(request, state, thread)
    if link is None:
        return Response(status_code=204)
    return Response(status_code=302, headers={"Location": link.href, "Cache-Control": "no-store"})


class LocalFileResponse(FileResponse):
    """A local file in pieces of CHUNK (Starlette reads 64 KiB at a time: a 200 MiB result was
    then slower through a node from its own disk than from the database)."""

    chunk_size = CHUNK


async def download(request: Request) -> Response:
    """A pre-signed result link: no credentials; Range requests are honoured. 410 only when the
    store says the result was deleted; a file that cannot be reached is a 503."""
    state = app_state(request)
    _, found = await state.service.download(request.path_params["token"])
    files = state.service.files
    media_type = _media_type(found.media_type)
    headers = {"Cache-Control": "private, no-store"}
    path = files.local_path(found)
    if path is None:  # streamed from the storage
        return await stored_file(request, files.storage, files.key(found), media_type,
                                 found.name, headers)
    if not await anyio.Path(path).is_file():
        raise FileMissing(f"the result file of a kept result is missing: {files.key(found)}")
    return LocalFileResponse(path, media_type=media_type, filename=found.name, headers=headers)


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
        text=params.search_text("text", q.get("text")),
    )
    if wants(request, "text/plain"):
        return PlainTextResponse(render.logs_text(page.events))
    return document(request, render.logs_element(page))


async def audit(request: Request) -> Response:
    """A page of the audit log, oldest first, for administrators (docs/api.md#audit)."""
    state, who = await _who(request)
    q = request.query_params
    query = AuditFilter(
        since=params.integer("since", q.get("since"), 0, 0, 10**15),
        limit=params.integer("limit", q.get("limit"), 1000, 1, 10_000),
        action=params.audit_action(q.get("action")),
        user=params.text("user", q.get("user")),
        from_ts=params.timestamp("from", q.get("from")),
    )
    return document(request, render.audit_element(await state.service.audit(who, query)))


async def cancel(request: Request) -> Response:
    state, who = await _who(request)
    thread = await state.service.cancel(who, _group(request), request.path_params["id"])
    link = _link(request, state, thread) if thread is not None else None
    return document(request, render.thread_cancel_element(thread, admin=who.is_admin, link=link))


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
    # Errors are the server's error documents, as everywhere (a bad scope is a 400 naming
    # `scope` and invalid_scope); wrong secrets count against the client id like passwords.
    token = await state.identity.issue_access_token(
        client_id, secret, values.get("scope", "").strip(), client_address(request)
    )
    body: dict[str, str | int] = {
        "access_token": token.access_token,
        "token_type": "Bearer",
        "expires_in": token.expires_in,
    }
    if token.scope:
        body["scope"] = token.scope
    return JSONResponse(
        json.dumps(body).encode(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


async def health(request: Request) -> Response:
    """Liveness, for anyone: `ok` while the process serves, and nothing about the host, the
    process or its work (readiness is /ready; figures are /metrics)."""
    return PlainTextResponse("ok\n")


async def ready(request: Request) -> Response:
    """Readiness, for anyone: 200 when the store answers, the file storage can be written and
    read back (checked every few seconds at most) and no side task keeps dying, else 503 naming
    what failed (the file storage's error goes to the log, not to anyone). Either way, a line
    says so when this node's clock is more than 2 s off the database's."""
    state = app_state(request)
    problems = [f"side task {failing}" for failing in state.supervisor.failing()]
    try:
        await state.service.check_files()
    except FileUnavailable as exc:
        log.warning("readiness: the file storage fails its check: %s", exc)
        problems.insert(0, f"file storage ({state.settings.files_kind}) unavailable")
    try:
        await state.service.check_store()
    except StoreUnavailable:
        problems.insert(0, "store unavailable")
    # A clock off the database's is said, not failed: the node corrects it (runner/clock.py),
    # and a database whose own clock moved must not make every node unready at once.
    said = [f"{off}; corrected\n" for off in [state.clock.off()] if off is not None]
    if problems:
        return PlainTextResponse("".join(f"{p}\n" for p in problems) + "".join(said),
                                 status_code=503)
    return PlainTextResponse("ready\n" + "".join(said))


async def metrics(request: Request) -> Response:
    """Prometheus text (or OpenMetrics, when asked) for an administrator or the bearer of
    `metrics-token` (web/metrics.py); the figures are listed in docs/api.md#metrics."""
    state = app_state(request)
    await web_metrics.check_scraper(request, state)
    counts = await state.service.thread_counts()
    body, content_type = await state.metrics.exposition(
        counts, node=state.runner.node, running=state.runner.running_count,
        slots=state.runner.max_running, clock_offset_ms=state.clock.offset_ms,
        accept=request.headers.get("accept", ""),
    )
    return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    """The description made at start-up from the registered jobs (web/openapi.py)."""
    return Response(app_state(request).openapi, media_type="application/json")
