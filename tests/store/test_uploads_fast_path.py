"""Uploads: a start without files, and the end of a thread that had none, touch no worker thread
(each hop costs more than the whole rest of a start's file handling)."""

from __future__ import annotations

import io
from pathlib import Path

import anyio.to_thread
import pytest

from threadsvc.files.local import LocalFiles
from threadsvc.files.scratch import Scratch
from threadsvc.uploads import Upload, Uploads

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def uploads_in(directory: Path) -> Uploads:
    scratch = Scratch(directory)
    scratch.open()
    return Uploads(LocalFiles(directory), scratch, max_file=100)


async def test_no_files_no_hop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uploads = uploads_in(tmp_path)

    async def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("hopped to a worker thread")

    monkeypatch.setattr(anyio.to_thread, "run_sync", refuse)
    params = {"seconds": 1, "names": ["a", "b"], "empty": []}
    saved = await uploads.save("t" * 32, params)
    assert saved == params and saved is not params
    await uploads.discard("t" * 32)
    await uploads.discard("t" * 32, params)


async def test_files_are_saved_and_discarded(tmp_path: Path) -> None:
    uploads = uploads_in(tmp_path)
    upload = Upload("a.xml", "application/xml", io.BytesIO(b"<a/>"))
    saved = await uploads.save("t" * 32, {"documents": [upload], "n": 1})
    assert saved["n"] == 1 and saved["documents"][0]["size"] == 4
    assert saved["documents"][0]["file"] == f"uploads/{'t' * 32}/documents-0"
    assert (tmp_path / "uploads" / ("t" * 32) / "documents-0").read_bytes() == b"<a/>"
    assert not list(uploads.scratch.directory.iterdir())  # the received copy was moved
    await uploads.discard("t" * 32)
    assert not (tmp_path / "uploads" / ("t" * 32)).exists()
