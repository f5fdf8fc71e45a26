from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from threadsvc.store.base import Store
from threadsvc.store.sqlite import SQLiteStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every store the project has, opened fresh; the contract suite runs on each."""
    opened = SQLiteStore(tmp_path / "store.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
