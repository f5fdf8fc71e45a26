"""The dashboard and its controls in Chromium: the figures and charts an administrator sees
(and a manager, for the groups they manage), the controls only an administrator gets (pause and
resume a job, a node's max-running, drain with a confirmation), bad input answered on the page,
and the phone width without horizontal scrolling."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.conftest import UI, Browsing, start_sleep, thread_status
from tests.support import Server, running_server, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.browser]
NODE = "dash-node"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("console-dashboard")
    yield from running_server(directory, node=NODE, **{"max-running": 4})


@pytest.fixture(scope="module", autouse=True)
def history(world: tuple[Server, dict[str, str]]) -> None:
    """A few finished threads in both groups, so that the charts have bars."""
    server, _ = world
    ids = [start_sleep(server, "contributor", seconds=0.1) for _ in range(3)]
    ids.append(start_sleep(server, "othermgr", "other", seconds=0.1))
    with server.client("admin") as http:
        for tid in ids:
            wait_final(http, tid, "/ps/service")


def csrf_of(page: Any) -> str:
    return str(page.locator("input[name=csrf]").first.get_attribute("value"))


def no_horizontal_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_an_administrator_sees_everything_and_every_control(browsing: Browsing) -> None:
    page = browsing.signed_in("admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard$"))
    tiles = dict(zip(page.locator(".dash-tiles span").all_inner_texts(),
                     page.locator(".dash-tiles strong").all_inner_texts(), strict=True))
    assert int(tiles["Created"]) >= 4 and int(tiles["Finished"]) >= 4
    assert tiles["Failure rate"] == "0.0 %"
    assert page.get_by_role("img", name=re.compile("^Threads created per minute")).count() == 1
    assert page.locator("svg#ended rect.bar.s-completed").count() >= 1
    assert "sleep" in page.locator("table.dash-runtimes").inner_text()
    node = page.locator("table.dash-nodes tbody tr")
    assert node.count() == 1 and NODE in node.inner_text()
    assert node.locator("td[data-label='State']").inner_text() == "claiming"
    assert page.get_by_label("Pause a job").count() == 1
    browsing.shot(page, "admin")

    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()
    assert no_horizontal_scroll(page)
    browsing.shot(page, "phone")


def test_pause_and_resume_a_job_with_a_confirmation(browsing: Browsing, server: Server) -> None:
    page = browsing.signed_in("admin")
    page.goto(f"{UI}/dashboard")
    page.get_by_label("Pause a job").select_option("sleep")
    page.get_by_role("button", name="Pause…").click()
    assert page.get_by_role("heading", name="Pause job sleep?").count() == 1
    browsing.shot(page, "confirm")
    page.get_by_role("button", name="Pause the job").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard\?done=paused$"))
    assert "is paused" in page.get_by_role("status").inner_text()
    waiting = start_sleep(server, "contributor", seconds=0.1)
    time.sleep(2.5)  # claims came and passed it over
    assert thread_status(server, waiting) == "initialised"
    page.reload()
    assert "of paused jobs" in page.locator(".dash-tiles").inner_text()
    paused = page.locator(".dash-paused li")
    assert paused.count() == 1 and "by admin" in paused.inner_text()
    browsing.shot(page, "paused")
    paused.get_by_role("button", name="Resume").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard\?done=resumed$"))
    with server.client("admin") as http:
        wait_final(http, waiting, "/ps/service")
    assert page.locator(".dash-paused li").count() == 0


def test_max_running_and_drain_on_the_page(browsing: Browsing, server: Server) -> None:
    page = browsing.signed_in("admin")
    page.goto(f"{UI}/dashboard")
    field = page.get_by_label(f"Max-running of {NODE}")
    field.fill("0")
    page.get_by_role("button", name="Set").click()
    alert = page.get_by_role("alert")
    assert "max-running" in alert.inner_text() and field.input_value() == "0"  # kept
    assert field.get_attribute("aria-invalid") == "true"
    browsing.shot(page, "bad-value")
    field.fill("3")
    page.get_by_role("button", name="Set").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard\?done=max-running$"))
    deadline = time.monotonic() + 10
    while "/ 3" not in page.locator("td[data-label='Load']").inner_text():
        assert time.monotonic() < deadline, "the node never took max-running 3"
        time.sleep(0.5)
        page.reload()

    page.get_by_role("button", name="Drain…").click()
    assert page.get_by_role("heading", name=f"Drain node {NODE}?").count() == 1
    page.get_by_role("button", name="Drain the node").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard\?done=draining$"))
    deadline = time.monotonic() + 15
    while page.locator("td[data-label='State']").inner_text() != "drained, empty":
        assert time.monotonic() < deadline, "the node never said it was empty"
        time.sleep(0.5)
        page.reload()
    browsing.shot(page, "drained")
    page.get_by_role("button", name="Claim again").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard\?done=undrained$"))
    assert page.get_by_role("button", name="Drain…").count() == 1
    field = page.get_by_label(f"Max-running of {NODE}")
    field.fill("default")
    page.get_by_role("button", name="Set").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard\?done=max-running$"))
    with server.client("admin") as http:
        audit = http.get("/ps/service/audit").text
    for action in ("node.max-running", "node.drain", "node.undrain"):
        assert f'action="{action}"' in audit


def test_a_manager_sees_their_groups_and_no_control(browsing: Browsing, server: Server) -> None:
    page = browsing.signed_in("othermgr")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    assert "groups you manage" in page.locator(".lead").inner_text()
    tiles = dict(zip(page.locator(".dash-tiles span").all_inner_texts(),
                     page.locator(".dash-tiles strong").all_inner_texts(), strict=True))
    assert tiles["Created"] == "1"  # the one thread of `other`, none of `dev`
    assert page.locator("form[method=post][action^='/ps/ui/dashboard/']").count() == 0
    assert page.get_by_role("heading", name="Nodes").count() == 0
    browsing.shot(page, "manager")
    token = csrf_of(page)
    for action, field in (("pause", {"job": "sleep", "confirm": "yes"}),
                          ("drain", {"node": NODE, "confirm": "yes"}),
                          ("max-running", {"node": NODE, "value": "2"})):
        answer = page.request.post(f"{UI}/dashboard/{action}", form={"csrf": token, **field})
        assert answer.status == 403, action
    with server.client("admin") as http:
        assert "<paused-job " not in http.get("/ps/service/paused-jobs").text
        assert 'draining="false"' in http.get("/ps/service/nodes").text


def test_a_contributor_has_no_dashboard_and_a_bad_period_is_answered_on_the_page(
    browsing: Browsing,
) -> None:
    page = browsing.signed_in("contributor")
    assert page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="Dashboard").count() == 0
    response = page.goto(f"{UI}/dashboard")
    assert response is not None and response.status == 403
    browsing.shot(page, "contributor")
    admin = browsing.signed_in("admin")
    response = admin.goto(f"{UI}/dashboard?window=week")
    assert response is not None and response.status == 400
    assert admin.get_by_role("alert").inner_text() == "Choose the last hour or the last day."
    assert admin.get_by_label("Period").input_value() == "hour"
    browsing.shot(admin, "bad-period")


def test_the_controls_work_without_javascript(browsing: Browsing, server: Server) -> None:
    page = browsing.signed_in("admin", java_script_enabled=False)
    page.goto(f"{UI}/dashboard")
    page.get_by_label("Pause a job").select_option("validate")
    page.get_by_role("button", name="Pause…").click()
    page.get_by_role("button", name="Pause the job").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard\?done=paused$"))
    with server.client("admin") as http:
        assert 'job="validate"' in http.get("/ps/service/paused-jobs").text
    page.locator(".dash-paused li").get_by_role("button", name="Resume").click()
    page.wait_for_url(re.compile(r".*/ps/ui/dashboard\?done=resumed$"))
    with server.client("admin") as http:
        assert "<paused-job " not in http.get("/ps/service/paused-jobs").text
    browsing.shot(page, "no-script")


def test_a_tampered_form_is_answered_on_the_dashboard(browsing: Browsing) -> None:
    page = browsing.signed_in("admin")
    page.goto(f"{UI}/dashboard")
    token = csrf_of(page)
    for action, field in (("drain", {"node": "nowhere"}),
                          ("drain", {"node": "nowhere", "confirm": "yes"}),
                          ("undrain", {"node": "nowhere"}), ("resume", {"job": "two words"}),
                          ("pause", {"job": "x" * 250, "confirm": "yes"}),
                          ("max-running", {"node": "nowhere", "value": "3"})):
        answer = page.request.post(f"{UI}/dashboard/{action}", form={"csrf": token, **field})
        assert answer.status == 400, (action, field)
        body = answer.text()
        assert "<h1>Dashboard</h1>" in body and 'role="alert"' in body, (action, field)
    refused = page.request.post(f"{UI}/dashboard/pause", form={"job": "sleep", "confirm": "yes"})
    assert refused.status == 403  # no CSRF token: nothing done
