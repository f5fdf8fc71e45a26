"""The file-storage contract (threadsvc/files/base.py), on every backend of
tests/files_backends.py: whole files and ranges, replacing, deleting, listing, the check, an
unreachable storage, and puts that are interrupted or race one another."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

from tests.files_backends import BACKENDS, params
from threadsvc.errors import FileMissing, FileUnavailable
from threadsvc.files.base import CHUNK, FileStorage, result_key, uploads_prefix

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=params())
async def files(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FileStorage]:
    """Each backend, opened fresh for one test."""
    cleanups: list[Callable[[], None]] = []
    try:
        storage = BACKENDS[request.param].make(request, tmp_path, cleanups)
        await storage.open()
        try:
            yield storage
        finally:
            await storage.close()
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


@pytest.fixture(params=params())
def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> FileStorage:
    return BACKENDS[request.param].unreachable(request, tmp_path, [])


def thread_id() -> str:
    return uuid.uuid4().hex


def source(directory: Path, data: bytes) -> Path:
    """A scratch file holding `data`, as a job or an upload leaves one before `put`."""
    path = directory / f"{uuid.uuid4().hex}.new"
    path.write_bytes(data)
    return path


async def read_all(files: FileStorage, key: str, start: int = 0, end: int | None = None) -> bytes:
    chunks = [chunk async for chunk in files.read(key, start, end)]
    assert all(0 < len(chunk) <= CHUNK for chunk in chunks)
    return b"".join(chunks)


async def all_keys(files: FileStorage, prefix: str) -> set[str]:
    return {key async for key in files.keys(prefix)}


DATA = os.urandom(2 * CHUNK + 12345)  # three chunks, the last one short


async def test_put_then_read_whole(files: FileStorage, tmp_path: Path) -> None:
    key = result_key(thread_id())
    assert await files.put(key, source(tmp_path, DATA)) == len(DATA)
    assert await read_all(files, key) == DATA
    assert await files.size(key) == len(DATA)


async def test_an_empty_file(files: FileStorage, tmp_path: Path) -> None:
    key = result_key(thread_id())
    assert await files.put(key, source(tmp_path, b"")) == 0
    assert await read_all(files, key) == b""
    assert await files.size(key) == 0


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, None), (0, 1), (5, 17), (1000, None),
        (CHUNK - 1, CHUNK + 1), (CHUNK, 2 * CHUNK), (CHUNK, None), (2 * CHUNK, None),
        (CHUNK - 3, CHUNK), (0, CHUNK), (3, 2 * CHUNK + 12345), (2 * CHUNK + 12344, None),
        (10, 10), (len(DATA), None), (len(DATA) + 5, None), (len(DATA) - 5, len(DATA) + 100),
    ],
)
async def test_ranges(files: FileStorage, tmp_path: Path, start: int, end: int | None) -> None:
    key = result_key(thread_id())
    await files.put(key, source(tmp_path, DATA))
    assert await read_all(files, key, start, end) == DATA[start:end]


async def test_put_replaces(files: FileStorage, tmp_path: Path) -> None:
    key = result_key(thread_id())
    await files.put(key, source(tmp_path, DATA))
    await files.put(key, source(tmp_path, b"shorter"))
    assert await read_all(files, key) == b"shorter"
    assert await files.size(key) == len(b"shorter")
    assert await all_keys(files, key) == {key}


async def test_fetch(files: FileStorage, tmp_path: Path) -> None:
    key = f"{uploads_prefix(thread_id())}file-1"
    await files.put(key, source(tmp_path, DATA))
    target = tmp_path / "fetched"
    await files.fetch(key, target)
    assert target.read_bytes() == DATA


async def test_missing(files: FileStorage, tmp_path: Path) -> None:
    key = result_key(thread_id())
    assert await files.size(key) is None
    reading = files.read(key)
    with pytest.raises(FileMissing):
        await reading.__anext__()  # before the first chunk
    with pytest.raises(FileMissing):
        await files.fetch(key, tmp_path / "fetched")
    assert not (tmp_path / "fetched").exists()


async def test_delete_is_idempotent(files: FileStorage, tmp_path: Path) -> None:
    key = result_key(thread_id())
    await files.put(key, source(tmp_path, DATA))
    await files.delete(key)
    assert await files.size(key) is None
    with pytest.raises(FileMissing):
        await read_all(files, key)
    await files.delete(key)
    await files.delete(result_key(thread_id()))  # never there


async def test_delete_prefix_keeps_other_threads(files: FileStorage, tmp_path: Path) -> None:
    # a thread id that is a prefix of the other's: only the "/" after it separates them
    mine, other = thread_id(), thread_id()
    neighbour = mine + "x"
    kept = [f"{uploads_prefix(other)}file-1", f"{uploads_prefix(neighbour)}file-1",
            result_key(mine)]
    gone = [f"{uploads_prefix(mine)}file-{n}" for n in range(3)]
    for key in kept + gone:
        await files.put(key, source(tmp_path, key.encode()))
    await files.delete_prefix(uploads_prefix(mine))
    for key in gone:
        assert await files.size(key) is None
    for key in kept:
        assert await read_all(files, key) == key.encode()
    await files.delete_prefix(uploads_prefix(mine))  # nothing left: no error


async def test_keys_by_prefix(files: FileStorage, tmp_path: Path) -> None:
    one, two = thread_id(), thread_id()
    uploads = {f"{uploads_prefix(one)}file-{n}" for n in range(3)}
    for key in [*uploads, result_key(one), result_key(two), f"{uploads_prefix(two)}file-1"]:
        await files.put(key, source(tmp_path, b"x"))
    assert await all_keys(files, uploads_prefix(one)) == uploads
    assert {result_key(one), result_key(two)} <= await all_keys(files, "results/")
    assert uploads <= await all_keys(files, "uploads/")
    assert not await all_keys(files, "results/") & await all_keys(files, "uploads/")
    assert await all_keys(files, uploads_prefix(thread_id())) == set()


async def test_only_keys_the_server_makes(files: FileStorage) -> None:
    """A key or prefix of any other shape never reaches a path, a query or an object name."""
    for key in ["../x", "results/../x", "results/..", "other/x", "results/a b", "", "results/é"]:
        with pytest.raises(ValueError):
            await files.size(key)
        with pytest.raises(ValueError):
            await files.delete(key)
    for prefix in ["results/../", "../", "uploads/ x"]:
        with pytest.raises(ValueError):
            [key async for key in files.keys(prefix)]
        with pytest.raises(ValueError):
            await files.delete_prefix(prefix)


async def test_check(files: FileStorage) -> None:
    await files.check()
    assert await all_keys(files, "check/") == set()  # the marker is gone


async def test_unreachable(unreachable: FileStorage, tmp_path: Path) -> None:
    with pytest.raises(FileUnavailable) as raised:
        await unreachable.open()
        await unreachable.check()
    assert not isinstance(raised.value, FileMissing)
    assert "secret" not in str(raised.value)  # a password in the URL is never told


@pytest.mark.parametrize("files", params("local"), indirect=True)  # a local put is a rename
async def test_a_put_stopped_halfway_leaves_nothing(files: FileStorage, tmp_path: Path) -> None:
    """The source is a pipe whose writer sends a chunk and a half, then the put is cancelled
    (a node stopping): nothing of the key is seen, before or after."""
    key = result_key(thread_id())
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    written, release = threading.Event(), threading.Event()

    def feed() -> None:
        with pipe.open("wb") as out:
            out.write(DATA[: CHUNK + CHUNK // 2])
            written.set()
            release.wait(60)  # then the end of the file, too early: the put is stopped first

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(files.put, key, pipe)
            await anyio.to_thread.run_sync(written.wait, 60)
            assert await files.size(key) is None
            tasks.cancel_scope.cancel()
            release.set()
    finally:
        release.set()
        feeder.join()
    assert await files.size(key) is None
    assert await all_keys(files, key) == set()


async def test_concurrent_puts_of_one_key_leave_one_whole_file(files: FileStorage,
                                                               tmp_path: Path) -> None:
    key = result_key(thread_id())
    contents = [bytes([n]) * (CHUNK + 1000 * n) for n in range(8)]
    async with anyio.create_task_group() as tasks:
        for data in contents:
            tasks.start_soon(files.put, key, source(tmp_path, data))
    found = await read_all(files, key)
    assert found in contents
    assert await files.size(key) == len(found)
