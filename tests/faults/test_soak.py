"""Steady load (starts, polls, long-polls, logs, lists, results, event streams) on one server for
THREADSVC_SOAK_SECONDS (default 30; the long form is 300), sampling the server's resident memory
(VmRSS in /proc/PID/status) twice a second after a warm-up. The memory of the second half of the
samples must not be more than 5 % above the first half's in the long form; the short form can
only catch a fast leak (its halves are a dozen seconds apart), so its bound is 10 %, and it
checks that every request was answered as expected and every thread ended.

    THREADSVC_SOAK_SECONDS=300 .venv/bin/pytest tests/faults/test_soak.py -s

`THREADSVC_SOAK_STORE=postgres` runs it on PostgreSQL (tests/pg.py) instead of SQLite: the server
process then holds no database page cache of its own.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.common import all_final, rss_kib, socket_fds
from tests.support import GROUP, Server, running_server, thread_id

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SECONDS = float(os.environ.get("THREADSVC_SOAK_SECONDS", "30"))
LONG_FORM = SECONDS >= 300
GROWTH_BOUND = 0.05 if LONG_FORM else 0.10
WARM_UP = max(5.0, SECONDS * 0.2)
WORKERS = 4
STORE = os.environ.get("THREADSVC_SOAK_STORE", "sqlite")
EXPECTED = {"start": {202}, "poll": {200}, "wait": {200, 304}, "logs": {200}, "list": {200},
            "result": {200, 202, 204}, "events": {200}}


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    settings: dict[str, object] = {"max-active-per-user": 10_000, "max-running": 32}
    if STORE == "postgres":
        settings["db"] = request.getfixturevalue("postgres").new_database_url()
    for server, _ in running_server(tmp_path, **settings):
        yield server


class Load:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.accepted: list[str] = []
        self.codes: Counter[str] = Counter()
        self.bad: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True)
                        for n in range(WORKERS)]

    def note(self, kind: str, code: int, text: str = "") -> None:
        with self.lock:
            self.codes[kind] += 1
            if code not in EXPECTED[kind]:
                self.bad.append(f"{kind}: {code} {text[:200]}")

    def run(self, n: int) -> None:
        rng = random.Random(n)
        with self.server.client("contributor", timeout=60) as http:
            while not self.stop.is_set():
                with self.lock:
                    recent = self.accepted[-20:]
                roll = rng.random()
                tid = rng.choice(recent) if recent else ""
                base = f"{GROUP}/threads/{tid}"
                if roll < 0.2 or not recent:
                    fields = {"job": "sleep", "seconds": f"{rng.uniform(0.1, 1.0):.2f}",
                              "steps": str(rng.randint(1, 5))}
                    if rng.random() < 0.3:
                        fields["result"] = "r" * rng.randint(1, 5000)
                    answer = http.post(f"{GROUP}/threads", data=fields)
                    self.note("start", answer.status_code, answer.text)
                    if answer.status_code == 202:
                        with self.lock:
                            self.accepted.append(thread_id(answer))
                elif roll < 0.45:
                    answer = http.get(f"{base}/progress")
                    self.note("poll", answer.status_code, answer.text)
                elif roll < 0.55:
                    answer = http.get(f"{base}/progress", params={"wait": "1"},
                                      headers={"If-None-Match": answer_etag(http, base)})
                    self.note("wait", answer.status_code, answer.text)
                elif roll < 0.7:
                    answer = http.get(f"{base}/logs")
                    self.note("logs", answer.status_code, answer.text)
                elif roll < 0.8:
                    answer = http.get(f"{GROUP}/threads",
                                      params={"status": "all", "pagesize": "20"})
                    self.note("list", answer.status_code, answer.text)
                elif roll < 0.9:
                    answer = http.get(f"{base}/result", follow_redirects=True)
                    self.note("result", answer.status_code, answer.text)
                else:  # an event stream, to the thread's end (a few seconds at most)
                    with http.stream("GET", f"{base}/events") as answer:
                        for _ in answer.iter_bytes():
                            pass
                        self.note("events", answer.status_code)


def answer_etag(http: httpx.Client, base: str) -> str:
    return http.get(f"{base}/progress").headers.get("etag", "")


@pytest.mark.timeout(SECONDS + 240)
def test_steady_load_does_not_grow(server: Server) -> None:
    assert server.process is not None
    pid = server.process.pid
    load = Load(server)
    for worker in load.threads:
        worker.start()
    samples: list[int] = []
    try:
        began = time.monotonic()
        time.sleep(WARM_UP)
        sockets_after_warm_up = socket_fds(pid)
        while time.monotonic() - began < WARM_UP + SECONDS:
            samples.append(rss_kib(pid))
            time.sleep(0.5)
    finally:
        load.stop.set()
        for worker in load.threads:
            worker.join(60)
    with server.client("admin") as admin:
        statuses = all_final(admin, load.accepted, 60)
    half = len(samples) // 2
    first, second = statistics.mean(samples[:half]), statistics.mean(samples[half:])
    growth = (second - first) / first
    requests = sum(load.codes.values())
    print(f"\nsoak: {SECONDS:g}s after {WARM_UP:g}s warm-up, {requests} requests "
          f"({requests / (WARM_UP + SECONDS):.0f}/s) {dict(load.codes)}, "
          f"{len(load.accepted)} threads {dict(Counter(statuses.values()))}; "
          f"{STORE}; RSS KiB first {samples[0]}, halves {first:.0f} -> {second:.0f} "
          f"({growth:+.2%}), last {samples[-1]}, max {max(samples)}; "
          f"sockets after warm-up {sockets_after_warm_up}, at the end {socket_fds(pid)}; "
          f"RSS MiB by tenths of the run: "
          f"{[round(samples[len(samples) * i // 10] / 1024, 1) for i in range(10)]}")
    assert not load.bad, load.bad[:5]
    assert set(statuses.values()) == {"completed"}
    assert requests > 20 * SECONDS, "the load barely ran"
    assert len(samples) >= 10
    assert growth < GROWTH_BOUND, f"RSS grew {growth:.1%} between the halves"
    assert socket_fds(pid) <= sockets_after_warm_up + WORKERS
    found = re.findall(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    assert found and int(found[0]) < 4 * samples[0], "a peak far above the steady state"
