"""uvicorn as threadsvc runs it: a deadline for reading a request's head, and a shutdown that
first tells waiting clients.

uvicorn times out idle keep-alive connections only after a response, and any byte a client
sends cancels even that; a client that connects and sends nothing, or its headers a byte at a
time (slowloris), holds its connection for ever. Here every connection must start a request
(its headers complete) within `read-timeout` seconds of connecting or of its last response,
or it is closed. The body's pace is BodyLimit's business (threadsvc.web.middleware).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol


def http_protocol(read_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's protocol (httptools when installed, else h11) with the deadline."""
    base: Any = AutoHTTPProtocol

    class DeadlineProtocol(base):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None
        _idle_since = 0.0  # when the connection last started waiting for a request

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._idle_since = self.loop.time()
            if read_timeout > 0:
                self._deadline = self.loop.call_later(read_timeout, self._expire)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # No new timer per request (that would cost every poll): the one running looks
            # again when it fires.
            self._idle_since = self.loop.time()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _expire(self) -> None:
            if self.transport.is_closing():
                return
            busy = self.cycle is not None and not self.cycle.response_complete
            left = read_timeout if busy else self._idle_since + read_timeout - self.loop.time()
            if left > 0:  # a request is being answered, or one was answered meanwhile
                self._deadline = self.loop.call_later(left, self._expire)
            else:
                self.transport.close()

    return DeadlineProtocol


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


def serve(config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
    """Run uvicorn's server with `config` (what uvicorn.run does for one process)."""
    config.load_app()
    server = Server(config, on_exit)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE
