"""The NOTIFY coalescer (threadsvc/store/coalesce.py): identical announcements waiting for their
turn go out once, and every caller returns only after a send that began after its call."""

from __future__ import annotations

import asyncio

import pytest

from threadsvc.errors import StoreUnavailable
from threadsvc.store.coalesce import Coalescer

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Sender:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()
        self.fail = False

    async def __call__(self, message: str) -> None:
        self.sent.append(message)
        await self.gate.wait()
        if self.fail:
            raise StoreUnavailable("down")


async def test_callers_during_a_send_share_the_next_one() -> None:
    sender = Sender()
    send = Coalescer(sender)
    first = asyncio.create_task(send("new a -"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sender.sent == ["new a -"]  # under way
    later = [asyncio.create_task(send("new a -")) for _ in range(10)]
    other = asyncio.create_task(send("changed a x"))
    await asyncio.sleep(0.01)
    assert sender.sent == ["new a -", "changed a x"]  # the ten wait behind the first
    assert not any(task.done() for task in later)
    sender.gate.set()
    await asyncio.gather(first, other, *later)
    assert sender.sent == ["new a -", "changed a x", "new a -"]  # the ten: one more send


async def test_a_failed_send_fails_each_of_its_callers_only() -> None:
    sender = Sender()
    sender.fail = True
    send = Coalescer(sender)
    callers = [asyncio.create_task(send("new a -")) for _ in range(3)]
    await asyncio.sleep(0.01)
    sender.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, StoreUnavailable) for result in results)
    assert sender.sent == ["new a -"]
    sender.fail = False
    await send("new a -")  # the next call sends again
    assert sender.sent == ["new a -", "new a -"]


async def test_a_cancelled_caller_does_not_cancel_the_send() -> None:
    sender = Sender()
    send = Coalescer(sender)
    first = asyncio.create_task(send("new a -"))
    second = asyncio.create_task(send("new a -"))
    await asyncio.sleep(0.01)
    first.cancel()
    sender.gate.set()
    await second
    assert sender.sent == ["new a -"] and first.cancelled()
