"""Files under `data-dir` on this node's disk (the default with SQLite).

Keys map to paths below the root; a key is made by the server only and checked against
base.KEY, so no text of a caller's ever reaches a path. `put` renames the scratch file into
place (the scratch directory is under the same root, so the rename is atomic).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio.to_thread

from threadsvc import private
from threadsvc.errors import FileMissing, FileUnavailable
from threadsvc.files.base import CHUNK, checked_key, checked_prefix


class LocalFiles:
    kind = "local"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / checked_key(key)

    async def open(self) -> None:
        try:
            await anyio.to_thread.run_sync(private.make_dirs, self.root)
        except OSError as exc:
            raise FileUnavailable(f"cannot make {self.root}: {exc}") from exc

    async def close(self) -> None:
        pass

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def presigned_url(self, key: str, ttl: int, filename: str, media_type: str) -> None:
        return None

    async def put(self, key: str, source: Path) -> int:
        return await anyio.to_thread.run_sync(self._put, self._path(key), source)

    @staticmethod
    def _put(target: Path, source: Path) -> int:
        private.make_dirs(target.parent)
        size = source.stat().st_size
        try:
            os.replace(source, target)
        except OSError:  # another file system: copy whole beside it, then rename
            partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.part")
            try:
                shutil.copyfile(source, partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return size

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await anyio.open_file(path, "rb")
        except FileNotFoundError:
            raise FileMissing(f"no file {key}") from None
        except OSError as exc:
            raise FileUnavailable(f"cannot read {key}: {exc}") from exc
        async with handle:
            await handle.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = await handle.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    async def size(self, key: str) -> int | None:
        try:
            return (await anyio.Path(self._path(key)).stat()).st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FileUnavailable(f"cannot stat {key}: {exc}") from exc

    async def fetch(self, key: str, target: Path) -> None:
        path = self._path(key)
        try:
            await anyio.to_thread.run_sync(shutil.copyfile, path, target)
        except FileNotFoundError:
            raise FileMissing(f"no file {key}") from None

    async def delete(self, key: str) -> None:
        await anyio.Path(self._path(key)).unlink(missing_ok=True)

    async def delete_prefix(self, prefix: str) -> None:
        directory = self.root / checked_prefix(prefix).rstrip("/")
        # Most threads had no uploads: one stat here is far cheaper than a hop to a worker thread.
        if os.path.lexists(directory):  # noqa: ASYNC240 (on purpose, see above)
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(directory, ignore_errors=True))

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        base = self.root / checked_prefix(prefix).split("/", 1)[0]
        found = await anyio.to_thread.run_sync(lambda: sorted(_walk(base)))
        for path in found:
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not key.endswith(".part"):
                yield key

    async def check(self) -> None:
        key = f"check/{uuid.uuid4().hex}"
        marker = self.root / "check" / f"{uuid.uuid4().hex}.new"
        try:
            await anyio.to_thread.run_sync(private.make_dirs, marker.parent)
            await anyio.Path(marker).write_bytes(b"ok")
            await self.put(key, marker)
            if await anyio.Path(self._path(key)).read_bytes() != b"ok":
                raise FileUnavailable("the marker read back is not the one written")
        except OSError as exc:
            raise FileUnavailable(f"cannot write under {self.root}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):  # a failed check says why above, not here
                await self.delete(key)
                await anyio.Path(marker).unlink(missing_ok=True)


def _walk(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return [Path(d) / f for d, _, names in os.walk(base) for f in names]
