from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pg import PostgresCluster
from tests.pg import unavailable as pg_unavailable
from tests.support import Clock, InProcess, Server, running_server
from threadsvc import models

NewStore = Callable[[Path], str]
# A module on both stores runs its servers again on PostgreSQL: that half is `slow` (the fast
# tier keeps PostgreSQL in the store contract suite, tests/store).
STORES = ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `postgres` every test that asks for the cluster, directly or through a fixture (the
    stores' parameters carry the mark themselves: they ask for it only when they run)."""
    for item in items:
        if "postgres" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="module", params=STORES)
def new_store(request: pytest.FixtureRequest) -> NewStore:
    """Each store the project has, as a maker of fresh store URLs for servers in `directory`:
    modules whose servers use it run once on each store."""
    if request.param == "postgres":
        cluster: PostgresCluster = request.getfixturevalue("postgres")
        return lambda directory: cluster.new_database_url()
    return lambda directory: f"sqlite:///{directory / 'threadsvc.db'}"


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    """A real server with the standard world (see tests/support.py), shared by a module."""
    directory = tmp_path_factory.mktemp("server")
    settings: dict[str, Any] = {"max-running": 64, "db": new_store(directory)}
    yield from running_server(directory, **settings)


@pytest.fixture(scope="module")
def in_process_world(
    tmp_path_factory: pytest.TempPathFactory, new_store: NewStore
) -> Iterator[tuple[Server, dict[str, str]]]:
    """`world`, served in this process through httpx.ASGITransport (tests/support.py
    `InProcess`): for modules that ask only what the app answers. A module uses it by
    overriding `world` with it."""
    directory = tmp_path_factory.mktemp("app")
    settings: dict[str, Any] = {"max-running": 64, "db": new_store(directory)}
    yield from running_server(directory, kind=InProcess, **settings)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """threadsvc's clock, for this test, moved on with `clock.advance(seconds)` (the rules of
    `InProcess` servers see it; servers in their own processes do not)."""
    moved = Clock()
    monkeypatch.setattr(models, "wall_clock_ns", moved)
    return moved


@pytest.fixture(scope="module")
def server(world: tuple[Server, dict[str, str]]) -> Server:
    return world[0]


@pytest.fixture(scope="module")
def tokens(world: tuple[Server, dict[str, str]]) -> dict[str, str]:
    return world[1]


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server for the session: THREADSVC_TEST_POSTGRES, or a private cluster started
    here (see tests/pg.py). Skips, saying why, where there is neither. `.new_database()` gives
    each test a database of its own."""
    reason = pg_unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = PostgresCluster.from_environment()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """moto's standalone S3 server for the session (tests/s3servers.py says what it lacks)."""
    from tests.s3servers import start_moto

    server = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """s3rver for the session: it checks pre-signed links (skips without Node.js, not in CI)."""
    from tests.s3servers import s3rver_or_skip

    server = s3rver_or_skip(tmp_path_factory.mktemp("s3rver"))
    try:
        yield server
    finally:
        server.stop()
