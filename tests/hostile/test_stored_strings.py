"""Any string in the store, in any field a document shows, leaves every answer a valid document.

Reported: `user add` accepted `ctl\\x01user`; a thread of theirs made every list showing it
answer 500 (lxml refuses control characters) for the 30 days the thread was kept. Usernames
are now checked when made, but the store can still hold anything: rows from before a rule,
from another version, written by hand. Here the strings are written straight into the store
(SQL on the SQLite file or the PostgreSQL database, bypassing every check) while the server
is stopped, into a thread's username, name, job type, message, result name and media type,
its log events, a webhook's URL, and a group's name; then every answer that shows
them must be a 200 with a document valid against the published XSDs: progress, the group's
and the server's lists (XML and JSON), logs (XML, JSON and text, the text one line an event),
the event stream, cancel, the console's pages, and what `threadsvc threads` prints to an
operator's terminal (no control character, so no escape sequence, and one line a thread).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.conftest import NewStore
from tests.hostile.payloads import GROUP, check_error
from tests.support import Server, password, running_server, wait_final
from threadsvc.xml.schemas import validate

pytestmark = pytest.mark.slow

XML_TYPE = "application/xml;charset=utf-8"
NASTY = [
    "ctl\x01user",  # the report
    "\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x1a\x1b[31mred\x1f",
    "cr\rlf\ncrlf\r\nvt\x0bff\x0cfs\x1cgs\x1drs\x1enel\x85ls\u2028ps\u2029end",
    "\ufffe\uffff",
    "del\x7f c1\x80\x9f",
    "<&>\"' ]]> &amp; <!-- -->",
    "",
    "𝒳🙂 \u200b\u202e rtl",
    "x" * 70_000,
]
NUL = "nul\x00byte"  # SQLite holds a NUL in text; PostgreSQL refuses one
UI = "/ps/ui"


class Store:
    """SQL straight on the server's store (the server stopped)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def run(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite:///"):
            with sqlite3.connect(self.url[len("sqlite:///"):]) as conn:
                return conn.execute(sql.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite:")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory,
          new_store: NewStore) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("stored")
    yield from running_server(directory, db=new_store(directory),
                              **{"max-running": 16, "webhook-allow-private": True})


@pytest.fixture(scope="module")
def planted(world: tuple[Server, dict[str, str]]) -> dict[str, str]:
    """Threads of group dev, each with one nasty string in every field: string → thread id."""
    server = world[0]
    store = Store(_db_url(server))
    strings = NASTY + ([NUL] if store.sqlite else [])
    ids: dict[str, str] = {}
    with server.client("contributor") as http:
        for text in strings:
            answer = http.post(f"{GROUP}/threads",
                               data={"job": "sleep", "seconds": "0", "result": "r"})
            assert answer.status_code == 202, answer.text
            ids[text] = answer.text.split('id="', 1)[1][:32]
        for tid in ids.values():
            wait_final(http, tid)
        hook = http.post(f"{GROUP}/webhooks", auth=("manager", password("manager")),
                         data={"url": "http://127.0.0.1:9/hook", "secret": "a-webhook-secret"})
        assert hook.status_code == 201, hook.text
    server.stop()
    for text, tid in ids.items():
        store.run("UPDATE threads SET username = %s, name = %s, job = %s, message = %s, "
                  "result_name = %s, result_type = %s, version = version + 1 WHERE id = %s",
                  text, text, text, text or None, text, text, tid)
        (last,) = store.run("SELECT max(seq) FROM log_events WHERE thread_id = %s", tid)[0]
        for level in (20, 40):
            last += 1
            store.run("INSERT INTO log_events (thread_id, seq, ts, level, text) "
                      "VALUES (%s, %s, %s, %s, %s)", tid, last, 1_800_000_000_000, level, text)
    store.run("UPDATE webhooks SET url = %s", "http://127.0.0.1:9/\x01\r\n\x85")
    store.run("INSERT INTO groups (id, name) VALUES (%s, %s)", 250, "grp\x01\r\n<x>")
    store.run("INSERT INTO memberships (group_id, user_id, role) SELECT 250, id, 2 FROM users "
              "WHERE username = 'contributor'")
    server.start()
    return ids


def _db_url(server: Server) -> str:
    found = re.search(r'^db = "(.*)"$', server.config.read_text(), re.MULTILINE)
    assert found
    return found.group(1)


def valid_xml(response: httpx.Response) -> Any:
    """A 200 with a document valid against its XSD; never a 500."""
    assert response.status_code == 200, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == XML_TYPE
    validate(response.content)
    return etree.fromstring(response.content)


def valid_json(response: httpx.Response) -> Any:
    assert response.status_code == 200, (response.status_code, response.text[:300])
    return json.loads(response.content)


def shown(text: str) -> str:
    """What a document shows for `text`: U+FFFD for what XML cannot hold."""
    return re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", "\ufffd", text)


# -- the services -----------------------------------------------------------------------------
def test_progress_and_task_resource(server: Server, planted: dict[str, str]) -> None:
    with server.client("contributor") as http:
        for text, tid in planted.items():
            for path in (f"{GROUP}/threads/{tid}/progress", f"{GROUP}/threads/{tid}"):
                answer = http.get(path, follow_redirects=False)
                if answer.status_code == 303:  # completed with a result: the task resource
                    continue
                thread = valid_xml(answer)
                assert thread.get("username") == (shown(text) or "\ufffd"), repr(text[:40])
                assert thread.get("type") == (shown(text) or "\ufffd")
                result = thread.find("result")
                assert result is not None and result.get("media-type") == (shown(text) or "\ufffd")
                if text:
                    assert thread.findtext("message") == shown(text)
            valid_json(http.get(f"{GROUP}/threads/{tid}/progress",
                                headers={"Accept": "application/json"}))
        for tid in planted.values():
            cancelled = http.post(f"{GROUP}/threads/{tid}/cancel")
            valid_xml(cancelled)


@pytest.mark.parametrize("user", ["contributor", "admin"])
def test_lists(server: Server, planted: dict[str, str], user: str) -> None:
    with server.client(user) as http:
        paths = [f"{GROUP}/threads", "/ps/api/groups/dev/threads.xml"]
        if user == "admin":
            paths.append("/ps/service/threads")
        for path in paths:
            threads = valid_xml(http.get(path, params={"status": "all", "pagesize": 1000}))
            ids = {thread.get("id") for thread in threads}
            assert set(planted.values()) <= ids
            if path.endswith(".xml"):
                path = path.replace(".xml", ".json")
            data = valid_json(http.get(path, params={"status": "all", "pagesize": 1000},
                                       headers={"Accept": "application/json"}))
            assert len(data["threads"]) == len(threads)
        for text in planted:  # the username filter with the stored string itself
            if "\x00" in text or len(text) > 1000:
                continue
            answer = http.get(f"{GROUP}/threads", params={"status": "all", "username": text})
            if answer.status_code != 200:
                check_error(answer, 400, "0201")
            else:
                valid_xml(answer)


def test_logs_in_every_form(server: Server, planted: dict[str, str]) -> None:
    with server.client("contributor") as http:
        for text, tid in planted.items():
            path = f"{GROUP}/threads/{tid}/logs"
            logs = valid_xml(http.get(path))
            assert [e.text or "" for e in logs][-2:] == [shown(text)] * 2
            valid_json(http.get(path, headers={"Accept": "application/json"}))
            plain = http.get(path, headers={"Accept": "text/plain"})
            assert plain.status_code == 200
            lines = plain.text.splitlines()
            assert len(lines) == len(logs), (repr(text[:60]), lines[-3:])
            for line in lines:
                assert re.match(r"\d{4}-\d\d-\d\dT[\d:.]+Z (DEBUG|INFO|WARN|ERROR) ", line), line
                assert not re.search("[\x00-\x08\x0a-\x1f\x7f-\x9f]", line), repr(line[:80])
            assert plain.text.count("\n") == len(lines)


def test_event_streams(server: Server, planted: dict[str, str]) -> None:
    with server.client("contributor") as http:
        for tid in planted.values():
            with http.stream("GET", f"{GROUP}/threads/{tid}/events") as stream:
                assert stream.status_code == 200
                body = stream.read().decode("utf-8")
            events = [block for block in body.split("\n\n") if block.startswith("id:")]
            assert events, body[:300]
            for block in events:
                lines = block.split("\n")
                assert [line.split(":", 1)[0] for line in lines] == ["id", "event", "data"], \
                    repr(block[:200])
                assert "\r" not in block
                etree.fromstring(lines[2][len("data: "):])  # one line of well-formed XML


def test_webhooks(server: Server, planted: dict[str, str]) -> None:
    with server.client("manager") as http:
        hooks = valid_xml(http.get(f"{GROUP}/webhooks"))
        assert len(hooks) == 1
        one = valid_xml(http.get(f"{GROUP}/webhooks/{hooks[0].get('id')}"))
        assert one.get("url") == "http://127.0.0.1:9/\ufffd\r\n\x85"


# -- the console ------------------------------------------------------------------------------
def test_console_pages(server: Server, planted: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        form = client.get(f"{UI}/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        signed = client.post(f"{UI}/sign-in", data={
            "csrf": csrf.group(1), "username": "contributor", "password": "contributor-pw"})
        assert signed.status_code == 303
        for path in [f"{UI}/groups", f"{UI}/groups/dev/threads?status=all"]:
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text[:300])
        with server.client("contributor") as http:  # the odd group, by id, on the services
            valid_xml(http.get("/ps/service/groups/250/threads", params={"status": "all"}))
        for text, tid in planted.items():
            page = client.get(f"{UI}/groups/dev/threads/{tid}")
            assert page.status_code == 200, (repr(text[:40]), page.text[:300])
            log = client.get(f"{UI}/groups/dev/threads/{tid}/log.txt")
            assert log.status_code == 200
            assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", log.text), \
                repr(text[:40])


def test_the_server_logged_no_error(server: Server, planted: dict[str, str]) -> None:
    log = Path(server.log).read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]


# -- the command line ---------------------------------------------------------------------------
TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def test_the_cli_prints_no_control_character(server: Server, planted: dict[str, str]) -> None:
    """`threads list`, `show` and `logs` print stored strings through one filter: an ESC or a
    CSI (`\\x9b`) from the server never reaches the terminal, and each thread is one line."""

    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "threadsvc", "threads", *args, "--url", server.url,
                   "--user", "contributor", "--password", password("contributor"),
                   "--group", "dev"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        assert not TERMINAL_CONTROLS.search(done.stdout + done.stderr), repr(done.stdout[:300])
        return done.stdout

    listed = cli("list", "--status", "all", "--pagesize", "1000")
    for tid in planted.values():
        assert len([line for line in listed.splitlines() if line.startswith(tid)]) == 1, tid
    for tid in list(planted.values())[:4]:
        cli("show", tid)
        cli("logs", tid)
