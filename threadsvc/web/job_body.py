"""Reading the body of a start: a form (multipart or urlencoded) or a `<job>` XML document.

Threat model: the body is the one part of a start its sender controls in size. Who may start
anything here was checked before the first byte is read; the form parsers check again, as soon
as the `job` field has arrived, that the caller may start that job (`on_job` raises Forbidden),
so that a caller without the job's role is refused before the rest is read (an answer sent
before the whole body was read closes the connection: threadsvc.web.middleware.BodyLimit).
An XML body is read up to MAX_JOB_BODY bytes only, and parsed off the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing

import anyio.to_thread
from starlette.datastructures import FormData, Headers
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request

from threadsvc.errors import BadParameter, BodyTooLarge
from threadsvc.xml.parse import MAX_JOB_BODY, parse_job_body

JobCheck = Callable[[str], None]  # raises when the caller may not start the named job
MAX_FIELDS = 1000  # fields, and files, in one form
MAX_FIELD = 1024 * 1024  # bytes in a text field (files are spooled to disk, not held)


@contextlib.contextmanager
def _size_is_413() -> Iterator[None]:
    """A text field above MAX_FIELD is a body too large (413), however the body is framed;
    these callbacks raise nothing else."""
    try:
        yield
    except MultiPartException:
        raise BodyTooLarge(f"A form field may not be larger than {MAX_FIELD} bytes") from None


class _CheckedMultiPart(MultiPartParser):
    def __init__(self, headers: Headers, stream: AsyncGenerator[bytes, None], on_job: JobCheck) -> None:
        super().__init__(
            headers, stream, max_files=MAX_FIELDS, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD
        )
        self._on_job = on_job

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        with _size_is_413():
            super().on_part_data(data, start, end)

    def on_part_end(self) -> None:
        super().on_part_end()
        _field_arrived(self.items[-1], self._on_job)


class _CheckedUrlEncoded(FormParser):
    def __init__(self, headers: Headers, stream: AsyncGenerator[bytes, None], on_job: JobCheck) -> None:
        super().__init__(headers, stream, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD)
        self._on_job = on_job

    def on_field_name(self, data: bytes, start: int, end: int) -> None:
        with _size_is_413():
            super().on_field_name(data, start, end)

    def on_field_data(self, data: bytes, start: int, end: int) -> None:
        with _size_is_413():
            super().on_field_data(data, start, end)

    def on_field_end(self) -> None:
        super().on_field_end()
        _field_arrived(self._items[-1], self._on_job)


def _field_arrived(field: tuple[str, object], on_job: JobCheck) -> None:
    """The `job` field is checked as soon as it has arrived, before the rest is read."""
    name, value = field
    if name == "job" and isinstance(value, str) and value.strip():  # empty: 400 later
        on_job(value.strip())


async def read_form(request: Request, multipart: bool, on_job: JobCheck) -> FormData:
    """The form; the caller closes it (uploaded files are spooled to temporary files)."""
    async with aclosing(request.stream()) as stream:
        parser = (_CheckedMultiPart if multipart else _CheckedUrlEncoded)(
            request.headers, stream, on_job
        )
        try:
            return await parser.parse()
        except MultiPartException as exc:
            raise BadParameter("body", f"is not a readable form: {exc.message}") from None


async def read_job_xml(request: Request) -> tuple[str, list[tuple[str, str]]]:
    """The job and fields of a `<job>` body: no more than MAX_JOB_BODY bytes are read."""
    data = bytearray()
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            data += chunk
            if len(data) > MAX_JOB_BODY:
                raise BodyTooLarge(f"A <job> body may not be larger than {MAX_JOB_BODY} bytes")
    return await anyio.to_thread.run_sync(parse_job_body, bytes(data))


async def has_body(request: Request) -> bool:
    """Whether a byte of body comes (reading no more than the first part of it)."""
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            if chunk:
                return True
    return False
