"""The audit log: what an entry adds to a change (a password set, with and without `by`), and
how long reading a page takes with 1,000,000 entries in the store (the last page, a filter on
an action, on a user who is almost never there, the latest page), and the purge's deletion.

Run on its own: `python -m tests.bench.audit [--store sqlite|postgres] [--entries N]`. The
entries are written with SQL, as months of failed sign-ins would leave them.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.bench.common import Stores, say, workdir
from threadsvc.models import Actor, AuditFilter, now_ms
from threadsvc.settings import Settings
from threadsvc.store import make_store
from threadsvc.store.base import Store

CHANGES = 300
FILL = """
INSERT INTO audit_log (ts, actor, action, target, group_name, address, detail)
SELECT {ts}, NULL, 'signin.failure', {target}, NULL, '198.51.100.9', '1 of 5' FROM {series}
"""


async def median_ms(repeats: int, call: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        await call()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def measure(url: str, entries: int) -> None:
    store = make_store(Settings(db=url))
    await store.open()
    try:
        await store.create_user("alice", "hash", False)
        plain = await median_ms(CHANGES, lambda: store.set_password("alice", "h"))
        by = Actor("admin", "192.0.2.1")
        audited = await median_ms(CHANGES, lambda: store.set_password("alice", "h", by=by))
        say(f"  a change: {plain:.2f} ms, audited {audited:.2f} ms (median of {CHANGES})")
        start = now_ms() - 90 * 86400 * 1000
        await asyncio.to_thread(fill, url, entries, start)
        await reads(store, entries, start)
    finally:
        await store.close()


async def reads(store: Store, entries: int, start: int) -> None:
    pages = {
        "the first page of 100 after seq N/2": AuditFilter(since=entries // 2, limit=100),
        "a common action, 100": AuditFilter(action="signin.failure", limit=100),
        "a rare action (300 matches), 100": AuditFilter(action="user.passwd", limit=100),
        "a user with no entry": AuditFilter(user="nobody", limit=100),
        "latest 100": AuditFilter(limit=100, latest=True),
        "latest 100 of a user with no entry": AuditFilter(user="nobody", limit=100, latest=True),
        "latest 100 of a rare action": AuditFilter(action="user.passwd", limit=100, latest=True),
    }
    for what, query in pages.items():
        took = await median_ms(5, lambda q=query: store.audit_entries(q))  # type: ignore[misc]
        say(f"  {entries:,} entries, {what}: {took:.1f} ms")
    t0 = time.perf_counter()
    gone = await store.forget_audit(start + 86400 * 1000)  # one day of 90
    say(f"  forget one day ({gone:,} entries): {(time.perf_counter() - t0) * 1000:.0f} ms")


def fill(url: str, entries: int, start: int) -> None:
    """`entries` failed sign-ins spread over 90 days from `start`, each of its own name."""
    step = 90 * 86400 * 1000 // entries
    if url.startswith("sqlite:///"):
        series = (f"(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
                  f"WHERE n < {entries}) SELECT n FROM s)")
        sql = FILL.format(ts=f"{start} + n * {step}", target="'name' || n", series=series)
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
            conn.execute(sql)
        return
    import psycopg

    sql = FILL.format(ts=f"{start} + n::bigint * {step}", target="'name' || n",
                      series=f"generate_series(1, {entries}) AS n")
    with psycopg.connect(url) as conn:
        conn.execute(sql)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", action="append", choices=["sqlite", "postgres"])
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    work: Path = workdir()
    stores = Stores(args.store or ["sqlite", "postgres"], work)
    try:
        for name in stores.names:
            say(name)
            asyncio.run(measure(stores.url(name, work / name), args.entries))
    finally:
        stores.close()


if __name__ == "__main__":
    main()
