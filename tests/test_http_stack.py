"""Both HTTP stacks serve: `http-stack = "auto"` (uvloop and httptools, dependencies where they
build) and `"plain"` (asyncio and h11), each saying in the log which it runs on."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
from pathlib import Path

import pytest

from tests.support import GROUP, running_server

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
        # a request line no parser takes: each stack answers 400 and stays up
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            assert raw.recv(100).startswith(b"HTTP/1.1 400")
        with server.client() as http:
            assert http.get("/health").text == "ok\n"
    expected = "uvloop + httptools" if stack == "auto" and FAST else "asyncio + h11"
    assert f"HTTP stack: {expected}" in server.log.read_text()
