"""5. Big logs and big tables: one thread writing N log events; reading the last page of 1,000;
listing page 1 and page 1,000 of a table of N threads."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.bench.common import (
    USER,
    BenchServer,
    Figure,
    Results,
    Stores,
    bench_server,
    epoch,
    fill_store,
    group_path,
    latency_stats,
    say,
    start_thread,
    wait_thread,
)
from tests.bench.sizes import Sizes

ITEM = "5 big logs/tables"
FINAL = ("completed", "failed", "cancelled")


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    big_log(results, stores, store, sizes, work)
    big_table(results, stores, store, sizes, work)


def timed_gets(client: httpx.Client, path: str, params: dict[str, object], repeats: int,
               expect: int = 200) -> tuple[dict[str, float], int]:
    samples = []
    size = 0
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        response = client.get(path, params=params)
        elapsed = time.perf_counter() - t0
        if response.status_code != expect:
            raise RuntimeError(f"GET {path} {params}: {response.status_code} {response.text[:300]}")
        size = len(response.content)
        if i >= 3:  # the first three warm caches
            samples.append(elapsed)
    return latency_stats(samples), size


def big_log(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    directory = work / f"biglog-{store}"
    n = sizes.log_events
    with (
        bench_server(directory, stores.url(store, directory)) as (server, tokens),
        server.bearer(tokens[USER]) as client,
    ):
        t0 = time.monotonic()
        thread = start_thread(client, "logger", events=n)
        final = wait_thread(client, thread["id"], lambda t: t["status"] in FINAL,
                            timeout=3600, interval=0.25)
        wall = time.monotonic() - t0
        if final["status"] != "completed":
            raise RuntimeError(f"logger thread {final['status']}: {final.get('message')}")
        seconds = epoch(final["ended"]) - epoch(final["started"])
        path = group_path(thread["id"], "/logs")
        head = client.get(path, params={"limit": 1})
        total = int(re.search(rb'total="(\d+)"', head.content).group(1))  # type: ignore[union-attr]
        stats, size = timed_gets(client, path, {"since": total - 1000, "limit": 1000},
                                 sizes.read_repeats)
    say(f"  logger: {n:,} events in {seconds:.2f} s ({wall:.2f} s wall from POST to final seen)")
    results.add(Figure(ITEM, f"log events written/s (one thread, {n:,} events)", store,
                       n / seconds, "events/s", target=100_000.0,
                       note=f"{seconds:.1f} s from started to ended"))
    results.add(Figure(ITEM, f"last page of 1,000 events, of {total:,} (median)", store,
                       stats["p50"], "ms", target=20.0, higher_is_better=False,
                       note=f"p95 {stats['p95']:.1f} ms, {size / 1024:.0f} KiB of XML, "
                            f"{stats['n']} sequential reads"))


# -- the table ----------------------------------------------------------------------------------
SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO threads (id, name, username, group_id, job, params, status, created, started, ended,
                     warnings, errors, version)
SELECT lower(hex(randomblob(16))), 'No-op thread for group dev', 'contributor', 240, 'noop', '{}',
       'completed', :base + i * 10, :base + i * 10 + 1, :base + i * 10 + 2, 0, 0, 3
FROM n
"""

POSTGRES_FILL = """
INSERT INTO threads (id, name, username, group_id, job, params, status, created, started, ended,
                     warnings, errors, version)
SELECT md5(random()::text || i::text), 'No-op thread for group dev', 'contributor', 240, 'noop',
       '{}', 'completed', %(base)s + i * 10, %(base)s + i * 10 + 1, %(base)s + i * 10 + 2, 0, 0, 3
FROM generate_series(1, %(count)s) AS i
"""


def finding(client: httpx.Client, path: str, sizes: Sizes,
            ) -> dict[str, tuple[dict[str, float], str]]:
    """The list's searches and orders (the console's list pages ask the same), page 1 of 100."""
    head = client.get(path, params={"status": "all", "pagesize": 1})
    some_id = re.search(rb'id="([0-9a-f]{32})"', head.content).group(1).decode()  # type: ignore[union-attr]
    asked = {
        "sorted by end, newest first": ({"sort": "ended"}, "index threads_group_ended"),
        "sorted by end, oldest first": ({"sort": "ended", "order": "asc"}, "the same index"),
        "an id by its first 8 characters": ({"id": some_id[:8]}, "the unique index on id"),
        "sorted by duration": ({"sort": "duration"}, "no index: every matching row is sorted"),
        "a name searched, every thread matching": (
            {"name": "no-op"}, "no index: the total counts every match"),
    }
    found = {}
    for label, (query, note) in asked.items():
        stats, _ = timed_gets(client, path, {"status": "all", "pagesize": 100, **query},
                              max(3, sizes.read_repeats // 5))
        found[label] = (stats, note)
    return found


def fill(server: BenchServer, count: int) -> float:
    """Insert `count` completed threads into the server's (seeded, stopped) store; seconds."""
    base = int(time.time() * 1000) - count * 10 - 60_000
    return fill_store(server, SQLITE_FILL, POSTGRES_FILL, {"count": count, "base": base})


def big_table(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    directory = work / f"bigtable-{store}"
    n = sizes.table_threads
    took: list[float] = []
    with bench_server(directory, stores.url(store, directory),
                      before_start=lambda s: took.append(fill(s, n))) as (server, tokens):
        say(f"  table: {n:,} threads inserted in {took[0]:.1f} s")
        with server.bearer(tokens[USER]) as client:
            path = group_path()
            pages = {}
            last = -(-n // 1000)
            for page, pagesize in ((1, 100), (1000, 100), (last, 1000)):
                stats, _ = timed_gets(
                    client, path, {"status": "all", "page": page, "pagesize": pagesize},
                    sizes.read_repeats,
                )
                pages[(page, pagesize)] = stats
            found = finding(client, path, sizes)
    for label, (stats, note) in found.items():
        results.add(Figure(ITEM, f"{label}, of {n:,} threads (median)", store, stats["p50"], "ms",
                           higher_is_better=False, note=f"p95 {stats['p95']:.1f} ms; {note}"))
    for (page, pagesize), stats in pages.items():
        last = ""
        if (page - 1) * pagesize >= n:
            last = " (past the end: empty)"
        elif page * pagesize >= n:
            last = " (the last page)"
        target = 20.0 if pagesize == 100 else None
        results.add(Figure(
            ITEM, f"list page {page:,} of {n:,} threads, pagesize {pagesize}{last} (median)",
            store, stats["p50"], "ms", target=target, higher_is_better=False,
            note=f"p95 {stats['p95']:.1f} ms",
        ))
    first, thousandth = pages[(1, 100)]["p50"], pages[(1000, 100)]["p50"]
    results.add(Figure(ITEM, "page 1,000 / page 1 (the same: ≤ 1.5)", store,
                       thousandth / first, "×", target=1.5, higher_is_better=False))
