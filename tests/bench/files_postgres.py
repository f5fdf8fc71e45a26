"""How to keep files in PostgreSQL: large objects or a table of chunks? Prints, for a file of
SIZE MiB (200 by default) of random bytes (a zip is as incompressible) or of repetitive XML,
the write and read throughput and the peak RSS of the client process, for each design:

- `lo`: large objects through the server's lo_* functions (psycopg 3 has no client API),
  one `lowrite`/`loread` of CHUNK bytes per call; `files(key, oid, size)`.
- `chunks`: `file_chunks(file_id, n, data bytea)`, one row per CHUNK, default STORAGE
  (EXTENDED: TOAST tries to compress each chunk).
- `chunks-lz4`: the same with COMPRESSION lz4 (PostgreSQL 14 and later, built with lz4).
- `chunks-external`: the same with STORAGE EXTERNAL (no compression).
- `threadsvc`: threadsvc.files.postgres.PostgresFiles itself, as the server runs it.

Each design runs in a fresh child process, so that its peak RSS is its own.

    [REPEAT=3] python -m tests.bench.files_postgres [SIZE_MIB] [DSN]

Each run is on a database of its own (the DSN's role must be able to create databases).
Without a DSN it starts a private cluster as the tests do (tests/pg.py: fsync off, so the
figures are the client's and the server's work, not the disk's). "stored" is the size of the
relation that holds the file, with its TOAST table and indexes.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from threadsvc.files.base import CHUNK

DESIGNS = ("lo", "chunks", "chunks-lz4", "chunks-external", "threadsvc")
CONTENTS = ("random", "xml")


def make_source(path: Path, size: int, content: str) -> None:
    line = b"<row id='0000'><name>a result row</name><value>42.0</value></row>\n"
    with path.open("wb") as out:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            out.write(os.urandom(n) if content == "random" else (line * (n // len(line) + 1))[:n])
            left -= n


# -- the designs, minimal: what each costs, not a backend ----------------------------------
def setup(conn: psycopg.Connection, design: str) -> None:
    conn.execute("DROP TABLE IF EXISTS bench_chunks, bench_files")
    conn.execute("CREATE TABLE bench_files (key TEXT PRIMARY KEY, oid OID, size BIGINT)")
    conn.execute(
        "CREATE TABLE bench_chunks (file_id BIGINT, n INTEGER, data BYTEA NOT NULL,"
        " PRIMARY KEY (file_id, n))"
    )
    if design == "chunks-external":
        conn.execute("ALTER TABLE bench_chunks ALTER COLUMN data SET STORAGE EXTERNAL")
    if design == "chunks-lz4":
        conn.execute("ALTER TABLE bench_chunks ALTER COLUMN data SET COMPRESSION lz4")


async def write_lo(conn: psycopg.AsyncConnection, source: Path, size: int) -> None:
    async with conn.transaction():
        oid = (await (await conn.execute("SELECT lo_create(0)")).fetchone())[0]
        fd = (await (await conn.execute("SELECT lo_open(%s, 131072)", (oid,))).fetchone())[0]
        with source.open("rb") as f:
            while chunk := f.read(CHUNK):
                await conn.execute("SELECT lowrite(%s, %b)", (fd, chunk))
        await conn.execute("INSERT INTO bench_files VALUES ('k', %s, %s)", (oid, size))


async def read_lo(conn: psycopg.AsyncConnection) -> int:
    total = 0
    async with conn.transaction():
        oid = (await (await conn.execute("SELECT oid FROM bench_files")).fetchone())[0]
        fd = (await (await conn.execute("SELECT lo_open(%s, 262144)", (oid,))).fetchone())[0]
        while True:
            cur = await conn.execute("SELECT loread(%s, %s)", (fd, CHUNK), binary=True)
            data = (await cur.fetchone())[0]
            if not data:
                return total
            total += len(data)


async def write_chunks(conn: psycopg.AsyncConnection, source: Path, size: int) -> None:
    async with conn.transaction(), conn.cursor() as cur:
        copying = "COPY bench_chunks (file_id, n, data) FROM STDIN (FORMAT BINARY)"
        async with cur.copy(copying) as copy:
            copy.set_types(["int8", "int4", "bytea"])
            with source.open("rb") as f:
                n = 0
                while chunk := f.read(CHUNK):
                    await copy.write_row((1, n, chunk))
                    n += 1
        await cur.execute("INSERT INTO bench_files VALUES ('k', NULL, %s)", (size,))


async def read_chunks(conn: psycopg.AsyncConnection) -> int:
    total, n = 0, 0
    while True:
        cur = await conn.execute(
            "SELECT data FROM bench_chunks WHERE file_id = 1 AND n = %s", (n,), binary=True
        )
        row = await cur.fetchone()
        if row is None:
            return total
        total += len(row[0])
        n += 1


async def run_threadsvc(dsn: str, source: Path) -> tuple[float, float, int]:
    from threadsvc.files.postgres import PostgresFiles

    files = PostgresFiles(dsn)
    await files.open()  # migrates: makes the tables
    try:
        began = time.perf_counter()
        await files.put("results/bench", source)
        written = time.perf_counter() - began
        began = time.perf_counter()
        total = 0
        async for chunk in files.read("results/bench"):
            total += len(chunk)
        return written, time.perf_counter() - began, total
    finally:
        await files.close()


STORED = {
    "lo": "pg_largeobject",
    "threadsvc": "file_chunks",
}


async def one(design: str, dsn: str, source: Path, size: int) -> dict[str, float]:
    """One design on a database of its own: the figures of one write and one read."""
    import threadsvc.files.postgres  # noqa: F401 (imported before the baseline, by every design)

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if design == "threadsvc":
        written, read, total = await run_threadsvc(dsn, source)
    else:
        with psycopg.connect(dsn, autocommit=True) as sync:
            setup(sync, design)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            began = time.perf_counter()
            write = write_lo if design == "lo" else write_chunks
            await write(conn, source, size)
            written = time.perf_counter() - began
            began = time.perf_counter()
            total = await (read_lo(conn) if design == "lo" else read_chunks(conn))
            read = time.perf_counter() - began
    with psycopg.connect(dsn, autocommit=True) as sync:
        row = sync.execute(
            "SELECT pg_total_relation_size(%s::regclass)", (STORED.get(design, "bench_chunks"),)
        ).fetchone()
    assert total == size, (total, size)
    return {"write": size / 2**20 / written, "read": size / 2**20 / read,
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "baseline": baseline, "stored": row[0] / 2**20 if row else 0.0}


def run_one(design: str, admin: str, source: Path) -> dict[str, float]:
    """`one` in a child process (its peak RSS its own), on a new database dropped after."""
    name = f"bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        dsn = psycopg.conninfo.make_conninfo(admin, dbname=name)
        done = subprocess.run([sys.executable, __file__, "--one", design, dsn, str(source)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-500:])
        figures: dict[str, float] = json.loads(done.stdout)
        return figures
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        design, dsn, source = sys.argv[2], sys.argv[3], Path(sys.argv[4])
        print(json.dumps(asyncio.run(one(design, dsn, source, source.stat().st_size))))
        return
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    repeat = int(os.environ.get("REPEAT", "3"))
    cluster = None
    if len(sys.argv) > 2:
        admin = sys.argv[2]  # a role that may create databases
    else:
        from tests.pg import PostgresCluster

        cluster = PostgresCluster.start()
        admin = cluster.dsn
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{size} MiB, CHUNK {CHUNK // 1024} KiB, median of {repeat} runs"
                  f" (peak RSS: the highest)")
            print(f"{'content':8} {'design':16} {'write MiB/s':>12} {'read MiB/s':>11}"
                  f" {'peak RSS MiB':>13} {'(at start)':>10} {'stored MiB':>11}")
            for content in CONTENTS:
                source = Path(tmp) / f"{content}.bin"
                make_source(source, size * 2**20, content)
                for design in DESIGNS:
                    runs = [run_one(design, admin, source) for _ in range(repeat)]
                    print(f"{content:8} {design:16}"
                          f" {statistics.median(r['write'] for r in runs):12.1f}"
                          f" {statistics.median(r['read'] for r in runs):11.1f}"
                          f" {max(r['peak'] for r in runs):13.1f}"
                          f" {max(r['baseline'] for r in runs):10.1f}"
                          f" {statistics.median(r['stored'] for r in runs):11.1f}", flush=True)
                source.unlink()
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
