"""One watcher for many threads (a live list): it wakes for any of them, keeps the newest
state of each, ignores threads it does not follow and older versions, and leaves no trace."""

from __future__ import annotations

import dataclasses

import pytest

from threadsvc.changes import Changes
from threadsvc.models import Status, Thread

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def thread(letter: str, version: int) -> Thread:
    return Thread(letter * 32, "t", "carol", 7, "sleep", {}, Status.INPROGRESS, 0,
                  version=version)


async def test_one_watcher_for_many_threads() -> None:
    changes = Changes()
    a, b, other = thread("a", 2), thread("b", 5), thread("c", 1)
    with changes.watch_many([a.id, b.id]) as watcher:
        assert not await watcher.wait(0)
        changes.publish([other])
        assert not await watcher.wait(0)  # not followed: no wake
        changes.publish([a, dataclasses.replace(a, version=3), b])
        assert await watcher.wait(0)
        taken = {t.id: t.version for t in watcher.take()}
        assert taken == {a.id: 3, b.id: 5}
        assert watcher.take() == []  # each state once
        changes.publish([dataclasses.replace(b, version=6)])
        changes.publish([dataclasses.replace(b, version=4)], here=False)  # older, heard late
        assert [t.version for t in watcher.take()] == [6]
    assert not changes.watched(a.id) and not changes.watched(b.id)
    assert changes.watching == 0
