"""The console over plain HTTP: its session cookie, CSRF tokens, what the cookie may and may not
do on the services, pages for the service's errors, and the start form with files."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.console.conftest import UI, anonymous, start_sleep, thread_status
from tests.support import Server, password
from threadsvc import admin
from threadsvc.settings import load_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "validate"
COOKIE = "threadsvc-session"


def csrf_of(response: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, response.text[:2000]
    return found.group(1)


def session_of(client: httpx.Client) -> dict[str, Any]:
    """What the signed session cookie holds (its payload is readable; only the signature
    protects it)."""
    value = client.cookies[COOKIE]
    payload = value.split(".")[0]
    data: dict[str, Any] = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
    return data


@contextlib.contextmanager
def signed_in(server: Server, user: str) -> Iterator[httpx.Client]:
    with anonymous(server) as client:
        form = client.get(f"{UI}/sign-in")
        response = client.post(f"{UI}/sign-in", data={
            "csrf": csrf_of(form), "username": user, "password": password(user),
        })
        assert response.status_code == 303, response.text
        assert response.headers["location"] == f"{UI}/groups"
        yield client


def test_the_cookie_is_httponly_lax_and_secure_over_https(server: Server) -> None:
    with anonymous(server) as client, anonymous(server) as other:
        plain = client.get(f"{UI}/sign-in").headers["set-cookie"].lower()
        https = other.get(f"{UI}/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert plain.startswith(COOKIE + "=")
    for flag in ("httponly", "samesite=lax", "path=/ps"):
        assert flag in plain
    assert "secure" not in plain
    assert "; secure" in https.headers["set-cookie"].lower()  # uvicorn trusts a local proxy


def test_sign_in_starts_a_new_session_holding_only_ids(server: Server) -> None:
    with anonymous(server) as client:
        form = client.get(f"{UI}/sign-in")
        before = session_of(client)
        assert set(before) == {"sid"}
        response = client.post(f"{UI}/sign-in", data={
            "csrf": csrf_of(form), "username": "contributor", "password": "contributor-pw",
        })
        assert response.status_code == 303
        after = session_of(client)
        assert set(after) == {"sid", "uid", "username", "cv"}
        assert after["username"] == "contributor" and isinstance(after["uid"], int)
        assert isinstance(after["cv"], int)  # the credential version: a password change ends it
        assert after["sid"] != before["sid"]  # a planted session id is worth nothing
        # the token of the anonymous session does not work with the new one
        stale = client.post(f"{UI}/sign-out", data={"csrf": csrf_of(form)})
        assert stale.status_code == 403
        assert client.get(f"{UI}/groups").status_code == 200


def test_the_cookie_reads_the_services_but_never_acts_on_them(server: Server) -> None:
    running = start_sleep(server, "contributor", seconds=60, steps=60)
    try:
        with signed_in(server, "contributor") as client:
            listed = client.get("/ps/service/groups/dev/threads")
            assert listed.status_code == 200 and running in listed.text
            assert client.get("/ps/api/groups/dev/threads.json").status_code == 200
            progress = client.get(f"/ps/service/groups/dev/threads/{running}/progress")
            assert progress.status_code == 200
            before = listed.text.count("<thread ")
            start = client.post("/ps/service/groups/dev/threads", data={"job": "sleep"})
            assert start.status_code == 401
            cancel = client.post(f"/ps/service/groups/dev/threads/{running}/cancel")
            assert cancel.status_code == 401
            assert client.delete(f"/ps/service/groups/dev/threads/{running}").status_code == 401
            again = client.get("/ps/service/groups/dev/threads")
            assert again.text.count("<thread ") == before  # nothing was started
        assert thread_status(server, running) == "inprogress"  # nor cancelled
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{running}/cancel")


def test_forged_forms_are_refused_and_do_nothing(server: Server) -> None:
    running = start_sleep(server, "contributor", seconds=60, steps=60)
    cancel = f"{UI}/groups/dev/threads/{running}/cancel"
    try:
        with signed_in(server, "contributor") as client, \
                signed_in(server, "contributor") as other:
            page = client.get(f"{UI}/groups/dev/threads/{running}")
            mine = csrf_of(page)
            theirs = csrf_of(other.get(f"{UI}/groups/dev/threads/{running}"))
            count = "/ps/service/groups/dev/threads?status=all&username=contributor&pagesize=1"
            before = re.search(r'total="(\d+)"', client.get(count).text)
            assert client.post(cancel).status_code == 403
            assert client.post(cancel, data={"csrf": theirs}).status_code == 403
            assert client.post(cancel, data={"csrf": mine + "x"}).status_code == 403
            refused = client.post(f"{UI}/groups/dev/start", data={"job": "sleep"})
            assert refused.status_code == 403 and "nothing was done" in refused.text
            assert client.post(f"{UI}/sign-out", data={"csrf": theirs}).status_code == 403
            assert client.get(f"{UI}/groups").status_code == 200  # still signed in
            assert thread_status(server, running) == "inprogress"
            after = re.search(r'total="(\d+)"', client.get(count).text)
            assert before and after and after.group(1) == before.group(1)  # nothing started
            done = client.post(cancel, data={"csrf": mine})
            assert done.status_code == 303
            assert done.headers["location"].endswith("notice=cancelled")
        assert thread_status(server, running) == "cancelled"
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{running}/cancel")


def test_sign_out_clears_the_session(server: Server) -> None:
    with anonymous(server) as client:
        assert client.get(f"{UI}/sign-out").status_code == 303  # to sign in first
    with signed_in(server, "manager") as client:
        offered = client.get(f"{UI}/sign-out")
        assert offered.status_code == 200 and "signed in as <strong>manager" in offered.text
        token = csrf_of(client.get(f"{UI}/groups"))
        out = client.post(f"{UI}/sign-out", data={"csrf": token})
        assert out.status_code == 303 and out.headers["location"] == f"{UI}/sign-in?notice=signed-out"
        assert COOKIE not in client.cookies or session_of(client) == {}
        assert client.get(f"{UI}/groups").status_code == 303
        assert client.get("/ps/service/groups/dev/threads").status_code == 401


def test_a_removed_user_loses_access_and_a_new_namesake_gets_none(server: Server) -> None:
    with signed_in(server, "outsider") as client:
        assert client.get(f"{UI}/groups").status_code == 200
        with sqlite3.connect(server.directory / "threadsvc.db") as db:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("DELETE FROM users WHERE username = 'outsider'")
        gone = client.get(f"{UI}/groups")
        assert gone.status_code == 303 and gone.headers["location"].startswith(f"{UI}/sign-in")
        assert client.get("/ps/service/groups/dev/threads").status_code == 401

        async def recreate() -> None:
            async with admin.opened(load_settings(server.config, environ={})) as a:
                # SQLite gives a new row the highest id that was deleted: take it first, so
                # that the namesake is another user with another id (as PostgreSQL's would be)
                await a.identity.add_user("filler", None, False)
                await a.identity.add_user("outsider", "outsider-pw", True)

        anyio.run(recreate)  # same name, another user (an administrator, even)
        assert client.get(f"{UI}/groups").status_code == 303
        assert client.get("/ps/service/threads").status_code == 401


def test_next_never_leaves_the_console(server: Server) -> None:
    for target, expected in [
        ("https://evil.example/", f"{UI}/groups"),
        ("//evil.example/ps/ui/", f"{UI}/groups"),
        ("/ps/ui//evil.example", f"{UI}/groups"),
        ("/ps/service/threads", f"{UI}/groups"),
        (f"{UI}/groups/dev/threads?status=active", f"{UI}/groups/dev/threads?status=active"),
    ]:
        with anonymous(server) as client:
            form = client.get(f"{UI}/sign-in")
            response = client.post(f"{UI}/sign-in", data={
                "csrf": csrf_of(form), "username": "approver", "password": "approver-pw",
                "next": target,
            })
            assert response.headers["location"] == expected, target


def test_pages_without_a_session_and_pages_that_do_not_exist(server: Server) -> None:
    with anonymous(server) as client:
        assert client.get("/ps/ui").headers["location"] == f"{UI}/groups"
        assert client.get(f"{UI}/").headers["location"] == f"{UI}/groups"
        there = client.get(f"{UI}/groups/dev/threads?status=finished")
        assert there.status_code == 303
        assert there.headers["location"] == (
            f"{UI}/sign-in?next=/ps/ui/groups/dev/threads%3Fstatus%3Dfinished"
        )
        missing = client.get(f"{UI}/no/such/page")
        assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
        page = client.get(f"{UI}/sign-in")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        assert client.get(f"{UI}/static/console.css").status_code == 200


def test_the_services_errors_are_what_a_user_sees(server: Server) -> None:
    thread = start_sleep(server, "contributor", seconds=0, steps=1)
    with signed_in(server, "reviewer") as reviewer:
        listed = reviewer.get(f"{UI}/groups/dev/threads")  # their own threads: none
        assert listed.status_code == 200 and "You have started no thread here" in listed.text
        assert thread not in listed.text
        page = reviewer.get(f"{UI}/groups/dev/threads/{thread}")
        assert page.status_code == 200 and "Cancel thread" not in page.text
        assert "does not let you read this thread's log" in page.text
        assert reviewer.get(f"{UI}/groups/other/threads/{thread}").status_code == 403
        assert reviewer.get(f"{UI}/threads/{thread}").status_code == 404  # not the owner
        assert reviewer.get(f"{UI}/nodes").status_code == 403
        assert reviewer.get(f"{UI}/queue").status_code == 403
        assert reviewer.get(f"{UI}/threads").status_code == 403
    with signed_in(server, "othermgr") as othermgr:
        assert othermgr.get(f"{UI}/groups/other/threads/{thread}").status_code == 404
        assert othermgr.get(f"{UI}/groups/nosuch/threads").status_code == 404
        listed = othermgr.get(f"{UI}/groups/dev/threads")  # no member of dev
        assert listed.status_code == 403 and "role reviewer in group" in listed.text
    with signed_in(server, "contributor") as owner:
        assert owner.get(f"{UI}/threads/{thread}").status_code == 200  # the owner may
        text = owner.get(f"{UI}/groups/dev/threads/{thread}/log.txt")
        assert text.status_code == 200 and "INFO Status: initialised" in text.text


def test_a_bad_parameter_shows_the_form_again_and_starts_nothing(server: Server) -> None:
    with signed_in(server, "contributor") as client:
        form = client.get(f"{UI}/groups/dev/start?job=sleep")
        assert 'name="seconds"' in form.text and 'name="steps"' in form.text
        response = client.post(f"{UI}/groups/dev/start", data={
            "csrf": csrf_of(form), "job": "sleep", "seconds": "forever", "steps": "",
        })
        assert response.status_code == 400
        assert "Parameter &#39;seconds&#39;" in response.text
        assert 'value="forever"' in response.text  # what was typed is kept
        more = client.post(f"{UI}/groups/dev/start", data={
            "csrf": csrf_of(form), "job": "sleep", "more": "no equals sign",
        })
        assert more.status_code == 400 and "NAME=value" in more.text
        unknown = client.get(f"{UI}/groups/dev/start?job=nosuch")
        assert unknown.status_code == 400


def test_a_job_with_files_starts_from_the_form(server: Server) -> None:
    with signed_in(server, "contributor") as client:
        form = client.get(f"{UI}/groups/dev/start?job=validate")
        assert 'type="file"' in form.text and "multiple" in form.text
        files = [
            ("documents", (p.name, p.read_bytes(), "application/xml"))
            for p in sorted((DATA / "valid").glob("*.xml"))
        ]
        files.append(("schema", ("book.xsd", (DATA / "book.xsd").read_bytes(), "application/xml")))
        files.append(("schema", ("", b"", "application/octet-stream")))  # an empty input
        response = client.post(f"{UI}/groups/dev/start", data={
            "csrf": csrf_of(form), "job": "validate", "schema-type": "",
        }, files=files)
        assert response.status_code == 303, response.text
        location = response.headers["location"]
        assert re.fullmatch(r"/ps/ui/groups/dev/threads/[0-9a-f]{32}\?notice=started", location)
        thread_id = location.split("/")[-1].split("?")[0]
        deadline = time.monotonic() + 20
        while thread_status(server, thread_id) not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert thread_status(server, thread_id) == "completed"
        page = client.get(location)
        assert "Download the result" in page.text and "3 of 3" in page.text
