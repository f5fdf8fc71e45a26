"""What only the PostgreSQL file storage promises, beyond the contract suite: a writer killed
halfway leaves nothing, a ranged read asks only for the chunks it needs, and a database that
drops its connections gives FileUnavailable, never a driver's error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psycopg
import pytest

from tests.pg import PostgresCluster
from threadsvc.errors import FileUnavailable
from threadsvc.files.base import CHUNK
from threadsvc.files.postgres import PostgresFiles

pytestmark = [pytest.mark.anyio, pytest.mark.postgres, pytest.mark.slow]
DATA = os.urandom(3 * CHUNK + 7)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def url(postgres: PostgresCluster) -> AsyncIterator[str]:
    made = postgres.new_database_url()
    yield made
    postgres.drop_database(made)


@pytest.fixture
async def files(url: str) -> AsyncIterator[PostgresFiles]:
    opened = PostgresFiles(url, timeout=5)
    await opened.open()
    yield opened
    await opened.close()


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


PUT = textwrap.dedent("""
    import sys, anyio
    from pathlib import Path
    from threadsvc.files.postgres import PostgresFiles

    async def main() -> None:
        files = PostgresFiles(sys.argv[1])
        await files.open()
        await files.put("results/killed", Path(sys.argv[2]))

    anyio.run(main)
""")


def put_and_kill_halfway(url: str, pipe: Path) -> None:
    """A child process puts `results/killed` from `pipe`; it is killed after a chunk and a half,
    and this returns once the server has seen its connection go."""
    child = subprocess.Popen([sys.executable, "-c", PUT, url, str(pipe)])
    try:
        with pipe.open("wb") as out:
            out.write(DATA[: CHUNK + CHUNK // 2])  # returns once the child has read most of it
            out.flush()
            time.sleep(0.5)  # not for the assertion: gives the first chunk time to reach COPY
            child.send_signal(signal.SIGKILL)
            child.wait(30)
    except BrokenPipeError:
        pass
    finally:
        if child.poll() is None:
            child.kill()
    deadline = time.monotonic() + 30
    while count(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state <> 'idle' AND pid <> pg_backend_pid()") and time.monotonic() < deadline:
        time.sleep(0.1)


async def test_a_writer_killed_halfway_leaves_nothing(
    files: PostgresFiles, url: str, tmp_path: Path
) -> None:
    """A process putting a file from a pipe is killed after a chunk and a half: no key, and
    no chunk left over once the server has noticed."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    await anyio.to_thread.run_sync(put_and_kill_halfway, url, pipe)
    assert await files.size("results/killed") is None
    assert [key async for key in files.keys("results/")] == []
    assert count(url, "SELECT count(*) FROM file_chunks") == 0
    # and the storage still works
    (tmp_path / "whole").write_bytes(DATA)
    await files.put("results/killed", tmp_path / "whole")
    assert b"".join([c async for c in files.read("results/killed")]) == DATA


async def test_a_range_reads_only_its_chunks(files: PostgresFiles, url: str,
                                             tmp_path: Path) -> None:
    (tmp_path / "source").write_bytes(DATA)
    await files.put("results/ranged", tmp_path / "source")
    with psycopg.connect(url) as conn:  # lose the first and last chunks behind its back
        conn.execute("DELETE FROM file_chunks WHERE n IN (0, 3)")
    middle = b"".join([c async for c in files.read("results/ranged", CHUNK + 5, 3 * CHUNK)])
    assert middle == DATA[CHUNK + 5 : 3 * CHUNK]
    with pytest.raises(FileUnavailable):
        _ = [c async for c in files.read("results/ranged", CHUNK - 1, CHUNK + 1)]


@pytest.mark.slow
async def test_connections_dropped(files: PostgresFiles, postgres: PostgresCluster, url: str,
                                   tmp_path: Path) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    (tmp_path / "source").write_bytes(b"data")
    await files.put("results/there", tmp_path / "source")
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = %s", (name,))
    try:
        for call in (lambda: files.size("results/there"), files.check,
                     lambda: files.put("results/other", tmp_path / "source"),
                     lambda: files.delete("results/there")):
            with pytest.raises(FileUnavailable):
                await call()
        with pytest.raises(FileUnavailable):
            _ = [c async for c in files.read("results/there")]
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    deadline = time.monotonic() + 60  # back once the pool has connected again
    while True:
        try:
            assert await files.size("results/there") == 4
            break
        except FileUnavailable:
            if time.monotonic() > deadline:
                raise
            await anyio.sleep(0.2)


def test_chunks_are_compressed_with_lz4_where_the_server_has_it(url: str) -> None:
    with psycopg.connect(url) as conn:
        version = conn.info.server_version
        lz4 = conn.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                           " WHERE name = 'default_toast_compression'").fetchone()
    if version < 140000 or not (lz4 and lz4[0]):
        pytest.skip("this server has no lz4: the default compression stays")
    from threadsvc.store.postgres import PostgresStore

    async def migrate() -> None:
        store = PostgresStore(url)
        await store.open()
        await store.close()

    anyio.run(migrate)
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT attcompression FROM pg_attribute WHERE attname = 'data'"
                             " AND attrelid = 'file_chunks'::regclass").fetchone()
    assert found is not None and found[0] == "l"


async def test_no_chunk_outlives_its_file(files: PostgresFiles, url: str, tmp_path: Path) -> None:
    """Replacing, racing puts, deleting one key or a thread's uploads: every chunk left is one
    of a file that is there, and every file has all its chunks."""
    orphans = "SELECT count(*) FROM file_chunks WHERE file_id NOT IN (SELECT id FROM files)"
    chunks = "SELECT count(*) FROM file_chunks"
    sources = []
    for n in range(8):
        sources.append(tmp_path / f"s{n}")
        sources[-1].write_bytes(bytes([n]) * (2 * CHUNK + n + 1))  # three chunks each
    async with anyio.create_task_group() as tasks:
        for path in sources:
            tasks.start_soon(files.put, "results/raced", path)
    assert (count(url, orphans), count(url, chunks)) == (0, 3)
    await files.put("results/raced", sources[0])
    for n in range(3):
        await files.put(f"uploads/t/file-{n}", sources[n])
    assert (count(url, orphans), count(url, chunks)) == (0, 12)
    await files.delete_prefix("uploads/t/")
    assert (count(url, orphans), count(url, chunks)) == (0, 3)
    await files.delete("results/raced")
    assert count(url, chunks) == 0
