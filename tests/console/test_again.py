"""Run again's prefill, in-process: declared parameters in their inputs, others (and further
values of a repeated one) as NAME=value lines, files named and never carried, and a thread
of another job refused."""

from __future__ import annotations

from typing import Any

import pytest

from threadsvc.errors import BadParameter
from threadsvc.models import Principal, Status, Thread, User
from threadsvc.runner.registry import Registry
from threadsvc.web.console.again import prefill

pytestmark = pytest.mark.anyio
WHO = Principal(User(1, "carol", False))
STYLESHEET = {"name": "style.xsl", "file": "uploads/x/stylesheet-0", "size": 10,
              "type": "application/xml", "sha256": "0" * 64}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Found:
    """The one call prefill makes of the service."""

    def __init__(self, thread: Thread) -> None:
        self.thread = thread

    async def get_thread(self, who: Principal, ref: str | None, thread_id: str) -> Thread:
        assert who is WHO and thread_id == self.thread.id
        return self.thread


def thread(job: str, params: dict[str, Any]) -> Thread:
    return Thread("a" * 32, "t", "carol", 7, job, params, Status.COMPLETED, 0, version=3)


async def test_declared_undeclared_and_files() -> None:
    registry = Registry.load()
    earlier = thread("transform", {
        "stylesheet": STYLESHEET, "documents": [dict(STYLESHEET, name="a.xml")],
        "param.title": "Hello", "param.n": ["1", "2"],
    })
    filled = await prefill(Found(earlier), WHO, "dev", earlier.id,  # type: ignore[arg-type]
                           registry.get("transform"))
    assert filled.values == {"more": "param.title=Hello\nparam.n=1\nparam.n=2"}
    assert filled.files == ["stylesheet: style.xsl", "documents: a.xml"]


async def test_numbers_and_empty_ones() -> None:
    registry = Registry.load()
    earlier = thread("sleep", {"seconds": 1.5, "steps": 3, "warn": None, "result": None})
    filled = await prefill(Found(earlier), WHO, "dev", earlier.id,  # type: ignore[arg-type]
                           registry.get("sleep"))
    assert filled.values == {"seconds": "1.5", "steps": "3"} and filled.files == []


async def test_a_thread_of_another_job_is_refused() -> None:
    registry = Registry.load()
    earlier = thread("sleep", {"seconds": 1.5})
    with pytest.raises(BadParameter, match="not 'transform'"):
        await prefill(Found(earlier), WHO, "dev", earlier.id,  # type: ignore[arg-type]
                      registry.get("transform"))
