"""The asynchronous-operation protocol (docs/api.md#lists, #results-and-links): results, pre-signed URLs, retention,
limits, idempotency, long-polls and Server-Sent Events, on a real server."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import NewStore
from tests.support import (
    Clock,
    InProcess,
    Server,
    running_server,
    start,
    status,
    wait_final,
    wait_for,
)
from tests.support import thread_id as id_of

GROUP = "/ps/service/groups/dev"


SHORT = {  # short lifetimes, so that expiry and retention can be watched
    "result-url-ttl": 2,
    "result-ttl": 4,
    "thread-ttl": 6,
    "purge-interval": 0.5,
    "max-active-per-user": 5,
    "max-active-per-group": 8,
    "max-streams-per-user": 2,
    "max-running": 64,
}


@pytest.fixture(scope="module")
def short(tmp_path_factory: pytest.TempPathFactory, new_store: NewStore) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("short")
    for server, _ in running_server(directory, db=new_store(directory), **SHORT):
        yield server


@pytest.fixture(scope="module")
def short_here(tmp_path_factory: pytest.TempPathFactory, new_store: NewStore) -> Iterator[Server]:
    """`short`, served in this process: its clock can be moved on (conftest's `clock`)."""
    directory = tmp_path_factory.mktemp("short-here")
    for server, _ in running_server(directory, kind=InProcess, db=new_store(directory), **SHORT):
        yield server


def finished(http: httpx.Client, tid: str) -> httpx.Response:
    return wait_final(http, tid, "/ps/service", timeout=10)


def test_result_follows_the_headers_to_the_file(server: Server) -> None:
    with server.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads",
                           data={"job": "sleep", "seconds": "0.3", "steps": "3", "result": "héllo"})
        location = answer.headers["location"]
        running = http.get(location)
        assert running.status_code == 202 and "retry-after" in running.headers
        finished(http, id_of(answer))
        task = http.get(location.removesuffix("/result"))
        assert task.status_code == 303 and task.headers["location"] == location
        redirect = http.get(location)
        assert redirect.status_code == 302
        href = redirect.headers["location"]
        assert "/ps/service/results/" in href
    # the pre-signed URL needs no credentials
    body = httpx.get(href)
    assert body.status_code == 200 and body.text == "héllo"
    assert body.headers["content-type"].startswith("text/plain")
    assert body.headers["content-length"] == str(len("héllo".encode()))
    assert 'filename="result.txt"' in body.headers["content-disposition"]
    part = httpx.get(href, headers={"Range": "bytes=1-2"})
    assert part.status_code == 206 and part.content == "héllo".encode()[1:3]
    tampered = httpx.get(href[:-3] + ("abc" if not href.endswith("abc") else "xyz"))
    assert tampered.status_code == 403 and 'id="0400"' in tampered.text


def test_result_element_and_following_with_httpx(server: Server) -> None:
    with server.client("contributor") as http:
        thread_id = start(http, seconds="0", steps="1", result="data")
        text = finished(http, thread_id).text
        found = re.search(r'<result href="([^"]+)" media-type="text/plain" size="4" '
                          r'expires="[^"]+" deletion="[^"]+"/>', text)
        assert found, text
        followed = http.get(f"/ps/service/threads/{thread_id}", follow_redirects=True)
        assert followed.status_code == 200 and followed.text == "data"


def test_result_answers_without_a_result(server: Server) -> None:
    with server.client("contributor") as http:
        done = start(http, seconds="0", steps="1")
        finished(http, done)
        assert http.get(f"{GROUP}/threads/{done}/result").status_code == 204
        assert http.get(f"{GROUP}/threads/{done}").status_code == 200  # no 303 without result
        failed = start(http, seconds="0", steps="1", fail="1")
        finished(http, failed)
        answer = http.get(f"{GROUP}/threads/{failed}/result")
        assert answer.status_code == 409 and 'id="0402"' in answer.text


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory, new_store: NewStore) -> Iterator[Server]:
    """Behind a proxy that clients reach at PUBLIC."""
    directory = tmp_path_factory.mktemp("public")
    for server, _ in running_server(directory, db=new_store(directory), **{"public-url": PUBLIC}):
        yield server


PUBLIC = "https://threads.example.org/"


def test_result_links_are_on_public_url_whatever_the_host_header(public: Server,
                                                                 server: Server) -> None:
    forged = {"Host": "evil.example.net"}
    with public.client("contributor") as http:
        thread_id = start(http, seconds="0", steps="1", result="x")
        finished(http, thread_id)
        for headers in ({}, forged):
            href = http.get(f"{GROUP}/threads/{thread_id}/result", headers=headers).headers["location"]
            assert href.startswith("https://threads.example.org/ps/service/results/"), href
            listed = http.get(f"{GROUP}/threads", params={"status": "all"}, headers=headers).text
            assert '<result href="https://threads.example.org/ps/service/results/' in listed
        # the proxy passes the path on: the link works
        assert httpx.get(public.url + href.removeprefix(PUBLIC.rstrip("/"))).text == "x"
    with server.client("contributor") as http:  # without public-url, the request's own host
        thread_id = start(http, seconds="0", steps="1", result="x")
        finished(http, thread_id)
        href = http.get(f"{GROUP}/threads/{thread_id}/result", headers=forged).headers["location"]
        assert href.startswith("http://evil.example.net/ps/service/results/"), href


def test_presigned_url_expires(short_here: Server, clock: Clock) -> None:
    with short_here.client("contributor") as http:
        thread_id = start(http, seconds="0", steps="1", result="x")
        finished(http, thread_id)
        href = http.get(f"{GROUP}/threads/{thread_id}/result").headers["location"]
    with short_here.client() as anonymous:
        assert anonymous.get(href).status_code == 200
        clock.advance(3.2)
        expired = anonymous.get(href)
    assert expired.status_code == 403 and 'id="0400"' in expired.text


@pytest.mark.slow  # waits on real time
def test_retention_deletes_results_then_threads(short_here: Server, clock: Clock) -> None:
    with short_here.client("contributor") as http:
        thread_id = start(http, seconds="0", steps="1", result="x")
        finished(http, thread_id)
        listed = http.get(f"{GROUP}/threads", params={"status": "all", "deletion-before": "9999999999999"})
        assert thread_id in listed.text
        clock.advance(4.2)
        gone = http.get(f"{GROUP}/threads/{thread_id}/result")
        assert gone.status_code == 410 and 'id="0401"' in gone.text
        assert http.get(f"{GROUP}/threads/{thread_id}").status_code == 200  # no 303 any more
        wait_for(http, f"{GROUP}/threads/{thread_id}", lambda r: r.status_code == 404, timeout=10)
    with short_here.client("admin") as http:
        purges = http.get("/ps/service/threads", params={"status": "all", "type": "purge"}).text
        assert 'username="system"' in purges and 'type="purge"' in purges


def test_limit_holds_under_concurrent_starts(short: Server) -> None:
    with short.client("approver") as http:
        def one(_: int) -> int:
            return http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "30"}).status_code

        with ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(one, range(50)))
        assert codes.count(202) == 5 and codes.count(429) == 45
        refused = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "30"})
        assert refused.status_code == 429 and 'id="0300"' in refused.text
        assert int(refused.headers["retry-after"]) >= 1
        listed = http.get(f"{GROUP}/threads", params={"username": "approver"})
        assert 'total="5"' in listed.text
        for thread_id in re.findall(r'<thread id="([0-9a-f]{32})"', listed.text):
            http.post(f"{GROUP}/threads/{thread_id}/cancel")


def test_idempotent_repeat_starts_nothing(server: Server) -> None:
    with server.client("manager") as http:
        headers = {"Idempotency-Key": "order-42"}
        first = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"}, headers=headers)
        again = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"}, headers=headers)
        assert first.status_code == again.status_code == 202
        assert id_of(first) == id_of(again)
        other = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"},
                          headers={"Idempotency-Key": "order-43"})
        assert id_of(other) != id_of(first)
        bad = http.post(f"{GROUP}/threads", data={"job": "sleep"},
                        headers={"Idempotency-Key": "x" * 300})
        assert bad.status_code == 400 and "Idempotency-Key" in bad.text
    with server.client("contributor") as http:  # another user's key is another key
        theirs = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"}, headers=headers)
        assert id_of(theirs) != id_of(first)


@pytest.mark.slow  # waits on real time
def test_etag_and_long_poll(server: Server) -> None:
    with server.client("contributor") as http:
        thread_id = start(http, seconds="3", steps="1")
        url = f"/ps/service/threads/{thread_id}/progress"
        current = wait_for(http, url, lambda r: 'current="0"' in r.text)  # stable for 3 s
        tag = current.headers["etag"]
        assert http.get(url, headers={"If-None-Match": tag}).status_code == 304
        began = time.monotonic()
        timed_out = http.get(url, params={"wait": "1"}, headers={"If-None-Match": tag})
        assert timed_out.status_code == 304 and time.monotonic() - began >= 0.9
        changed = http.get(url, headers={"If-None-Match": tag, "Prefer": "wait=10"})
        assert changed.status_code == 200 and 'current="1"' in changed.text
        assert changed.headers["etag"] != tag
        bad = http.get(url, params={"wait": "61"})
        assert bad.status_code == 400 and 'id="0201"' in bad.text


def test_long_poll_wakes_on_cancel(server: Server) -> None:
    with server.client("contributor") as http:
        thread_id = start(http, seconds="60", steps="1")
        url = f"/ps/service/threads/{thread_id}/progress"
        tag = wait_for(http, url, lambda r: 'current="0"' in r.text).headers["etag"]
        woke: list[float] = []

        def poll() -> None:
            with server.client("contributor") as other:
                answer = other.get(url, params={"wait": "30"}, headers={"If-None-Match": tag})
                woke.append(time.monotonic())
                assert status(answer.text) == "cancelled"

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)
        sent = time.monotonic()
        http.post(f"{GROUP}/threads/{thread_id}/cancel")
        poller.join(10)
        assert woke and woke[0] - sent < 1.5


def test_event_stream(server: Server) -> None:
    with server.client("contributor") as http:
        thread_id = start(http, seconds="1", steps="4", warn="2")
        with http.stream("GET", f"{GROUP}/threads/{thread_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            body = "".join(stream.iter_text())
    blocks = [b for b in body.split("\n\n") if b.strip() and not b.startswith(":")]
    kinds = [re.search(r"^event: (\w+)$", b, re.MULTILINE).group(1) for b in blocks]  # type: ignore[union-attr]
    assert kinds[-1] == "status" and 'status="completed"' in blocks[-1]
    logs = [b for b in blocks if "event: log" in b]
    seqs = [int(re.search(r'seq="(\d+)"', b).group(1)) for b in logs]  # type: ignore[union-attr]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 5
    assert any('level="WARN"' in b for b in logs)
    ids = [re.search(r"^id: (\d+):(\d+)$", b, re.MULTILINE) for b in blocks]
    assert all(ids)
    # resume after the third log event: only later events come again
    third = re.search(r"^id: (\S+)$", logs[2], re.MULTILINE).group(1)  # type: ignore[union-attr]
    with server.client("contributor") as http:
        resumed = http.get(f"{GROUP}/threads/{thread_id}/events", headers={"Last-Event-ID": third}).text
    again = [int(s) for s in re.findall(r'<event seq="(\d+)"', resumed)]
    assert again == seqs[3:]


def test_open_event_streams_are_limited_per_user(short: Server) -> None:
    with short.client("reviewer") as http, short.client("manager") as other:
        thread_id = start(other, seconds="30", steps="1")
        url = f"{GROUP}/threads/{thread_id}/events"
        with http.stream("GET", url) as first, http.stream("GET", url) as second:
            assert first.status_code == second.status_code == 200
            refused = http.get(url)
            assert refused.status_code == 429 and 'id="0302"' in refused.text
            assert "retry-after" in refused.headers
            with other.stream("GET", url) as theirs:  # another user's quota is their own
                assert theirs.status_code == 200
        # both closed: the quota is free again (once the server has seen them go)
        deadline = time.monotonic() + 10
        while True:
            with http.stream("GET", url) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "closed streams were not given back"
            time.sleep(0.2)
        other.post(f"{GROUP}/threads/{thread_id}/cancel")


@pytest.mark.slow  # waits on real time
def test_long_polls_count_against_the_stream_quota(short: Server) -> None:
    """Open streams and long-polls share `max-streams-per-user` (2 here): one user cannot hold
    every connection with long-polls either."""
    with short.client("reviewer") as http, short.client("manager") as other:
        thread_id = start(other, seconds="30", steps="1")
        progress = f"{GROUP}/threads/{thread_id}/progress"
        tag = wait_for(http, progress, lambda r: 'current="0"' in r.text).headers["etag"]
        answers: list[int] = []

        def long_poll() -> None:
            with short.client("reviewer") as mine:
                answers.append(mine.get(progress, params={"wait": "5"},
                                        headers={"If-None-Match": tag}).status_code)

        with http.stream("GET", f"{GROUP}/threads/{thread_id}/events") as stream:
            assert stream.status_code == 200
            poller = threading.Thread(target=long_poll)
            poller.start()
            # once the poll holds the 2nd slot, another (a wait of 0 holds one only briefly)
            refused = wait_for(http, progress + "?wait=0", lambda r: r.status_code == 429)
            assert 'id="0302"' in refused.text and refused.headers["retry-after"]
            assert "long-polls" in refused.text
            poller.join(20)
        assert answers == [304]
        # both given back: a long-poll waits again (304 after its wait, not 429)
        assert wait_for(http, progress + "?wait=1", lambda r: r.status_code != 429).status_code == 304
        other.post(f"{GROUP}/threads/{thread_id}/cancel")


def test_health_says_ok_and_nothing_else(server: Server) -> None:
    """Liveness tells anonymous callers nothing about the host, the process or its work;
    /ready answers whether the store does."""
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.text == "ok\n"
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 200 and ready.text == "ready\n"
