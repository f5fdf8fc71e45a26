"""A result streamed from a file storage without local copies, with single byte ranges.

Answers as Starlette's FileResponse does for the local storage (tests/test_files_wiring.py
compares them): `Accept-Ranges: bytes`, 206 with `Content-Range` for one satisfiable range, 416
with `Content-Range: bytes */SIZE` for an unsatisfiable one, 400 for a malformed one, and the
whole file for several ranges (allowed: a server may ignore Range). The first chunk is read
before the status is sent, so a file that cannot be reached is a 503 rather than a cut body;
memory stays at one chunk whatever the size.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    MalformedRangeHeader,
    PlainTextResponse,
    RangeNotSatisfiable,
    Response,
    StreamingResponse,
)

from threadsvc.errors import FileMissing
from threadsvc.files.base import FileStorage


async def stored_file(
    request: Request, storage: FileStorage, key: str, media_type: str, filename: str,
    headers: dict[str, str],
) -> Response:
    size = await storage.size(key)
    if size is None:
        raise FileMissing(f"no file {key}")
    headers = {**headers, "Accept-Ranges": "bytes", "Content-Disposition": _disposition(filename)}
    start, end, status = 0, size, 200
    wanted = request.headers.get("range")
    if wanted is not None and request.method in ("GET", "HEAD"):
        try:
            # Starlette's own parser: the same ranges, and the same refusals, as a local file.
            ranges = FileResponse._parse_range_header(wanted, size)
        except MalformedRangeHeader as exc:
            return PlainTextResponse(exc.content, status_code=400)
        except RangeNotSatisfiable:
            return PlainTextResponse("", status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if len(ranges) == 1:
            start, end = ranges[0]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    if request.method == "HEAD" or start == end:
        return Response(b"", status, headers=headers, media_type=media_type)
    chunks = storage.read(key, start, end)
    first = await anext(chunks, b"")  # FileMissing or FileUnavailable here: a 503, nothing sent yet
    return StreamingResponse(_rest(first, chunks), status, headers=headers, media_type=media_type)


async def _rest(first: bytes, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        yield first
        async for chunk in chunks:
            yield chunk


def _disposition(filename: str) -> str:
    quoted = quote(filename)
    if quoted != filename:
        return f"attachment; filename*=utf-8''{quoted}"
    return f'attachment; filename="{filename}"'
