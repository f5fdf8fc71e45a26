"""SharedLookups: callers that miss one key together share one lookup, and nothing a change
made stale is kept."""

from __future__ import annotations

import asyncio

import pytest

from threadsvc.lookups import SharedLookups

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Store:
    """A lookup that counts its calls and answers when told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer = asyncio.Event()
        self.value = "v1"

    async def look_up(self) -> str:
        self.calls += 1
        await self.answer.wait()
        return self.value


async def test_callers_that_miss_together_share_one_lookup() -> None:
    cache: SharedLookups[str, str] = SharedLookups(10, 60)
    store = Store()
    callers = [asyncio.create_task(cache.get_or_look_up("k", store.look_up)) for _ in range(64)]
    await asyncio.sleep(0)
    store.answer.set()
    assert await asyncio.gather(*callers) == ["v1"] * 64
    assert store.calls == 1
    assert await cache.get_or_look_up("k", store.look_up) == "v1" and store.calls == 1  # kept


async def test_a_failed_lookup_fails_every_waiting_caller_and_is_not_kept() -> None:
    cache: SharedLookups[str, str] = SharedLookups(10, 60)
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise LookupError("no such token")

    callers = [asyncio.create_task(cache.get_or_look_up("k", failing)) for _ in range(5)]
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results) and calls == 1
    with pytest.raises(LookupError):
        await cache.get_or_look_up("k", failing)
    assert calls == 2  # looked up again: a failure is not remembered


async def test_a_cancelled_caller_cancels_no_one_else() -> None:
    cache: SharedLookups[str, str] = SharedLookups(10, 60)
    store = Store()
    first = asyncio.create_task(cache.get_or_look_up("k", store.look_up))
    second = asyncio.create_task(cache.get_or_look_up("k", store.look_up))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    store.answer.set()
    assert await second == "v1"
    assert first.cancelled() and store.calls == 1


async def test_what_was_read_before_a_forget_is_not_kept() -> None:
    cache: SharedLookups[str, str] = SharedLookups(10, 60)
    old, new = Store(), Store()
    new.value = "v2"
    before = asyncio.create_task(cache.get_or_look_up("k", old.look_up))
    await asyncio.sleep(0)
    cache.forget("k")  # say: a membership changed while the lookup was under way
    after = asyncio.create_task(cache.get_or_look_up("k", new.look_up))
    for _ in range(3):  # the caller's task, then its lookup's, take their first steps
        await asyncio.sleep(0)
    assert new.calls == 1  # the caller after the change did not join the older lookup
    new.answer.set()
    assert await after == "v2"
    old.answer.set()
    assert await before == "v1"  # its own caller gets it...
    await asyncio.sleep(0)
    assert cache.get("k") == "v2"  # ...but the older answer, settled last, is not kept


async def test_an_entry_expires_after_its_time() -> None:
    cache: SharedLookups[str, str] = SharedLookups(10, 0.05)
    store = Store()
    store.answer.set()
    assert await cache.get_or_look_up("k", store.look_up) == "v1"
    await asyncio.sleep(0.1)
    store.value = "v2"
    assert await cache.get_or_look_up("k", store.look_up) == "v2" and store.calls == 2


async def test_no_time_to_keep_means_every_caller_looks_up() -> None:
    cache: SharedLookups[str, str] = SharedLookups(10, 0)
    store = Store()
    store.answer.set()
    await asyncio.gather(*(cache.get_or_look_up("k", store.look_up) for _ in range(3)))
    assert store.calls == 3 and cache.get("k") is None


async def test_an_entry_in_use_is_looked_up_again_before_it_expires() -> None:
    cache: SharedLookups[str, str] = SharedLookups(10, 0.2)
    store = Store()
    store.answer.set()
    assert await cache.get_or_look_up("k", store.look_up) == "v1"
    await asyncio.sleep(0.12)  # past half its time
    store.value = "v2"
    assert await cache.get_or_look_up("k", store.look_up) == "v1"  # at once, with what it had
    await asyncio.sleep(0.01)
    assert store.calls == 2 and cache.get("k") == "v2"  # the lookup in the background
    await asyncio.sleep(0.12)  # past the first value's whole time: the second one is kept
    assert await cache.get_or_look_up("k", store.look_up) == "v2"


async def test_past_its_size_the_entry_kept_longest_goes() -> None:
    cache: SharedLookups[str, str] = SharedLookups(2, 60)
    cache.put("a", "1")
    cache.put("b", "2")
    cache.put("a", "1'")  # put again: now the newest
    cache.put("c", "3")
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("1'", None, "3")
