"""The administrators' pages in Chromium: all threads, the queue (with cancel) and the nodes,
on a server that runs one thread at a time so that the others wait in the queue."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.console.conftest import UI, Browsing, cancel_all, start_sleep, thread_status
from tests.support import Server, running_server

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("console-admin")
    yield from running_server(directory, **{"max-running": 1})


def rows(page: Any) -> Any:
    return page.locator("table.threads tbody tr")


def test_all_threads_the_queue_and_the_nodes(browsing: Browsing, server: Server) -> None:
    ids = [start_sleep(server, "contributor", seconds=300, steps=300)]  # runs
    ids += [start_sleep(server, "manager", seconds=300) for _ in range(2)]  # wait
    ids.append(start_sleep(server, "admin", None, seconds=300))  # server level, waits
    try:
        page = browsing.signed_in("admin")
        nav = page.get_by_role("navigation", name="Main")
        for name in ("Groups", "All threads", "Queue", "Nodes"):
            assert nav.get_by_role("link", name=name).is_visible()

        nav.get_by_role("link", name="All threads").click()
        page.wait_for_url(re.compile(r".*/ps/ui/threads$"))
        assert rows(page).count() == 4
        groups = page.locator("td[data-label='Group']").all_inner_texts()
        assert groups == ["server", "dev", "dev", "dev"]  # newest first
        page.get_by_label("User").fill("manager")
        page.get_by_role("button", name="Find").click()
        assert rows(page).count() == 2
        assert "/ps/ui/threads?" in page.url and "user=manager" in page.url
        page.get_by_role("link", name="Clear").click()
        browsing.shot(page, "all")

        nav.get_by_role("link", name="Queue").click()
        assert page.locator(".big-number strong").inner_text() == "3"
        assert rows(page).count() == 3
        assert set(page.locator("td[data-label='Status']").all_inner_texts()) == {"initialised"}
        browsing.shot(page, "queue")
        rows(page).first.get_by_role("button", name=re.compile("^Cancel")).click()
        page.wait_for_url(re.compile(r".*/ps/ui/queue\?notice=cancelled$"))
        assert page.get_by_role("status").inner_text() == "The thread is cancelled."
        assert rows(page).count() == 2
        assert thread_status(server, ids[3]) == "cancelled"  # the newest, at the top

        nav.get_by_role("link", name="Nodes").click()
        node = page.locator("table.nodes tbody tr")
        assert node.count() == 1
        assert "this node" in node.inner_text().lower()
        assert node.locator("td[data-label='Running threads']").inner_text() == "1"
        assert node.locator("td[data-label='State']").inner_text() == "alive"
        assert node.locator("td[data-label='Last heartbeat'] time").count() == 1
        tiles = dict(zip(page.locator(".tiles .badge").all_inner_texts(),
                         page.locator(".tiles strong").all_inner_texts(), strict=True))
        assert tiles["inprogress"] == "1" and tiles["initialised"] == "2"
        assert tiles["cancelled"] == "1"
        browsing.shot(page)

        # the running thread's page shows an administrator its node and heartbeat
        page.goto(f"{UI}/threads/{ids[0]}")
        details = page.locator("dl.details").first.inner_text()
        assert "NODE" in details.upper() and "HEARTBEAT" in details.upper()
        browsing.shot(page, "thread")
    finally:
        cancel_all(server, ids)


def test_others_are_refused_the_administrators_pages(browsing: Browsing) -> None:
    page = browsing.signed_in("approver")
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Queue").count() == 0
    for path in ("threads", "queue", "nodes", "start"):
        response = page.goto(f"{UI}/{path}")
        assert response is not None
        if path == "start":  # the form offers nothing; the service would refuse a start
            assert page.get_by_text("There is no job your role lets you start here.").count()
            continue
        assert response.status == 403
        assert page.get_by_role("alert").inner_text() == "Only administrators may use this service"
    browsing.shot(page)
