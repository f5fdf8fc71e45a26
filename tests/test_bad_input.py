"""Bad input of every kind answers a 4xx error document, never a 500 (docs/api.md#formats, docs/api.md#starting-a-thread, docs/api.md#errors, README.md#command-line).

Every error here must be `<error id><request/><message/></error>` with exactly
`Content-Type: application/xml;charset=utf-8`.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from lxml import etree

from tests.support import InProcess, Server, running_server, wait_for
from threadsvc.xml.schemas import validate

XML_TYPE = "application/xml;charset=utf-8"
GROUP = "/ps/service/groups/dev"
MAX_UPLOAD = 100_000

_SCHEMA_LOCK = threading.Lock()  # validate() is for one OS thread at a time per schema


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """This module's server: the standard world with `max-upload` = 100000, served in this
    process (it asks only what the app answers)."""
    yield from running_server(
        tmp_path_factory.mktemp("bad-input"), kind=InProcess,
        **{"max-running": 16, "max-upload": MAX_UPLOAD},
    )


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client("contributor") as client:
        yield client


@pytest.fixture(scope="module")
def finished(server: Server, http: httpx.Client) -> str:
    response = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0.05", "steps": "1"})
    assert response.status_code == 202
    tid = str(etree.fromstring(response.content).get("id"))
    wait_for(http, f"{GROUP}/threads/{tid}/progress", lambda r: 'status="completed"' in r.text)
    return tid


def parse_xml(response: httpx.Response) -> Any:
    assert response.headers.get("content-type") == XML_TYPE, (
        response.status_code,
        response.headers,
    )
    body = response.content
    root = etree.fromstring(body)
    with _SCHEMA_LOCK:
        validate(body)  # the published XSD of its root; raises ValueError with the findings
    return root


def check_error(
    response: httpx.Response, status: int, error_id: str | None = None, naming: str | None = None
) -> Any:
    """A complete error document with the exact Content-Type; never a 500."""
    assert response.status_code != 500, response.text[:500]
    assert response.status_code == status, (response.status_code, response.text[:500])
    root = parse_xml(response)
    assert root.tag == "error", response.text[:500]
    assert re.fullmatch(r"\d{4}", root.get("id") or ""), response.text[:500]
    if error_id is not None:
        assert root.get("id") == error_id, response.text[:500]
    assert [child.tag for child in root] == ["request", "message"], response.text[:500]
    assert (root.findtext("request") or "").startswith("/ps/"), response.text[:500]
    message = root.findtext("message") or ""
    assert message.strip(), response.text[:500]
    assert "Traceback" not in response.text
    if naming is not None:
        assert naming in message, message
    return root


def post_xml(http: httpx.Client, body: bytes, path: str = f"{GROUP}/threads") -> httpx.Response:
    return http.post(path, content=body, headers={"Content-Type": "application/xml"})


def thread_count(server: Server) -> int:
    with server.client("admin") as admin:
        root = parse_xml(admin.get("/ps/service/threads", params={"status": "all", "pagesize": 1}))
        total = int(root.get("total"))
    with server.client("admin") as admin:
        dev = parse_xml(admin.get(f"{GROUP}/threads", params={"status": "all", "pagesize": 1}))
    return total + int(dev.get("total"))


# -- XML bodies -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        b'<job name="sleep"',
        b"this is not XML",
        b'<job name="sleep"><param name="seconds">1</param>',
        b'<job name="sleep"><param name="seconds">&undefined;</param></job>',
        b"",
        b'<job name="sleep"><param name="seconds">\xff\xfe</param></job>',
        b'<?xml version="1.0" encoding="UTF-16"?><job name="sleep"/>',
        b'<job name="sleep">' + b"<a>" * 5000 + b"</a>" * 5000 + b"</job>",
        b'<job name="sleep"/><job name="sleep"/>',
    ],
    ids=[
        "unclosed-tag",
        "text",
        "unclosed-root",
        "undefined-entity",
        "empty",
        "bad-utf8",
        "wrong-encoding",
        "deep",
        "two-roots",
    ],
)
def test_malformed_xml_body(server: Server, http: httpx.Client, body: bytes) -> None:
    check_error(post_xml(http, body), 400, "0201")


@pytest.mark.parametrize(
    "body",
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE job [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b'<job name="sleep"><param name="seconds">&xxe;</param></job>'
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE job [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
            b'<job name="sleep"/>'
        ),
        b'<?xml version="1.0"?><!DOCTYPE job SYSTEM "file:///etc/passwd"><job name="sleep"/>',
        b'<?xml version="1.0"?><!DOCTYPE job [<!ELEMENT job ANY>]><job name="sleep"/>',
    ],
    ids=["xxe-system-entity", "xxe-parameter-entity", "external-dtd", "harmless-doctype"],
)
def test_xml_body_with_doctype_is_refused(server: Server, http: httpx.Client, body: bytes) -> None:
    before = thread_count(server)
    response = post_xml(http, body)
    check_error(response, 400, "0201")
    assert "root:" not in response.text  # nothing of /etc/passwd comes back
    assert thread_count(server) == before  # and nothing was started


def test_billion_laughs_is_refused_quickly(server: Server, http: httpx.Client) -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    ]
    body = (
        '<?xml version="1.0"?><!DOCTYPE job [' + "".join(entities) + "]>"
        '<job name="sleep"><param name="seconds">&lol9;</param></job>'
    ).encode()
    began = time.monotonic()
    response = post_xml(http, body)
    assert time.monotonic() - began < 5
    check_error(response, 400, "0201")
    assert len(response.content) < 10_000


@pytest.mark.parametrize(
    "body",
    [
        b'<task name="sleep"/>',
        b'<jobs><job name="sleep"/></jobs>',
        b'<x:job xmlns:x="urn:other" name="sleep"/>',
        b'<thread name="sleep"/>',
    ],
    ids=["task", "jobs", "namespaced", "thread"],
)
def test_xml_body_with_wrong_root(server: Server, http: httpx.Client, body: bytes) -> None:
    check_error(post_xml(http, body), 400, "0201")


@pytest.mark.parametrize(
    "body",
    [
        b"<job/>",
        b'<job name=""/>',
        b'<job name="sleep"><other/></job>',
        b'<job name="sleep"><param>1</param></job>',
    ],
    ids=["no-name", "empty-name", "child-not-param", "param-without-name"],
)
def test_xml_body_with_bad_structure(server: Server, http: httpx.Client, body: bytes) -> None:
    check_error(post_xml(http, body), 400, "0201")


# -- size -------------------------------------------------------------------------------------
def test_oversized_bodies_are_413(server: Server, http: httpx.Client) -> None:
    big = b"a" * 200_000
    xml_body = b'<job name="sleep"><param name="seconds">1</param><!--' + big + b"--></job>"
    check_error(post_xml(http, xml_body), 413, "0206")
    check_error(
        http.post(f"{GROUP}/threads", data={"job": "sleep", "padding": big.decode()}), 413, "0206"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading
        yield b'<job name="sleep"><param name="seconds">1</param><!--'
        for _ in range(20):
            yield b"a" * 10_000
        yield b"--></job>"

    check_error(post_xml(http, chunks()), 413, "0206")  # type: ignore[arg-type]
    # just under the limit is read and judged on its content
    small = b'<job name="sleep"><param name="seconds">0</param><!--' + b"a" * 90_000 + b"--></job>"
    assert post_xml(http, small).status_code == 202


# -- jobs and their parameters ----------------------------------------------------------------
def test_unknown_job_is_400_0205(server: Server, http: httpx.Client) -> None:
    check_error(http.post(f"{GROUP}/threads", data={"job": "no-such-job"}), 400, "0205", "job")
    check_error(post_xml(http, b'<job name="no-such-job"/>'), 400, "0205", "job")


@pytest.mark.parametrize(
    "fields,name",
    [
        ([("seconds", "-1")], "seconds"),
        ([("seconds", "nan")], "seconds"),
        ([("seconds", "NaN")], "seconds"),
        ([("seconds", "inf")], "seconds"),
        ([("seconds", "-inf")], "seconds"),
        ([("seconds", "Infinity")], "seconds"),
        ([("seconds", "3601")], "seconds"),
        ([("seconds", "abc")], "seconds"),
        ([("seconds", "")], "seconds"),
        ([("seconds", "1e3")], "seconds"),
        ([("steps", "0")], "steps"),
        ([("steps", "10001")], "steps"),
        ([("steps", "1.5")], "steps"),
        ([("steps", "-3")], "steps"),
        ([("warn", "0")], "warn"),
        ([("error", "x")], "error"),
        ([("fail", "1.0")], "fail"),
        ([("colour", "blue")], "colour"),
        ([("seconds", "1"), ("seconds", "2")], "seconds"),
        ([("steps", "2"), ("steps", "2")], "steps"),
        # a control character echoed back must not break the error document
        ([("seconds", "\x01")], "seconds"),
        ([("bad\x01name", "1")], "bad"),
    ],
)
def test_bad_sleep_parameters(
    server: Server, http: httpx.Client, fields: list[tuple[str, str]], name: str
) -> None:
    before = thread_count(server)
    response = http.post(
        f"{GROUP}/threads",
        content=urlencode([("job", "sleep"), *fields]),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    check_error(response, 400, "0201", name)
    assert thread_count(server) == before


def test_a_file_for_a_text_parameter_is_400(server: Server, http: httpx.Client) -> None:
    response = http.post(
        f"{GROUP}/threads",
        data={"job": "sleep"},
        files={"seconds": ("seconds.txt", b"1", "text/plain")},
    )
    check_error(response, 400, "0201", "seconds")


@pytest.mark.parametrize(
    "params,name",
    [
        ('<param name="seconds">-1</param>', "seconds"),
        ('<param name="seconds" value="nan"/>', "seconds"),
        ('<param name="steps">0</param>', "steps"),
        ('<param name="nope">1</param>', "nope"),
        ('<param name="seconds">1</param><param name="seconds">1</param>', "seconds"),
    ],
)
def test_bad_sleep_parameters_in_xml(
    server: Server, http: httpx.Client, params: str, name: str
) -> None:
    response = post_xml(http, f'<job name="sleep">{params}</job>'.encode())
    check_error(response, 400, "0201", name)


def test_missing_job_is_400(server: Server, http: httpx.Client) -> None:
    check_error(http.post(f"{GROUP}/threads", data={"seconds": "1"}), 400, "0201", "job")
    check_error(http.post(f"{GROUP}/threads", data={"job": ""}), 400, "0201", "job")
    check_error(http.post(f"{GROUP}/threads", data={"job": "   "}), 400, "0201", "job")
    check_error(http.post(f"{GROUP}/threads"), 400, "0201", "job")
    check_error(
        http.post(f"{GROUP}/threads", content=b"job=sleep", headers={"Content-Type": "text/plain"}),
        400,
        "0201",
    )
    check_error(
        http.post(
            f"{GROUP}/threads", content=b"garbage", headers={"Content-Type": "multipart/form-data"}
        ),
        400,
        "0201",
    )


@pytest.mark.parametrize(
    "job",
    ["no-such-job", "\x01", "\x00"],
)
def test_odd_job_names(server: Server, http: httpx.Client, job: str) -> None:
    check_error(http.post(f"{GROUP}/threads", data={"job": job}), 400, "0205")


# -- groups and thread ids --------------------------------------------------------------------
@pytest.mark.parametrize(
    "group",
    [
        "..%2Fx",
        "%2E%2E",
        "%00",
        "%01x",
        "a" * 300,
        "g" * 65,
        "DEV",
        "Dev",
        "999999",
        "99999999999999999999999",
        "0",
        "-240",
        "dev%20",
        "%20dev",
        "dev.",
        "d%C3%A9v",
        "%E2%80%AEved",
    ],
)
def test_odd_group_names_are_404_0202(server: Server, group: str) -> None:
    with server.client("contributor") as http, server.client("admin") as admin:
        for client in (http, admin):
            check_error(client.get(f"/ps/service/groups/{group}/threads"), 404, "0202")
            check_error(
                client.post(f"/ps/service/groups/{group}/threads", data={"job": "sleep"}),
                404,
                "0202",
            )
            check_error(
                client.get(f"/ps/service/groups/{group}/threads/{'0' * 32}/progress"), 404, "0202"
            )


@pytest.mark.parametrize(
    "thread_id",
    [
        "zzzz",
        "not-hex-" + "0" * 24,
        "a" * 31,
        "a" * 33,
        "a" * 2000,
        "A" * 32,
        "%2E%2E",
        "0x" + "a" * 30,
        " " + "a" * 31,
        "%00",
        "%1F" + "a" * 31,
    ],
)
def test_odd_thread_ids_are_404_0203(server: Server, finished: str, thread_id: str) -> None:
    with server.client("contributor") as http, server.client("admin") as admin:
        for suffix in ("", "/progress", "/logs"):
            check_error(http.get(f"{GROUP}/threads/{thread_id}{suffix}"), 404, "0203")
            check_error(admin.get(f"/ps/service/threads/{thread_id}{suffix}"), 404, "0203")
    # the uppercase form of a real id is not that thread
    if thread_id == "A" * 32:
        with server.client("contributor") as http:
            check_error(http.get(f"{GROUP}/threads/{finished.upper()}/progress"), 404, "0203")


# -- query parameters -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "query,name",
    [
        ("page=0", "page"),
        ("page=abc", "page"),
        ("page=-1", "page"),
        ("page=1.5", "page"),
        ("pagesize=0", "pagesize"),
        ("pagesize=1001", "pagesize"),
        ("pagesize=many", "pagesize"),
        ("since=notadate", "since"),
        ("until=notadate", "until"),
        ("since=2026-13-45", "since"),
        ("status=bogus", "status"),
        ("status=complete", "status"),
        ("status=%01", "status"),
        ("status=%00", "status"),
    ],
)
def test_bad_list_parameters(server: Server, http: httpx.Client, query: str, name: str) -> None:
    check_error(http.get(f"{GROUP}/threads?{query}"), 400, "0201", name)
    with server.client("admin") as admin:
        check_error(admin.get(f"/ps/service/threads?{query}"), 400, "0201", name)


@pytest.mark.parametrize(
    "query,name",
    [
        ("limit=10001", "limit"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("level=LOUD", "level"),
        ("level=", None),
        ("since=notadate", "since"),
        ("since=-1", "since"),
    ],
)
def test_bad_log_parameters(
    server: Server, http: httpx.Client, finished: str, query: str, name: str | None
) -> None:
    response = http.get(f"{GROUP}/threads/{finished}/logs?{query}")
    if name is None:  # an empty value is the default
        assert response.status_code == 200
        parse_xml(response)
        return
    check_error(response, 400, "0201", name)


def test_good_limits_are_accepted(server: Server, http: httpx.Client, finished: str) -> None:
    assert http.get(f"{GROUP}/threads/{finished}/logs", params={"limit": 10_000}).status_code == 200
    assert http.get(f"{GROUP}/threads", params={"pagesize": 1000}).status_code == 200


# -- methods, paths and credentials -----------------------------------------------------------
@pytest.mark.parametrize(
    "method,path,allowed",
    [
        ("PUT", "/threads", {"GET", "POST"}),
        ("DELETE", "/threads", {"GET", "POST"}),
        ("PATCH", "/threads/{id}", {"GET", "DELETE"}),
        ("POST", "/threads/{id}", {"GET", "DELETE"}),
        ("DELETE", "/threads/{id}/progress", {"GET"}),
        ("POST", "/threads/{id}/logs", {"GET"}),
        ("GET", "/threads/{id}/cancel", {"POST"}),
        ("DELETE", "/threads/{id}/cancel", {"POST"}),
    ],
)
def test_wrong_method_is_405_with_allow(
    server: Server, http: httpx.Client, finished: str, method: str, path: str, allowed: set[str]
) -> None:
    for base in (GROUP, "/ps/service"):
        response = http.request(method, base + path.format(id=finished))
        check_error(response, 405, "0103")
        allow = {
            m.strip().upper() for m in response.headers.get("allow", "").split(",") if m.strip()
        }
        assert allowed <= allow, allow
        assert method not in allow


@pytest.mark.parametrize(
    "path",
    [
        "/ps/service/nothing",
        "/ps/service/",
        "/ps/service/groups",
        "/ps/service/groups/dev",
        "/ps/service/groups/dev/nothing",
        "/ps/service/threads/{id}/nothing",
        "/ps/service/groups/dev/threads/{id}/logs/more",
        "/ps/api/nothing",
    ],
)
def test_unknown_path_is_404_with_an_error_document(
    server: Server, finished: str, path: str
) -> None:
    with server.client("contributor") as http, server.client() as anonymous:
        for client in (http, anonymous):
            check_error(client.get(path.format(id=finished)), 404)


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic Y29udHJpYnV0b3I",  # base64 without padding
        _basic(b"contributor"),  # no colon
        _basic(b":contributor-pw"),  # no username
        _basic(b"\xff\xfe:\xff"),  # not UTF-8
        "Basic",
        "Digest username=contributor",
        "Bearer",
        "contributor:contributor-pw",
    ],
)
def test_bad_authorization_header_is_401_0100(server: Server, header: str) -> None:
    with server.client() as anonymous:
        for path in (f"{GROUP}/threads", f"/ps/service/threads/{secrets.token_hex(16)}/progress"):
            response = anonymous.get(path, headers={"Authorization": header})
            check_error(response, 401, "0100")
            assert response.headers.get("www-authenticate")


def test_no_credentials_is_401_0100(server: Server) -> None:
    with server.client() as anonymous:
        response = anonymous.post(f"{GROUP}/threads", data={"job": "sleep"})
        check_error(response, 401, "0100")
        assert response.headers.get("www-authenticate", "").lower().startswith(("basic", "bearer"))


def test_error_request_is_the_path(server: Server, http: httpx.Client) -> None:
    root = check_error(http.get(f"{GROUP}/threads", params={"page": "0"}), 400, "0201")
    assert root.findtext("request") == f"{GROUP}/threads"
