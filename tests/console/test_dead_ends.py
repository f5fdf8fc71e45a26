"""The console over plain HTTP, as every demo role: no link it shows answers 403 (a crawler
follows every same-site link of every page each role can reach), an administrator's groups
with their counts, a reviewer's own threads and opening a thread by id, bad filters shown
next to their field, and the thread page's details (parameters, durations, timeline)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import anyio
import httpx
import pytest

from tests.console.conftest import UI
from tests.console.test_session import signed_in
from tests.support import USERS, Server, password, seed, start, wait_status
from threadsvc import admin
from threadsvc.models import Level, LogEvent, Status, Thread, now_ms
from threadsvc.settings import load_settings

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data" / "validate"
SERVICE = "/ps/service"


# threads whose ids start alike: two in dev, and one in dev and one in other
TWINS = [("ab12cd34" + "0" * 24, 240), ("ab12cd34" + "1" * 24, 240),
         ("cc12cd34" + "0" * 24, 240), ("cc12cd34" + "1" * 24, 241)]


def twin(thread_id: str, group: int) -> Thread:
    return Thread(id=thread_id, name="Twin", username="manager", group_id=group, job="sleep",
                  params={"seconds": 0.0, "steps": 1}, status=Status.INITIALISED,
                  created=now_ms(), version=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """The standard world, plus `former`: a contributor of dev who started a thread there and
    is a reviewer now (a reviewer's own threads), and threads in every place and state."""
    directory = tmp_path_factory.mktemp("dead-ends")
    server = Server(directory, **{"max-running": 8, "auth-cache-seconds": 0})
    tokens = seed(server.config)
    settings = load_settings(server.config, environ={})

    async def member(role: str, create: bool = False) -> None:
        async with admin.opened(settings) as a:
            if create:
                await a.identity.add_user("former", password("former"), False)
                for thread_id, group in TWINS:
                    await a.store.insert_thread(twin(thread_id, group), LogEvent(
                        1, now_ms(), Level.INFO, "Status: initialised"))
            await admin.add_member(a, "dev", "former", role)

    anyio.run(member, "contributor", True)
    server.start()
    try:
        threads = {}
        with server.client("former") as http:
            threads["former"] = start(http, f"{SERVICE}/groups/dev", seconds=0)
        with server.client("contributor") as http:
            threads["done"] = start(http, f"{SERVICE}/groups/dev", seconds=0)
            threads["running"] = start(http, f"{SERVICE}/groups/dev", seconds=120, steps=120)
            files = [("documents", (p.name, p.read_bytes(), "application/xml"))
                     for p in sorted((DATA / "valid").glob("*.xml"))]
            answer = http.post(f"{SERVICE}/groups/dev/threads", data={"job": "validate"},
                               files=files)
            assert answer.status_code == 202, answer.text
            threads["upload"] = re.findall(r'id="([0-9a-f]{32})"', answer.text)[0]
        with server.client("othermgr") as http:
            threads["other"] = start(http, f"{SERVICE}/groups/other", seconds=0)
        with server.client("admin") as http:
            threads["server"] = start(http, SERVICE, seconds=0)
            for key in ("former", "done", "upload"):
                wait_status(http, threads[key], ["completed", "failed"])
            wait_status(http, threads["running"], ["inprogress"])
        anyio.run(member, "reviewer")
        server.threads = threads  # type: ignore[attr-defined]
        yield server, tokens
    finally:
        server.stop()


@pytest.fixture(scope="module")
def threads(server: Server) -> dict[str, str]:
    found: dict[str, str] = server.threads  # type: ignore[attr-defined]
    return found


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.found.append(href)


def links_of(base: str, html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return [urljoin(base, href) for href in parser.found]


def crawl(server: Server, user: str, *also: str, limit: int = 3000) -> dict[str, int]:
    """Every same-site link reachable from the console's home page (and the pages `also`
    names) as `user`: its status."""
    seen: dict[str, int] = {}
    queue = [f"{server.url}{UI}/groups", *(f"{server.url}{path}" for path in also)]
    with signed_in(server, user) as client:
        while queue and len(seen) < limit:
            url = queue.pop(0)
            if url in seen:
                continue
            response = client.get(url)
            seen[url] = response.status_code
            if response.status_code in (301, 302, 303, 307):
                queue.append(urljoin(url, response.headers["location"]))
            if urlsplit(url).path.startswith(UI) and "text/html" in response.headers.get(
                    "content-type", ""):
                for link in links_of(url, response.text):
                    target = link.split("#")[0]
                    if urlsplit(target).netloc == urlsplit(server.url).netloc:
                        queue.append(target)
    assert len(seen) < limit, "the crawl did not end"
    return seen


@pytest.mark.parametrize("user", [*USERS, "former"])
def test_no_link_answers_403_for_any_role(server: Server, threads: dict[str, str],
                                          user: str) -> None:
    # a reviewer lists no thread of dev: they open one by its id (as the form does)
    also = [f"{UI}/groups/dev/threads/{threads['done']}"] if user == "reviewer" else []
    found = crawl(server, user, *also)
    refused = {url: status for url, status in found.items() if status >= 400}
    assert not refused, refused
    paths = {urlsplit(url).path for url in found}
    if user != "outsider":  # every member reaches their group's page and a thread of it
        group = "other" if user == "othermgr" else "dev"
        assert f"{UI}/groups/{group}/threads" in paths
        assert any(re.fullmatch(rf"{UI}/groups/{group}/threads/[0-9a-f]{{32}}", p) for p in paths)
    if user == "admin":
        assert {f"{UI}/groups/other/threads", f"{UI}/threads", f"{UI}/queue"} <= paths
        assert f"{UI}/threads/{threads['server']}" in paths
    if user == "former":  # their own thread, from their own list
        assert f"{UI}/groups/dev/threads/{threads['former']}" in paths


def test_the_crawler_sees_a_403_when_a_page_links_one(server: Server) -> None:
    """The crawl's proof holds only if it reports refusals: a reviewer sent to the server's
    list gets one."""
    with signed_in(server, "reviewer") as client:
        assert client.get(f"{UI}/threads").status_code == 403


def test_an_administrator_sees_every_group_with_its_counts(server: Server) -> None:
    with signed_in(server, "admin") as client:
        page = client.get(f"{UI}/groups").text
    assert "You belong to no group" not in page
    cards = {re.search(r'href="/ps/ui/groups/([a-z]+)/threads"', card).group(1): card  # type: ignore[union-attr]
             for card in page.split('<li class="card group">')[1:]}
    assert set(cards) == {"dev", "other"}
    with server.client("admin") as http:
        for group, card in cards.items():
            for status in ("completed", "inprogress"):
                listed = http.get(f"{SERVICE}/groups/{group}/threads?status={status}")
                total = int(re.search(r'total="(\d+)"', listed.text).group(1))  # type: ignore[union-attr]
                shown = re.search(rf'status={status}"><span class="badge s-{status}">{status}'
                                  rf'</span> (\d+)</a>', card)
                assert (int(shown.group(1)) if shown else 0) == total, (group, status)
    assert "administrator" in cards["dev"]


def test_members_see_their_groups_and_counts_only_where_they_may_list(server: Server) -> None:
    with signed_in(server, "contributor") as client:
        page = client.get(f"{UI}/groups").text
    assert re.findall(r'href="/ps/ui/groups/([a-z]+)/threads"', page) == ["dev"]
    assert "status-counts" in page
    with signed_in(server, "reviewer") as client:
        page = client.get(f"{UI}/groups").text
    assert "status-counts" not in page and "your threads" in page


def test_a_reviewer_lists_the_threads_they_started_and_no_others(
    server: Server, threads: dict[str, str],
) -> None:
    with signed_in(server, "former") as client:
        page = client.get(f"{UI}/groups/dev/threads")
        assert page.status_code == 200
        assert threads["former"] in page.text and threads["done"] not in page.text
        assert "The threads you started in this group" in page.text
        widened = client.get(f"{UI}/groups/dev/threads?user=contributor").text
        assert threads["former"] in widened and threads["done"] not in widened  # still theirs
    with signed_in(server, "reviewer") as client:
        page = client.get(f"{UI}/groups/dev/threads")
        assert page.status_code == 200 and "You have started no thread here" in page.text
        assert 'href="/ps/ui/groups/dev/start"' not in page.text  # a reviewer starts nothing
    with signed_in(server, "outsider") as client:
        assert client.get(f"{UI}/groups/dev/threads").status_code == 403
    with server.client("former") as http:  # the API's list is unchanged: still refused
        assert http.get(f"{SERVICE}/groups/dev/threads").status_code == 403


@pytest.mark.parametrize(("user", "key", "where"), [
    ("reviewer", "done", "/groups/dev"),  # a reviewer may open any thread of the group
    ("reviewer", "done:8", "/groups/dev"),  # by the first 8 characters lists show
    ("contributor", "server:8", None),  # not theirs: the start of its id finds nothing
    ("contributor", "done", "/groups/dev"),
    ("admin", "server", ""),
    ("admin", "other", "/groups/other"),
])
def test_open_a_thread_by_its_id(server: Server, threads: dict[str, str], user: str, key: str,
                                 where: str | None) -> None:
    name, _, length = key.partition(":")
    typed = threads[name][:int(length)] if length else threads[name]
    with signed_in(server, user) as client:
        answer = client.get(f"{UI}/find", params={"id": f" {typed.upper()} "})
    if where is None:
        assert answer.status_code == 404 and "No thread with this id" in answer.text
        return
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{UI}{where}/threads/{threads[name]}"


@pytest.mark.parametrize(("user", "typed", "status", "problem"), [
    ("reviewer", "12345", 400, "32 hexadecimal characters (or at least its first 8)"),
    ("reviewer", "<b>x</b>", 400, "32 hexadecimal characters"),
    ("reviewer", "done:7", 400, "32 hexadecimal characters"),
    ("reviewer", "other:8", 404, "No thread with this id"),  # by its start: as if none
    ("reviewer", "0" * 32, 404, "No thread with this id"),
    ("reviewer", "other", 404, "No thread with this id"),  # another group's: as if none
    ("outsider", "done", 404, "No thread with this id"),
    ("contributor", "server", 404, "No thread with this id"),
])
def test_a_thread_id_that_cannot_be_opened_is_said_next_to_the_form(
    server: Server, threads: dict[str, str], user: str, typed: str, status: int, problem: str,
) -> None:
    with signed_in(server, user) as client:
        key, _, length = typed.partition(":")
        wanted = threads[key][:int(length)] if length else threads.get(typed, typed)
        answer = client.get(f"{UI}/find", params={"id": wanted})
    assert answer.status_code == status
    assert problem in answer.text
    assert 'id="thread-id"' in answer.text and 'aria-describedby="err-id"' in answer.text
    assert "<b>x</b>" not in answer.text


@pytest.mark.parametrize(("query", "field", "problem"), [
    ("status=bogus", "status", "unknown status 'bogus'"),
    ("page=-1", "page", "whole number"),
    ("page=0", "page", "from 1 to"),
    ("user=" + "u" * 300, "user", "longer than 200 characters"),
    ("user=a%00b", "user", "control characters"),
    ("job=a%01", "job", "control characters"),
])
@pytest.mark.parametrize("path", ["/groups/dev/threads", "/threads"])
def test_a_bad_filter_keeps_the_page_and_says_why_next_to_the_field(
    server: Server, query: str, field: str, problem: str, path: str,
) -> None:
    with signed_in(server, "admin") as client:
        answer = client.get(f"{UI}{path}?{query}")
    assert answer.status_code == 400
    assert 'class="filters' in answer.text  # the form is still there
    error = re.search(rf'<p class="field-error" id="err-{field}">([^<]*)</p>', answer.text)
    assert error and problem in error.group(1).replace("&#39;", "'"), answer.text[-3000:]
    if field != "page":
        assert f'aria-describedby="err-{field}"' in answer.text
    assert "No thread matches" not in answer.text


def test_a_bad_filter_on_a_reviewers_list_and_refusals_first(server: Server) -> None:
    with signed_in(server, "reviewer") as client:
        answer = client.get(f"{UI}/groups/dev/threads?status=nope")
        assert answer.status_code == 400 and 'id="err-status"' in answer.text
        assert client.get(f"{UI}/threads?status=nope").status_code == 403  # not 400
    with signed_in(server, "outsider") as client:
        assert client.get(f"{UI}/groups/dev/threads?page=-1").status_code == 403


def test_the_thread_page_shows_parameters_durations_and_the_timeline(
    server: Server, threads: dict[str, str],
) -> None:
    with signed_in(server, "contributor") as client:
        upload = client.get(f"{UI}/groups/dev/threads/{threads['upload']}").text
        running = client.get(f"{UI}/groups/dev/threads/{threads['running']}").text
        done = client.get(f"{UI}/groups/dev/threads/{threads['done']}").text
    for path in sorted((DATA / "valid").glob("*.xml")):
        size = path.stat().st_size
        shown = f"{size} bytes" if size < 1024 else f"{size / 1024:.1f} KiB"
        assert (f'<span class="file-name">{path.name}</span> <span class="muted">{shown}</span>'
                in upload)
    assert "uploads/" not in upload  # never where the file is kept
    assert re.search(r'<dt>seconds</dt><dd><code class="value">0(\.0)?</code>', done)
    timeline = re.search(r'<ol class="timeline"[^>]*>(.*?)</ol>', done, re.DOTALL).group(1)  # type: ignore[union-attr]
    assert re.findall(r'class="badge s-(\w+)"', timeline) == [
        "initialised", "inprogress", "completed"]
    assert timeline.count("UTC</time>") == 3  # without the script: UTC, and it says so
    assert re.search(r'<dt>Queued</dt><dd data-field="queued">\d+ (ms|s)</dd>', done)
    assert re.search(r'<dt>Ran</dt><dd data-field="ran">\d+ (ms|s)</dd>', done)
    assert re.search(r'<dt>Ran</dt><dd data-field="ran">[^<]+ so far</dd>', running)
    assert "Running for" in running
    with signed_in(server, "reviewer") as client:  # the parameters go with the log
        page = client.get(f"{UI}/groups/dev/threads/{threads['upload']}").text
    assert 'class="timeline"' in page and "Parameters" not in page and "moby.xml" not in page


def test_an_owner_on_the_server_route_has_breadcrumbs_they_may_follow(
    server: Server, threads: dict[str, str],
) -> None:
    with signed_in(server, "contributor") as client:
        page = client.get(f"{UI}/threads/{threads['done']}")
    assert page.status_code == 200
    crumbs = re.search(r'<p class="crumbs">(.*?)</p>', page.text).group(1)  # type: ignore[union-attr]
    assert 'href="/ps/ui/threads"' not in crumbs and 'href="/ps/ui/groups"' in crumbs


def test_the_api_answers_are_unchanged_for_lists(server: Server) -> None:
    """The console's own-threads rule opens nothing on the services."""
    with httpx.Client(base_url=server.url, auth=("reviewer", password("reviewer"))) as http:
        assert http.get(f"{SERVICE}/groups/dev/threads").status_code == 403
        assert http.get(f"{SERVICE}/threads").status_code == 403


@pytest.mark.parametrize(("user", "path", "status", "problem"), [
    ("contributor", "/groups/dev/start?job=nosuch", 400, "no job named"),
    ("contributor", "/groups/dev/start?job=purge", 400, "at server level only"),
    ("admin", "/start?job=validate", 400, "in groups only"),
])
def test_a_job_that_cannot_start_here_is_said_above_the_list_of_those_that_can(
    server: Server, user: str, path: str, status: int, problem: str,
) -> None:
    with signed_in(server, user) as client:
        answer = client.get(f"{UI}{path}")
    assert answer.status_code == status
    alert = re.search(r'<p class="alert" role="alert" id="job-error">([^<]*)</p>', answer.text)
    assert alert and problem in alert.group(1).replace("&#39;", "'")
    assert 'aria-label="Jobs"' in answer.text  # the jobs they may start are still offered


def test_a_start_page_refuses_a_member_who_starts_nothing(server: Server) -> None:
    with signed_in(server, "reviewer") as client:
        assert client.get(f"{UI}/groups/dev/start?job=sleep").status_code == 403


@pytest.mark.parametrize("number", ["-1", "x", "0", "9" * 20])
def test_a_bad_queue_page_is_said_on_the_queue(server: Server, number: str) -> None:
    with signed_in(server, "admin") as client:
        answer = client.get(f"{UI}/queue", params={"page": number})
    assert answer.status_code == 400
    assert '<p class="field-error" id="err-page">' in answer.text and "waiting" in answer.text
    with signed_in(server, "manager") as client:  # the refusal first
        assert client.get(f"{UI}/queue", params={"page": number}).status_code == 403


@pytest.mark.parametrize(("user", "typed", "status", "where"), [
    ("reviewer", "ab12cd34", 400, "begins several threads you may open"),
    ("reviewer", "ab12cd341", 303, f"{UI}/groups/dev/threads/ab12cd34{'1' * 24}"),
    ("reviewer", "cc12cd34", 303, f"{UI}/groups/dev/threads/cc12cd34{'0' * 24}"),  # one theirs
    ("othermgr", "cc12cd34", 303, f"{UI}/groups/other/threads/cc12cd34{'1' * 24}"),
    ("othermgr", "ab12cd34", 404, "No thread with this id"),
    ("admin", "cc12cd34", 400, "begins several threads you may open"),
])
def test_the_start_of_an_id_counts_only_threads_the_user_may_open(
    server: Server, user: str, typed: str, status: int, where: str,
) -> None:
    with signed_in(server, user) as client:
        answer = client.get(f"{UI}/find", params={"id": typed})
    assert answer.status_code == status
    if status == 303:
        assert answer.headers["location"] == where
    else:
        assert where in answer.text and f'value="{typed}"' in answer.text  # the form, kept
