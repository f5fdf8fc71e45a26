"""Many tenants' webhooks on a real server: one group's dead and never-answering receivers
do not hold back another group's delivery (tests/store/test_delivery_fairness.py has the
rules on both stores)."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Receiver, Server, free_port, seed, start

pytestmark = pytest.mark.slow
OTHER = "/ps/service/groups/other"
GROUP = "/ps/service/groups/dev"


class Tarpit:
    """Accepts connections and never answers: each attempt holds a worker for its whole
    timeout. `open` counts the connections it holds."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def open(self) -> int:
        """Connections held that their client has not given up (closed) yet."""
        still = 0
        for conn in self.held:
            try:
                conn.setblocking(False)
                still += conn.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                still += 1
            except OSError:
                pass
        return still

    def close(self) -> None:
        self._stop.set()
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "node", **{"webhook-allow-private": True, "max-webhooks-per-group": 40})
    seed(server.config)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


def test_dead_and_slow_receivers_hold_back_no_other_group(node: Server) -> None:
    tarpit, live = Tarpit(), Receiver()
    try:
        with node.client("manager") as mine, node.client("othermgr") as theirs:
            for i in range(40):
                url = (f"http://127.0.0.1:{tarpit.port}/slow{i}" if i % 2
                       else f"http://127.0.0.1:{free_port()}/dead{i}")  # refused
                answer = mine.post(f"{GROUP}/webhooks", data={
                    "url": url, "secret": "s" * 20, "events": "all"})
                assert answer.status_code == 201, answer.text
            answer = theirs.post(f"{OTHER}/webhooks", data={
                "url": live.url("/live"), "secret": "s" * 20})
            assert answer.status_code == 201, answer.text
            for _ in range(5):
                start(mine, GROUP, seconds=0, steps=1)
            start(theirs, OTHER, seconds=0, steps=1)
            [received] = live.wait("/live", 1, timeout=30)
        assert received.headers["x-threadsvc-event"] == "final"
        # It came while the slow receivers still held attempts open: not after them.
        assert tarpit.open() > 0
    finally:
        tarpit.close()
        live.close()
