"""The console's forms: sign-in and sign-out, and starting a job from its declared parameters.

Every form carries the session's CSRF token; a form without it (or with another session's)
is refused with 403 before anything is read from the store or done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from threadsvc.errors import (
    AccountLocked,
    AuthenticationFailed,
    BadParameter,
    Forbidden,
    ThreadsvcError,
    TooManyActiveThreads,
)
from threadsvc.models import Principal
from threadsvc.runner.params import Choice, File, Integer, Number, Param, Text
from threadsvc.runner.registry import JobSpec
from threadsvc.state import AppState, app_state
from threadsvc.uploads import Upload
from threadsvc.web import errors, job_body
from threadsvc.web.auth import client_address, session_user
from threadsvc.web.console.again import Prefill, prefill
from threadsvc.web.console.pages import (
    SIGN_IN,
    CsrfRefused,
    console,
    error_page,
    page,
    poster,
    render,
    safe_next,
    see_other,
    ui_base,
    viewer,
)
from threadsvc.web.console.session import CSRF_FIELD
from threadsvc.web.console.session import sign_in as start_session
from threadsvc.web.console.session import sign_out as end_session

MORE = "more"  # the text area for parameters a job accepts beyond those it declares
OWN_FIELDS = frozenset({CSRF_FIELD, "job", MORE})


# -- signing in and out -----------------------------------------------------------------------
@page
async def sign_in_form(request: Request) -> Response:
    state = app_state(request)
    target = safe_next(request.query_params.get("next"))
    if await session_user(request, state.identity) is not None:
        return see_other(target)
    return render(request, "sign_in.html", {"next": target, "username": "", "error": None})


@page
async def sign_in(request: Request) -> Response:
    state = app_state(request)
    async with request.form(max_files=0, max_fields=10) as form:
        values = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    target = safe_next(values.get("next"))
    username = values.get("username", "").strip()[:200]
    context: dict[str, Any] = {"next": target, "username": username}
    if not console(request).csrf_ok(request, values.get(CSRF_FIELD)):
        error = ("This sign-in form has expired, or the browser refused the console's cookie. "
                 "Try again (cookies must be allowed for this site).")
        return render(request, "sign_in.html", {**context, "error": error}, 403)
    if not username or not values.get("password"):
        error = "Enter your username and password."
        return render(request, "sign_in.html", {**context, "error": error}, 400)
    if "\x00" in username:  # no user has it, and no store could look it up
        context["username"] = username.replace("\x00", "")
        return render(request, "sign_in.html", {**context, "error": "No user has that name."}, 400)
    try:
        user = await state.identity.check_password(
            username, values.get("password", ""), client_address(request))
    except AccountLocked as exc:
        minutes = max(1, -(-exc.retry_after // 60))
        error = (f"Too many failed sign-ins for this account: it is locked. "
                 f"Try again in {minutes} minute{'s' if minutes > 1 else ''}.")
        return render(request, "sign_in.html", {**context, "error": error}, 429)
    except AuthenticationFailed:
        return render(request, "sign_in.html",
                      {**context, "error": "Wrong username or password."}, 401)
    start_session(request, user)
    return see_other(target)


@page
async def sign_out_form(request: Request) -> Response:
    """Sign-out is a POST (every page has its button); this page offers one on its own."""
    await viewer(request)
    return render(request, "sign_out.html", {})


@page
async def sign_out(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=10) as form:
        token = form.get(CSRF_FIELD)
    if not console(request).csrf_ok(request, token):
        return error_page(request, CsrfRefused("This sign-out form did not come from this "
                                               "console's page: you are still signed in."))
    end_session(request)
    return see_other(f"{SIGN_IN}?notice=signed-out")


# -- starting a job ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One input of a start form, from one declared parameter."""

    name: str
    kind: str  # text, integer, number, choice, file
    required: bool
    multiple: bool
    doc: str
    default: Any
    minimum: Any = None
    maximum: Any = None
    choices: tuple[str, ...] = ()
    max_length: int | None = None


def field_of(name: str, param: Param) -> Field:
    common = {"name": name, "required": param.required, "multiple": param.multiple,
              "doc": param.doc, "default": param.default}
    if isinstance(param, Integer | Number):
        kind = "integer" if isinstance(param, Integer) else "number"
        return Field(kind=kind, minimum=param.minimum, maximum=param.maximum, **common)
    if isinstance(param, Choice):
        return Field(kind="choice", choices=param.choices, **common)
    if isinstance(param, File):
        return Field(kind="file", **common)
    if isinstance(param, Text):
        return Field(kind="text", max_length=param.max_length, **common)
    return Field(kind="text", **common)


@page
async def start_form(request: Request) -> Response:
    state, who = await viewer(request)
    ref = request.path_params.get("group")
    name = request.query_params.get("job") or None
    if name is not None:  # a job they may not start here: said on the page, with the list
        group = await state.service.may_start(who, ref)  # nothing at all here: the 403 page
        try:
            state.service.job_for(who, group, name)
        except (BadParameter, Forbidden) as exc:
            status, _ = errors.status_of(exc) or (400, "")
            return await _form(request, state, who, ref, None, {}, exc, status)
    again = request.query_params.get("again")
    if name is not None and again:  # Run again: the form as an earlier thread had it
        filled = await prefill(state.service, who, ref, again, state.service.registry.get(name))
        return await _form(request, state, who, ref, name, filled.values, None, again=filled)
    return await _form(request, state, who, ref, name, {}, None)


async def _form(
    request: Request, state: AppState, who: Principal, ref: str | None, name: str | None,
    values: dict[str, str], error: ThreadsvcError | None, status_code: int = 200,
    again: Prefill | None = None,
) -> Response:
    group = await state.service.group(ref) if ref is not None else None
    names = state.service.startable(who, group)
    jobs = [state.service.registry.get(n) for n in names]
    spec: JobSpec | None = None
    if name is not None:
        spec = state.service.registry.get(name)  # an unknown job: 400
    elif len(jobs) == 1:
        spec = jobs[0]
    fields = [field_of(n, p) for n, p in spec.params.items()] if spec else []
    return render(request, "start.html", {
        "group": group,
        "base": ui_base(group.name if group else None),
        "jobs": jobs,
        "spec": spec,
        "fields": fields,
        "values": values,
        "error": str(error) if error else None,
        "error_field": getattr(error, "name", None),
        "again": again,
        "nav": "groups" if group else "threads",
    }, status_code)


@page
async def start(request: Request) -> Response:
    ref = request.path_params.get("group")
    # The session's right to start here is checked before the form is read, and the job's as
    # soon as its field arrives, as the service route does: a non-member's (or a too-low
    # role's) upload is refused unread and the connection closed. The CSRF token travels in
    # the form, so it is checked once the form is read, before anything is done.
    state = app_state(request)
    user = await session_user(request, state.identity)
    if user is None:
        raise AuthenticationFailed("Sign in first")
    service, caller = state.service, await state.identity.principal(user)
    group = await service.may_start(caller, ref)

    def check_job(name: str) -> None:
        service.job_for(caller, group, name)

    multipart = request.headers.get("content-type", "").lower().startswith("multipart/")
    form = await job_body.read_form(request, multipart, check_job)
    try:
        state, who = await poster(request, form)
        job = form.get("job")
        name = job.strip() if isinstance(job, str) else ""
        texts = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != CSRF_FIELD}
        try:
            thread, _ = await state.service.start(who, ref, name, fields_of(form))
        except (BadParameter, TooManyActiveThreads) as exc:
            status = 429 if isinstance(exc, TooManyActiveThreads) else 400
            return await _form(request, state, who, ref, name or None, texts, exc, status)
    finally:
        await form.close()
    return see_other(f"{ui_base(ref)}/threads/{thread.id}?notice=started")


def fields_of(form: FormData) -> list[tuple[str, str | Upload]]:
    """The job's fields: declared inputs left empty are left out (the job's default holds),
    and each `NAME=value` line of the `more` text area is one more field."""
    fields: list[tuple[str, str | Upload]] = []
    for key, value in form.multi_items():
        if key in OWN_FIELDS:
            continue
        if isinstance(value, UploadFile):
            if value.filename:
                content_type = value.content_type or "application/octet-stream"
                fields.append((key, Upload(value.filename, content_type, value.file)))
        elif value != "":
            fields.append((key, value))
    more = form.get(MORE)
    for number, line in enumerate(more.splitlines() if isinstance(more, str) else [], 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise BadParameter(MORE, f"line {number} is not NAME=value")
        fields.append((key.strip(), value))
    return fields
