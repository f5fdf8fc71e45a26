"""An event stream, in-process: a caller found to have lost the right to the log while the log
so far is being sent gets no log event after that, from the store or live."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from threadsvc.changes import Changes
from threadsvc.models import Level, LogEvent, LogPage, NewLogEvent, Principal, Status, Thread, User
from threadsvc.web import waiting

pytestmark = pytest.mark.anyio
THREAD = Thread("a" * 32, "t", "carol", 7, "sleep", {}, Status.INPROGRESS, 0, version=1)
READER = Principal(User(1, "carol", False))
OUTSIDER = Principal(User(1, "carol", False))  # the same user, as the check finds them now


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Service:
    """The two calls an event stream makes: the log rule and a page of the log."""

    def may_read_log(self, who: Principal, thread: Thread) -> bool:
        return who is READER

    async def read_log(self, who: Principal, thread: Thread, since: int, limit: int) -> LogPage:
        assert self.may_read_log(who, thread), "read for a caller without the right"
        events = [LogEvent(n, 0, Level.INFO, f"line {n}") for n in (1, 2)]
        return LogPage(thread.id, events, 2, 3, more=False)


class Caller:
    """Checked once, after the first page of the log: the right to the log is gone."""

    def __init__(self) -> None:
        self.who = READER
        self.checks = 0

    def until_due(self) -> float:
        return 0.05

    async def reread(self) -> Thread:
        return THREAD

    async def check_if_due(self) -> Thread | None:
        self.checks += 1
        if self.checks == 1:
            self.who = OUTSIDER
            return THREAD
        return None


async def test_a_caller_who_loses_the_log_during_the_catch_up_gets_no_live_log() -> None:
    changes = Changes()
    service: Any = Service()
    caller: Any = Caller()
    stream = waiting.event_stream(
        service, changes, THREAD, (0, 0), caller, lambda who, thread: f"status {thread.version}"
    )
    sent = [await anext(stream), await anext(stream)]  # the log so far: lines 1 and 2
    changes.publish([], [NewLogEvent(THREAD.id, LogEvent(3, 0, Level.INFO, "line 3"))])
    changes.publish([dataclasses.replace(THREAD, status=Status.COMPLETED, version=2)])

    async def the_rest() -> list[str]:
        return [item async for item in stream]

    sent += await asyncio.wait_for(the_rest(), 5.0)
    logs = [item for item in sent if "event: log" in item]
    assert logs == [item for item in logs if "line 1" in item or "line 2" in item]
    assert "line 3" not in "".join(sent)
    assert sent[-1].endswith("data: status 2\n\n")
