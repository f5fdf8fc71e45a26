"""Finding threads, on every store: an id by its first characters, a name or a message by a
part of it (never read as a pattern), a window of end times, and the orders other than newest
first (by creation, end or duration, either way), paged."""

from __future__ import annotations

import dataclasses

import pytest

from tests.store.test_contract import new_thread
from threadsvc.models import Level, LogEvent, Status, Thread, ThreadFilter
from threadsvc.store.base import Store

pytestmark = pytest.mark.anyio
EVERY = frozenset(Status)
BASE = 1_700_000_000_000


async def fill(store: Store) -> list[Thread]:
    """Six threads created a second apart; the first five claimed at BASE + 10 s and the first
    four ended after 4, 1, 3 and 2 seconds; the fifth runs; the sixth waits."""
    names = ["Convert report", "Sleep thread", "Index 50%_done", "Index 500 done",
             "convert REPORT", "Waiting one"]
    threads = []
    for i, name in enumerate(names):
        thread = dataclasses.replace(new_thread(BASE + i * 1000), name=name)
        await store.insert_thread(thread, LogEvent(1, thread.created, Level.INFO, "created"))
        threads.append(thread)
    claimed = await store.claim_threads("n", 5, BASE + 10_000)
    assert [t.id for t in claimed] == [t.id for t in threads[:5]]
    messages = ["Copied 3 files", "Slept well", "Indexed A_B", "Indexed AxB", "Converting"]
    durations = [4000, 1000, 3000, 2000, None]
    states = []
    for thread, message, took in zip(claimed, messages, durations, strict=True):
        ended = None if took is None else BASE + 10_000 + took
        status = Status.INPROGRESS if took is None else Status.COMPLETED
        states.append(dataclasses.replace(thread, status=status, message=message, ended=ended,
                                          version=thread.version + 1))
    assert await store.write_batch("n", states, states, [], BASE + 20_000) == set()
    return threads


async def ids(store: Store, **asked: object) -> list[str]:
    query = ThreadFilter(statuses=EVERY, **asked)  # type: ignore[arg-type]
    return [t.id for t in (await store.list_threads(query)).threads]


async def test_an_id_by_its_first_characters_or_whole(store: Store) -> None:
    threads = await fill(store)
    target = threads[2]
    assert await ids(store, id_prefix=target.id[:8]) == [target.id]
    assert await ids(store, id_prefix=target.id) == [target.id]
    assert await ids(store, id_prefix=target.id[:31] + ("0" if target.id[-1] != "0" else "1")) == []
    assert sorted(await ids(store, id_prefix="")) == sorted(t.id for t in threads)


async def test_a_name_or_a_message_by_a_part_of_it_letter_case_aside(store: Store) -> None:
    threads = await fill(store)
    assert await ids(store, name="convert rep") == [threads[4].id, threads[0].id]
    assert await ids(store, name="50%") == [threads[2].id]  # % is a character, not a wildcard
    assert await ids(store, name="_done") == [threads[2].id]  # so is _ (not " done")
    assert await ids(store, text="a_b") == [threads[2].id]
    assert await ids(store, text="SLEPT") == [threads[1].id]
    assert await ids(store, text="nothing like it") == []
    found = await store.list_threads(ThreadFilter(statuses=EVERY, name="index", text="axb"))
    assert [t.id for t in found.threads] == [threads[3].id] and found.total == 1


async def test_a_window_of_end_times(store: Store) -> None:
    threads = await fill(store)
    ended = await ids(store, ended_since=BASE + 12_000, ended_until=BASE + 13_000)
    assert ended == [threads[3].id, threads[2].id]
    assert await ids(store, ended_since=BASE + 14_000) == [threads[0].id]
    assert len(await ids(store, ended_until=BASE + 30_000)) == 4  # never-ended ones: not


async def test_sorted_by_creation_end_or_duration_either_way(store: Store) -> None:
    t = [thread.id for thread in await fill(store)]
    assert await ids(store, sort="created", descending=False) == t
    assert await ids(store, sort="created") == t[::-1]
    # Not yet ended: as if it ended after every other (first newest first, last oldest first)
    assert await ids(store, sort="ended") == [t[5], t[4], t[0], t[2], t[3], t[1]]
    assert await ids(store, sort="ended", descending=False) == [t[1], t[3], t[2], t[0], t[4], t[5]]
    assert await ids(store, sort="duration") == [t[5], t[4], t[0], t[2], t[3], t[1]]
    assert await ids(store, sort="duration", descending=False) == [
        t[1], t[3], t[2], t[0], t[4], t[5]]


async def test_a_sorted_list_pages_and_totals_like_any_other(store: Store) -> None:
    t = [thread.id for thread in await fill(store)]
    pages = []
    for number in (1, 2, 3):
        found = await store.list_threads(ThreadFilter(
            statuses=EVERY, sort="duration", descending=False, page=number, pagesize=2))
        assert found.total == 6
        pages.append([thread.id for thread in found.threads])
    assert pages == [[t[1], t[3]], [t[2], t[0]], [t[4], t[5]]]
    finished = await store.list_threads(ThreadFilter(
        statuses=frozenset({Status.COMPLETED}), group_id=240, sort="ended", pagesize=3))
    assert [x.id for x in finished.threads] == [t[0], t[2], t[3]] and finished.total == 4


async def test_threads_by_their_ids_in_one_read(store: Store) -> None:
    threads = await fill(store)
    wanted = [threads[5].id, threads[0].id, "f" * 32]
    found = {t.id: t for t in await store.get_threads(wanted)}
    assert set(found) == {threads[5].id, threads[0].id}  # an unknown id: nothing
    assert found[threads[0].id].status is Status.COMPLETED
    assert found[threads[5].id].status is Status.INITIALISED
    assert await store.get_threads([]) == []
