"""SQLite's write lock held by another process for longer than the busy timeout (10 s): starts
answer 503 with error 0503 (never 500, never a hang), reads keep working (WAL), nothing is
half-written, and once the lock goes the server carries on by itself: the running thread ends,
new starts are 202 and complete."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.faults.common import all_final, check_error, wait_until
from tests.support import GROUP, Server, running_server, status, thread_id, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

BUSY_TIMEOUT = 10.0  # threadsvc/store/sqlite.py: PRAGMA busy_timeout
STARTS = 4  # at once, while the lock is held
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()          # until the test closes our stdin
conn.execute("ROLLBACK")
"""


class Locker:
    """Another process that holds the store's write lock until released."""

    def __init__(self, db: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    for server, _ in running_server(tmp_path, jobs=["tests.jobs_for_tests"]):
        yield server


@pytest.mark.timeout(180)
def test_write_lock_held_elsewhere(server: Server, tmp_path: Path) -> None:
    db = tmp_path / "threadsvc.db"
    with server.client("manager") as http, server.client("admin") as admin:
        done = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
        done_id = thread_id(done)
        wait_for(http, f"{GROUP}/threads/{done_id}", lambda r: status(r.text) == "completed")
        running = thread_id(http.post(f"{GROUP}/threads",
                                      data={"job": "sleep", "seconds": "12", "steps": "24"}))
        wait_for(http, f"{GROUP}/threads/{running}/progress", lambda r: 'current="1"' in r.text)
        before = admin.get("/ps/service/threads", params={"status": "all"}).text
        total_before = int(re.search(r'total="(\d+)"', before).group(1))  # type: ignore[union-attr]

        locker = Locker(db)
        try:
            # Starts wait the busy timeout, counted from their call (not from their turn behind
            # the writes queued before them: the batch writer, the claim loop, the heartbeat and
            # each other), then are 503s.
            def start() -> tuple[httpx.Response, float]:
                began = time.monotonic()
                with server.client("contributor") as own:
                    answer = own.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
                return answer, time.monotonic() - began

            with ThreadPoolExecutor(STARTS) as pool:
                answers = list(pool.map(lambda _: start(), range(STARTS)))
            for refused, took in answers:
                check_error(refused, 503, "0503")
                assert refused.headers.get("retry-after")
                assert took < BUSY_TIMEOUT + 5, [round(t, 1) for _, t in answers]
            print(f"\nsqlite-locked: {STARTS} concurrent starts refused in "
                  f"{', '.join(f'{t:.1f}' for _, t in answers)} s")
            # an upload too: 503, and its files are not kept
            upload = http.post(f"{GROUP}/threads", data={"job": "checksum"},
                               files={"files": ("a.txt", b"hello" * 1000, "text/plain")})
            check_error(upload, 503, "0503")
            # reads are not held up by the writer (WAL): each answers within a few seconds
            for path in (f"{GROUP}/threads/{done_id}/progress", f"{GROUP}/threads/{done_id}/logs",
                         f"{GROUP}/threads", f"{GROUP}/threads/{running}/progress", "/health"):
                began = time.monotonic()
                answer = http.get(path)
                assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
                assert time.monotonic() - began < 5, path
            # the result of a finished thread is still served
            assert http.get(f"{GROUP}/threads/{done_id}/result").status_code == 204
        finally:
            locker.release()
        released = time.monotonic()

        # recovery: a start is 202 again within seconds, and runs to the end
        def start_ok() -> bool:
            return http.post(f"{GROUP}/threads",
                             data={"job": "sleep", "seconds": "0.2"}).status_code == 202
        wait_until(start_ok, 4 * BUSY_TIMEOUT, "a start to be accepted again")
        print(f"\nsqlite-locked: starts accepted {time.monotonic() - released:.1f}s after release")
        after = admin.get("/ps/service/threads", params={"status": "all", "pagesize": "1000"}).text
        ids = re.findall(r'<thread id="([0-9a-f]{32})"', after)
        # exactly one more thread than before the lock: the 503 starts left nothing behind
        assert len(ids) == total_before + 1
        statuses = all_final(admin, ids, 60)
        assert statuses[running] == "completed", statuses
        assert set(statuses.values()) == {"completed"}
        logs = admin.get(f"/ps/service/threads/{running}/logs").text
        seqs = [int(s) for s in re.findall(r'<event seq="(\d+)"', logs)]
        assert seqs == list(range(1, len(seqs) + 1)), "a gap in the running thread's log"
        assert len(re.findall(r"progress|Status", logs)) >= 2
        assert len(re.findall(r'<event ', logs)) >= 3
    uploads = tmp_path / "data" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), "an upload of a 503 was kept"
