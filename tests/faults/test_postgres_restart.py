"""A server on PostgreSQL under a steady stream of starts, polls and lists, while its PostgreSQL
(a private cluster of this module's own, never the session's) is stopped with `pg_ctl stop -m
fast` and started again. Meanwhile requests are 503 with error 0503 (no 500, none that hangs);
afterwards the server recovers by itself: requests are 2xx again within seconds, the threads
that ran through the outage finish, none stays active, every start answered 202 has its thread,
and every final status still reaches the webhook.

`THREADSVC_PG_OUTAGES=N` (default 1) stops PostgreSQL N times; `THREADSVC_PG_DOWN` (default 6)
is how many seconds each outage lasts (longer than the 1 s a call waits for a connection once the
store is known down, store/postgres.py DOWN_WAIT, so that the outage is seen).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from psycopg import conninfo

from tests.faults.common import all_final, check_error
from tests.pg import PostgresCluster
from tests.pg import unavailable as pg_unavailable
from tests.support import FINAL, GROUP, Receiver, Server, seed, status, thread_id, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

OUTAGES = int(os.environ.get("THREADSVC_PG_OUTAGES", "1"))
DOWN = float(os.environ.get("THREADSVC_PG_DOWN", "6"))
BOUND = 20.0  # seconds: no request may take longer, outage or not
OUTAGE_BOUND = 5.0  # seconds: a 503 of the outage takes no longer (the pool's timeout is 10 s)
RECOVERY = 15.0  # seconds after PostgreSQL is back by which requests are 2xx again


class Cluster:
    """A private PostgreSQL cluster that can be stopped and started again on the same port."""

    def __init__(self) -> None:
        self.pg = PostgresCluster.start()
        self.port = int(conninfo.conninfo_to_dict(self.pg.dsn)["port"])  # type: ignore[arg-type]

    def stop(self) -> None:
        assert self.pg.root is not None
        self.pg._cmd("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.pg.root / "data"))

    def start(self) -> None:
        root = self.pg.root
        assert root is not None
        options = (f"-p {self.port} -k {root / 'sock'} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        self.pg._cmd("pg_ctl", "start", "-w", "-t", "60", "-D", str(root / "data"),
                     "-l", str(root / "server.log"), "-o", options)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = pg_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if os.environ.get("THREADSVC_TEST_POSTGRES"):
        pytest.skip("needs a private cluster to stop; THREADSVC_TEST_POSTGRES names a shared one")
    found = Cluster()
    try:
        yield found
    finally:
        found.pg.stop()  # pg_ctl stop -m immediate, and its files deleted


@dataclass
class Answer:
    at: float  # monotonic, when the request was sent
    took: float
    code: int  # 0: no answer (connection refused, reset, timed out)
    kind: str
    error_id: str | None = None


@dataclass
class Load:
    """Starts, polls and lists from a few clients, recording every answer."""

    server: Server
    clients: int = 3
    accepted: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(self.clients)]

    def run(self, n: int) -> None:
        rng = random.Random(n)
        with self.server.client("manager", timeout=BOUND + 10) as http:
            while not self.stop.is_set():
                roll = rng.random()
                with self.lock:
                    known = list(self.accepted)
                if roll < 0.4 or not known:
                    kind, call = "start", lambda: http.post(f"{GROUP}/threads", data={
                        "job": "sleep", "seconds": f"{rng.uniform(0.1, 1.5):.2f}",
                        "steps": str(rng.randint(1, 6))})
                elif roll < 0.85:
                    tid = rng.choice(known)
                    kind, call = "poll", lambda tid=tid: http.get(f"{GROUP}/threads/{tid}/progress")
                else:
                    kind, call = "list", lambda: http.get(f"{GROUP}/threads")
                began = time.monotonic()
                try:
                    answer = call()
                except httpx.HTTPError:
                    self.record(Answer(began, time.monotonic() - began, 0, kind))
                    time.sleep(0.05)
                    continue
                took = time.monotonic() - began
                error_id = None
                if answer.status_code >= 500:
                    try:
                        check_error(answer, 503, "0503")
                        error_id = "0503"
                    except AssertionError as exc:
                        with self.lock:
                            self.bad.append(f"{kind}: {exc}")
                elif kind == "start" and answer.status_code == 202:
                    with self.lock:
                        self.accepted.append(thread_id(answer))
                self.record(Answer(began, took, answer.status_code, kind, error_id))
                time.sleep(0.02)

    def record(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def since(self, moment: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.at >= moment]


@pytest.mark.timeout(300)
def test_postgres_stops_and_comes_back(tmp_path: Path, cluster: Cluster) -> None:
    receiver = Receiver()
    server = Server(tmp_path, db=cluster.pg.new_database_url(), **{
        "max-running": 32, "max-active-per-user": 10_000, "webhook-allow-private": True,
    })
    seed(server.config)
    server.start()
    load = Load(server)
    try:
        with server.client("manager") as http:
            assert http.post(f"{GROUP}/webhooks", data={"url": receiver.url(), "secret": "a-webhook-secret"}
                             ).status_code == 201
            # threads that run through every outage
            long = [thread_id(http.post(f"{GROUP}/threads", data={
                "job": "sleep", "seconds": str(6 + OUTAGES * (DOWN + 6)), "steps": "40"}))
                for _ in range(3)]
            for tid in long:
                wait_for(http, f"{GROUP}/threads/{tid}", lambda r: status(r.text) == "inprogress")
        for worker in load.threads:
            worker.start()
        recoveries: list[float] = []
        outage_503s: list[tuple[int, float]] = []
        time.sleep(3)
        for _ in range(OUTAGES):
            down = time.monotonic()
            cluster.stop()
            time.sleep(DOWN)
            cluster.start()
            up = time.monotonic()
            # sent once the stop had begun, and answered before PostgreSQL was back
            during = [a for a in load.since(down + 0.5) if a.at + a.took < up]
            refused = [a for a in during if a.code == 503 and a.error_id == "0503"]
            assert len(refused) >= 3, (
                f"few 503s while PostgreSQL was down: {Counter(a.code for a in during)}")
            assert all(a.code == 503 for a in during), Counter(a.code for a in during)
            slowest = max(a.took for a in refused)
            assert slowest < OUTAGE_BOUND, f"a 503 took {slowest:.1f}s"
            outage_503s.append((len(refused), slowest))

            def recovered(up: float = up) -> bool:
                recent = [a for a in load.since(up + 0.5) if a.code != 0]
                return len(recent) >= 5 and all(200 <= a.code < 400 for a in recent[-5:])

            while not recovered():
                assert time.monotonic() - up < RECOVERY, (
                    "requests still fail after PostgreSQL came back: "
                    f"{Counter(a.code for a in load.since(up))}")
                time.sleep(0.2)
            recoveries.append(time.monotonic() - up)
            time.sleep(4)  # load on the recovered server
        load.stop.set()
        for worker in load.threads:
            worker.join(BOUND + 15)
        answers = load.answers
        codes = Counter(a.code for a in answers)
        print(f"\npostgres-restart: {len(answers)} requests, outages={OUTAGES} of {DOWN:g}s, "
              f"answers {dict(sorted(codes.items()))}, accepted={len(load.accepted)}, "
              f"recovered in {', '.join(f'{r:.1f}' for r in recoveries)} s, "
              f"503s while down (count, slowest s): {outage_503s}, "
              f"slowest {max(a.took for a in answers):.1f} s")
        assert not load.bad, load.bad[:5]
        assert 500 not in codes, "a 500 answered"
        assert set(codes) <= {0, 200, 202, 503}, codes
        assert codes[0] == 0, "requests went unanswered (reset or timed out)"
        assert max(a.took for a in answers) < BOUND
        assert len(load.accepted) > 10, "the load barely ran"

        with server.client("admin", timeout=30) as admin:
            ids = list(load.accepted) + long
            statuses = all_final(admin, ids, 90)  # nothing stays active
            for tid in long:
                assert statuses[tid] == "completed", (tid, admin.get(
                    f"/ps/service/threads/{tid}/logs").text[-2000:])
            assert set(statuses.values()) <= set(FINAL)
            assert 'total="0"' in admin.get("/ps/service/threads", params={"pagesize": "1"}).text
            for tid in long:
                logs = admin.get(f"/ps/service/threads/{tid}/logs").text
                seqs = [int(s) for s in re.findall(r'<event seq="(\d+)"', logs)]
                assert seqs == list(range(1, len(seqs) + 1)), f"a gap in the log of {tid}"
        deadline = time.monotonic() + 90
        while set(ids) - set(receiver.finals()):
            assert time.monotonic() < deadline, (
                f"{len(set(ids) - set(receiver.finals()))} final statuses never delivered")
            time.sleep(0.5)
    finally:
        load.stop.set()
        receiver.close()
        if server.process is not None:
            server.stop()
        if cluster.pg.root is not None and not (cluster.pg.root / "data/postmaster.pid").exists():
            cluster.start()  # for the next test of the module, if any
