"""SIGTERM while requests are in flight (a long-poll, an event stream, a slow upload, starts)
and threads run, on each store. tests/test_durability.py checks the message a running thread
gets; here: every request in flight gets an answer (or a clean refusal), threads that end within
the grace end normally, the others are handed back within it (a retry-safe one requeued and run
again after the restart, the others `failed` saying the server shut down), the process exits in
time, and the store, read directly once the process is gone, holds no thread `inprogress` and
every thread a start answered 202.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import NewStore
from tests.faults.common import wait_until
from tests.support import GROUP, Server, running_server, seed, status, thread_id, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

GRACE = 3.0
RUNNING = {"inprogress", "warning", "error"}


def store_rows(db: str) -> dict[str, tuple[str, str | None]]:
    """id -> (status, message), read from the store itself (no server holds it any more)."""
    query = "SELECT id, status, message FROM threads"
    if db.startswith("sqlite:///"):
        conn = sqlite3.connect(db.removeprefix("sqlite:///"))
        try:
            return {r[0]: (r[1], r[2]) for r in conn.execute(query)}
        finally:
            conn.close()
    with psycopg.connect(db) as pg:
        return {r[0]: (r[1], r[2]) for r in pg.execute(query)}


@pytest.fixture
def server(tmp_path: Path, new_store: NewStore) -> Iterator[Server]:
    for server, _ in running_server(tmp_path, killed=True, db=new_store(tmp_path), **{
        "shutdown-grace": GRACE, "max-running": 4, "max-active-per-user": 10_000,
        "jobs": ["tests.jobs_for_tests", "tests.faults.jobs"],
    }):
        yield server


def _in_background(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        began = time.monotonic()
        try:
            out["answer"] = fn()
        except httpx.HTTPError as exc:
            out["error"] = exc
        out["took"] = time.monotonic() - began

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, out


@pytest.mark.timeout(120)
def test_sigterm_with_requests_in_flight(server: Server) -> None:
    db = _db(server)
    with server.client("contributor") as http:
        def start(**fields: str) -> str:
            answer = http.post(f"{GROUP}/threads", data=fields)
            assert answer.status_code == 202, answer.text
            return thread_id(answer)

        stuck = start(job="sleep", seconds="120", steps="1")  # not retry-safe: failed
        watched = start(job="sleep", seconds="120", steps="1")
        retried = start(job="again", seconds="120")  # retry-safe: requeued
        short = start(job="sleep", seconds=str(GRACE / 2), steps="2")  # ends within the grace
        queued = start(job="sleep", seconds="0")  # max-running 4: waits initialised
        for tid in (stuck, watched, retried, short):
            wait_for(http, f"{GROUP}/threads/{tid}/progress",
                     lambda r: status(r.text) == "inprogress" and "<progress" in r.text)
        assert status(http.get(f"{GROUP}/threads/{queued}").text) == "initialised"
        etag = http.get(f"{GROUP}/threads/{stuck}/progress").headers["etag"]

    clients = [server.client("contributor", timeout=60) for _ in range(4)]
    try:
        long_poll, poll_out = _in_background(lambda: clients[0].get(
            f"{GROUP}/threads/{stuck}/progress", params={"wait": "30"},
            headers={"If-None-Match": etag}))

        def stream() -> tuple[int, str]:
            with clients[1].stream("GET", f"{GROUP}/threads/{watched}/events") as answer:
                text = "".join(answer.iter_text())
                return answer.status_code, text
        events, events_out = _in_background(stream)

        def slow_body() -> Iterator[bytes]:
            boundary = b"--b0undary\r\n"
            yield boundary + b'Content-Disposition: form-data; name="job"\r\n\r\nchecksum\r\n'
            yield boundary + (b'Content-Disposition: form-data; name="files"; filename="a.txt"'
                              b"\r\nContent-Type: text/plain\r\n\r\n")
            for _ in range(10):
                time.sleep(0.2)
                yield b"x" * 1000
            yield b"\r\n--b0undary--\r\n"
        upload, upload_out = _in_background(lambda: clients[2].post(
            f"{GROUP}/threads", content=slow_body(),
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"}))

        accepted: list[str] = []
        refused: list[str] = []
        stop = threading.Event()

        def starts() -> None:
            while not stop.is_set():
                try:
                    answer = clients[3].post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
                except httpx.HTTPError as exc:
                    refused.append(type(exc).__name__)  # connection refused once it stops listening
                    time.sleep(0.05)
                    continue
                if answer.status_code == 202:
                    accepted.append(thread_id(answer))
                else:
                    refused.append(str(answer.status_code))
        starter = threading.Thread(target=starts, daemon=True)
        starter.start()

        time.sleep(0.5)  # every request is in flight
        sent = time.monotonic()
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(GRACE + 20)
        exited = time.monotonic() - sent
        server.process = None
        stop.set()
        for worker in (long_poll, events, upload, starter):
            worker.join(30)
    finally:
        for client in clients:
            client.close()

    print(f"\nshutdown: exited {exited:.1f}s after SIGTERM (code {code}); long-poll {poll_out}; "
          f"upload {upload_out.get('answer') or upload_out.get('error')!r}; "
          f"starts accepted {len(accepted)}, refused {len(refused)}")
    log = server.log.read_text()
    assert "Application shutdown complete" in log
    assert exited < GRACE + 5 + 10, exited  # uvicorn's timeout_graceful_shutdown, then the grace
    # the store, now that no process holds it
    rows = store_rows(db)
    assert not [t for t, (s, _) in rows.items() if s in RUNNING], rows
    assert rows[short][0] == "completed"
    assert rows[stuck][0] == "failed" and "shut down" in (rows[stuck][1] or "")
    assert rows[watched][0] == "failed"
    assert rows[retried][0] == "initialised", rows[retried]  # handed back to run again
    assert rows[queued][0] in {"initialised", "completed"}
    assert not [r for r in refused if r.isdigit() and r != "503"], refused  # refused: no answer
    missing = [t for t in accepted if t not in rows]
    assert not missing, f"{len(missing)} threads answered 202 are not in the store"
    # every request in flight was answered, or refused cleanly (no reset half-way)
    assert "answer" in upload_out, upload_out
    assert upload_out["answer"].status_code in {202, 503}, upload_out["answer"].text
    if upload_out["answer"].status_code == 202:
        assert thread_id(upload_out["answer"]) in rows
    # the long-poll and the event stream ended, one way or another, before the process did
    # (that they end cleanly is test_waiting_requests_end_cleanly, a known bug)
    assert not long_poll.is_alive() and not events.is_alive()
    assert poll_out["took"] < exited + 1 and events_out["took"] < exited + 1

    # after a restart: the retry-safe thread runs again and completes; the queued one too
    server.start()
    with server.client("contributor") as http:
        wait_for(http, f"{GROUP}/threads/{queued}", lambda r: status(r.text) == "completed",
                 timeout=30)
        text = http.get(f"{GROUP}/threads/{retried}/logs").text
        assert "will run again" in text
        wait_until(lambda: status(http.get(f"{GROUP}/threads/{retried}").text) == "inprogress",
                   30, "the retry-safe thread to run again")
        assert re.search(r'status="failed"', http.get(f"{GROUP}/threads/{stuck}").text)


@pytest.mark.timeout(60)
def test_waiting_requests_end_cleanly(tmp_path: Path) -> None:
    server = Server(tmp_path, **{"shutdown-grace": GRACE})
    seed(server.config)
    server.start()
    try:
        with server.client("contributor") as http:
            answer = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "120",
                                                         "steps": "1"})
            tid = thread_id(answer)
            ready = wait_for(http, f"{GROUP}/threads/{tid}/progress", lambda r: "<progress" in r.text)
        with server.client("contributor", timeout=60) as one, \
                server.client("contributor", timeout=60) as two:
            poll, poll_out = _in_background(lambda: one.get(
                f"{GROUP}/threads/{tid}/progress", params={"wait": "30"},
                headers={"If-None-Match": ready.headers["etag"]}))

            def stream() -> tuple[int, str]:
                with two.stream("GET", f"{GROUP}/threads/{tid}/events") as answer:
                    return answer.status_code, "".join(answer.iter_text())
            events, events_out = _in_background(stream)
            time.sleep(0.5)
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            poll.join(30)
            events.join(30)
        assert "answer" in poll_out, poll_out
        assert poll_out["answer"].status_code in {200, 304}, poll_out["answer"].text
        assert poll_out["took"] < GRACE + 2.5
        assert "answer" in events_out, events_out  # the body ended properly
        assert events_out["took"] < GRACE + 2.5
    finally:
        if server.process is not None:
            server.stop(signal.SIGKILL)


def _db(server: Server) -> str:
    found = re.search(r'^db = "(.*)"$', server.config.read_text(), re.MULTILINE)
    assert found
    return found.group(1)
