"""9. The dashboard: `/ps/ui/dashboard` (the last hour, and the last day) for an administrator
signed in to the console, with `dashboard_threads` threads in the store spread over the last day
(every final status, four jobs, queue waits and run times of their own), on each store. The
target is 200 ms a page; the figure is the median of `dashboard_reads` reads after two
unmeasured ones, and the ratio to the target is printed beside it.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from pathlib import Path

import httpx

from tests.bench.common import BenchServer, Figure, Results, Stores, bench_server, fill_store, say
from tests.bench.sizes import Sizes
from tests.support import password

ITEM = "9 dashboard"
TARGET_MS = 200.0
DAY_MS = 24 * 3600 * 1000

SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO threads (id, name, username, group_id, job, params, status, created, started, ended,
                     version)
SELECT lower(hex(randomblob(16))), 'Bench thread for group dev', 'user' || (i % 50), 240,
       CASE i % 4 WHEN 0 THEN 'sleep' WHEN 1 THEN 'validate' WHEN 2 THEN 'transform'
                  ELSE 'noop' END, '{}',
       CASE WHEN i % 50 = 0 THEN 'initialised' WHEN i % 10 = 1 THEN 'failed'
            WHEN i % 10 = 2 THEN 'cancelled' ELSE 'completed' END,
       :base + i * :step,
       CASE WHEN i % 50 = 0 THEN NULL ELSE :base + i * :step + (i * 37) % 5000 END,
       CASE WHEN i % 50 = 0 THEN NULL ELSE :base + i * :step + (i * 37) % 5000 + (i * 101) % 60000
       END, 2
FROM n
"""

POSTGRES_FILL = """
INSERT INTO threads (id, name, username, group_id, job, params, status, created, started, ended,
                     version)
SELECT md5(random()::text || i::text), 'Bench thread for group dev', 'user' || (i %% 50), 240,
       CASE i %% 4 WHEN 0 THEN 'sleep' WHEN 1 THEN 'validate' WHEN 2 THEN 'transform'
                   ELSE 'noop' END, '{}',
       CASE WHEN i %% 50 = 0 THEN 'initialised' WHEN i %% 10 = 1 THEN 'failed'
            WHEN i %% 10 = 2 THEN 'cancelled' ELSE 'completed' END,
       %(base)s + i * %(step)s,
       CASE WHEN i %% 50 = 0 THEN NULL ELSE %(base)s + i * %(step)s + (i * 37) %% 5000 END,
       CASE WHEN i %% 50 = 0 THEN NULL
            ELSE %(base)s + i * %(step)s + (i * 37) %% 5000 + (i * 101) %% 60000 END, 2
FROM generate_series(1, %(count)s) AS i
"""


def fill(server: BenchServer, n: int) -> float:
    """`n` threads created evenly over the last day (a fiftieth still waiting); seconds."""
    base = int(time.time() * 1000) - DAY_MS
    return fill_store(server, SQLITE_FILL, POSTGRES_FILL,
                      {"count": n, "base": base, "step": DAY_MS // (n + 1)})


def signed_in(server: BenchServer) -> httpx.Client:
    """A client with the console's session cookie of the administrator."""
    client = httpx.Client(base_url=server.url, timeout=60)
    form = client.get("/ps/ui/sign-in").text
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token, form[:300]
    answer = client.post("/ps/ui/sign-in", data={
        "csrf": token.group(1), "username": "admin", "password": password("admin"),
        "next": "/ps/ui/groups"})
    assert answer.status_code == 303, answer.text[:300]
    return client


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    n = sizes.dashboard_threads
    directory = work / f"dashboard-{store}"
    took: list[float] = []
    with bench_server(directory, stores.url(store, directory),
                      before_start=lambda s: took.append(fill(s, n))) as (server, _tokens), \
            contextlib.closing(signed_in(server)) as client:
        for window in ("hour", "day"):
            samples = []
            for k in range(sizes.dashboard_reads + 2):
                t0 = time.perf_counter()
                answer = client.get("/ps/ui/dashboard", params={"window": window})
                elapsed = (time.perf_counter() - t0) * 1000
                assert answer.status_code == 200 and "<svg" in answer.text, answer.status_code
                if k >= 2:
                    samples.append(elapsed)
            median = statistics.median(samples)
            say(f"  dashboard, the last {window}, {n:,} threads in the store (filled in "
                f"{took[0]:.1f} s): median {median:.1f} ms, {median / TARGET_MS:.2f} of the "
                f"{TARGET_MS:.0f} ms target (max {max(samples):.1f} ms)")
            results.add(Figure(
                ITEM, f"/ps/ui/dashboard, the last {window}, {n:,} threads in the store (median "
                f"of {len(samples)})", store, median, "ms", target=TARGET_MS,
                higher_is_better=False,
                note=f"{median / TARGET_MS:.2f} of the target; max {max(samples):.1f} ms"))
