from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, running_server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A real server with the standard world (see tests/support.py), shared by a module."""
    yield from running_server(tmp_path_factory.mktemp("server"), **{"max-running": 64})


@pytest.fixture(scope="module")
def server(world: tuple[Server, dict[str, str]]) -> Server:
    return world[0]


@pytest.fixture(scope="module")
def tokens(world: tuple[Server, dict[str, str]]) -> dict[str, str]:
    return world[1]


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    return tmp_path
