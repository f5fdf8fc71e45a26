"""How big each benchmark is: the full form (the issue's figures) and `--quick`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    name: str
    warmup: float = 2.0  # seconds of wrk before each measured load
    connections: int = 64
    # 1 polling
    poll_seconds: float = 15.0
    poll_rounds: int = 3
    # 2 starting and finishing
    start_seconds: float = 15.0  # wrk POSTs for this long, then every thread runs to its end
    inproc_threads: int = 20_000
    start_concurrency: int = 64  # concurrent starts (HTTP connections, or in-process tasks)
    # 3 peers
    peer_jobs: int = 20_000
    # 4 many threads
    many_threads: int = 10_000
    many_polls_per_second: int = 200
    many_poll_seconds: float = 60.0
    queued_threads: int = 100_000  # waiting on a server of 4 slots
    # the same queue started over HTTP: the memory is the same kind, and 100,000 starts into a
    # growing queue take minutes (a claim's cost grows with the queue: performance.md Notes)
    queued_over_http: int = 25_000
    queued_seconds: float = 15.0  # held, then drained, for this long each
    # 5 big logs and big tables
    log_events: int = 1_000_000
    table_threads: int = 1_000_000
    read_repeats: int = 50
    search_log_events: int = 1_000_000  # 5s, the log searched
    # 6 long-polls and streams
    waiters: int = 5_000
    # 7 files
    result_mib: int = 200
    upload_starts: int = 50
    # 8 the webhook outbox
    outbox_rows: tuple[int, ...] = (1_000, 100_000, 1_000_000)
    # 9 the dashboard
    dashboard_threads: int = 10_000
    dashboard_reads: int = 20


FULL = Sizes("full")
QUICK = Sizes(
    "quick",
    warmup=1.0,
    poll_seconds=4.0,
    poll_rounds=1,
    start_seconds=4.0,
    inproc_threads=3_000,
    peer_jobs=3_000,
    many_threads=1_000,
    many_poll_seconds=10.0,
    queued_threads=10_000,
    queued_over_http=5_000,
    queued_seconds=5.0,
    log_events=100_000,
    table_threads=100_000,
    read_repeats=20,
    search_log_events=100_000,
    waiters=1_000,
    result_mib=50,
    upload_starts=20,
    outbox_rows=(1_000, 100_000),
)
