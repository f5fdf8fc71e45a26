from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.pg import PostgresCluster
from threadsvc.store.base import Store
from threadsvc.store.sqlite import SQLiteStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every store the project has, opened fresh; the contract suite runs on each."""
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "store.db")
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()
        return
    from threadsvc.store.postgres import PostgresStore

    cluster: PostgresCluster = request.getfixturevalue("postgres")  # skips without PostgreSQL
    dsn = cluster.new_database()
    opened = PostgresStore(dsn)
    try:
        await opened.open()
        yield opened
    finally:
        await opened.close()
        cluster.drop_database(dsn)
