"""Document sets from uploads: XML files given one by one or inside zip files.

Zip files are opened defensively: a cap on entries, on each document's and the set's
uncompressed size and on the compression ratio of large entries (zip bombs), entry sizes
checked against what is actually read (lying headers), and entry names normalised so that
none can climb out of the set (zip-slip). Nothing is ever extracted to disk.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from threadsvc.runner.params import File
from threadsvc.uploads import InputFile

# The `documents` parameter of every job that reads a DocumentSet.
DOCUMENTS = File(multiple=True, required=True, doc="XML documents, or zip files of them")
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with entries, an empty zip


class UnsafeUpload(ValueError):
    """An upload that breaks a limit or tries to escape; the thread fails with this message."""


@dataclass(frozen=True)
class Limits:
    max_documents: int = 20_000
    max_document: int = 64 * 1024 * 1024  # bytes of one document
    max_total: int = 1024 * 1024 * 1024  # uncompressed bytes of the whole set
    max_ratio: int = 100  # uncompressed / compressed, for entries above ratio_floor
    ratio_floor: int = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    path: str  # normalised path inside the set, `/`-separated, never absolute, never `..`
    source: InputFile
    member: str | None  # the zip entry's own name, None for a plain file
    size: int


class DocumentSet:
    """The documents of one or more uploads, checked as a whole before any is read."""

    def __init__(self, files: list[InputFile], limits: Limits = Limits()) -> None:
        self.limits = limits
        self.entries: list[Entry] = []
        seen: set[str] = set()
        total = 0
        for item in files:
            for entry in self._entries(item):
                if entry.path in seen:
                    raise UnsafeUpload(f"Two documents have the path {entry.path}")
                seen.add(entry.path)
                total += entry.size
                if len(self.entries) >= limits.max_documents:
                    raise UnsafeUpload(f"More than {limits.max_documents} documents")
                if total > limits.max_total:
                    raise UnsafeUpload(f"The documents exceed {limits.max_total} bytes in all")
                self.entries.append(entry)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[Entry, bytes]]:
        """Each entry with its bytes, read one at a time (call from a worker thread)."""
        open_zips: dict[str, zipfile.ZipFile] = {}
        try:
            for entry in self.entries:
                if entry.member is None:
                    yield entry, entry.source.path.read_bytes()
                    continue
                key = str(entry.source.path)
                if key not in open_zips:
                    open_zips[key] = zipfile.ZipFile(entry.source.path)
                try:
                    with open_zips[key].open(entry.member) as member:
                        data = member.read(entry.size + 1)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    raise UnsafeUpload(f"Zip entry {entry.path} cannot be read: {exc}") from None
                if len(data) != entry.size:
                    raise UnsafeUpload(f"Zip entry {entry.path} is not the size its header says")
                yield entry, data
        finally:
            for archive in open_zips.values():
                archive.close()

    def _entries(self, item: InputFile) -> list[Entry]:
        with open(item.path, "rb") as fh:
            is_zip = fh.read(4) in ZIP_MAGICS
        if not is_zip:
            if item.size > self.limits.max_document:
                raise UnsafeUpload(f"{item.name} is larger than {self.limits.max_document} bytes")
            base = item.name.replace("\\", "/").rsplit("/", 1)[-1]  # a plain file is its name
            return [Entry(safe_path(base, fallback="document.xml"), item, None, item.size)]
        try:
            archive = zipfile.ZipFile(item.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UnsafeUpload(f"{item.name} is not a readable zip file: {exc}") from None
        with archive:
            infos = [info for info in archive.infolist() if not info.is_dir()]
            if len(infos) > self.limits.max_documents:
                raise UnsafeUpload(f"{item.name} holds more than {self.limits.max_documents} files")
            entries = []
            for info in infos:
                if info.flag_bits & 0x1:
                    raise UnsafeUpload(f"{item.name}: encrypted entries are not supported")
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > self.limits.ratio_floor and ratio > self.limits.max_ratio:
                    raise UnsafeUpload(
                        f"{info.filename[:200]} expands {ratio:.0f} times (a zip bomb?)"
                    )
                if info.file_size > self.limits.max_document:
                    raise UnsafeUpload(
                        f"{info.filename[:200]} is larger than {self.limits.max_document} bytes"
                    )
                entries.append(Entry(safe_path(info.filename), item, info.filename, info.file_size))
            return entries


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_path(name: str, fallback: str = "") -> str:
    """A relative, normalised `/` path for a name from an upload; one that would climb out of
    the set (`../x`, `/etc/x`, `C:\\x`) is refused."""
    text = name.replace("\\", "/")
    if _DRIVE.match(text) or text.startswith("/"):
        raise UnsafeUpload(f"The path {name[:200]!r} is absolute")
    normal = posixpath.normpath(text) if text else ""
    if normal in ("", ".") and fallback:
        return fallback
    if normal in ("", ".") or normal == ".." or normal.startswith("../"):
        raise UnsafeUpload(f"The path {name[:200]!r} leaves the document set")
    if any(ord(ch) < 32 for ch in normal):
        raise UnsafeUpload(f"The path {name[:200]!r} holds control characters")
    return normal
