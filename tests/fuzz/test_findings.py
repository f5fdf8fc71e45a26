"""Server bugs the fuzzers found (docs/reliability.md, "Fuzzing"): one minimal regression test
each. All three are fixed; a new one gets a strict xfail while it is open, and an entry in
tests/fuzz/checks.py KNOWN_BUGS, which lets the fuzzers step over the bug meanwhile.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests import support
from tests.fuzz.checks import GROUP, XML_TYPE, check_answer
from tests.pg import PostgresCluster
from tests.support import Server, password, running_server

pytestmark = pytest.mark.slow


def error_id(response: httpx.Response) -> str:
    assert response.headers["content-type"] == XML_TYPE, response.headers
    root = etree.fromstring(response.content)
    assert root.tag == "error", response.text
    return str(root.get("id"))


def start(server: Server, **fields: str) -> str:
    with server.client("contributor") as http:
        return support.start(http, GROUP, **fields)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for server, _ in running_server(tmp_path_factory.mktemp("findings")):
        yield server


@pytest.fixture(scope="module")
def pg_server(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresCluster
) -> Iterator[Server]:
    directory: Path = tmp_path_factory.mktemp("findings-pg")
    settings = {"db": postgres.new_database_url(), "webhook-allow-private": True}
    for server, _ in running_server(directory, **settings):
        yield server


# -- 1. `?wait=²` on progress is a 500 -------------------------------------------------------------
@pytest.mark.parametrize("value", ["²", "³", "¹", "²0"])
def test_wait_with_a_non_ascii_digit_is_400(sqlite_server: Server, value: str) -> None:
    thread = start(sqlite_server, seconds="0", steps="1")
    with sqlite_server.client("contributor") as http:
        response = http.get(f"{GROUP}/threads/{thread}/progress", params={"wait": value})
    assert response.status_code == 400, response.text
    assert error_id(response) == "0201"
    assert "wait" in response.text


# -- 2. PostgreSQL: a NUL in text the store receives is a 503 --------------------------------------
def _basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


NUL_CASES = {
    # name: (method, path, request kwargs, the answer expected instead of 503)
    "basic-username": (
        "GET",
        f"{GROUP}/threads",
        {"headers": _basic("ad\x00min", "x")},
        {401},
    ),
    "list-username-filter": (
        "GET",
        f"{GROUP}/threads",
        {
            "params": {"username": "a\x00b"},
            "headers": _basic("contributor", password("contributor")),
        },
        {200, 400},
    ),
    "oauth-client-id": (
        "POST",
        "/ps/oauth/token",
        {"data": {"grant_type": "client_credentials", "client_id": "a\x00", "client_secret": "b"}},
        {401},
    ),
    "webhook-secret": (
        "POST",
        f"{GROUP}/webhooks",
        {
            "data": {"url": "http://127.0.0.1:9/x", "secret": "a-webhook-secret\x00"},
            "headers": _basic("manager", password("manager")),
        },
        {201, 400},
    ),
}


@pytest.mark.parametrize("case", list(NUL_CASES))
def test_nul_in_client_text_is_not_503_on_postgres(pg_server: Server, case: str) -> None:
    method, path, kwargs, expected = NUL_CASES[case]
    with httpx.Client(base_url=pg_server.url, timeout=30, trust_env=False) as http:
        response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
    check_answer(
        method, path, response.status_code, response.headers, response.content, False, count=False
    )
    assert response.status_code in expected, response.text


# -- 3. `Authorization: Basic` followed by bytes that are not ASCII is a 500 ---------------------
@pytest.mark.parametrize(
    "method, path",
    [("GET", f"{GROUP}/threads"), ("GET", "/ps/service/threads"), ("POST", "/ps/oauth/token")],
)
@pytest.mark.parametrize("value", [b"Basic \xff\xfe", b"Basic \xc3\xa9t\xc3\xa9"])
def test_basic_credentials_that_are_not_ascii_are_401(
    sqlite_server: Server, method: str, path: str, value: bytes
) -> None:
    data = {"grant_type": "client_credentials"} if method == "POST" else None
    with httpx.Client(base_url=sqlite_server.url, timeout=30, trust_env=False) as http:
        response = http.request(method, path, headers={b"Authorization": value}, data=data)
    check_answer(
        method, path, response.status_code, response.headers, response.content, False, count=False
    )
    assert response.status_code == 401, response.text
    assert error_id(response) == "0100"
