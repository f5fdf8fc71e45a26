"""A whole deployment as one stream (`threadsvc export > dump`, `threadsvc import < dump`): to move
from SQLite to PostgreSQL, or back, or to another file storage.

The stream is JSON lines, each one object:

    {"format": "threadsvc-export", "version": 1, "schema": 11, "user_id_high": N, ...}
    {"table": "users", "rows": [{"id": 1, "username": "admin", ...}, ...]}   many, in TABLES order
    {"file": "results/ID", "size": N}        then the file's bytes,
    {"data": "BASE64"}                       a line per chunk of at most 1 MiB,
    {"end-file": "results/ID", "size": N, "sha256": "HEX"}
    {"end": {"rows": {"users": 7, ...}, "files": 2}}

Rows carry every column of the tables in store/transfer.TABLES, ids included, so that thread
and group URLs, tokens, clients and signed links stay valid; flags are JSON booleans whatever
the source dialect. Memory stays flat however big the store or a file: tables are read a page
at a time, a line holds at most about a megabyte of rows or one chunk of a file, and a file is
written to a private scratch file before it is put whole into the target's storage.

Not carried: sessions (console cookies are signed, not stored; they stay valid with the same
`secret-key`), sign-in attempts and lockouts (minutes long), webhook deliveries (history, and
pending ones: let them drain before the move), the activity counts (triggers make them again),
the nodes' rows (each node writes its own; what was asked of a node ends with it),
and where the store keeps things (its `files` record, a shared data-dir's marker).

Threat model: the dump is the operator's own, but may be truncated, damaged or of another
version: the header's format, version and schema must be this program's, each line is bounded
(MAX_LINE), each row must have exactly its table's columns with JSON scalars, each file key
must be one the server makes (results/ or uploads/) and its bytes must match the size and
SHA-256 announced; nothing counts as imported until the end line's counts match.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from threadsvc import private
from threadsvc.errors import ThreadsvcError
from threadsvc.files.base import FileStorage, is_key
from threadsvc.files.migrate import check_recorded
from threadsvc.models import now_ms
from threadsvc.store.base import Store
from threadsvc.store.migrate import latest_version
from threadsvc.store.transfer import LOCAL_SETTINGS, TABLES, TABLES_BY_NAME, Table

FORMAT = "threadsvc-export"
VERSION = 1
PAGE = 1000  # rows read from the store at a time
LINE_BYTES = 1024 * 1024  # rows per line: up to about this many bytes of JSON
MAX_LINE = 8 * 1024 * 1024  # a longer line is refused, not read whole
PREFIXES = ("results/", "uploads/")

Write = Callable[[bytes], Awaitable[object]]
ReadLine = Callable[[int], Awaitable[bytes]]  # a line of at most that many bytes; b"" at the end


class BadDump(ThreadsvcError):
    """The stream is not a whole dump this program can import."""


@dataclass
class Counts:
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0  # of the files


def _line(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


# -- export -----------------------------------------------------------------------------------
async def export(store: Store, files: FileStorage, write: Write) -> Counts:
    """Write the whole of `store` and `files` to `write`, as the module docstring says. The
    nodes should be stopped: a thread that changes meanwhile may be carried in either state."""
    await check_recorded(store, files.kind)  # the files are where the settings look
    counts = Counts()
    await write(_line({
        "format": FORMAT, "version": VERSION, "schema": latest_version(),
        "created": now_ms(), "user_id_high": await store.user_id_high(),
        "tables": {table.name: list(table.columns) for table in TABLES},
    }))
    for table in TABLES:
        counts.rows[table.name] = await _export_table(store, table, write)
    for prefix in PREFIXES:
        keys = sorted([key async for key in files.keys(prefix) if is_key(key)])
        for key in keys:
            counts.bytes += await _export_file(files, key, write)
            counts.files += 1
    await write(_line({"end": {"rows": counts.rows, "files": counts.files}}))
    return counts


async def _export_table(store: Store, table: Table, write: Write) -> int:
    after, total = table.first, 0
    while True:
        rows = await store.export_page(table, after, PAGE)
        kept = [row for row in rows
                if table.name != "server_settings" or row["key"] not in LOCAL_SETTINGS]
        encoded, size = [], 0
        for row in kept:
            text = json.dumps(dict(row), ensure_ascii=False, separators=(",", ":"))
            encoded.append(text)
            size += len(text)
            if size >= LINE_BYTES:
                await _write_rows(table, encoded, write)
                encoded, size = [], 0
        await _write_rows(table, encoded, write)
        total += len(kept)
        if len(rows) < PAGE:
            return total
        after = tuple(rows[-1][column] for column in table.key)


async def _write_rows(table: Table, encoded: list[str], write: Write) -> None:
    if encoded:
        await write(f'{{"table":"{table.name}","rows":[{",".join(encoded)}]}}\n'.encode())


async def _export_file(files: FileStorage, key: str, write: Write) -> int:
    size = await files.size(key)
    if size is None:
        raise BadDump(f"file {key} went away while exporting: stop the nodes, then export")
    await write(_line({"file": key, "size": size}))
    digest, written = hashlib.sha256(), 0
    async for chunk in files.read(key):
        digest.update(chunk)
        written += len(chunk)
        await write(_line({"data": base64.b64encode(chunk).decode("ascii")}))
    await write(_line({"end-file": key, "size": written, "sha256": digest.hexdigest()}))
    return written


# -- import -----------------------------------------------------------------------------------
async def import_dump(store: Store, files: FileStorage, read_line: ReadLine, scratch: Path,
                      restarting: Callable[[], None] = lambda: None) -> Counts:
    """Read a dump from `read_line` into `store`, which must be empty (else Conflict, and
    nothing is written), and `files`; `scratch`: a private directory for one file at a time.
    Calls `restarting` when the store holds an interrupted import, removed first. Raises
    BadDump when the stream is not a whole dump: the store then stays marked as being
    imported into (nodes refuse to start on it) until an import runs to its end."""
    reader = _Lines(read_line)
    header = await reader.next()
    _check_header(header)
    if await store.begin_import():
        restarting()
    counts, order = Counts(), 0
    while True:
        item = await reader.next()
        if "table" in item:
            table = TABLES_BY_NAME.get(item["table"]) if isinstance(item["table"], str) else None
            if table is None or TABLES.index(table) < order:
                raise BadDump(f"line {reader.n}: unknown or misplaced table {item['table']!r}")
            order = TABLES.index(table)
            rows = _checked_rows(table, item.get("rows"), reader.n)
            await store.import_rows(table, rows)
            counts.rows[table.name] = counts.rows.get(table.name, 0) + len(rows)
        elif "file" in item:
            counts.bytes += await _import_file(files, item, reader, scratch)
            counts.files += 1
        elif "end" in item:
            _check_end(item["end"], counts)
            await store.finish_import(files.kind, int(header["user_id_high"]))
            return counts
        else:
            raise BadDump(f"line {reader.n}: not a line of a dump")


def _check_header(header: dict[str, Any]) -> None:
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise BadDump(f"not a {FORMAT} stream of version {VERSION}")
    if header.get("schema") != latest_version():
        raise BadDump(
            f"the dump is of schema {header.get('schema')}, this threadsvc's is "
            f"{latest_version()}: export and import with the same version of threadsvc"
        )
    if not isinstance(header.get("user_id_high"), int):
        raise BadDump("the header has no user_id_high")


def _checked_rows(table: Table, rows: Any, n: int) -> list[dict[str, Any]]:
    if not isinstance(rows, list):
        raise BadDump(f"line {n}: no rows")
    columns = set(table.columns)
    for row in rows:
        if not isinstance(row, dict) or set(row) != columns:
            raise BadDump(f"line {n}: a row of {table.name} without exactly its columns")
        if not all(value is None or isinstance(value, int | str) for value in row.values()):
            raise BadDump(f"line {n}: a value of {table.name} that is no number, text or flag")
    return rows


def _check_end(end: Any, counts: Counts) -> None:
    if not isinstance(end, dict) or not isinstance(end.get("rows"), dict):
        raise BadDump("the end line says nothing")
    expected = {name: n for name, n in end["rows"].items() if n}
    if expected != {name: n for name, n in counts.rows.items() if n} \
            or end.get("files") != counts.files:
        raise BadDump(f"the dump announced {end}, it held {counts.rows} and {counts.files} files")


async def _import_file(files: FileStorage, item: dict[str, Any], reader: _Lines,
                       scratch: Path) -> int:
    key = item["file"]
    if not isinstance(key, str) or not is_key(key) or not key.startswith(PREFIXES):
        raise BadDump(f"line {reader.n}: {key!r} is not a file the server makes")
    part = scratch / f"{uuid.uuid4().hex}.import"
    try:
        digest, size = hashlib.sha256(), 0
        with private.create(part) as out:
            while True:
                line = await reader.next()
                if "data" not in line:
                    break
                try:
                    chunk = base64.b64decode(line["data"], validate=True)
                except (binascii.Error, TypeError, ValueError):
                    raise BadDump(f"line {reader.n}: bad base64 in {key}") from None
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)  # blocking, in a command: to a local scratch file, a chunk at a time
        whole = line.get("end-file") == key and size == line.get("size") == item.get("size")
        if not whole or line.get("sha256") != digest.hexdigest():
            raise BadDump(f"line {reader.n}: {key} is not whole ({size} bytes read)")
        await files.put(key, part)
        return size
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)  # what a local put did not move


class _Lines:
    """The dump's lines as objects, each bounded, numbered for errors."""

    def __init__(self, read_line: ReadLine) -> None:
        self.read_line = read_line
        self.n = 0

    async def next(self) -> dict[str, Any]:
        raw = await self.read_line(MAX_LINE + 1)
        self.n += 1
        if not raw:
            raise BadDump(f"the dump ends at line {self.n} before its end line: it is not whole")
        if len(raw) > MAX_LINE or not raw.endswith(b"\n"):
            raise BadDump(f"line {self.n} is longer than {MAX_LINE} bytes or cut short")
        try:
            item = json.loads(raw)
        except ValueError:
            raise BadDump(f"line {self.n} is not JSON") from None
        if not isinstance(item, dict):
            raise BadDump(f"line {self.n} is not an object")
        return item

