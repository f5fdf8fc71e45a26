"""A first look at the app, served in this process."""

from __future__ import annotations

import pytest

from tests.support import Server, wait_for


@pytest.fixture(scope="module")
def world(in_process_world: tuple[Server, dict[str, str]]) -> tuple[Server, dict[str, str]]:
    return in_process_world


def test_start_and_complete(server: Server) -> None:
    with server.client("contributor") as http:
        started = http.post(
            "/ps/service/groups/dev/threads", data={"job": "sleep", "seconds": "0.2", "steps": "2"}
        )
        assert started.status_code == 202, started.text
        location = started.headers["content-location"]
        done = wait_for(http, location, lambda r: 'status="completed"' in r.text)
        assert done.headers["content-type"] == "application/xml;charset=utf-8"


def test_outsider_gets_403_before_the_job_is_looked_up(server: Server) -> None:
    with server.client("outsider") as http:
        answer = http.post("/ps/service/groups/dev/threads", data={"job": "no-such-job"})
    assert answer.status_code == 403 and 'id="0101"' in answer.text


def test_openapi_under_api_prefix(server: Server) -> None:
    with server.client() as http:
        assert http.get("/ps/api/openapi.json").json()["openapi"].startswith("3.")
