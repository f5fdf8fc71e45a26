"""Credentials that outlive what they stand for (docs/api.md#authentication: a user's sessions and access tokens end
when the user is removed or disabled, and sessions also when the password changes).

The attacks: a console cookie kept working after the password changed; an OAuth access token
(which carried only the username) kept answering after its client was removed, and after its
user was removed and a new user of the same name was made an administrator. Now a session
records the user's credential version (bumped by `user passwd`, `user disable`, and `--demo`'s
new passwords), an access token names its client and the user's id, `user disable` refuses
every credential and deletes the user's API tokens and OAuth clients, `user revoke-tokens`
does so but for the password, and `user remove` takes them with it. On both stores, with `auth-cache-seconds = 0` (else each takes effect within it).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import NewStore
from tests.hostile.payloads import GROUP, check_error
from tests.support import Server, password, running_server, wait_final

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("credentials")
    yield from running_server(directory, **{"db": new_store(directory), "auth-cache-seconds": 0})


def cli(server: Server, *args: str, stdin: str = "") -> str:
    done = subprocess.run([sys.executable, "-m", "threadsvc", *args[:2], "--config",
                           str(server.config), *args[2:]], input=stdin, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def signed_in(server: Server, user: str, secret: str) -> Iterator[httpx.Client]:
    """A client holding a console session of `user`."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        form = http.get("/ps/ui/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        answer = http.post("/ps/ui/sign-in", data={
            "csrf": token.group(1), "username": user, "password": secret})
        assert answer.status_code == 303, answer.text
        yield http


def new_client(server: Server, user: str) -> tuple[str, str]:
    values = dict(line.split(": ", 1) for line in cli(server, "client", "add", user).splitlines())
    return values["client_id"], values["client_secret"]


def access_token(server: Server, client: tuple[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/ps/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client[0], "client_secret": client[1]})


def bearer(server: Server, token: str, path: str = f"{GROUP}/threads") -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"})


def basic(server: Server, user: str, secret: str) -> httpx.Response:
    return httpx.get(f"{server.url}{GROUP}/threads", auth=(user, secret))


def test_a_password_change_ends_console_sessions(server: Server) -> None:
    old = password("contributor")
    with signed_in(server, "contributor", old) as session, \
            signed_in(server, "contributor", old) as other_tab:
        assert session.get(f"{GROUP}/threads").status_code == 200
        assert basic(server, "contributor", old).status_code == 200  # now remembered briefly
        cli(server, "user", "passwd", "contributor", stdin="a-new-pw\n")
        for http in (session, other_tab):
            check_error(http.get(f"{GROUP}/threads"), 401, "0100")
            page = http.get("/ps/ui/groups", follow_redirects=False)
            assert page.status_code in (302, 303) and "sign-in" in page.headers["location"]
    check_error(basic(server, "contributor", old), 401, "0100")  # the remembered one too
    assert basic(server, "contributor", "a-new-pw").status_code == 200
    with signed_in(server, "contributor", "a-new-pw") as fresh:
        assert fresh.get(f"{GROUP}/threads").status_code == 200
        cli(server, "user", "passwd", "contributor", stdin=old + "\n")
        check_error(fresh.get(f"{GROUP}/threads"), 401, "0100")


def test_disabling_refuses_every_credential_and_keeps_the_threads(
    server: Server, tokens: dict[str, str]
) -> None:
    user = "approver"
    client = new_client(server, user)
    issued = access_token(server, client).json()["access_token"]
    with server.client(user) as http:
        started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
        assert started.status_code == 202
        tid = re.search(r'id="([0-9a-f]{32})"', started.text)
        assert tid
        wait_final(http, tid.group(1))
    with signed_in(server, user, password(user)) as session:
        cli(server, "user", "disable", user)
        check_error(session.get(f"{GROUP}/threads"), 401, "0100")
    check_error(basic(server, user, password(user)), 401, "0100")
    check_error(bearer(server, tokens[user]), 401, "0100")
    check_error(bearer(server, issued), 401, "0100")
    check_error(access_token(server, client), 401, "0100")
    with server.client("admin") as admin:  # the threads stay
        assert admin.get(f"{GROUP}/threads/{tid.group(1)}/progress").status_code == 200
    listed = cli(server, "user", "list")
    assert re.search(rf"^{user}\s+disabled$", listed, re.MULTILINE), listed
    cli(server, "user", "enable", user)
    assert basic(server, user, password(user)).status_code == 200
    # what disabling ended stays ended: the API token and the client were deleted
    check_error(bearer(server, tokens[user]), 401, "0100")
    check_error(access_token(server, client), 401, "0100")
    check_error(bearer(server, issued), 401, "0100")


def test_removal_ends_everything_and_a_namesake_inherits_nothing(server: Server) -> None:
    cli(server, "user", "add", "temp-admin", "--admin", "--password-stdin", stdin="t-pw\n")
    token = cli(server, "user", "token", "temp-admin").strip()
    issued = access_token(server, new_client(server, "temp-admin")).json()["access_token"]
    assert bearer(server, issued, "/metrics").status_code == 200
    with signed_in(server, "temp-admin", "t-pw") as session:
        assert session.get(f"{GROUP}/threads").status_code == 200  # the cookie's path is /ps
        cli(server, "user", "remove", "temp-admin")
        check_error(session.get(f"{GROUP}/threads"), 401, "0100")
        check_error(bearer(server, issued, "/metrics"), 401, "0100")
        cli(server, "user", "add", "temp-admin", "--admin", "--password-stdin", stdin="t-pw\n")
        # the namesake is a new administrator: nothing of the old one's works for it
        check_error(session.get(f"{GROUP}/threads"), 401, "0100")
        check_error(bearer(server, issued, "/metrics"), 401, "0100")
        check_error(bearer(server, token, "/metrics"), 401, "0100")
    cli(server, "user", "remove", "temp-admin")


def test_revoking_a_users_tokens_ends_all_but_the_password(server: Server) -> None:
    """`user revoke-tokens`: API tokens, OAuth clients (and so their access tokens) and console
    sessions end; the password still works."""
    cli(server, "user", "add", "temp-user", "--password-stdin", stdin="t-pw\n")
    cli(server, "member", "add", "dev", "temp-user", "contributor")
    tokens = [cli(server, "user", "token", "temp-user").strip() for _ in range(2)]
    client = new_client(server, "temp-user")
    issued = access_token(server, client).json()["access_token"]
    with signed_in(server, "temp-user", "t-pw") as session:
        for token in (*tokens, issued):
            assert bearer(server, token).status_code == 200
        assert session.get(f"{GROUP}/threads").status_code == 200
        done = subprocess.run([sys.executable, "-m", "threadsvc", "user", "revoke-tokens",
                               "--config", str(server.config), "temp-user"],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert "revoked 2 API token(s) and 1 client(s) of temp-user" in done.stderr
        check_error(session.get(f"{GROUP}/threads"), 401, "0100")
    for token in (*tokens, issued):
        check_error(bearer(server, token), 401, "0100")
    check_error(access_token(server, client), 401, "0100")
    assert basic(server, "temp-user", "t-pw").status_code == 200
    cli(server, "user", "remove", "temp-user")


def test_removing_a_client_ends_its_access_tokens(server: Server) -> None:
    client = new_client(server, "admin")
    issued = access_token(server, client).json()["access_token"]
    assert bearer(server, issued, "/metrics").status_code == 200
    assert client[0] in cli(server, "client", "list")
    cli(server, "client", "remove", client[0])
    assert client[0] not in cli(server, "client", "list")
    check_error(bearer(server, issued, "/metrics"), 401, "0100")
    check_error(access_token(server, client), 401, "0100")


@pytest.mark.parametrize("forged", [
    {"u": "admin"},  # the old form: a username only
    {"c": "tsc_nope", "u": 1},
    {"c": None, "u": 1},
    {"c": "tsc_x", "u": True},
    {"c": "tsc_x", "u": "1"},
    [1, 2],
])
def test_access_tokens_signed_right_but_naming_nothing_are_refused(
    server: Server, forged: object
) -> None:
    from itsdangerous import URLSafeTimedSerializer

    token = URLSafeTimedSerializer("test-secret-key-of-the-test-servers", salt="access-token").dumps(forged)
    check_error(bearer(server, token, "/metrics"), 401, "0100")
