"""Credentials (docs/api.md#lockout): Basic, API tokens, OAuth client credentials, lockout."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support import Clock, InProcess, Server, password, running_server

LOCKING = {"lockout-attempts": 3, "lockout-seconds": 2, "access-token-ttl": 2,
           "purge-interval": 0.5}


@pytest.fixture(scope="module")
def locking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for server, _ in running_server(tmp_path_factory.mktemp("locking"), **LOCKING):
        yield server


@pytest.fixture(scope="module")
def locking_here(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`locking`, served in this process: its clock can be moved on (conftest's `clock`)."""
    directory = tmp_path_factory.mktemp("locking-here")
    for server, _ in running_server(directory, kind=InProcess, **LOCKING):
        yield server


def _error_id(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/xml;charset=utf-8"
    return response.text.split('<error id="', 1)[1][:4]


def _client(server: Server, user: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "threadsvc", "client", "add", "--config", str(server.config), user],
        check=True, capture_output=True, text=True,
    ).stdout
    values = dict(line.split(": ", 1) for line in out.strip().splitlines())
    return values["client_id"], values["client_secret"]


def test_api_token(server: Server, tokens: dict[str, str]) -> None:
    headers = {"Authorization": f"Bearer {tokens['admin']}"}
    assert httpx.get(f"{server.url}/ps/service/threads", headers=headers).status_code == 200
    bad = httpx.get(f"{server.url}/ps/service/threads", headers={"Authorization": "Bearer tsv_x"})
    assert bad.status_code == 401 and _error_id(bad) == "0100"
    assert "Bearer" in bad.headers["www-authenticate"]


@pytest.mark.slow  # waits on real time
def test_oauth_client_credentials(locking: Server) -> None:
    client_id, secret = _client(locking, "contributor")
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    answer = httpx.post(f"{locking.url}/ps/oauth/token", data=form)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 2
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    listed = httpx.get(f"{locking.url}/ps/service/groups/dev/threads", headers=headers)
    assert listed.status_code == 200
    # client id and secret in Basic work too
    basic = httpx.post(f"{locking.url}/ps/oauth/token", data={"grant_type": "client_credentials"},
                       auth=(client_id, secret))
    assert basic.status_code == 200
    wrong = httpx.post(f"{locking.url}/ps/oauth/token", data={**form, "client_secret": "x"})
    assert wrong.status_code == 401 and _error_id(wrong) == "0100"
    grant = httpx.post(f"{locking.url}/ps/oauth/token", data={**form, "grant_type": "password"})
    assert grant.status_code == 400 and "grant_type" in grant.text
    tampered = {"Authorization": f"Bearer {body['access_token'][:-2]}xx"}
    assert httpx.get(f"{locking.url}/ps/service/groups/dev/threads", headers=tampered).status_code == 401
    time.sleep(3.1)  # access-token-ttl is 2 s (itsdangerous counts whole seconds)
    expired = httpx.get(f"{locking.url}/ps/service/groups/dev/threads", headers=headers)
    assert expired.status_code == 401 and _error_id(expired) == "0100"


def test_lockout_after_failed_passwords(locking_here: Server, clock: Clock) -> None:
    url = "/ps/service/groups/dev/threads"
    with locking_here.client() as http:
        for _ in range(3):
            assert http.get(url, auth=("manager", "wrong")).status_code == 401
        locked = http.get(url, auth=("manager", password("manager")))
        assert locked.status_code == 429 and _error_id(locked) == "0301"
        assert int(locked.headers["retry-after"]) >= 1
        # another user is not affected
        assert http.get(url, auth=("contributor", password("contributor"))).status_code == 200
        clock.advance(2.1)
        assert http.get(url, auth=("manager", password("manager"))).status_code == 200


def test_unknown_users_are_counted_too(locking: Server) -> None:
    url = f"{locking.url}/ps/service/groups/dev/threads"
    codes = [httpx.get(url, auth=("nobody", "x")).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


def test_counts_of_failed_sign_ins_are_forgotten_once_over(
    locking_here: Server, clock: Clock
) -> None:
    """Each made-up name leaves a count; the purge interval deletes it once the window is over
    (else a stream of random names would grow the table for ever)."""
    name = f"ghost-{time.monotonic_ns()}"
    clock.stop()  # the window ends when the clock says, however slow the machine
    with locking_here.client(auth=(name, "x")) as http:
        assert http.get("/ps/service/threads").status_code == 401
    database = locking_here.directory / "threadsvc.db"

    def counted() -> bool:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            return db.execute("SELECT 1 FROM sign_in_attempts WHERE username = ?",
                              (name,)).fetchone() is not None

    assert counted()
    clock.advance(2.1)
    deadline = time.monotonic() + 10
    while counted():
        assert time.monotonic() < deadline, "the count was never forgotten"
        time.sleep(0.1)


def _cli(server: Server, *args: str, stdin: str | None = None) -> str:
    command = [sys.executable, "-m", "threadsvc", *args[:2], "--config", str(server.config)]
    return subprocess.run([*command, *args[2:]], input=stdin, check=True, capture_output=True,
                          text=True).stdout


def _until(check: object, limit: float) -> float:
    """Seconds until `check()` holds, polling; fails after `limit` seconds."""
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < limit, "the change was not honoured in time"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.slow  # waits on real time
def test_revocations_are_honoured_within_the_auth_cache_time(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Tokens and roles are reused for auth-cache-seconds (1 s here): a revoked token and a
    removed member are refused after that, and for good."""
    for server, tokens in running_server(tmp_path_factory.mktemp("cache"), **{"auth-cache-seconds": 1}):
        _revoke_and_remove(server, tokens["contributor"])


def _revoke_and_remove(server: Server, member_token: str) -> None:
    url = f"{server.url}/ps/service/groups/dev/threads"
    token = _cli(server, "user", "token", "reviewer").strip()
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/0/progress", headers=bearer).status_code == 404  # may read
    _cli(server, "user", "revoke-token", stdin=token)
    _until(lambda: httpx.get(url, headers=bearer).status_code == 401, 1 + 3.0)
    assert all(httpx.get(url, headers=bearer).status_code == 401 for _ in range(5))

    member = {"Authorization": f"Bearer {member_token}"}
    assert httpx.get(url, headers=member).status_code == 200
    _cli(server, "member", "remove", "dev", "contributor")
    _until(lambda: httpx.get(url, headers=member).status_code == 403, 1 + 3.0)
    _cli(server, "member", "add", "dev", "contributor", "contributor")
    _until(lambda: httpx.get(url, headers=member).status_code == 200, 1 + 3.0)
