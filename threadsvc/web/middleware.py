"""ASGI middleware: /ps/api as an alias of /ps/service, the cap on request bodies, and the
headers every answer carries."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import unquote

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadsvc.errors import BodyTooLarge, RequestTooSlow
from threadsvc.web.responses import FORMAT_KEY, PATH_KEY, PREFIX_KEY

API, SERVICE = "/ps/api", "/ps/service"
MIN_PACE = 1024  # bytes a second a body must average once the read timeout has passed
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
                scope = dict(scope, path=SERVICE + path[len(API):], raw_path=None)
                scope[PREFIX_KEY] = API
            elif path != scope["path"]:
                scope = dict(scope, path=path)
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
    """Refuse bodies above `limit` bytes: at once by Content-Length, else while reading; and
    bodies too slow: no byte for `read_timeout` seconds, or, once that time has passed, less
    than MIN_PACE bytes a second on average (a slowloris body holds a connection for ever)."""

    def __init__(self, app: ASGIApp, limit: int, read_timeout: float = 0.0) -> None:
        self.app = app
        self.limit = limit
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, timeout = self.limit, self.read_timeout
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > limit
                except ValueError:
                    too_large = False
                if too_large:
                    scope["threadsvc.too_large"] = True
        received = 0
        complete = False  # the whole body is in: later receives only wait for a disconnect
        began = time.monotonic()

        async def limited() -> Message:
            nonlocal received, complete
            if scope.get("threadsvc.too_large"):
                raise BodyTooLarge(f"The body is larger than {limit} bytes")
            if complete or timeout <= 0:
                return await receive()
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                raise RequestTooSlow(f"No part of the body arrived for {timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise BodyTooLarge(f"The body is larger than {limit} bytes")
                elapsed = time.monotonic() - began
                if not complete and elapsed > timeout and received < MIN_PACE * elapsed:
                    raise RequestTooSlow(
                        f"The body arrives slower than {MIN_PACE} bytes a second"
                    )
            return message

        await self.app(scope, limited, send)


class NoSniff:
    """`X-Content-Type-Options: nosniff` on every answer (errors, 304s, redirects, downloads,
    event streams, console pages, /health): a browser must not guess that a result, a log or
    an error message naming a client's text is HTML or script."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, sending)
