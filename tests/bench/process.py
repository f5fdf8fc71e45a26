"""Jobs in their own process: /health's latency while one CPU-bound job runs, in a child process
(`process=True`) and the same loop in the server (`ctx.run_sync`), against the idle server; and
what starting a child costs. A standalone script, not one of run.py's items (its figures go
by hand into docs/performance.md's Notes):

    python -m tests.bench.process [--requests 400]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.bench.common import (
    USER,
    BenchServer,
    bench_server,
    epoch,
    latency_stats,
    load_average,
    say,
    start_thread,
    wait_thread,
)

JOBS = ["tests.bench.jobs", "tests.process_jobs"]


def health(url: str, requests: int) -> dict[str, float]:
    """`requests` sequential GET /health on one kept-alive connection."""
    samples = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(20):  # warm the connection
            client.get("/health")
        for _ in range(requests):
            began = time.perf_counter()
            client.get("/health").raise_for_status()
            samples.append(time.perf_counter() - began)
    return latency_stats(samples)


def while_running(server: BenchServer, token: str, job: str, requests: int) -> dict[str, float]:
    with server.bearer(token) as client:
        thread = start_thread(client, job, seconds=600)
        wait_thread(client, thread["id"], lambda t: t.get("progress") is not None, interval=0.05)
    time.sleep(0.5)  # the loop is spinning
    try:
        return health(server.url, requests)
    finally:
        # A new connection: the server may have closed an idle one meanwhile.
        with server.bearer(token) as client:
            client.post(f"/ps/service/groups/dev/threads/{thread['id']}/cancel")
            wait_thread(client, thread["id"], lambda t: t["status"] == "cancelled",
                        interval=0.05)


def start_cost(client: httpx.Client, runs: int = 7) -> float:
    """Median ms from `started` to `ended` of a process job that does next to nothing."""
    spent = []
    for _ in range(runs):
        thread = start_thread(client, "proc-report", steps=1)
        done = wait_thread(client, thread["id"], lambda t: t["status"] == "completed",
                           interval=0.02)
        spent.append((epoch(done["ended"]) - epoch(done["started"])) * 1000)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-process-") as work:
        directory = Path(work) / "server"
        db = f"sqlite:///{directory / 'threadsvc.db'}"
        with bench_server(directory, db, jobs=JOBS) as (server, tokens):
            say(f"load average before: {load_average()}")
            token = tokens[USER]
            figures = {
                "idle": health(server.url, args.requests),
                "process job": while_running(server, token, "proc-spin", args.requests),
                "in-process job (run_sync)": while_running(
                    server, token, "inproc-spin", args.requests),
            }
            with server.bearer(token) as client:
                cost = start_cost(client)
            say(f"load average after: {load_average()}")
    idle = figures["idle"]["p95"]
    print(f"/health, {args.requests} sequential requests per row")
    print(f"{'while':<28}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'p95/idle':>10}")
    for name, stats in figures.items():
        print(f"{name:<28}{stats['p50']:>9.2f}{stats['p95']:>9.2f}{stats['p99']:>9.2f}"
              f"{stats['p95'] / idle:>10.2f}")
    print(f"a process job that does next to nothing: {cost:.0f} ms from started to ended (median)")


if __name__ == "__main__":
    main()
