"""Fair slots on a real server: one user's burst does not keep another group's thread waiting
behind it (store/fair.py has the rule; tests/store/test_contract.py its cases on both stores)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.pg import PostgresCluster
from tests.support import Server, running_server, start, wait_final

pytestmark = pytest.mark.slow
OTHER = "/ps/service/groups/other"


@pytest.fixture(params=["sqlite", "postgres"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    settings: dict[str, object] = {"max-running": 2, "max-running-share": 0.5}
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        settings["db"] = cluster.new_database_url()
    for server, _ in running_server(tmp_path, killed=True, **settings):
        yield server


def test_another_groups_thread_takes_the_first_free_slot(node: Server) -> None:
    with node.client("contributor") as mine, node.client("othermgr") as theirs:
        burst = [start(mine, seconds=1, steps=1) for _ in range(6)]
        other = start(theirs, OTHER, seconds=0, steps=1)
        ended = {tid: wait_final(mine, tid) for tid in burst}
        alone = wait_final(theirs, other, OTHER)
    started = sorted(_started(answer) for answer in ended.values())
    # The burst's first two took both slots (alone, it may use every one); the other group's
    # thread had the next free slot, before the burst's third thread, older though that is.
    assert _started(alone) <= started[2]


def _started(answer: httpx.Response) -> str:
    return str(etree.fromstring(answer.content).get("started"))  # ISO 8601: sorts as time
