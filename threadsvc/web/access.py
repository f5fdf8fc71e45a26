"""The access log and the headers of every answer: one middleware, outermost, writes one line
per request (uvicorn's own access log is off) and answers every request with its
`X-Request-ID` and `X-Content-Type-Options: nosniff` (errors, 304s, redirects, downloads, event
streams, console pages, /health: a browser must not guess that a result, a log or an error
message naming a client's text is HTML or script). It also times every answer for /metrics,
from the request to the answer's head (threadsvc.web.metrics labels it). One layer for all of
it: each layer costs every request a coroutine and a `send` wrapper.

The line says the client, the authenticated user (`-` when none: `authenticate` notes the
user in the request's AccessRecord, so nothing is looked up twice), the method, the path and
query as the client sent them, the status (0: no answer was sent, the client went away), the
body bytes sent and the time from the request's head to its last byte. It is one logging
record, formatted by threadsvc.logs in the request's task and written off it; its filters
(result links redacted) apply as to any other line.

Threat model: a client chooses the path, the request id and its username. An `X-Request-ID`
is kept only when it is 1 to 128 characters of letters, digits and `._~:@+/=-`: anything else
(newlines, 10 kB, non-ASCII) is replaced by a fresh id and never logged. Path and username
are logged with every byte outside printable ASCII, the double quote and the backslash
escaped (`\\xNN`), so a text line cannot be ended nor its fields shifted from outside.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadsvc.logs import ACCESS, AccessLine, request_id
from threadsvc.metrics import UNMATCHED

ACCESS_KEY = "threadsvc.access"  # the scope's AccessRecord
HEADER = b"x-request-id"
NOSNIFF = (b"x-content-type-options", b"nosniff")
_SANE_ID = re.compile(rb"[A-Za-z0-9._~:@+/=-]{1,128}").fullmatch
_PLAIN = re.compile(r"[!#-\[\]-~]*").fullmatch  # printable ASCII but the quote and backslash
# A fresh id: this process's random prefix and a counter (unique without a system call).
_PREFIX = secrets.token_hex(4)
_COUNTER = itertools.count(1)


class AccessRecord:
    """What the layers inside tell the access log: a mutable object in the scope, so that it is
    the same one in the copies of the scope that inner middleware make."""

    __slots__ = ("request_id", "user")

    def __init__(self, rid: str) -> None:
        self.request_id = rid
        self.user = "-"


def note_user(scope: Scope, username: str) -> None:
    """The request was authenticated as `username`."""
    record = scope.get(ACCESS_KEY)
    if record is not None:
        record.user = username


def id_headers(scope: Scope) -> dict[str, str]:
    """`X-Request-ID` for an answer made outside this middleware (the 500 of an unexpected
    error), when the request came through it."""
    record = scope.get(ACCESS_KEY)
    return {"X-Request-ID": record.request_id} if record is not None else {}


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger(ACCESS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = _incoming_id(scope["headers"]) or f"{_PREFIX}-{next(_COUNTER):x}"
        id_header = (HEADER, rid.encode())
        record = scope[ACCESS_KEY] = AccessRecord(rid)
        target = _target(scope)  # before the layers inside route it (/ps/api is rewritten)
        root_path = str(scope.get("root_path", ""))  # before a mount lengthens it
        status = sent = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header, NOSNIFF]
                observe_answer(scope, root_path, status, time.perf_counter() - started)
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The 500 is sent, and the error logged, outside, by Starlette's error middleware:
            # the request id stays set for its line (the request's task ends with it).
            if not status:
                status = 500
                observe_answer(scope, root_path, status, time.perf_counter() - started)
            raise
        else:
            request_id.reset(token)
        finally:
            if self.log.isEnabledFor(logging.INFO):
                self._write(scope, target, record, status, sent, time.perf_counter() - started)

    def _write(
        self, scope: Scope, target: bytes, record: AccessRecord, status: int, sent: int,
        seconds: float,
    ) -> None:
        client = scope.get("client")
        args = (
            _plain(client[0].encode()) if client else "-",
            _plain(record.user.encode()),
            scope["method"],
            _plain(target),
            status,
            sent,
            round(seconds * 1000, 1),
        )
        self.log.handle(AccessLine(args, record.request_id))


def observe_answer(scope: Scope, root_path: str, status: int, seconds: float) -> None:
    """One answer in /metrics' request histogram, by method, route template and status."""
    state = getattr(scope["app"].state, "threadsvc", None)  # none while the app starts
    if state is not None:
        state.metrics.request(scope["method"], route_template(scope, root_path), status, seconds)


def route_template(scope: Scope, root_path: str) -> str:
    """The template of the route the router matched (a mount's prefix before a mounted
    route's), or UNMATCHED: found by the router's own match, which it keeps in this scope (no
    second matching); every path no route matches is one label, so a scanner adds no series."""
    route = scope.get("route")
    if not isinstance(route, Route):  # none, or a mount none of whose routes matched
        return UNMATCHED
    mounted = str(scope.get("root_path", ""))[len(root_path):]  # the prefix of a Mount
    return mounted + route.path


def _incoming_id(headers: Any) -> str | None:
    for name, value in headers:
        if name == HEADER:
            return value.decode("ascii") if _SANE_ID(value) else None
    return None


def _target(scope: Mapping[str, Any]) -> bytes:
    """The path and query as the client sent them (not percent-decoded)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return raw + b"?" + query if query else raw


def _plain(data: bytes) -> str:
    text = data.decode("latin-1")
    if _PLAIN(text):
        return text
    return "".join(chr(b) if _PLAIN(chr(b)) else f"\\x{b:02x}" for b in data)

