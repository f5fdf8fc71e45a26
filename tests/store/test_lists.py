"""Lists and the write path, on every store: totals kept by thread_counts stay those of counting
every thread, whatever moved the threads; the claim's log seq; the capped limit counts."""

from __future__ import annotations

import dataclasses
import itertools
import sqlite3

import pytest

from tests.store.test_contract import add
from threadsvc.errors import TooManyActiveThreads
from threadsvc.models import (
    ACTIVE,
    FINAL,
    ActiveLimits,
    Level,
    LogEvent,
    NewLogEvent,
    Status,
    ThreadFilter,
    now_ms,
)
from threadsvc.store.base import Store
from threadsvc.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

GROUPS = (240, 241, -1)
STATUS_SETS = [frozenset(Status), ACTIVE, FINAL, frozenset({Status.INPROGRESS})] + [
    frozenset({status}) for status in Status
]


async def assert_totals_exact(store: Store) -> None:
    """Every total that thread_counts answers equals the count of a filter it cannot answer
    (since=0 matches every thread, so the store counts the rows)."""
    for statuses, group in itertools.product(STATUS_SETS, (*GROUPS, None)):
        counted = await store.list_threads(ThreadFilter(statuses=statuses, group_id=group))
        counted_rows = await store.list_threads(
            ThreadFilter(statuses=statuses, group_id=group, since=0)
        )
        assert counted.total == counted_rows.total, (sorted(statuses), group)
        assert [t.id for t in counted.threads] == [t.id for t in counted_rows.threads]
    by_status = await store.count_by_status()
    for status in Status:
        counted_rows = await store.list_threads(
            ThreadFilter(statuses=frozenset({status}), since=0)
        )
        assert by_status.get(status, 0) == counted_rows.total, status
    assert all(n > 0 for n in by_status.values())  # statuses no thread has are left out
    by_group = await store.count_by_group_and_status()  # one query for every group's counts
    for group, status in itertools.product(GROUPS, Status):
        counted_rows = await store.list_threads(
            ThreadFilter(statuses=frozenset({status}), group_id=group, since=0)
        )
        assert by_group.get(group, {}).get(status, 0) == counted_rows.total, (group, status)
    assert set(by_group) <= set(GROUPS)
    assert all(n > 0 for counts in by_group.values() for n in counts.values())


async def test_totals_follow_every_change(store: Store) -> None:
    now = now_ms()
    threads = [await add(store, now + i, group=GROUPS[i % 3]) for i in range(12)]
    await assert_totals_exact(store)
    claimed = await store.claim_threads("n", 8, now_ms())
    await assert_totals_exact(store)
    # the batch writer: a warning, an error, two ends, in one batch
    moves = [Status.WARNING, Status.ERROR, Status.COMPLETED, Status.FAILED]
    states = [
        dataclasses.replace(thread, status=status, version=thread.version + 1,
                            ended=now_ms() if status.final else None)
        for thread, status in zip(claimed, moves, strict=False)
    ]
    assert await store.write_batch("n", states, states, [], now_ms()) == set()
    await assert_totals_exact(store)
    # a batch that changes no status (progress) moves nothing
    progress = dataclasses.replace(claimed[4], progress_current=1, version=claimed[4].version + 1)
    await store.write_batch("n", [progress], [], [], now_ms())
    await assert_totals_exact(store)
    event = LogEvent(0, now_ms(), Level.INFO, "Status: cancelled")
    assert await store.cancel_initialised(threads[-1].id, "Cancelled", event) is not None
    await store.recover_thread(claimed[5], False, "Interrupted", now_ms(), Level.ERROR)
    await store.recover_thread(claimed[6], True, "Again", now_ms(), Level.WARN)
    await store.heartbeat("n", now_ms())
    await assert_totals_exact(store)
    assert await store.delete_thread(states[2].id)
    assert await store.delete_thread(threads[-1].id)
    await assert_totals_exact(store)
    every = await store.list_threads(ThreadFilter(statuses=frozenset(Status)))
    assert every.total == 10


async def test_pages_of_every_status_are_those_of_each_filter(store: Store) -> None:
    now = now_ms()
    threads = [await add(store, now + i) for i in range(9)]
    await store.claim_threads("n", 3, now_ms())
    newest_first = [t.id for t in reversed(threads)]
    for page in (1, 2, 3, 4):
        found = await store.list_threads(
            ThreadFilter(statuses=frozenset(Status), group_id=240, page=page, pagesize=4)
        )
        assert [t.id for t in found.threads] == newest_first[(page - 1) * 4 : page * 4]
        assert found.total == 9
    active = await store.list_threads(ThreadFilter(group_id=240, page=2, pagesize=4))
    assert [t.id for t in active.threads] == newest_first[4:8] and active.total == 9


async def test_the_claim_knows_each_threads_last_log_seq(store: Store) -> None:
    thread = await add(store, now_ms())
    [claimed] = await store.claim_threads("n", 1, now_ms())
    assert await store.last_log_seq(thread.id) == 1  # remembered from the claim
    event = NewLogEvent(thread.id, LogEvent(2, now_ms(), Level.INFO, "more"))
    await store.write_batch("n", [claimed], [], [event], now_ms())
    assert await store.last_log_seq(thread.id) == 2  # asked of the store


async def test_limits_count_up_to_the_limit(store: Store) -> None:
    now = now_ms()
    for i in range(3):
        await add(store, now + i, user="alice")
    limits = ActiveLimits(per_user=3, per_group=10)
    with pytest.raises(TooManyActiveThreads, match="has 3 active threads"):
        await add_limited(store, now + 3, "alice", limits)
    with pytest.raises(TooManyActiveThreads, match="The group has 3 active threads"):
        await add_limited(store, now + 3, "bob", ActiveLimits(per_user=10, per_group=3))
    await add_limited(store, now + 3, "bob", ActiveLimits(per_user=1, per_group=4))
    # server-level threads count against no group
    await add_limited(store, now + 4, "carol", ActiveLimits(per_user=1, per_group=0), group=-1)


async def add_limited(
    store: Store, created: int, user: str, limits: ActiveLimits, group: int = 240
) -> None:
    from tests.store.test_contract import new_thread

    thread = new_thread(created, user=user, group=group)
    await store.insert_thread(thread, LogEvent(1, created, Level.INFO, "created"), limits=limits)


def raw_insert(store: Store, rows: list[tuple[int, int, str]]) -> None:
    """Threads (seq, group, status) written straight into the table, as a bulk load would: seqs
    far apart put them in many buckets of thread_counts."""
    sql = (
        "INSERT INTO threads (seq, id, name, username, group_id, job, params, status, created) "
        "VALUES ({p}, {p}, 'raw', 'alice', {p}, 'sleep', '{{}}', {p}, {p})"
    )
    args = [(seq, f"{seq:032x}", group, status, seq) for seq, group, status in rows]
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            conn.executemany(sql.format(p="?"), args)
    else:
        import psycopg

        with psycopg.connect(store.dsn) as conn, conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.executemany(sql.format(p="%s"), args)


async def test_deep_pages_start_in_the_right_bucket(store: Store) -> None:
    statuses = list(Status)
    rows = []
    for i in range(200):  # 200 threads over 25 buckets, two groups, every status
        seq = 4096 * (i // 8) + (i * 517) % 4096 + 1
        rows.append((seq, 240 if i % 3 else 241, statuses[i % len(statuses)].value))
    raw_insert(store, sorted(set(rows)))
    for statuses_asked, group in itertools.product(STATUS_SETS, (240, 241, None)):
        for pagesize in (1, 7, 50):
            for page in (1, 2, 3, 5, 11, 30, 201):
                asked = ThreadFilter(statuses=statuses_asked, group_id=group, page=page,
                                     pagesize=pagesize)
                counted = await store.list_threads(asked)
                counted_rows = await store.list_threads(dataclasses.replace(asked, since=0))
                assert counted.total == counted_rows.total
                assert [t.id for t in counted.threads] == [t.id for t in counted_rows.threads], (
                    sorted(statuses_asked), group, page, pagesize
                )


async def test_a_big_batch_of_events_is_stored_exactly(store: Store) -> None:
    """Big batches take another way into PostgreSQL (COPY): the same events come back."""
    thread = await add(store, now_ms())
    [claimed] = await store.claim_threads("n", 1, now_ms())
    texts = ["plain", "tab\there", "line\nbreak\r\n", "back\\slash \\N", "ünïcødé ✓", ""]
    events = [
        LogEvent(seq, now_ms() + seq, list(Level)[seq % 4], f"{texts[seq % len(texts)]} {seq}")
        for seq in range(2, 1502)
    ]
    batch = [NewLogEvent(thread.id, event) for event in events]
    assert await store.write_batch("n", [claimed], [], batch, now_ms()) == set()
    page = await store.get_logs(thread.id, 1, 2000, Level.DEBUG)
    assert page.events == events and page.total == 1501


async def test_the_latest_of_two_states_in_a_batch_wins(store: Store) -> None:
    thread = await add(store, now_ms())
    [claimed] = await store.claim_threads("n", 1, now_ms())
    first = dataclasses.replace(claimed, progress_current=1, version=claimed.version + 1)
    second = dataclasses.replace(claimed, progress_current=2, version=claimed.version + 2)
    assert await store.write_batch("n", [first, second], [], [], now_ms()) == set()
    stored = await store.get_thread(thread.id)
    assert stored is not None and stored.progress_current == 2


async def test_threads_by_the_start_of_their_id(store: Store) -> None:
    now = now_ms()
    made = [await add(store, now + i) for i in range(40)]

    async def begun(prefix: str, most: int) -> list[str]:
        query = ThreadFilter(statuses=frozenset(Status), id_prefix=prefix, pagesize=most)
        return sorted(t.id for t in (await store.list_threads(query)).threads)

    for thread in made[:5]:
        for length in (1, 8, 31, 32):
            prefix = thread.id[:length]
            expected = sorted(t.id for t in made if t.id.startswith(prefix))
            assert await begun(prefix, 100) == expected, prefix
    assert await begun("", 100) == sorted(t.id for t in made)
    assert len(await begun("", 3)) == 3
    assert await begun("ffffffffffffffffffffffffffffffff0", 10) == []
