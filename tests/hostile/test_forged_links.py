"""Forged credentials that need no password: pre-signed result links (docs/api.md#results-and-links) tampered,
expired, made for another thread, signed with another key or for another purpose, replayed
after the result was deleted; OAuth access tokens forged, expired, signed with a key that was
rotated out; API tokens revoked or made up.

Links answer 403 with error 0400 (410 with 0401 once the result is gone); tokens answer 401
with error 0100 and `WWW-Authenticate: Bearer`. Nothing is served for any of them.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from tests.hostile.payloads import GROUP, check_error, finish, still_serving
from tests.support import Server, running_server, wait_for

pytestmark = pytest.mark.slow

LINK_TTL = 2
TOKEN_TTL = 2
KEY = "test-secret-key-of-the-test-servers"  # tests/support.py Server's secret-key
NEW_KEY = "new-key-of-the-forged-links-rotation"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("links"), **{
        "result-url-ttl": LINK_TTL, "access-token-ttl": TOKEN_TTL, "max-running": 8})


def with_result(server: Server, text: str = "the result") -> str:
    with server.client("contributor") as http:
        started = http.post(f"{GROUP}/threads",
                            data={"job": "sleep", "seconds": "0", "result": text})
        assert started.status_code == 202, started.text
        tid = started.text.split('id="', 1)[1][:32]
        assert finish(http, tid).get("status") == "completed"
    return tid


def link_of(server: Server, tid: str) -> str:
    with server.client("contributor") as http:
        answer = http.get(f"{GROUP}/threads/{tid}/result")
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


def results_url(server: Server, token: str) -> str:
    return f"{server.url}/ps/service/results/{token}"


def client_credentials(server: Server, user: str) -> tuple[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "threadsvc", "client", "add", "--config", str(server.config), user],
        check=True, capture_output=True, text=True).stdout
    values = dict(line.split(": ", 1) for line in out.strip().splitlines())
    return values["client_id"], values["client_secret"]


def access_token(server: Server, client: tuple[str, str]) -> str:
    answer = httpx.post(f"{server.url}/ps/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client[0], "client_secret": client[1]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def bearer(server: Server, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}{GROUP}/threads", headers={"Authorization": f"Bearer {token}"})


def check_refused_token(response: httpx.Response) -> None:
    check_error(response, 401, "0100")
    assert response.headers["www-authenticate"].startswith("Bearer ")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


ADMIN_PAYLOAD = b64(b'{"u":"admin"}')


# -- pre-signed links -------------------------------------------------------------------------
def test_a_genuine_link_works_without_credentials(server: Server) -> None:
    tid = with_result(server)
    download = httpx.get(link_of(server, tid))
    assert download.status_code == 200 and download.content == b"the result"


def test_tampered_links_are_403(server: Server) -> None:
    tid = with_result(server)
    token = token_of(link_of(server, tid))
    payload, stamp, signature = token.split(".")
    middle = len(signature) // 2
    forged = [
        token[:-1],  # truncated
        token + "A",
        (f"{payload}.{stamp}.{signature[:middle]}{'A' if signature[middle] != 'A' else 'B'}"
         f"{signature[middle + 1:]}"),  # one signature character changed
        f"{payload}.{b64(b'9999999999')}.{signature}",  # a later timestamp, same signature
        f"{payload}.{stamp}.",
        f"{payload}..{signature}",
        f"{payload}.{stamp}",
        f"{b64(b'null')}.{stamp}.{signature}",
        "x" * 2000,
        "%00", "...", "a.b.c",
    ]
    for token in forged:
        check_error(httpx.get(results_url(server, token)), 403, "0400", "not valid")
    still_serving(server)


def test_a_link_cannot_be_moved_to_another_thread(server: Server) -> None:
    mine, other = with_result(server, "mine"), with_result(server, "other")
    _, stamp, signature = token_of(link_of(server, mine)).split(".")
    other_payload = b64(('"' + other + '"').encode())
    swapped = f"{other_payload}.{stamp}.{signature}"
    check_error(httpx.get(results_url(server, swapped)), 403, "0400", "not valid")


@pytest.mark.parametrize("how", ["another-key", "another-salt", "no-salt", "access-token"])
def test_links_signed_by_anyone_else_are_403(server: Server, how: str) -> None:
    tid = with_result(server)
    if how == "access-token":  # a genuine access token is not a link
        token = access_token(server, client_credentials(server, "contributor"))
    else:
        key, salt = {"another-key": ("attacker-key", "result-link"),
                     "another-salt": (KEY, "access-token"),
                     "no-salt": (KEY, "itsdangerous")}[how]
        token = URLSafeTimedSerializer(key, salt=salt).dumps(tid)
    check_error(httpx.get(results_url(server, token)), 403, "0400", "not valid")


def test_an_expired_link_is_403(server: Server) -> None:
    tid = with_result(server)
    link = link_of(server, tid)
    assert httpx.get(link).status_code == 200
    time.sleep(LINK_TTL + 1.1)  # itsdangerous counts whole seconds
    check_error(httpx.get(link), 403, "0400", "expired")
    assert httpx.get(link_of(server, tid)).status_code == 200  # a fresh one is signed


def test_a_link_replayed_after_the_thread_is_deleted_is_410(server: Server) -> None:
    tid = with_result(server)
    link = link_of(server, tid)
    with server.client("manager") as http:
        assert http.delete(f"{GROUP}/threads/{tid}").status_code == 204
    check_error(httpx.get(link), 410, "0401", "deleted")
    assert not (server.directory / "data" / "results" / tid).exists()


# -- OAuth access tokens ----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["random", "jwt-none", "another-key", "link-salt", "no-user",
                                 "empty-payload", "basic-looking"])
def test_forged_access_tokens_are_401(server: Server, how: str) -> None:
    header = b64(b'{"alg":"none","typ":"JWT"}')
    token = {
        "random": "not-a-token-at-all",
        "jwt-none": f"{header}.{ADMIN_PAYLOAD}.",
        "another-key": URLSafeTimedSerializer("attacker-key", salt="access-token").dumps(
            {"u": "admin"}),
        "link-salt": URLSafeTimedSerializer(KEY, salt="result-link").dumps({"u": "admin"}),
        "no-user": URLSafeTimedSerializer(KEY, salt="access-token").dumps({"u": "nobody"}),
        "empty-payload": URLSafeTimedSerializer(KEY, salt="access-token").dumps([]),
        "basic-looking": base64.b64encode(b"admin:admin-pw").decode(),
    }[how]
    check_refused_token(bearer(server, token))


def test_a_result_link_is_not_an_access_token(server: Server) -> None:
    check_refused_token(bearer(server, token_of(link_of(server, with_result(server)))))


def test_an_access_token_tampered_or_expired_is_401(server: Server) -> None:
    token = access_token(server, client_credentials(server, "contributor"))
    assert bearer(server, token).status_code == 200
    payload, stamp, signature = token.split(".")
    elevated = f"{ADMIN_PAYLOAD}.{stamp}.{signature}"  # another user, the same signature
    check_refused_token(bearer(server, elevated))
    check_refused_token(bearer(server, f"{payload}.{b64(b'9999999999')}.{signature}"))
    time.sleep(TOKEN_TTL + 1.1)
    wait_for(httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}),
             f"{GROUP}/threads", lambda r: r.status_code == 401, timeout=5)
    check_refused_token(bearer(server, token))


# -- API tokens -------------------------------------------------------------------------------
def test_made_up_api_tokens_are_401(server: Server, tokens: dict[str, str]) -> None:
    real = tokens["contributor"]
    for token in ("tsv_", "tsv_" + "0" * 43, real[:-1], real + "x", real.upper(), "tsv_%00",
                  real.replace("tsv_", "TSV_")):
        check_refused_token(bearer(server, token))


def test_a_revoked_api_token_is_401_within_the_auth_cache(
    server: Server, tokens: dict[str, str]
) -> None:
    token = tokens["approver"]
    assert bearer(server, token).status_code == 200
    subprocess.run([sys.executable, "-m", "threadsvc", "user", "revoke-token", "--config",
                    str(server.config)], input=token + "\n", check=True, capture_output=True,
                   text=True)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        refused = wait_for(http, f"{GROUP}/threads", lambda r: r.status_code == 401, timeout=10)
    check_refused_token(refused)
    assert "revoked" in refused.text


# -- rotation ---------------------------------------------------------------------------------
def test_tokens_and_links_of_a_rotated_out_key_are_refused(server: Server) -> None:
    """The key list rotates: ["new", KEY] still accepts what KEY signed, ["new"] refuses it."""
    tid = with_result(server)
    issued = access_token(server, client_credentials(server, "contributor"))
    assert bearer(server, issued).status_code == 200
    claims = URLSafeTimedSerializer(KEY, salt="access-token").loads(issued)
    config = server.config.read_text()
    try:
        for keys, accepted in (([NEW_KEY, KEY], True), ([NEW_KEY], False)):
            server.stop()
            server.config.write_text(config.replace(
                f'secret-key = ["{KEY}"]', "secret-key = [" + ", ".join(
                    f'"{k}"' for k in keys) + "]"))
            assert NEW_KEY in server.config.read_text()
            server.start()
            # as the server signed them with KEY (made now: their lifetimes are 2 s)
            link = URLSafeTimedSerializer(KEY, salt="result-link").dumps(tid)
            token = URLSafeTimedSerializer(KEY, salt="access-token").dumps(claims)
            download = httpx.get(results_url(server, link))
            if accepted:
                assert download.status_code == 200
                assert bearer(server, token).status_code == 200
            else:
                check_error(download, 403, "0400")
                check_refused_token(bearer(server, token))
    finally:
        server.stop()  # back to KEY signing: the store knows NEW_KEY signed last, so keep it
        server.config.write_text(config.replace(
            f'secret-key = ["{KEY}"]', f'secret-key = ["{KEY}", "{NEW_KEY}"]'))
        server.start()
