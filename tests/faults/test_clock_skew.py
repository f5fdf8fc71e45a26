"""One clock: a node whose own clock runs 90 s fast (Debian's faketime) joins two correct ones
on one PostgreSQL store and takes no live thread from them; it says its clock is off in /ready
and in its log, and the times it writes are the database's (runner/clock.py)."""

from __future__ import annotations

import glob
import signal
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.pg import PostgresCluster
from tests.support import Server, seed, start, wait_final, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
GROUP = "/ps/service/groups/dev"


class FastClockServer(Server):
    """`threadsvc serve` with Debian's libfaketime preloaded (package faketime; .ci/run installs
    it), its clock 90 s ahead of everyone's. Preloaded through `env`, which execs the server:
    the `faketime` command forks, and a SIGKILL of it would leave the server running."""

    def command(self) -> list[str]:
        found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
        assert found, "libfaketime is not installed (Debian: apt-get install faketime)"
        return ["env", f"LD_PRELOAD={found[0]}", "FAKETIME=+90s", *super().command()]


def _attr(answer: httpx.Response, name: str) -> str:
    return str(etree.fromstring(answer.content).get(name))


@pytest.mark.timeout(120)
def test_a_node_with_a_fast_clock_takes_no_live_thread(
    tmp_path: Path, postgres: PostgresCluster
) -> None:
    db = postgres.new_database_url()
    common = {"db": db, "lease-timeout": 3}
    nodes = [Server(tmp_path / f"n{i}", node=f"n{i}", **common) for i in (1, 2)]
    fast = FastClockServer(tmp_path / "fast", node="fast", **common, **{"max-running": 0})
    seed(nodes[0].config)
    for node in nodes:
        node.start()
    try:
        with nodes[0].client("contributor") as http:
            live = [start(http, GROUP, seconds=8, steps=8) for _ in range(4)]
            for tid in live:
                wait_for(http, f"{GROUP}/threads/{tid}/progress",
                         lambda r: 'status="inprogress"' in r.text)
            fast.start()
            ready = httpx.get(f"{fast.url}/ready")
            assert ready.status_code == 200
            assert "clock is 90" in ready.text and "ahead of the database's" in ready.text
            for tid in live:  # none taken from its node as lost, none failed
                assert 'status="completed"' in wait_final(http, tid, timeout=60).text
        with fast.client("contributor") as http:
            tid = start(http, GROUP, seconds=0)
            created = _attr(http.get(f"{GROUP}/threads/{tid}/progress"), "created")
        skew = datetime.fromisoformat(created).timestamp() - time.time()
        assert abs(skew) < 5, skew  # the database's time, not the node's own
        assert "ahead of the database's" in fast.log.read_text()
    finally:
        for node in [*nodes, fast]:
            if node.process is not None:
                node.stop(signal.SIGKILL)
