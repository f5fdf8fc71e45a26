"""Files uploaded with a start: kept in the file storage from before the 202 (so a thread that
runs after a restart, on any node, still has them) until the thread ends or is deleted.

Stored names are made by the server (`uploads/THREAD_ID/PARAM-N`); the caller's file name is
kept only as data. An upload is received into this node's scratch (size limit, sha256) and put
into the storage whole, so no node ever sees part of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import anyio.to_thread

from threadsvc import private
from threadsvc.errors import OUT_OF_SPACE, BodyTooLarge, FileMissing, StorageFull
from threadsvc.files.base import CHUNK, FileStorage, is_key, uploads_prefix
from threadsvc.files.scratch import Scratch

_PLAIN = re.compile(r"[A-Za-z0-9_-]{1,100}")


@dataclass(frozen=True)
class Upload:
    """A file as received, before it is stored."""

    filename: str
    content_type: str
    file: BinaryIO  # positioned at its start


@dataclass(frozen=True)
class InputFile:
    """A stored upload, as a job sees it."""

    name: str  # the caller's file name (data only: never a path)
    path: Path
    size: int
    content_type: str


class Uploads:
    """Uploads in the file storage, under `uploads/THREAD_ID/PARAM-N` (the stored `file` of each
    saved upload, as older versions stored it too). A job reads them from local paths: the
    storage's own when it keeps files on this disk, else copies fetched into scratch before
    the job runs (`fetched`) and removed after it."""

    def __init__(self, storage: FileStorage, scratch: Scratch, max_file: int) -> None:
        self.storage = storage
        self.scratch = scratch
        self.max_file = max_file
        self._fetched: dict[str, Path] = {}  # thread id -> its uploads fetched into scratch

    async def save(self, thread_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Store every Upload in `params`; returns the parameters with each replaced by a
        JSON-able description. Nothing is left behind when a file is too large."""
        if not any(map(_holds_upload, params.values())):
            return dict(params)  # most starts: nothing to write, so no hop to a worker thread
        try:
            saved: dict[str, Any] = {}
            for name, value in params.items():
                if isinstance(value, Upload):
                    saved[name] = await self._store(thread_id, name, 0, value)
                elif _holds_upload(value):
                    saved[name] = [
                        await self._store(thread_id, name, i, u) for i, u in enumerate(value)
                    ]
                else:
                    saved[name] = value
            return saved
        except OSError as exc:
            await self.discard(thread_id)
            if exc.errno in OUT_OF_SPACE:
                raise StorageFull(f"No space left on the server for the upload: {exc}") from exc
            raise
        except BaseException:
            await self.discard(thread_id)
            raise

    async def _store(self, thread_id: str, param: str, index: int, upload: Upload) -> dict[str, Any]:
        key = f"{uploads_prefix(thread_id)}{_key_part(param)}-{index}"
        received = self.scratch.file(f"{_key_part(param)}-{index}")
        try:
            size, digest = await anyio.to_thread.run_sync(self._receive, received, param, upload)
            await self.storage.put(key, received)
        finally:
            await anyio.Path(received).unlink(missing_ok=True)
        return {"name": upload.filename, "file": key, "size": size,
                "type": upload.content_type, "sha256": digest}

    def _receive(self, target: Path, param: str, upload: Upload) -> tuple[int, str]:
        size = 0
        digest = hashlib.sha256()  # what the file holds: a retried start sends the same
        with private.create(target) as out:
            while chunk := upload.file.read(CHUNK):
                size += len(chunk)
                digest.update(chunk)
                if size > self.max_file:
                    raise BodyTooLarge(
                        f"File '{upload.filename[:100]}' of '{param}' is larger than "
                        f"{self.max_file} bytes"
                    )
                out.write(chunk)
        return size, digest.hexdigest()

    def input_file(self, saved: dict[str, Any]) -> InputFile:
        key = _stored_key(saved)
        if key is None:
            raise FileMissing(f"a stored upload names no file: {str(saved.get('file'))[:100]!r}")
        path = self.storage.local_path(key)
        if path is None:
            _, thread_id, tail = key.split("/", 2)
            folder = self._fetched.get(thread_id)
            if folder is None:
                raise FileMissing(f"the uploads of thread {thread_id} are not on this node")
            path = folder / tail
        return InputFile(
            name=str(saved["name"]),
            path=path,
            size=int(saved["size"]),
            content_type=str(saved.get("type") or "application/octet-stream"),
        )

    @contextlib.asynccontextmanager
    async def fetched(self, thread_id: str, params: dict[str, Any]) -> AsyncIterator[None]:
        """While inside, the thread's uploads are readable from this node's disk: a storage
        without local copies has them fetched into scratch first, removed on the way out."""
        prefix = uploads_prefix(thread_id)
        keys = [key for item in _saved_items(params)
                if (key := _stored_key(item)) is not None and key.startswith(prefix)]
        if not keys or self.storage.local_path(keys[0]) is not None:
            yield
            return
        folder = await anyio.to_thread.run_sync(self.scratch.folder, f"in-{thread_id}")
        self._fetched[thread_id] = folder
        try:
            for key in keys:
                await self.storage.fetch(key, folder / key.rsplit("/", 1)[1])
            yield
        finally:
            self._fetched.pop(thread_id, None)
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))

    @staticmethod
    def saved_in(params: dict[str, Any]) -> bool:
        """Whether a thread's stored parameters name saved files (each one a dict, as `_store`
        makes it; every other parameter is text): only then has it uploads stored."""
        return any(
            isinstance(v, dict) or (isinstance(v, list) and bool(v) and isinstance(v[0], dict))
            for v in params.values()
        )

    async def discard(self, thread_id: str, params: dict[str, Any] | None = None) -> None:
        """Delete the thread's uploads; given its stored `params`, only when they name some
        (most threads have none: no round trip to a remote storage for them)."""
        if params is None or self.saved_in(params):
            await self.storage.delete_prefix(uploads_prefix(thread_id))


def _key_part(param: str) -> str:
    """A declared parameter's name as part of a key: itself when plain (as always before),
    else a digest of it (a job may declare any name)."""
    if _PLAIN.fullmatch(param):
        return param
    return "p" + hashlib.sha256(param.encode()).hexdigest()[:24]


def _saved_items(params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for value in params.values():
        if isinstance(value, dict):
            items.append(value)
        elif isinstance(value, list):
            items.extend(v for v in value if isinstance(v, dict))
    return items


def _holds_upload(value: Any) -> bool:
    """A parameter that is a file, or a list of files (as `_save` stores them)."""
    return isinstance(value, Upload) or (
        isinstance(value, list) and bool(value) and isinstance(value[0], Upload)
    )


def _stored_key(saved: dict[str, Any]) -> str | None:
    """The key a saved upload names; None where it names none the server makes (a row written
    by hand): such a file is missing, never a path."""
    key = str(saved.get("file", ""))
    return key if is_key(key) and key.startswith("uploads/") else None
