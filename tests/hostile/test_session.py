"""The console's session cookie under attack (docs/console.md): session fixation (a cookie
planted before sign-in is worth nothing after), forged cookies (unsigned, signed with another
key, with another user's id), the cookie used to act on the services (only GET reads; every
change is 401), and cross-site request forgery on the console's forms (missing, wrong,
stale, another session's token: 403, nothing done). A copy of a cookie taken before sign-out
stays valid (the documented limit of a client-side session), pinned here so that a change
shows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner

from tests.hostile.payloads import GROUP, check_error, thread_total
from tests.support import Server, password

UI = "/ps/ui"
COOKIE = "threadsvc-session"


def csrf_of(response: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, response.text[:2000]
    return found.group(1)


def browser(server: Server, cookie: str | None = None) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)
    if cookie is not None:
        client.cookies.set(COOKIE, cookie, domain="127.0.0.1", path="/ps")
    return client


def payload_of(cookie: str) -> dict[str, Any]:
    part = cookie.split(".")[0]
    data: dict[str, Any] = json.loads(base64.b64decode(part + "=" * (-len(part) % 4)))
    return data


def sign_in(client: httpx.Client, user: str) -> httpx.Response:
    form = client.get(f"{UI}/sign-in")
    return client.post(f"{UI}/sign-in", data={
        "csrf": csrf_of(form), "username": user, "password": password(user)})


@contextlib.contextmanager
def signed_in(server: Server, user: str) -> Iterator[httpx.Client]:
    with browser(server) as client:
        assert sign_in(client, user).status_code == 303
        yield client


def is_signed_in(server: Server, cookie: str) -> bool:
    with browser(server, cookie) as client:
        page = client.get(f"{UI}/groups")
    assert page.status_code in (200, 303), page.status_code
    return page.status_code == 200


def start_sleep(server: Server, seconds: str = "60") -> str:
    with server.client("contributor") as http:
        started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": seconds,
                                                      "steps": seconds})
        assert started.status_code == 202, started.text
        return started.text.split('id="', 1)[1][:32]


def status_of(server: Server, tid: str) -> str:
    with server.client("admin") as http:
        found = re.search(r'status="([a-z]+)"', http.get(f"/ps/service/threads/{tid}/progress").text)
    assert found
    return found.group(1)


# -- fixation and forged cookies --------------------------------------------------------------
def test_a_planted_cookie_is_not_kept_after_sign_in(server: Server) -> None:
    with browser(server) as attacker:
        attacker.get(f"{UI}/sign-in")
        planted = attacker.cookies[COOKIE]
    with browser(server, planted) as victim:
        assert sign_in(victim, "manager").status_code == 303
        after = victim.cookies[COOKIE]
        assert after != planted
        assert payload_of(after)["sid"] != payload_of(planted)["sid"]
        assert victim.get(f"{UI}/groups").status_code == 200
    assert not is_signed_in(server, planted)  # the attacker's copy stays anonymous
    with browser(server, planted) as attacker:
        assert attacker.get(f"{GROUP}/threads").status_code == 401


def test_a_cookie_naming_another_user_is_refused(server: Server) -> None:
    with signed_in(server, "reviewer") as client:
        genuine = client.cookies[COOKIE]
    data = payload_of(genuine)
    admin_id = 1  # `admin` is the first user tests/support.py seeds
    forged_payload = base64.b64encode(json.dumps(
        {**data, "uid": admin_id, "username": "admin"}).encode()).decode()
    rest = genuine.split(".", 1)[1]
    for cookie in (f"{forged_payload}.{rest}",  # the genuine signature on another payload
                   forged_payload,  # unsigned
                   TimestampSigner("attacker-key").sign(forged_payload).decode(),
                   TimestampSigner("test-secret-key-of-the-test-servers").sign(forged_payload).decode(),  # raw key
                   genuine[:-2] + "xx"):
        assert not is_signed_in(server, cookie), cookie
        with browser(server, cookie) as client:
            assert client.get("/ps/service/threads").status_code == 401


def test_a_copied_cookie_survives_sign_out(server: Server) -> None:
    """docs/console.md: the session is client-side; signing out clears the browser's cookie,
    a copy taken earlier stays valid for its 12 hours (removing the user ends it)."""
    with signed_in(server, "approver") as client:
        copy = client.cookies[COOKIE]
        token = csrf_of(client.get(f"{UI}/groups"))
        assert client.post(f"{UI}/sign-out", data={"csrf": token}).status_code == 303
        assert client.get(f"{UI}/groups").status_code == 303  # this browser is signed out
    assert is_signed_in(server, copy)  # the documented limit


# -- the cookie on the services ---------------------------------------------------------------
def test_the_cookie_reads_but_never_changes(server: Server) -> None:
    running = start_sleep(server)
    try:
        before = thread_total(server)
        with signed_in(server, "manager") as client:
            assert client.get(f"{GROUP}/threads").status_code == 200
            assert client.get(f"{GROUP}/threads/{running}/progress").status_code == 200
            for prefix in ("/ps/service", "/ps/api"):
                base = f"{prefix}/groups/dev"
                for response in (
                    client.post(f"{base}/threads", data={"job": "sleep"}),
                    client.post(f"{base}/threads", content=b'<job name="sleep"/>',
                                headers={"Content-Type": "application/xml"}),
                    client.post(f"{base}/threads/{running}/cancel"),
                    client.delete(f"{base}/threads/{running}"),
                    client.post(f"{base}/webhooks", data={"url": "https://8.8.8.8/", "secret": "a-webhook-secret"}),
                    client.put(f"{base}/threads/{running}"),
                    client.patch(f"{base}/threads/{running}"),
                    client.post(f"{base}/threads/{running}/cancel",
                                headers={"X-HTTP-Method-Override": "GET"}),
                ):
                    assert response.status_code in (401, 405), (response.request.method,
                                                                 response.status_code)
                    if response.status_code == 401:
                        check_error(response, 401, "0100")
            webhooks = client.get(f"{GROUP}/webhooks")
            assert webhooks.status_code == 200 and "8.8.8.8" not in webhooks.text
        assert status_of(server, running) == "inprogress"
        assert thread_total(server) == before
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{running}/cancel")


def test_the_cookie_does_not_lift_bad_credentials(server: Server) -> None:
    """Credentials that fail are not rescued by a session cookie sent alongside them."""
    with signed_in(server, "manager") as client:
        for header in ("Basic bWFuYWdlcjp3cm9uZw==", "Bearer tsv_forged"):
            check_error(client.get(f"{GROUP}/threads", headers={"Authorization": header}),
                        401, "0100")


# -- CSRF -------------------------------------------------------------------------------------
def test_forms_without_a_good_token_are_refused_and_do_nothing(server: Server) -> None:
    running = start_sleep(server)
    cancel = f"{UI}/groups/dev/threads/{running}/cancel"
    try:
        before = thread_total(server)
        with browser(server) as anonymous:
            stale = csrf_of(anonymous.get(f"{UI}/sign-in"))  # a token from before sign-in
        with signed_in(server, "contributor") as client, \
                signed_in(server, "contributor") as other, signed_in(server, "manager") as third:
            mine = csrf_of(client.get(f"{UI}/groups/dev/threads/{running}"))
            bad_tokens: list[str | None] = [
                None, "", "x", mine + "x", mine[:-1], mine.upper(), "A" * 600,
                csrf_of(other.get(f"{UI}/groups")),  # same user, another session
                csrf_of(third.get(f"{UI}/groups")),  # another user
                stale,
            ]
            for token in bad_tokens:
                data = {} if token is None else {"csrf": token}
                assert client.post(cancel, data=data).status_code == 403, token
                start = client.post(f"{UI}/groups/dev/start",
                                    data={**data, "job": "sleep", "seconds": "0"})
                assert start.status_code == 403 and "nothing was done" in start.text, token
                assert client.post(f"{UI}/sign-out", data=data).status_code == 403, token
            # the token in the query string instead of the form is not taken either
            assert client.post(cancel, params={"csrf": mine}).status_code == 403
            assert client.get(f"{UI}/groups").status_code == 200  # still signed in
        assert status_of(server, running) == "inprogress"
        assert thread_total(server) == before
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{running}/cancel")


def test_sign_in_itself_needs_the_token(server: Server) -> None:
    """Login CSRF: a forged sign-in form cannot sign a browser in as the attacker."""
    with browser(server) as client:
        for data in ({}, {"csrf": "forged"}):
            response = client.post(f"{UI}/sign-in", data={
                **data, "username": "outsider", "password": password("outsider")})
            assert response.status_code == 403, response.status_code
        assert client.get(f"{UI}/groups").status_code == 303


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_safe_methods_never_act(server: Server, method: str) -> None:
    """A link (GET) to a form's action does nothing: cancel and sign-out act on POST only."""
    running = start_sleep(server)
    try:
        with signed_in(server, "contributor") as client:
            token = csrf_of(client.get(f"{UI}/groups"))
            client.request(method, f"{UI}/groups/dev/threads/{running}/cancel",
                           params={"csrf": token})
            client.request(method, f"{UI}/sign-out", params={"csrf": token})
            assert client.get(f"{UI}/groups").status_code == 200
        assert status_of(server, running) == "inprogress"
    finally:
        with server.client("admin") as http:
            http.post(f"/ps/service/threads/{running}/cancel")
