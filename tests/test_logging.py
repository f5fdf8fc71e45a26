"""The server's log (threadsvc/logs.py, threadsvc/web/access.py): one line format for access
and application lines, text or JSON, with timestamps; the request id, from a sane
`X-Request-ID` or made, echoed on every answer and carried by the lines of its request; the
access line's user, status and latency; result links redacted in both formats; `log-level`.
Real servers (`threadsvc serve`), their log read from `server.log`."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import GROUP, Server, password, running_server, start, wait_final
from threadsvc import logs
from threadsvc.settings import Settings, SettingsError, load_settings
from threadsvc.web import errors
from threadsvc.web.access import AccessLog

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
FRESH_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]+")


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    json_format: dict[str, Any] = {"log-format": "json"}
    for server, _ in running_server(tmp_path_factory.mktemp("json"), **json_format):
        yield server


@pytest.fixture(scope="module")
def text_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for server, _ in running_server(tmp_path_factory.mktemp("text")):
        yield server


def json_lines(server: Server) -> list[dict[str, Any]]:
    """Every line of the log, each parsed as one JSON object (a line that is not fails)."""
    return [json.loads(line) for line in server.log.read_text().splitlines()]


def logged(read: Callable[[], list[Any]], found: Callable[[Any], bool]) -> Any:
    """The first line `found` accepts, once written (the log is written off the request path,
    a moment after the answer)."""
    deadline = time.monotonic() + 10
    while True:
        hits = [line for line in read() if found(line)]
        if hits:
            return hits[0]
        assert time.monotonic() < deadline, "no such line in the log"
        time.sleep(0.05)


def raw_get(server: Server, path: str, header: bytes) -> tuple[int, dict[str, str]]:
    """GET with `header` sent as it is (httpx refuses control characters)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + header
                     + b"\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), {k.lower(): v for k, v in fields.items()}


def test_every_json_line_is_one_object_and_the_access_line_says_who_what_and_how_long(
    json_server: Server,
) -> None:
    with json_server.client("contributor") as http:
        answer = http.get(f"{GROUP}/threads", headers={"X-Request-ID": "poll-1.a:b"})
    assert answer.status_code == 200 and answer.headers["x-request-id"] == "poll-1.a:b"
    line = logged(lambda: json_lines(json_server),
                  lambda line: line.get("request_id") == "poll-1.a:b")
    assert line["logger"] == "threadsvc.access" and line["level"] == "INFO"
    assert re.fullmatch(TIMESTAMP, line["ts"]), line
    assert line["method"] == "GET" and line["path"] == f"{GROUP}/threads"
    assert line["status"] == 200 and line["user"] == "contributor"
    assert line["client"] == "127.0.0.1" and line["bytes"] == len(answer.content)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    for other in json_lines(json_server):  # application lines have the same shape
        assert {"ts", "level", "logger", "message"} <= set(other), other
        assert re.fullmatch(TIMESTAMP, other["ts"]), other


def test_lines_written_while_serving_a_request_carry_its_id(json_server: Server) -> None:
    answer = httpx.get(f"{json_server.url}{GROUP}/threads", auth=("reviewer", "wrong"),
                       headers={"X-Request-ID": "guess-42"})
    assert answer.status_code == 401 and answer.headers["x-request-id"] == "guess-42"
    warning = logged(lambda: json_lines(json_server),
                     lambda line: "failed sign-in for 'reviewer'" in line["message"])
    assert warning["request_id"] == "guess-42" and warning["level"] == "WARNING"
    access = logged(lambda: json_lines(json_server),
                    lambda line: line.get("request_id") == "guess-42" and "status" in line)
    assert access["status"] == 401 and access["user"] == "-"


@pytest.mark.parametrize("bad", [
    b"evil\x1b[2JFORGED", b"a" * 10240, "r\u00e9quest".encode(), b"two words", b"",
    b'quote"d', b"x" * 129,
])
def test_an_insane_request_id_is_replaced_and_never_logged(json_server: Server, bad: bytes) -> None:
    code, headers = raw_get(json_server, "/health", b"X-Request-ID: " + bad)
    if code == 400:  # httptools refuses a control character in a header before the app runs
        assert b"\x1b" in bad
        assert bad.decode("latin-1") not in json_server.log.read_text(encoding="latin-1")
        return
    assert code == 200
    fresh = headers["x-request-id"]
    assert FRESH_ID.fullmatch(fresh), fresh
    logged(lambda: json_lines(json_server), lambda line: line.get("request_id") == fresh)
    if bad:
        assert bad.decode("latin-1") not in json_server.log.read_text(encoding="latin-1")


def test_every_answer_carries_a_request_id(json_server: Server) -> None:
    with httpx.Client(base_url=json_server.url) as http:
        answers = [http.get("/health"), http.get("/nowhere"), http.get(f"{GROUP}/threads"),
                   http.post(f"{GROUP}/threads", content=b"x" * 10, auth=("contributor", "x"))]
    assert [a.status_code for a in answers] == [200, 404, 401, 401]
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(FRESH_ID.fullmatch(i) for i in ids) and len(set(ids)) == 4


def result_link_used(server: Server) -> str:
    """A result's pre-signed link, fetched once; its token."""
    with server.client("contributor") as http:
        tid = start(http, seconds="0", result="done")
        wait_final(http, tid)
        link = http.get(f"{GROUP}/threads/{tid}/result").headers["location"]
        assert http.get(link).content == b"done"
    return link.rsplit("/", 1)[1]


def test_a_result_link_is_never_in_the_json_log(json_server: Server) -> None:
    token = result_link_used(json_server)
    line = logged(lambda: json_lines(json_server),
                  lambda line: line.get("path", "").startswith("/ps/service/results/"))
    assert line["path"] == "/ps/service/results/[redacted]" and line["status"] == 200
    assert token.split(".")[-1] not in json_server.log.read_text()


def test_a_result_link_is_never_in_the_text_log(text_server: Server) -> None:
    token = result_link_used(text_server)
    logged(lambda: text_server.log.read_text().splitlines(),
           lambda line: '"GET /ps/service/results/[redacted]" 200 4 ' in line)
    assert token.split(".")[-1] not in text_server.log.read_text()


def test_text_lines_start_with_a_timestamp(text_server: Server) -> None:
    with text_server.client("manager") as http:
        http.get(f"{GROUP}/threads", headers={"X-Request-ID": "text-7"})
    line = logged(lambda: text_server.log.read_text().splitlines(), lambda l: "[text-7]" in l)
    assert re.fullmatch(
        TIMESTAMP + r' INFO threadsvc\.access \[text-7\]: 127\.0\.0\.1 manager '
        + rf'"GET {GROUP}/threads" 200 \d+ \d+\.\dms', line), line
    starts = re.compile(TIMESTAMP + " (DEBUG|INFO|WARNING|ERROR) ")
    for line in text_server.log.read_text().splitlines():
        assert starts.match(line) or line.startswith(" "), line  # or a traceback's


def test_a_path_cannot_forge_a_text_line(text_server: Server) -> None:
    code, headers = raw_get(text_server, "/x%0AFORGED\"q\\b'", b"X-Request-ID: forge-1")
    assert code == 404 and headers["x-request-id"] == "forge-1"
    line = logged(lambda: text_server.log.read_text(encoding="latin-1").splitlines(),
                  lambda l: "[forge-1]" in l)
    assert r'''"GET /x%0AFORGED\x22q\x5cb'" 404''' in line, line


def test_log_level_warning_hides_information(tmp_path: Path) -> None:
    warning: dict[str, Any] = {"log-level": "warning"}
    for server, _ in running_server(tmp_path, **warning):
        with server.client("contributor") as http:
            assert http.get(f"{GROUP}/threads").status_code == 200
        httpx.get(f"{server.url}{GROUP}/threads", auth=("approver", "wrong"))
        logged(lambda: server.log.read_text().splitlines(),  # noqa: B023 (used at once)
               lambda line: "failed sign-in for 'approver'" in line)
        text = server.log.read_text()
        assert " WARNING threadsvc.auth [" in text
        assert " INFO " not in text, text[:2000]


def test_a_bad_log_setting_is_refused(tmp_path: Path) -> None:
    for key, value in [("log-format", "xml"), ("log-level", "verbose")]:
        config = tmp_path / "bad.toml"
        config.write_text(f'{key} = "{value}"\n')
        with pytest.raises(SettingsError, match=key):
            load_settings(str(config))


# -- in-process: what a real server cannot easily be made to do ----------------------------

@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger as `serve` sets it up, writing into a string; restored after."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    writer = logs.setup(Settings(log_format="json"), stream)
    try:
        yield stream
    finally:
        writer.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_an_unexpected_error_is_answered_and_logged_with_the_request_id(
    captured: io.StringIO,
) -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/broken", broken)], middleware=[Middleware(AccessLog)],
                    exception_handlers={Exception: errors.internal_error})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            return await http.get("/broken", headers={"X-Request-ID": "boom-1"})

    answer = anyio.run(call)
    assert answer.status_code == 500 and answer.headers["x-request-id"] == "boom-1"
    logged(lambda: [captured.getvalue()],
           lambda text: '"status": 500' in text and '"level": "ERROR"' in text)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    error = next(line for line in lines if line["level"] == "ERROR")
    assert error["request_id"] == "boom-1" and "RuntimeError: boom" in error["exception"]
    access = next(line for line in lines if line["logger"] == "threadsvc.access")
    assert access["status"] == 500 and access["request_id"] == "boom-1"


def test_repeated_warnings_are_still_limited(captured: io.StringIO) -> None:
    log = logging.getLogger("threadsvc.test")
    for _ in range(50):
        log.warning("the same thing again")
    log.warning("something else")
    logged(lambda: [captured.getvalue()], lambda text: "something else" in text)
    assert captured.getvalue().count("the same thing again") == 1


def test_password_is_not_a_user(json_server: Server) -> None:
    """The access line names the user, never what they signed in with."""
    with json_server.client("approver") as http:
        http.get(f"{GROUP}/threads", headers={"X-Request-ID": "who-1"})
    line = logged(lambda: json_lines(json_server), lambda l: l.get("request_id") == "who-1")
    assert line["user"] == "approver"
    assert password("approver") not in json_server.log.read_text()


def test_a_console_user_is_named_too(json_server: Server) -> None:
    with httpx.Client(base_url=json_server.url) as http:
        form = http.get("/ps/ui/sign-in")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf
        signed = http.post("/ps/ui/sign-in", data={
            "csrf": csrf.group(1), "username": "manager", "password": password("manager")})
        assert signed.status_code == 303
        page = http.get("/ps/ui/groups", headers={"X-Request-ID": "console-1"})
    assert page.status_code == 200
    line = logged(lambda: json_lines(json_server), lambda l: l.get("request_id") == "console-1")
    assert line["user"] == "manager" and line["status"] == 200


class Stalled(io.StringIO):
    """A stream whose writes wait until `go` is set (a pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()

    def write(self, text: str) -> int:
        self.go.wait(10)
        return super().write(text)


def test_a_stalled_log_drops_lines_and_says_how_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_QUEUED", 10)
    stream = Stalled()
    writer = logs.LineWriter(stream, logs.JsonFormatter())
    for n in range(100):
        writer.put(json.dumps({"n": n}), gather=True)  # as access lines are
    stream.go.set()
    writer.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]  # every one JSON
    kept = [line for line in lines if "n" in line]
    assert 10 <= len(kept) <= 11  # the queue's bound (and the one the writer held)
    notice = lines[-1]
    assert notice["level"] == "WARNING"
    assert notice["message"] == f"{100 - len(kept)} log lines dropped: the log was not " \
        "written as fast as they came"


def test_a_line_other_than_an_access_line_is_written_when_logging_returns() -> None:
    stream = io.StringIO()
    writer = logs.LineWriter(stream, logs.TextFormatter())
    try:
        writer.put("an access line", gather=True)
        writer.put("the server stops")
        assert stream.getvalue() == "an access line\nthe server stops\n"  # in order, at once
    finally:
        writer.close()


@pytest.mark.parametrize("text", ["evil\nFORGED line", "evil\rFORGED", "evil\x1b[2JFORGED",
                                  "evil\u2028FORGED", "evil\x85FORGED"])
def test_an_application_message_cannot_forge_a_text_line(text: str) -> None:
    record = logging.LogRecord("threadsvc.test", logging.WARNING, "", 0, "got %s", (text,), None)
    line = logs.TextFormatter().format(record)
    first, *more = line.splitlines()  # as a reader splits: U+2028 and NEL end lines too
    assert re.match(TIMESTAMP + " WARNING threadsvc.test: got evil", first), line
    assert all(part.startswith("    ") for part in more), line
    assert "\x1b" not in line and "\r" not in line, line
    json_line = logs.JsonFormatter().format(record)
    assert len(json_line.splitlines()) == 1 and json.loads(json_line)["message"] == f"got {text}"
