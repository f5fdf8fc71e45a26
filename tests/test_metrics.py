"""/metrics (docs/api.md#metrics): a real server runs threads that complete, fail and are
cancelled, refuses a password and a client secret, delivers webhooks (one after a retry), and
is scraped with `metrics-token`; the text is parsed with prometheus_client's own parser and
each figure checked against what was done. Then who may scrape, and the Grafana dashboard's
queries against what the server exports."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NewStore
from tests.support import (
    GROUP,
    InProcess,
    Receiver,
    Server,
    running_server,
    start,
    wait_final,
    wait_running,
)
from threadsvc import __version__

TOKEN = "scrape-" + "x" * 40
NODE = "m1"
SLOTS = 8
DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana-dashboard.json"
STATUSES = ("initialised", "inprogress", "error", "warning", "completed", "failed", "cancelled")
ID = re.compile(r"[0-9a-f]{32}")

Sample = tuple[str, frozenset[tuple[str, str]]]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("metrics")
    yield from running_server(
        directory, db=new_store(directory), node=NODE, **{
            "max-running": SLOTS, "metrics-token": TOKEN, "webhook-allow-private": True,
        },
    )


@pytest.fixture(scope="module")
def server(world: tuple[Server, dict[str, str]]) -> Server:
    return world[0]


def scrape(server: Server, **headers: str) -> str:
    answer = httpx.get(f"{server.url}/metrics", timeout=30,
                       headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return answer.text


def parsed(text: str) -> tuple[dict[str, str], dict[Sample, float]]:
    """The families (name -> type) and every sample's value, by name and labels."""
    families: dict[str, str] = {}
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return families, samples


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: dict[Sample, float], name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample, labels in samples if sample == name]


def figures(server: Server) -> dict[Sample, float]:
    return parsed(scrape(server))[1]


def wait_figure(server: Server, name: str, labels: dict[str, str], at_least: float) -> None:
    deadline = time.monotonic() + 20
    while value(figures(server), name, **labels) < at_least:
        assert time.monotonic() < deadline, f"{name}{labels} stayed below {at_least}"
        time.sleep(0.1)


def test_every_figure_counts_what_was_done(server: Server) -> None:
    before = figures(server)
    started = "threadsvc_threads_started_total"
    with Receiver() as receiver, server.client("admin") as admin, \
            server.client("manager") as manager:
        hook = f"/hook-{secrets.token_hex(4)}"
        receiver.fail[hook] = 1  # the first delivery is retried once
        answer = manager.post(f"{GROUP}/webhooks",
                              data={"url": receiver.url(hook), "secret": "s" * 24})
        assert answer.status_code == 201, answer.text
        done = start(manager, seconds=0, steps=1)
        failed = start(manager, seconds=0, steps=1, fail=1)
        cancelled = start(manager, seconds=60, steps=1)
        wait_running(manager, cancelled)
        during = figures(server)
        assert value(during, "threadsvc_running_threads", node=NODE) >= 1
        assert value(during, "threadsvc_threads", status="inprogress") >= 1
        assert manager.post(f"{GROUP}/threads/{cancelled}/cancel").status_code == 200
        for tid, expected in ((done, "completed"), (failed, "failed"), (cancelled, "cancelled")):
            assert f'status="{expected}"' in wait_final(manager, tid).text
        # A password and a client secret refused; a wrong metrics token is no sign-in.
        with server.client("manager", auth=("manager", "wrong")) as wrong:
            assert wrong.get(f"{GROUP}/threads").status_code == 401
        token = admin.post("/ps/oauth/token", data={
            "grant_type": "client_credentials", "client_id": "tsc_none", "client_secret": "no"})
        assert token.status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers={
            "Authorization": "Bearer wrong"}).status_code == 401
        # Paths no route matches, an alias, and a method nobody uses.
        assert admin.get(f"/no/such/{secrets.token_hex(8)}").status_code == 404
        assert admin.get(f"/ps/api/groups/dev/threads/{done}/progress").status_code == 200
        assert admin.request("PROPFIND", "/health").status_code == 405
        receiver.wait(hook, 4)  # 3 final statuses, one of them twice
        wait_figure(server, "threadsvc_webhook_deliveries_total", {"outcome": "delivered"},
                    value(before, "threadsvc_webhook_deliveries_total", outcome="delivered") + 3)
    families, after = parsed(scrape(server))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The store's threads, every status present (zero included), and this node's.
    assert {s["status"] for s in series(after, "threadsvc_threads")} == set(STATUSES)
    for status in ("completed", "failed", "cancelled"):
        assert delta("threadsvc_threads", status=status) == 1
    assert value(after, "threadsvc_threads", status="inprogress") == 0
    assert series(after, "threadsvc_running_threads") == [{"node": NODE}]
    assert value(after, "threadsvc_running_threads", node=NODE) == 0
    assert value(after, "threadsvc_thread_slots", node=NODE) == SLOTS
    # Threads started and finished by job and status, queue and run time histograms.
    assert delta(started, job="sleep") == 3
    for status in ("completed", "failed", "cancelled"):
        assert delta("threadsvc_threads_finished_total", job="sleep", status=status) == 1
    assert delta("threadsvc_thread_queue_seconds_count") == 3
    assert value(after, "threadsvc_thread_queue_seconds_bucket", le="+Inf") == value(
        after, "threadsvc_thread_queue_seconds_count")
    assert delta("threadsvc_thread_run_seconds_count", job="sleep") == 3
    assert delta("threadsvc_thread_run_seconds_sum", job="sleep") >= 0
    # Webhooks: three delivered, one attempt to retry; every outcome has its series.
    assert delta("threadsvc_webhook_deliveries_total", outcome="delivered") == 3
    assert delta("threadsvc_webhook_deliveries_total", outcome="retrying") == 1
    assert {s["outcome"] for s in series(after, "threadsvc_webhook_deliveries_total")} == {
        "delivered", "retrying", "failed", "given_up"}
    assert delta("threadsvc_signin_failures_total") == 2
    assert value(after, "threadsvc_store_errors_total") == 0
    assert series(after, "threadsvc_build_info") == [{"version": __version__}]
    assert value(after, "threadsvc_build_info", version=__version__) == 1
    assert value(after, "threadsvc_clock_offset_seconds") == 0
    # HTTP: route templates, never a raw path; one label for all that matches nothing.
    http = "threadsvc_http_request_duration_seconds_count"
    routes = series(after, http)
    assert all(not ID.search(r["route"]) and "/dev/" not in r["route"] for r in routes), routes
    assert delta(http, method="POST", route="/ps/service/groups/{group}/threads",
                 status="202") == 3
    progress = "/ps/service/groups/{group}/threads/{id}/progress"
    assert value(after, http, method="GET", route=progress, status="200") >= 4
    assert delta(http, method="GET", route="unmatched", status="404") >= 1
    assert delta(http, method="other", route="/health", status="405") == 1
    assert delta(http, method="GET", route="/metrics", status="401") == 1
    # Process figures, from the collectors of prometheus_client on the server's own registry.
    for family in ("process_resident_memory_bytes", "process_cpu_seconds", "python_info"):
        assert family in families
    assert families["threadsvc_http_request_duration_seconds"] == "histogram"
    assert families["threadsvc_threads"] == "gauge"
    assert families["threadsvc_threads_started"] == "counter"


def test_console_pages_are_counted_by_their_template(server: Server) -> None:
    unknown = secrets.token_hex(8)
    with server.client("manager") as manager:
        assert manager.get("/ps/ui/groups/dev/threads").status_code < 400
        assert manager.get(f"/ps/ui/{unknown}").status_code == 404
    found = series(figures(server), "threadsvc_http_request_duration_seconds_count")
    routes = {(r["route"], r["status"]) for r in found}
    assert ("/ps/ui/groups/{group}/threads", "200") in routes or (
        "/ps/ui/groups/{group}/threads", "303") in routes, routes
    assert ("unmatched", "404") in routes
    assert not [r for r, _ in routes if unknown in r or "/dev/" in r]


def test_openmetrics_when_asked(server: Server) -> None:
    answer = httpx.get(f"{server.url}/metrics", headers={
        "Authorization": f"Bearer {TOKEN}", "Accept": "application/openmetrics-text"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")


# -- who may scrape ---------------------------------------------------------------------------
def error_id(answer: httpx.Response) -> str | None:
    return etree.fromstring(answer.content).get("id")


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Bearer {TOKEN}x",
                                           f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}"])
def test_anonymous_and_wrong_tokens_are_401(server: Server, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = httpx.get(f"{server.url}/metrics", headers=headers)
    assert answer.status_code == 401
    assert error_id(answer) == "0100"
    assert "www-authenticate" in answer.headers


@pytest.mark.parametrize("user", ["manager", "outsider"])
def test_users_who_are_not_administrators_are_403(server: Server, user: str) -> None:
    with server.client(user) as http:
        answer = http.get("/metrics")
    assert answer.status_code == 403
    assert error_id(answer) == "0101"


def test_administrators_scrape_with_any_credentials(
    world: tuple[Server, dict[str, str]],
) -> None:
    server, tokens = world
    with server.client("admin") as http:
        assert http.get("/metrics").status_code == 200
    answer = httpx.get(f"{server.url}/metrics",
                       headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert answer.status_code == 200
    assert "threadsvc_threads{" in answer.text


@pytest.fixture(scope="module")
def tokenless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server without `metrics-token`: only administrators scrape."""
    yield from running_server(tmp_path_factory.mktemp("tokenless"), kind=InProcess)


def test_without_a_token_only_administrators_scrape(
    tokenless: tuple[Server, dict[str, str]],
) -> None:
    server, tokens = tokenless
    with server.client() as anyone:
        assert anyone.get("/metrics").status_code == 401
        for token, status in ((TOKEN, 401), (tokens["manager"], 403)):
            answer = anyone.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == status, token
    with server.client("admin") as admin:
        assert admin.get("/metrics").status_code == 200


def test_a_scanner_adds_no_series(tokenless: tuple[Server, dict[str, str]]) -> None:
    """Random paths, ids, groups and methods: the series stay those of the templates."""
    server, _ = tokenless
    http_count = "threadsvc_http_request_duration_seconds_count"

    def labels() -> set[tuple[str, str, str]]:
        with server.client("admin") as admin:
            found = series(parsed(admin.get("/metrics").text)[1], http_count)
        return {(r["method"], r["route"], r["status"]) for r in found}

    with server.client("outsider") as http:
        for method in ("GET", "PROPFIND", "BREW"):
            http.request(method, f"/{secrets.token_hex(6)}/{secrets.token_hex(6)}")
            http.request(method, f"{GROUP}/threads/{secrets.token_hex(16)}")
            http.request(method, f"/ps/service/groups/{secrets.token_hex(4)}/threads/"
                                 f"{secrets.token_hex(16)}")
    seen = labels()
    with server.client("outsider") as http:
        for _ in range(30):
            method = secrets.choice(["GET", "PROPFIND", "BREW", secrets.token_hex(3).upper()])
            http.request(method, f"/{secrets.token_hex(6)}/{secrets.token_hex(6)}")
            http.request(method, f"/ps/service/groups/{secrets.token_hex(4)}/threads/"
                                 f"{secrets.token_hex(16)}")
    assert labels() - seen <= {(m, "/metrics", "200") for m in ("GET",)}
    assert {method for method, _, _ in seen} <= {"GET", "other"}


# -- the dashboard ----------------------------------------------------------------------------
def exported(families: dict[str, str]) -> set[str]:
    """Every sample name the families give (a histogram's _bucket, _count and _sum...)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",), "info": ("_info",)}
    return {name + suffix for name, kind in families.items()
            for suffix in suffixes.get(kind, ("",))}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_the_dashboard_asks_only_for_what_the_server_exports(
    tokenless: tuple[Server, dict[str, str]],
) -> None:
    server, _ = tokenless
    with server.client("admin") as admin:
        families, _ = parsed(admin.get("/metrics").text)
    names = exported(families)
    dashboard = json.loads(DASHBOARD.read_text())
    asked: set[str] = set()
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found = set(re.findall(r"\b(?:threadsvc|process|python)_\w+", target["expr"]))
            assert found, (panel["title"], target["expr"])
            assert found <= names, (panel["title"], found - names)
            asked |= found
    # Every figure of the contract has a panel.
    for name in ("threadsvc_threads", "threadsvc_running_threads",
                 "threadsvc_threads_started_total", "threadsvc_threads_finished_total",
                 "threadsvc_thread_queue_seconds_bucket", "threadsvc_thread_run_seconds_bucket",
                 "threadsvc_http_request_duration_seconds_bucket",
                 "threadsvc_webhook_deliveries_total", "threadsvc_signin_failures_total"):
        assert name in asked, name
    # Store figures are the same on every node: never summed across them.
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            summed = r"sum\s*(by\s*\([^)]*\))?\s*\(\s*threadsvc_threads\b"
            assert not re.search(summed, target["expr"]), target
