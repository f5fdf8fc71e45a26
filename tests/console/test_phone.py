"""Every console page at a phone's width (375 px) without scrolling sideways, each photographed
and checked by axe; times in the reader's zone, named; relative times in lists, the moment in
their tooltip, and absolute UTC times without the script."""

from __future__ import annotations

import re
from collections.abc import Iterator

import anyio
import pytest

from tests.console.conftest import UI, Browsing, cancel_all, sign_in, start_sleep
from tests.support import Server, running_server, wait_status
from threadsvc import admin
from threadsvc.settings import Settings, load_settings

pytestmark = [pytest.mark.slow, pytest.mark.browser]

PHONE = {"viewport": {"width": 375, "height": 740}, "is_mobile": True, "has_touch": True}
LONG = "agroupwiththelongestnameagroupmayhave.nohyphensmeannobreaks.xyz"  # 63: the longest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """The standard world, and a group with the longest name a group may have."""
    for found in running_server(tmp_path_factory.mktemp("phone"), **{"max-running": 64}):
        anyio.run(long_group, load_settings(found[0].config, environ={}))
        yield found


async def long_group(settings: Settings) -> None:
    async with admin.opened(settings) as a:
        await admin.add_group(a, LONG)
        await admin.add_member(a, LONG, "contributor", "contributor")


@pytest.fixture(scope="module")
def threads(server: Server) -> Iterator[dict[str, str]]:
    found = {
        "done": start_sleep(server, "contributor", seconds=0, steps=1),
        "running": start_sleep(server, "contributor", seconds=300, steps=300, warn=1),
        "server": start_sleep(server, "admin", None, seconds=0),
        "long": start_sleep(server, "contributor", LONG, seconds=0),
    }
    with server.client("admin") as http:
        wait_status(http, found["done"], ["completed"])
        wait_status(http, found["running"], ["warning"])
    yield found
    cancel_all(server, [found["running"]])


PAGES = [  # (who, path, label); {name} is a thread of `threads`
    (None, "/sign-in", "sign-in"),
    ("admin", "/groups", "groups-admin"),
    ("reviewer", "/groups", "groups-reviewer"),
    ("outsider", "/groups", "groups-none"),
    ("contributor", "/groups/dev/threads", "group-list"),
    ("contributor", "/groups/dev/threads?status=bogus&user=" + "x" * 80, "group-list-bad-filter"),
    ("reviewer", "/groups/dev/threads", "own-list"),
    ("contributor", "/groups/dev/threads/{running}", "thread-running"),
    ("contributor", "/groups/dev/threads/{done}", "thread-done"),
    ("contributor", "/groups", "groups-long-name"),
    ("contributor", f"/groups/{LONG}/threads", "group-list-long-name"),
    ("contributor", f"/groups/{LONG}/threads/{{long}}", "thread-long-name"),
    ("contributor", f"/groups/{LONG}/start?job=sleep", "start-long-name"),
    ("admin", "/threads", "all-threads-long-name"),
    ("reviewer", "/groups/dev/threads/{done}", "thread-reviewer"),
    ("contributor", "/threads/{done}", "thread-owner-server-route"),
    ("contributor", "/groups/dev/start", "start-list"),
    ("contributor", "/groups/dev/start?job=validate", "start-form"),
    ("admin", "/threads", "all-threads"),
    ("admin", "/threads/{server}", "thread-server"),
    ("admin", "/start?job=sleep", "start-server"),
    ("admin", "/queue", "queue"),
    ("admin", "/nodes", "nodes"),
    ("reviewer", "/find?id=" + "f" * 64, "find-bad-id"),
    ("reviewer", "/threads", "error-403"),
    ("contributor", "/no/such/page", "error-404"),
    ("contributor", "/sign-out", "sign-out"),
]


@pytest.mark.parametrize(("user", "path", "label"), PAGES, ids=[p[2] for p in PAGES])
def test_every_page_fits_a_phone(browsing: Browsing, threads: dict[str, str],
                                 user: str | None, path: str, label: str) -> None:
    page = browsing.page(**PHONE)
    if user is not None:
        sign_in(page, user)
    page.goto(UI + path.format(**threads))
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{label}: {width} px wide"
    browsing.shot(page, f"phone-{label}")


def test_the_width_check_sees_a_page_too_wide(browsing: Browsing) -> None:
    """The measure above can fail: content wider than the phone makes the page wider."""
    page = browsing.page(**PHONE)
    page.goto(f"{UI}/sign-in")
    page.evaluate("document.querySelector('main').append(Object.assign("
                  "document.createElement('pre'), {textContent: 'x'.repeat(200)}))")
    assert page.evaluate("document.documentElement.scrollWidth") > 375


def test_lists_say_how_long_ago_and_the_moment_in_the_tooltip(
    browsing: Browsing, threads: dict[str, str],
) -> None:
    page = browsing.signed_in("admin", timezone_id="Asia/Tokyo", locale="en-US")
    page.goto(f"{UI}/threads")
    created = page.locator("td[data-label='Created'] time").first
    assert re.fullmatch(r"just now|\d+ min ago", created.inner_text())
    assert "GMT+9" in (created.get_attribute("title") or "")  # the moment, in the reader's zone
    page.goto(f"{UI}/groups/dev/threads/{threads['done']}")
    shown = page.locator(".details time").first.inner_text()
    assert "GMT+9" in shown and "UTC" not in shown
    timeline = page.locator(".timeline li").all_inner_texts()
    assert [t.split()[0] for t in timeline] == ["initialised", "inprogress", "completed"]
    assert all("GMT+9" in t for t in timeline)
    browsing.shot(page, "tokyo")

    plain = browsing.page(java_script_enabled=False)
    sign_in(plain, "admin")
    plain.goto(f"{UI}/threads")
    text = plain.locator("td[data-label='Created'] time").first.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)


def test_a_running_threads_details_and_timeline(browsing: Browsing, threads: dict[str, str]) -> None:
    page = browsing.signed_in("contributor")
    page.goto(f"{UI}/groups/dev/threads/{threads['running']}")
    details = page.locator(".details").first
    assert re.search(r"RAN\s*\n?.*so far", details.inner_text(), re.IGNORECASE)
    steps = page.locator(".timeline li").all_inner_texts()
    # a warning turns the status back to inprogress at the next step: shown while it lasts
    assert [s.split()[0] for s in steps] in (["initialised", "inprogress"],
                                             ["initialised", "inprogress", "warning"])
    params = page.locator(".params").inner_text().lower()
    assert "seconds\n300" in params and "none" not in params  # what was not given is not shown
    browsing.shot(page, "running-details")


def test_the_timeline_and_durations_follow_the_thread_live(browsing: Browsing, server: Server) -> None:
    thread = start_sleep(server, "contributor", seconds=3, steps=3)
    page = browsing.signed_in("contributor")
    page.goto(f"{UI}/groups/dev/threads/{thread}")
    page.wait_for_selector(".live.on")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector(".timeline [data-step='completed']", timeout=20_000)
    steps = page.locator(".timeline li").all_inner_texts()
    assert [s.split()[0] for s in steps] == ["initialised", "inprogress", "completed"]
    ran = page.locator("[data-field='ran']").inner_text()
    assert re.fullmatch(r"[2-9] s", ran), ran  # from the claim to the end, no longer "so far"
    assert "so far" not in page.locator("[data-field='queued']").inner_text()
    assert page.locator("[data-field='timeline-note']").count() == 0
    assert page.evaluate("window.__notReloaded === true")
    browsing.shot(page, "live-timeline")
