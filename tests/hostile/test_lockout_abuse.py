"""Locking someone else out (docs/api.md#lockout; `user unlock` in README.md#command-line).

The lock is per username, so five wrong guesses from anywhere lock the real user out. What an
operator gets against that: `threadsvc user unlock NAME`; every failed sign-in and every lock in
the log with the client's address (never the password, and a name full of control characters
cannot forge a line); and `lockout-per-address`, which counts per username and client address
instead (the address as uvicorn sees it: X-Forwarded-For only from a trusted proxy, here the
loopback address the tests connect from).
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.payloads import GROUP, check_error
from tests.support import Server, password, running_server

pytestmark = pytest.mark.slow

ATTEMPTS = 3
SETTINGS = {"lockout-attempts": ATTEMPTS, "lockout-seconds": 600}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("lockout"), **SETTINGS)


@pytest.fixture(scope="module")
def per_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("per-address")
    for server, _ in running_server(directory, **SETTINGS, **{"lockout-per-address": True}):
        yield server


def basic(server: Server, user: str, secret: str, address: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return httpx.get(f"{server.url}{GROUP}/threads", auth=(user, secret), headers=headers)


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "threadsvc", *args[:2], "--config",
                           str(server.config), *args[2:]], check=False, capture_output=True,
                          text=True)


def test_unlock_lifts_the_lock(server: Server) -> None:
    for n in range(ATTEMPTS):
        assert basic(server, "contributor", f"wrong-{n}").status_code == 401
    check_error(basic(server, "contributor", password("contributor")), 429, "0301")
    done = cli(server, "user", "unlock", "contributor")
    assert done.returncode == 0 and "unlocked contributor" in done.stderr, done.stderr
    assert basic(server, "contributor", password("contributor")).status_code == 200
    again = cli(server, "user", "unlock", "contributor")
    assert again.returncode == 0 and "no failed sign-ins" in again.stderr, again.stderr


def test_failures_and_locks_are_logged_with_the_address_not_the_password(server: Server) -> None:
    secrets = [f"Sekr1t-{n}-do-not-log" for n in range(ATTEMPTS + 2)]
    for secret in secrets:
        basic(server, "reviewer", secret, "203.0.113.7")
    log = server.log.read_text()
    failed = re.findall(r"failed sign-in for 'reviewer' from 203\.0\.113\.7 \(\d of 3\)", log)
    assert len(failed) == ATTEMPTS, log[-2000:]
    assert re.search(r"sign-in for 'reviewer' locked for 600 s after 3 failures "
                     r"\(the last from 203\.0\.113\.7\)", log), log[-2000:]
    # The two refusals say the same thing: repeated identical lines are written once a
    # second at most (threadsvc/logrepeat.py), so at least the first is in the log.
    assert 1 <= len(re.findall(r"sign-in refused for 'reviewer' from 203\.0\.113\.7: locked", log)) <= 2
    assert not any(secret in log for secret in secrets)
    cli(server, "user", "unlock", "reviewer")


@pytest.mark.parametrize("name", ["evil\nFORGED line", "evil\rFORGED", "evil\x1b[2JFORGED",
                                  "evil\u2028FORGED"])
def test_a_name_cannot_forge_log_lines(server: Server, name: str) -> None:
    token = base64.b64encode(f"{name}:x".encode()).decode()
    answer = httpx.get(f"{server.url}{GROUP}/threads", headers={"Authorization": f"Basic {token}"})
    check_error(answer, 401, "0100")
    for line in server.log.read_text().splitlines():
        assert not line.startswith("FORGED") and "\x1b" not in line, line


def test_the_console_sign_in_is_logged_too(server: Server) -> None:
    with httpx.Client(base_url=server.url) as http:
        form = http.get("/ps/ui/sign-in", headers={"X-Forwarded-For": "198.51.100.4"})
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        page = http.post("/ps/ui/sign-in", headers={"X-Forwarded-For": "198.51.100.4"},
                         data={"csrf": token.group(1), "username": "othermgr",
                               "password": "console-guess"})
    assert page.status_code == 401
    assert "failed sign-in for 'othermgr' from 198.51.100.4" in server.log.read_text()


def test_per_address_a_stranger_locks_only_themself(per_address: Server) -> None:
    server = per_address
    for n in range(ATTEMPTS):
        assert basic(server, "manager", f"wrong-{n}", "203.0.113.9").status_code == 401
    check_error(basic(server, "manager", password("manager"), "203.0.113.9"), 429, "0301")
    # the real user, from elsewhere, is not locked out; the stranger's count is not cleared
    assert basic(server, "manager", password("manager")).status_code == 200
    assert basic(server, "manager", password("manager"), "198.51.100.1").status_code == 200
    check_error(basic(server, "manager", "another-guess", "203.0.113.9"), 429, "0301")
    # each address has its own attempts: that is the trade-off (documented)
    for n in range(ATTEMPTS):
        assert basic(server, "manager", f"again-{n}", "203.0.113.10").status_code == 401
    check_error(basic(server, "manager", "more", "203.0.113.10"), 429, "0301")
    # unlock lifts the locks of every address
    assert cli(server, "user", "unlock", "manager").returncode == 0
    assert basic(server, "manager", password("manager"), "203.0.113.9").status_code == 200

