"""The file-storage contract on the s3 backend, against real S3-compatible servers.

Each contract test runs on moto's standalone server and on s3rver (tests/s3servers.py), both
on free ports. What each does not enforce, and so what these tests cannot show there:
- moto: credentials and signatures (any key signs anything; the credential tests use a moto
  with its IAM checks on, which checks a header's signature), a pre-signed link's signature
  and lifetime (it serves tampered and expired links), bucket lifecycle rules;
- s3rver: any signature of version 4, the only kind boto makes (it checks a version 4 link's
  access key, date and lifetime, which is what the link tests rely on, but a link whose path
  or signature was changed is served), bucket policies (one account may do everything), the
  listing of incomplete multipart uploads; and it answers a Range on an empty object with a
  206 that promises a byte it never sends (S3Files reads the size in Content-Range first).
Neither checks checksums (S3Files sends them only where S3 requires them)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from botocore.exceptions import EndpointConnectionError

from tests.s3servers import S3Server, start_moto_checking_signatures
from tests.support import free_port
from threadsvc.errors import FileMissing, FileUnavailable
from threadsvc.files.base import CHUNK
from threadsvc.files.s3 import MULTIPART, S3Files, attachment

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # S3 servers: the contract suite runs s3 fast

BIG = 2 * CHUNK + 12345  # more than two chunks, so reads come in several pieces


@pytest.fixture(params=["moto_s3", "s3rver"])
def s3(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue(request.param)
    return server


@pytest.fixture
async def files(s3: S3Server) -> AsyncIterator[S3Files]:
    """An opened S3Files on a fresh bucket, under a prefix."""
    opened = s3.files(prefix="threadsvc")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def _file(directory: Path, content: bytes) -> Path:
    path = directory / f"{uuid.uuid4().hex}.new"
    path.write_bytes(content)
    return path


async def _read(files: S3Files, key: str, start: int = 0, end: int | None = None) -> bytes:
    chunks = [chunk async for chunk in files.read(key, start, end)]
    assert all(0 < len(chunk) <= CHUNK for chunk in chunks)
    return b"".join(chunks)


async def _keys(files: S3Files, prefix: str) -> set[str]:
    return {key async for key in files.keys(prefix)}


# -- put, read, size, fetch ---------------------------------------------------------------------





@pytest.mark.slow
async def test_a_file_in_parts(files: S3Files, tmp_path: Path) -> None:
    """Above MULTIPART the upload goes in parts; the object is the whole file all the same."""
    content = os.urandom(2 * MULTIPART + 999)
    await files.put("results/BIG", _file(tmp_path, content))
    assert await files.size("results/BIG") == len(content)
    assert await _read(files, "results/BIG", MULTIPART - 3, MULTIPART + 3) == content[
        MULTIPART - 3 : MULTIPART + 3
    ]
    target = tmp_path / "fetched"
    await files.fetch("results/BIG", target)
    assert target.read_bytes() == content





# -- delete, delete_prefix, keys ----------------------------------------------------------------




@pytest.mark.slow
async def test_more_keys_than_a_page(s3: S3Server, files: S3Files) -> None:
    """Listing and deleting go page by page (S3 answers at most 1000 keys at a time)."""
    client = s3.client()
    made = {f"uploads/P/file-{n}" for n in range(1003)}
    for key in made:
        client.put_object(Bucket=files.bucket, Key=files.prefix + key, Body=b"")
    assert await _keys(files, "uploads/P/") == made
    await files.delete_prefix("uploads/P/")
    assert await _keys(files, "uploads/") == set()


async def test_the_prefix_keeps_deployments_apart(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    one, two = s3.files(bucket, prefix="one/"), s3.files(bucket, prefix="/two")
    for opened in (one, two):
        await opened.open()
    await one.put("results/X", _file(tmp_path, b"one"))
    await two.put("results/X", _file(tmp_path, b"two"))
    assert await _read(one, "results/X") == b"one"
    assert await _keys(two, "") == {"results/X"}
    await two.delete_prefix("results/")
    assert await _read(one, "results/X") == b"one"
    listed = s3.client().list_objects_v2(Bucket=bucket)
    assert [item["Key"] for item in listed["Contents"]] == ["one/results/X"]


# -- check, and a storage that cannot be reached ------------------------------------------------


async def test_check_leaves_no_marker(s3: S3Server, files: S3Files) -> None:
    await files.check()
    assert s3.client().list_objects_v2(Bucket=files.bucket).get("KeyCount") == 0


async def test_no_such_bucket(s3: S3Server) -> None:
    files = s3.files(bucket="no-such-bucket")
    with pytest.raises(FileUnavailable) as raised:
        await files.open()
    assert not isinstance(raised.value, FileMissing)
    with pytest.raises(FileUnavailable):
        await files.check()


async def test_nothing_listening(tmp_path: Path) -> None:
    """A refused connection fails at once, after the few attempts (no minutes of retries)."""
    files = S3Files(bucket="b", endpoint=f"http://127.0.0.1:{free_port()}", credentials=("a", "b"))
    with pytest.raises(FileUnavailable, match="cannot connect to .*127.0.0.1"):
        await files.open()
    for attempt in (files.check(), files.size("results/X"), files.delete("results/X")):
        with pytest.raises(FileUnavailable):
            await attempt
    with pytest.raises(FileUnavailable):
        await _read(files, "results/X")
    with pytest.raises(FileUnavailable):
        await files.put("results/X", _file(tmp_path, b"x"))


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections and never answers (a hung S3 service)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for sock in (*accepted, listener):
            sock.close()


async def test_a_silent_endpoint_times_out(silent_endpoint: str) -> None:
    files = S3Files(bucket="b", endpoint=silent_endpoint, credentials=("a", "b"),
                    read_timeout=0.5, attempts=2)
    with pytest.raises(FileUnavailable, match="did not answer in time"):
        await files.open()


@pytest.fixture(scope="module")
def checking_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_moto_checking_signatures(tmp_path_factory.mktemp("moto-checking"))
    try:
        yield server
    finally:
        server.stop()


async def test_refused_credentials(checking_moto: S3Server, tmp_path: Path) -> None:
    """A wrong secret is FileUnavailable (not FileMissing), and the message names neither the
    key nor the secret."""
    bucket = checking_moto.new_bucket()
    right = checking_moto.files(bucket)
    await right.open()
    await right.put("results/R", _file(tmp_path, b"r"))
    wrong = S3Files(bucket=bucket, endpoint=checking_moto.endpoint,
                    credentials=(checking_moto.access_key, "not-the-secret-4711"))
    with pytest.raises(FileUnavailable) as raised:
        await wrong.open()
    for attempt in (_read(wrong, "results/R"), wrong.check(), wrong.delete("results/R")):
        with pytest.raises(FileUnavailable) as raised:
            await attempt
        assert not isinstance(raised.value, FileMissing)
        assert "403" in str(raised.value)
        assert "4711" not in str(raised.value)
        assert checking_moto.access_key not in str(raised.value)
    assert await right.size("results/R") == 1


async def test_no_credentials_anywhere(
    moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without credentials in the settings, boto's chain is asked; when it finds none, every
    call is FileUnavailable saying what to set."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    files = S3Files(bucket=moto_s3.new_bucket(), endpoint=moto_s3.endpoint)
    with pytest.raises(FileUnavailable, match="no credentials"):
        await files.open()


# -- nothing partial ----------------------------------------------------------------------------


async def test_a_failed_upload_leaves_the_old_file_and_no_parts(
    moto_s3: S3Server, tmp_path: Path
) -> None:
    """The connection fails during the second part: put raises, the key still holds the file
    it held, and the upload was aborted (no parts kept). On moto: s3rver cannot list
    incomplete uploads."""
    files = moto_s3.files(prefix="p")
    await files.open()
    await files.put("results/T5", _file(tmp_path, b"the old result"))

    def fail_second_part(params: dict[str, Any], **_: Any) -> None:
        if params.get("PartNumber") == 2:
            raise EndpointConnectionError(endpoint_url=moto_s3.endpoint)

    files.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    with pytest.raises(FileUnavailable):
        await files.put("results/T5", _file(tmp_path, os.urandom(3 * MULTIPART)))
    assert await _read(files, "results/T5") == b"the old result"
    uploads = moto_s3.client().list_multipart_uploads(Bucket=files.bucket)
    assert uploads.get("Uploads", []) == []


async def test_a_cancelled_upload_leaves_nothing(moto_s3: S3Server, tmp_path: Path) -> None:
    """A put cancelled while its parts go (a node stopping, a client gone) returns only once
    the upload is aborted: no object, no parts. On moto (s3rver cannot list uploads)."""
    files = moto_s3.files()
    await files.open()
    sent, release = threading.Event(), threading.Event()

    def hold(**_: Any) -> None:
        sent.set()
        release.wait(60)

    files.client.meta.events.register("after-call.s3.UploadPart", hold)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(files.put, "results/C", _file(tmp_path, os.urandom(3 * MULTIPART)))
            await anyio.to_thread.run_sync(sent.wait, 60)
            tasks.cancel_scope.cancel()
            release.set()
    finally:
        release.set()
    assert await files.size("results/C") is None
    assert moto_s3.client().list_multipart_uploads(Bucket=files.bucket).get("Uploads", []) == []


KILLED_PUT = """
import pathlib, sys, time
import anyio
from threadsvc.files.s3 import S3Files
files = S3Files(bucket=sys.argv[1], endpoint=sys.argv[2], credentials=("testing", "testing"))
async def main():
    await files.open()
    def stall(**_):
        print("part sent", flush=True)
        time.sleep(3600)  # the test kills this process meanwhile
    files.client.meta.events.register("after-call.s3.UploadPart", stall)
    await files.put("results/K", pathlib.Path(sys.argv[3]))
anyio.run(main)
"""


def _put_and_kill(endpoint: str, bucket: str, source: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUT, bucket, endpoint, str(source)],
        stdout=subprocess.PIPE, env=env,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"part sent\n"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


@pytest.mark.slow
async def test_a_node_killed_during_an_upload_shows_nothing(
    moto_s3: S3Server, tmp_path: Path
) -> None:
    """SIGKILL after the first part was sent: no object is visible under the key (its parts
    wait, invisible, for the bucket's lifecycle rule to abort them)."""
    bucket = moto_s3.new_bucket()
    source = _file(tmp_path, os.urandom(3 * MULTIPART))
    await anyio.to_thread.run_sync(_put_and_kill, moto_s3.endpoint, bucket, source)
    files = moto_s3.files(bucket)
    await files.open()
    assert await files.size("results/K") is None
    assert await _keys(files, "") == set()
    uploads = moto_s3.client().list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [upload["Key"] for upload in uploads] == ["results/K"]


# -- pre-signed links (s3rver: it checks them) --------------------------------------------------


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url)


@pytest.fixture
async def signing(s3rver: S3Server, tmp_path: Path) -> AsyncIterator[S3Files]:
    opened = s3rver.files(prefix="signed", presign=True)
    await opened.open()
    await opened.put("results/L", _file(tmp_path, b"the result"))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize("filename", ["report.pdf", "résumé 2026.pdf"])
async def test_a_fresh_link_serves_the_file(signing: S3Files, filename: str) -> None:
    url = signing.presigned_url("results/L", 60, filename, "application/pdf")
    assert url is not None and url.startswith(f"{signing.endpoint}/{signing.bucket}/signed/")
    answer = await _get(url)
    assert answer.status_code == 200, answer.text
    assert answer.content == b"the result"
    assert answer.headers["content-disposition"] == attachment(filename)
    assert answer.headers["content-type"] == "application/pdf"


async def test_what_s3rver_checks_of_a_link(signing: S3Files) -> None:
    """s3rver refuses a link whose access key or date was changed (403), or that lost its
    signature (400, as S3 does). It does not recompute a version 4 signature: a link whose
    path or header override was changed passes there (S3 itself refuses it)."""
    url = signing.presigned_url("results/L", 60, "r.pdf", "application/pdf")
    assert url is not None
    for tampered in (
        url.replace("X-Amz-Credential=S3RVER", "X-Amz-Credential=OTHER"),
        re.sub(r"X-Amz-Date=(\d{4})", lambda m: f"X-Amz-Date={int(m[1]) - 1}", url),
        url.replace("X-Amz-Signature=", "X-Amz-Signaturf="),
    ):
        assert tampered != url
        answer = await _get(tampered)
        assert answer.status_code in (400, 403), (tampered, answer.text)
        assert b"the result" not in answer.content


@pytest.mark.slow
async def test_an_expired_link_is_refused(signing: S3Files) -> None:
    url = signing.presigned_url("results/L", 1, "r.pdf", "application/pdf")
    assert url is not None
    await anyio.sleep(2.5)  # the link's lifetime (1 s), and a second for the clock's granularity
    answer = await _get(url)
    assert answer.status_code == 403
    assert "Request has expired" in answer.text


async def test_no_links_without_presign(s3rver: S3Server) -> None:
    files = s3rver.files()
    await files.open()
    assert files.presigned_url("results/L", 60, "r.pdf", "application/pdf") is None
