"""A real Prometheus (Debian's `prometheus`; skipped where it is not installed) scrapes a real
server with `metrics-token`, and answers every query of deploy/grafana-dashboard.json: each
parses, and those over threads that ran return series. It also shows what the dashboard
assumes: the thread counters' `job` label arrives as `exported_job` (the scrape's own `job`
wins), and the store's figures come once per node."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Server, free_port, running_server, start, wait_final

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus is not installed"),
]

TOKEN = "prometheus-scrapes-" + "y" * 32
DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json"
SCRAPE_JOB = "threadsvc"
CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {job}
    authorization:
      type: Bearer
      credentials: {token}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("scraped")
    for found, _ in running_server(directory, **{"metrics-token": TOKEN, "node": "p1"}):
        yield found


@pytest.fixture(scope="module")
def prometheus(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("prometheus")
    config = directory / "prometheus.yml"
    config.write_text(CONFIG.format(job=SCRAPE_JOB, token=TOKEN, port=server.port))
    port = free_port()
    with open(directory / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (directory / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prometheus did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def eventually(prometheus: str, expr: str) -> list[dict[str, Any]]:
    """The query's series once it has some (Prometheus scrapes every second)."""
    deadline = time.monotonic() + 30
    while not (found := query(prometheus, expr)):
        assert time.monotonic() < deadline, f"no series for {expr}"
        time.sleep(0.5)
    return found


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$job", SCRAPE_JOB).replace("$__rate_interval", "1m")
            found.append((panel["title"], expr))
    return found


def test_prometheus_scrapes_with_the_token_and_answers_the_dashboard(
    server: Server, prometheus: str
) -> None:
    with server.client("contributor") as http:
        for fields in ({"seconds": 0}, {"seconds": 0, "fail": 1}):
            wait_final(http, start(http, steps=1, **fields))
    up = eventually(prometheus, f'up{{job="{SCRAPE_JOB}"}} == 1')
    assert len(up) == 1  # scraped with the bearer token, its text accepted
    finished = eventually(
        prometheus, 'sum by (exported_job, status) (threadsvc_threads_finished_total'
                    '{status=~"completed|failed"})')
    assert {(r["metric"]["exported_job"], r["metric"]["status"]) for r in finished} == {
        ("sleep", "completed"), ("sleep", "failed")}
    time.sleep(3)  # rates need two scrapes after the change
    empty = [title for title, expr in dashboard_queries() if not query(prometheus, expr)]
    assert not empty, empty  # every panel has series, zero ones included
    statuses = query(prometheus, f'max by (status) (threadsvc_threads{{job="{SCRAPE_JOB}"}})')
    assert len(statuses) == 7
