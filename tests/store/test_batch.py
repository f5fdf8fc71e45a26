"""Group commit (threadsvc/store/batch.py): calls that arrive while a batch is written go
together in the next, each caller gets its own item's outcome, and one that gives up leaves
its item in the batch."""

from __future__ import annotations

import asyncio

import pytest

from threadsvc.errors import TooManyActiveThreads
from threadsvc.store.batch import Batcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Writer:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await self.gate.wait()
        return [TooManyActiveThreads(f"{i} refused") if i < 0 else i * 10 for i in items]


async def test_callers_during_a_batch_share_the_next_one_each_with_its_own_outcome() -> None:
    writer = Writer()
    write = Batcher(writer, most=3)
    first = asyncio.create_task(write(1))
    await asyncio.sleep(0)
    later = [asyncio.create_task(write(i)) for i in (2, -3, 4, 5)]
    await asyncio.sleep(0)
    assert writer.batches == [[1]]  # the others wait for it
    writer.gate.set()
    assert await first == 10
    outcomes = await asyncio.gather(*later, return_exceptions=True)
    assert outcomes[0] == 20 and outcomes[2:] == [40, 50]
    assert isinstance(outcomes[1], TooManyActiveThreads) and str(outcomes[1]) == "-3 refused"
    assert writer.batches == [[1], [2, -3, 4], [5]]  # at most 3 at once, in order


async def test_a_caller_that_gives_up_leaves_its_item_in_the_batch() -> None:
    writer = Writer()
    write = Batcher(writer, most=10)
    gives_up = asyncio.create_task(write(1))
    stays = asyncio.create_task(write(2))
    await asyncio.sleep(0)
    gives_up.cancel()
    await asyncio.sleep(0)
    writer.gate.set()
    assert await stays == 20
    assert gives_up.cancelled()
    assert writer.batches == [[1, 2]]
    assert await write(3) == 30  # and the next call starts a batch of its own
    assert writer.batches[-1] == [3]
