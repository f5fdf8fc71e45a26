"""Password guessing (docs/api.md#lockout, docs/decisions.md "Lockout"): after `lockout-attempts` failed
passwords within `lockout-seconds`, the username is locked for `lockout-seconds`: 429 with
error 0301 and Retry-After, whatever the password, the right one included, over Basic and on
the console's sign-in alike (one count per username). The failure that reaches the limit
still answers 401; unknown usernames are counted the same way (nothing is revealed). The lock
is on passwords only: API tokens and OAuth access tokens of a locked user keep working, so a
stranger locking a name out cannot stop that user's automation.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.payloads import GROUP, check_error
from tests.support import Server, password, running_server

pytestmark = pytest.mark.slow

ATTEMPTS = 3
SECONDS = 3
UI = "/ps/ui"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("brute"), **{
        "lockout-attempts": ATTEMPTS, "lockout-seconds": SECONDS})


def basic(server: Server, user: str, secret: str) -> httpx.Response:
    return httpx.get(f"{server.url}{GROUP}/threads", auth=(user, secret))


def check_locked(response: httpx.Response) -> None:
    check_error(response, 429, "0301", "Too many failed sign-ins")
    assert 1 <= int(response.headers["retry-after"]) <= SECONDS


def console_sign_in(server: Server, user: str, secret: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, follow_redirects=False) as client:
        form = client.get(f"{UI}/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        return client.post(f"{UI}/sign-in", data={
            "csrf": token.group(1), "username": user, "password": secret})


def wait_unlocked() -> None:
    time.sleep(SECONDS + 0.5)


def test_the_lock_refuses_even_the_right_password(server: Server) -> None:
    assert basic(server, "manager", password("manager")).status_code == 200  # now remembered
    codes = [basic(server, "manager", f"guess-{i}").status_code for i in range(ATTEMPTS)]
    assert codes == [401] * ATTEMPTS
    for secret in ("guess-again", password("manager")):
        check_locked(basic(server, "manager", secret))
    assert basic(server, "contributor", password("contributor")).status_code == 200  # others
    wait_unlocked()
    assert basic(server, "manager", password("manager")).status_code == 200


def test_unknown_usernames_are_locked_the_same_way(server: Server) -> None:
    for user in ("nobody", "approver"):
        codes = [basic(server, user, "wrong").status_code for _ in range(ATTEMPTS + 2)]
        assert codes == [401] * ATTEMPTS + [429] * 2, (user, codes)
        check_locked(basic(server, user, "wrong"))
    wait_unlocked()


def test_a_success_clears_the_count(server: Server) -> None:
    for _ in range(3):
        for i in range(ATTEMPTS - 1):
            assert basic(server, "reviewer", f"x{i}").status_code == 401
        assert httpx.get(f"{server.url}/ps/service/threads/{'0' * 32}/progress",
                         auth=("reviewer", password("reviewer"))).status_code == 404
    assert basic(server, "reviewer", "wrong").status_code == 401  # a fresh count: not locked


def test_the_console_sign_in_shares_the_count_and_the_lock(server: Server) -> None:
    for i in range(ATTEMPTS - 1):
        page = console_sign_in(server, "outsider", f"guess-{i}")
        assert page.status_code == 401, page.status_code
    assert basic(server, "outsider", "guess-api").status_code == 401  # the limit reached
    locked = console_sign_in(server, "outsider", password("outsider"))
    assert locked.status_code == 429, locked.status_code
    assert "text/html" in locked.headers["content-type"]
    assert "Set-Cookie" not in locked.headers or "uid" not in locked.headers["set-cookie"]
    check_locked(basic(server, "outsider", password("outsider")))
    wait_unlocked()
    assert console_sign_in(server, "outsider", password("outsider")).status_code == 303


def test_tokens_of_a_locked_user_keep_working(server: Server, tokens: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "threadsvc", "client", "add", "--config", str(server.config),
         "contributor"], check=True, capture_output=True, text=True).stdout
    client = dict(line.split(": ", 1) for line in out.strip().splitlines())
    for i in range(ATTEMPTS):
        basic(server, "contributor", f"guess-{i}")
    check_locked(basic(server, "contributor", password("contributor")))
    api = httpx.get(f"{server.url}{GROUP}/threads",
                    headers={"Authorization": f"Bearer {tokens['contributor']}"})
    assert api.status_code == 200
    issued = httpx.post(f"{server.url}/ps/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client["client_id"],
        "client_secret": client["client_secret"]})
    assert issued.status_code == 200, issued.text
    access = httpx.get(f"{server.url}{GROUP}/threads",
                       headers={"Authorization": f"Bearer {issued.json()['access_token']}"})
    assert access.status_code == 200
    wait_unlocked()


def test_many_guesses_cost_the_attacker_not_the_server(server: Server) -> None:
    """A burst of guesses at a locked name is answered without checking any password (no
    scrypt): the server keeps answering others in the meantime."""
    for i in range(ATTEMPTS):
        basic(server, "admin", f"guess-{i}")
    locked = time.monotonic()
    codes: list[int] = []
    with httpx.Client(base_url=server.url, auth=("admin", "burst")) as http:
        # up to 200 guesses, all while the lock surely holds (a loaded machine sends fewer)
        while len(codes) < 200 and time.monotonic() - locked < SECONDS - 1:
            codes.append(http.get(f"{GROUP}/threads").status_code)
    assert set(codes) == {429} and len(codes) >= 10, codes
    assert basic(server, "contributor", password("contributor")).status_code == 200
    wait_unlocked()


def test_a_locked_client_id_is_not_a_locked_user(server: Server) -> None:
    """Wrong client secrets count against the client id (tests/hostile/test_oauth_abuse.py),
    a count of its own: it locks the client, not the user it acts as, nor their password."""
    out = subprocess.run(
        [sys.executable, "-m", "threadsvc", "client", "add", "--config", str(server.config),
         "othermgr"], check=True, capture_output=True, text=True).stdout
    client = dict(line.split(": ", 1) for line in out.strip().splitlines())
    for i in range(ATTEMPTS + 1):
        httpx.post(f"{server.url}/ps/oauth/token", data={
            "grant_type": "client_credentials", "client_id": client["client_id"],
            "client_secret": f"wrong-{i}"})
    refused = httpx.post(f"{server.url}/ps/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client["client_id"],
        "client_secret": client["client_secret"]})
    check_error(refused, 429, "0301")
    assert httpx.get(f"{server.url}/ps/service/groups/other/threads",
                     auth=("othermgr", password("othermgr"))).status_code == 200
    wait_unlocked()
