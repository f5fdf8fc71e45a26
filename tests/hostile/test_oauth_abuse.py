"""Abusing `/ps/oauth/token`, and sign-in names no store can hold.

The attacks: unlimited wrong client secrets (400/s tried, nothing logged), and `scope` ignored
(a `scope=read` token started a thread). Now wrong secrets count against the client id as wrong
passwords count against a username (`lockout-attempts` in `lockout-seconds`, reserved before the
check, so a burst checks no more), each is logged with the address; `scope=read` gives a token
that may only read (GET and HEAD; anything else is 403 `0101`), and any other scope is a 400
`0201` naming `scope` (invalid_scope), as the endpoint's other errors are the server's error
documents. And a NUL in a sign-in name (console form, Basic, client_id) was a 503 on
PostgreSQL: it is answered before any store sees it. On both stores.
"""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import NewStore
from tests.hostile.payloads import GROUP, check_error, checked_at_most
from tests.support import Server, running_server

pytestmark = pytest.mark.slow

ATTEMPTS = 4


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("oauth")
    yield from running_server(directory, **{
        "db": new_store(directory), "lockout-attempts": ATTEMPTS, "lockout-seconds": 600})


def new_client(server: Server, user: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "threadsvc", "client", "add", "--config", str(server.config), user],
        check=True, capture_output=True, text=True).stdout
    values = dict(line.split(": ", 1) for line in out.strip().splitlines())
    return values["client_id"], values["client_secret"]


def token_request(server: Server, client_id: str, secret: str, **more: str) -> httpx.Response:
    return httpx.post(f"{server.url}/ps/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
        **more})


def failures_logged(server: Server, client_id: str) -> int:
    return len(re.findall(rf"failed OAuth token request for '{re.escape(client_id)}' from ",
                          server.log.read_text()))


def test_wrong_secrets_lock_the_client_id(server: Server) -> None:
    client_id, secret = new_client(server, "contributor")
    other = new_client(server, "contributor")
    for n in range(ATTEMPTS):
        check_error(token_request(server, client_id, f"wrong-{n}"), 401, "0100")
    locked = token_request(server, client_id, secret)  # the right secret too
    check_error(locked, 429, "0301")
    assert int(locked.headers["retry-after"]) >= 1
    assert failures_logged(server, client_id) == ATTEMPTS
    log = server.log.read_text()
    assert f"OAuth token request for '{client_id}' locked" in log
    assert secret not in log and "wrong-0" not in log
    assert token_request(server, *other).status_code == 200  # another client is not locked


def test_a_burst_of_wrong_secrets_checks_no_more(server: Server) -> None:
    client_id, secret = new_client(server, "reviewer")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100),
                                     timeout=120) as http:
            answers = await asyncio.gather(*(http.post(f"{server.url}/ps/oauth/token", data={
                "grant_type": "client_credentials", "client_id": client_id,
                "client_secret": secret if n == 97 else f"guess-{n}"}) for n in range(100)))
        return [a.status_code for a in answers]

    codes = asyncio.run(burst())
    made = checked_at_most(codes, ATTEMPTS)
    print(f"\n100 concurrent client secrets: {made} checked, {codes.count(429)} refused unchecked")
    assert failures_logged(server, client_id) <= made


def test_unknown_client_ids_are_limited_too(server: Server) -> None:
    codes = [token_request(server, "tsc_made_up", f"s-{n}").status_code
             for n in range(ATTEMPTS + 2)]
    assert codes == [401] * ATTEMPTS + [429] * 2


def test_a_read_token_only_reads(server: Server) -> None:
    client = new_client(server, "manager")
    answer = token_request(server, *client, scope="read")
    assert answer.status_code == 200, answer.text
    assert answer.json()["scope"] == "read"
    read = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    with httpx.Client(base_url=server.url, headers=read) as http:
        assert http.get(f"{GROUP}/threads").status_code == 200
        assert http.head(f"{GROUP}/threads").status_code == 200
        check_error(http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"}),
                    403, "0101")
        check_error(http.post(f"{GROUP}/threads/{'0' * 32}/cancel"), 403, "0101")
        check_error(http.delete(f"{GROUP}/threads/{'0' * 32}"), 403, "0101")
        listed = http.get(f"{GROUP}/threads", params={"status": "all"})
        assert "<thread " not in listed.text  # nothing was started
    full = token_request(server, *client)
    assert "scope" not in full.json()
    with httpx.Client(base_url=server.url,
                      headers={"Authorization": f"Bearer {full.json()['access_token']}"}) as http:
        assert http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"}
                         ).status_code == 202


@pytest.mark.parametrize("scope", ["write", "admin", "read write", "READ", "read\x00",
                                   "x" * 5000])
def test_other_scopes_are_refused(server: Server, scope: str) -> None:
    client = new_client(server, "reviewer")
    answer = token_request(server, *client, scope=scope)
    check_error(answer, 400, "0201", naming="scope")
    assert "invalid_scope" in answer.text


@pytest.mark.parametrize("name", ["a\x00", "\x00", "contributor\x00", "a\x00b"])
def test_a_nul_in_a_sign_in_name_is_answered_without_the_store(server: Server, name: str) -> None:
    check_error(token_request(server, name, "secret"), 401, "0100")
    check_error(token_request(server, name + "x" * 300, "secret"), 401, "0100")
    basic = base64.b64encode(f"{name}:pw".encode()).decode()
    check_error(httpx.get(f"{server.url}{GROUP}/threads",
                          headers={"Authorization": f"Basic {basic}"}), 401, "0100")
    with httpx.Client(base_url=server.url) as http:
        form = http.get("/ps/ui/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        page = http.post("/ps/ui/sign-in", data={
            "csrf": token.group(1), "username": name, "password": "pw"})
    assert page.status_code == 400, page.status_code
    assert "text/html" in page.headers["content-type"]
    assert "\x00" not in page.text


@pytest.mark.parametrize("raw", [b"%ED%A0%80", b"%FF%FE", b"a%01b", b"%7F", b"x" * 100_000])
def test_odd_sign_in_names_are_never_a_5xx(server: Server, raw: bytes) -> None:
    with httpx.Client(base_url=server.url) as http:
        form = http.get("/ps/ui/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        body = b"csrf=" + token.group(1).encode() + b"&password=pw&username=" + raw
        page = http.post("/ps/ui/sign-in", content=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert page.status_code in (400, 401, 413), page.status_code
        client = http.post("/ps/oauth/token", content=b"grant_type=client_credentials&"
                           b"client_secret=s&client_id=" + raw,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert client.status_code in (400, 401, 413), client.status_code


@pytest.mark.parametrize("name", ["ctl\x01name", "esc\x1b[0m", "bidi\u202eeman", "\ufffe"])
def test_a_locked_odd_name_is_a_clean_429(server: Server, name: str) -> None:
    """The lock's message names what was locked, which the client chose: it stays XML."""
    basic = base64.b64encode(f"{name}:pw".encode()).decode()
    for _ in range(ATTEMPTS):
        check_error(httpx.get(f"{server.url}{GROUP}/threads",
                              headers={"Authorization": f"Basic {basic}"}), 401, "0100")
        check_error(token_request(server, name, "secret"), 401, "0100")
    check_error(httpx.get(f"{server.url}{GROUP}/threads",
                          headers={"Authorization": f"Basic {basic}"}), 429, "0301")
    check_error(token_request(server, name, "secret"), 429, "0301")
