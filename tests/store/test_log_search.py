"""Searching a thread's log (Store.search_logs), on every store: what matches (a substring,
letters A-Z in either case, LIKE's own characters taken literally), the level, paging by `next`,
and that another thread's events never match."""

from __future__ import annotations

import pytest

from tests.store.test_contract import add
from threadsvc.models import Level, LogEvent, NewLogEvent, now_ms
from threadsvc.store.base import Store

pytestmark = pytest.mark.anyio


async def _log(store: Store, texts: list[tuple[Level, str]]) -> str:
    """A claimed thread whose log is `created` (seq 1, INFO) then `texts` from seq 2."""
    thread = await add(store, now_ms())
    await store.claim_threads("n", 1, now_ms())
    events = [
        NewLogEvent(thread.id, LogEvent(seq, now_ms(), level, text))
        for seq, (level, text) in enumerate(texts, start=2)
    ]
    await store.write_batch("n", [], [], events, now_ms())
    return thread.id


async def test_search_finds_text_in_any_case_oldest_first(store: Store) -> None:
    thread = await _log(store, [
        (Level.INFO, "Copying file A"),          # 2
        (Level.WARN, "the DISK FULL soon"),      # 3
        (Level.INFO, "nothing here"),            # 4
        (Level.ERROR, "Disk full: giving up"),   # 5
        (Level.DEBUG, "disk fullness checked"),  # 6
    ])
    found = await store.search_logs(thread, "disk full", 0, 10, Level.DEBUG)
    assert [e.seq for e in found.events] == [3, 5, 6]
    assert found.events[1].text == "Disk full: giving up" and found.events[1].level is Level.ERROR
    assert (found.total, found.next, found.more) == (6, 6, False)
    warned = await store.search_logs(thread, "DISK", 0, 10, Level.WARN)
    assert [e.seq for e in warned.events] == [3, 5]
    none = await store.search_logs(thread, "zebra", 0, 10, Level.DEBUG)
    assert (none.events, none.total, none.next, none.more) == ([], 6, 0, False)


async def test_search_pages_by_next(store: Store) -> None:
    thread = await _log(store, [(Level.INFO, f"step {i} {'odd' if i % 2 else 'even'}")
                                for i in range(1, 21)])  # seq i + 1
    first = await store.search_logs(thread, "odd", 0, 4, Level.DEBUG)
    assert [e.seq for e in first.events] == [2, 4, 6, 8] and first.more and first.next == 8
    rest = await store.search_logs(thread, "odd", first.next, 100, Level.DEBUG)
    assert [e.seq for e in rest.events] == [10, 12, 14, 16, 18, 20] and not rest.more
    past = await store.search_logs(thread, "odd", 20, 100, Level.DEBUG)
    assert (past.events, past.next, past.more) == ([], 20, False)


async def test_like_characters_are_literal(store: Store) -> None:
    thread = await _log(store, [
        (Level.INFO, "100% done"),       # 2
        (Level.INFO, "1000 done"),       # 3
        (Level.INFO, "file_a"),          # 4
        (Level.INFO, "fileXa"),          # 5
        (Level.INFO, "C:\\temp\\x"),     # 6
        (Level.INFO, "C:tempx"),         # 7
    ])

    async def seqs(text: str) -> list[int]:
        return [e.seq for e in (await store.search_logs(thread, text, 0, 10, Level.DEBUG)).events]

    assert await seqs("0%") == [2]
    assert await seqs("_a") == [4]
    assert await seqs("\\temp\\") == [6]
    assert await seqs("%") == [2]


async def test_search_keeps_to_its_thread_and_reads_unicode(store: Store) -> None:
    mine = await _log(store, [(Level.INFO, "naïve café ☕ needle")])
    other = await _log(store, [(Level.INFO, "needle in another thread")])
    found = await store.search_logs(mine, "needle", 0, 10, Level.DEBUG)
    assert [e.seq for e in found.events] == [2]
    assert (await store.search_logs(mine, "café ☕", 0, 10, Level.DEBUG)).events[0].seq == 2
    assert [e.seq for e in (await store.search_logs(other, "needle", 0, 10, Level.DEBUG)).events] == [2]
    missing = await store.search_logs("no-such-thread", "needle", 0, 10, Level.DEBUG)
    assert (missing.events, missing.total, missing.more) == ([], 0, False)
