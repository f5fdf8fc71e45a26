"""Who else on the machine can read the server's files.

The SQLite store (password and token hashes, webhook secrets, and the generated secret key
that signs sessions, links and access tokens) and the data-dir (results, uploads) were created
with the process's umask: 0644 and 0755 under the usual 022, readable by every local user.
Now, whatever the umask (022, 002, even 000): the store file and its -wal and -shm files are
0600; every directory the server makes under data-dir is 0700 and every file 0600; a store
left readable by an earlier version is made 0600 when the server opens it; a store made by
the CLI (`user add` on a new store) is 0600 too."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.payloads import GROUP, finish
from tests.support import Server, seed, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=[0o022, 0o002, 0o000], ids=["022", "002", "000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The umask the server process inherits from this one."""
    saved = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(saved)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_private(root: Path) -> list[Path]:
    """Every file under `root` owner-only; every directory too. The paths checked."""
    checked = []
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            path = Path(directory) / name
            assert mode(path) == 0o700, (path, oct(mode(path)))
            checked.append(path)
        for name in files:
            path = Path(directory) / name
            assert mode(path) == 0o600, (path, oct(mode(path)))
            checked.append(path)
    return checked


def test_store_and_data_dir_are_owner_only(tmp_path: Path, umask: int) -> None:
    server = Server(tmp_path / "node", **{"max-running": 1})
    # no secret-key setting: the server generates one and keeps it in the store
    server.config.write_text("".join(line + "\n" for line in server.config.read_text().splitlines()
                                     if not line.startswith("secret-key")))
    seed(server.config)
    store = server.directory / "threadsvc.db"
    server.start()
    try:
        with server.client("contributor") as http:
            done = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0",
                                                       "result": "secret result"})
            finish(http, done.text.split('id="', 1)[1][:32])
            busy = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "60"})
            busy_id = busy.text.split('id="', 1)[1][:32]
            wait_for(http, f"{GROUP}/threads/{busy_id}/progress",
                     lambda r: 'status="inprogress"' in r.text)
            waiting = http.post(f"{GROUP}/threads", data={"job": "validate"},
                                files={"documents": ("a.xml", b"<a/>", "application/xml")})
            assert waiting.status_code == 202, waiting.text
            data = server.directory / "data"
            checked = check_private(data)
            assert any("results" in p.parts and p.is_file() for p in checked), checked
            assert any("uploads" in p.parts and p.is_file() for p in checked), checked
            assert mode(data) == 0o700
            for suffix in ("", "-wal", "-shm"):
                assert mode(Path(f"{store}{suffix}")) == 0o600, suffix
            http.post(f"{GROUP}/threads/{busy_id}/cancel")
    finally:
        server.stop()


def test_a_readable_store_is_made_owner_only(tmp_path: Path) -> None:
    server = Server(tmp_path / "node")
    seed(server.config)
    store = server.directory / "threadsvc.db"
    os.chmod(store, 0o644)
    server.start()
    try:
        assert mode(store) == 0o600
        assert "was readable by other users" in server.log.read_text()
    finally:
        server.stop()


def test_the_cli_creates_an_owner_only_store(tmp_path: Path, umask: int) -> None:
    store = tmp_path / "new" / "cli.db"
    subprocess.run([sys.executable, "-m", "threadsvc", "user", "add", "--db",
                    f"sqlite:///{store}", "alice", "--password-stdin"],
                   input="alice-password\n", text=True, check=True, capture_output=True)
    assert mode(store) == 0o600
    assert mode(store.parent) == 0o700
    for suffix in ("-wal", "-shm"):
        found = Path(f"{store}{suffix}")
        assert not found.exists() or mode(found) == 0o600
