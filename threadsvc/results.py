"""Result files, and the pre-signed links that let anyone holding one download it.

A result is written to a scratch file on the node's disk as it is produced (never held whole in
memory), then put into the file storage under a key made of the thread's id only, so no
caller's text ever reaches a path or a key.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio
from itsdangerous import BadSignature, Serializer, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

from threadsvc import private
from threadsvc.errors import OUT_OF_SPACE, LinkRefused, StorageFull
from threadsvc.files.base import FileStorage, result_key
from threadsvc.files.scratch import Scratch
from threadsvc.models import Result, now_ms

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ResultFiles:
    """Results in the file storage, under `results/THREAD_ID`: each written by its job into a
    scratch file on this node's disk, then put into the storage whole."""

    def __init__(self, storage: FileStorage, scratch: Scratch) -> None:
        self.storage = storage
        self.scratch = scratch

    @staticmethod
    def key(result: Result) -> str:
        assert result.file is not None
        return result_key(result.file)  # `file` is the thread's id (older versions: the same)

    def local_path(self, result: Result) -> Path | None:
        """Where the result is on this node's disk, for a storage that keeps files there."""
        return self.storage.local_path(self.key(result))

    @contextlib.contextmanager
    def writer(self, thread_id: str) -> Iterator[tuple[BinaryIO, Path]]:
        """A scratch file to write the result into; `keep` then stores it. Nothing is kept
        when the writing fails."""
        partial = self.scratch.file(thread_id)
        try:
            with private.create(partial) as out:
                yield out, partial
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            partial.unlink(missing_ok=True)
            if exc.errno in OUT_OF_SPACE:  # the job fails saying so; nothing partial is kept
                raise StorageFull(f"No space left on the server to store the result: {exc}") from exc
            raise
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    async def keep(self, thread_id: str, written: Path) -> int:
        """Put the scratch file `written` as the thread's result, replacing any earlier one
        only once whole; returns its size."""
        try:
            return await self.storage.put(result_key(thread_id), written)
        finally:
            await anyio.Path(written).unlink(missing_ok=True)

    async def delete(self, result: Result | None) -> None:
        if result is not None and result.file is not None:
            await self.storage.delete(self.key(result))


def download_name(name: str) -> str:
    cleaned = _SAFE_NAME.sub("_", name).strip("._") or "result"
    return cleaned[:120]


@dataclass(frozen=True)
class Link:
    token: str
    expires: int  # epoch ms


class _Uncompressed(URLSafeTimedSerializer):
    """Tokens of three dot-separated parts always (itsdangerous may compress a payload, which
    adds a leading dot); ours are short anyway."""

    def dump_payload(self, obj: object) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


class ResultLinks:
    """Signed, expiring tokens naming a thread's result (itsdangerous; key rotation aware).

    A token carries the thread id and the exact moment (epoch ms) it stops working, the one
    shown as `<result expires>`: from that millisecond on it is refused. (itsdangerous's own
    timestamp counts whole seconds, so alone it let a link work up to a second longer.)"""

    def __init__(self, secret_keys: tuple[str, ...], ttl: int) -> None:
        self._signer = _Uncompressed(list(reversed(secret_keys)), salt="result-link")
        self.ttl = ttl

    def sign(self, thread_id: str) -> Link:
        expires = now_ms() + self.ttl * 1000
        return Link(self._signer.dumps([thread_id, expires]), expires)

    def verify(self, token: str) -> str:
        try:
            # The signed second is checked too (a bound on any token, whatever it claims).
            payload = self._signer.loads(token, max_age=self.ttl + 1)
        except SignatureExpired:
            raise LinkRefused(EXPIRED) from None
        except BadSignature:
            raise LinkRefused("This link is not valid") from None
        match payload:
            case [str(thread_id), int(expires)] if not isinstance(expires, bool):
                if now_ms() >= expires:
                    raise LinkRefused(EXPIRED)
                return thread_id
            case str(thread_id):  # signed before links carried their expiry: whole seconds
                try:
                    self._signer.loads(token, max_age=self.ttl)
                except SignatureExpired:
                    raise LinkRefused(EXPIRED) from None
                return thread_id
        raise LinkRefused("This link is not valid")


EXPIRED = "This link has expired; ask the service for a new one"
