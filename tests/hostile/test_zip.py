"""Hostile zips uploaded to the jobs that take them (`validate`, `transform`; see
threadsvc/jobs/documents.py): bombs (a high ratio, too many entries, sizes that lie), slips
(`../`, absolute and drive names, backslashes), symbolic links, encrypted entries, duplicates.
Each fails the thread with a message naming the problem before any document is read, or (a
link) is read as the bytes it holds and never followed; nothing is written anywhere.
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from tests.hostile.payloads import (
    GROUP,
    MARKER,
    assert_no_leak,
    finish,
    result_bytes,
    start_upload,
    still_serving,
    thread_logs,
    zip_of,
)
from tests.support import Server

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"
BOOK_XSD = ("book.xsd", (DATA / "validate" / "book.xsd").read_bytes())
COPY_XSL = ("copy.xsl", (DATA / "transform" / "copy.xsl").read_bytes())
BOOK = (DATA / "validate" / "valid" / "moby.xml").read_bytes()
EXTRA = {"validate": ("schema", BOOK_XSD), "transform": ("stylesheet", COPY_XSL)}


def run(server: Server, job: str, archive: bytes, name: str = "set.zip",
        ) -> tuple[dict[str, str], list[tuple[str, str]], str]:
    with server.client("contributor") as http:
        tid = start_upload(http, job, [("documents", (name, archive)), EXTRA[job]])
        thread = finish(http, tid)
        events = thread_logs(http, tid)
    return {"status": thread.get("status"), "message": thread.findtext("message") or ""}, \
        events, tid


def assert_refused_before_reading(server: Server, job: str, archive: bytes,
                                  message: str | re.Pattern[str]) -> None:
    thread, events, tid = run(server, job, archive)
    assert thread["status"] == "failed", thread
    if isinstance(message, str):
        assert thread["message"] == message, thread
    else:
        assert message.fullmatch(thread["message"]), thread
    texts = [text for _, text in events]
    assert not any("is valid" in t or "transformed to" in t for t in texts), texts
    with server.client("contributor") as http:
        assert http.get(f"{GROUP}/threads/{tid}/result").status_code == 409  # no result


def bomb(mib: int = 200) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fine.xml", BOOK)
        with archive.open("bomb.xml", "w", force_zip64=True) as entry:
            chunk = b"\0" * (1024 * 1024)
            for _ in range(mib):
                entry.write(chunk)
    return buffer.getvalue()


def lie_about_size(archive: bytes, member: str, claimed: int) -> bytes:
    """Rewrite the uncompressed size of `member` in its local and central headers."""
    data = bytearray(archive)
    encoded = member.encode()
    local = data.index(b"PK\x03\x04")  # the first local header
    while True:
        name_length = struct.unpack_from("<H", data, local + 26)[0]
        if data[local + 30: local + 30 + name_length] == encoded:
            struct.pack_into("<I", data, local + 22, claimed)
            break
        local = data.index(b"PK\x03\x04", local + 4)
    central = data.index(b"PK\x01\x02")
    while True:
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46: central + 46 + name_length] == encoded:
            struct.pack_into("<I", data, central + 24, claimed)
            return bytes(data)
        central = data.index(b"PK\x01\x02", central + 4)


# -- bombs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("job", ["validate", "transform"])
def test_a_high_ratio_is_a_bomb(server: Server, job: str) -> None:
    archive = bomb()
    assert len(archive) < 1024 * 1024  # 200 MiB in well under 1 MiB
    assert_refused_before_reading(server, job, archive,
                                  re.compile(r"bomb\.xml expands \d+ times \(a zip bomb\?\)"))
    still_serving(server)


@pytest.mark.parametrize("job", ["validate", "transform"])
def test_too_many_entries(server: Server, job: str) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(20_001):
            archive.writestr(f"d/{i}.xml", b"<a/>")
    assert_refused_before_reading(server, job, buffer.getvalue(),
                                  "set.zip holds more than 20000 files")


@pytest.mark.parametrize("job", ["validate", "transform"])
def test_a_size_that_lies_low_to_pass_the_ratio_check(server: Server, job: str) -> None:
    """The headers say 4 KiB (no bomb), the entry inflates to 200 MiB: zipfile reads no more
    than the header promised, the CRC of that does not match, and the thread fails naming
    the entry (the 200 MiB are never inflated)."""
    archive = lie_about_size(bomb(), "bomb.xml", 4096)
    thread, _, _ = run(server, job, archive)
    assert thread["status"] == "failed"
    assert thread["message"] == (
        "Zip entry bomb.xml cannot be read: Bad CRC-32 for file 'bomb.xml'"), thread
    still_serving(server)


def test_a_size_that_lies_high_is_caught_too(server: Server) -> None:
    archive = lie_about_size(zip_of([("liar.xml", BOOK)]), "liar.xml", len(BOOK) * 10)
    thread, _, _ = run(server, "validate", archive)
    assert thread["status"] == "failed"
    assert thread["message"] == "Zip entry liar.xml is not the size its header says", thread


def test_a_zip_inside_a_zip_is_not_opened(server: Server) -> None:
    """Only uploads are opened as zips: a zip entry that is a zip itself (a bomb, here) is a
    document like any other, and not well-formed."""
    inner = bomb(50)
    thread, _, tid = run(server, "validate", zip_of([("inner.zip", inner), ("fine.xml", BOOK)]))
    assert thread["status"] == "failed"
    with server.client("contributor") as http:
        report = result_bytes(http, tid)
    assert report is not None
    assert b'<document path="inner.zip" status="invalid">' in report
    assert b'<document path="fine.xml" status="valid"/>' in report


# -- slips --------------------------------------------------------------------------------------
SLIPS = [
    ("../../evil.xml", "The path '../../evil.xml' leaves the document set"),
    ("a/../../evil.xml", "The path 'a/../../evil.xml' leaves the document set"),
    ("..\\..\\evil.xml", "The path '..\\\\..\\\\evil.xml' leaves the document set"),
    ("/tmp/evil.xml", "The path '/tmp/evil.xml' is absolute"),
    ("C:/Windows/evil.xml", "The path 'C:/Windows/evil.xml' is absolute"),
    ("\\\\server\\share\\evil.xml", "The path '\\\\\\\\server\\\\share\\\\evil.xml' is absolute"),
    ("..", "The path '..' leaves the document set"),
    ("ok/\x01evil.xml", "The path 'ok/\\x01evil.xml' holds control characters"),
]


@pytest.mark.parametrize("job", ["validate", "transform"])
@pytest.mark.parametrize(("name", "message"), SLIPS, ids=[s[0] for s in SLIPS])
def test_zip_slip_is_refused_and_nothing_is_written(
    server: Server, job: str, name: str, message: str
) -> None:
    archive = zip_of([("ok.xml", BOOK), (name, BOOK.replace(b"<book", b"<book data-x='evil'"))])
    assert_refused_before_reading(server, job, archive, message)
    for top in (server.directory, server.directory.parent, Path("/tmp")):
        # os.walk passes over directories that other programs remove meanwhile
        assert not [d for d, _, files in os.walk(top) if "evil.xml" in files], top


def test_duplicate_paths_are_refused(server: Server) -> None:
    archive = zip_of([("a.xml", BOOK), ("./a.xml", BOOK)])
    assert_refused_before_reading(server, "validate", archive, "Two documents have the path a.xml")


def test_a_symbolic_link_is_never_followed(server: Server, tmp_path: Path) -> None:
    """An entry with the mode of a symbolic link is read as the bytes it holds (the target's
    name), never as the file it names: nothing is extracted, so nothing can be followed."""
    secret = tmp_path / "secret.xml"
    secret.write_text(f"<book><title>{MARKER}</title></book>")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, target in (("link.xml", str(secret)), ("passwd.xml", "/etc/passwd")):
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
        archive.writestr("fine.xml", BOOK)
    for job in ("validate", "transform"):
        thread, events, tid = run(server, job, buffer.getvalue())
        with server.client("contributor") as http:
            result = result_bytes(http, tid)
        assert thread["status"] == "failed", thread
        errors = [text for level, text in events if level == "ERROR"]
        assert {e.split(",", 1)[0].split(":", 1)[0] for e in errors} == {
            "Document link.xml", "Document passwd.xml"}, errors  # not XML: their own bytes
        assert_no_leak(result or b"", *(text for _, text in events))


def test_encrypted_entries_are_refused(server: Server) -> None:
    data = bytearray(zip_of([("secret.xml", BOOK)], zipfile.ZIP_STORED))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.index(signature)
        struct.pack_into("<H", data, at + offset, struct.unpack_from("<H", data, at + offset)[0]
                         | 0x1)
    assert_refused_before_reading(server, "validate", bytes(data),
                                  "set.zip: encrypted entries are not supported")


def test_a_broken_zip_is_refused(server: Server) -> None:
    assert_refused_before_reading(
        server, "validate", b"PK\x03\x04" + b"\0" * 100,
        re.compile(r"set\.zip is not a readable zip file: .+"))
    still_serving(server)
