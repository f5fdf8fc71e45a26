"""Waits that outlive their caller's right: a member removed, a role lowered, a user removed
or an administrator demoted while an event stream or a long-poll is open; and who is sent a
thread's log at all.

Each open stream or long-poll checks its caller again every `auth-cache-seconds` (1 s here)
and ends when the right is gone: a stream just ends (nothing more is sent, no result link is
signed), a long-poll answers what the same request would get at that moment (403 `0101` for a
role gone on a group route, 401 `0100` for a user gone, 404 `0203` on the server route for a
caller who is neither owner nor administrator). `log` events go only to callers who may read
the log (a contributor of the thread's group, or an administrator). On SQLite and PostgreSQL:
the re-check reads the store.

The threads here run for 6 s after the right is taken away, several times the 1 s bound, so
that an assertion of "nothing after" cannot be met merely by the thread being slow.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from tests import support
from tests.conftest import NewStore
from tests.hostile.payloads import check_error
from tests.support import Server, running_server, wait_for
from threadsvc import admin
from threadsvc.settings import load_settings

pytestmark = pytest.mark.slow

GROUP = "/ps/service/groups/dev"
SERVER = "/ps/service"
RUN = "6"  # seconds a thread runs: long beside the 1 s re-check


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, new_store: NewStore) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("revoked")
    settings = {"db": new_store(directory), "auth-cache-seconds": 1, "max-running": 64}
    for started, _ in running_server(directory, **settings):
        yield started


def on_store(server: Server, action: Callable[[admin.Admin], Awaitable[Any]]) -> Any:
    """Run `action` against the server's store, as the CLI would while it serves."""
    settings = load_settings(server.config, environ={})

    async def main() -> Any:
        async with admin.opened(settings) as opened:
            return await action(opened)

    return anyio.run(main)


def new_user(server: Server, role: str | None, is_admin: bool = False) -> tuple[str, str]:
    """A user of its own for one test (some are removed): name and API token."""
    name = f"u{secrets.token_hex(4)}"

    async def make(a: admin.Admin) -> str:
        await a.identity.add_user(name, f"{name}-pw", is_admin)
        if role is not None:
            await admin.add_member(a, "dev", name, role)
        return await a.identity.new_api_token(name)

    return name, on_store(server, make)


def delete_user(server: Server, name: str) -> None:
    """No command removes a user yet: the row goes (memberships and tokens with it). A user
    made first keeps the id from being handed out again (SQLite reuses the highest id of a
    deleted row), so that the next test's new user is not taken for this one."""
    new_user(server, None)
    url = load_settings(server.config, environ={}).db
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("DELETE FROM users WHERE username = ?", (name,))
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM users WHERE username = %s", (name,))


def remove_member(server: Server, name: str) -> None:
    on_store(server, lambda a: admin.remove_member(a, "dev", name))


def set_role(server: Server, name: str, role: str) -> None:
    on_store(server, lambda a: admin.add_member(a, "dev", name, role))


def demote(server: Server, name: str) -> None:
    on_store(server, lambda a: a.identity.set_user(name, f"{name}-pw", False))


def client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                        timeout=httpx.Timeout(30.0))


def start(server: Server, token: str, path: str = GROUP, **fields: str) -> str:
    with client(server, token) as http:
        return support.start(http, path, **{"seconds": RUN, "steps": RUN, "result": "secret",
                                            **fields})


class Stream:
    """An open event stream read in the background, event by event."""

    def __init__(self, server: Server, token: str, url: str) -> None:
        self.http = client(server, token)
        self.blocks: list[str] = []
        self.ended = threading.Event()
        self.error: BaseException | None = None
        self.ended_at = 0.0
        self._response = self.http.send(self.http.build_request("GET", url), stream=True)
        assert self._response.status_code == 200, self._response.read()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        block: list[str] = []
        try:
            for line in self._response.iter_lines():
                if line:
                    block.append(line)
                elif block:
                    self.blocks.append("\n".join(block))
                    block = []
        except httpx.HTTPError as exc:  # a read timeout: the server did not end the stream
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.ended.set()

    def events(self, kind: str) -> list[str]:
        return [b for b in self.blocks if f"event: {kind}" in b]

    def until(self, predicate: Callable[[Stream], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            assert time.monotonic() < deadline, self.blocks
            assert not self.ended.is_set() or predicate(self), self.blocks
            time.sleep(0.05)

    def finish(self, timeout: float = 30.0) -> list[str]:
        """Every event, once the server has ended the stream (fails if it does not)."""
        assert self.ended.wait(timeout), "the stream did not end"
        self._response.close()
        self.http.close()
        assert self.error is None, repr(self.error)
        return self.blocks


def refused(server: Server, token: str, url: str, status: int) -> httpx.Response:
    """The answer to a new request once it is `status`: a request may pass on what the server
    remembers of the caller for `auth-cache-seconds`, no longer."""
    deadline = time.monotonic() + 10
    with client(server, token) as http:
        while True:
            with http.stream("GET", url) as answer:
                if answer.status_code == status or time.monotonic() > deadline:
                    answer.read()
                    return answer
            time.sleep(0.1)


def signed(blocks: list[str]) -> bool:
    return any("<result " in b or "/results/" in b for b in blocks)


def final(blocks: list[str]) -> bool:
    return any(re.search(r'status="(completed|failed|cancelled)"', b) for b in blocks
               if "event: status" in b)


def still_running(server: Server, thread_id: str) -> None:
    """The thread had not ended when its stream or poll was cut: the cut was the check's."""
    with server.client("admin") as http:
        answer = http.get(f"{SERVER}/threads/{thread_id}/progress")
        assert answer.status_code == 200 and 'status="inprogress"' in answer.text, answer.text


# -- streams that must end ---------------------------------------------------------------
CUTS: dict[str, Callable[[Server, str], None]] = {
    "member-removed": remove_member,
    "user-removed": delete_user,
}


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_group_stream_ends_when_the_right_goes(server: Server, cut: str) -> None:
    name, token = new_user(server, "contributor")
    thread_id = start(server, token)
    stream = Stream(server, token, f"{GROUP}/threads/{thread_id}/events")
    stream.until(lambda s: bool(s.events("status")) and bool(s.events("log")))
    cut_at = time.monotonic()
    CUTS[cut](server, name)
    blocks = stream.finish()
    still_running(server, thread_id)
    assert not final(blocks) and not signed(blocks), blocks
    print(f"\nstream, {cut}: ended {stream.ended_at - cut_at:.2f} s after the cut")
    status, error_id = (403, "0101") if cut == "member-removed" else (401, "0100")
    again = refused(server, token, f"{GROUP}/threads/{thread_id}/events", status)
    check_error(again, status, error_id)  # the reconnect of an EventSource


def test_server_route_stream_of_a_removed_user_ends(server: Server) -> None:
    name, token = new_user(server, "contributor")
    thread_id = start(server, token)
    stream = Stream(server, token, f"{SERVER}/threads/{thread_id}/events")  # as its owner
    stream.until(lambda s: bool(s.events("status")))
    delete_user(server, name)
    blocks = stream.finish()
    still_running(server, thread_id)
    assert not final(blocks) and not signed(blocks), blocks


def test_demoted_administrator_loses_a_server_route_stream(server: Server) -> None:
    name, token = new_user(server, None, is_admin=True)
    _, owner = new_user(server, "contributor")
    thread_id = start(server, owner)
    stream = Stream(server, token, f"{SERVER}/threads/{thread_id}/events")  # not the owner
    stream.until(lambda s: bool(s.events("log")))
    demote(server, name)
    blocks = stream.finish()
    still_running(server, thread_id)
    assert not final(blocks) and not signed(blocks), blocks
    check_error(refused(server, token, f"{SERVER}/threads/{thread_id}/events", 404), 404, "0203")


def test_lowered_to_reviewer_the_stream_goes_on_without_the_log(server: Server) -> None:
    """A reviewer may follow the thread (and fetch its result), not read its log."""
    name, token = new_user(server, "contributor")
    thread_id = start(server, token, warn="5")
    stream = Stream(server, token, f"{GROUP}/threads/{thread_id}/events")
    stream.until(lambda s: bool(s.events("log")))
    set_role(server, name, "reviewer")
    blocks = stream.finish()
    assert final(blocks), blocks
    logs = [b for b in blocks if "event: log" in b]
    assert logs and not any('level="WARN"' in b or "Status: completed" in b for b in logs), logs


def test_owner_removed_from_the_group_keeps_the_server_route_but_not_the_log(
    server: Server,
) -> None:
    """On the server route the right is ownership, which membership does not change: the
    stream goes on (as a new request by the owner would be answered), without the log."""
    name, token = new_user(server, "contributor")
    thread_id = start(server, token, warn="5")
    stream = Stream(server, token, f"{SERVER}/threads/{thread_id}/events")
    stream.until(lambda s: bool(s.events("log")))
    remove_member(server, name)
    blocks = stream.finish()
    assert final(blocks), blocks
    logs = [b for b in blocks if "event: log" in b]
    assert logs and not any('level="WARN"' in b or "Status: completed" in b for b in logs), logs


# -- long-polls ----------------------------------------------------------------------------
def poll_while(server: Server, token: str, url: str, cut: Callable[[], None]) -> httpx.Response:
    """A long-poll (wait 30 s on an unchanged ETag) with `cut` done while it waits."""
    with client(server, token) as http:
        tag = wait_for(http, url, lambda r: 'current="0"' in r.text).headers["etag"]
    answers: list[httpx.Response] = []

    def poll() -> None:
        with client(server, token) as http:
            answers.append(http.get(url, params={"wait": "30"}, headers={"If-None-Match": tag}))

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)  # the poll is waiting (if not, the cut comes before it: the same answer)
    cut()
    poller.join(40)
    assert answers, "the long-poll did not answer"
    return answers[0]


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_group_long_poll_answers_what_the_request_would_now(server: Server, cut: str) -> None:
    name, token = new_user(server, "contributor")
    thread_id = start(server, token, steps="1")  # no change for 6 s, then done with a result
    url = f"{GROUP}/threads/{thread_id}/progress"
    answer = poll_while(server, token, url, lambda: CUTS[cut](server, name))
    print(f"\nlong-poll, {cut}: {answer.status_code}")
    check_error(answer, *((403, "0101") if cut == "member-removed" else (401, "0100")))
    still_running(server, thread_id)


def test_server_long_poll_of_a_demoted_administrator_is_not_found(server: Server) -> None:
    name, token = new_user(server, None, is_admin=True)
    _, owner = new_user(server, "contributor")
    thread_id = start(server, owner, steps="1")
    answer = poll_while(server, token, f"{SERVER}/threads/{thread_id}/progress",
                        lambda: demote(server, name))
    check_error(answer, 404, "0203")
    still_running(server, thread_id)


def test_long_poll_without_a_cut_answers_the_change(server: Server) -> None:
    """Control: the same poll by a reviewer, nobody removed, answers the change with 200."""
    _, token = new_user(server, "reviewer")
    _, starter = new_user(server, "contributor")
    thread_id = start(server, starter, steps="1", seconds="2")
    answer = poll_while(server, token, f"{GROUP}/threads/{thread_id}/progress", lambda: None)
    assert answer.status_code == 200 and 'current="1"' in answer.text, answer.text


# -- who reads the log ---------------------------------------------------------------------
def test_log_events_only_for_those_who_may_read_the_log(server: Server) -> None:
    """A reviewer gets `status` events only, even resuming with Last-Event-ID; a contributor,
    the owner through the server route (a contributor), and an administrator get the log."""
    _, starter = new_user(server, "contributor")
    _, reviewer = new_user(server, "reviewer")
    _, other_contributor = new_user(server, "contributor")
    _, an_admin = new_user(server, None, is_admin=True)
    thread_id = start(server, starter, seconds="1", steps="2", warn="1")
    seen = {
        "reviewer": Stream(server, reviewer, f"{GROUP}/threads/{thread_id}/events"),
        "contributor": Stream(server, other_contributor, f"{GROUP}/threads/{thread_id}/events"),
        "owner": Stream(server, starter, f"{SERVER}/threads/{thread_id}/events"),
        "admin": Stream(server, an_admin, f"{SERVER}/threads/{thread_id}/events"),
    }
    blocks = {who: stream.finish() for who, stream in seen.items()}
    for who, got in blocks.items():
        assert final(got), (who, got)
        logs = [b for b in got if "event: log" in b]
        if who == "reviewer":
            assert not logs and not any("<event " in b for b in got), got
        else:
            assert any('level="WARN"' in b for b in logs), (who, got)
    with client(server, reviewer) as http:  # resuming asks for nothing more
        resumed = http.get(f"{GROUP}/threads/{thread_id}/events",
                           headers={"Last-Event-ID": "0:0"}).text
        assert "event: status" in resumed and "event: log" not in resumed, resumed


def test_server_level_threads_log_goes_to_administrators(server: Server) -> None:
    _, an_admin = new_user(server, None, is_admin=True)
    with server.client("admin") as http:
        answer = http.post(f"{SERVER}/threads", data={"job": "sleep", "seconds": "0.5",
                                                      "warn": "1", "steps": "1"})
        assert answer.status_code == 202, answer.text
        thread_id = re.search(r'<thread id="([0-9a-f]{32})"', answer.text).group(1)  # type: ignore[union-attr]
    got = Stream(server, an_admin, f"{SERVER}/threads/{thread_id}/events").finish()
    assert final(got) and any('level="WARN"' in b for b in got if "event: log" in b), got
    _, member = new_user(server, "contributor")
    with client(server, member) as http:  # not theirs: not even its existence
        check_error(http.get(f"{SERVER}/threads/{thread_id}/events"), 404, "0203")
