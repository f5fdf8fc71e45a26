"""4. Many threads, queued: a server of few slots (`max-running` 4) holding a long queue of
`initialised` threads; its peak RSS while they wait and while the queue drains a little.

Two ways a queue builds up, each on a fresh server and store:
- started over HTTP while the server runs (tickers of one second: the queue drains at 4/s,
  so nearly every thread started is still waiting at the end);
- already in the store when the server starts (written there first, as a store a stopped
  node left behind; no-op threads: the server claims them as fast as it can), all of one user,
  or each of another user (a claim weighs every waiting owner: it must not read every thread).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.bench.common import (
    USER,
    BenchServer,
    Figure,
    Results,
    Stores,
    bench_server,
    count,
    fill_store,
    memory,
    say,
)
from tests.bench.many import start_many
from tests.bench.sizes import Sizes

ITEM = "4 many threads"
MB = 1024 * 1024
SLOTS = 4


class Peak:
    """The process's RSS sampled every 0.2 s in a thread; the highest seen since `reset`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.high = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.high = max(self.high, memory(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            self._stop.wait(0.2)

    def reset(self) -> int:
        """The highest so far; start again from the RSS now."""
        high = self.high
        self.high = memory(self.pid)["VmRSS"]
        return max(high, self.high)

    @contextmanager
    def sampling(self) -> Iterator[Peak]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    n = sizes.queued_threads
    over_http(results, stores, store, sizes, work, sizes.queued_over_http)
    in_store(results, stores, store, sizes, work, n, owners=1)
    in_store(results, stores, store, sizes, work, n, owners=n)


def over_http(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path,
              n: int) -> None:
    directory = work / f"queued-http-{store}"
    with bench_server(directory, stores.url(store, directory), **{"max-running": SLOTS}) as (
        server, tokens,
    ), server.bearer(tokens[USER]) as client:
        idle = memory(server.pid)["VmRSS"]
        with Peak(server.pid).sampling() as peak:
            t0 = time.monotonic()
            asyncio.run(start_many(server.url, tokens[USER], n, 32, job="ticker", seconds=1))
            took = time.monotonic() - t0
            waiting = count(client, "initialised")
            time.sleep(sizes.queued_seconds)  # the queue held
            queued = peak.reset()
            drained = drain(client, waiting, sizes.queued_seconds)
            draining = peak.reset()
    say(f"  {n:,} tickers started over HTTP in {took:.1f} s ({n / took:,.0f}/s); "
        f"{waiting:,} waiting; RSS idle {idle / MB:.0f} MB, peak {queued / MB:.0f} MB while "
        f"starting and queued, {draining / MB:.0f} MB while {drained} were claimed")
    add(results, store, f"{n:,} threads queued (started over HTTP, max-running {SLOTS})",
        max(queued, draining), idle, waiting, drained, sizes.queued_seconds)


def in_store(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path,
             n: int, owners: int) -> None:
    directory = work / f"queued-store-{owners}-{store}"
    took: list[float] = []
    with bench_server(directory, stores.url(store, directory),
                      before_start=lambda s: took.append(fill_queue(s, n, owners)),
                      **{"max-running": SLOTS}) as (server, tokens), \
            server.bearer(tokens[USER]) as client, Peak(server.pid).sampling() as peak:
        waiting = count(client, "initialised")
        drained = drain(client, waiting, sizes.queued_seconds)
        high = max(peak.reset(), memory(server.pid)["VmHWM"])
    whose = "one user" if owners == 1 else f"{owners:,} users"
    say(f"  {n:,} no-op threads of {whose} written into the store in {took[0]:.1f} s; the server "
        f"started on them: peak RSS {high / MB:.0f} MB while {drained:,} were claimed")
    add(results, store, f"{n:,} threads of {whose} queued (in the store at start, max-running "
        f"{SLOTS})",
        high, None, waiting, drained, sizes.queued_seconds)


def drain(client: httpx.Client, waiting: int, seconds: float) -> int:
    """Let the queue drain for `seconds`; how many threads were claimed meanwhile."""
    time.sleep(seconds)
    return waiting - count(client, "initialised")


def add(results: Results, store: str, what: str, peak: int, idle: int | None, waiting: int,
        drained: int, seconds: float) -> None:
    note = f"{waiting:,} waiting, {drained:,} claimed in {seconds:g} s of draining"
    if idle is not None:
        note += f"; the idle server {idle / MB:.0f} MB"
    results.add(Figure(ITEM, f"peak RSS, {what}", store, peak / MB, "MB", target=300.0,
                       higher_is_better=False, note=note))


SQLITE_FILL = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO threads (id, name, username, group_id, job, params, status, created, version)
SELECT lower(hex(randomblob(16))), 'No-op thread for group dev',
       CASE WHEN :owners = 1 THEN 'contributor' ELSE 'user' || (i % :owners) END, 240, 'noop',
       '{}', 'initialised', :base + i, 1
FROM n
"""

POSTGRES_FILL = """
INSERT INTO threads (id, name, username, group_id, job, params, status, created, version)
SELECT md5(random()::text || i::text), 'No-op thread for group dev',
       CASE WHEN %(owners)s = 1 THEN 'contributor' ELSE 'user' || (i %% %(owners)s) END, 240,
       'noop', '{}', 'initialised', %(base)s + i, 1
FROM generate_series(1, %(count)s) AS i
"""


def fill_queue(server: BenchServer, n: int, owners: int) -> float:
    """Write `n` initialised no-op threads of `owners` users (1: contributor) into the server's
    (seeded, stopped) store; seconds."""
    base = int(time.time() * 1000) - n - 60_000
    return fill_store(server, SQLITE_FILL, POSTGRES_FILL,
                      {"count": n, "base": base, "owners": owners})
