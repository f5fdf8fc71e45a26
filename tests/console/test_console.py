"""The console in headless Chromium: sign in, start a job from its form and watch it live,
cancel, roles, forged forms, sign out, lockout, no JavaScript, a phone."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.console.conftest import UI, Browsing, sign_in, start_sleep, thread_status
from tests.support import Server

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PROGRESS = "#progress-wrap progress"


def badge(page: Any) -> Any:
    return page.locator(".status-card [data-field='status']")


def test_start_a_sleep_from_the_form_and_watch_it_live(browsing: Browsing) -> None:
    page = browsing.signed_in("contributor")
    page.get_by_role("link", name="dev").click()
    page.get_by_role("link", name="Start a job").click()
    page.get_by_role("link", name=re.compile(r"^sleep")).click()
    page.get_by_label("seconds").fill("4")
    page.get_by_label("steps").fill("8")
    page.get_by_label("warn").fill("2")
    page.get_by_role("button", name="Start sleep").click()
    page.wait_for_url(re.compile(r".*/ps/ui/groups/dev/threads/[0-9a-f]{32}\?notice=started$"))
    page.evaluate("window.__notReloaded = true")
    assert page.get_by_role("status").first.inner_text() == "The thread has started."
    assert badge(page).inner_text() in ("initialised", "inprogress")
    first_lines = page.locator("#log li").count()
    page.wait_for_selector(".live.on")  # the event stream is open

    # live: the bar moves and the log fills while the page stays as it is
    page.wait_for_function(
        f"() => {{ const p = document.querySelector('{PROGRESS}');"
        " return p && p.max === 8 && p.value > 0 && p.value < 8; }"
    )
    browsing.shot(page, "running")
    page.wait_for_function(
        f"() => document.querySelector('{PROGRESS}').value === 8", timeout=20_000
    )
    page.wait_for_function(
        "() => document.querySelector(\".status-card [data-field='status']\")"
        ".textContent === 'completed'"
    )
    assert page.locator("[data-field='percent']").inner_text() == "100 %"
    assert page.locator("[data-field='counts']").inner_text() == "8 of 8"
    log = page.locator("#log li")
    assert log.count() > first_lines
    texts = log.all_inner_texts()
    assert any("Warning at step 2" in t for t in texts)
    assert any("Status: completed" in t for t in texts)
    seqs = [int(s) for s in log.evaluate_all("els => els.map(e => e.dataset.seq)")]
    assert seqs == sorted(set(seqs))  # each event once, in order
    assert page.locator("[data-field='warnings']").inner_text() == "1"
    assert page.locator("[data-field='ended'] time").count() == 1
    assert page.locator("#cancel-form").count() == 0  # finished: no more cancel
    assert page.evaluate("window.__notReloaded === true")  # it all came through the events
    assert page.title().startswith("Sleep thread for group dev · completed")
    browsing.shot(page)


def test_a_manager_cancels_a_contributors_thread(browsing: Browsing, server: Server) -> None:
    thread = start_sleep(server, "contributor", seconds=120, steps=120)
    page = browsing.signed_in("manager")
    page.goto(f"{UI}/groups/dev/threads?user=contributor&status=active")
    page.get_by_role("link", name="Sleep thread for group dev").first.click()
    page.wait_for_url(re.compile(f".*/threads/{thread}$"))
    page.wait_for_selector(".live.on")
    page.get_by_role("button", name="Cancel thread").click()
    page.wait_for_url(re.compile(r".*notice=cancelled$"))
    assert badge(page).inner_text() == "cancelled"
    assert "Cancelled by manager" in page.locator("[data-field='message']").inner_text()
    assert page.get_by_role("button", name="Cancel thread").count() == 0
    assert thread_status(server, thread) == "cancelled"
    browsing.shot(page)


def test_a_reviewer_gets_no_cancel_button(browsing: Browsing, server: Server) -> None:
    thread = start_sleep(server, "contributor", seconds=120, steps=120)
    try:
        page = browsing.signed_in("reviewer")
        page.goto(f"{UI}/groups/dev/threads/{thread}")
        assert badge(page).inner_text() in ("initialised", "inprogress")
        assert page.get_by_role("button", name="Cancel thread").count() == 0
        assert page.get_by_text("Your role does not let you read this thread's log").count() == 1
        # the button follows the service: it refuses the reviewer's cancel too
        with server.client("reviewer") as http:
            refused = http.post(f"/ps/service/groups/dev/threads/{thread}/cancel")
        assert refused.status_code == 403
        page.goto(f"{UI}/groups/dev/threads")  # no refusal: the threads they started (none)
        assert page.get_by_text("You have started no thread here").count() == 1
        assert page.get_by_role("link", name=re.compile("Sleep thread")).count() == 0
        browsing.shot(page, "list")
        page.goto(f"{UI}/groups/dev/threads/{thread}")
        browsing.shot(page)
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{thread}/cancel")


def test_a_forged_form_without_the_token_is_refused(browsing: Browsing, server: Server) -> None:
    thread = start_sleep(server, "contributor", seconds=120, steps=120)
    try:
        page = browsing.signed_in("contributor")
        page.goto(f"{UI}/groups/dev/threads/{thread}")
        url = f"{UI}/groups/dev/threads/{thread}/cancel"
        # the browser's own cookie goes with these requests; only the token is missing
        forged = page.request.post(url, form={"back": f"{UI}/groups"}, max_redirects=0)
        assert forged.status == 403
        assert "nothing was done" in forged.text()
        started = page.request.post(f"{UI}/groups/dev/start", multipart={"job": "sleep"},
                                    max_redirects=0)
        assert started.status == 403
        api = page.request.post(f"/ps/service/groups/dev/threads/{thread}/cancel",
                                max_redirects=0)
        assert api.status == 401  # the services never act on the cookie
        time.sleep(0.3)
        assert thread_status(server, thread) == "inprogress"
        page.set_content(forged.text())  # what the forger's victim would see
        browsing.shot(page)
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{thread}/cancel")


def test_sign_out(browsing: Browsing) -> None:
    page = browsing.signed_in("approver")
    assert page.locator(".who").inner_text().startswith("A")
    assert "approver" in page.locator(".who").inner_text()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/ps/ui/sign-in\?notice=signed-out$"))
    assert page.get_by_role("status").inner_text() == "You have signed out."
    page.goto(f"{UI}/groups/dev/threads")
    page.wait_for_url(re.compile(r".*/ps/ui/sign-in\?next=.*"))
    browsing.shot(page)


def test_a_wrong_password_then_the_lockout(browsing: Browsing) -> None:
    page = browsing.page()
    sign_in(page, "othermgr", "not-the-password")
    assert page.get_by_role("alert").inner_text() == "Wrong username or password."
    assert page.get_by_label("Username").input_value() == "othermgr"
    browsing.shot(page, "wrong")
    for _ in range(4):  # the fifth failure locks the name (lockout-attempts)
        sign_in(page, "othermgr", "not-the-password")
    sign_in(page, "othermgr", "othermgr-pw")  # even the right password, now
    alert = page.get_by_role("alert").inner_text()
    assert alert.startswith("Too many failed sign-ins for this account: it is locked.")
    assert "Try again in 15 minutes." in alert
    assert page.url.endswith("/ps/ui/sign-in")
    browsing.shot(page)


def test_a_thread_page_without_javascript(browsing: Browsing, server: Server) -> None:
    page = browsing.page(java_script_enabled=False)
    sign_in(page, "contributor")  # the forms work without JavaScript
    thread = start_sleep(server, "contributor", seconds=3, steps=3)
    page.goto(f"{UI}/groups/dev/threads/{thread}")
    first = badge(page).inner_text()
    assert first in ("initialised", "inprogress")
    assert page.locator("[data-live]").is_hidden()
    assert "Live updates need JavaScript" in page.locator(".status-card").inner_text()
    assert page.get_by_role("button", name="Cancel thread").is_visible()
    deadline = time.monotonic() + 20
    while thread_status(server, thread) != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert badge(page).inner_text() == first  # nothing moves by itself
    browsing.shot(page, "before-reload")
    page.get_by_role("link", name="Reload").click()
    assert badge(page).inner_text() == "completed"
    assert page.locator(PROGRESS).get_attribute("value") == "3"
    page.goto(f"{UI}/groups/dev/threads?status=finished")  # lists too
    assert page.locator("table.threads tbody tr").count() >= 1
    page.goto(f"{UI}/groups/dev/threads/{thread}")
    browsing.shot(page)


def test_on_a_phone(browsing: Browsing, server: Server) -> None:
    for seconds in (0, 60):
        start_sleep(server, "contributor", seconds=seconds, steps=4, warn=1)
    page = browsing.signed_in(
        "contributor", viewport={"width": 390, "height": 844}, device_scale_factor=2,
        is_mobile=True, has_touch=True,
    )
    page.goto(f"{UI}/groups/dev/threads")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the screen
    assert page.locator("table.threads thead").evaluate(
        "el => getComputedStyle(el).position") == "absolute"  # rows are cards
    assert page.locator("table.threads tbody tr").first.evaluate(
        "el => getComputedStyle(el).display") == "block"
    label = page.locator("table.threads tbody td[data-label='User']").first
    assert label.evaluate("el => getComputedStyle(el, '::before').content") == '"User"'
    browsing.shot(page, "list")
    page.get_by_role("link", name="Sleep thread for group dev").first.click()
    page.wait_for_selector(".live.on")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    browsing.shot(page)
    with server.client("admin") as http:
        listed = http.get("/ps/service/groups/dev/threads?username=contributor")
        for thread in re.findall(r'<thread id="([0-9a-f]{32})"', listed.text):
            http.post(f"/ps/service/threads/{thread}/cancel")
