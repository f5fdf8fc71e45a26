"""Several nodes on one PostgreSQL database behave as one server (docs/api.md#durability, the multi-node
issue): threads spread over the nodes, a node killed with SIGKILL loses nothing, and a cancel
sent through one node stops a thread running on another."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest

from tests.jobs_for_tests import CHUNK
from tests.pg import PostgresCluster
from tests.s3servers import S3Server
from tests.support import Server, running_nodes, seed, wait_final, wait_for
from threadsvc.files.base import FileStorage
from threadsvc.files.postgres import PostgresFiles

pytestmark = pytest.mark.slow

THREADS = 500
FINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
def nodes(tmp_path: Path, postgres: PostgresCluster) -> Iterator[list[Server]]:
    settings = {"lease-timeout": 3, "max-running": 60, "max-active-per-user": 1000}
    with running_nodes(tmp_path, postgres.new_database_url(), 3, **settings) as servers:
        yield servers


def _ids(text: str) -> list[str]:
    return re.findall(r'<thread id="([0-9a-f]{32})"', text)


def _attr(text: str, name: str) -> str:
    found = re.search(rf'<thread [^>]*{name}="([^"]*)"', text)
    return found.group(1) if found else ""


@pytest.mark.timeout(240)
def test_three_nodes_lose_nothing(nodes: list[Server], tmp_path: Path) -> None:
    clients = [node.client("admin", timeout=60) for node in nodes]
    try:
        def start(i: int) -> str:
            answer = clients[i % 3].post(
                "/ps/service/groups/dev/threads",
                data={"job": "sleep", "seconds": "3", "steps": "6"},
            )
            assert answer.status_code == 202, answer.text
            return _ids(answer.text)[0]

        with ThreadPoolExecutor(12) as pool:
            started = list(pool.map(start, range(THREADS)))
        assert len(set(started)) == THREADS

        # wait until the second node runs some, then kill it outright
        deadline = time.monotonic() + 30
        while True:
            listed = clients[0].get("/ps/service/threads", params={"pagesize": "1000"}).text
            on_n2 = re.findall(r'<thread id="([0-9a-f]{32})"[^>]*node="n2"', listed)
            if on_n2:
                break
            assert time.monotonic() < deadline, "node n2 never ran a thread"
            time.sleep(0.1)
        nodes[1].kill()
        survivors = [clients[0], clients[2]]

        # a cancel sent through one node stops a thread running on the other
        long = survivors[0].post("/ps/service/threads", data={"job": "sleep", "seconds": "120"})
        long_id = _ids(long.text)[0]
        while not _attr(survivors[0].get(f"/ps/service/threads/{long_id}").text, "node"):
            time.sleep(0.05)
        runner = _attr(survivors[0].get(f"/ps/service/threads/{long_id}").text, "node")
        through = survivors[1] if runner == "n1" else survivors[0]
        sent = time.monotonic()
        through.post(f"/ps/service/threads/{long_id}/cancel")
        while _attr(through.get(f"/ps/service/threads/{long_id}").text, "status") != "cancelled":
            assert time.monotonic() - sent < 5, "the cancel did not reach the other node"
            time.sleep(0.02)

        # a long-poll on one node wakes for a change made by the node running the thread
        short = survivors[0].post("/ps/service/threads", data={"job": "sleep", "seconds": "2",
                                                               "steps": "1"})
        short_id = _ids(short.text)[0]
        url = f"/ps/service/threads/{short_id}/progress"
        while 'current="0"' not in (seen := survivors[0].get(url)).text:
            time.sleep(0.02)
        watcher = survivors[1] if _attr(seen.text, "node") == "n1" else survivors[0]
        tag = watcher.get(url).headers["etag"]
        began = time.monotonic()
        woke = watcher.get(url, params={"wait": "30"}, headers={"If-None-Match": tag})
        assert woke.status_code == 200 and time.monotonic() - began < 15

        # every thread reaches a final status; the lost node's ones say so
        deadline = time.monotonic() + 120
        while True:
            active = survivors[0].get("/ps/service/threads", params={"pagesize": "1"}).text
            if 'total="0"' in active:
                break
            assert time.monotonic() < deadline, active[:300]
            time.sleep(0.5)
        every = survivors[0].get(
            "/ps/service/threads", params={"status": "all", "pagesize": "1000", "type": "sleep"}
        ).text
        statuses = dict(re.findall(r'<thread id="([0-9a-f]{32})"[^>]*status="([a-z]+)"', every))
        assert set(started) <= set(statuses)
        assert {statuses[t] for t in started} <= {"completed", "failed"}
        lost = [t for t in started if statuses[t] == "failed"]
        assert lost and set(on_n2) <= set(lost) | {t for t in started if statuses[t] == "completed"}

        # no thread ran twice, and every log is whole
        for thread_id in started:
            logs = survivors[0].get(f"/ps/service/threads/{thread_id}/logs").text
            seqs = [int(s) for s in re.findall(r'<event seq="(\d+)"', logs)]
            assert seqs == list(range(1, len(seqs) + 1)), thread_id
            assert len(re.findall(r"Status: inprogress \(node", logs)) == 1, logs
            if statuses[thread_id] == "failed":
                assert "node was lost" in logs
    finally:
        for client in clients:
            client.close()


# -- every node serves every file: nodes with separate data directories --------------------------
def _bucket(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
            ) -> tuple[dict[str, object], FileStorage]:
    """Settings for files in a fresh bucket of moto's server (its credentials in the nodes'
    environment, boto's usual chain), and the bucket as a storage, to look behind the nodes."""
    moto: S3Server = request.getfixturevalue("moto_s3")
    bucket = moto.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.secret_key)
    settings = {"files": "s3", "s3-endpoint": moto.endpoint, "s3-bucket": bucket}
    return settings, moto.files(bucket)


@contextlib.contextmanager
def _receiver_and_runner(tmp_path: Path, settings: dict[str, object]
                         ) -> Iterator[tuple[Server, Server]]:
    """Two nodes of one store: n1 receives (it runs nothing: max-running 0), n2 runs."""
    receiver = Server(tmp_path / "n1", node="n1", **settings, **{"max-running": 0})
    runner = Server(tmp_path / "n2", node="n2", **settings)
    seed(receiver.config)
    receiver.start()
    runner.start()
    try:
        yield receiver, runner
    finally:
        for node in (receiver, runner):
            if node.process is not None:
                node.stop(signal.SIGKILL)


def _ran_on(http: httpx.Client, tid: str) -> str:
    logs = http.get(f"/ps/service/groups/dev/threads/{tid}/logs").text
    found = re.search(r"Status: inprogress \(node (\w+)\)", logs)
    return found.group(1) if found else ""


@pytest.mark.parametrize("files", [
    "postgres",
    "s3",  # on moto's server (tests/s3servers.py)
    "local-shared",  # one directory both nodes mount (here: the same one)
])
@pytest.mark.timeout(120)
def test_every_node_serves_every_file(
    tmp_path: Path, postgres: PostgresCluster, files: str, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """n1 receives (it runs nothing: max-running 0), n2 runs; with postgres or s3 files the
    nodes share nothing but the database (and the bucket)."""
    db = postgres.new_database_url()
    common: dict[str, object] = {"db": db, "jobs": ["tests.jobs_for_tests"], "files": "postgres"}
    if files == "local-shared":
        common.update({"files": "local", "files-shared": True, "data-dir": str(tmp_path / "shared")})
    if files == "s3":
        common.update(_bucket(request, monkeypatch)[0])
    with _receiver_and_runner(tmp_path, common) as (receiver, _):
        with receiver.client("admin", timeout=60) as http:
            body = os.urandom(300_000)
            answer = http.post("/ps/service/groups/dev/threads", data={"job": "checksum"},
                               files=[("files", ("a.bin", body))])
            assert answer.status_code == 202, answer.text
            tid = _ids(answer.text)[0]
            done = wait_final(http, tid, timeout=60)
            assert 'status="completed"' in done.text and _ran_on(http, tid) == "n2"
            link = http.get(f"/ps/service/groups/dev/threads/{tid}/result").headers["location"]
            assert link.startswith(receiver.url)
            assert http.get(link).text == f"a.bin {len(body)} {hashlib.sha256(body).hexdigest()}"

            answer = http.post("/ps/service/groups/dev/threads", data={"job": "big-result", "mib": "2"})
            tid = _ids(answer.text)[0]
            done = wait_final(http, tid, timeout=60)
            assert 'status="completed"' in done.text and _ran_on(http, tid) == "n2"
            link = http.get(f"/ps/service/groups/dev/threads/{tid}/result").headers["location"]
            whole = http.get(link)
            assert whole.status_code == 200 and whole.content == CHUNK * 2
            part = http.get(link, headers={"Range": "bytes=1048570-1048585"})
            assert part.status_code == 206
            assert part.headers["content-range"] == f"bytes 1048570-1048585/{2 * len(CHUNK)}"
            assert part.content == (CHUNK * 2)[1048570:1048586]
        if files != "local-shared":  # nothing on either node's disk
            assert not list((tmp_path / "n1" / "data").glob("results/*"))
            assert not list((tmp_path / "n2" / "data").glob("results/*"))


@pytest.mark.parametrize("files", ["postgres", "s3"])
@pytest.mark.timeout(180)
def test_a_node_killed_while_storing_a_result_leaves_no_part_of_it(
    tmp_path: Path, postgres: PostgresCluster, files: str, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """n2 is SIGKILLed once its job has written the whole result, while the node stores it;
    n1 ends the thread failed, and the storage holds no part of its result."""
    db = postgres.new_database_url()
    common: dict[str, object] = {"db": db, "jobs": ["tests.jobs_for_tests"], "files": files,
                                 "lease-timeout": 3}
    storage: FileStorage = PostgresFiles(db)
    if files == "s3":
        settings, storage = _bucket(request, monkeypatch)
        common.update(settings)
    with _receiver_and_runner(tmp_path, common) as (receiver, runner):
        with receiver.client("admin", timeout=60) as http:
            answer = http.post("/ps/service/groups/dev/threads",
                               data={"job": "big-result", "mib": "300"})
            tid = _ids(answer.text)[0]
            wait_for(http, f"/ps/service/groups/dev/threads/{tid}/progress",
                     lambda r: 'current="300"' in r.text, timeout=120)
            runner.kill()  # written whole to its scratch; being stored now, or about to be
            done = wait_final(http, tid, timeout=60)
            assert 'status="failed"' in done.text and "<result" not in done.text

        async def keys() -> list[str]:
            await storage.open()
            try:
                return [key async for key in storage.keys("results/")]
            finally:
                await storage.close()

        assert anyio.run(keys) == []
