"""The server's answers as the Python client reads them (docs/api.md#the-thread-document, #lists, #errors): each document, parsed
by the hardened parser, becomes a frozen dataclass. Lenient: a missing or malformed optional part
is None (or 0), so that a newer server's extra attributes and elements are simply ignored."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from threadsvc.errors import ThreadsvcError
from threadsvc.xml.parse import parse_body
from threadsvc.xml.render import text_line

FINAL = frozenset({"completed", "failed", "cancelled"})


class Unreadable(ValueError):
    """The answer is not the XML document expected."""


@dataclass(frozen=True)
class ThreadInfo:
    """One `<thread>` element (docs/api.md#the-thread-document). Optional parts are None when absent."""

    id: str
    name: str
    username: str
    groupid: int
    status: str
    type: str | None = None
    created: str | None = None
    started: str | None = None
    ended: str | None = None
    warnings: int = 0
    errors: int = 0
    message: str | None = None
    current: int | None = None
    total: int | None = None
    percent: int | None = None
    result_href: str | None = None
    result_media_type: str | None = None
    result_size: int | None = None
    result_expires: str | None = None
    result_deletion: str | None = None
    node: str | None = None
    heartbeat: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass(frozen=True)
class ThreadList:
    total: int
    page: int
    pagesize: int
    threads: tuple[ThreadInfo, ...] = ()


@dataclass(frozen=True)
class LogEntry:
    seq: int
    timestamp: int  # epoch ms
    datetime: str  # ISO 8601 UTC
    level: str
    text: str

    def line(self) -> str:
        """`DATETIME LEVEL text` on one line, as the server's text log writes it."""
        return f"{self.datetime} {self.level} {text_line(self.text)}"


@dataclass(frozen=True)
class LogPage:
    thread: str
    total: int
    next: int
    more: bool
    events: tuple[LogEntry, ...] = field(default=())


@dataclass(frozen=True)
class ErrorAnswer:
    """An `<error id>` document (docs/api.md#formats)."""

    id: str
    message: str | None
    request: str


def read_thread(body: bytes) -> ThreadInfo:
    return _thread(_root(body, "thread"))


def read_threads(body: bytes) -> ThreadList:
    el = _root(body, "threads")
    return ThreadList(
        total=_int(el.get("total")) or 0,
        page=_int(el.get("page")) or 1,
        pagesize=_int(el.get("pagesize")) or 0,
        threads=tuple(_thread(t) for t in el if t.tag == "thread"),
    )


def read_logs(body: bytes, thread_id: str) -> LogPage:
    el = _root(body, "logs")
    return LogPage(
        thread=el.get("thread", thread_id),
        total=_int(el.get("total")) or 0,
        next=_int(el.get("next")) or 0,
        more=el.get("more") == "true",
        events=tuple(_entry(e) for e in el if e.tag == "event"),
    )


def read_cancel(body: bytes) -> ThreadInfo | None:
    """`<thread-cancel>`: the thread as it stands, or None for the empty answer."""
    found = _root(body, "thread-cancel").find("thread")
    return _thread(found) if found is not None else None


def read_error(body: bytes) -> ErrorAnswer | None:
    """The error document, or None when the body is not one."""
    try:
        el = _root(body, "error")
    except Unreadable:
        return None
    return ErrorAnswer(el.get("id", ""), el.findtext("message"), el.findtext("request") or "")


def _root(body: bytes, tag: str) -> etree._Element:
    try:
        el = parse_body(body, "response")
    except ThreadsvcError as exc:
        raise Unreadable(f"unreadable answer: {exc}") from None
    if el.tag != tag:
        raise Unreadable(f"expected <{tag}>, got <{el.tag!s}>")
    return el


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _thread(el: etree._Element) -> ThreadInfo:
    message = el.find("message")
    progress = el.find("progress")
    result = el.find("result")
    return ThreadInfo(
        id=el.get("id", ""),
        name=el.get("name", ""),
        username=el.get("username", ""),
        groupid=-1 if (group := _int(el.get("groupid"))) is None else group,
        status=el.get("status", ""),
        type=el.get("type"),
        created=el.get("created"),
        started=el.get("started"),
        ended=el.get("ended"),
        warnings=_int(el.get("warnings")) or 0,
        errors=_int(el.get("errors")) or 0,
        message=message.text if message is not None else None,
        current=_int(progress.get("current")) if progress is not None else None,
        total=_int(progress.get("total")) if progress is not None else None,
        percent=_int(progress.get("percent")) if progress is not None else None,
        result_href=result.get("href") if result is not None else None,
        result_media_type=result.get("media-type") if result is not None else None,
        result_size=_int(result.get("size")) if result is not None else None,
        result_expires=result.get("expires") if result is not None else None,
        result_deletion=result.get("deletion") if result is not None else None,
        node=el.get("node"),
        heartbeat=el.get("heartbeat"),
    )


def _entry(el: etree._Element) -> LogEntry:
    return LogEntry(
        seq=_int(el.get("seq")) or 0,
        timestamp=_int(el.get("timestamp")) or 0,
        datetime=el.get("datetime", ""),
        level=el.get("level", ""),
        text=el.text or "",
    )
