"""Control characters, NULs and overlong values in every query parameter and form field of the
console's administration pages, on both stores (PostgreSQL refuses a NUL in text): each is a
page saying what is wrong (400) or that no such thing exists (404), never a 500 or a 503, and
nothing is written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NewStore
from tests.hostile.payloads import still_serving
from tests.support import Server, running_server

pytestmark = pytest.mark.slow

ADMIN = "/ps/ui/admin"
BAD = ["\x00", "a\x00b", "\x1b[2J", "\x7f", "\u0085", "x" * 5000]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    directory: Path = tmp_path_factory.mktemp("admin-inputs")
    yield from running_server(directory, db=new_store(directory),
                              **{"webhook-allow-private": True})


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[tuple[httpx.Client, str]]:
    """A console session of the administrator, and its CSRF token."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        form = client.get("/ps/ui/sign-in")
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = client.post("/ps/ui/sign-in", data={
            "csrf": csrf, "username": "admin", "password": "admin-pw"})
        assert signed.status_code == 303, signed.text
        page = client.get(ADMIN)
        yield client, page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def audit_size(server: Server) -> int:
    with server.client("admin") as http:
        return http.get("/ps/service/audit").text.count("<entry")


GETS = [
    ("/users", "q"), ("/users", "page"), ("/user", "name"), ("/user/disable", "name"),
    ("/user/revoke", "name"), ("/groups/dev/members/remove", "name"),
    ("/clients/remove", "id"), ("/audit", "user"), ("/audit", "action"), ("/audit", "from"),
    ("/audit", "since"), ("/audit", "before"),
]
POSTS = [
    ("/users", {"username": "u", "password": "p", "again": "p"}),
    ("/user/password", {"username": "contributor", "password": "p", "again": "p"}),
    ("/user/disable", {"username": "contributor"}),
    ("/user/unlock", {"username": "contributor"}),
    ("/user/revoke", {"username": "contributor"}),
    ("/groups", {"name": "g"}),
    ("/groups/dev/members", {"username": "outsider", "role": "reviewer"}),
    ("/groups/dev/members/remove", {"username": "reviewer"}),
    ("/clients/remove", {"client": "tsc_x"}),
    ("/groups/dev/webhooks", {"url": "http://127.0.0.1:9/h", "secret": "s" * 20,
                              "events": "final"}),
]


def test_query_parameters(server: Server, browser: tuple[httpx.Client, str]) -> None:
    client, _ = browser
    for path, name in GETS:
        for value in BAD:
            answer = client.get(ADMIN + path, params={name: value})
            assert answer.status_code in (200, 400, 404), (path, name, repr(value[:9]),
                                                           answer.status_code)
            assert answer.headers["content-type"].startswith("text/html")
    still_serving(server)


def test_form_fields(server: Server, browser: tuple[httpx.Client, str]) -> None:
    client, csrf = browser
    before = audit_size(server)
    for path, fields in POSTS:
        for name in fields:
            for value in BAD:
                if name == "events" and not value.strip():
                    continue  # blank (NEL is whitespace): the default, as on the API
                data = {"csrf": csrf, **fields, name: value}
                answer = client.post(ADMIN + path, data=data)
                assert answer.status_code in (400, 403, 404), (path, name, repr(value[:9]),
                                                               answer.status_code)
    assert audit_size(server) == before  # nothing was changed
    with server.client("contributor") as http:
        assert http.get("/ps/service/groups/dev/threads").status_code == 200  # not disabled
    still_serving(server)
