"""Reading a thread's log in the console (web/console/logview.py, templates/log.html): the level
filter, the search, pages, a link to one event, the jumps to warnings and errors, following
live and pausing, the downloads; each as a contributor (who may read the log) and a reviewer
(who may not, and is offered none of it). Over plain HTTP first, then in Chromium."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.console.conftest import UI, Browsing, sign_in
from tests.console.test_session import signed_in
from tests.support import Server, running_server, sitecustomize, start, wait_for

pytestmark = [pytest.mark.slow]
browser = pytest.mark.browser

EVENTS = 1000
# A job whose log is known: event i (1..events) says `step i of N`, with ` needle` when i is a
# multiple of 100; WARN when i is a multiple of 300, ERROR at 750, DEBUG when even, else INFO.
JOBS = textwrap.dedent('''
    import asyncio
    from threadsvc.models import Level, Role, Scope
    from threadsvc.runner.params import Integer, Number
    from threadsvc.runner.registry import job

    @job("chatter", scope=Scope.BOTH, role=Role.CONTRIBUTOR, title="Chatter",
         params={"events": Integer(minimum=1, maximum=100_000, default=1000),
                 "pause": Number(minimum=0, maximum=10, default=0)})
    async def chatter(ctx):
        total, pause = ctx.params["events"], ctx.params["pause"]
        for i in range(1, total + 1):
            level = Level.DEBUG if i % 2 == 0 else Level.INFO
            if i % 300 == 0:
                level = Level.WARN
            if i == 750:
                level = Level.ERROR
            await ctx.log(f"step {i} of {total}" + (" needle" if i % 100 == 0 else ""), level)
            if pause:
                await asyncio.sleep(pause)
''')


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("console-logs")
    (directory / "chatterjob.py").write_text(JOBS)
    with sitecustomize(directory, ""):
        yield from running_server(directory, jobs=["chatterjob"], **{"max-running": 8})


def chatter(server: Server, **params: Any) -> str:
    with server.client("contributor") as http:
        return start(http, "/ps/service/groups/dev", job="chatter", **params)


def api_events(server: Server, thread_id: str) -> list[dict[str, Any]]:
    """The whole log through the logs service, as JSON."""
    found: list[dict[str, Any]] = []
    since = 0
    with server.client("contributor") as http:
        while True:
            page = http.get(f"/ps/service/groups/dev/threads/{thread_id}/logs",
                            params={"since": since, "limit": 10000},
                            headers={"Accept": "application/json"}).json()
            found += page["logs"]
            if not page["more"]:
                return found
            since = page["next"]


@pytest.fixture(scope="module")
def logged(server: Server) -> dict[str, Any]:
    """A finished chatter thread of EVENTS events, and its whole log as the service gives it."""
    thread_id = chatter(server, events=EVENTS)
    with server.client("contributor") as http:
        wait_for(http, f"/ps/service/groups/dev/threads/{thread_id}/progress",
                 lambda r: 'status="completed"' in r.text, timeout=60)
    events = api_events(server, thread_id)
    return {"id": thread_id, "events": events, "href": f"{UI}/groups/dev/threads/{thread_id}",
            "seq": {e["text"]: e["seq"] for e in events}}


def seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<li id="e-\d+" class="[^"]*" data-seq="(\d+)"', html)]


def link(html: str, text: str) -> str | None:
    found = re.search(r'<a [^>]*href="([^"]+)"[^>]*>' + re.escape(text), html)
    return found.group(1).replace("&amp;", "&") if found else None


def get(client: httpx.Client, url: str, **query: Any) -> httpx.Response:
    response = client.get(url, params=query or None)
    assert response.status_code == 200, response.text[:2000]
    return response


# -- over HTTP --------------------------------------------------------------------------------
def test_the_page_shows_the_tail_with_its_controls(server: Server, logged: dict[str, Any]) -> None:
    total = len(logged["events"])
    with signed_in(server, "contributor") as client:
        html = get(client, logged["href"]).text
    assert seqs(html) == list(range(total - 199, total + 1))
    assert 'role="search"' in html and 'name="q"' in html and 'name="level"' in html
    for target in ("/log.txt", "/log.json", "/log/problem"):
        assert f'{logged["href"]}{target}"' in html
    earlier = link(html, "← Earlier")
    assert earlier == f'{logged["href"]}?since={total - 400}'
    assert f'href="{logged["href"]}?at={total}#e-{total}"' in html  # each event's own link


def test_a_reviewer_gets_no_log_nor_any_way_to_it(server: Server, logged: dict[str, Any]) -> None:
    with signed_in(server, "reviewer") as client:
        for query in ({}, {"q": "needle"}, {"level": "warn"}, {"at": "5"}, {"level": "bogus"}):
            html = get(client, logged["href"], **query).text
            assert "Your role does not let you read this thread's log" in html
            assert seqs(html) == [] and 'name="q"' not in html
            assert "/log.txt" not in html and "/log.json" not in html and "/log/problem" not in html
        for target in ("/log.txt", "/log.json", "/log/problem"):
            assert client.get(logged["href"] + target).status_code == 403


def test_the_level_filter(server: Server, logged: dict[str, Any]) -> None:
    warned = [e["seq"] for e in logged["events"] if e["level"] in ("WARN", "ERROR")]
    errors = [e["seq"] for e in logged["events"] if e["level"] == "ERROR"]
    with signed_in(server, "contributor") as client:
        html = get(client, logged["href"], level="warn").text
        assert seqs(html) == warned and '<option value="warn" selected>' in html
        assert seqs(get(client, logged["href"], level="ERROR").text) == errors
        assert link(html, "Clear") == logged["href"]


def test_the_search_is_paged_and_keeps_the_level(server: Server, logged: dict[str, Any]) -> None:
    needles = [e["seq"] for e in logged["events"] if "needle" in e["text"]]
    steps = [e["seq"] for e in logged["events"] if "step" in e["text"].lower()]
    with signed_in(server, "contributor") as client:
        html = get(client, logged["href"], q="NEEDLE").text
        assert seqs(html) == needles and "More matches" not in html
        assert 'value="NEEDLE"' in html
        assert html.count("<mark>needle</mark>") == len(needles)  # what was found is marked
        assert "<mark>" not in get(client, logged["href"], level="warn").text
        warned = get(client, logged["href"], q="needle", level="warn").text
        assert seqs(warned) == [s for s in needles
                                if logged["events"][s - 1]["level"] in ("WARN", "ERROR")]
        pages: list[int] = []
        url: str | None = f'{logged["href"]}?q=Step'
        while url:
            page = get(client, url).text
            pages += seqs(page)
            url = link(page, "More matches →")
            if url:
                assert parse_qs(urlsplit(url).query)["q"] == ["Step"]
        assert pages == steps
        nothing = get(client, logged["href"], q="no such words").text
        assert seqs(nothing) == [] and "No event" in nothing


def test_bad_input_is_said_beside_the_form(server: Server, logged: dict[str, Any]) -> None:
    total = len(logged["events"])
    with signed_in(server, "contributor") as client:
        long = "x" * 201
        for query, said in (
            ({"level": "loud"}, "Level: must be DEBUG, INFO, WARN or ERROR"),
            ({"q": long}, "Search: may hold at most 200 characters"),
            ({"q": "a\x01b"}, "Search: may not hold control characters"),
            ({"at": "soon"}, "Event: must be a whole number"),
            ({"since": "-3"}, "Page: must be a whole number"),
            ({"at": str(total + 50)}, f"Event: there is no event {total + 50}; the log has {total}"),
        ):
            html = get(client, logged["href"], **query).text
            assert 'role="alert" id="log-error"' in html and said in html, (query, said)
            assert seqs(html)[-1] == total  # the tail instead
        html = get(client, logged["href"], q=long).text
        assert f'value="{long}"' in html  # what was typed is kept
        escaped = get(client, logged["href"], q="<script>alert(1)</script>").text
        assert "<script>alert(1)" not in escaped and "&lt;script&gt;alert(1)" in escaped


def test_a_link_to_one_event_opens_the_window_around_it(
    server: Server, logged: dict[str, Any]
) -> None:
    far = logged["seq"]["step 401 of 1000"]  # far back: not among the last 200
    with signed_in(server, "contributor") as client:
        html = get(client, logged["href"], at=far).text
    assert seqs(html) == list(range(far - 100, far + 100))
    assert f'<li id="e-{far}" class="l-INFO target" data-seq="{far}" aria-current="true">' in html
    assert html.count('aria-current="true"') == 1
    assert link(html, "← Earlier") == f'{logged["href"]}?since={far - 301}'
    assert link(html, "Later →") == f'{logged["href"]}?since={far + 99}'
    assert link(html, "Latest") == logged["href"]


def test_jumps_to_the_first_and_next_warning_or_error(
    server: Server, logged: dict[str, Any]
) -> None:
    problems = [e["seq"] for e in logged["events"] if e["level"] in ("WARN", "ERROR")]
    assert len(problems) == 4
    base = logged["href"]
    with signed_in(server, "contributor") as client:
        response = client.get(f"{base}/log/problem")
        assert response.status_code == 303
        assert response.headers["location"] == f"{base}?at={problems[0]}#e-{problems[0]}"
        visited = [problems[0]]
        html = get(client, response.headers["location"]).text
        while (following := link(html, "Next warning or error")) is not None:
            response = client.get(following)
            assert response.status_code == 303
            where = response.headers["location"]
            if "notice=no-problem" in where:
                break
            visited.append(int(parse_qs(urlsplit(where).query)["at"][0]))
            html = get(client, where).text
        assert visited == problems
        html = get(client, where).text
        assert "No warning or error follows in the log." in html
        assert 'class="l-WARN target"' in html  # still at the last one


def test_the_downloads_hold_the_whole_log(server: Server, logged: dict[str, Any]) -> None:
    with signed_in(server, "contributor") as client:
        response = get(client, f'{logged["href"]}/log.json')
        assert response.headers["content-type"].startswith("application/json")
        assert "attachment" in response.headers["content-disposition"]
        data = json.loads(response.content)
        assert data == {"thread": logged["id"], "logs": logged["events"],
                        "total": len(logged["events"])}
        text = get(client, f'{logged["href"]}/log.txt').text.splitlines()
        assert len(text) == len(logged["events"])
        assert text[-1].endswith(logged["events"][-1]["text"])


# -- in Chromium ------------------------------------------------------------------------------
def in_view(page: Any, selector: str) -> bool:
    """Whether the element is inside the log's scrolled box (not scrolled out of it)."""
    return bool(page.evaluate(
        """s => { const el = document.querySelector(s), box = document.querySelector('#log');
                  const a = el.getBoundingClientRect(), b = box.getBoundingClientRect();
                  return a.top >= b.top - 1 && a.bottom <= b.bottom + 1; }""", selector))


def shown(page: Any) -> list[int]:
    return [int(s) for s in page.locator("#log li").evaluate_all(
        "els => els.map(e => e.dataset.seq)")]


@browser
def test_filter_search_and_page_from_the_form(
    browsing: Browsing, server: Server, logged: dict[str, Any]
) -> None:
    page = browsing.signed_in("contributor")
    page.goto(logged["href"])
    browsing.shot(page, "tail")
    form = page.get_by_role("search", name="Filter the log")
    form.get_by_label("Level").select_option("warn")
    form.get_by_role("button", name="Show").click()
    assert shown(page) == [e["seq"] for e in logged["events"] if e["level"] in ("WARN", "ERROR")]
    assert page.locator("#log li.l-ERROR").count() == 1
    browsing.shot(page, "warnings")
    form.get_by_label("Level").select_option("debug")
    form.get_by_label("Search the text").fill("needle")
    form.get_by_role("button", name="Show").click()
    assert shown(page) == [e["seq"] for e in logged["events"] if "needle" in e["text"]]
    assert "holding “needle”" in page.locator("#log-where").inner_text()
    browsing.shot(page, "search")
    form.get_by_label("Search the text").fill("step")
    form.get_by_role("button", name="Show").click()
    first = shown(page)
    assert len(first) == 200
    page.get_by_role("link", name="More matches →").click()
    assert shown(page)[0] > first[-1]
    page.get_by_role("link", name="Clear").click()
    assert shown(page)[-1] == len(logged["events"])  # the tail again
    page.get_by_role("link", name="← Earlier").click()
    assert shown(page)[-1] == len(logged["events"]) - 200


@browser
def test_a_link_to_an_event_far_back_and_the_jumps(
    browsing: Browsing, server: Server, logged: dict[str, Any]
) -> None:
    far = logged["seq"]["step 401 of 1000"]
    page = browsing.signed_in("contributor")
    page.goto(f'{logged["href"]}?at={far}#e-{far}')
    target = page.locator("#log li.target")
    assert target.get_attribute("data-seq") == str(far)
    assert in_view(page, "#log li.target")
    assert target.evaluate("el => getComputedStyle(el).outlineStyle") == "solid"
    browsing.shot(page, "event")
    # its number is its link
    page.locator(f"#e-{far + 5} a.seq").click()
    page.wait_for_url(re.compile(rf".*\?at={far + 5}#e-{far + 5}$"))
    assert page.locator("#log li.target").get_attribute("data-seq") == str(far + 5)
    problems = [e["seq"] for e in logged["events"] if e["level"] in ("WARN", "ERROR")]
    page.get_by_role("link", name="First warning or error").click()
    page.wait_for_url(re.compile(rf".*\?at={problems[0]}#e-{problems[0]}$"))
    for seq in problems[1:]:
        page.get_by_role("link", name="Next warning or error").click()
        page.wait_for_url(re.compile(rf".*\?at={seq}#e-{seq}$"))
        assert in_view(page, "#log li.target")
    assert page.locator("#log li.target.l-ERROR, #log li.target.l-WARN").count() == 1
    page.get_by_role("link", name="Next warning or error").click()
    assert page.get_by_role("status").first.inner_text() == "No warning or error follows in the log."
    browsing.shot(page, "last-problem")


@browser
def test_follow_live_and_pause(browsing: Browsing, server: Server) -> None:
    thread_id = chatter(server, events=400, pause=0.05)
    page = browsing.signed_in("contributor")
    page.goto(f"{UI}/groups/dev/threads/{thread_id}")
    page.wait_for_selector(".live.on")
    page.wait_for_function("() => document.querySelectorAll('#log li').length > 10")
    button = page.locator("#log-follow")
    assert button.inner_text() == "Pause"
    button.click()
    held = page.locator("#log li").count()
    page.wait_for_function("() => /^Follow \\(([1-9]\\d*) new\\)$/.test("
                           "document.querySelector('#log-follow').textContent)")
    assert page.locator("#log li").count() == held  # paused: nothing added meanwhile
    browsing.shot(page, "paused")
    button.click()
    assert button.inner_text() == "Pause"
    after = shown(page)
    assert len(after) > held and after == sorted(set(after))  # the held ones, in order, once
    assert after == list(range(after[0], after[-1] + 1))
    browsing.shot(page)
    # a page of the log stays as loaded while the tail moves on
    fixed = browsing.page()
    sign_in(fixed, "contributor")
    fixed.goto(f"{UI}/groups/dev/threads/{thread_id}?since=0")
    fixed.wait_for_selector(".live.on")
    loaded = shown(fixed)
    assert fixed.locator("#log-follow").count() == 0  # nothing to pause
    mark = shown(page)[-1]
    page.wait_for_function(f"() => +document.querySelector('#log li:last-child').dataset.seq > {mark + 10}")
    assert shown(fixed) == loaded
    browsing.shot(fixed, "page")
    with server.client("contributor") as http:
        http.post(f"/ps/service/groups/dev/threads/{thread_id}/cancel")


@browser
def test_without_javascript_the_forms_and_links_work(
    browsing: Browsing, server: Server, logged: dict[str, Any]
) -> None:
    page = browsing.page(java_script_enabled=False)
    sign_in(page, "contributor")
    page.goto(logged["href"])
    assert page.locator("#log-follow").count() == 0 or page.locator("#log-follow").is_hidden()
    page.get_by_label("Search the text").fill("NEEDLE")
    page.get_by_role("button", name="Show").click()
    assert len(shown(page)) == 10
    page.get_by_role("link", name="First warning or error").click()
    assert page.locator("#log li.target").count() == 1
    browsing.shot(page)


@browser
def test_on_a_phone_the_log_fits(
    browsing: Browsing, server: Server, logged: dict[str, Any]
) -> None:
    page = browsing.signed_in("contributor", viewport={"width": 375, "height": 812},
                              is_mobile=True, has_touch=True)
    page.goto(f'{logged["href"]}?level=warn&q=needle')
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert len(shown(page)) == 3
    browsing.shot(page, "search")
    far = logged["seq"]["step 401 of 1000"]
    page.goto(f'{logged["href"]}?at={far}#e-{far}')
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    browsing.shot(page)


@browser
def test_a_reviewer_sees_no_log_controls(
    browsing: Browsing, server: Server, logged: dict[str, Any]
) -> None:
    page = browsing.signed_in("reviewer")
    page.goto(logged["href"])
    assert page.get_by_text("Your role does not let you read this thread's log").count() == 1
    assert page.get_by_role("search").count() == 0
    assert page.locator("#log, #log-follow").count() == 0
    for name in ("text", "JSON", "First warning or error"):
        assert page.get_by_role("link", name=name, exact=True).count() == 0
    browsing.shot(page)


def test_on_the_server_routes_administrators_only(server: Server, logged: dict[str, Any]) -> None:
    """Under /ps/ui/threads/{id} the log is the administrators' (as GET /threads/{id}/logs):
    the owner may open the thread there, but gets no log."""
    here = f'{UI}/threads/{logged["id"]}'
    needles = [e["seq"] for e in logged["events"] if "needle" in e["text"]]
    with signed_in(server, "admin") as client:
        html = get(client, here, q="needle").text
        assert seqs(html) == needles and f'href="{here}/log.json"' in html
        jump = client.get(f"{here}/log/problem", params={"after": needles[0]})
        assert jump.status_code == 303 and jump.headers["location"].startswith(f"{here}?at=")
    with signed_in(server, "contributor") as client:
        html = get(client, here).text
        assert "Your role does not let you read this thread's log" in html
        assert seqs(html) == [] and "/log.json" not in html
        assert client.get(f"{here}/log.json").status_code == 403
