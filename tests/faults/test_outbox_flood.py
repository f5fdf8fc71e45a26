"""A flooded outbox: 300,000 pending deliveries to 100 dead receivers of one group (written
with SQL, as a flood of changes would leave them) do not hold back another group's delivery,
on either store (docs/decisions.md "Webhooks under many tenants")."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from lxml import etree

from tests.bench.outbox import flood
from tests.support import Receiver, Server, free_port, seed, start, wait_final

pytestmark = pytest.mark.slow
GROUP, OTHER = "/ps/service/groups/dev", "/ps/service/groups/other"
PENDING = 300_000
DEAD = 100


@pytest.fixture(params=["sqlite", "postgres"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """A server and its store's URL."""
    db = f"sqlite:///{tmp_path / 'node' / 'threadsvc.db'}"
    if request.param == "postgres":
        db = request.getfixturevalue("postgres").new_database_url()
    server = Server(tmp_path / "node", db=db, **{"webhook-allow-private": True,
                                                 "max-webhooks-per-group": DEAD})
    seed(server.config)
    server.start()
    try:
        yield server, db
    finally:
        server.stop(signal.SIGKILL)


def test_a_live_receiver_gets_its_delivery_beside_a_flooded_outbox(
    node: tuple[Server, str],
) -> None:
    server, db = node
    live = Receiver()
    try:
        with server.client("manager") as mine, server.client("othermgr") as theirs:
            ids = []
            for i in range(DEAD):
                answer = mine.post(f"{GROUP}/webhooks", data={
                    "url": f"http://127.0.0.1:{free_port()}/dead{i}", "secret": "s" * 20,
                    "events": "all"})
                assert answer.status_code == 201, answer.text
                ids.append(int(etree.fromstring(answer.content).get("id")))
            flood(db, min(ids), DEAD, PENDING)
            answer = theirs.post(f"{OTHER}/webhooks", data={
                "url": live.url("/live"), "secret": "s" * 20})
            assert answer.status_code == 201, answer.text
            for _ in range(3):
                tid = start(theirs, OTHER, seconds=0, steps=1)
                ended = etree.fromstring(wait_final(theirs, tid, OTHER).content).get("ended")
                [received] = [r for r in live.wait("/live", 1, timeout=60)
                              if f'id="{tid}"'.encode() in r.body]
                late = time.time() - datetime.fromisoformat(str(ended)).timestamp()
                print(f"\n{db.split(':')[0]}: delivered {late:.2f} s after the thread "
                      f"ended, beside {PENDING:,} pending deliveries")
                live.requests.clear()
        assert received.headers["x-threadsvc-event"] == "final"
    finally:
        live.close()

