"""An Idempotency-Key names one request of one user in one place, on SQLite and PostgreSQL.

Attack (reported): a key first used in group A, sent with other parameters to group B, was
answered 202 with A's thread and `Location` headers under B, where that thread cannot be
reached. Now a key belongs to (user, group or server level): the same key elsewhere starts a
thread there; the same key in the same place with other parameters is 409 `0208` and starts
nothing; the same request again (fields in another order, XML instead of a form, a default
given or left out, the same file uploaded again) replays the first thread. Concurrent repeats
start one thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from tests.conftest import NewStore
from tests.hostile.payloads import check_error
from tests.support import Server, running_server

DEV, OTHER, SERVER = "/ps/service/groups/dev", "/ps/service/groups/other", "/ps/service"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, new_store: NewStore,
          ) -> Iterator[tuple[Server, dict[str, str]]]:
    directory = tmp_path_factory.mktemp("idempotency")
    yield from running_server(directory, **{"db": new_store(directory), "max-running": 8})


def _id(answer: httpx.Response) -> str:
    assert answer.status_code == 202, answer.text
    return str(etree.fromstring(answer.content).get("id"))


def _total(http: httpx.Client) -> int:
    total = 0
    for base in (DEV, OTHER, SERVER):
        answer = http.get(f"{base}/threads", params={"status": "all", "pagesize": 1})
        total += int(etree.fromstring(answer.content).get("total") or "0")
    return total


def _start(http: httpx.Client, base: str, key: str, **fields: str) -> httpx.Response:
    return http.post(f"{base}/threads", data={"job": "sleep", **fields},
                     headers={"Idempotency-Key": key})


def test_a_key_is_scoped_to_its_group_and_the_server_level(server: Server) -> None:
    with server.client("admin") as http:
        in_dev = _id(_start(http, DEV, "k-scope", seconds="0"))
        elsewhere = _start(http, OTHER, "k-scope", seconds="0.1")
        in_other = _id(elsewhere)
        assert in_other != in_dev and "Idempotent-Replayed" not in elsewhere.headers
        # its headers lead to its own thread, reachable where they say
        assert http.get(elsewhere.headers["content-location"]).status_code == 200
        assert f'id="{in_other}"' in http.get(elsewhere.headers["location"].removesuffix("/result"),
                                              follow_redirects=True).text
        at_server = _id(_start(http, SERVER, "k-scope", seconds="0.2"))
        assert at_server not in (in_dev, in_other)
        # each place replays its own thread
        assert _id(_start(http, DEV, "k-scope", seconds="0")) == in_dev
        assert _id(_start(http, OTHER, "k-scope", seconds="0.1")) == in_other
        assert _id(_start(http, SERVER, "k-scope", seconds="0.2")) == at_server
        # by id as by name: the same group
        assert _id(_start(http, "/ps/service/groups/240", "k-scope", seconds="0")) == in_dev


@pytest.mark.parametrize("other", [
    {"seconds": "0.5"},                      # another value
    {"seconds": "0", "result": "x"},         # one more parameter
    {},                                      # one fewer (its default differs from the first)
    {"seconds": "0", "steps": "3"},
])
def test_the_same_key_with_other_parameters_is_409(server: Server, other: dict[str, str]) -> None:
    key = "k-conflict-" + "-".join(f"{k}={v}" for k, v in sorted(other.items()))
    with server.client("contributor") as http:
        first = _id(_start(http, DEV, key, seconds="0"))
        before = _total(http)
        check_error(_start(http, DEV, key, **other), 409, "0208", "other parameters")
        check_error(http.post(f"{DEV}/threads", data={"job": "validate"},
                              files=[("documents", ("d.xml", b"<a/>", "text/xml"))],
                              headers={"Idempotency-Key": key}), 409, "0208")
        assert _total(http) == before
        assert _id(_start(http, DEV, key, seconds="0")) == first  # the first request replays


def test_the_same_request_replays_however_it_is_sent(server: Server) -> None:
    with server.client("contributor") as http:
        key = {"Idempotency-Key": "k-forms"}
        first = _id(http.post(f"{DEV}/threads", data={"job": "sleep", "seconds": "0",
                                                      "result": "r"}, headers=key))
        before = _total(http)
        for answer in (
            http.post(f"{DEV}/threads", data={"result": "r", "seconds": "0", "job": "sleep"},
                      headers=key),
            http.post(f"{DEV}/threads?job=sleep", data={"result": "r", "seconds": "0.0"},
                      headers=key),
            http.post(f"{DEV}/threads", content=b'<job name="sleep"><param name="result">r'
                      b'</param><param name="seconds" value="0"/></job>',
                      headers={**key, "Content-Type": "application/xml"}),
            http.post(f"{DEV}/threads", files=[("job", (None, b"sleep")), ("seconds", (None, b"0")),
                                               ("result", (None, b"r")), ("steps", (None, b"10"))],
                      headers=key),  # steps=10 is the default: the same request
        ):
            assert _id(answer) == first and answer.headers["idempotent-replayed"] == "true"
        assert _total(http) == before


def test_a_retried_upload_replays_and_other_content_is_409(server: Server) -> None:
    def upload(http: httpx.Client, content: bytes, name: str = "d.xml") -> httpx.Response:
        return http.post(f"{DEV}/threads", data={"job": "validate"},
                         files=[("documents", (name, content, "text/xml"))],
                         headers={"Idempotency-Key": "k-upload"})

    document = b"<a>" + b"x" * 200_000 + b"</a>"
    with server.client("contributor") as http:
        first = _id(upload(http, document))
        before = _total(http)
        again = upload(http, document)
        assert _id(again) == first and again.headers["idempotent-replayed"] == "true"
        check_error(upload(http, document[:-4] + b"y</a>"), 409, "0208")  # same size and name
        check_error(upload(http, document, "e.xml"), 409, "0208")
        assert _total(http) == before
    uploads = server.directory / "data" / "uploads"
    kept = [p.name for p in uploads.iterdir()] if uploads.exists() else []
    assert kept in ([], [first])  # the repeats kept nothing


def test_concurrent_repeats_start_one_thread(server: Server) -> None:
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def repeat(fields: dict[str, str]) -> None:
        with server.client("manager") as http:
            answer = _start(http, DEV, "k-race", **fields)
        with lock:
            answers.append(answer)

    with server.client("manager") as http:
        before = _total(http)
    workers = [threading.Thread(target=repeat, args=({"seconds": "0"} if i % 2 else
                                                     {"seconds": "0", "steps": "10"},))
               for i in range(12)]
    workers += [threading.Thread(target=repeat, args=({"seconds": "1"},)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with server.client("manager") as http:
        assert _total(http) == before + 1
    created = {_id(a) for a in answers if a.status_code == 202}
    assert len(created) == 1
    statuses = sorted(a.status_code for a in answers)
    # whichever request came first won; the others with its parameters replay, the rest are 409
    assert set(statuses) <= {202, 409} and statuses.count(202) in (4, 12), statuses
