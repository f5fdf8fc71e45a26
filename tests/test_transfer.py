"""`threadsvc export | threadsvc import`: a SQLite deployment (users, tokens, a client, threads of
every final status, one waiting with its upload, logs, a result, a webhook) moved into
PostgreSQL with postgres files answers the same over HTTP, and runs the waiting thread on its
carried upload; the same dump comes back out of PostgreSQL and into SQLite again; an import
refuses a store that holds anything, writing nothing; a cut dump leaves a store no node starts
on, until an import runs whole."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.pg import PostgresCluster
from tests.support import GROUP, Server, password, seed, start, wait_final, wait_running

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

DOC = b"<?xml version='1.0'?><!DOCTYPE a [<!ELEMENT a (#PCDATA)>]><a>carried</a>"


def cli(*args: str, stdin: Path | None = None, stdout: Path | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    with open(stdin or os.devnull, "rb") as given, open(stdout or os.devnull, "wb") as out:
        return subprocess.run([sys.executable, "-m", "threadsvc", *args], check=False,
                              stdin=given, stdout=out, stderr=subprocess.PIPE, env=env,
                              timeout=120)


def export(config: Path, dump: Path) -> None:
    done = cli("export", "--config", str(config), stdout=dump)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600  # it holds hashes and secrets


def import_(config: Path, dump: Path) -> subprocess.CompletedProcess[bytes]:
    return cli("import", "--config", str(config), stdin=dump)


def contents(dump: Path) -> dict[str, Any]:
    """What a dump holds, in an order that does not depend on the store's: the rows of each
    table, sorted, and each file's bytes."""
    tables: dict[str, list[str]] = {}
    files: dict[str, bytes] = {}
    key = None
    for raw in dump.read_bytes().splitlines():
        line = json.loads(raw)
        if "table" in line:
            tables.setdefault(line["table"], []).extend(
                json.dumps(row, sort_keys=True) for row in line["rows"])
        elif "file" in line:
            key = line["file"]
            files[key] = b""
        elif "data" in line:
            files[key] += base64.b64decode(line["data"])  # type: ignore[index]
    return {"tables": {k: sorted(v) for k, v in tables.items()}, "files": files}


def elements(answer: httpx.Response) -> dict[str, dict[str, str]]:
    assert answer.status_code == 200, answer.text
    return {el.get("id"): dict(el.attrib) for el in etree.fromstring(answer.content)}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A SQLite deployment, stopped, with what it answered before it stopped."""
    directory = tmp_path_factory.mktemp("sqlite")
    server = Server(directory, **{"max-running": 1, "webhook-allow-private": True})
    tokens = seed(server.config)
    client = cli("client", "add", "--config", str(server.config), "manager")
    assert client.returncode == 0, client.stderr
    server.start()
    seen: dict[str, Any] = {"tokens": tokens, "directory": directory, "config": server.config}
    try:
        with server.client("manager") as http, server.client("admin") as admin:
            hook = http.post(f"{GROUP}/webhooks", data={"url": "http://127.0.0.1:9/hook",
                                                        "secret": "s3cret-key-16-chars"})
            assert hook.status_code == 201, hook.text
            done = start(http, seconds=0.05, steps=2, warn=1, result="the result")
            failed = start(http, seconds=0.05, steps=2, fail=2)
            server_level = start(admin, "/ps/service", seconds=0.01, steps=1)
            for tid, where in ((done, GROUP), (failed, GROUP), (server_level, "/ps/service")):
                wait_final(admin if where == "/ps/service" else http, tid, where)
            running = start(http, seconds=600, steps=600)  # the one slot: interrupted by the stop
            wait_running(http, running)
            cancelled = start(http, seconds=1, steps=1)
            assert http.post(f"{GROUP}/threads/{cancelled}/cancel").status_code == 200
            waiting = http.post(f"{GROUP}/threads", data={"job": "validate"},
                                files={"documents": ("a.xml", DOC, "application/xml")})
            assert waiting.status_code == 202, waiting.text
            seen["waiting"] = str(etree.fromstring(waiting.content).get("id"))
            seen["done"] = done
            seen["result"] = http.get(f"{GROUP}/threads/{done}/result",
                                      follow_redirects=True).content
            assert seen["result"] == b"the result"
            seen["webhooks"] = webhooks(http)
            assert admin.post("/ps/service/jobs/transform/pause").status_code == 200  # carried
        server.stop()  # the running thread ends failed; the upload's thread waits
        seen["running"] = running
        seen["server"] = server
        yield seen
    finally:
        if server.running:
            server.stop()


def webhooks(http: httpx.Client) -> list[tuple[str | None, ...]]:
    answer = http.get(f"{GROUP}/webhooks")
    assert answer.status_code == 200, answer.text
    return [(el.get("id"), el.get("url"), el.get("events")) for el in etree.fromstring(answer.content)]


def answers(server: Server, seen: dict[str, Any]) -> dict[str, Any]:
    """What the deployment answers: the manager's thread list (with each thread's log) and the
    administrator's server-level list."""
    with server.client("manager") as http, server.client("admin") as admin:
        threads = elements(http.get(f"{GROUP}/threads?status=all"))
        logs = {tid: http.get(f"{GROUP}/threads/{tid}/logs").text for tid in threads}
        return {
            "threads": {tid: t for tid, t in threads.items() if tid != seen["waiting"]},
            "logs": {tid: text for tid, text in logs.items() if tid != seen["waiting"]},
            "server": {tid: t for tid, t in elements(admin.get("/ps/service/threads?status=all")).items()
                       if tid != seen["waiting"]},
        }


def test_a_sqlite_deployment_moves_to_postgresql_and_back(
    source: dict[str, Any], postgres: PostgresCluster, tmp_path: Path
) -> None:
    old: Server = source["server"]
    dump = tmp_path / "sqlite.dump"
    export(source["config"], dump)
    old.start()
    try:
        before = answers(old, source)
    finally:
        old.stop()

    url = postgres.new_database_url()
    new = Server(tmp_path / "pg", db=url, files="postgres")
    done = import_(new.config, dump)
    assert done.returncode == 0, done.stderr
    assert b"7 users" in done.stderr and b"1 oauth_clients" in done.stderr
    assert b"1 webhooks" in done.stderr and b"2 files" in done.stderr

    # The same dump comes out of PostgreSQL, and goes into SQLite again.
    again = tmp_path / "postgres.dump"
    export(new.config, again)
    assert contents(again) == contents(dump)
    back = Server(tmp_path / "back")
    assert import_(back.config, again).returncode == 0
    third = tmp_path / "back.dump"
    export(back.config, third)
    assert contents(third) == contents(dump)

    new.start()
    try:
        assert answers(new, source) == before
        assert before["threads"][source["running"]]["status"] == "failed"
        with new.client("manager") as http:
            result = http.get(f"{GROUP}/threads/{source['done']}/result", follow_redirects=True)
            assert result.content == source["result"]
            assert webhooks(http) == source["webhooks"]
            # The thread that waited runs here, on the upload carried over.
            final = wait_final(http, source["waiting"])
            assert 'status="completed"' in final.text, final.text
            report = http.get(f"{GROUP}/threads/{source['waiting']}/result",
                              follow_redirects=True)
            assert b'valid="1"' in report.content, report.text
        # API tokens and passwords were carried as their hashes.
        bearer = {"Authorization": f"Bearer {source['tokens']['contributor']}"}
        assert httpx.get(f"{new.url}{GROUP}/threads", headers=bearer).status_code == 200
        assert httpx.get(f"{new.url}{GROUP}/threads",
                         auth=("reviewer", password("reviewer") + "x")).status_code == 401
        with new.client("admin") as admin:
            assert 'job="transform"' in admin.get("/ps/service/paused-jobs").text
        # New ids follow the carried ones.
        with new.client("manager") as http:
            fresh = start(http, seconds=0.01, steps=1)
            assert fresh not in before["threads"]
    finally:
        new.stop()


def test_an_import_refuses_a_store_that_holds_anything(
    source: dict[str, Any], tmp_path: Path
) -> None:
    dump = tmp_path / "dump"
    export(source["config"], dump)
    other = Server(tmp_path / "other")
    seed(other.config)
    done = import_(other.config, dump)
    assert done.returncode != 0
    assert b"not empty" in done.stderr
    other.start()  # not even marked as being imported into: it still serves
    try:
        with other.client("manager") as http:
            assert elements(http.get(f"{GROUP}/threads?status=all")) == {}
    finally:
        other.stop()


def test_a_cut_dump_leaves_a_store_no_node_starts_on_until_imported_whole(
    source: dict[str, Any], tmp_path: Path
) -> None:
    dump, cut = tmp_path / "dump", tmp_path / "cut"
    export(source["config"], dump)
    lines = dump.read_bytes().splitlines(keepends=True)
    cut.write_bytes(b"".join(lines[:-3]))  # rows written, but not every file nor the end
    target = Server(tmp_path / "target")
    done = import_(target.config, cut)
    assert done.returncode != 0 and b"not whole" in done.stderr
    with pytest.raises(RuntimeError, match="import into this store has not finished"):
        target.start(timeout=10)
    refused = cli("export", "--config", str(target.config), stdout=tmp_path / "half")
    assert refused.returncode != 0 and b"has not finished" in refused.stderr
    done = import_(target.config, dump)
    assert done.returncode == 0, done.stderr
    assert b"starting over" in done.stderr
    target.start()
    try:
        with target.client("manager") as http:
            result = http.get(f"{GROUP}/threads/{source['done']}/result", follow_redirects=True)
            assert result.content == source["result"]
    finally:
        target.stop()


def test_a_damaged_dump_is_refused(source: dict[str, Any], tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    export(source["config"], dump)
    lines = dump.read_bytes().splitlines(keepends=True)
    header = json.loads(lines[0])
    for bad, said in (
        ([json.dumps({**header, "schema": 999}).encode() + b"\n", *lines[1:]], b"schema 999"),
        ([lines[0], b'{"file": "../../etc/passwd", "size": 1}\n', *lines[1:]], b"not a file"),
        ([lines[0], b'{"table": "users", "rows": [{"id": 1}]}\n', *lines[1:]], b"columns"),
        ([_other_bytes(line) for line in lines], b"not whole"),
    ):
        damaged = tmp_path / "damaged"
        damaged.write_bytes(b"".join(bad))
        done = import_(Server(tmp_path / f"t{len(said)}{id(bad)}").config, damaged)
        assert done.returncode != 0, bad[:2]
        assert said in done.stderr


def _other_bytes(line: bytes) -> bytes:
    """A file's chunk line with other bytes of the same length."""
    if not line.startswith(b'{"data"'):
        return line
    size = len(base64.b64decode(json.loads(line)["data"]))
    return json.dumps({"data": base64.b64encode(b"x" * size).decode()}).encode() + b"\n"


def test_an_export_of_a_store_that_is_not_there_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "threadsvc.db"
    refused = cli("export", "--db", f"sqlite:///{missing}", stdout=tmp_path / "dump")
    assert refused.returncode == 1
    assert f"no store at {missing}".encode() in refused.stderr
    assert b"nothing was created" in refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump"]
