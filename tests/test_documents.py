"""Document sets from uploads, on real crafted files: bombs, slips, lies and limits."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from threadsvc.jobs.documents import DocumentSet, Limits, UnsafeUpload, safe_path
from threadsvc.uploads import InputFile


def upload(tmp_path: Path, name: str, data: bytes) -> InputFile:
    path = tmp_path / f"upload-{len(list(tmp_path.iterdir()))}"
    path.write_bytes(data)
    return InputFile(name=name, path=path, size=len(data), content_type="application/octet-stream")


def make_zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_plain_files_and_zips_make_one_set(tmp_path: Path) -> None:
    files = [
        upload(tmp_path, "C:\\docs\\first.xml", b"<a/>"),
        upload(tmp_path, "set.zip", make_zip({"x/one.xml": b"<b/>", "x/sub/two.xml": b"<c/>",
                                              "x/": b""})),
    ]
    documents = DocumentSet(files)
    assert [e.path for e in documents.entries] == ["first.xml", "x/one.xml", "x/sub/two.xml"]
    assert [data for _, data in documents] == [b"<a/>", b"<b/>", b"<c/>"]


def test_zip_bomb_is_refused_before_reading(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("bomb.xml", "w", force_zip64=True) as entry,
    ):
        chunk = b"\0" * (1024 * 1024)
        for _ in range(200):
            entry.write(chunk)
    bomb = buffer.getvalue()
    assert len(bomb) < 1024 * 1024  # 200 MiB in well under 1 MiB
    with pytest.raises(UnsafeUpload, match="expands"):
        DocumentSet([upload(tmp_path, "bomb.zip", bomb)])


@pytest.mark.parametrize("name", ["../../evil.xml", "/etc/cron.d/evil", "a/../../evil.xml",
                                  "C:/Windows/evil.xml", "..\\..\\evil.xml"])
def test_zip_slip_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeUpload):
        DocumentSet([upload(tmp_path, "slip.zip", make_zip({"ok.xml": b"<a/>", name: b"<x/>"}))])


def test_a_lying_header_is_caught(tmp_path: Path) -> None:
    data = bytearray(make_zip({"liar.xml": b"<a>" + b"x" * 5000 + b"</a>"}))
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 10)  # claim 10 bytes uncompressed
    documents = DocumentSet([upload(tmp_path, "liar.zip", bytes(data))])
    with pytest.raises(UnsafeUpload, match="liar.xml"):
        list(documents)


def test_limits_on_count_size_and_duplicates(tmp_path: Path) -> None:
    many = make_zip({f"d{i}.xml": b"<a/>" for i in range(11)})
    with pytest.raises(UnsafeUpload, match="more than 10"):
        DocumentSet([upload(tmp_path, "many.zip", many)], Limits(max_documents=10))
    with pytest.raises(UnsafeUpload, match="larger than"):
        DocumentSet([upload(tmp_path, "big.xml", b"x" * 101)], Limits(max_document=100))
    with pytest.raises(UnsafeUpload, match="in all"):
        DocumentSet([upload(tmp_path, "a.xml", b"x" * 60), upload(tmp_path, "b.xml", b"y" * 60)],
                    Limits(max_total=100))
    with pytest.raises(UnsafeUpload, match="Two documents"):
        DocumentSet([upload(tmp_path, "a.xml", b"1"), upload(tmp_path, "dir/a.xml", b"2")])
    with pytest.raises(UnsafeUpload, match="not a readable zip"):
        DocumentSet([upload(tmp_path, "broken.zip", b"PK\x03\x04garbage")])


def test_safe_path_normalises() -> None:
    assert safe_path("a/./b//c.xml") == "a/b/c.xml"
    assert safe_path("a\\b.xml") == "a/b.xml"
    assert safe_path("", fallback="document.xml") == "document.xml"
    with pytest.raises(UnsafeUpload):
        safe_path("a/\x01b.xml")


def test_an_empty_zip_is_an_empty_set(tmp_path: Path) -> None:
    assert len(DocumentSet([upload(tmp_path, "empty.zip", make_zip({}))])) == 0
