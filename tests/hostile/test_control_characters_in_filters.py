"""Control characters in the console's filters and query parameters (and the API's list
parameters, which share the rule): a NUL reached PostgreSQL, which refused it, and the page was a
503; now every control character (C0, DEL, C1) in a text filter is a 400 naming the
parameter, on both stores, and the server goes on serving. Numbers and statuses with them are
400s too; a group name or id with them matches no group (404)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import NewStore
from tests.hostile.payloads import GROUP, check_error, still_serving
from tests.support import Server, running_server

pytestmark = pytest.mark.slow

CONTROLS = ["%00", "%01", "%09", "%0A", "%0D", "%1B", "%1F", "%7F", "%C2%80", "%C2%9F",
            "a%00", "%00b", "dev%00", "contributor%00", "sleep%00x"]


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    directory: Path = tmp_path_factory.mktemp("controls")
    yield from running_server(directory, db=new_store(directory))


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        form = client.get("/ps/ui/sign-in")
        csrf = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        signed = client.post("/ps/ui/sign-in", data={
            "csrf": csrf, "username": "admin", "password": "admin-pw"})
        assert signed.status_code == 303, signed.text
        yield client


@pytest.mark.parametrize("page", ["/ps/ui/groups/dev/threads", "/ps/ui/threads"])
@pytest.mark.parametrize("name", ["user", "job", "status", "page", "q", "created-from", "sort",
                                  "pagesize"])
def test_console_filters(server: Server, browser: httpx.Client, page: str, name: str) -> None:
    for control in CONTROLS:
        answer = browser.get(f"{page}?{name}={control}")
        assert answer.status_code == 400, (name, control, answer.status_code, answer.text[:300])
        assert answer.headers["content-type"].startswith("text/html")
    plain = {"user": "contributor", "job": "sleep", "status": "all", "page": "1", "q": "sleep",
             "created-from": "2026-01-01", "sort": "ended", "pagesize": "25"}[name]
    for value in ("", plain, f"%20{plain}%20"):  # plain values (spaces around them) still work
        assert browser.get(f"{page}?{name}={value}").status_code == 200, (name, value)
    still_serving(server)


def test_console_filters_together_and_repeated(server: Server, browser: httpx.Client) -> None:
    for query in ("user=admin&job=sleep%00", "status=all&user=%00&page=2",
                  "user=ok&user=%00", "job=%E2%80%8B%00", "page=2%00&user=admin"):
        answer = browser.get(f"/ps/ui/groups/dev/threads?{query}")
        assert answer.status_code == 400, (query, answer.status_code)
    assert browser.get("/ps/ui/groups/dev/threads?user=admin&job=sleep").status_code == 200
    still_serving(server)


@pytest.mark.parametrize("ref", ["%00", "dev%00", "240%00", "%7F", "%0A"])
def test_console_group_names(server: Server, browser: httpx.Client, ref: str) -> None:
    assert browser.get(f"/ps/ui/groups/{ref}/threads").status_code == 404
    assert browser.get(f"/ps/ui/groups/open?name={ref}").status_code == 404
    assert browser.get(f"/ps/ui/groups/{ref}/start?job=sleep").status_code == 404
    still_serving(server)


LIST_PARAMETERS = {"username": "x", "type": "x", "status": "all", "since": "1", "until": "1",
                   "deletion-before": "1", "page": "1", "pagesize": "10", "id": "ab12",
                   "name": "x", "text": "x", "ended-since": "1", "ended-until": "1",
                   "sort": "ended", "order": "asc"}


@pytest.mark.parametrize("name", list(LIST_PARAMETERS))
def test_api_list_parameters(server: Server, name: str) -> None:
    with server.client("admin") as http:
        for control in CONTROLS:
            check_error(http.get(f"{GROUP}/threads?{name}={control}"), 400, "0201", name)
            check_error(http.get(f"/ps/service/threads?{name}={control}"), 400, "0201", name)
        assert http.get(f"{GROUP}/threads?{name}={LIST_PARAMETERS[name]}").status_code == 200


@pytest.mark.parametrize("name", ["since", "limit", "level"])
def test_api_log_parameters(server: Server, name: str) -> None:
    with server.client("admin") as http:
        started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
        tid = started.text.split('id="', 1)[1][:32]
        logs = f"{GROUP}/threads/{tid}/logs"
        for control in CONTROLS:
            check_error(http.get(f"{logs}?{name}={control}"), 400, "0201", name)
        plain = {"since": "0", "limit": "5", "level": "INFO"}[name]
        assert http.get(f"{logs}?{name}={plain}").status_code == 200
