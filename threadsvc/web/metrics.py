"""/metrics in the web layer: who may scrape it, and the middleware that times every answer.

Threat model: the figures tell how busy the server is, which jobs run and which routes fail,
so they are for operators: an administrator's credentials, or the bearer of `metrics-token`
(a secret setting for the scraper, compared in constant time; a wrong one is 401 as any bad
credential). The middleware labels a request by the template of the route Starlette matched
(found by the router's own match, kept in the scope: no second matching), never by its path:
every path no route matches is one label (UNMATCHED), and methods beyond the usual ones are
one label too, so a scanner cannot add series.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadsvc.errors import Forbidden
from threadsvc.metrics import UNMATCHED
from threadsvc.state import AppState, state_of
from threadsvc.web.auth import authenticate


async def check_scraper(request: Request, state: AppState) -> None:
    """Returns when the caller may read /metrics: the bearer of `metrics-token`, or an
    administrator (any credentials, else 401); 403 for anyone else."""
    token = state.settings.metrics_token
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and _same(value.strip(), token):
        return
    who = await authenticate(request, state.identity)  # a wrong token is a 401 here
    if not who.is_admin:
        raise Forbidden("Only administrators and the bearer of metrics-token may read /metrics")


def _same(given: str, expected: str) -> bool:
    """Constant time, whatever the lengths (digests of equal length are compared)."""
    digest = hashlib.sha256
    return hmac.compare_digest(digest(given.encode()).digest(), digest(expected.encode()).digest())


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route the router matched (a mount's prefix before a mounted
    route's), or UNMATCHED."""
    route = scope.get("route")
    if not isinstance(route, Route):  # none, or a mount none of whose routes matched
        return UNMATCHED
    mounted = str(scope.get("root_path", ""))[len(root_path):]  # the prefix of a Mount
    return mounted + route.path


class RequestMetrics:
    """Times each answer, from the request to the answer's head (a long-poll's wait counts; a
    stream's or a download's body does not), by method, route template and status. It is the
    innermost middleware, so that it shares its scope with the router, and sees the path as
    routed (`/ps/api/...` as `/ps/service/...`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = state_of(scope["app"]) if scope["type"] == "http" else None
        if state is None:
            await self.app(scope, receive, send)
            return
        metrics = state.metrics
        began = time.perf_counter()
        root_path = str(scope.get("root_path", ""))
        answered = False

        def observe(status: int) -> None:
            nonlocal answered
            answered = True
            metrics.request(scope["method"], route_template(scope, root_path), status,
                            time.perf_counter() - began)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and not answered:
                observe(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except asyncio.CancelledError:
            raise  # the client left, or the server stops: nothing was answered
        except Exception:
            if not answered:  # the server's error handler answers 500
                observe(500)
            raise
