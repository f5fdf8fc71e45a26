"""The server keeps every file through one FileStorage (docs/api.md#results): honest answers
for results (410 only when the store says deleted; a missing file is 503), downloads streamed
from a storage without local copies answering ranges as a local file does, uploads fetched for
a job when the storage keeps no local copies, scratch of killed processes removed at start,
orphans purged, /ready checking the storage.

`Remote` is the local backend with `local_path` answering None: the real backend behaving as
the remote ones do, so that every path a node takes with postgres or s3 files runs here.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import anyio
import httpx
import pytest

from tests.jobs_for_tests import CHUNK
from tests.support import GROUP, InProcess, Server, running_server, seed, wait_final, wait_for
from threadsvc import app as app_module
from threadsvc.files import make_files
from threadsvc.files.base import FileStorage
from threadsvc.files.local import LocalFiles
from threadsvc.jobs.purge import remove_orphans
from threadsvc.settings import Settings, SettingsError
from threadsvc.store import make_store

JOBS = ["tests.jobs_for_tests"]


class Remote(LocalFiles):
    """Files under a directory, served as a remote storage is: no local paths, so downloads
    are streamed through `read` and jobs get fetched copies."""

    fetched: ClassVar[list[str]] = []

    def local_path(self, key: str) -> None:  # type: ignore[override]
        return None

    async def fetch(self, key: str, target: Path) -> None:
        Remote.fetched.append(key)
        await super().fetch(key, target)


class Signing(Remote):
    """A storage that signs its own links, as s3 with `s3-presign` does."""

    def presigned_url(self, key: str, ttl: int, filename: str, media_type: str) -> str:
        return f"https://bucket.example/{key}?ttl={ttl}&name={filename}&type={media_type}"


@pytest.fixture
def remote_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Servers whose data-dir is under a directory named `remote` use `Remote`, under one
    named `signing` `Signing`."""

    def files(settings: Settings) -> FileStorage:
        if "remote" in Path(settings.data_dir).parts:
            return Remote(settings.data_dir)
        if "signing" in Path(settings.data_dir).parts:
            return Signing(settings.data_dir)
        return make_files(settings)

    monkeypatch.setattr(app_module, "make_files", files)
    Remote.fetched.clear()


def _link(http: httpx.Client, tid: str) -> str:
    answer = http.get(f"{GROUP}/threads/{tid}/result")
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def _error_id(answer: httpx.Response) -> str:
    found = re.search(r'id="(\d{4})"', answer.text)
    return found.group(1) if found else ""


def _big(http: httpx.Client, mib: int = 1) -> str:
    answer = http.post(f"{GROUP}/threads", data={"job": "big-result", "mib": str(mib)})
    assert answer.status_code == 202, answer.text
    tid = re.search(r'<thread id="([0-9a-f]{32})"', answer.text).group(1)  # type: ignore[union-attr]
    assert 'status="completed"' in wait_final(http, tid).text
    return tid


@pytest.fixture
def local(tmp_path: Path) -> Iterator[InProcess]:
    for server, _ in running_server(tmp_path / "local", InProcess, jobs=JOBS):
        yield server


@pytest.fixture
def remote(tmp_path: Path, remote_when_asked: None) -> Iterator[InProcess]:
    for server, _ in running_server(tmp_path / "remote", InProcess, jobs=JOBS):
        yield server


# -- honest answers ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["local", "remote"])
def test_a_missing_file_is_503_not_410(kind: str, request: pytest.FixtureRequest) -> None:
    server: InProcess = request.getfixturevalue(kind)
    with server.client("contributor") as http:
        tid = _big(http)
        link = _link(http, tid)
        assert http.get(link).content == CHUNK
        (server.directory / "data" / "results" / tid).unlink()  # lost, not deleted
        lost = http.get(link)
        assert lost.status_code == 503 and _error_id(lost) == "0503", lost.text
        assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 302  # still kept


@pytest.mark.slow  # waits for the deletion moment
def test_a_result_past_its_deletion_is_410(tmp_path: Path) -> None:
    for server, _ in running_server(tmp_path, InProcess, jobs=JOBS, **{"result-ttl": 1}):
        with server.client("contributor") as http:
            tid = _big(http)
            link = _link(http, tid)
            time.sleep(1.1)  # past the deletion moment; the file is still on disk
            assert (server.directory / "data" / "results" / tid).exists()
            gone = http.get(link)
            assert gone.status_code == 410 and _error_id(gone) == "0401", gone.text
            assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 410


# -- downloads from a storage without local copies --------------------------------------------
RANGES = [
    "bytes=0-9", "bytes=100-", "bytes=-10", "bytes=1048570-2000000", "bytes=5-5",
    "bytes=1048576-", "bytes=2000000-3000000", "bytes=5-2", "items=0-1", "bytes=abc",
]


def test_streamed_download_answers_ranges_as_a_local_file(
    local: InProcess, remote: InProcess
) -> None:
    with local.client("contributor") as a, remote.client("contributor") as b:
        links = [_link(a, _big(a)), _link(b, _big(b))]
        whole = [a.get(links[0]), b.get(links[1])]
        assert "etag" in whole[0].headers and "etag" not in whole[1].headers  # streamed, not sent
        for answer in whole:
            assert answer.status_code == 200 and answer.content == CHUNK
            assert answer.headers["content-length"] == str(len(CHUNK))
            assert answer.headers["accept-ranges"] == "bytes"
            assert answer.headers["content-disposition"] == 'attachment; filename="big.bin"'
        for wanted in RANGES:
            file, streamed = (c.get(link, headers={"Range": wanted}) for c, link in zip((a, b), links, strict=True))
            assert streamed.status_code == file.status_code, (wanted, file.status_code)
            for header in ("content-range", "content-length"):
                assert streamed.headers.get(header) == file.headers.get(header), (wanted, header)
            if file.status_code == 206:
                assert streamed.content == file.content, wanted
        # Several ranges: the local file answers multipart, the stream the whole file (allowed).
        several = b.get(links[1], headers={"Range": "bytes=0-1,5-6"})
        assert several.status_code == 200 and several.content == CHUNK


def test_a_storage_that_signs_its_links_is_linked_to_directly(
    tmp_path: Path, remote_when_asked: None
) -> None:
    for server, _ in running_server(tmp_path / "signing", InProcess, jobs=JOBS,
                                    **{"result-url-ttl": 120}):
        with server.client("contributor") as http:
            tid = _big(http)
            before = int(time.time()) * 1000
            redirect = http.get(f"{GROUP}/threads/{tid}/result")
            shown = http.get(f"{GROUP}/threads/{tid}/progress").text
            after = int(time.time()) * 1000
    url = f"https://bucket.example/results/{tid}?ttl=120&name=big.bin&type=application/octet-stream"
    assert redirect.status_code == 302 and redirect.headers["location"] == url
    assert f'<result href="{url.replace("&", "&amp;")}"' in shown
    expires = re.search(r'expires="([^"]+)"', shown).group(1)  # type: ignore[union-attr]
    moment = int(datetime.fromisoformat(expires).timestamp() * 1000)
    assert before + 120_000 <= moment <= after + 120_000 and moment % 1000 == 0


# -- uploads ----------------------------------------------------------------------------------
def test_uploads_are_fetched_for_the_job_when_the_storage_keeps_no_local_copy(
    remote: InProcess,
) -> None:
    files = [("files", ("a.txt", b"first file")), ("files", ("b.bin", os.urandom(300_000)))]
    with remote.client("contributor") as http:
        answer = http.post(f"{GROUP}/threads", data={"job": "checksum"}, files=files)
        assert answer.status_code == 202, answer.text
        tid = re.search(r'<thread id="([0-9a-f]{32})"', answer.text).group(1)  # type: ignore[union-attr]
        assert 'status="completed"' in wait_final(http, tid).text
        listed = http.get(_link(http, tid)).text.splitlines()
    expected = [f"{name} {len(body)} {hashlib.sha256(body).hexdigest()}" for _, (name, body) in files]
    assert listed == expected
    assert Remote.fetched == [f"uploads/{tid}/files-0", f"uploads/{tid}/files-1"]
    data = remote.directory / "data"
    assert not (data / "uploads" / tid).exists()  # the thread ended: its uploads are deleted
    scratch = [p for p in (data / "work").iterdir() if p.is_dir()]
    assert len(scratch) == 1 and not list(scratch[0].iterdir())  # the fetched copies are gone


# -- scratch ----------------------------------------------------------------------------------
def test_scratch_of_killed_processes_is_removed_at_start(tmp_path: Path) -> None:
    work = tmp_path / "data" / "work"
    (work / "dead").mkdir(parents=True)
    (work / "dead" / "half-written").write_bytes(b"x" * 1000)
    (work / "dead.lock").touch()  # nobody holds it: its process was killed
    (work / "lockless").mkdir()
    (work / "live").mkdir()
    (work / "live" / "receiving").write_bytes(b"y")
    held = os.open(work / "live.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # a live process sharing data-dir
    try:
        for server, _ in running_server(tmp_path, InProcess, jobs=JOBS):
            assert not (work / "dead").exists() and not (work / "dead.lock").exists()
            assert not (work / "lockless").exists()
            assert (work / "live" / "receiving").exists()
            own = {p.name for p in work.iterdir()} - {"live", "live.lock"}
            assert len(own) == 2  # this process's directory and lock
            server.stop()
            assert {p.name for p in work.iterdir()} == {"live", "live.lock"}  # its own removed
    finally:
        os.close(held)


# -- the purge --------------------------------------------------------------------------------
def _keys(data: Path) -> list[str]:
    return sorted(
        p.relative_to(data).as_posix()
        for top in ("results", "uploads") if (data / top).exists()
        for p in (data / top).rglob("*") if p.is_file()
    )


@pytest.mark.slow  # waits for thread-ttl and the purge
def test_the_purge_leaves_no_file_behind(tmp_path: Path) -> None:
    settings = {"thread-ttl": 1, "result-ttl": 1, "purge-interval": 0.5}
    for server, _ in running_server(tmp_path, InProcess, jobs=JOBS, **settings):
        data = server.directory / "data"
        orphan = data / "results" / ("e" * 32)  # a result whose thread is gone
        with server.client("contributor") as http:
            done = [_big(http) for _ in range(3)]
            started = http.post(f"{GROUP}/threads", data={"job": "checksum"},
                                files=[("files", ("a.txt", b"abc"))])
            assert started.status_code == 202
            assert len(_keys(data)) >= 3
            orphan.write_bytes(b"orphan")
            with server.client("admin") as admin:
                def purged(answer: httpx.Response, ids: list[str] = done) -> bool:
                    return not any(t in answer.text for t in ids)

                wait_for(admin, "/ps/service/threads?pagesize=100", purged, timeout=30)
            # Purges go on while there is work (each purge is a thread, purged in its turn).
            deadline = time.monotonic() + 30
            while _keys(data) and time.monotonic() < deadline:
                time.sleep(0.2)
        assert _keys(data) == []


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])])
def test_orphans_are_every_file_no_thread_keeps(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    settings: dict[str, Any] = {}
    if store == "postgres":
        settings = {"db": request.getfixturevalue("postgres").new_database_url(),
                    "files": "local", "files-shared": True}
    for server, _ in running_server(tmp_path, InProcess, jobs=JOBS, **settings):
        with server.client("contributor") as http:
            kept = _big(http)
            no_result = http.post(f"{GROUP}/threads", data={"job": "sleep", "seconds": "0"})
            quiet = re.search(r'<thread id="([0-9a-f]{32})"', no_result.text).group(1)  # type: ignore[union-attr]
            wait_final(http, quiet)
        config = server.config
        server.stop()
    data = tmp_path / "data"
    stray = {
        f"results/{'a' * 32}": "no thread",
        f"results/{quiet}": "its thread ended without a result",
        f"uploads/{quiet}/files-0": "its thread has ended",
        f"uploads/{'b' * 32}/files-0": "no thread (yet: a start may be storing it)",
    }
    for key in stray:
        (data / key).parent.mkdir(parents=True, exist_ok=True)
        (data / key).write_bytes(b"x")

    async def purge(grace: int, unowned: dict[str, int]) -> int:
        from threadsvc.settings import load_settings

        opened = make_store(load_settings(config, environ={}))
        await opened.open()
        try:
            return await remove_orphans(opened, LocalFiles(data), unowned, grace)
        finally:
            await opened.close()

    unowned: dict[str, int] = {}
    assert anyio.run(purge, 3_600_000, unowned) == 3
    assert _keys(data) == [f"results/{kept}", f"uploads/{'b' * 32}/files-0"]
    assert list(unowned) == ["b" * 32]
    unowned["b" * 32] -= 3_600_000  # seen an hour ago: no start takes that long
    assert anyio.run(purge, 3_600_000, unowned) == 1
    assert _keys(data) == [f"results/{kept}"] and unowned == {}


# -- readiness ---------------------------------------------------------------------------------
def test_ready_says_when_the_file_storage_fails(tmp_path: Path) -> None:
    for server, _ in running_server(tmp_path, InProcess, jobs=JOBS):
        with server.client() as http:
            check = server.directory / "data" / "check"
            if check.exists():
                check.rmdir()
            check.write_bytes(b"not a directory")  # the check's marker cannot be written
            answer = http.get("/ready")
            assert answer.status_code == 503
            assert answer.text == "file storage (local) unavailable\n"


# -- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("values", "says"), [
    ({"files": "nfs"}, "'nfs' is not one of local, postgres, s3"),
    ({"files": "postgres"}, "postgres files need a PostgreSQL store"),
    ({"files": "s3"}, "'s3-bucket' is required"),
    ({"db": "postgresql://h/db", "files": "local"}, "files-shared = true"),
])
def test_file_settings_that_cannot_work_are_refused(values: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(says)):
        Settings(**values)


def test_file_settings_defaults() -> None:
    assert Settings().files_kind == "local"
    assert Settings(db="postgresql://h/db").files_kind == "postgres"
    assert Settings(db="postgresql://h/db", files="local", files_shared=True).files_kind == "local"
    assert Settings(files="s3", s3_bucket="b").files_kind == "s3"


# -- start-up on PostgreSQL ---------------------------------------------------------------------
def _refused(server: Server) -> str:
    with pytest.raises(RuntimeError, match="server exited") as failed:
        server.start()
    return str(failed.value)


@pytest.mark.slow
@pytest.mark.postgres
def test_local_files_on_postgres_need_files_shared(tmp_path: Path, postgres: Any) -> None:
    node = Server(tmp_path, db=postgres.new_database_url(), files="local")
    assert "files-shared = true" in _refused(node)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_node_that_does_not_share_data_dir_refuses_to_start(tmp_path: Path, postgres: Any) -> None:
    db = postgres.new_database_url()
    shared = {"db": db, "files": "local", "files-shared": True}
    first = Server(tmp_path / "n1", node="n1", **shared)
    alone = Server(tmp_path / "n2", node="n2", **shared)  # a data-dir of its own
    first.start()
    try:
        said = _refused(alone)
        assert "does not hold the marker" in said and "files-shared" in said
    finally:
        first.stop()


@pytest.mark.slow
@pytest.mark.postgres
def test_nodes_sharing_data_dir_start_together(tmp_path: Path, postgres: Any) -> None:
    db = postgres.new_database_url()
    data = str(tmp_path / "shared")
    nodes = [Server(tmp_path / f"n{i}", node=f"n{i}", db=db, files="local",
                    **{"files-shared": True, "data-dir": data}) for i in (1, 2, 3)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("THREADSVC_")}
    for node in nodes:  # all at once: each writes a marker, the store keeps one
        with open(node.log, "ab") as log:
            node.process = subprocess.Popen(node.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=env)
    try:
        for node in nodes:
            deadline = time.monotonic() + 30
            while True:
                assert node.process is not None and node.process.poll() is None, node.log.read_text()
                try:
                    if httpx.get(f"{node.url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, node.log.read_text()
                time.sleep(0.1)
        markers = list((Path(data) / "check").iterdir())
        assert len(markers) == 1  # the kept one; the others were deleted
    finally:
        for node in nodes:
            if node.process is not None:
                node.stop()


def _written_2_mib(answer: httpx.Response) -> bool:
    found = re.search(r'<progress current="(\d+)"', answer.text)
    return found is not None and int(found.group(1)) >= 2


@pytest.mark.slow
def test_a_node_killed_while_writing_leaves_no_partial_result(tmp_path: Path) -> None:
    server = Server(tmp_path, jobs=JOBS)
    seed(server.config)
    server.start()
    data = tmp_path / "data"
    try:
        with server.client("contributor") as http:
            answer = http.post(f"{GROUP}/threads", data={"job": "big-result", "mib": "1024"})
            tid = re.search(r'<thread id="([0-9a-f]{32})"', answer.text).group(1)  # type: ignore[union-attr]
            wait_for(http, f"{GROUP}/threads/{tid}/progress", _written_2_mib, timeout=60)
        written = [p for p in (data / "work").rglob("*") if p.is_file() and p.stat().st_size]
        assert written  # the result so far, in this process's scratch only
        server.kill()
        assert not (data / "results").exists() or not list((data / "results").iterdir())
        server.start()
        with server.client("contributor") as http:
            done = wait_final(http, tid)
            assert 'status="failed"' in done.text and "<result" not in done.text
        leftovers = [p for p in (data / "work").rglob("*") if p.is_file() and p.stat().st_size]
        assert leftovers == []  # the killed process's scratch is gone
    finally:
        if server.running:
            server.stop()
