"""5s. Searching a big log: one finished thread whose log holds N events (written straight into
the stopped store), searched through the logs service's `text` (the Service method the
console's thread page uses too), a page of 200 events at a time:

- text found in no event: the whole log is read (the worst case; the issue's 300 ms target);
- text found once, near the end: the same read, one event sent;
- text found in every event (any case): the first page ends the read early;
- a level and a text together (WARN and above, one event in 1,000).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.bench.biglogs import timed_gets
from tests.bench.common import (
    USER,
    BenchServer,
    Figure,
    Results,
    Stores,
    bench_server,
    fill_store,
    group_path,
    say,
)
from tests.bench.sizes import Sizes

ITEM = "5s log search"
THREAD = "5e" * 16
TARGET_MS = 300.0
PAGE = 200

SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO log_events (thread_id, seq, ts, level, text)
SELECT :id, i, :base + i, CASE WHEN i % 1000 = 0 THEN 30 ELSE 20 END,
       printf('event %9d of %d: the quick brown fox jumps over', i, :count)
FROM n
"""
SQLITE_THREAD = """
INSERT INTO threads (id, name, username, group_id, job, params, status, created, started, ended,
                     warnings, errors, version)
VALUES (:id, 'Logger thread', 'contributor', 240, 'logger', '{}', 'completed', :base, :base,
        :base + :count, 0, 0, 3)
"""

POSTGRES_THREAD = """
INSERT INTO threads (id, name, username, group_id, job, params, status, created, started, ended,
                     warnings, errors, version)
VALUES (%(id)s, 'Logger thread', 'contributor', 240, 'logger', '{}', 'completed', %(base)s,
        %(base)s, %(base)s + %(count)s, 0, 0, 3)
"""
POSTGRES_FILL = """
INSERT INTO log_events (thread_id, seq, ts, level, text)
SELECT %(id)s, i, %(base)s + i, CASE WHEN i %% 1000 = 0 THEN 30 ELSE 20 END,
       format('event %%9s of %%s: the quick brown fox jumps over', i, %(count)s)
FROM generate_series(1, %(count)s) AS i
"""


def fill(server: BenchServer, count: int) -> float:
    """The thread and its log of `count` events, in the server's (seeded, stopped) store."""
    base = int(time.time() * 1000) - count - 60_000
    args = {"id": THREAD, "count": count, "base": base}
    took = fill_store(server, SQLITE_THREAD, POSTGRES_THREAD, args)
    took += fill_store(server, SQLITE_FILL, POSTGRES_FILL, args)
    return took + fill_store(server, "ANALYZE log_events", "ANALYZE log_events", {})


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    directory = work / f"logsearch-{store}"
    n = sizes.search_log_events
    took: list[float] = []
    searches = {
        "text in no event (the whole log read)": {"text": "zebra"},
        "text in one event, near the end": {"text": f"event {n - 7:>9} "},
        "text in every event, any case (first page)": {"text": "QUICK BROWN"},
        "WARN and above holding text (1 in 1,000)": {"text": "fox", "level": "WARN"},
    }
    figures = {}
    with bench_server(directory, stores.url(store, directory),
                      before_start=lambda s: took.append(fill(s, n))) as (server, tokens):
        say(f"  log search: {n:,} events written in {took[0]:.1f} s")
        with server.bearer(tokens[USER]) as client:
            path = group_path(THREAD, "/logs")
            for what, query in searches.items():
                figures[what] = timed_gets(client, path, {**query, "limit": PAGE},
                                           sizes.read_repeats)
    for what, (stats, size) in figures.items():
        worst = what.startswith("text in no event")
        results.add(Figure(
            ITEM, f"search {n:,} events: {what} (median)", store, stats["p50"], "ms",
            target=TARGET_MS, higher_is_better=False,
            note=f"p95 {stats['p95']:.1f} ms, {size:,} bytes answered",
        ))
        if worst:
            results.add(Figure(ITEM, f"search {n:,} events, the whole log read / its 300 ms target",
                               store, stats["p50"] / TARGET_MS, "×", target=1.0,
                               higher_is_better=False))
