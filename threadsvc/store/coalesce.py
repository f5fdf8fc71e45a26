"""Sending a message once for many who ask: PostgreSQL's NOTIFY costs a statement, and a busy node
announces `new NODE -` after every start, most of them while the last is still on its way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Coalescer:
    """Sends each message text through `send`; a caller asking for a message that is already
    waiting for its turn (behind a send of the same text) joins that send instead of adding one.

    A caller returns once a send that *began after its call* has ended (raising what the send
    raised), so anything it stored before calling is announced after it was stored: joining a
    send already under way would not promise that, so a second one waits behind it. The sends
    run as tasks of their own, so a caller that is cancelled cancels no one else's send."""

    def __init__(self, send: Callable[[str], Awaitable[None]]) -> None:
        self._send = send
        self._waiting: dict[str, asyncio.Task[None]] = {}  # not begun: later callers join it
        self._sending: dict[str, asyncio.Task[None]] = {}  # begun: later callers wait behind it

    async def __call__(self, message: str) -> None:
        task = self._waiting.get(message)
        if task is None:
            task = asyncio.create_task(self._send_after(message, self._sending.get(message)))
            task.add_done_callback(_retrieve)
            self._waiting[message] = task
        await asyncio.shield(task)

    async def _send_after(self, message: str, ahead: asyncio.Task[None] | None) -> None:
        if ahead is not None:
            await asyncio.wait([ahead])  # its outcome is for its own callers
        me = self._waiting.pop(message)
        self._sending[message] = me
        try:
            await self._send(message)
        finally:
            if self._sending.get(message) is me:
                del self._sending[message]


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a failed send's exception as seen, even when every caller was cancelled meanwhile."""
    if not task.cancelled():
        task.exception()
