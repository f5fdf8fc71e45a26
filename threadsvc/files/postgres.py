"""Files kept in the store's PostgreSQL database, for nodes that share nothing but it.

A file is a row of `files` (key, id, size) and its chunks of at most CHUNK bytes in
`file_chunks` (store/sql/postgres/migrations/0009_files.sql). `put` streams the chunks under a
new id with COPY, then swaps the key's row to that id and deletes the old chunks, all in one
transaction: a reader sees the old file or the new one, and a writer killed halfway leaves
nothing (its transaction dies with its connection). Concurrent puts of one key take turns only
for the swap (an advisory lock on the key). A read looks the key up once, then asks for each
chunk it needs, one query each on a pooled connection, so memory stays at one chunk and no
connection or transaction is held while a slow client reads; a file replaced under a reader
ends its read with FileUnavailable.

Threat model: keys are made by the server and checked against base.KEY; every value reaches
SQL as a parameter. The URL may hold a password: messages are redacted before they are raised.
Driver errors stop here: a missing key is FileMissing, anything else FileUnavailable.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from threadsvc.errors import FileMissing, FileUnavailable
from threadsvc.files.base import CHUNK, checked_key, checked_prefix
from threadsvc.models import now_ms
from threadsvc.store import redact
from threadsvc.store.migrate import migrate_postgres

KEYS_PAGE = 1000  # keys listed per query
# Seconds a call waits for a pooled connection once the server was found unreachable (instead
# of `timeout`), until a call succeeds again: during an outage a request is 503 at once.
DOWN_WAIT = 1.0
# Held from the swap to the commit: the old id read by one put is the one it deletes.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('threadsvc.files'), hashtext(%s))"
_COPY = "COPY file_chunks (file_id, n, data) FROM STDIN (FORMAT BINARY)"
_SWAP = """
    WITH old AS (DELETE FROM file_chunks WHERE file_id = (SELECT id FROM files WHERE key = %(key)s))
    INSERT INTO files (key, id, size, created) VALUES (%(key)s, %(id)s, %(size)s, %(created)s)
    ON CONFLICT (key) DO UPDATE SET id = excluded.id, size = excluded.size,
        created = excluded.created"""
_DELETE = """
    WITH gone AS (DELETE FROM files WHERE {where} RETURNING id)
    DELETE FROM file_chunks WHERE file_id IN (SELECT id FROM gone)"""
_PREFIX = "key >= %(low)s AND key < %(high)s"  # a range of the byte-ordered primary key


class PostgresFiles:
    kind = "postgres"

    def __init__(self, url: str, *, max_size: int = 4, timeout: float = 10.0) -> None:
        """`url`: the store's libpq URL. `timeout`: seconds to wait for the server at open,
        and for a free connection at each call."""
        self.url = url
        self._max_size = max_size
        self._timeout = timeout
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._down = False  # the last call could not reach the server

    # -- plumbing ---------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect, and make the tables if the store has not yet (the store's own migration,
        run once however many nodes start)."""
        with self._errors("cannot reach the database"):
            # One plain connection first: its refusal says why, where the pool only times out.
            async with await AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=max(1, round(self._timeout))
            ) as conn:
                await migrate_postgres(conn)
            pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
                self.url, kwargs={"autocommit": True}, min_size=1, max_size=self._max_size,
                timeout=self._timeout, open=False, name="threadsvc-files",
            )
            try:
                await pool.open(wait=True, timeout=self._timeout)
            except BaseException:
                await pool.close()
                raise
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (psycopg.Error, PoolTimeout, PoolClosed) as exc:
            reason = redact(" ".join(str(exc).split()), self.url) or type(exc).__name__
            raise FileUnavailable(f"PostgreSQL files: {doing}: {reason}") from None

    @contextlib.asynccontextmanager
    async def _connection(self, doing: str) -> AsyncIterator[AsyncConnection[Any]]:
        if self._pool is None:
            raise FileUnavailable("PostgreSQL files: not open")
        with self._errors(doing):
            try:
                async with self._pool.connection(DOWN_WAIT if self._down else None) as conn:
                    yield conn
            except (psycopg.OperationalError, PoolTimeout):
                self._down = True
                raise
        self._down = False

    def local_path(self, key: str) -> None:
        return None

    def presigned_url(self, key: str, ttl: int, filename: str, media_type: str) -> None:
        return None

    # -- writing ----------------------------------------------------------------------------
    async def put(self, key: str, source: Path) -> int:
        checked_key(key)
        with await anyio.to_thread.run_sync(source.open, "rb") as handle:
            return await self._put(key, _read_chunks(handle))

    async def _put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        async with self._connection(f"cannot store {key}") as conn, conn.transaction():
            file_id = await _value(conn, "SELECT nextval('file_ids')")
            size = 0
            async with conn.cursor() as cur, cur.copy(_COPY) as copy:
                copy.set_types(["int8", "int4", "bytea"])
                n = 0
                async for chunk in chunks:
                    await copy.write_row((file_id, n, chunk))
                    size += len(chunk)
                    n += 1
            await conn.execute(_LOCK, (key,))
            await conn.execute(
                _SWAP, {"key": key, "id": file_id, "size": size, "created": now_ms()}
            )
        return size

    async def delete(self, key: str) -> None:
        checked_key(key)
        async with self._connection(f"cannot delete {key}") as conn, conn.transaction():
            await conn.execute(_LOCK, (key,))
            await conn.execute(_DELETE.format(where="key = %(key)s"), {"key": key})

    async def delete_prefix(self, prefix: str) -> None:
        async with self._connection(f"cannot delete {prefix}") as conn:
            await conn.execute(_DELETE.format(where=_PREFIX), _range(prefix))

    # -- reading ----------------------------------------------------------------------------
    async def _find(self, key: str) -> tuple[int, int] | None:
        """(id, size) of `key`, or None."""
        checked_key(key)
        async with self._connection(f"cannot read {key}") as conn:
            cur = await conn.execute("SELECT id, size FROM files WHERE key = %s", (key,))
            row = await cur.fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    async def size(self, key: str) -> int | None:
        found = await self._find(key)
        return None if found is None else found[1]

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        found = await self._find(key)
        if found is None:
            raise FileMissing(f"no file {key}")
        file_id, size = found
        end = size if end is None else min(end, size)
        last = (end - 1) // CHUNK if end > start else -1  # the chunk that holds byte end - 1
        for n in range(start // CHUNK, last + 1):
            async with self._connection(f"cannot read {key}") as conn:
                cur = await conn.execute(
                    "SELECT data FROM file_chunks WHERE file_id = %s AND n = %s",
                    (file_id, n), binary=True,
                )
                row = await cur.fetchone()
            if row is None:
                raise FileUnavailable(f"PostgreSQL files: {key} was replaced while read")
            data: bytes = row[0]
            yield data[max(start - n * CHUNK, 0) : end - n * CHUNK]

    async def fetch(self, key: str, target: Path) -> None:
        try:
            async with await anyio.open_file(target, "wb") as out:
                async for chunk in self.read(key):
                    await out.write(chunk)
        except BaseException:
            with anyio.CancelScope(shield=True):  # even when cancelled: no part of a file left
                await anyio.Path(target).unlink(missing_ok=True)
            raise

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        after = ""  # keyset pages: one page of keys in memory at a time
        bounds = _range(prefix)
        while True:
            async with self._connection(f"cannot list {prefix}") as conn:
                cur = await conn.execute(
                    f"SELECT key FROM files WHERE {_PREFIX} AND key > %(after)s"
                    " ORDER BY key LIMIT %(limit)s",
                    {**bounds, "after": after, "limit": KEYS_PAGE},
                )
                page = [str(row[0]) for row in await cur.fetchall()]
            for key in page:
                yield key
            if len(page) < KEYS_PAGE:
                return
            after = page[-1]

    async def check(self) -> None:
        key = f"check/{uuid.uuid4().hex}"
        try:
            await self._put(key, _one(b"ok"))
            if b"".join([chunk async for chunk in self.read(key)]) != b"ok":
                raise FileUnavailable("PostgreSQL files: the marker read back is not the one written")
        finally:
            with contextlib.suppress(FileUnavailable):
                await self.delete(key)


def _range(prefix: str) -> dict[str, str]:
    """Keys that start with `prefix` are those from it up to the next string of its length
    (keys are ASCII, compared byte by byte)."""
    checked_prefix(prefix)
    return {"low": prefix, "high": prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\x7f"}


async def _value(conn: AsyncConnection[Any], sql: str) -> int:
    row = await (await conn.execute(sql)).fetchone()
    assert row is not None
    return int(row[0])


async def _read_chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    """Chunks of exactly CHUNK bytes but the last (a read finds chunk `n` at `n * CHUNK`)."""
    while chunk := await anyio.to_thread.run_sync(_read_full, handle):
        yield chunk


def _read_full(handle: BinaryIO) -> bytes:
    data = handle.read(CHUNK)  # a pipe may give less: read on up to CHUNK or the end
    while data and len(data) < CHUNK and (more := handle.read(CHUNK - len(data))):
        data += more
    return data


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
