"""ASGI middleware: /ps/api as an alias of /ps/service, and the caps on request bodies (the
headers every answer carries are threadsvc.web.access's)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadsvc.errors import BodyTooLarge, RequestTooSlow, ServerBusy
from threadsvc.web.responses import FORMAT_KEY, PATH_KEY, PREFIX_KEY

API, SERVICE = "/ps/api", "/ps/service"
MIN_PACE = 1024  # bytes a second a body must average once the read timeout has passed
LARGE_BODY = 1024 * 1024  # a body above this (or chunked) takes one of the few reading slots
SLOT_WAIT = 30.0  # seconds a large body waits for a slot when no read timeout is set
FILE_NAMES = frozenset({"openapi.json", ".json", ".xml"})  # last segments that are not suffixed


class ApiAlias:
    """`/ps/api/...` is `/ps/service/...`; a last segment ending `.xml`/`.json` picks the format."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = _routable_path(scope)
            scope[PATH_KEY] = path
            if path == API or path.startswith(API + "/"):
                head, _, last = path.rpartition("/")
                for suffix in (".json", ".xml"):
                    if last.endswith(suffix) and last not in FILE_NAMES:
                        scope[FORMAT_KEY] = suffix[1:]
                        path = f"{head}/{last[: -len(suffix)]}"
                        break
                # in place, not a copy: the outermost middleware reads the route the router
                # sets in this scope (threadsvc.web.access)
                scope["path"], scope["raw_path"] = SERVICE + path[len(API):], None
                scope[PREFIX_KEY] = API
            elif path != scope["path"]:
                scope["path"] = path
        await self.app(scope, receive, send)


def _routable_path(scope: Scope) -> str:
    """The path with an encoded slash (`%2F`) kept inside its segment, as the client meant
    it: `/groups/a%2Fb/threads` names a group `a%2Fb` (there is none), not two segments."""
    raw = scope.get("raw_path")
    if not raw or b"%2f" not in raw.lower():
        return str(scope["path"])
    text = raw.decode("latin-1")
    return unquote(text.replace("%2F", "%252F").replace("%2f", "%252f"))


class BodyLimit:
    """What a request body may cost the server, whoever sends it.

    Refused: bodies above `limit` bytes (at once by Content-Length, else while reading), and
    bodies too slow: no byte for `read_timeout` seconds, or, once that time has passed, less
    than MIN_PACE bytes a second on average (a slowloris body holds a connection for ever).
    At most `large_at_once` large bodies (above LARGE_BODY bytes, or chunked) are read at
    once: the others are not read at all until a slot frees, for up to `read_timeout`
    seconds (30 when unset), then get 503 with Retry-After. The slot is taken at the first
    read, so a request refused before its body is read (a caller without the right) never
    holds one. An answer sent before the whole body was read closes the connection: the
    server does not read the rest of a body it has refused.
    """

    def __init__(
        self, app: ASGIApp, limit: int, read_timeout: float = 0.0, large_at_once: int = 8
    ) -> None:
        self.app = app
        self.limit = limit
        self.read_timeout = read_timeout
        self.slots = asyncio.Semaphore(max(large_at_once, 1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length, chunked = _framing(scope)
        if not chunked and not length:  # no body (a poll): nothing to limit or wait for
            await self.app(scope, receive, send)
            return
        body = _Body(self, scope, receive, send, length, chunked)
        try:
            await self.app(scope, body.receive, body.send)
        finally:
            body.give_back_slot()

    async def take_slot(self, wait: float) -> None:
        try:
            async with asyncio.timeout(wait):
                await self.slots.acquire()
        except TimeoutError:
            raise ServerBusy(
                f"The server is reading as many large bodies as it may; try again ({wait:g} s)"
            ) from None


class _Body:
    """One request's body as BodyLimit lets it through: `receive` for the application, and
    `send`, which closes the connection when the answer goes before the whole body came."""

    def __init__(self, limits: BodyLimit, scope: Scope, receive: Receive, send: Send,
                 length: int | None, chunked: bool) -> None:
        self._limits, self._scope, self._receive, self._send = limits, scope, receive, send
        if length is not None and length > limits.limit:
            scope["threadsvc.too_large"] = True
        self._large = chunked or (length or 0) > LARGE_BODY
        self._received = 0
        self._complete = not chunked and not length  # the whole body is in (or there is none)
        self._holding = False  # one of the slots for large bodies
        self._began = 0.0  # when reading began

    async def receive(self) -> Message:
        limit, timeout = self._limits.limit, self._limits.read_timeout
        if self._scope.get("threadsvc.too_large"):
            raise BodyTooLarge(f"The body is larger than {limit} bytes")
        if self._complete:
            return await self._receive()
        if self._large and not self._holding:
            await self._limits.take_slot(timeout or SLOT_WAIT)
            self._holding = True
        if not self._began:
            self._began = time.monotonic()
        try:
            async with asyncio.timeout(timeout or None):
                message = await self._receive()
        except TimeoutError:
            raise RequestTooSlow(f"No part of the body arrived for {timeout:g} s") from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            self._complete = not message.get("more_body", False)
            self._check_pace(limit, timeout)
        elif message["type"] == "http.disconnect":
            self._complete = True
        if self._complete:
            self.give_back_slot()
        return message

    def _check_pace(self, limit: int, timeout: float) -> None:
        if self._received > limit:
            raise BodyTooLarge(f"The body is larger than {limit} bytes")
        elapsed = time.monotonic() - self._began
        slow = self._received < MIN_PACE * elapsed
        if timeout and not self._complete and elapsed > timeout and slow:
            raise RequestTooSlow(f"The body arrives slower than {MIN_PACE} bytes a second")

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and not self._complete:
            headers = [*message.get("headers", []), (b"connection", b"close")]
            message = {**message, "headers": headers}
        await self._send(message)

    def give_back_slot(self) -> None:
        if self._holding:
            self._holding = False
            self._limits.slots.release()


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The body's Content-Length (None when absent or unreadable), and whether it is chunked."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    return length, chunked
