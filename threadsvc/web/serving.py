"""uvicorn as threadsvc runs it: a deadline for reading a request's head, a cap on open
connections, and a shutdown that first tells waiting clients.

uvicorn times out idle keep-alive connections only after a response, and any byte a client
sends cancels even that; a client that connects and sends nothing, or its headers a byte at a
time (slowloris), holds its connection for ever. Here every connection must start a request
(its headers complete) within `read-timeout` seconds of connecting or of its last response,
or it is closed. The body's pace is BodyLimit's business (threadsvc.web.middleware).

Every connection costs a file descriptor. Clients that open more connections than the process
may open files (1,100 long-polls against systemd's default 1,024) make accept() fail: new
clients, /health included, are then not answered at all, and asyncio logs each failure. So the
connections are capped below the open-file limit, leaving room for the store, files and jobs
(`ConnectionLimits`): past `serve` connections, an idle keep-alive connection is closed to make
room, else the newcomer is answered 503 (error `0503`, Connection: close; /health still `ok`);
past `ceiling`, a newcomer is closed at once.

What the HTTP parser refuses (a control character in a header, a malformed request line,
headers over MAX_HEADERS bytes) never reaches the application; uvicorn would answer it in plain
text. Here it is the error document of any other 400 (431 for headers too large), with
nosniff. On the fast stack (httptools) the limits are kept here: httptools has none, and a
client could otherwise send headers of any size.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import FrameType
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol

from threadsvc.web.errors import error_response
from threadsvc.web.responses import XML_TYPE
from threadsvc.xml.render import error_element, to_xml

log = logging.getLogger("threadsvc.web")

FILES_RESERVED = 64  # descriptors kept for the store, the log, the listening socket, libraries
FILES_PER_RUNNING_JOB = 8  # a running job's files, uploads, pipes of a command
# On httptools, which has no limits of its own: the most a request's headers may take (h11's
# limit, uvicorn's default, on the plain stack), and the most read while a head is incomplete
# (more than one read holds, so a request line that came whole reaches the application, which
# names what is wrong with it, as on h11).
MAX_HEADERS = 16 * 1024
MAX_HEAD = 256 * 1024
_HEAD_TOO_LARGE = "The request's line or headers are too large"


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing headers over MAX_HEADERS."""
_MIXIN: Any = object  # the protocol classes are uvicorn's, untyped: the mixin takes them as Any


@dataclass(frozen=True)
class ConnectionLimits:
    serve: int  # connections served at once; newcomers beyond are answered 503
    ceiling: int  # connections held at all; newcomers beyond are closed unanswered


def connection_limits(max_connections: int, max_running: int) -> ConnectionLimits:
    """The caps under this process's open-file limit (read now), said in the log:
    `max-connections`, or when 0 three quarters of what the limit leaves for connections."""
    files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files == resource.RLIM_INFINITY:
        files = 1 << 20
    ceiling = max(16, files - FILES_RESERVED - FILES_PER_RUNNING_JOB * max_running)
    automatic = ceiling * 3 // 4
    serve = automatic if max_connections == 0 else min(max_connections, automatic)
    if max_connections > automatic:
        log.warning("max-connections %d is more than the open-file limit %d leaves room for; "
                    "raise the limit (LimitNOFILE) to use it", max_connections, files)
    log.info("serving at most %d connections at once (open-file limit %d; closed at once "
             "beyond %d)", serve, files, ceiling)
    return ConnectionLimits(serve, ceiling)


async def _at_capacity(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer to a connection beyond the cap: 503 `0503` (liveness still answers `ok`)."""
    if scope["type"] != "http":
        return
    headers = {"Connection": "close", "Retry-After": "1", "X-Content-Type-Options": "nosniff"}
    if scope["path"] == "/health":
        await PlainTextResponse("ok\n", headers=headers)(scope, receive, send)
        return
    message = "The server has as many connections as it can take; try again shortly"
    await error_response(Request(scope), 503, "0503", message, headers)(scope, receive, send)


class _Deadline(_MIXIN):  # type: ignore[misc]
    """Mixed into uvicorn's protocol: the deadline and the caps that `http_protocol` sets."""

    read_timeout = 0.0
    limits: ConnectionLimits | None = None
    idle: dict[Any, None]  # keep-alive connections between requests, oldest first
    _deadline: asyncio.TimerHandle | None = None
    _idle_since = 0.0  # when the connection last started waiting for a request
    _read: int | None = None  # bytes of the reads that ended inside this request's head
    _headers = 0  # bytes of this request's headers parsed so far (httptools)
    _too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        if self.read_timeout > 0:
            self._deadline = self.loop.call_later(self.read_timeout, self._expire)
        if self.limits is not None and len(self.connections) > self.limits.serve:
            self._over_the_cap(len(self.connections))

    def _over_the_cap(self, open_now: int) -> None:
        limits, idle = self.limits, self.idle
        assert limits is not None
        while open_now > limits.serve and idle:  # make room: close the oldest idle one
            oldest = next(iter(idle))
            del idle[oldest]
            oldest.transport.close()
            open_now -= 1
        if open_now <= limits.serve:
            return
        log.warning("at the connection cap (%d): new connections are refused", limits.serve)
        if open_now > limits.ceiling:
            transport: asyncio.Transport = self.transport
            transport.close()
        else:
            self.app = _at_capacity

    def data_received(self, data: bytes) -> None:
        self.idle.pop(self, None)  # a request is coming
        super().data_received(data)
        if self._read is not None and not self.transport.is_closing():
            self._read += len(data)  # this read ended inside a request's head (httptools)
            if self._read > MAX_HEAD:  # an endless header value would be buffered whole
                self._refuse(431, _HEAD_TOO_LARGE)

    # httptools' callbacks (h11 never calls them: it keeps its own limit on an incomplete
    # head). Headers that came in one read are counted as they are parsed.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._read = self._headers = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._headers += len(name) + len(value) + 4
        if self._headers > MAX_HEADERS:
            self._too_large = True
            raise _HeadTooLarge  # the parser stops; uvicorn then calls send_400_response

    def on_headers_complete(self) -> None:
        self._read = None
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what its parser refuses, as the error document of any other 400."""
        if self._too_large:
            self._refuse(431, _HEAD_TOO_LARGE)
            return
        self._refuse(400, "The request is not valid HTTP/1.1: a header holds a character HTTP "
                          "does not allow, or the request line or framing is malformed")

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with the error document (id 0201) and close: what the parser refused
        never reaches the application, so this answer is made here, on the protocol."""
        path = bytes(getattr(self, "url", b"") or b"").split(b"?", 1)[0][:200]
        body = to_xml(error_element("0201", path.decode("latin-1"), message))
        head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"content-type: %s\r\ncontent-length: %d\r\nx-content-type-options: "
                    b"nosniff\r\nconnection: close\r\n\r\n" % (XML_TYPE.encode(), len(body)))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # No new timer per request (that would cost every poll): the one running looks
        # again when it fires.
        self._idle_since = self.loop.time()
        between = self.cycle is None or self.cycle.response_complete  # none pipelined
        if self.limits is not None and between and not self.transport.is_closing():
            self.idle[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.idle.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _expire(self) -> None:
        if self.transport.is_closing():
            return
        busy = self.cycle is not None and not self.cycle.response_complete
        left = self.read_timeout if busy else self._idle_since + self.read_timeout - self.loop.time()
        if left > 0:  # a request is being answered, or one was answered meanwhile
            self._deadline = self.loop.call_later(left, self._expire)
        else:
            self.transport.close()


def http_protocol(read_timeout: float, limits: ConnectionLimits | None = None,
                  stack: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's protocol with the deadline and caps: on the `auto` stack httptools' when
    installed, else h11's; on the `plain` stack h11's."""
    base = H11Protocol if stack == "plain" else AutoHTTPProtocol
    settings: dict[str, Any] = {"read_timeout": read_timeout, "limits": limits, "idle": {}}
    protocol: type[asyncio.Protocol] = type("DeadlineProtocol", (_Deadline, base), settings)
    return protocol


def http_stack(stack: str = "auto") -> tuple[str, str]:
    """The event loop and HTTP parser `stack` runs on, as uvicorn's `loop` setting and the name
    of the parser: on `auto`, uvloop and httptools when installed (dependencies where they
    build), else asyncio and h11; on `plain`, asyncio and h11."""
    if stack == "plain":
        return "asyncio", "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return loop, "httptools" if AutoHTTPProtocol is not H11Protocol else "h11"


class Server(uvicorn.Server):
    """On SIGTERM or SIGINT, `on_exit` runs before uvicorn drains its connections: long-polls
    and event streams answer at once (threadsvc.changes.Changes.close) instead of holding the
    drain until uvicorn cancels them mid-answer."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._on_exit()


# How long a thread may hold the GIL while another waits for it. The store's threads hand the
# GIL back and forth at every SQLite call; behind a job busy in Python on the event loop,
# CPython's default 5 ms per handover made one request's few dozen calls take seconds.
SWITCH_INTERVAL = 0.0005


def serve(config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
    """Run uvicorn's server with `config` (what uvicorn.run does for one process)."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    config.load_app()
    server = Server(config, on_exit)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
