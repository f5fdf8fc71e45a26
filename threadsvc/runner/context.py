"""The Context a job receives: its parameters, and the one way to report what it is doing.

Status rules (docs/api.md#statuses): a warning sets `warning`, an error sets `error`, and the next progress
or message step sets `inprogress` again. Every report is stored by the node's batch writer.

Every report gives the event loop a turn (at least once a millisecond), so that a job looping
over reports never starves the server's requests nor keeps a cancel from landing. Blocking code
in `run_sync` cannot be stopped from outside: a cancel waits for it to return (its reports
through `ctx.sync` and `check_cancelled` raise JobCancelled meanwhile), and the thread keeps its
slot until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread

from threadsvc.models import (
    RUNNING,
    Level,
    LogEvent,
    NewLogEvent,
    Result,
    Status,
    Thread,
    iso,
    now_ms,
)
from threadsvc.results import ResultFiles, download_name
from threadsvc.runner.writer import BatchWriter
from threadsvc.uploads import InputFile, Uploads
from threadsvc.xml.render import xml_safe

T = TypeVar("T")

MAX_MESSAGE = 4_000
MAX_LOG_TEXT = 64_000
YIELD_EVERY = 0.001  # seconds: reports give the loop a turn at least this often


def clean_text(text: object, limit: int) -> str:
    """Text that any XML document can hold, cut to `limit` characters."""
    cleaned = xml_safe(str(text))
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def failure_text(exc: BaseException, job_module: str) -> str:
    """The message of a thread whose job raised `exc`. An exception class of the job's own
    package, or of threadsvc's (a process job's `ChildRaised` names the job's exception itself),
    carries its author's words as they are; any other (a built-in `KeyError`, a library's
    error) is named, as its text alone rarely says what went wrong (`'min_len'`)."""
    text = clean_text(str(exc), 4000).strip()
    kind = type(exc)
    if kind.__module__.split(".")[0] in ("threadsvc", job_module.split(".")[0]):
        return text or kind.__name__
    return f"{kind.__name__}: {text}" if text else kind.__name__


MAX_PROGRESS = 2**63 - 1


class JobCancelled(Exception):
    """Raised by `check_cancelled()` in blocking code once the thread was asked to stop."""


class Cancellable:
    """What a job's code asks of a cancel, the same for a job in the server (Context) and one
    in a process of its own (runner/child.ChildContext)."""

    _cancel = False

    @property
    def cancelled(self) -> bool:
        return self._cancel

    def check_cancelled(self) -> None:
        """For blocking code in a worker thread: stop here if the thread was cancelled."""
        if self._cancel:
            raise JobCancelled("cancelled")


class Context(Cancellable):
    def __init__(
        self,
        thread: Thread,
        writer: BatchWriter,
        next_seq: int,
        files: ResultFiles,
        uploads: Uploads,
        result_ttl: int,
    ) -> None:
        self._thread = thread
        self._writer = writer
        self._seq = next_seq
        self._files = files
        self._uploads = uploads
        self._result_ttl = result_ttl
        self._result: Result | None = None
        # Set on the event loop, read by jobs' worker threads: a plain attribute is enough (its
        # writes are atomic), and cheaper than a threading.Event for every thread.
        self._cancel = False
        self._abandon = False
        self._yielded = time.monotonic()
        self.sync = SyncContext(self)

    # -- what the job may read --------------------------------------------------------------
    @property
    def thread(self) -> Thread:
        """The thread as last reported."""
        return self._thread

    @property
    def thread_id(self) -> str:
        return self._thread.id

    @property
    def params(self) -> dict[str, Any]:
        return self._thread.params

    def files(self, name: str) -> list[InputFile]:
        """The files uploaded for parameter `name` (none when it was not given)."""
        value = self._thread.params.get(name)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        return [self._uploads.input_file(item) for item in items]

    # -- reporting --------------------------------------------------------------------------
    async def progress(self, current: int, total: int | None = None) -> None:
        if isinstance(current, bool) or not isinstance(current, int) or current < 0:
            raise ValueError("progress current must be a non-negative int")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
            raise ValueError("progress total must be an int or None")
        if total is not None and total < 0:
            raise ValueError("progress total must not be negative")
        if total is not None and current > total:
            raise ValueError(f"progress current {current} is beyond the total {total}")
        if max(current, total or 0) > MAX_PROGRESS:  # the stores keep 64-bit integers
            raise ValueError(f"progress must be at most {MAX_PROGRESS}")
        await self._report(
            self._step_status(), None, progress_current=current, progress_total=total
        )

    async def message(self, text: str) -> None:
        text = clean_text(text, MAX_MESSAGE)
        if not text.strip():
            return
        await self._report(self._step_status(), (Level.INFO, text), message=text)

    async def log(self, text: str, level: Level = Level.INFO) -> None:
        await self._report(None, (Level(level), clean_text(text, MAX_LOG_TEXT)))

    async def warning(self, text: str) -> None:
        text = clean_text(text, MAX_MESSAGE)
        fields = {"warnings": self._thread.warnings + 1, "message": text or self._thread.message}
        await self._report(Status.WARNING, (Level.WARN, text or "Warning"), **fields)

    async def error(self, text: str) -> None:
        text = clean_text(text, MAX_MESSAGE)
        fields = {"errors": self._thread.errors + 1, "message": text or self._thread.message}
        await self._report(Status.ERROR, (Level.ERROR, text or "Error"), **fields)

    @contextlib.asynccontextmanager
    async def result_file(
        self, name: str, media_type: str = "application/octet-stream"
    ) -> AsyncIterator[BinaryIO]:
        """Write the thread's result as it is produced, into a binary file on disk.

        Writes block, so write large results from `ctx.run_sync`. The file is put into the
        file storage whole when the block ends. The result is offered once
        the thread ends (whatever its final status); a new result replaces an earlier one."""
        with self._files.writer(self.thread_id) as (out, written):
            yield out
        size = await self._files.keep(self.thread_id, written)
        self._result = Result(self.thread_id, media_type, size, download_name(name))

    async def set_result(
        self, data: bytes | str, media_type: str = "text/plain", name: str = "result.txt"
    ) -> None:
        """A small result given whole (text is stored as UTF-8)."""
        body = data.encode() if isinstance(data, str) else data
        async with self.result_file(name, media_type) as out:
            await anyio.to_thread.run_sync(out.write, body)

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking `fn(*args)` in a worker thread; it may report through `ctx.sync` and
        should call `ctx.check_cancelled()` between steps. A cancel (or time-out) waits for it
        to return, as nothing can stop it from outside: the thread ends, and frees its slot,
        only then (were it abandoned, it would go on using the CPU of a freed slot). A shutdown
        does not wait: the process is ending."""
        work = asyncio.ensure_future(anyio.to_thread.run_sync(fn, *args))
        work.add_done_callback(_retrieved)  # after a cancel, the cancel is what the job ends with
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            while not (work.done() or self._abandon):  # the runner cancels again to abandon
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([work])
            raise

    # -- for the runner ---------------------------------------------------------------------
    def _step_status(self) -> Status | None:
        return Status.INPROGRESS if self._thread.status in (Status.WARNING, Status.ERROR) else None

    async def _report(
        self, status: Status | None, event: tuple[Level, str] | None, **fields: Any
    ) -> None:
        if self._thread.final:
            raise RuntimeError("the thread has ended; it can report nothing more")
        self._apply(status, event, **fields)
        now = time.monotonic()
        if self._writer.congested:
            await self._writer.flush()
            self._yielded = now
        elif now - self._yielded >= YIELD_EVERY:
            await asyncio.sleep(0)  # a turn for requests, other jobs and a pending cancel
            self._yielded = now

    async def _attempt_failed(self, failed: int, attempts: int, reason: str, delay: float) -> None:
        """Attempt `failed` of `attempts` failed for `reason` (failure_text): a WARN event, and
        the message says when the next attempt starts; the thread stays running."""
        reason = clean_text(reason, 1000)
        when = iso(now_ms() + round(delay * 1000))
        text = (
            f"Attempt {failed} of {attempts} failed: {reason}; "
            f"the next starts at {when} (in {delay:g} s)"
        )
        await self._report(Status.INPROGRESS, (Level.WARN, text), message=clean_text(text, MAX_MESSAGE))

    def _stopping(self, text: str) -> None:
        """The runner asked the job to stop (a cancel, a time-out): say so until its code has
        stopped; the status stays running, as the code still runs."""
        if not self._thread.final and self._thread.message != text:
            self._apply(None, None, message=text)

    def _apply(self, status: Status | None, event: tuple[Level, str] | None, **fields: Any) -> None:
        now = now_ms()
        events = []
        if status is Status.INPROGRESS and self._thread.status is not Status.INPROGRESS:
            # back from a transitory warning/error: a status change, so logged too
            events.append(self._event(Level.INFO, "Status: inprogress", now))
        if event is not None:
            events.append(self._event(event[0], event[1], now))
        changed = status is not None and status is not self._thread.status
        if status is not None:
            fields["status"] = status
        if fields:
            fields["version"] = self._thread.version + 1
            self._thread = dataclasses.replace(self._thread, **fields)
        for extra in events[:-1]:
            self._writer.put(None, extra)
        if fields or events:
            self._writer.put(self._thread if fields else None, events[-1] if events else None, changed)

    def _event(self, level: Level, text: str, now: int) -> NewLogEvent:
        event = NewLogEvent(self._thread.id, LogEvent(self._seq, now, level, text))
        self._seq += 1
        return event

    def _finish(self, status: Status, message: str | None, level: Level, text: str) -> Thread:
        """Record the final status (with its log event); the runner flushes afterwards."""
        assert status.final and self._thread.status in RUNNING
        now = now_ms()
        message = clean_text(message, MAX_MESSAGE) if message else self._thread.message
        event = self._event(level, clean_text(text, MAX_LOG_TEXT), now)
        result = self._result
        if result is not None:
            result = dataclasses.replace(result, deletion=now + self._result_ttl * 1000)
        self._thread = dataclasses.replace(
            self._thread, status=status, message=message, ended=now,
            version=self._thread.version + 1, result=result,
        )
        self._writer.put(self._thread, event, status_changed=True)
        return self._thread

    def _started(self, next_seq: int, text: str) -> None:
        """The log goes on at `next_seq` (known once the thread is claimed)."""
        self._seq = next_seq
        # The claim stored the new status; putting the thread again publishes it to watchers.
        self._writer.put(self._thread, self._event(Level.INFO, text, now_ms()))

    def _request_cancel(self, abandon: bool = False) -> None:
        """`abandon`: the server is shutting down; blocking code is not waited for."""
        self._cancel = True
        self._abandon = self._abandon or abandon


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class SyncContext:
    """The Context's reports for blocking code running in `ctx.run_sync` worker threads; once
    the thread was asked to stop, each raises JobCancelled (the job's code cannot be stopped
    otherwise, and its slot stays taken until it returns)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def progress(self, current: int, total: int | None = None) -> None:
        self._ctx.check_cancelled()
        anyio.from_thread.run(self._ctx.progress, current, total)

    def message(self, text: str) -> None:
        self._ctx.check_cancelled()
        anyio.from_thread.run(self._ctx.message, text)

    def log(self, text: str, level: Level = Level.INFO) -> None:
        self._ctx.check_cancelled()
        anyio.from_thread.run(self._ctx.log, text, level)

    def warning(self, text: str) -> None:
        self._ctx.check_cancelled()
        anyio.from_thread.run(self._ctx.warning, text)

    def error(self, text: str) -> None:
        self._ctx.check_cancelled()
        anyio.from_thread.run(self._ctx.error, text)
