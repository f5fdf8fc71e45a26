"""`threadsvc backup DEST`: taken from a live SQLite server while it runs threads (some logging,
some making results), restored as the README says into a new directory, a server started on
it answers the same threads, logs and results, and every result its store names is there.
What it refuses: a PostgreSQL store (saying to use pg_dump), a DEST that holds something."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.support import GROUP, Server, running_server, start, wait_final, wait_running

pytestmark = pytest.mark.slow


def backup(config: Path, dest: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    return subprocess.run(
        [sys.executable, "-m", "threadsvc", "backup", "--config", str(config), str(dest)],
        check=False, capture_output=True, text=True, env=env, timeout=120)


def threads(http: httpx.Client) -> dict[str, dict[str, str]]:
    answer = http.get(f"{GROUP}/threads?status=all&pagesize=1000")
    assert answer.status_code == 200, answer.text
    return {el.get("id"): dict(el.attrib) for el in etree.fromstring(answer.content)}


def events(logs: str) -> list[tuple[dict[str, str], str | None]]:
    return [(dict(el.attrib), el.text) for el in etree.fromstring(logs.encode())]


def keep_starting(server: Server, stop: threading.Event, started: list[str]) -> None:
    """Start threads that make a result, one after another, until `stop`."""
    with server.client("manager") as http:
        while not stop.is_set():
            started.append(start(http, seconds=0.01, steps=1, result="meanwhile"))


def test_a_backup_of_a_running_server_restores_to_the_same_threads_logs_and_results(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "backup"
    for server, _ in running_server(tmp_path / "live", **{"max-running": 8}):
        with server.client("manager") as http:
            done = [start(http, seconds=0.05, steps=5, warn=2, result=f"result {n}")
                    for n in range(5)]
            failed = start(http, seconds=0.05, steps=2, fail=2)
            for tid in (*done, failed):
                wait_final(http, tid)
            long = start(http, seconds=600, steps=6000)  # logs a step every 0.1 s throughout
            wait_running(http, long)
            before = threads(http)
            logs = {tid: http.get(f"{GROUP}/threads/{tid}/logs").text for tid in before}
            results = {tid: http.get(f"{GROUP}/threads/{tid}/result",
                                     follow_redirects=True).content for tid in done}

            # Threads start and end with results while the backup runs.
            stop, started = threading.Event(), []

            busy = threading.Thread(target=keep_starting, args=(server, stop, started))
            busy.start()
            try:
                taken = backup(server.config, dest)
            finally:
                stop.set()
                busy.join()
            assert taken.returncode == 0, taken.stderr
            assert started  # it did run alongside

    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert stat.S_IMODE((dest / "threadsvc.db").stat().st_mode) == 0o600
    assert all(stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600)
               for p in (dest / "files").rglob("*"))

    # The restore, as the README says: the copy of the database and the files put in place.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy2(dest / "threadsvc.db", restored / "threadsvc.db")
    shutil.copytree(dest / "files", restored / "data")
    server = Server(restored)
    server.start()
    try:
        with server.client("manager") as http:
            after = threads(http)
            for tid, thread in before.items():
                if tid != long:
                    assert after[tid] == thread
                    assert http.get(f"{GROUP}/threads/{tid}/logs").text == logs[tid]
            for tid, content in results.items():
                assert http.get(f"{GROUP}/threads/{tid}/result",
                                follow_redirects=True).content == content
            # The thread running at the backup ended failed here (its server was gone), with
            # the log it had by then; a thread started meanwhile is there whole, or not at all.
            interrupted = wait_final(http, long)
            assert 'status="failed"' in interrupted.text
            had, kept = events(logs[long]), events(http.get(f"{GROUP}/threads/{long}/logs").text)
            assert len(kept) > len(had) and kept[:len(had)] == had
            for tid, thread in after.items():
                if tid in started and thread["status"] == "completed":
                    result = http.get(f"{GROUP}/threads/{tid}/result", follow_redirects=True)
                    assert result.content == b"meanwhile", (tid, result.status_code)
    finally:
        server.stop()


def test_a_backup_refuses_a_postgresql_store_and_a_dest_in_use(tmp_path: Path) -> None:
    pg = Server(tmp_path / "pg", db="postgresql://threadsvc@127.0.0.1:1/none", files="postgres")
    refused = backup(pg.config, tmp_path / "dest")
    assert refused.returncode != 0
    assert "pg_dump" in refused.stderr and "files are in the database" in refused.stderr
    assert not (tmp_path / "dest").exists()

    for server, _ in running_server(tmp_path / "live"):
        used = tmp_path / "used"
        used.mkdir()
        (used / "mine").write_text("kept")
        refused = backup(server.config, used)
        assert refused.returncode != 0 and "not an empty directory" in refused.stderr
        assert [p.name for p in used.iterdir()] == ["mine"]
