"""2. Starting and finishing no-op threads: over HTTP (wrk POSTs) and through the Python API in a
process of its own."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.bench.common import (
    USER,
    Figure,
    Results,
    Stores,
    bench_server,
    count,
    group_path,
    run_json,
    say,
    wrk,
)
from tests.bench.sizes import Sizes

ITEM = "2 start+finish"
TARGET_HTTP = {"sqlite": 1_000.0}
TARGET_INPROC = {"sqlite": 3_000.0}


def run(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    http(results, stores, store, sizes, work)
    inproc(results, stores, store, sizes, work)


def http(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    directory = work / f"starts-{store}"
    with bench_server(directory, stores.url(store, directory)) as (server, tokens):
        auth = {"Authorization": f"Bearer {tokens[USER]}"}
        url = server.url + group_path()
        with server.bearer(tokens[USER]) as client:
            # warm-up: a few hundred threads, run to completion, so the measured load starts warm
            wrk(url, seconds=1, connections=8, headers=auth, method="POST", body="job=noop")
            while count(client, "active"):
                time.sleep(0.1)
            before = count(client, "completed")
            t0 = time.monotonic()
            out = wrk(url, seconds=sizes.start_seconds, connections=sizes.start_concurrency,
                      headers=auth, method="POST", body="job=noop")
            posted = time.monotonic() - t0
            while (active := count(client, "active")) > 0:
                if time.monotonic() - t0 > posted + 600:
                    raise TimeoutError(f"{active} threads still active after 10 minutes")
                time.sleep(0.05)
            total = time.monotonic() - t0
            completed = count(client, "completed") - before
            failed = count(client, "failed,cancelled")
    note = (f"{completed:,} threads, {sizes.start_concurrency} connections for "
            f"{sizes.start_seconds:g} s; POSTs answered at {out['ok'] / posted:,.0f}/s, "
            f"p99 {out['p99_us'] / 1000:.0f} ms; all done {total - posted:.1f} s after the last")
    if out["status"] or failed:
        note += f"; {out['status']} non-2xx answers, {failed} failed"
    results.add(Figure(ITEM, "no-op threads/s over HTTP (start → completed)", store,
                       completed / total, "threads/s", target=TARGET_HTTP.get(store), note=note))


def inproc(results: Results, stores: Stores, store: str, sizes: Sizes, work: Path) -> None:
    directory = work / f"inproc-{store}"
    db = stores.url(store, directory)
    out = run_json(
        [sys.executable, "-m", "tests.bench.inproc", db, str(directory / "data"),
         str(sizes.inproc_threads), str(sizes.start_concurrency), "64"],
        timeout=1800,
    )
    say(f"  in-process: {out['threads']:,} threads in {out['seconds']:.2f} s "
        f"(starts alone {out['start_rate']:,.0f}/s)")
    results.add(Figure(
        ITEM, "no-op threads/s in-process (Python API)", store, out["rate"], "threads/s",
        target=TARGET_INPROC.get(store),
        note=f"{out['threads']:,} threads, {sizes.start_concurrency} concurrent starters, "
             f"max-running 64; starts alone {out['start_rate']:,.0f}/s",
    ))
