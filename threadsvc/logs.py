"""The server's log: one line per record, access and application lines alike, as text or as
one JSON object, with a UTC timestamp and the request id of the request being served; the
lines are written by one thread, off the request path.

Threat model: clients choose much of what is logged (paths, request ids, usernames, the text
of errors). No client may forge a line: a JSON line is one object (json.dumps escapes every
control character); in text, the access line's fields are escaped by threadsvc.web.access and
an application message's further lines are indented, so no line a client wrote starts with a
timestamp. Result-link tokens are redacted (logredact) and repeated warnings limited
(logrepeat) on every line, before it is formatted. A log that cannot be written as fast as
lines come (a stalled pipe) must not grow the server's memory without bound, nor hold the
server: past MAX_QUEUED lines waiting, lines are dropped and the next line written says how
many, and a line that waits to be written waits WAIT_SECONDS at most.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import queue
import sys
import threading
import time
from typing import Any, TextIO

from threadsvc.logredact import RedactResultLinks
from threadsvc.logrepeat import RepeatLimit
from threadsvc.settings import Settings

ACCESS = "threadsvc.access"
# The fields of an access line, in the order of the record's args (threadsvc.web.access).
ACCESS_FIELDS = ("client", "user", "method", "path", "status", "bytes", "duration_ms")
ACCESS_TEXT = '%s %s "%s %s" %d %d %.1fms'
MAX_QUEUED = 100_000  # lines waiting for the writer; beyond, dropped and counted
BATCH = 4096  # lines written at once, at most
# After a write, the writer lets access lines gather this long: one wake-up of its thread (and
# one hand-over of the GIL) a batch rather than a request. Any other line is written at once.
GATHER_SECONDS = 0.05
WAIT_SECONDS = 0.25  # the most a line other than an access line waits to be written

# The id of the request being served, for every line logged while serving it.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "threadsvc_request_id", default=None)


class AccessLine(logging.LogRecord):
    """An access line's record, made in a fraction of a LogRecord's time: what a LogRecord
    works out for every record (the caller, process, thread) is fixed here, for an access line
    is always written by threadsvc.web.access on the event loop. Every attribute is the
    instance's own, as %-style formatters read them from its __dict__."""

    _FIXED: dict[str, Any] = {  # noqa: RUF012 (read, never changed)
        "name": ACCESS, "msg": ACCESS_TEXT, "levelno": logging.INFO, "levelname": "INFO",
        "pathname": "", "filename": "", "module": "", "funcName": "", "lineno": 0,
        "exc_info": None, "exc_text": None, "stack_info": None, "thread": None,
        "threadName": None, "process": None, "processName": None, "taskName": None,
        "relativeCreated": 0.0,
    }

    def __init__(self, args: tuple[Any, ...], rid: str) -> None:
        self.__dict__.update(self._FIXED)
        self.args = args
        self.request_id = rid
        self.created = time.time()
        self.msecs = (self.created * 1000) % 1000


class _Timestamps:
    """ISO 8601 UTC with milliseconds; the part up to the second is made once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # a race here only makes the same prefix twice
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-01-31T12:00:00.123Z INFO logger [request-id]: message`; further lines (a
    traceback, a message with newlines) indented."""

    def __init__(self) -> None:
        super().__init__()
        self.timestamp = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if not message.isprintable():  # a newline, or what a terminal or reader takes for one
            message = "\n    ".join(_escaped(part) for part in message.split("\n"))
        rid = getattr(record, "request_id", None) or request_id.get()
        where = f"{record.name} [{rid}]" if rid else record.name
        return f"{self.timestamp(record.created)} {record.levelname} {where}: {message}"


def _escaped(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else ascii(c)[1:-1] for c in text)


class JsonFormatter(logging.Formatter):
    """One object: ts, level, logger, message, request_id when serving one, the access line's
    fields, and `exception` (the traceback) when there is one."""

    def __init__(self) -> None:
        super().__init__()
        self.timestamp = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            line["request_id"] = rid
        if record.name == ACCESS and isinstance(record.args, tuple):
            line.update(zip(ACCESS_FIELDS, record.args, strict=False))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return _to_json(line)


_to_json = json.JSONEncoder(default=str).encode


class LineWriter:
    """Writes the lines handed to it from one thread, many at a time. An access line is
    queued and written within GATHER_SECONDS; any other line is written, after every line
    before it, before `put` returns (for at most WAIT_SECONDS): a process that ends right after
    (uvicorn re-raises SIGTERM once it has stopped) loses none of them."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter) -> None:
        self.stream = stream
        self.formatter = formatter  # for its own line, saying how many were dropped
        self.dropped = 0
        # lines; an Event to set once the lines before it are written; None: stop
        self._queue: queue.SimpleQueue[str | threading.Event | None] = queue.SimpleQueue()
        self._now = threading.Event()  # a line that is not to wait has come
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, line: str, gather: bool = False) -> None:
        if self._queue.qsize() >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.put(line)
        if gather or threading.current_thread() is self._thread:
            return
        written = threading.Event()
        self._queue.put(written)
        self._now.set()
        written.wait(WAIT_SECONDS)

    def close(self, timeout: float = 5.0) -> None:
        """Writes what is waiting, then stops."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._now.set()
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            lines: list[str] = []
            waiting: list[threading.Event] = []
            item = self._queue.get()
            while item is not None:
                if isinstance(item, threading.Event):
                    waiting.append(item)
                else:
                    lines.append(item)
                if len(lines) >= BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if self.dropped:
                dropped, self.dropped = self.dropped, 0
                lines.append(self.formatter.format(logging.LogRecord(
                    "threadsvc.logs", logging.WARNING, "", 0,
                    "%d log lines dropped: the log was not written as fast as they came",
                    (dropped,), None)))
            self._write(lines)
            for written in waiting:
                written.set()
            if item is None:
                return
            if len(lines) < BATCH:  # else more are waiting: on at once
                self._now.wait(GATHER_SECONDS)
            self._now.clear()

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe): nothing to tell
            pass


class QueuedLines(logging.Handler):
    """Filters and formats a record in the thread that logs it (its arguments may change
    afterwards), then hands the line to the writer."""

    def __init__(self, writer: LineWriter, formatter: logging.Formatter) -> None:
        super().__init__()
        self.writer = writer
        self.setFormatter(formatter)

    def handle(self, record: logging.LogRecord) -> bool:
        # No lock: formatting holds no shared state, and the queue is thread-safe.
        passed = self.filter(record)
        if not passed:
            return False
        self.emit(passed if isinstance(passed, logging.LogRecord) else record)  # 3.12: a copy
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.put(self.format(record), gather=isinstance(record, AccessLine))
        except Exception:  # noqa: BLE001 (as logging's own handlers: a bad record is reported)
            self.handleError(record)


def setup(settings: Settings, stream: TextIO | None = None) -> LineWriter:
    """The root logger writes every line (uvicorn's and threadsvc's) in `log-format` from
    `log-level` up, to `stream` (standard error)."""
    formatter = JsonFormatter() if settings.log_format == "json" else TextFormatter()
    writer = LineWriter(stream if stream is not None else sys.stderr, formatter)
    handler = QueuedLines(writer, formatter)
    handler.addFilter(RedactResultLinks())
    handler.addFilter(RepeatLimit())  # e.g. asyncio's, should accept() ever fail again
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    atexit.register(writer.close)
    return writer
