"""The administrators' controls on real servers: the HTTP services (an administrator may, a
manager may not; bad values answered 400; audited), the CLI commands, and two nodes sharing
PostgreSQL, where a pause holds on both and a drained node hands every new thread to the other."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.pg import PostgresCluster
from tests.support import (
    Server,
    running_nodes,
    running_server,
    start,
    wait_final,
    wait_for,
    wait_running,
)
from threadsvc.cli import main
from threadsvc.cli.exits import TIMEOUT
from threadsvc.xml.schemas import validate

pytestmark = pytest.mark.slow
S = "/ps/service"


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args[:2], "--config", str(config), *args[2:]])


def progress(server: Server, tid: str) -> str:
    with server.client("admin") as http:
        return http.get(f"{S}/groups/dev/threads/{tid}/progress").text


@pytest.fixture
def solo(tmp_path: Path) -> Iterator[Server]:
    for server, _tokens in running_server(tmp_path, node="solo", **{"lease-timeout": 6}):
        yield server


def test_the_services_for_an_administrator_and_no_one_else(solo: Server) -> None:
    with solo.client("admin") as admin, solo.client("manager") as manager:
        nodes = wait_for(admin, f"{S}/nodes", lambda r: 'name="solo"' in r.text)
        validate(nodes.content)
        assert 'draining="false"' in nodes.text and 'stale="false"' in nodes.text
        as_json = admin.get(f"{S}/nodes", headers={"Accept": "application/json"}).json()
        assert as_json["nodes"][0]["name"] == "solo" and as_json["nodes"][0]["stale"] is False
        for method, path in (("GET", "/nodes"), ("POST", "/nodes/solo/drain"),
                             ("POST", "/nodes/solo/undrain"), ("POST", "/nodes/solo/max-running"),
                             ("GET", "/paused-jobs"), ("POST", "/jobs/sleep/pause"),
                             ("POST", "/jobs/sleep/resume")):
            answer = manager.request(method, S + path, params={"value": "2"})
            assert answer.status_code == 403 and "0101" in answer.text, (path, answer.text)
        assert admin.post(f"{S}/jobs/sleep/pause").status_code == 200
        waiting = start(admin, seconds=0.2)
        time.sleep(2.5)  # two polls of the claim loop at least
        assert 'status="initialised"' in progress(solo, waiting)
        paused = admin.get(f"{S}/paused-jobs")
        validate(paused.content)
        assert re.search(r'<paused-job job="sleep" since="[^"]+" by="admin"/>', paused.text)
        assert admin.post(f"{S}/jobs/sleep/resume").text.count("<paused-job ") == 0
        wait_final(admin, waiting)
        answer = admin.post(f"{S}/nodes/solo/max-running", data={"value": "3"})
        validate(answer.content)
        assert 'max-running-set="3"' in answer.text
        wait_for(admin, f"{S}/nodes", lambda r: 'max-running="3"' in r.text)
        for path, data in (("/nodes/solo/max-running", {"value": "0"}),
                           ("/nodes/solo/max-running", {"value": "many"}),
                           ("/nodes/nowhere/drain", {}), ("/jobs/a%20b/pause", {})):
            answer = admin.post(S + path, data=data)
            assert answer.status_code == 400 and "0201" in answer.text, (path, answer.text)
        audit = admin.get(f"{S}/audit").text
    for action in ("job.pause", "job.resume", "node.max-running"):
        assert f'action="{action}"' in audit


def test_the_commands_on_a_running_servers_store(solo: Server) -> None:
    paused = cli(solo.config, "job", "pause", "sleep")
    assert paused.exit_code == 0 and "job sleep is paused" in paused.stderr
    assert cli(solo.config, "job", "paused").stdout.startswith("sleep\t")
    with solo.client("admin") as admin:
        waiting = start(admin, seconds=0.2)
        time.sleep(2.5)
        assert 'status="initialised"' in progress(solo, waiting)
        assert cli(solo.config, "job", "resume", "sleep").exit_code == 0
        wait_final(admin, waiting)
        running = start(admin, seconds=30, steps=30)
        wait_running(admin, running)
        drained = cli(solo.config, "node", "drain", "solo", "--wait", "--timeout", "3")
        assert drained.exit_code == TIMEOUT and "still runs 1 threads" in drained.stderr
        listed = cli(solo.config, "node", "list")
        assert re.search(r"^solo\s+1\s+\d+\s+[\d.]+s draining$", listed.stdout, re.MULTILINE)
        admin.post(f"{S}/groups/dev/threads/{running}/cancel")
        wait_final(admin, running)
        drained = cli(solo.config, "node", "drain", "solo", "--wait", "--timeout", "20")
        assert drained.exit_code == 0 and "node solo is empty" in drained.stderr
        assert cli(solo.config, "node", "undrain", "solo").exit_code == 0
        bad = cli(solo.config, "node", "max-running", "solo", "0")
        assert bad.exit_code == 1 and "max-running" in bad.stderr
    entries = cli(solo.config, "audit", "--json").stdout
    for action in ("job.pause", "job.resume", "node.drain", "node.undrain"):
        assert f'"action": "{action}", "actor": "cli:' in entries


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_two_nodes_obey_a_pause_and_a_drain(tmp_path: Path, postgres: PostgresCluster) -> None:
    settings = {"lease-timeout": 6, "max-running": 4}
    with (running_nodes(tmp_path, postgres.new_database_url(), 2, **settings) as (n1, n2),
          n1.client("admin") as one, n2.client("admin") as two):
        wait_for(one, f"{S}/nodes", lambda r: r.text.count("<node ") == 2)
        assert one.post(f"{S}/jobs/sleep/pause").status_code == 200
        waiting = [start(c, seconds=0.1) for c in (one, two, one, two)]
        time.sleep(3)
        assert all('status="initialised"' in progress(n2, t) for t in waiting)
        assert two.post(f"{S}/jobs/sleep/resume").status_code == 200  # the other node
        for tid in waiting:
            wait_final(one, tid)
        # Drain the node that runs a thread: it finishes there, the new ones go to the other.
        long = start(one, seconds=4, steps=4)
        wait_running(one, long)
        busy = ran_on(one, long)
        idle = "n2" if busy == "n1" else "n1"
        assert one.post(f"{S}/nodes/{busy}/drain").status_code == 200
        wait_for(two, f"{S}/nodes", lambda r: re.search(
            rf'<node name="{busy}" running="1"[^>]*draining="true" empty="false"', r.text))
        later = [start(one, seconds=0.1) for _ in range(6)]
        for tid in later:
            wait_final(one, tid)
            assert ran_on(one, tid) == idle
        assert "completed" in wait_final(one, long).text and ran_on(one, long) == busy
        wait_for(two, f"{S}/nodes", lambda r: re.search(
            rf'<node name="{busy}" running="0"[^>]*draining="true" empty="true"', r.text), 20)


def ran_on(http: httpx.Client, tid: str) -> str:
    """The node that claimed the thread, as its log says."""
    found = re.search(r"Status: inprogress \(node (n\d)\)",
                      http.get(f"{S}/groups/dev/threads/{tid}/logs").text)
    assert found, tid
    return found.group(1)
