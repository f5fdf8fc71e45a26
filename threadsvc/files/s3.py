"""Files in a bucket of any S3-compatible service (`files = "s3"`; `pip install 'threadsvc[s3]'`).

Every node reads and writes the same bucket, so a result made on one node downloads through
any other. Keys are the storage's keys behind a fixed prefix (`s3-prefix`), made by the server
only and checked by base.checked_key, so no caller's text ever names an object.

Threat model and guarantees:
- Nothing partial is ever visible: `put` uploads the node's local file through boto's transfer
  manager (multipart above MULTIPART); S3 shows an object only once its upload completes, and
  an upload that fails or is cancelled is aborted before `put` returns, so its parts are not
  kept. A node killed during an upload leaves an incomplete multipart upload, which is
  invisible and is removed by the bucket's lifecycle rule (README, S3 storage).
- A dead or silent endpoint never holds a request for long: connect and read timeouts and a
  bounded number of attempts (botocore's "standard" retries) turn it into FileUnavailable,
  which the API answers 503. A missing object is FileMissing, never a 410.
- Error messages name the endpoint, bucket and S3 error code, never a credential: they are
  logged, not sent to clients.
- With `presign`, a result's link is the service's own pre-signed GET (boto3 signs it; no
  signing of ours), valid for the link's lifetime, carrying the download name and type.

boto3 is blocking: each call runs in a worker thread (anyio.to_thread), and reads go through
in CHUNK pieces, so memory stays bounded whatever the object's size.
"""

from __future__ import annotations

import contextlib
import re
import stat
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import anyio.to_thread
import boto3.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from s3transfer.futures import TransferFuture
from s3transfer.manager import TransferManager

from threadsvc.errors import FileMissing, FileUnavailable
from threadsvc.files.base import CHUNK, checked_key, checked_prefix

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")

MULTIPART = 8 * 1024 * 1024  # files above this are uploaded in parts of this size
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def attachment(filename: str) -> str:
    """The Content-Disposition of a download named `filename`, written as the node writes its
    own (Starlette's FileResponse): the same header whichever way the result is served."""
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'


class S3Files:
    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str | None = None,
        prefix: str = "",
        region: str | None = None,
        credentials: tuple[str, str] | None = None,
        presign: bool = False,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        attempts: int = 3,
    ) -> None:
        """`endpoint` None (or empty) is AWS itself; `prefix` is put before every key (a `/`
        is added when it lacks one); `credentials` is (access key id, secret access key), None
        for boto's usual chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws, an
        instance role). `attempts` counts the first try: a call fails after at most that many."""
        self.bucket = bucket
        self.endpoint = endpoint or None  # an empty setting is no setting
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.region = region or None
        self.presign = presign
        self._credentials = credentials
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": attempts},
            signature_version="s3v4",
            # Other S3-compatible services are addressed by path (no DNS name per bucket).
            s3={"addressing_style": "auto" if self.endpoint is None else "path"},
            # Checksums only where S3 requires them: recent botocore otherwise sends trailing
            # checksums in aws-chunked bodies, which many S3-compatible services store as is.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # One manager for the node's transfers, at most 4 requests of theirs at once: each holds
        # about 3 MiB while it goes, so a node's uploads cost it about 12 MiB at most.
        self._transfer_config = TransferConfig(
            multipart_threshold=MULTIPART, multipart_chunksize=MULTIPART, max_concurrency=4
        )
        self._client: S3Client | None = None
        self._manager: TransferManager | None = None
        self._where = f"s3 bucket {bucket!r} at {self.endpoint or 'AWS'}"

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("S3Files used before open()")
        return self._client

    def _name(self, key: str) -> str:
        return self.prefix + checked_key(key)

    def _prefix_name(self, prefix: str) -> str:
        return self.prefix + checked_prefix(prefix)

    def _make_client(self) -> S3Client:
        access, secret = self._credentials or (None, None)
        session = boto3.session.Session(
            aws_access_key_id=access, aws_secret_access_key=secret, region_name=self.region
        )
        return session.client(
            "s3",
            endpoint_url=self.endpoint,
            # Signing needs a region; other services accept AWS's default one.
            region_name=self.region or (None if self.endpoint is None else "us-east-1"),
            config=self._config,
        )

    async def _run(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call` in a worker thread, its failures turned into FileUnavailable/FileMissing."""
        return await anyio.to_thread.run_sync(lambda: self._guarded(what, call, *args, **kwargs))

    def _guarded(self, what: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return call(*args, **kwargs)
        except ClientError as exc:
            raise self._client_error(what, exc) from exc
        except NoCredentialsError as exc:
            raise FileUnavailable(
                f"{what}: no credentials for {self._where} (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or the settings)"
            ) from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise FileUnavailable(f"{what}: cannot connect to {self._where}") from exc
        except ReadTimeoutError as exc:
            raise FileUnavailable(f"{what}: {self._where} did not answer in time") from exc
        except BotoCoreError as exc:  # a connection closed, a body cut short...
            raise FileUnavailable(f"{what}: {self._where}: {type(exc).__name__}") from exc

    def _client_error(self, what: str, exc: ClientError) -> FileUnavailable:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        if code in _MISSING:
            return FileMissing(f"{what}: no such object in {self._where}")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        return FileUnavailable(f"{what}: {self._where} answered {status} {code}")

    async def _transfer(self, what: str, start: Callable[[TransferManager], TransferFuture]
                        ) -> None:
        """A transfer of the manager's, to its end; when the caller is cancelled, the transfer
        is cancelled too (an upload aborted: its parts deleted) before this returns."""
        if self._manager is None:
            raise RuntimeError("S3Files used before open()")
        future = start(self._manager)  # only queues it
        try:
            await anyio.to_thread.run_sync(
                lambda: self._guarded(what, future.result), abandon_on_cancel=True
            )
        except anyio.get_cancelled_exc_class():
            future.cancel()
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(future.result)
            raise

    # -- the contract --------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            self._client = await anyio.to_thread.run_sync(self._make_client)
            self._manager = TransferManager(self._client, self._transfer_config)
        try:
            await self._run("open", self.client.head_bucket, Bucket=self.bucket)
        except FileMissing as exc:  # HEAD has no body: a bare 404 is the bucket's
            raise FileUnavailable(f"open: there is no {self._where}") from exc

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:  # transfers still running are cancelled (uploads aborted)
            await anyio.to_thread.run_sync(lambda: manager.shutdown(cancel=True))
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def local_path(self, key: str) -> None:
        return None

    def presigned_url(self, key: str, ttl: int, filename: str, media_type: str) -> str | None:
        if not self.presign:
            return None
        return self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self._name(key),
                "ResponseContentDisposition": attachment(filename),
                "ResponseContentType": media_type,
            },
            ExpiresIn=ttl,
        )

    async def put(self, key: str, source: Path) -> int:
        name, what = self._name(key), f"put {key}"
        info = await anyio.Path(source).stat()
        if stat.S_ISREG(info.st_mode):  # read part by part from disk as the parts go
            await self._transfer(
                what, lambda manager: manager.upload(str(source), self.bucket, name)
            )
            return info.st_size
        # A pipe: read as it comes (a part at a time in memory), its length known at its end.
        stream = await anyio.to_thread.run_sync(source.open, "rb")
        try:
            await self._transfer(what, lambda manager: manager.upload(stream, self.bucket, name))
        finally:
            stream.close()
        size = await self.size(key)
        if size is None:
            raise FileUnavailable(f"{what}: not found in {self._where} once written")
        return size

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        name, what = self._name(key), f"read {key}"
        if end is not None and end <= start:  # S3 has no empty range: ask only that it exists
            if await self.size(key) is None:
                raise FileMissing(f"{what}: no such object in {self._where}")
            return
        ranged = {} if start == 0 and end is None else {"Range": _range(start, end)}
        try:
            answer = await self._run(
                what, self.client.get_object, Bucket=self.bucket, Key=name, **ranged
            )
        except FileMissing:
            raise
        except FileUnavailable as exc:  # 416: `start` is past the end (the local file's too)
            if not _status_416(exc) or await self.size(key) is None:
                raise
            return
        body = answer["Body"]
        try:
            left = _limit(answer.get("ContentRange"), start, end)
        except ValueError:
            body.close()
            raise FileUnavailable(f"{what}: {self._where} sent another range") from None
        try:
            while left is None or left > 0:
                wanted = CHUNK if left is None else min(CHUNK, left)
                chunk = await self._run(what, body.read, wanted)
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk
        finally:
            body.close()  # at once, also when the reader stops early (a client went away)

    async def size(self, key: str) -> int | None:
        try:
            head = await self._run(
                f"size {key}", self.client.head_object, Bucket=self.bucket, Key=self._name(key)
            )
        except FileMissing:
            return None
        return head["ContentLength"]

    async def fetch(self, key: str, target: Path) -> None:
        # The manager writes beside `target` and renames it into place when complete.
        name = self._name(key)
        await self._transfer(
            f"fetch {key}", lambda manager: manager.download(self.bucket, name, str(target))
        )

    async def delete(self, key: str) -> None:
        await self._run(
            f"delete {key}", self.client.delete_object, Bucket=self.bucket, Key=self._name(key)
        )

    async def delete_prefix(self, prefix: str) -> None:
        what = f"delete {prefix}*"
        async for names in self._pages(what, prefix):
            if not names:
                continue
            answer = await self._run(
                what, self.client.delete_objects, Bucket=self.bucket,
                Delete={"Objects": [{"Key": name} for name in names], "Quiet": True},
            )
            if failed := answer.get("Errors"):
                codes = sorted({str(error.get("Code", "?")) for error in failed})
                raise FileUnavailable(f"{what}: {self._where} kept {len(failed)}: {codes}")

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        async for names in self._pages(f"list {prefix}*", prefix):
            for name in names:
                yield name[len(self.prefix):]

    async def _pages(self, what: str, prefix: str) -> AsyncIterator[list[str]]:
        """The names under `prefix`, a page (up to 1000, S3's most) at a time."""
        pages: Iterator[Any] = iter(
            self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._prefix_name(prefix)
            )
        )
        while (page := await self._run(what, next, pages, None)) is not None:
            yield [item["Key"] for item in page.get("Contents", [])]

    async def check(self) -> None:
        key = f"check/{uuid.uuid4().hex}"
        name = self._name(key)
        try:
            await self._run("check: write", self.client.put_object,
                            Bucket=self.bucket, Key=name, Body=b"ok")
            answer = await self._run("check: read", self.client.get_object,
                                     Bucket=self.bucket, Key=name)
            body: StreamingBody = answer["Body"]
            try:
                marker = await self._run("check: read", body.read)
            finally:
                body.close()
            if marker != b"ok":
                raise FileUnavailable(f"check: the marker read back from {self._where} differs")
        finally:
            # The first failure is the one to report; a marker left behind is a few bytes.
            with contextlib.suppress(FileUnavailable):
                await self.delete(key)


def _limit(content_range: str | None, start: int, end: int | None) -> int | None:
    """How many bytes of an answer to read (None: to its end): those asked for and no more,
    whatever its length says (s3rver answers `bytes=0-0` with the whole object, and a range
    of an empty one with a length of 1 and no byte). ValueError when the answer starts
    elsewhere than asked (a service that ignored the Range)."""
    limits = [] if end is None else [end - start]
    if content_range:
        found = _CONTENT_RANGE.fullmatch(content_range)
        if found is None or int(found[1]) != start:
            raise ValueError(content_range)
        if found[2] != "*":
            limits.append(int(found[2]) - start)
    elif start:
        raise ValueError("no Content-Range")
    return max(0, min(limits)) if limits else None


def _range(start: int, end: int | None) -> str:
    return f"bytes={start}-" + ("" if end is None else str(end - 1))


def _status_416(exc: FileUnavailable) -> bool:
    cause = exc.__cause__
    return isinstance(cause, ClientError) and (
        cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416
        or cause.response.get("Error", {}).get("Code") == "InvalidRange"
    )
