"""The file-storage contract that results, uploads and the purge share.

Keys are made by the server only, never from a caller's text: `results/THREAD_ID` and
`uploads/THREAD_ID/PARAM-N` (ASCII letters, digits, `-`, `_`, `.` and `/`). A file is written
on the node's own disk first (a job's result as it is produced, an upload as it arrives) and
then `put` into the storage whole: no other node ever sees part of a file, and a node killed
while writing leaves nothing behind but its own scratch file (removed at its next start).

Every method may raise `FileUnavailable` when the storage cannot be reached; `FileMissing`
(a kind of it) says the storage answered but holds no such file. Neither is ever "deleted"
(410): only the store's record of a thread says a result was deleted on purpose.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from threadsvc.errors import FileMissing, FileUnavailable

__all__ = [
    "KEY", "FileMissing", "FileStorage", "FileUnavailable", "checked_key", "checked_prefix",
    "is_key", "result_key", "uploads_prefix",
]

KEY = re.compile(r"(?:results|uploads|check)/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)?")
_PREFIX = re.compile(r"[A-Za-z0-9._/-]*")  # the characters of a key, or none
CHUNK = 1024 * 1024  # bytes read or written at a time, by every backend: memory stays bounded


def is_key(key: str) -> bool:
    """Whether `key` is one the server makes."""
    return KEY.fullmatch(key) is not None and ".." not in key


def checked_key(key: str) -> str:
    """`key`, once it is one the server makes (ValueError otherwise): every backend asks this
    before a key reaches a path, a query or an object name."""
    if not is_key(key):
        raise ValueError(f"not a file key: {key!r}")
    return key


def checked_prefix(prefix: str) -> str:
    """`prefix` of keys (as `keys` and `delete_prefix` take), once it could begin one."""
    if not _PREFIX.fullmatch(prefix) or ".." in prefix:
        raise ValueError(f"not a file key prefix: {prefix!r}")
    return prefix


def result_key(thread_id: str) -> str:
    return f"results/{thread_id}"


def uploads_prefix(thread_id: str) -> str:
    return f"uploads/{thread_id}/"


class FileStorage(Protocol):
    kind: str
    """`local`, `postgres` or `s3`: the value of the `files` setting that chose it."""

    async def open(self) -> None:
        """Connect (or make the directory); raises FileUnavailable when it cannot."""

    async def close(self) -> None: ...

    async def put(self, key: str, source: Path) -> int:
        """Store the local file `source` under `key`, replacing any file there, whole or not
        at all; returns its size. `source` may be moved (local) or left for the caller to
        remove."""

    def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes of `key` from `start` up to `end` (exclusive; None: to its end), in
        chunks of at most CHUNK bytes. Raises FileMissing before the first chunk when there is
        no such file."""

    async def size(self, key: str) -> int | None:
        """The size of `key`; None when there is no such file."""

    async def fetch(self, key: str, target: Path) -> None:
        """Copy `key` into the local file `target` (a job reads its uploads from disk).
        Raises FileMissing when there is no such file."""

    async def delete(self, key: str) -> None:
        """Delete `key`; no error when it is not there."""

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every key that starts with `prefix` (a thread's uploads)."""

    def keys(self, prefix: str) -> AsyncIterator[str]:
        """Every key that starts with `prefix`, in no set order (the purge looks for orphans)."""

    async def check(self) -> None:
        """Write, read back and delete a small marker; raises FileUnavailable when any step
        fails (`/ready` asks this)."""

    def local_path(self, key: str) -> Path | None:
        """Where `key` is on this node's disk, when the backend keeps files there (local):
        served with sendfile and read by jobs in place. None for the others."""

    def presigned_url(self, key: str, ttl: int, filename: str, media_type: str) -> str | None:
        """A URL of the storage's own that serves `key` for `ttl` seconds with that download
        name and type, when the backend signs its own links (s3 with `s3-presign`); else None."""
