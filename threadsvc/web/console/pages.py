"""Rendering the console's pages: templates, the headers every page gets, who is asking, and
the service's errors shown as pages (with the status codes of threadsvc.web.errors.TABLE)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from threadsvc.errors import AuthenticationFailed, Forbidden, StoreUnavailable, ThreadsvcError
from threadsvc.management import may_administer
from threadsvc.models import Principal, iso
from threadsvc.service import may_see_dashboard
from threadsvc.state import AppState, app_state
from threadsvc.web import errors
from threadsvc.web.auth import authenticate, principal_of, session_user
from threadsvc.web.console.session import CSRF_FIELD, Console

log = logging.getLogger("threadsvc.console")

UI = "/ps/ui"
SERVICE = "/ps/service"
HOME = f"{UI}/groups"
SIGN_IN = f"{UI}/sign-in"
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
NOTICES = {  # ?notice=KEY after a redirect; never text from the query itself
    "started": "The thread has started.",
    "cancelled": "The thread is cancelled.",
    "cancelling": "Cancel requested: the thread stops as soon as it can.",
    "finished": "The thread had already finished: nothing changed.",
    "signed-out": "You have signed out.",
    "no-problem": "No warning or error follows in the log.",
}
TITLES = {400: "Not accepted", 401: "Sign-in needed", 403: "Not allowed", 404: "Not found",
          409: "Not now", 410: "Gone", 413: "Too large", 429: "Too many", 503: "Unavailable"}


class CsrfRefused(Forbidden):
    """A console form came without the token of its session (or with a stale one)."""


# -- templates --------------------------------------------------------------------------------
def when(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock(ms: int) -> str:
    """The time of day (UTC) with milliseconds, for log lines."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


def size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def summary(doc: str) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def ticks(text: str) -> Markup:
    """Text with `quoted` words as code (everything else escaped)."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("threadsvc.web.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, clock=clock, iso=iso, size=size, summary=summary, ticks=ticks)
    env.globals["may_administer"] = may_administer  # the nav's Admin entry asks the rule
    env.globals["may_see_dashboard"] = may_see_dashboard  # the nav's Dashboard entry
    return env


TEMPLATES = Jinja2Templates(env=_environment())


def console(request: Request) -> Console:
    return app_state(request).console


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200,
) -> Response:
    """A page: the template with who is asking, a CSRF token for its forms, and a notice."""
    notice = NOTICES.get(request.query_params.get("notice", ""))
    full = {
        "who": getattr(request.state, "who", None),
        "csrf": console(request).csrf_token(request),
        "notice": notice,
        "nav": "",
        **context,
    }
    return TEMPLATES.TemplateResponse(request, name, full, status_code=status_code,
                                      headers=HEADERS)


def error_page(request: Request, exc: ThreadsvcError) -> Response:
    status, _ = errors.status_of(exc) or (500, "0500")
    message = str(exc)
    if isinstance(exc, StoreUnavailable):
        message = "The store is unavailable; try again"
    if isinstance(exc, CsrfRefused):
        title = "Form refused"
    else:
        title = TITLES.get(status, "Something went wrong")
    return render(request, "error.html", {"status": status, "title": title, "message": message},
                  status)


def safe_next(raw: object, default: str = HOME) -> str:
    """A place inside the console to go to after a form, never another site."""
    if not isinstance(raw, str) or not raw.startswith(UI + "/") or len(raw) > 2000:
        return default
    if "//" in raw or "\\" in raw or any(ord(c) < 0x21 for c in raw):
        return default
    return raw


def see_other(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


# -- who is asking ----------------------------------------------------------------------------
async def viewer(request: Request) -> tuple[AppState, Principal]:
    """For pages (GET): the same authentication as the services, the session cookie included."""
    state = app_state(request)
    who = await authenticate(request, state.identity)
    request.state.who = who
    return state, who


async def poster(request: Request, form: FormData) -> tuple[AppState, Principal]:
    """For the console's forms (POST): the CSRF token of the session first, then its user."""
    state = app_state(request)
    if not console(request).csrf_ok(request, form.get(CSRF_FIELD)):
        raise CsrfRefused(
            "This form was not sent from a page of this console (or the page is too old): "
            "nothing was done. Open the page again and send the form from there."
        )
    user = await session_user(request, state.identity)
    if user is None:
        raise AuthenticationFailed("Sign in first")
    who = await principal_of(request, state.identity, user)
    request.state.who = who
    return state, who


Handler = Callable[[Request], Awaitable[Response]]


def page(handler: Handler) -> Handler:
    """A console endpoint: errors of the service become pages; no credentials → sign in."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            response = await handler(request)
        except AuthenticationFailed as exc:
            if request.method in ("GET", "HEAD"):
                there = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return see_other(f"{SIGN_IN}?next={quote(there, safe='/')}")
            return error_page(request, exc)
        except ThreadsvcError as exc:
            return error_page(request, exc)
        except Exception:
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            context = {"status": 500, "title": "Something went wrong",
                       "message": "Internal error; it has been logged"}
            return render(request, "error.html", context, 500)
        return response

    return endpoint


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The console's answer for a path it does not have."""
    request = Request(scope, receive)
    message = f"There is no page at {request.url.path}"
    response = render(request, "error.html",
                      {"status": 404, "title": "Not found", "message": message}, 404)
    await response(scope, receive, send)


# -- links ------------------------------------------------------------------------------------
def ui_base(group: str | None) -> str:
    return f"{UI}/groups/{group}" if group is not None else UI


def service_base(group: str | None) -> str:
    return f"{SERVICE}/groups/{group}" if group is not None else SERVICE
