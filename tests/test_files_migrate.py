"""`threadsvc files migrate --to postgres`: every upload and result of a local data-dir reaches
the store's database with the same bytes, through a kill halfway and a second run; then the
store records the new storage and a node on the old one refuses to start. And what is refused
before anything is copied."""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import psycopg
import pytest
from click.testing import CliRunner

from tests.pg import PostgresCluster
from tests.support import Server
from threadsvc.cli import main
from threadsvc.files.base import CHUNK, result_key, uploads_prefix
from threadsvc.files.local import LocalFiles
from threadsvc.files.migrate import check_recorded
from threadsvc.files.postgres import PostgresFiles
from threadsvc.models import Level, LogEvent, Status, Thread, now_ms
from threadsvc.settings import SettingsError
from threadsvc.store.sqlite import SQLiteStore

SMALL_PIPE = 4096  # the least a pipe holds: the migration can run at most this far ahead


def seed(data_dir: Path) -> dict[str, bytes]:
    """30 threads' results (a few of several chunks) and 3 uploads each."""
    local, files = LocalFiles(data_dir), {}
    for n in range(30):
        thread = uuid.uuid4().hex
        files[result_key(thread)] = os.urandom(2 * CHUNK + n if n % 10 == 0 else 100 + n)
        for p in range(3):
            files[f"{uploads_prefix(thread)}file-{p}"] = os.urandom(50 + p)
    scratch = data_dir.parent / "scratch"
    scratch.mkdir()

    async def put_all() -> None:
        for key, data in files.items():
            source = scratch / "new"
            source.write_bytes(data)
            await local.put(key, source)

    anyio.run(put_all)
    return files


def migrate(config: Path, kill_after: int | None = None) -> tuple[int, list[str]]:
    """Run the command; with `kill_after`, SIGKILL it once it has said that many lines (its
    standard error is a small pipe, so it is then far from done)."""
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, SMALL_PIPE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "threadsvc", "files", "migrate", "--to", "postgres",
         "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=write, env=env,
    )
    os.close(write)
    lines: list[str] = []
    with os.fdopen(read, "r") as said:
        for line in said:
            lines.append(line.rstrip("\n"))
            if kill_after is not None and len(lines) == kill_after:
                process.send_signal(signal.SIGKILL)
                break
        code = process.wait(60)
    return code, lines


def recorded(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT value FROM server_settings WHERE key = 'files'").fetchone()
    return None if row is None else str(row[0])


async def read_back(url: str, keys: list[str]) -> dict[str, bytes]:
    files = PostgresFiles(url)
    await files.open()
    try:
        return {key: b"".join([c async for c in files.read(key)]) for key in keys}
    finally:
        await files.close()


@pytest.mark.slow
def test_migrate_local_to_postgres(postgres: PostgresCluster, tmp_path: Path) -> None:
    url = postgres.new_database_url()
    try:
        files = seed(tmp_path / "data")
        # files under data-dir, which the nodes share (as before files could be elsewhere)
        node = Server(tmp_path, db=url, files="local", **{"files-shared": True})
        node.start()  # the first node records where the files are: here
        node.stop()
        assert recorded(url) == "local"

        code, lines = migrate(node.config, kill_after=5)
        assert code == -signal.SIGKILL
        assert all(" copied " in line for line in lines)
        assert recorded(url) == "local"  # not switched: the nodes still use their files

        code, lines = migrate(node.config)
        assert code == 0, lines
        steps = [line for line in lines if "/" in line.split()[0]]
        assert len(steps) == len(files) and steps[-1].startswith(f"{len(files)}/{len(files)} ")
        present = [line for line in steps if " present " in line]
        assert len(present) >= 5  # the first run's work was kept
        print(f"\nmigrate: {len(files)} files, killed after 5 lines; the second run found"
              f" {len(present)} there and copied {len(steps) - len(present)}")
        assert any(" copied " in line for line in steps)
        assert recorded(url) == "postgres"

        assert anyio.run(read_back, url, list(files)) == files
        code, lines = migrate(node.config)  # once more: nothing left to copy
        assert code == 0 and not any(" copied " in line for line in lines)

        with pytest.raises(RuntimeError, match="files migrate"):
            node.start()  # a node on local files refuses this store now
    finally:
        postgres.drop_database(url)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--to", "local"], "in 'local' already"),
        (["--to", "postgres"], "need a PostgreSQL store"),
        (["--to", "nowhere"], "Invalid value for '--to'"),
    ],
)
def test_refused_before_anything_is_copied(tmp_path: Path, args: list[str], said: str) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    done = CliRunner().invoke(main, ["files", "migrate", "--db", db, *args])
    assert done.exit_code == 2 and said in done.output, done.output
    assert not (tmp_path / "store.db").exists()


def test_a_node_on_another_storage_is_refused(tmp_path: Path) -> None:
    async def run() -> None:
        store = SQLiteStore(tmp_path / "store.db")
        await store.open()
        try:
            await check_recorded(store, "local")  # the first node records its own
            await check_recorded(store, "local")
            with pytest.raises(SettingsError, match="files migrate --to postgres"):
                await check_recorded(store, "postgres")
            await store.put_setting("files", "postgres")  # as a migration ends
            await check_recorded(store, "postgres")
            with pytest.raises(SettingsError, match='set files = "postgres"'):
                await check_recorded(store, "local")
        finally:
            await store.close()

    anyio.run(run)


def test_a_store_from_before_the_record_keeps_its_files_under_data_dir(tmp_path: Path) -> None:
    """Threads but no record: an earlier version's store, whose files are all local."""
    async def run() -> None:
        store = SQLiteStore(tmp_path / "store.db")
        await store.open()
        try:
            now = now_ms()
            thread = Thread(secrets.token_hex(16), "Sleep thread", "alice", 240, "sleep", {},
                            Status.INITIALISED, now, version=1)
            await store.insert_thread(thread, LogEvent(1, now, Level.INFO, "created"))
            with pytest.raises(SettingsError, match='"local" with files-shared = true'):
                await check_recorded(store, "postgres")
            await check_recorded(store, "local")
        finally:
            await store.close()

    anyio.run(run)
