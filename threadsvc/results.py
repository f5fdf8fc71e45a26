"""Result files on disk, and the pre-signed links that let anyone holding one download it.

A result is written under `data-dir/results/` as it is produced (never held whole in memory),
named by the thread's id only, so no caller's text ever reaches a path.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from itsdangerous import BadSignature, Serializer, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode

from threadsvc import private
from threadsvc.errors import OUT_OF_SPACE, LinkRefused, StorageFull
from threadsvc.models import Result, now_ms

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class ResultFiles:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "results"

    def path(self, result: Result) -> Path:
        assert result.file is not None
        return self.root / result.file

    @contextlib.contextmanager
    def writer(self, thread_id: str) -> Iterator[tuple[BinaryIO, Path]]:
        """A file to write the result into; it replaces any earlier one only when complete."""
        private.make_dirs(self.root)
        final = self.root / thread_id
        partial = self.root / f"{thread_id}.part"
        try:
            with private.create(partial) as out:
                yield out, final
                out.flush()
                os.fsync(out.fileno())
            partial.replace(final)
        except OSError as exc:
            if exc.errno in OUT_OF_SPACE:  # the job fails saying so; nothing partial is kept
                raise StorageFull(f"No space left on the server to store the result: {exc}") from exc
            raise
        finally:
            partial.unlink(missing_ok=True)

    async def delete(self, result: Result | None) -> None:
        if result is not None and result.file is not None:
            await anyio.to_thread.run_sync(self._unlink, self.path(result))

    @staticmethod
    def _unlink(path: Path) -> None:
        path.unlink(missing_ok=True)


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
