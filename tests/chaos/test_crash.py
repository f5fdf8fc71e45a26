"""A real server under a stream of starts, cancels and polls, SIGKILLed at random moments and
restarted, on each store. Afterwards: every start answered 202 has its thread, every thread
reaches a final status, none ran twice, no log has a gap, and every final status reached the
webhook at least once.

The short form runs in CI; `THREADSVC_CHAOS_ROUNDS=20` (kills) runs the long form.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NewStore
from tests.support import Receiver, Server, running_server

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

ROUNDS = int(os.environ.get("THREADSVC_CHAOS_ROUNDS", "3"))
GROUP = "/ps/service/groups/dev"


class Load:
    """Starts, cancels and polls as fast as one client can, through every crash."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.accepted: list[str] = []
        self.stop = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        rng = random.Random(7)
        with self.server.client("manager", timeout=5) as http:
            while not self.stop.is_set():
                self.requests += 1
                try:
                    roll = rng.random()
                    if roll < 0.5 or not self.accepted:
                        fields = {"job": "sleep", "seconds": f"{rng.uniform(0.05, 0.5):.2f}",
                                  "steps": str(rng.randint(1, 5))}
                        answer = http.post(f"{GROUP}/threads", data=fields)
                        if answer.status_code == 202:
                            self.accepted.append(re.search(r'id="([0-9a-f]{32})"', answer.text)
                                                 .group(1))  # type: ignore[union-attr]
                    elif roll < 0.65:
                        http.post(f"{GROUP}/threads/{rng.choice(self.accepted)}/cancel")
                    else:
                        http.get(f"/ps/service/threads/{rng.choice(self.accepted)}/progress")
                except httpx.HTTPError:
                    time.sleep(0.05)  # the server is down: try again


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


@pytest.fixture
def server(tmp_path: Path, new_store: NewStore) -> Iterator[Server]:
    """A server of its own, killed at the end whatever happened (a failed check must not leave
    it running)."""
    for server, _ in running_server(tmp_path, killed=True, db=new_store(tmp_path), **{
        "max-running": 32, "max-active-per-user": 10_000, "webhook-allow-private": True,
    }):
        yield server


@pytest.mark.timeout(600)
def test_kills_lose_nothing(tmp_path: Path, server: Server, receiver: Receiver) -> None:
    with server.client("manager") as http:
        assert http.post(f"{GROUP}/webhooks", data={"url": receiver.url(), "secret": "a-webhook-secret"}
                         ).status_code == 201
    load = Load(server)
    load.thread.start()
    rng = random.Random(11)
    try:
        for _ in range(ROUNDS):
            time.sleep(rng.uniform(0.5, 2.0))
            server.kill()
            server.start()
    finally:
        time.sleep(1.0)
        load.stop.set()
        load.thread.join(10)
    accepted = list(load.accepted)
    assert len(accepted) > 20, "the load barely ran"
    with server.client("admin", timeout=30) as http:
        deadline = time.monotonic() + 120
        while 'total="0"' not in http.get("/ps/service/threads", params={"pagesize": "1"}).text:
            assert time.monotonic() < deadline, "threads stayed active"
            time.sleep(0.5)
        statuses: dict[str, str] = {}
        page = 1
        while True:  # every page: a fast server starts more than one page of threads
            listed = http.get("/ps/service/threads", params={
                "status": "all", "pagesize": "1000", "type": "sleep", "page": str(page)}).text
            found = re.findall(r'<thread id="([0-9a-f]{32})"[^>]*status="([a-z]+)"', listed)
            statuses.update(found)
            if len(found) < 1000:
                break
            page += 1
        missing = [t for t in accepted if t not in statuses]
        assert not missing, f"{len(missing)} threads answered 202 are gone"
        assert {statuses[t] for t in accepted} <= {"completed", "failed", "cancelled"}
        for thread_id in accepted:
            logs = http.get(f"/ps/service/threads/{thread_id}/logs").text
            seqs = [int(s) for s in re.findall(r'<event seq="(\d+)"', logs)]
            assert seqs == list(range(1, len(seqs) + 1)), f"a gap in the log of {thread_id}"
            assert len(re.findall(r"Status: inprogress \(node", logs)) <= 1, "ran twice"
    deadline = time.monotonic() + 150  # on PostgreSQL a dead node's lease must run out
    while set(accepted) - set(receiver.finals()):
        assert time.monotonic() < deadline, (
            f"{len(set(accepted) - set(receiver.finals()))} final statuses never delivered"
        )
        time.sleep(0.5)
    server.stop()
    figures = Path("test-artifacts/chaos")
    figures.mkdir(parents=True, exist_ok=True)
    (figures / f"{tmp_path.name}.txt").write_text(
        f"kills={ROUNDS} requests={load.requests} accepted={len(accepted)} "
        f"final_statuses_delivered={len(receiver.finals())}\n"
    )
