"""The list pages over plain HTTP: search, filters, sort and page size through the service's
list; bad values named on the page (never an error page); bulk cancel and delete with their
confirmation, CSRF and audit; the live stream's rights; and Run again's prefilled form."""

from __future__ import annotations

import html
import re
import time

import anyio
import httpx

from tests.console.conftest import UI, anonymous, cancel_all, start_sleep, thread_status
from tests.console.test_session import csrf_of, signed_in
from tests.support import Server
from threadsvc import admin
from threadsvc.settings import load_settings

GROUP = f"{UI}/groups/dev"


def listed(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text[:2000]
    return re.findall(r'<tr data-thread="([0-9a-f]{32})"', response.text)


def wait_status(server: Server, thread_id: str, *statuses: str) -> None:
    deadline = time.monotonic() + 20
    while thread_status(server, thread_id) not in statuses:
        assert time.monotonic() < deadline, thread_status(server, thread_id)
        time.sleep(0.05)


def test_search_by_id_prefix_name_and_message(server: Server) -> None:
    done = start_sleep(server, "contributor", seconds="0", steps="1")
    wait_status(server, done, "completed")
    with signed_in(server, "contributor") as client:
        assert listed(client.get(f"{GROUP}/threads", params={"q": done[:8]})) == [done]
        assert listed(client.get(f"{GROUP}/threads", params={"q": done, "in": "id"})) == [done]
        named = listed(client.get(f"{GROUP}/threads", params={"q": "SLEEP", "in": "name"}))
        assert done in named
        nothing = client.get(f"{GROUP}/threads", params={"q": "zz-no-such", "in": "message"})
        assert listed(nothing) == [] and "No thread matches" in nothing.text


def test_sort_and_page_size(server: Server) -> None:
    long = start_sleep(server, "contributor", seconds="0.4", steps="1")
    short = start_sleep(server, "contributor", seconds="0", steps="1")
    for thread_id in (long, short):
        wait_status(server, thread_id, "completed")
    with signed_in(server, "contributor") as client:
        longest = listed(client.get(f"{GROUP}/threads", params={
            "status": "finished", "sort": "duration", "pagesize": "100"}))
        assert longest.index(long) < longest.index(short)
        shortest = listed(client.get(f"{GROUP}/threads", params={
            "status": "finished", "sort": "duration", "order": "asc", "pagesize": "100"}))
        assert shortest.index(short) < shortest.index(long)
        ten = client.get(f"{GROUP}/threads", params={"status": "all", "pagesize": "10"})
        assert len(listed(ten)) <= 10


def test_bad_values_are_named_on_the_page_and_nothing_is_listed(server: Server) -> None:
    with signed_in(server, "contributor") as client:
        response = client.get(f"{GROUP}/threads", params={
            "created-from": "yesterday", "pagesize": "7", "sort": "size", "q": "<b>x</b>",
            "in": "id"})
        assert response.status_code == 400  # the page, with the form and what is wrong
        text = response.text
        assert 'id="find-problems"' in text and "<tr data-thread=" not in text
        for label in ("Created from", "Per page", "Sort by", "Search"):
            assert f">{label}</a>" in text, label
        assert "<b>x</b>" not in text and html.escape("<b>x</b>") in text  # kept, escaped
        assert 'value="yesterday"' in text  # the form keeps what was typed
        assert 'id="bulk-form"' not in text  # no action on a search that is not one


def test_a_reviewer_sees_only_their_own_threads_and_no_bulk_form(server: Server) -> None:
    """A reviewer may not list the group: the page lists the threads they started, searched
    the same way, with no bulk actions and no live stream (that is the whole list's right)."""
    others = start_sleep(server, "contributor", seconds="30", steps="30")
    with signed_in(server, "reviewer") as client:
        response = client.get(f"{GROUP}/threads", params={"status": "all"})
        assert response.status_code == 200 and "The threads you started" in response.text
        assert others[:8] not in response.text
        assert 'id="bulk-form"' not in response.text and "threads/live" not in response.text
        assert client.get(f"{GROUP}/threads/live").status_code == 403
        bad = client.get(f"{GROUP}/threads", params={"status": "bogus"})
        assert bad.status_code == 400 and 'aria-invalid="true"' in bad.text
    cancel_all(server, [others])


def test_a_contributor_may_cancel_but_not_delete(server: Server) -> None:
    with signed_in(server, "contributor") as client:
        page = client.get(f"{GROUP}/threads", params={"status": "all"})
        assert 'value="cancel"' in page.text and 'value="delete"' not in page.text
    with signed_in(server, "manager") as client:
        page = client.get(f"{GROUP}/threads", params={"status": "all"})
        assert 'value="cancel"' in page.text and 'value="delete"' in page.text


def test_bulk_cancel_confirms_the_count_then_cancels_each(server: Server) -> None:
    ids = [start_sleep(server, "contributor", seconds="30", steps="30") for _ in range(3)]
    with signed_in(server, "contributor") as client:
        page = client.get(f"{GROUP}/threads", params={"status": "active"})
        form = {"csrf": csrf_of(page), "action": "cancel", "scope": "selected", "status": "active"}
        confirm = client.post(f"{GROUP}/threads/bulk", data={**form, "id": ids})
        assert confirm.status_code == 200 and "Cancel 3 threads?" in confirm.text
        assert all(thread_status(server, i) != "cancelled" for i in ids)  # nothing done yet
        forged = client.post(f"{GROUP}/threads/bulk", data={
            **form, "csrf": "forged", "id": ids, "confirmed": "yes"})
        assert forged.status_code == 403
        assert all(thread_status(server, i) != "cancelled" for i in ids)
        done = client.post(f"{GROUP}/threads/bulk", data={**form, "id": ids, "confirmed": "yes"})
        assert done.status_code == 303 and "bulk=cancel&done=3" in done.headers["location"]
        back = client.get(done.headers["location"])
        assert "Cancelled 3 threads." in back.text
    for thread_id in ids:
        wait_status(server, thread_id, "cancelled")
    with server.client("admin") as http:
        audit = http.get("/ps/service/audit", params={"action": "thread.cancel"}).text
    assert all(thread_id in audit for thread_id in ids)  # one entry each


def test_bulk_delete_of_all_matching_takes_the_ended_ones(server: Server) -> None:
    ended = start_sleep(server, "contributor", seconds="0", steps="1")
    running = start_sleep(server, "contributor", seconds="30", steps="30")
    wait_status(server, ended, "completed")
    search = {"q": ended[:8]}
    with signed_in(server, "contributor") as client:  # a contributor may not delete
        refused = client.post(f"{GROUP}/threads/bulk", data={
            "csrf": csrf_of(client.get(f"{GROUP}/threads")), "action": "delete",
            "scope": "matching", "confirmed": "yes", "id": [ended], **search})
        assert refused.status_code == 403
    assert thread_status(server, ended) == "completed"
    with signed_in(server, "manager") as client:
        csrf = csrf_of(client.get(f"{GROUP}/threads"))
        confirm = client.post(f"{GROUP}/threads/bulk", data={
            "csrf": csrf, "action": "delete", "scope": "matching", **search})
        assert "Delete 1 thread?" in confirm.text and ended in confirm.text
        assert running not in confirm.text
        done = client.post(f"{GROUP}/threads/bulk", data={
            "csrf": csrf, "action": "delete", "scope": "selected", "confirmed": "yes",
            "id": [ended, running]})
        back = client.get(done.headers["location"])
        assert "Deleted 1 thread." in back.text and "1 had not ended" in back.text
    with server.client("admin") as http:
        assert http.get(f"/ps/service/threads/{ended}/progress").status_code == 404
        http.post(f"/ps/service/threads/{running}/cancel")


def test_the_live_stream_sends_the_lists_threads_only(server: Server) -> None:
    mine = start_sleep(server, "contributor", seconds="0.5", steps="2")
    elsewhere = start_sleep(server, "admin", group=None, seconds="0.5", steps="2")
    with signed_in(server, "contributor") as client:
        url = f"{GROUP}/threads/live?t={mine}:1&t={elsewhere}:1"
        with client.stream("GET", url, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            body = "".join(response.iter_text())  # ends once the group's thread has ended
    assert f'"id": "{mine}"' in body and '"final": true' in body
    assert elsewhere not in body
    assert "event: done" in body


def test_run_again_prefills_the_form(server: Server) -> None:
    done = start_sleep(server, "contributor", seconds="0", steps="3", warn="2")
    wait_status(server, done, "warning", "completed")
    with signed_in(server, "contributor") as client:
        thread = client.get(f"{GROUP}/threads/{done}")
        assert f"{GROUP}/start?job=sleep&amp;again={done}" in thread.text
        form = client.get(f"{GROUP}/start", params={"job": "sleep", "again": done})
        assert form.status_code == 200
        assert re.search(r'name="steps"[^>]*value="3"', form.text)
        assert re.search(r'name="warn"[^>]*value="2"', form.text)
        assert re.search(r'name="result"[^>]*value=""', form.text)  # not given: left empty
    with signed_in(server, "reviewer") as client:  # who may not start sleep: no link
        assert "again=" not in client.get(f"{GROUP}/threads/{done}").text


def test_a_reviewer_cannot_cancel_in_bulk(server: Server) -> None:
    running = start_sleep(server, "contributor", seconds="30", steps="30")
    try:
        with signed_in(server, "reviewer") as client:
            csrf = csrf_of(client.get(f"{UI}/groups"))
            refused = client.post(f"{GROUP}/threads/bulk", data={
                "csrf": csrf, "action": "cancel", "scope": "selected", "confirmed": "yes",
                "id": [running]})
            assert refused.status_code == 403
        assert thread_status(server, running) != "cancelled"
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{running}/cancel")


def test_pages_keep_the_search(server: Server) -> None:
    for _ in range(11):  # two pages of 10 at least, whatever ran before
        start_sleep(server, "contributor", seconds="0", steps="1")
    with signed_in(server, "contributor") as client:
        page = client.get(f"{GROUP}/threads", params={
            "status": "all", "pagesize": "10", "sort": "ended", "page": "2"})
        assert page.status_code == 200
        found = re.search(r'href="([^"]*)" rel="prev"', page.text)
        assert found, page.text[-3000:]
        newer = html.unescape(found.group(1))
        assert "sort=ended" in newer and "pagesize=10" in newer and "&page=" not in newer


def test_the_live_stream_ends_when_the_lists_right_is_gone(server: Server) -> None:
    async def member(add: bool) -> None:
        async with admin.opened(load_settings(server.config, environ={})) as a:
            if add:
                await a.identity.add_user("watcher", "watcher-pw-1", False)
                await admin.add_member(a, "dev", "watcher", "contributor")
            else:
                await admin.remove_member(a, "dev", "watcher")

    anyio.run(member, True)
    running = start_sleep(server, "contributor", seconds="60", steps="60")
    try:
        with anonymous(server) as client:
            form = client.get(f"{UI}/sign-in")
            signed = client.post(f"{UI}/sign-in", data={
                "csrf": csrf_of(form), "username": "watcher", "password": "watcher-pw-1"})
            assert signed.status_code == 303
            url = f"{GROUP}/threads/live?t={running}:1"
            with client.stream("GET", url, timeout=30) as response:
                assert response.status_code == 200
                chunks = response.iter_text()
                assert "retry:" in next(chunks)
                anyio.run(member, False)  # no longer a member: the next check ends the stream
                rest = "".join(chunks)
            assert "event: done" not in rest  # ended for the right, not for the threads
            assert client.get(url).status_code == 403
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{running}/cancel")
