"""The access log and the request id: one middleware, outermost, writes one line per request
(uvicorn's own access log is off) and answers every request with its `X-Request-ID`.

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

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadsvc.logs import ACCESS, AccessLine, request_id

ACCESS_KEY = "threadsvc.access"  # the scope's AccessRecord
HEADER = b"x-request-id"
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
        status = sent = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The 500 is sent, and the error logged, outside, by Starlette's error middleware:
            # the request id stays set for its line (the request's task ends with it).
            status = status or 500
            raise
        else:
            request_id.reset(token)
        finally:
            if self.log.isEnabledFor(logging.INFO):
                self._write(scope, record, status, sent, time.perf_counter() - started)

    def _write(
        self, scope: Scope, record: AccessRecord, status: int, sent: int, seconds: float
    ) -> None:
        client = scope.get("client")
        args = (
            _plain(client[0].encode()) if client else "-",
            _plain(record.user.encode()),
            scope["method"],
            _plain(_target(scope)),
            status,
            sent,
            round(seconds * 1000, 1),
        )
        self.log.handle(AccessLine(args, record.request_id))


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

