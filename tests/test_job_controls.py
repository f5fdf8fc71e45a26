"""@job's execution controls on real servers (tests/control_jobs.py): a retry inside one thread,
a timeout, a concurrency limit held across PostgreSQL nodes, and how a cancel lands: on a
job that only reports (the server answers meanwhile) and on blocking code that never checks
(its slot stays taken until it returns: max-running is never exceeded)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import support
from tests.pg import PostgresCluster
from tests.support import Server, running_nodes, running_server, wait_final, wait_for

pytestmark = pytest.mark.slow

GROUP = support.GROUP
JOBS: dict[str, Any] = {"jobs": ["tests.control_jobs"]}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    settings: dict[str, Any] = {**JOBS, "max-running": 1}
    yield from (s for s, _ in running_server(tmp_path / "s", **settings))


def _attr(text: str, name: str) -> str:
    found = re.search(rf'<thread [^>]*{name}="([^"]*)"', text)
    return found.group(1) if found else ""


def _message(text: str) -> str:
    found = re.search(r"<message>([^<]*)</message>", text)
    return found.group(1) if found else ""


def _log(http: httpx.Client, tid: str) -> str:
    answer = http.get(f"{GROUP}/threads/{tid}/logs")
    assert answer.status_code == 200, answer.text
    return answer.text


def _warnings(http: httpx.Client, tid: str) -> list[str]:
    return re.findall(r'level="WARN">([^<]*)</event>', _log(http, tid))


def _most_seen(directory: Path) -> int:
    return max(int(p.read_text()) for p in directory.glob("*.seen"))


def test_a_retry_runs_again_in_the_same_thread_until_an_attempt_succeeds(server: Server) -> None:
    with server.client("admin") as http:
        tid = support.start(http, job="flaky")
        # Between attempts: still running, saying when the next one starts.
        waiting = wait_for(http, f"{GROUP}/threads/{tid}/progress",
                           lambda r: "Attempt 1 of 3 failed" in r.text)
        assert _attr(waiting.text, "status") == "inprogress"
        assert re.search(r"the next starts at \d{4}-\d\d-\d\dT[\d:.]+Z \(in 0\.5 s\)",
                         _message(waiting.text)), waiting.text
        final = wait_final(http, tid)
        assert _attr(final.text, "status") == "completed", final.text
        assert _message(final.text) == "done on attempt 3"
        warned = _warnings(http, tid)
        assert [w.split(";")[0] for w in warned] == [
            "Attempt 1 of 3 failed: ConnectionError: refused on attempt 1",
            "Attempt 2 of 3 failed: ConnectionError: refused on attempt 2",
        ]
        assert warned[0].endswith("(in 0.5 s)") and warned[1].endswith("(in 1 s)")  # doubled
        assert "Attempt 3 of 3" in _log(http, tid)

        failing = support.start(http, job="flaky", fail=3)
        final = wait_final(http, failing)
        assert _attr(final.text, "status") == "failed"
        assert _message(final.text) == "ConnectionError: refused on attempt 3"  # the last one
        assert len(_warnings(http, failing)) == 2  # the last failure is the thread's end


def test_a_timeout_stops_the_job_and_fails_the_thread(server: Server) -> None:
    with server.client("admin") as http:
        tid = support.start(http, job="deadline")
        final = wait_final(http, tid, timeout=15)
        assert _attr(final.text, "status") == "failed"
        assert _message(final.text) == "Timed out after 1 s"
        # The slot is free again: the next thread runs (max-running is 1).
        after = support.start(http, job="flaky", fail=0)
        assert _attr(wait_final(http, after).text, "status") == "completed"


def test_a_job_that_only_reports_can_be_cancelled_and_the_server_answers(server: Server) -> None:
    with server.client("admin") as http:
        tid = support.start(http, job="spinner")
        support.wait_running(http, tid)
        for _ in range(5):
            assert http.get("/health", timeout=5).status_code == 200
        answer = http.post(f"{GROUP}/threads/{tid}/cancel", timeout=10)
        assert answer.status_code == 200
        final = wait_final(http, tid, timeout=15)
        assert _attr(final.text, "status") == "cancelled", final.text


def test_blocking_code_that_never_checks_keeps_its_slot_until_it_returns(
    server: Server, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    with server.client("admin") as http:
        deaf = support.start(http, job="deaf", dir=str(marks), seconds=4)
        wait_for(http, "/health", lambda _: any(marks.glob("*.present")))
        answer = http.post(f"{GROUP}/threads/{deaf}/cancel", timeout=10)
        # Its code still runs: not cancelled yet, and saying it is being cancelled.
        assert _attr(answer.text, "status") == "inprogress", answer.text
        stopping = wait_for(http, f"{GROUP}/threads/{deaf}/progress",
                            lambda r: "<message>" in r.text)
        assert _attr(stopping.text, "status") == "inprogress"
        assert _message(stopping.text) == "Cancelling (asked by admin)"
        nxt = support.start(http, job="capped", dir=str(marks), seconds=0)
        assert _attr(http.get(f"{GROUP}/threads/{nxt}").text, "status") == "initialised"
        assert _attr(wait_final(http, deaf).text, "status") == "cancelled"
        assert _attr(wait_final(http, nxt).text, "status") == "completed"
    assert _most_seen(marks) == 1  # never two at once on a node of max-running 1


@pytest.fixture
def nodes(tmp_path: Path, postgres: PostgresCluster) -> Iterator[list[Server]]:
    settings = {**JOBS, "max-running": 1, "max-active-per-user": 100}
    with running_nodes(tmp_path, postgres.new_database_url(), 3, **settings) as servers:
        yield servers


@pytest.mark.postgres
def test_a_concurrency_limit_holds_across_nodes(nodes: list[Server], tmp_path: Path) -> None:
    """Three nodes of one slot each, a job of concurrency 2: two of its threads run at once,
    necessarily on two nodes, and never three."""
    marks = tmp_path / "marks"
    marks.mkdir()
    clients = [node.client("admin", timeout=30) for node in nodes]
    try:
        ids = [support.start(clients[i % 3], job="capped", dir=str(marks), seconds=0.4)
               for i in range(12)]
        # Meanwhile another job is not held back by the capped ones waiting.
        other = support.start(clients[0], job="flaky", fail=0)
        assert _attr(wait_final(clients[0], other).text, "status") == "completed"
        ran_on = set()
        for tid in ids:
            final = wait_final(clients[0], tid)
            assert _attr(final.text, "status") == "completed", final.text
            ran_on.update(re.findall(r"Status: inprogress \(node (n\d)\)", _log(clients[0], tid)))
    finally:
        for client in clients:
            client.close()
    assert _most_seen(marks) == 2  # both of the job's places used, never a third
    assert len(ran_on) >= 2

