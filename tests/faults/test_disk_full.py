"""The data directory (results and uploads) on a full filesystem: a small tmpfs mounted for the
test (root only; skipped, saying why, where mounting is impossible). A job writing its result
then ends `failed` with a clear message in its log and no result is served; an upload is refused
with an error document and nothing of it is kept; the server keeps answering; and once space
returns, new threads complete with their results.

The store (SQLite) stays on the ordinary disk: a full store is a store failure (503), which
test_sqlite_locked.py and test_postgres_restart.py cover."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.common import check_error
from tests.support import GROUP, Server, running_server, status, thread_id, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SIZE_MIB = 4


def _mount(directory: Path) -> str | None:
    """Mount a tmpfs of SIZE_MIB at `directory`; why not, or None once mounted."""
    if os.geteuid() != 0:
        return "disk-full tests need root to mount a small tmpfs"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m,mode=0755", "tmpfs", str(directory)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        return f"cannot mount a tmpfs here: {done.stderr.strip()}"
    return None


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "data"
    directory.mkdir()
    why = _mount(directory)
    if why is not None:
        pytest.skip(why)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


@pytest.fixture
def server(tmp_path: Path, data_dir: Path) -> Iterator[Server]:
    settings = {"jobs": ["tests.jobs_for_tests"], "data-dir": str(data_dir)}
    for server, _ in running_server(tmp_path, **settings):
        yield server


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last byte; the file that holds it."""
    filler = directory / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    statvfs = os.statvfs(directory)
    assert statvfs.f_bavail == 0
    return filler


def leftovers(data_dir: Path) -> list[str]:
    """Files under results/ and uploads/ (the filler aside)."""
    return sorted(str(p.relative_to(data_dir)) for sub in ("results", "uploads")
                  if (data_dir / sub).exists() for p in (data_dir / sub).rglob("*") if p.is_file())


def upload(http: httpx.Client, size: int) -> httpx.Response:
    return http.post(f"{GROUP}/threads", data={"job": "checksum"},
                     files={"files": ("a.txt", os.urandom(size), "text/plain")})


@pytest.mark.timeout(120)
def test_results_and_uploads_on_a_full_disk(server: Server, data_dir: Path) -> None:
    with server.client("contributor") as http:
        # a result larger than the filesystem: the job's write meets ENOSPC
        big = thread_id(http.post(f"{GROUP}/threads",
                                  data={"job": "big-result", "mib": str(2 * SIZE_MIB)}))
        answer = wait_for(http, f"{GROUP}/threads/{big}",
                          lambda r: status(r.text) in {"completed", "failed"}, timeout=60)
        assert status(answer.text) == "failed", answer.text
        assert "No space left" in answer.text, answer.text
        assert "<result" not in answer.text
        check_error(http.get(f"{GROUP}/threads/{big}/result"), 409, "0402")
        logs = http.get(f"{GROUP}/threads/{big}/logs").text
        assert re.search(r'level="ERROR">[^<]*No space left', logs), logs
        assert leftovers(data_dir) == [], "a partial result was kept"

        filler = fill(data_dir)
        # a small result: the write is buffered, and fails when flushed to the full disk
        small = thread_id(http.post(f"{GROUP}/threads",
                                    data={"job": "sleep", "seconds": "0", "result": "x" * 9000}))
        answer = wait_for(http, f"{GROUP}/threads/{small}",
                          lambda r: status(r.text) in {"completed", "failed"}, timeout=30)
        assert status(answer.text) == "failed" and "No space left" in answer.text, answer.text
        check_error(http.get(f"{GROUP}/threads/{small}/result"), 409, "0402")
        # an upload: refused with an error document, nothing of it stored, no thread made
        listed = http.get(f"{GROUP}/threads", params={"status": "all"}).text
        with server.client("contributor") as own:  # see test_a_refused_upload_keeps_the_connection
            refused = upload(own, 300_000)
        assert refused.status_code in {503, 507}, refused.text
        message = check_error(refused, refused.status_code,
                              "0507" if refused.status_code == 507 else "0503")
        print(f"\ndisk-full: upload answered {refused.status_code}: {message}")
        assert leftovers(data_dir) == []
        again = http.get(f"{GROUP}/threads", params={"status": "all"}).text
        assert re.findall(r'id="([0-9a-f]{32})"', again) == re.findall(
            r'id="([0-9a-f]{32})"', listed), "the refused upload made a thread"
        # the server keeps answering
        assert http.get("/health").status_code == 200
        assert http.get(f"{GROUP}/threads/{big}/progress").status_code == 200

        filler.unlink()  # space returns: new threads complete, with their results
        done = thread_id(http.post(f"{GROUP}/threads", data={"job": "big-result", "mib": "1"}))
        answer = wait_for(http, f"{GROUP}/threads/{done}",
                          lambda r: r.status_code == 303 or status(r.text) == "failed", timeout=60)
        assert answer.status_code == 303, answer.text
        body = http.get(f"{GROUP}/threads/{done}/result", follow_redirects=True)
        assert body.status_code == 200 and len(body.content) == 1024 * 1024
        accepted = upload(http, 3)
        assert accepted.status_code == 202, accepted.text
        wait_for(http, f"{GROUP}/threads/{thread_id(accepted)}", lambda r: r.status_code == 303,
                 timeout=30)
        text = http.get(f"{GROUP}/threads/{thread_id(accepted)}/result", follow_redirects=True).text
        assert text.startswith("a.txt 3 "), text


@pytest.mark.timeout(60)
def test_a_refused_upload_keeps_the_connection(server: Server, data_dir: Path) -> None:
    fill(data_dir)
    with server.client("contributor") as http:
        check_error(upload(http, 300_000), 507, "0507")
        assert http.get("/health").status_code == 200  # on the same keep-alive connection
