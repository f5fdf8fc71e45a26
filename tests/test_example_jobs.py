"""The example job package (examples/wordcount), installed beside threadsvc, on a real server:
its job is found through the entry point group `threadsvc.jobs`, offered by the console's start
form with its parameters, and runs from a multipart start to a JSON result."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

from tests.console.conftest import UI
from tests.console.test_session import signed_in
from tests.support import GROUP, Server, running_server, thread_id, wait_final
from threadsvc.runner.registry import ENTRY_POINT_GROUP

TEXT = b"to be or not to be\nthat is the question\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for running, _ in running_server(tmp_path_factory.mktemp("example")):
        yield running


def test_the_package_declares_its_entry_point() -> None:
    (entry,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "wordcount"]
    assert entry.value == "wordcount.jobs"


def test_the_job_runs_on_a_real_server(server: Server) -> None:
    with server.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads", data={"job": "wordcount", "top": "2"},
                           files=[("text", ("hamlet.txt", TEXT, "text/plain"))])
        assert answer.status_code == 202, answer.text
        tid = thread_id(answer)
        final = wait_final(http, tid)
        assert 'status="completed"' in final.text, final.text
        link = http.get(f"{GROUP}/threads/{tid}/result")
        assert link.status_code == 302, link.text
        result = http.get(link.headers["location"])
    assert result.headers["content-type"].startswith("application/json")
    assert json.loads(result.content) == {
        "file": "hamlet.txt", "lines": 2, "words": 10, "distinct": 8,
        "top": [{"word": "to", "count": 2}, {"word": "be", "count": 2}],
    }


def test_a_bad_parameter_of_the_job_is_a_400(server: Server) -> None:
    with server.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads", data={"job": "wordcount", "top": "0"},
                           files=[("text", ("a.txt", TEXT, "text/plain"))])
    assert answer.status_code == 400
    assert "Parameter 'top'" in answer.text


def test_the_console_offers_it_with_its_parameters(server: Server) -> None:
    with signed_in(server, "contributor") as client:
        form = client.get(f"{UI}/groups/dev/start", params={"job": "wordcount"})
    assert form.status_code == 200, form.text
    assert 'name="text"' in form.text and 'type="file"' in form.text
    assert 'name="top"' in form.text and 'name="case"' in form.text
