"""The hostile-input suite's server: the standard world (tests/support.py) on SQLite only.

What these modules attack (parsers, uploads, headers, sessions, tokens) is the same on both
stores, and each module must stay fast; `tests/fuzz` covers the stores' own differences."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Server, running_server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    yield from running_server(tmp_path_factory.mktemp("hostile"), **{"max-running": 16})
