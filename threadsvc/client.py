"""A client of threadsvc's thread services (docs/api.md#services, #lists, #starting-a-thread), on httpx.

    async with AsyncClient("http://127.0.0.1:8080", username="u", password="p", group="dev") as c:
        thread = await c.start("sleep", {"seconds": "2", "result": "hi"})
        final = await c.wait(thread.id, on_progress=print)
        await c.download(thread.id, "result.txt")

`Client` is the same with plain (blocking) methods; each call runs the async one with
`anyio.run` on a fresh connection, so a `Client` needs no closing and no thread of its own.

Every answer is XML read by the project's hardened parser. An error document from the server
raises `ClientError(status, error_id, message)`; a failed connection raises `ConnectionFailed`.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import IO, Any, Self, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import anyio
import httpx

from threadsvc.xml.answers import (
    FINAL,
    LogEntry,
    LogPage,
    ThreadInfo,
    ThreadList,
    Unreadable,
    read_cancel,
    read_error,
    read_logs,
    read_thread,
    read_threads,
)

__all__ = [
    "FINAL",
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "LogEntry",
    "LogPage",
    "NotFinished",
    "ThreadInfo",
    "ThreadList",
    "ThreadsvcClientError",
    "WaitTimeout",
]

SERVICE = "/ps/service"
MAX_WAIT = 60  # the server's limit on ?wait=N
CHUNK = 64 * 1024
T = TypeVar("T")

FileValue = str | os.PathLike[str] | bytes
Files = Mapping[str, FileValue | Sequence[FileValue]]
ProgressCallback = Callable[["ThreadInfo"], Any]


# -- errors ---------------------------------------------------------------------------------------
class ThreadsvcClientError(Exception):
    """Anything this client raises on purpose."""


class ClientError(ThreadsvcClientError):
    """The server answered with an error: its HTTP status, error id (e.g. "0203") and message.

    `retry_after` is the server's Retry-After in seconds (429 and 503), else None."""

    def __init__(
        self,
        status: int,
        error_id: str,
        message: str,
        request: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} [{error_id or '-'}] {message}")
        self.status = status
        self.error_id = error_id
        self.message = message
        self.request = request
        self.retry_after = retry_after


class ConnectionFailed(ThreadsvcClientError):
    """The server could not be reached, or the connection broke."""


class NotFinished(ThreadsvcClientError):
    """A result was asked for while the thread is still running; `thread` is its state."""

    def __init__(self, thread: ThreadInfo) -> None:
        super().__init__(f"thread {thread.id} is not finished (status {thread.status})")
        self.thread = thread


class WaitTimeout(ThreadsvcClientError, TimeoutError):
    """`wait` gave up before the thread reached a final status; `thread` is its last state."""

    def __init__(self, thread: ThreadInfo, seconds: float) -> None:
        super().__init__(f"thread {thread.id} still {thread.status} after {seconds:g} s")
        self.thread = thread


def _read(response: httpx.Response, reader: Callable[[bytes], T]) -> T:
    """The response's document, as `reader` (of threadsvc.xml.answers) makes it."""
    try:
        return reader(response.content)
    except Unreadable as exc:
        raise ClientError(response.status_code, "", str(exc)) from None


def _raise_for_error(response: httpx.Response) -> None:
    """Raise ClientError for any status >= 400, with the server's error document if any."""
    if response.status_code < 400:
        return
    status = response.status_code
    retry_after: float | None = None
    with contextlib.suppress(ValueError):
        retry_after = float(response.headers.get("retry-after", ""))
    error = read_error(response.content)
    if error is not None:
        message = error.message or response.reason_phrase
        raise ClientError(status, error.id, message, error.request, retry_after)
    text = response.text.strip()[:200] if response.content else ""
    message = text or response.reason_phrase or f"HTTP {status}"
    raise ClientError(status, "", message, retry_after=retry_after)


def _unexpected(response: httpx.Response) -> ClientError:
    return ClientError(
        response.status_code, "", f"unexpected HTTP {response.status_code} from {response.url}"
    )


class Options(TypedDict, total=False):
    """How both clients reach the server: as whom (a username and password, or a token), in
    which group (none: server level), and how long a call may take (seconds, default 30)."""

    username: str | None
    password: str | None
    token: str | None
    group: str | None
    timeout: float


def _credentials(options: Options) -> tuple[str | None, str | None]:
    """The username and token, once checked that not both are given."""
    username, token = options.get("username"), options.get("token")
    if token is not None and username is not None:
        raise ValueError("give a token or a username and password, not both")
    return username, token


def _next_page(page: LogPage, since: int) -> int | None:
    """The `since` of the page after `page`; None when it was the last (or the server would
    send the same page again)."""
    return page.next if page.more and page.next > since else None


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


# -- the async client -----------------------------------------------------------------------------
class AsyncClient:
    """A client of one server, as one user, in one group (or at server level without a group)."""

    def __init__(self, base_url: str, **options: Unpack[Options]) -> None:
        username, token = _credentials(options)
        auth: httpx.Auth | None = None
        if token is not None:
            auth = _Bearer(token)
        elif username is not None:
            auth = httpx.BasicAuth(username, options.get("password") or "")
        self.base_url = base_url.rstrip("/")
        self.group = options.get("group")
        self.timeout = timeout = options.get("timeout", 30)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            auth=auth,
            timeout=timeout,
            headers={"Accept": "application/xml"},
            follow_redirects=False,
        )
        # thread id -> (progress URL, result URL), as the server sent them on start.
        self._urls: dict[str, tuple[str, str]] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- plumbing
    def _threads_path(self) -> str:
        if self.group is None:
            return f"{SERVICE}/threads"
        return f"{SERVICE}/groups/{quote(self.group, safe='')}/threads"

    def _thread_path(self, thread_id: str, what: str = "") -> str:
        path = f"{self._threads_path()}/{quote(thread_id, safe='')}"
        return f"{path}/{what}" if what else path

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{method} {url}: {exc or type(exc).__name__}") from exc

    # -- the services
    async def start(
        self,
        job: str,
        params: Mapping[str, str] | None = None,
        files: Files | None = None,
        idempotency_key: str | None = None,
    ) -> ThreadInfo:
        """Start `job` with its parameters (form fields) and files (multipart); 202 expected."""
        data = {"job": job, **{k: str(v) for k, v in (params or {}).items()}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        opened: list[IO[bytes]] = []
        try:
            upload = _multipart(files, opened) if files else None
            response = await self._request(
                "POST", self._threads_path(), data=data, files=upload, headers=headers
            )
        finally:
            for handle in opened:
                handle.close()
        _raise_for_error(response)
        if response.status_code != 202:
            raise _unexpected(response)
        thread = _read(response, read_thread)
        progress = response.headers.get("content-location")
        result = response.headers.get("location")
        if progress and result:
            self._urls[thread.id] = (
                str(response.url.join(progress)), str(response.url.join(result))
            )
        return thread

    def _progress_url(self, thread_id: str) -> str:
        known = self._urls.get(thread_id)
        return known[0] if known else self._thread_path(thread_id, "progress")

    def _result_url(self, thread_id: str) -> str:
        known = self._urls.get(thread_id)
        return known[1] if known else self._thread_path(thread_id, "result")

    async def get(self, thread_id: str) -> ThreadInfo:
        """The task resource: the thread, whether it answers 200 or 303 to its result."""
        response = await self._request("GET", self._thread_path(thread_id))
        _raise_for_error(response)
        if response.status_code not in (200, 303):
            raise _unexpected(response)
        return _read(response, read_thread)

    async def progress(self, thread_id: str) -> ThreadInfo:
        response = await self._request("GET", self._progress_url(thread_id))
        _raise_for_error(response)
        if response.status_code != 200:
            raise _unexpected(response)
        return _read(response, read_thread)

    async def list_threads(
        self,
        status: str | None = None,
        *,
        username: str | None = None,
        type: str | None = None,
        page: int | None = None,
        pagesize: int | None = None,
    ) -> ThreadList:
        """One page of threads, newest first; `status` as the server takes it (default active)."""
        query = {"status": status, "username": username, "type": type,
                 "page": page, "pagesize": pagesize}
        params = {k: str(v) for k, v in query.items() if v is not None}
        response = await self._request("GET", self._threads_path(), params=params)
        _raise_for_error(response)
        return _read(response, read_threads)

    async def wait(
        self,
        thread_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (the client's public API; it bounds the polls)
        poll: int = 30,
    ) -> ThreadInfo:
        """Long-poll the progress until a final status; returns the final state.

        `on_progress` (a function or coroutine function) gets the first state and each changed
        one. Raises WaitTimeout after `timeout` seconds."""
        poll = max(1, min(poll, MAX_WAIT))
        deadline = None if timeout is None else time.monotonic() + timeout
        url = self._progress_url(thread_id)
        etag: str | None = None
        thread: ThreadInfo | None = None
        while thread is None or not thread.final:
            seconds = poll
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and thread is not None:
                    raise WaitTimeout(thread, timeout or 0)
                seconds = max(0, min(poll, math.ceil(remaining)))
            headers: dict[str, str] = {}
            params: dict[str, str] = {}
            if etag is not None:
                headers["If-None-Match"] = etag
                params["wait"] = str(seconds)
            read = httpx.Timeout(self.timeout, read=self.timeout + seconds)
            response = await self._request(
                "GET", url, headers=headers, params=params, timeout=read
            )
            _raise_for_error(response)
            etag = response.headers.get("etag") or etag
            if response.status_code == 304:
                continue
            if response.status_code != 200:
                raise _unexpected(response)
            thread = _read(response, read_thread)
            if etag is None:  # a server without ETags: poll gently rather than spin
                await anyio.sleep(1)
            if on_progress is not None:
                outcome = on_progress(thread)
                if inspect.isawaitable(outcome):
                    await outcome
        return thread

    async def logs_page(
        self,
        thread_id: str,
        *,
        since: int = 0,
        level: str | None = None,
        limit: int | None = None,
        text: str | None = None,
    ) -> LogPage:
        """One page of the log: events with seq > since, oldest first (with `text`, those
        holding it, A-Z in either case)."""
        query = {"since": since or None, "level": level, "limit": limit, "text": text or None}
        params = {k: str(v) for k, v in query.items() if v is not None}
        response = await self._request("GET", self._thread_path(thread_id, "logs"), params=params)
        _raise_for_error(response)
        return _read(response, lambda body: read_logs(body, thread_id))

    async def logs(
        self,
        thread_id: str,
        level: str | None = None,
        *,
        since: int = 0,
        page_size: int | None = None,
        text: str | None = None,
    ) -> AsyncIterator[LogEntry]:
        """Every event of the log (at `level` or above, holding `text`), paging with
        `since`=`next`."""
        after: int | None = since
        while after is not None:
            page = await self.logs_page(thread_id, since=after, level=level, limit=page_size,
                                        text=text)
            for event in page.events:
                yield event
            after = _next_page(page, after)

    async def cancel(self, thread_id: str) -> ThreadInfo | None:
        """The thread as it stands after the request; None when there is no such thread."""
        response = await self._request("POST", self._thread_path(thread_id, "cancel"))
        _raise_for_error(response)
        return _read(response, read_cancel)

    async def download(self, thread_id: str, path: str | os.PathLike[str]) -> Path | None:
        """Save the thread's result to `path`, streamed; None when it completed without one.

        Raises NotFinished while the thread runs, ClientError for 409 (failed or cancelled
        without a result), 410 (result deleted) and any other error."""
        response = await self._request("GET", self._result_url(thread_id))
        _raise_for_error(response)
        if response.status_code == 204:
            return None
        if response.status_code == 202:
            raise NotFinished(_read(response, read_thread))
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise _unexpected(response)
        url = str(response.url.join(location))
        target = Path(path)
        partial_path = target.with_name(target.name + ".part")
        # The pre-signed URL needs no credentials: none are sent (it may be another host).
        try:
            async with self._http.stream(
                "GET", url, auth=None, headers={"Accept": "*/*"}
            ) as stream:
                if stream.status_code >= 400:
                    await stream.aread()
                    _raise_for_error(stream)
                if stream.status_code != 200:
                    raise _unexpected(stream)
                async with await anyio.open_file(partial_path, "wb") as out:
                    async for chunk in stream.aiter_bytes(CHUNK):
                        await out.write(chunk)
        except httpx.TransportError as exc:
            await anyio.Path(partial_path).unlink(missing_ok=True)
            raise ConnectionFailed(f"GET result of {thread_id}: {exc}") from exc
        except BaseException:
            await anyio.Path(partial_path).unlink(missing_ok=True)
            raise
        await anyio.Path(partial_path).replace(target)
        return target


def _multipart(files: Files, opened: list[IO[bytes]]) -> list[tuple[str, tuple[str, Any]]]:
    """httpx multipart fields; files named by path are opened (and streamed) here."""
    fields: list[tuple[str, tuple[str, Any]]] = []
    for name, value in files.items():
        values: list[FileValue] = (
            [value] if isinstance(value, str | bytes | os.PathLike) else list(value)
        )
        for item in values:
            if isinstance(item, bytes):
                fields.append((name, (name, item)))
            else:
                handle = open(item, "rb")  # noqa: SIM115 - closed by the caller
                opened.append(handle)
                fields.append((name, (Path(item).name, handle)))
    return fields


# -- the blocking client --------------------------------------------------------------------------
class Client:
    """The same methods as AsyncClient, blocking: each call is one `anyio.run`."""

    def __init__(self, base_url: str, **options: Unpack[Options]) -> None:
        _credentials(options)
        self._base_url, self._options = base_url, options
        self._urls: dict[str, tuple[str, str]] = {}  # shared by the calls, as in AsyncClient

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own connections."""

    @property
    def group(self) -> str | None:
        return self._options.get("group")

    def _run(self, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with AsyncClient(self._base_url, **self._options) as client:
                client._urls = self._urls
                return await call(client)

        return anyio.run(main)

    def start(
        self,
        job: str,
        params: Mapping[str, str] | None = None,
        files: Files | None = None,
        idempotency_key: str | None = None,
    ) -> ThreadInfo:
        return self._run(lambda c: c.start(job, params, files, idempotency_key))

    def get(self, thread_id: str) -> ThreadInfo:
        return self._run(lambda c: c.get(thread_id))

    def progress(self, thread_id: str) -> ThreadInfo:
        return self._run(lambda c: c.progress(thread_id))

    def list_threads(self, status: str | None = None, **kwargs: Any) -> ThreadList:
        return self._run(lambda c: c.list_threads(status, **kwargs))

    def wait(
        self,
        thread_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        poll: int = 30,
    ) -> ThreadInfo:
        return self._run(
            lambda c: c.wait(thread_id, on_progress=on_progress, timeout=timeout, poll=poll)
        )

    def logs_page(self, thread_id: str, **kwargs: Any) -> LogPage:
        return self._run(lambda c: c.logs_page(thread_id, **kwargs))

    def logs(
        self,
        thread_id: str,
        level: str | None = None,
        *,
        since: int = 0,
        page_size: int | None = None,
        text: str | None = None,
    ) -> Iterator[LogEntry]:
        """Every event (at `level` or above, holding `text`), one `anyio.run` per page."""
        after: int | None = since
        while after is not None:
            page = self.logs_page(thread_id, since=after, level=level, limit=page_size,
                                  text=text)
            yield from page.events
            after = _next_page(page, after)

    def cancel(self, thread_id: str) -> ThreadInfo | None:
        return self._run(lambda c: c.cancel(thread_id))

    def download(self, thread_id: str, path: str | os.PathLike[str]) -> Path | None:
        return self._run(lambda c: c.download(thread_id, path))
