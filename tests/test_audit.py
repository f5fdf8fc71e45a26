"""The audit log through a real server and the real CLI, on each store: what HTTP callers change
and which sign-ins fail leave one entry each, with the caller's address; `GET
/ps/service/audit` pages as a thread's log does, for administrators only; hostile names reach
the XML, the terminal and the log safely; entries past `audit-ttl` are purged."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from lxml import etree

from tests.conftest import NewStore
from tests.hostile.test_session import UI, csrf_of, signed_in
from tests.support import GROUP, Server, running_server, start, wait_final, wait_running
from tests.test_permissions import assert_error
from threadsvc.cli import main
from threadsvc.models import AUDIT_ACTIONS
from threadsvc.xml.schemas import validate

AUDIT = "/ps/service/audit"
HOSTILE = "evil\x1b[2J\u202e<b>&'\"\x07"  # ESC, RTL override, markup, quotes, BEL


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory,
          new_store: NewStore) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("audit")
    yield from running_server(directory, db=new_store(directory),
                              **{"webhook-allow-private": True})


def entries(server: Server, **query: Any) -> list[etree._Element]:
    with server.client("admin") as http:
        answer = http.get(AUDIT, params=query)
    assert answer.status_code == 200, answer.text
    validate(answer.content)
    return list(etree.fromstring(answer.content))


def about(server: Server, target: str, **query: Any) -> list[dict[str, str]]:
    """The entries about `target`, each as its attributes and detail (`text`)."""
    return [{**e.attrib, "text": e.text or ""} for e in entries(server, user=target, **query)
            if e.get("target") == target]


def test_the_vocabulary_is_the_same_everywhere() -> None:
    """The actions the store may write are those audit.xsd and openapi.json publish."""
    xsd = etree.fromstring((resources.files("threadsvc") / "schemas" / "audit.xsd").read_bytes())
    published = {e.get("value") for e in xsd.iter("{http://www.w3.org/2001/XMLSchema}enumeration")
                 if e.getparent().getparent().get("name") == "audit-action"}
    openapi = json.loads((resources.files("threadsvc") / "schemas" / "openapi.json").read_text())
    described = openapi["components"]["schemas"]["AuditEntry"]["properties"]["action"]["enum"]
    assert published == set(described) == AUDIT_ACTIONS


def test_only_administrators_read_it(server: Server) -> None:
    for user in ("manager", "approver", "outsider"):
        with server.client(user) as http:
            assert_error(http.get(AUDIT), 403, "0101")
    with server.client() as http:
        assert_error(http.get(AUDIT), 401, "0100")
    with server.client("admin") as http:
        assert_error(http.get(AUDIT, params={"action": "user.fly"}), 400, "0201")
        assert_error(http.get(AUDIT, params={"limit": "10001"}), 400, "0201")
        assert_error(http.get(AUDIT, params={"from": "yesterday"}), 400, "0201")
        assert_error(http.post(AUDIT), 405, "0103")


def test_the_seeded_world_is_audited_as_the_command_line(server: Server) -> None:
    """tests/support.seed made the groups and members with threadsvc.admin."""
    [added] = about(server, "dev", action="group.add")
    assert re.fullmatch(r"cli:\S+", added["actor"]) and "address" not in added
    [member] = about(server, "contributor", action="member.add")
    assert member["group"] == "dev" and member["text"] == "role contributor"
    assert member["actor"] == added["actor"]


def test_cancel_and_delete_over_http(server: Server) -> None:
    with server.client("contributor") as http:
        tid = start(http, seconds=30, steps=30)
        wait_running(http, tid)
        assert http.post(f"{GROUP}/threads/{tid}/cancel").status_code == 200
        wait_final(http, tid)
        assert http.post(f"{GROUP}/threads/{tid}/cancel").status_code == 200  # no change
    with server.client("manager") as http:
        assert http.delete(f"{GROUP}/threads/{tid}").status_code == 204
        assert http.delete(f"{GROUP}/threads/{tid}").status_code == 404
    [cancel] = about(server, tid, action="thread.cancel")
    assert cancel["actor"] == "contributor" and cancel["group"] == "dev"
    assert cancel["address"] == "127.0.0.1" and cancel["text"] == "sleep, inprogress"
    [delete] = about(server, tid, action="thread.delete")
    assert delete["actor"] == "manager" and delete["text"] == "sleep, cancelled"


def test_the_console_is_audited_as_the_services(server: Server) -> None:
    """A cancel from the console's form, and a failed sign-in on its page."""
    with server.client("contributor") as http:
        tid = start(http, seconds=30, steps=30)
    with signed_in(server, "contributor") as browser:
        page = browser.get(f"{UI}/groups/dev/threads/{tid}")
        answer = browser.post(f"{UI}/groups/dev/threads/{tid}/cancel",
                              data={"csrf": csrf_of(page)})
        assert answer.status_code == 303, answer.text
    [cancel] = about(server, tid, action="thread.cancel")
    assert (cancel["actor"], cancel["group"], cancel["address"]) == (
        "contributor", "dev", "127.0.0.1")
    name = f"console-{time.monotonic_ns()}"
    with httpx.Client(base_url=server.url) as browser:
        form = browser.get(f"{UI}/sign-in")
        answer = browser.post(f"{UI}/sign-in", data={"csrf": csrf_of(form), "username": name,
                                                      "password": "wrong"})
        assert answer.status_code == 401
    [failure] = about(server, name)
    assert failure["action"] == "signin.failure" and failure["address"] == "127.0.0.1"


def test_webhooks_over_http(server: Server) -> None:
    with server.client("manager") as http:
        answer = http.post(f"{GROUP}/webhooks",
                           data={"url": "http://127.0.0.1:9/hook?key=hidden", "secret": "k" * 16})
        assert answer.status_code == 201, answer.text
        hook = etree.fromstring(answer.content).get("id")
        assert http.delete(f"{GROUP}/webhooks/{hook}").status_code == 204
    added, removed = about(server, str(hook))
    assert (added["action"], removed["action"]) == ("webhook.add", "webhook.remove")
    assert added["actor"] == removed["actor"] == "manager" and added["group"] == "dev"
    assert added["text"] == "http://127.0.0.1:9" and "hidden" not in removed["text"]


def test_failed_signins_and_the_lockout(server: Server) -> None:
    name = f"nobody-{time.monotonic_ns()}"
    with httpx.Client(base_url=server.url, auth=(name, "wrong")) as http:
        statuses = [http.get("/ps/service/threads").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]  # the sixth is refused unchecked: no entry
    found = about(server, name)
    assert [e["action"] for e in found] == ["signin.failure"] * 5 + ["signin.lockout"]
    assert all("actor" not in e and e["address"] == "127.0.0.1" for e in found)
    assert found[0]["text"] == "1 of 5" and found[-1]["text"] == "5 of 5; locked for 900 s"
    for password, status in (("wrong", 401), ("contributor-pw", 200)):
        with httpx.Client(base_url=server.url, auth=("contributor", password)) as http:
            assert http.get(f"{GROUP}/threads").status_code == status
    [failure] = about(server, "contributor", action="signin.failure")  # the success: none
    assert failure["text"] == "1 of 5"


def test_pages_like_a_log(server: Server) -> None:
    everything = entries(server, limit=10_000)
    assert len(everything) > 5
    seen, since = [], 0
    while True:
        with server.client("admin") as http:
            page = etree.fromstring(http.get(AUDIT, params={"since": since, "limit": 2}).content)
        seen += [e.get("seq") for e in page]
        assert int(page.get("next")) == int(seen[-1] if len(page) else since)
        since = int(page.get("next"))
        if page.get("more") == "false":
            break
    assert seen == [e.get("seq") for e in everything]
    with server.client("admin") as http:
        data = http.get(AUDIT, params={"limit": 1}, headers={"Accept": "application/json"}).json()
    assert data["more"] is True and isinstance(data["next"], int)
    assert data["audit"][0]["action"] in AUDIT_ACTIONS and isinstance(data["audit"][0]["seq"], int)


def test_hostile_names_are_shown_safely(server: Server, tmp_path: Path) -> None:
    name = HOSTILE + str(time.monotonic_ns())
    with httpx.Client(base_url=server.url) as http:
        answer = http.get("/ps/service/threads",
                          headers={"Authorization": "Basic " + _basic(name, "x")})
        assert answer.status_code == 401
    with server.client("admin") as http:
        xml = http.get(AUDIT, params={"action": "signin.failure"})
    validate(xml.content)
    [entry] = [e for e in etree.fromstring(xml.content) if e.get("target", "").endswith(name[-8:])]
    assert "\x1b" not in entry.get("target") and "<b>&'\"" in entry.get("target")
    table = _cli(server, "--action", "signin.failure")
    [line] = [row for row in table.splitlines() if name[-8:] in row]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202e]", line) and "<b>&'\"" in line
    rows = json.loads(_cli(server, "--json", "--user", name))
    assert [r["target"] for r in rows] == [name]  # JSON keeps the text as it is
    log = (server.directory / "server.log").read_text(errors="replace")
    [logged] = [row for row in log.splitlines() if "signin.failure" in row and name[-8:] in row]
    assert "\x1b" not in logged and "\u202e" not in logged


def test_the_command_line_reads_what_the_server_wrote(server: Server) -> None:
    rows = json.loads(_cli(server, "--json", "--action", "member.add", "--limit", "2"))
    assert [r["action"] for r in rows] == ["member.add"] * 2
    assert rows[0]["seq"] < rows[1]["seq"] and rows[1]["target"] == "othermgr"  # the latest two
    since = rows[0]["datetime"]
    later = json.loads(_cli(server, "--json", "--since", since, "--action", "member.add"))
    assert {r["seq"] for r in rows} <= {r["seq"] for r in later}  # from that moment, oldest first
    assert all(r["timestamp"] >= rows[0]["timestamp"] for r in later)
    assert [r["seq"] for r in later] == sorted(r["seq"] for r in later)
    bad = _invoke(server, "--since", "soon")
    assert bad.exit_code == 2 and "--since" in bad.stderr


@pytest.mark.slow
def test_entries_past_the_ttl_are_purged(tmp_path: Path) -> None:
    with contextlib.contextmanager(running_server)(
        tmp_path, **{"audit-ttl": 1, "purge-interval": 0.2}
    ) as (server, _):
        with httpx.Client(base_url=server.url, auth=("admin", "wrong")) as http:
            assert http.get(AUDIT).status_code == 401
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and entries(server):
            time.sleep(0.2)
        assert entries(server) == []  # the seeded world's and the failure's, all gone


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _invoke(server: Server, *args: str) -> Result:
    """`threadsvc audit --config … ARGS`, in this process (the real command on the real store)."""
    return CliRunner().invoke(main, ["audit", "--config", str(server.config), *args])


def _cli(server: Server, *args: str) -> str:
    done = _invoke(server, *args)
    assert done.exit_code == 0, done.output
    return done.stdout
