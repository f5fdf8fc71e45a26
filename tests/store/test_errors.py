"""Each store counts the operations that failed on the database (`Store.errors`, which /metrics
exports as threadsvc_store_errors_total): reads and writes against a table another connection
renamed away fail as StoreUnavailable and are counted; a taken name (Conflict) is no store
error."""

from __future__ import annotations

import sqlite3

import pytest

from threadsvc.errors import Conflict, StoreUnavailable
from threadsvc.models import now_ms
from threadsvc.store.base import Store
from threadsvc.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


async def rename_threads(store: Store) -> None:
    """`threads` renamed by another connection, as a broken or half-restored database would."""
    statement = "ALTER TABLE threads RENAME TO threads_gone"
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(statement)
        return
    import psycopg

    from threadsvc.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    async with await psycopg.AsyncConnection.connect(store.dsn, autocommit=True) as conn:
        await conn.execute(statement)


async def test_failed_operations_are_counted_and_conflicts_are_not(store: Store) -> None:
    assert store.errors == 0
    await store.create_user("taken", None, False)
    with pytest.raises(Conflict):
        await store.create_user("taken", None, False)
    assert await store.get_thread("0" * 32) is None
    assert store.errors == 0
    await rename_threads(store)
    with pytest.raises(StoreUnavailable):
        await store.get_thread("0" * 32)  # a read
    assert store.errors == 1
    with pytest.raises(StoreUnavailable):
        await store.heartbeat("n1", now_ms())  # a write
    assert store.errors == 2
