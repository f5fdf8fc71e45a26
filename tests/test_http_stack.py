"""Both HTTP stacks serve: `http-stack = "auto"` (uvloop and httptools, dependencies where they
build) and `"plain"` (asyncio and h11), each saying in the log which it runs on."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
from pathlib import Path

import pytest
from lxml import etree

from tests.support import GROUP, Server, running_server
from threadsvc.web.serving import MAX_HEADERS

FAST = importlib.util.find_spec("uvloop") is not None and importlib.util.find_spec(
    "httptools") is not None


@pytest.mark.parametrize("stack", ["auto", "plain"])
def test_each_stack_serves_and_says_which_it_is(tmp_path: Path, stack: str) -> None:
    serving = contextlib.contextmanager(running_server)
    with serving(tmp_path, **{"http-stack": stack}) as (server, _):
        with server.client("contributor") as http:
            started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
            assert started.status_code == 202, started.text
            assert http.get(started.headers["Content-Location"]).status_code == 200
        # what no parser takes, and a head over the limit: the error document, then closed
        bad = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert_error(bad, b"400 Bad Request")
        # httptools: any head over the limit, even whole in one read; h11: what is over its
        # limit when a read ends (a megabyte never comes in one read)
        fast = stack == "auto" and FAST
        padding = b"X-Padding: " + b"a" * (MAX_HEADERS + 1 if fast else 1 << 20) + b"\r\n"
        big = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\n" + padding + b"\r\n",
                       reset_ok=not fast)
        assert_error(big, b"431 Request Header Fields Too Large" if fast else b"400 Bad Request")
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 40) for i in range(MAX_HEADERS // 40))
        big = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        if fast:  # many small headers, over the limit together
            assert_error(big, b"431 Request Header Fields Too Large")
        with server.client() as http:
            assert http.get("/health").text == "ok\n"
    expected = "uvloop + httptools" if stack == "auto" and FAST else "asyncio + h11"
    assert f"HTTP stack: {expected}" in server.log.read_text()


def exchange(server: Server, request: bytes, reset_ok: bool = False) -> bytes:
    """What the server answers `request` before it closes the connection. With `reset_ok`,
    the reset of a server that closed before reading the whole request may come first (the
    answer was sent: it is read before the reset, or the exchange is tried again)."""
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(5):
        answer = b""
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            try:
                raw.sendall(request)
                while chunk := raw.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                if not reset_ok:
                    raise
        if answer:
            return answer
    raise AssertionError("every exchange was reset before an answer was read")


def assert_error(answer: bytes, status: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 " + status, answer[:300]
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    assert fields[b"content-type"] == b"application/xml;charset=utf-8"
    assert fields[b"x-content-type-options"] == b"nosniff"
    root = etree.fromstring(body)
    assert root.tag == "error" and root.get("id") == "0201" and root.findtext("message")
