"""What real PageSeeder clients require of the answers (docs/api.md#formats, #the-thread-document, #services, #errors).

- A Java client strips only a literal `;charset=` from Content-Type, so every XML answer must
  say exactly `application/xml;charset=utf-8`, whatever its status.
- A Rust client deserialises every `<thread>` with `id`, `name`, `username`, `groupid` and
  `status` required, the status one of the exact lowercase names, at most one `<message>` with
  text; and every `<error>` with `@id`, `<request>` and `<message>`.
- Both poll `/ps/service/threads/{id}/progress` as the thread's owner.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from lxml import etree

from tests.support import Server, wait_for
from threadsvc.xml.schemas import validate


@pytest.fixture(scope="module")
def world(in_process_world: tuple[Server, dict[str, str]]) -> tuple[Server, dict[str, str]]:
    """This module asks only what the app answers: served in this process."""
    return in_process_world

XML_TYPE = "application/xml;charset=utf-8"
GROUP = "/ps/service/groups/dev"
STATUSES = {"initialised", "inprogress", "error", "warning", "completed", "failed", "cancelled"}
FINAL_TEXT = re.compile(r'<thread [^>]*status="(completed|failed|cancelled)"')

_SCHEMA_LOCK = threading.Lock()  # validate() is for one OS thread at a time per schema


def java_media_type(header: str) -> tuple[str, str]:
    """What the Java client does: split on the literal `;charset=` and nothing else."""
    media, sep, charset = header.partition(";charset=")
    return media, charset if sep else ""


def parse_xml(response: httpx.Response) -> Any:
    header = response.headers.get("content-type", "")
    assert header == XML_TYPE, (response.status_code, header)
    assert java_media_type(header) == ("application/xml", "utf-8")
    body = response.content
    root = etree.fromstring(body)
    with _SCHEMA_LOCK:
        validate(body)  # the published XSD of its root; raises ValueError with the findings
    return root


def rust_thread(el: Any) -> dict[str, Any]:
    """Deserialise a `<thread>` as the Rust client does; fails where it would."""
    assert el.tag == "thread"
    required = {}
    for name in ("id", "name", "username", "groupid", "status"):
        value = el.get(name)
        assert value is not None and value != "", f"<thread> lacks {name}: {dict(el.attrib)}"
        required[name] = value
    assert re.fullmatch(r"[0-9a-f]{32}", required["id"])
    required["groupid"] = int(required["groupid"])  # i64
    assert required["status"] in STATUSES, required["status"]  # exact, lower case
    assert required["status"] != "complete"
    messages = el.findall("message")
    assert len(messages) <= 1, "more than one <message>"
    if messages:
        assert messages[0].text and messages[0].text.strip(), "empty <message>"
        required["message"] = messages[0].text
    return required


def rust_threads(root: Any) -> list[dict[str, Any]]:
    """Every `<thread>` anywhere in a document."""
    return [rust_thread(el) for el in root.iter("thread")]


def rust_error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    root = parse_xml(response)
    assert root.tag == "error"
    error_id = root.get("id")
    assert error_id and re.fullmatch(r"\d{4}", error_id), response.text
    request, message = root.find("request"), root.find("message")
    assert request is not None and request.text, response.text
    assert message is not None and message.text, response.text
    return {"id": error_id, "request": request.text, "message": message.text}


def start(http: httpx.Client, where: str = GROUP, **params: Any) -> tuple[httpx.Response, str]:
    data = {"job": "sleep", **{k: str(v) for k, v in params.items()}}
    response = http.post(f"{where}/threads", data=data)
    assert response.status_code == 202, response.text
    (thread,) = rust_threads(parse_xml(response))
    return response, str(thread["id"])


# -- the Java client: the exact Content-Type ----------------------------------------------------
def _requests(
    server: Server, clients: list[httpx.Client]
) -> list[tuple[str, int, Callable[[], httpx.Response]]]:
    contributor, reviewer, manager, admin, anonymous = (
        server.client(user) for user in ("contributor", "reviewer", "manager", "admin", None)
    )
    clients.extend((contributor, reviewer, manager, admin, anonymous))
    _, done = start(contributor, seconds=0.05, steps=1)
    wait_for(
        contributor, f"{GROUP}/threads/{done}/progress", lambda r: bool(FINAL_TEXT.search(r.text))
    )
    _, running = start(contributor, seconds=30, steps=30)
    unknown = secrets.token_hex(16)
    bad_xml = {"Content-Type": "application/xml"}
    return [
        (
            "start 202",
            202,
            lambda: contributor.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0.05"}),
        ),
        (
            "start xml 202",
            202,
            lambda: contributor.post(
                f"{GROUP}/threads",
                content=b'<job name="sleep"><param name="seconds">0.05</param></job>',
                headers=bad_xml,
            ),
        ),
        (
            "server start 202",
            202,
            lambda: admin.post("/ps/service/threads", data={"job": "sleep", "seconds": "0.05"}),
        ),
        ("progress 200", 200, lambda: contributor.get(f"{GROUP}/threads/{done}/progress")),
        (
            "owner progress 200",
            200,
            lambda: contributor.get(f"/ps/service/threads/{done}/progress"),
        ),
        ("task 200", 200, lambda: contributor.get(f"{GROUP}/threads/{running}")),
        ("list 200", 200, lambda: contributor.get(f"{GROUP}/threads", params={"status": "all"})),
        (
            "server list 200",
            200,
            lambda: admin.get("/ps/service/threads", params={"status": "all"}),
        ),
        ("logs 200", 200, lambda: contributor.get(f"{GROUP}/threads/{done}/logs")),
        ("cancel 200", 200, lambda: contributor.post(f"{GROUP}/threads/{done}/cancel")),
        ("empty cancel 200", 200, lambda: contributor.post(f"{GROUP}/threads/{unknown}/cancel")),
        (
            "api xml 200",
            200,
            lambda: contributor.get(f"/ps/api/groups/dev/threads/{done}/progress.xml"),
        ),
        (
            "bad parameter 400",
            400,
            lambda: contributor.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "-1"}),
        ),
        (
            "unknown job 400",
            400,
            lambda: contributor.post(f"{GROUP}/threads", data={"job": "nope"}),
        ),
        (
            "malformed xml 400",
            400,
            lambda: contributor.post(f"{GROUP}/threads", content=b"<job", headers=bad_xml),
        ),
        ("no credentials 401", 401, lambda: anonymous.get(f"{GROUP}/threads")),
        ("role too low 403", 403, lambda: reviewer.get(f"{GROUP}/threads")),
        ("not admin 403", 403, lambda: contributor.get("/ps/service/threads")),
        ("no thread 404", 404, lambda: contributor.get(f"{GROUP}/threads/{unknown}/progress")),
        ("no group 404", 404, lambda: contributor.get("/ps/service/groups/nosuchgroup/threads")),
        ("no service 404", 404, lambda: contributor.get("/ps/service/nothing/here")),
        ("wrong method 405", 405, lambda: contributor.put(f"{GROUP}/threads")),
        ("delete running 409", 409, lambda: manager.delete(f"{GROUP}/threads/{running}")),
        ("cleanup", 200, lambda: contributor.post(f"{GROUP}/threads/{running}/cancel")),
    ]


def test_java_client_exact_content_type_on_every_xml_answer(server: Server) -> None:
    failures = []
    clients: list[httpx.Client] = []
    try:
        for label, status, send in _requests(server, clients):
            response = send()
            assert response.status_code == status, (label, response.status_code, response.text)
            header = response.headers.get("content-type", "")
            if header != XML_TYPE or java_media_type(header) != ("application/xml", "utf-8"):
                failures.append((label, header))
            else:
                parse_xml(response)
    finally:
        for client in clients:
            client.close()
    assert not failures, failures


# -- the Rust client: required attributes, exact statuses, errors -------------------------------
def test_rust_client_thread_through_its_whole_life(server: Server) -> None:
    with server.client("contributor") as http:
        _, tid = start(http, seconds=0.6, steps=3, warn=1, error=2)
        while True:
            root = parse_xml(http.get(f"/ps/service/threads/{tid}/progress"))
            (thread,) = rust_threads(root)
            assert thread["id"] == tid and thread["username"] == "contributor"
            assert thread["groupid"] == 240
            if thread["status"] in {"completed", "failed", "cancelled"}:
                break
            time.sleep(0.03)
        assert thread["status"] == "failed"
        assert "message" in thread


def test_rust_client_lists_and_cancels(server: Server) -> None:
    with server.client("contributor") as http, server.client("admin") as admin:
        _, done = start(http, seconds=0.05, steps=1)
        _, failing = start(http, seconds=0.05, steps=1, fail=1)
        _, long = start(http, seconds=30, steps=30)
        _, server_level = start(admin, "/ps/service", seconds=30, steps=30)
        for tid in (done, failing):
            wait_for(
                http, f"{GROUP}/threads/{tid}/progress", lambda r: bool(FINAL_TEXT.search(r.text))
            )
        for path, client in ((f"{GROUP}/threads", http), ("/ps/service/threads", admin)):
            for status in ("all", "active", "finished"):
                root = parse_xml(client.get(path, params={"status": status}))
                threads = rust_threads(root)
                assert len(threads) == len(root)
        everything = rust_threads(
            parse_xml(admin.get("/ps/service/threads", params={"status": "all"}))
        )
        by_id = {t["id"]: t for t in everything}
        assert by_id[server_level]["groupid"] == -1
        assert by_id[done]["status"] == "completed" and by_id[failing]["status"] == "failed"

        for tid, client, where in ((long, http, GROUP), (server_level, admin, "/ps/service")):
            answer = parse_xml(client.post(f"{where}/threads/{tid}/cancel"))
            assert answer.tag == "thread-cancel"
            (thread,) = rust_threads(answer)
            assert thread["id"] == tid
        for tid in (done, failing):
            (thread,) = rust_threads(parse_xml(http.post(f"{GROUP}/threads/{tid}/cancel")))
            assert thread["status"] in {"completed", "failed"}
        empty = parse_xml(http.post(f"{GROUP}/threads/{secrets.token_hex(16)}/cancel"))
        assert empty.tag == "thread-cancel" and rust_threads(empty) == []


@pytest.mark.parametrize(
    "user,method,path,status,error_id",
    [
        (None, "GET", f"{GROUP}/threads", 401, "0100"),
        ("reviewer", "GET", f"{GROUP}/threads", 403, "0101"),
        ("contributor", "GET", f"{GROUP}/threads/{'0' * 32}/progress", 404, "0203"),
        ("contributor", "GET", "/ps/service/groups/nosuchgroup/threads", 404, "0202"),
        ("contributor", "DELETE", f"{GROUP}/threads/{'0' * 32}/progress", 405, "0103"),
        ("contributor", "GET", f"{GROUP}/threads?pagesize=5000", 400, "0201"),
    ],
)
def test_rust_client_errors(
    server: Server, user: str | None, method: str, path: str, status: int, error_id: str
) -> None:
    with server.client(user) as http:
        error = rust_error(http.request(method, path), status)
    assert error["id"] == error_id
    assert error["request"] == path.split("?")[0]


# -- polling the server-level progress URL as the owner ----------------------------------------
def test_owner_polls_server_level_progress_of_a_group_thread(server: Server) -> None:
    with (
        server.client("contributor") as owner,
        server.client("manager") as someone_else,
        server.client("outsider") as outsider,
        server.client("admin") as admin,
    ):
        _, tid = start(owner, seconds=0.4, steps=2)
        url = f"/ps/service/threads/{tid}/progress"
        first = owner.get(url)
        assert first.status_code == 200
        (thread,) = rust_threads(parse_xml(first))
        assert thread["id"] == tid and thread["groupid"] == 240
        for other in (someone_else, outsider):
            error = rust_error(other.get(url), 404)
            assert error["id"] == "0203"
        assert admin.get(url).status_code == 200
        done = wait_for(owner, url, lambda r: bool(FINAL_TEXT.search(r.text)))
        (thread,) = rust_threads(parse_xml(done))
        assert thread["status"] == "completed"
        # once finished, still the owner's only
        rust_error(someone_else.get(url), 404)
        # the same through the JSON alias a client may use
        as_json = owner.get(f"/ps/api/threads/{tid}/progress.json")
        assert as_json.status_code == 200 and as_json.json()["thread"]["status"] == "completed"
