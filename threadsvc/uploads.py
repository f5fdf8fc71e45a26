"""Files uploaded with a start: kept under `data-dir/uploads/THREAD_ID/` from before the 202
(so a thread that runs after a restart still has them) until the thread ends or is deleted.

Stored names are made by the server (`PARAM-N`); the caller's file name is kept only as data.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread

from threadsvc import private
from threadsvc.errors import OUT_OF_SPACE, BodyTooLarge, StorageFull


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
    def __init__(self, data_dir: str | os.PathLike[str], max_file: int) -> None:
        self.root = Path(data_dir) / "uploads"
        self.max_file = max_file

    def directory(self, thread_id: str) -> Path:
        return self.root / thread_id

    async def save(self, thread_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Store every Upload in `params`; returns the parameters with each replaced by a
        JSON-able description. Nothing is left behind when a file is too large."""
        if not any(map(_holds_upload, params.values())):
            return dict(params)  # most starts: nothing to write, so no hop to a worker thread
        try:
            return await anyio.to_thread.run_sync(self._save, thread_id, params)
        except OSError as exc:
            await self.discard(thread_id)
            if exc.errno in OUT_OF_SPACE:
                raise StorageFull(f"No space left on the server for the upload: {exc}") from exc
            raise
        except BaseException:
            await self.discard(thread_id)
            raise

    def _save(self, thread_id: str, params: dict[str, Any]) -> dict[str, Any]:
        saved: dict[str, Any] = {}
        for name, value in params.items():
            if isinstance(value, Upload):
                saved[name] = self._store(thread_id, name, 0, value)
            elif _holds_upload(value):
                saved[name] = [self._store(thread_id, name, i, u) for i, u in enumerate(value)]
            else:
                saved[name] = value
        return saved

    def _store(self, thread_id: str, param: str, index: int, upload: Upload) -> dict[str, Any]:
        directory = self.directory(thread_id)
        private.make_dirs(directory)
        target = directory / f"{param}-{index}"
        size = 0
        digest = hashlib.sha256()  # what the file holds: a retried start sends the same
        with private.create(target) as out:
            while chunk := upload.file.read(1024 * 1024):
                size += len(chunk)
                digest.update(chunk)
                if size > self.max_file:
                    raise BodyTooLarge(
                        f"File '{upload.filename[:100]}' of '{param}' is larger than "
                        f"{self.max_file} bytes"
                    )
                out.write(chunk)
        return {
            "name": upload.filename,
            "file": str(target.relative_to(self.root.parent)),
            "size": size,
            "type": upload.content_type,
            "sha256": digest.hexdigest(),
        }

    def input_file(self, saved: dict[str, Any]) -> InputFile:
        return InputFile(
            name=str(saved["name"]),
            path=self.root.parent / str(saved["file"]),
            size=int(saved["size"]),
            content_type=str(saved.get("type") or "application/octet-stream"),
        )

    @staticmethod
    def saved_in(params: dict[str, Any]) -> bool:
        """Whether a thread's stored parameters name saved files (each one a dict, as `_store`
        makes it; every other parameter is text): only then has it a directory here."""
        return any(
            isinstance(v, dict) or (isinstance(v, list) and bool(v) and isinstance(v[0], dict))
            for v in params.values()
        )

    async def discard(self, thread_id: str) -> None:
        directory = self.directory(thread_id)
        # Most threads had no uploads: one stat here is far cheaper than a hop to a worker thread.
        if not os.path.lexists(directory):  # noqa: ASYNC240 (on purpose, see above)
            return
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(directory, ignore_errors=True))


def _holds_upload(value: Any) -> bool:
    """A parameter that is a file, or a list of files (as `_save` stores them)."""
    return isinstance(value, Upload) or (
        isinstance(value, list) and bool(value) and isinstance(value[0], Upload)
    )
