"""Slow clients (slowloris): many connections that send their headers, or their body, a byte
at a time, or nothing at all. The server must keep answering everyone else while they hang
on, and should close them after a while.

`threadsvc serve` runs uvicorn (threadsvc/cli/serve.py) with a protocol of its own
(threadsvc/web/serving.py): a connection must complete a request's headers within
`read-timeout` (12 s) of connecting or of its last response, or it is closed; and a body must
keep arriving (no gap of `read-timeout`, then 1 KiB/s on average), or it is answered 408
(error `0209`, threadsvc/web/middleware.py BodyLimit). An event loop does not give each
connection a thread, so slow clients do not stop the others (asserted here) meanwhile.
Behind nginx (deploy/), `client_header_timeout` and `client_body_timeout` (60 s) apply.

The slow requests carry an API token, not a password: a hundred requests with the right
password arriving together cost a hundred scrypt verifications (the 10 s memory of verified
passwords helps only once one has finished), which alone delays other clients by seconds on a
busy 2-core machine; that is the price of password hashing, not of slowness.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.hostile.payloads import GROUP, check_error, still_serving
from tests.support import Server, running_server, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


def heads(token: str) -> tuple[bytes, bytes]:
    """A GET with 10 kB of headers, and a POST's head announcing a 10 000-byte form; both with
    an API token (a Bearer token costs a hash lookup, where a password would cost scrypt)."""
    auth = f"Authorization: Bearer {token}\r\n".encode()
    get = (b"GET /ps/service/groups/dev/threads HTTP/1.1\r\nHost: x\r\n" + auth
           + b"X-Slow: " + b"s" * 10_000 + b"\r\n\r\n")
    post = (b"POST /ps/service/groups/dev/threads HTTP/1.1\r\nHost: x\r\n" + auth
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: 10000\r\n\r\n")
    return get, post


READ_TIMEOUT = 15.0  # what a timeout for reading a request should at least achieve


class Slow:
    """Connections that each send one more byte of their request every `interval` seconds."""

    def __init__(self, server: Server, count: int, head: bytes, trickle: bytes,
                 interval: float = 0.5) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(head)
            self.sockets.append(sock)
        self.trickle = trickle
        self.interval = interval
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval) and self.sent < len(self.trickle):
            byte = self.trickle[self.sent: self.sent + 1]
            for sock in self.sockets:
                with contextlib.suppress(OSError):  # closed by the server: closed() tells
                    sock.send(byte)
            self.sent += 1

    def closed(self) -> int:
        """How many of the connections the server has closed."""
        count = 0
        for sock in self.sockets:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                continue
            try:
                data = sock.recv(65536, socket.MSG_PEEK)
            except OSError:
                count += 1
                continue
            if data == b"" or data.startswith(b"HTTP/1.1 4"):
                count += 1
        return count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def slow_headers(server: Server, tokens: dict[str, str]) -> Iterator[Slow]:
    """200 connections sending a 10 kB header section a byte every half second."""
    get, _ = heads(tokens["contributor"])
    found = Slow(server, 200, get[:20], get[20:])
    yield found
    found.close()


@pytest.fixture
def slow_bodies(server: Server, tokens: dict[str, str]) -> Iterator[Slow]:
    """100 connections with complete headers sending a 10 000-byte body a byte at a time."""
    _, post = heads(tokens["contributor"])
    found = Slow(server, 100, post, b"job=sleep&" + b"x" * 9990)
    yield found
    found.close()


@pytest.fixture
def silent(server: Server) -> Iterator[Slow]:
    """100 connections that never send a byte."""
    found = Slow(server, 100, b"", b"")
    yield found
    found.close()


def test_others_are_served_while_slow_clients_hang_on(
    server: Server, slow_headers: Slow, slow_bodies: Slow, silent: Slow
) -> None:
    """With 400 slow connections open, other clients' requests, starts included, are answered
    within a generous bound, again and again."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        still_serving(server, timeout=10)
        with server.client("contributor", timeout=10) as http:
            started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
            assert started.status_code == 202, started.text
    assert slow_headers.sent >= 5 and slow_bodies.sent >= 5  # they were trickling meanwhile
    assert slow_headers.closed() == 0  # and are still connected (nothing timed out yet)


def _health(sock: socket.socket) -> bytes:
    """Ask for /health and read the whole answer; its head."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_a_connection_idle_after_a_response_is_closed(server: Server) -> None:
    """uvicorn's keep-alive timeout (5 s) after a complete exchange."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        head = _health(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        began = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server, not by this timeout
        assert time.monotonic() - began < 15


def test_slow_and_silent_connections_are_closed(
    server: Server, slow_headers: Slow, slow_bodies: Slow, silent: Slow
) -> None:
    """After READ_TIMEOUT seconds of trickling (a byte a second is far below any real client),
    the server has closed every slow connection."""
    slow_headers.interval = slow_bodies.interval = 1.0
    time.sleep(READ_TIMEOUT + 1)
    still_serving(server)
    assert (silent.closed(), slow_headers.closed(), slow_bodies.closed()) == (100, 200, 100)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server whose read-timeout is 1 s, to see what a slow body gets."""
    yield from running_server(tmp_path_factory.mktemp("quick"), **{"read-timeout": 1})


def _answer_to(server: Server, head: bytes, pieces: list[tuple[float, bytes]]) -> bytes:
    """Send `head`, then each piece after its pause; what the server answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        for pause, piece in pieces:
            time.sleep(pause)
            with contextlib.suppress(OSError):  # the server may have answered already
                sock.sendall(piece)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if b"</error>" in answer or b"</thread>" in answer:
                break
        return answer


@pytest.mark.parametrize(("name", "pieces"), [
    ("a gap", [(0, b"job=sleep&"), (2.0, b"seconds=0")]),
    ("a trickle", [(0.3, b"x")] * 12),
])
def test_a_slow_body_is_408(quick: tuple[Server, dict[str, str]], name: str,
                            pieces: list[tuple[float, bytes]]) -> None:
    server, tokens = quick
    _, post = heads(tokens["contributor"])
    answer = _answer_to(server, post, pieces)
    head, _, body = answer.partition(b"\r\n\r\n")
    response = httpx.Response(int(head.split()[1]), headers=[
        tuple(line.split(b": ", 1)) for line in head.split(b"\r\n")[1:]], content=body)
    check_error(response, 408, "0209")
    still_serving(server)


def test_a_body_at_a_steady_pace_is_taken(quick: tuple[Server, dict[str, str]]) -> None:
    """Slow but steady (about 4 KiB/s, for 2.5 s): not cut."""
    server, tokens = quick
    form = b"job=sleep&seconds=0"
    head = (b"POST /ps/service/groups/dev/threads HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {tokens['contributor']}\r\n".encode()
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(form) + 10_000}\r\n\r\n".encode())
    pieces = [(0.25, b"&pad=" + b"p" * 995)] * 10  # 10 x 1 000 bytes over 2.5 s
    answer = _answer_to(server, head + form, pieces)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]  # read whole: `pad` is no parameter
    assert b'id="0201"' in answer


def test_a_long_answer_outlives_the_read_timeout(quick: tuple[Server, dict[str, str]]) -> None:
    """The deadline is for reading requests: a long-poll of 3 s on a server whose read-timeout
    is 1 s is answered (304, nothing changed), on a connection still open afterwards."""
    server, tokens = quick
    auth = {"Authorization": f"Bearer {tokens['contributor']}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=15) as http:
        started = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "60",
                                                      "steps": "1"})
        thread = started.text.split('id="', 1)[1][:32]
        # running, with its one progress report made: nothing changes for 60 s
        ready = wait_for(http, f"{GROUP}/threads/{thread}/progress",
                         lambda r: "<progress" in r.text and "inprogress" in r.text)
        tag = ready.headers["etag"]
        began = time.monotonic()
        waited = http.get(f"{GROUP}/threads/{thread}/progress", params={"wait": "3"},
                          headers={"If-None-Match": tag})
        assert waited.status_code == 304 and time.monotonic() - began >= 2.9
        assert http.get("/health").status_code == 200  # the same connection, still open
        http.post(f"{GROUP}/threads/{thread}/cancel")


def test_a_trickle_after_a_response_is_closed(quick: tuple[Server, dict[str, str]]) -> None:
    """After a response, a client that sends a byte a second of its next request (which
    cancels uvicorn's keep-alive timer) is closed once read-timeout (1 s) has passed."""
    server, _ = quick
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = _health(sock)
        assert head.startswith(b"HTTP/1.1 200 "), head
        began = time.monotonic()
        closed = False
        for byte in b"GET /health HTTP/1.1\r\n":
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                assert sock.recv(65536, socket.MSG_PEEK) == b"", "an answer to half a request"
                closed = True
                break
        assert closed, "still open after the whole trickle"
        assert time.monotonic() - began < 5
