"""Many tenants' webhooks on a real server: one group's dead and never-answering receivers
do not hold back another group's delivery (tests/store/test_delivery_fairness.py has the
rules on both stores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Listener, Receiver, Server, free_port, running_server, start

pytestmark = pytest.mark.slow
OTHER = "/ps/service/groups/other"
GROUP = "/ps/service/groups/dev"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Server]:
    settings = {"webhook-allow-private": True, "max-webhooks-per-group": 40}
    for server, _ in running_server(tmp_path, killed=True, **settings):
        yield server


def test_dead_and_slow_receivers_hold_back_no_other_group(node: Server) -> None:
    tarpit, live = Listener(None), Receiver()  # a tarpit: accepts, never answers
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
