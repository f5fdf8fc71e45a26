"""Finding and acting on threads in Chromium: search and filters, bad values named inline, a
list that updates while its thread runs, bulk cancel of 50 threads (with and without
JavaScript), bulk delete for managers only, Run again, the queue, and a phone's width."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.console.conftest import UI, Browsing, cancel_all, start_sleep, thread_status
from tests.support import Server

pytestmark = [pytest.mark.slow, pytest.mark.browser]
GROUP = f"{UI}/groups/dev"


def wait_until(check: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_search_filter_and_sort(browsing: Browsing, server: Server) -> None:
    done = start_sleep(server, "contributor", seconds="0", steps="1")
    wait_until(lambda: thread_status(server, done) == "completed")
    page = browsing.signed_in("contributor")
    page.goto(f"{GROUP}/threads")
    page.get_by_label("Search", exact=True).fill(done[:8])
    page.get_by_role("button", name="Find").click()
    rows = page.locator("tr[data-thread]")
    assert rows.count() == 1 and rows.first.get_attribute("data-thread") == done
    browsing.shot(page, "by-id")
    page.get_by_label("Search", exact=True).fill("sleep")
    page.get_by_label("Status", exact=True).select_option("finished")
    page.get_by_label("Sort by", exact=True).select_option("duration")
    page.get_by_label("Per page", exact=True).select_option("10")
    page.get_by_role("button", name="Find").click()
    assert 1 <= page.locator("tr[data-thread]").count() <= 10
    assert "sort=duration" in page.url
    browsing.shot(page, "sorted")


def test_bad_values_are_shown_inline_with_the_form(browsing: Browsing) -> None:
    page = browsing.signed_in("contributor")
    page.goto(f"{GROUP}/threads?created-from=someday&order=sideways")
    problems = page.locator("#find-problems")
    assert problems.is_visible()
    assert "Created from" in problems.inner_text() and "Order" in problems.inner_text()
    assert page.get_by_label("Created from", exact=True).input_value() == "someday"
    assert page.locator("tr[data-thread]").count() == 0
    browsing.shot(page)


def test_a_reviewer_gets_their_own_threads_and_no_actions(browsing: Browsing) -> None:
    page = browsing.signed_in("reviewer")
    response = page.goto(f"{GROUP}/threads")
    assert response.status == 200
    assert page.get_by_role("heading", name="dev").is_visible()
    assert "The threads you started" in page.locator(".lead").inner_text()
    assert page.locator("#bulk-form").count() == 0 and page.locator("[data-list-live]").count() == 0
    browsing.shot(page)


def test_the_list_updates_while_a_thread_runs(browsing: Browsing, server: Server) -> None:
    thread_id = start_sleep(server, "contributor", seconds="3", steps="6")
    page = browsing.signed_in("contributor")
    page.goto(f"{GROUP}/threads?status=all")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    row = page.locator(f"tr[data-thread='{thread_id}']")
    page.locator("[data-list-live].on").wait_for()
    badge = row.locator("[data-field='status']")
    badge.filter(has_text="inprogress").wait_for()
    browsing.shot(page, "running")
    badge.filter(has_text="completed").wait_for(timeout=30_000)
    assert row.locator("[data-field='ended'] time").count() == 1
    assert page.evaluate("window.sameDocument") is True
    page.locator("[data-list-live]", has_text="ended").wait_for()
    browsing.shot(page, "ended")


def test_bulk_cancel_of_50_threads(browsing: Browsing, server: Server) -> None:
    ids = [start_sleep(server, "contributor", seconds="120", steps="120") for _ in range(50)]
    try:
        page = browsing.signed_in("contributor")
        page.goto(f"{GROUP}/threads?status=active&user=contributor&job=sleep&pagesize=50")
        assert page.locator("tr[data-thread]").count() == 50
        page.get_by_label("Select every thread on this page").check()
        browsing.shot(page, "selected")
        assert page.get_by_role("button", name="Delete ended…").count() == 0  # contributor
        page.get_by_role("button", name="Cancel…").click()
        page.get_by_role("heading", name="Cancel 50 threads?").wait_for()
        assert all(thread_status(server, i) != "cancelled" for i in ids[:3])  # not yet
        browsing.shot(page, "confirm")
        page.get_by_role("button", name="Cancel 50 threads").click()
        page.locator(".notice", has_text="Cancelled 50 threads.").wait_for()
        browsing.shot(page, "done")
        wait_until(lambda: all(thread_status(server, i) == "cancelled" for i in ids))
    finally:
        cancel_all(server, ids)


def test_bulk_cancel_of_all_matching_without_javascript(
    browsing: Browsing, server: Server,
) -> None:
    ids = [start_sleep(server, "contributor", seconds="120", steps="120") for _ in range(3)]
    try:
        page = browsing.signed_in("contributor", java_script_enabled=False)
        page.goto(f"{GROUP}/threads?status=active&user=contributor&job=sleep")
        page.get_by_label(re.compile(r"all 3 threads matching")).check()
        page.get_by_role("button", name="Cancel…").click()
        page.get_by_role("heading", name="Cancel 3 threads?").wait_for()
        browsing.shot(page, "confirm")
        page.get_by_role("button", name="Cancel 3 threads").click()
        page.locator(".notice", has_text="Cancelled 3 threads.").wait_for()
        wait_until(lambda: all(thread_status(server, i) == "cancelled" for i in ids))
    finally:
        cancel_all(server, ids)


def test_a_manager_deletes_ended_threads(browsing: Browsing, server: Server) -> None:
    done = start_sleep(server, "contributor", seconds="0", steps="1")
    wait_until(lambda: thread_status(server, done) == "completed")
    page = browsing.signed_in("manager")
    page.goto(f"{GROUP}/threads?q={done}&in=id")
    page.get_by_label(re.compile(r"^Select Sleep thread")).check()
    page.get_by_role("button", name="Delete ended…").click()
    page.get_by_role("heading", name="Delete 1 thread?").wait_for()
    browsing.shot(page, "confirm")
    page.get_by_role("button", name="Delete 1 thread").click()
    page.locator(".notice", has_text="Deleted 1 thread.").wait_for()
    with server.client("admin") as http:
        assert http.get(f"/ps/service/threads/{done}/progress").status_code == 404


def test_run_again(browsing: Browsing, server: Server) -> None:
    done = start_sleep(server, "contributor", seconds="0", steps="4", warn="3")
    wait_until(lambda: thread_status(server, done) in ("warning", "completed"))
    page = browsing.signed_in("contributor")
    page.goto(f"{GROUP}/threads/{done}")
    page.get_by_role("link", name="Run again").click()
    assert page.get_by_label("steps", exact=True).input_value() == "4"
    assert page.get_by_label("warn", exact=True).input_value() == "3"
    assert page.locator(".again-note").is_visible()
    browsing.shot(page, "form")
    page.get_by_role("button", name="Start sleep").click()
    page.wait_for_url(re.compile(r".*/threads/[0-9a-f]{32}\?notice=started$"))
    other = browsing.signed_in("reviewer")
    other.goto(f"{GROUP}/threads/{done}")
    assert other.get_by_role("link", name="Run again").count() == 0
    browsing.shot(other, "reviewer")


def test_the_queue_for_administrators(browsing: Browsing, server: Server) -> None:
    page = browsing.signed_in("admin")
    page.goto(f"{UI}/queue?q=sleep&sort=created&order=asc")
    assert page.get_by_role("heading", name="Queue").is_visible()
    assert page.get_by_label("Status", exact=True).count() == 0  # fixed: initialised
    browsing.shot(page, "admin")
    other = browsing.signed_in("contributor")
    assert other.goto(f"{UI}/queue").status == 403
    browsing.shot(other, "contributor")


def test_on_a_phone(browsing: Browsing, server: Server) -> None:
    running = start_sleep(server, "contributor", seconds="60", steps="60")
    try:
        page = browsing.signed_in("contributor", viewport={"width": 375, "height": 800})
        page.goto(f"{GROUP}/threads?status=all")
        page.locator("tr[data-thread]").first.wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, width
        browsing.shot(page, "list")
    finally:
        cancel_all(server, [running])
