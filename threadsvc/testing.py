"""Test support for job authors: run a job for real, or call it with a fake context.

- `run_job(spec, params, files)` (and `JobRunner.run`, and `Harness` for async tests) runs one
  job in this process with the server's own runner, service and status rules over a real SQLite
  store in a temporary directory, and returns its `Outcome`: final status, message, progress,
  log events, result bytes and media type. Parameters go through the job's declared parameters
  exactly as a form's fields would, so a bad one raises the `BadParameter` a 400 would name.
- `FakeContext` is a `Context` that stores nothing and records every report, for pure unit
  tests of a job function: `await call(spec, ctx)`.
- The pytest fixture `job_runner` (this module is a pytest plugin, registered by the entry point
  `threadsvc`) gives a `JobRunner` in the test's temporary directory.

Threat model: none of its own. This is test code: it runs the job it is given with the rights
of an administrator and keeps everything under a temporary directory it removes afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Self

import anyio
import anyio.lowlevel
import anyio.to_thread

from threadsvc.changes import Changes
from threadsvc.files.local import LocalFiles
from threadsvc.files.scratch import Scratch
from threadsvc.models import (
    SERVER_GROUP_ID,
    Group,
    Level,
    LogEvent,
    Principal,
    Result,
    Scope,
    Status,
    Thread,
    User,
    now_ms,
)
from threadsvc.results import ResultFiles, ResultLinks, download_name
from threadsvc.runner.clock import ClockCheck
from threadsvc.runner.context import Context, SyncContext
from threadsvc.runner.registry import JobSpec, Registry
from threadsvc.runner.runner import Runner
from threadsvc.runner.supervisor import Supervisor
from threadsvc.service import Service
from threadsvc.settings import Settings
from threadsvc.store.sqlite import SQLiteStore
from threadsvc.uploads import InputFile, Upload, Uploads

__all__ = [
    "FakeContext", "Harness", "JobRunner", "Outcome", "call", "job_runner", "run_job",
]

GROUP = "testing"  # the group group-level threads run in
TESTER = Principal(User(1, "tester", True))  # an administrator: every job may be started
POLL_SECONDS = 0.01

# A file for a `File` parameter: its bytes (named after the parameter), a path, or
# (file name, bytes) or (file name, bytes, media type); a list of them for `multiple`.
FileValue = bytes | Path | tuple[str, bytes] | tuple[str, bytes, str]
Params = Mapping[str, Any] | None  # a job's parameters, as Python values
Files = Mapping[str, FileValue | list[FileValue]] | None  # its uploads, by parameter


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a thread ended, as a client would see it."""

    thread: Thread
    events: list[LogEvent]  # its whole log, oldest first
    result: bytes | None  # the result's bytes; None when it left none
    media_type: str | None
    result_name: str | None  # the file name downloads are offered

    @property
    def status(self) -> Status:
        return self.thread.status

    @property
    def message(self) -> str | None:
        return self.thread.message

    @property
    def progress(self) -> tuple[int | None, int | None]:
        """(current, total) as last reported."""
        return self.thread.progress_current, self.thread.progress_total

    @property
    def warnings(self) -> int:
        return self.thread.warnings

    @property
    def errors(self) -> int:
        return self.thread.errors

    def logs(self, level: Level = Level.DEBUG, *, only: bool = False) -> list[str]:
        """The texts of the log events at `level` or above (exactly `level` with `only`)."""
        return [
            event.text for event in self.events
            if (event.level is level if only else event.level >= level)
        ]

    def json(self) -> Any:
        """The result parsed as JSON."""
        assert self.result is not None, f"the thread left no result: {self.thread.message}"
        return json.loads(self.result)


class Harness:
    """A runner, a service and a SQLite store in `directory`, for async tests:
    `async with Harness(tmp_path, [my_job]) as harness: outcome = await harness.run(...)`.

    Jobs given by name are looked up among the installed ones (built-in, the entry point
    group `threadsvc.jobs`); `jobs` adds others. `settings` are `Settings` fields
    (`max_running=2`, `result_ttl=60`...). A wait longer than `timeout` seconds raises
    TimeoutError."""

    def __init__(
        self, directory: Path, jobs: Iterable[JobSpec] = (), *, timeout: float = 60.0,
        **settings: Any,
    ) -> None:
        self.directory = Path(directory)
        self.timeout = timeout
        self._jobs = list(jobs)
        self.settings = Settings(**{
            "data_dir": str(self.directory / "data"), "shutdown_grace": 1.0, **settings,
        })
        self._stack = contextlib.AsyncExitStack()
        self.store: SQLiteStore
        self.runner: Runner
        self.service: Service
        self.files: ResultFiles

    async def __aenter__(self) -> Self:
        try:
            await self._open()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def _open(self) -> None:
        registry = Registry.load(self.settings.jobs)
        for spec in self._jobs:
            registry.add(spec)
        self.store = SQLiteStore(self.directory / "threads.db")
        await self.store.open()
        self._stack.push_async_callback(self.store.close)
        storage = LocalFiles(self.settings.data_dir)
        await storage.open()
        self._stack.push_async_callback(storage.close)
        scratch = Scratch(self.settings.data_dir)
        await anyio.to_thread.run_sync(scratch.open)
        self._stack.push_async_callback(anyio.to_thread.run_sync, scratch.close)
        self.files = ResultFiles(storage, scratch)
        uploads = Uploads(storage, scratch, self.settings.max_upload_file)
        changes = Changes()
        self.runner = Runner(
            self.store, registry, self.settings, node="testing", changes=changes,
            files=self.files, uploads=uploads, supervisor=Supervisor(),
            clock=ClockCheck(self.store),
        )
        self.service = Service(
            self.store, registry, self.runner, self.settings, ResultLinks(("testing",), 300),
            files=self.files, uploads=uploads, changes=changes,
        )
        await self.store.create_group(GROUP, None)
        await self.runner.start()
        self._stack.push_async_callback(self.runner.stop)

    def spec(self, job: JobSpec | str) -> JobSpec:
        """The job by name, or the JobSpec given, registered here if it was not yet."""
        if isinstance(job, str):
            return self.service.registry.get(job)
        self.service.registry.add(job)  # the same spec again is fine; another of its name is not
        return job

    async def start(
        self, job: JobSpec | str, params: Params = None, files: Files = None, *,
        server: bool | None = None,
    ) -> Thread:
        """Start a thread of `job`, in the group `testing` or (`server`, or a job that may only
        run there) at server level. Values are given as Python values (`str()` makes the form
        field; a list gives a parameter several times); invalid ones raise BadParameter."""
        spec = self.spec(job)
        if server is None:
            server = spec.scope is Scope.SERVER
        fields = _fields(params or {}, files or {})
        thread, _ = await self.service.start(TESTER, None if server else GROUP, spec.name, fields)
        return thread

    async def thread(self, thread_id: str) -> Thread:
        return await self.service.get_thread(TESTER, None, thread_id)

    async def wait(
        self, thread_id: str, until: Callable[[Thread], bool] | None = None
    ) -> Thread:
        """The thread once `until(thread)` holds (by default: once it has ended)."""
        check = until or (lambda thread: thread.final)
        with anyio.fail_after(self.timeout):
            while True:
                thread = await self.thread(thread_id)
                if check(thread) or thread.final:
                    return thread
                await anyio.sleep(POLL_SECONDS)

    async def cancel(self, thread_id: str) -> Thread | None:
        """Cancel as a user would (the thread as it stands once the request returns)."""
        return await self.service.cancel(TESTER, None, thread_id)

    async def outcome(self, thread_id: str) -> Outcome:
        """The thread's outcome once it has ended."""
        thread = await self.wait(thread_id)
        events: list[LogEvent] = []
        since = 0
        while True:
            page = await self.store.get_logs(thread_id, since, 1000, Level.DEBUG)
            events.extend(page.events)
            if not page.more or page.next <= since:
                break
            since = page.next
        data = await self._result_bytes(thread.result)
        result = thread.result
        return Outcome(
            thread, events, data,
            result.media_type if result is not None else None,
            result.name if result is not None else None,
        )

    async def run(
        self, job: JobSpec | str, params: Params = None, files: Files = None, *,
        server: bool | None = None,
        cancel_when: Callable[[Thread], bool] | None = None,
    ) -> Outcome:
        """Start `job`, wait for its end and return its outcome; with `cancel_when`, cancel it
        as soon as `cancel_when(thread)` holds (e.g. `lambda t: (t.progress_current or 0) > 2`)."""
        thread = await self.start(job, params, files, server=server)
        if cancel_when is not None:
            running = await self.wait(thread.id, cancel_when)
            if not running.final:
                await self.cancel(thread.id)
        return await self.outcome(thread.id)

    async def _result_bytes(self, result: Result | None) -> bytes | None:
        if result is None or result.file is None:
            return None
        chunks = [chunk async for chunk in self.files.storage.read(ResultFiles.key(result))]
        return b"".join(chunks)


def _fields(
    params: Mapping[str, Any], files: Mapping[str, FileValue | list[FileValue]]
) -> list[tuple[str, str | Upload]]:
    fields: list[tuple[str, str | Upload]] = []
    for name, value in params.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            fields.append((name, text))
    for name, given in files.items():
        for item in given if isinstance(given, list) else [given]:
            fields.append((name, _upload(name, item)))
    return fields


def _upload(name: str, value: FileValue) -> Upload:
    if isinstance(value, Path):
        return Upload(value.name, "application/octet-stream", io.BytesIO(value.read_bytes()))
    if isinstance(value, bytes):
        return Upload(name, "application/octet-stream", io.BytesIO(value))
    media_type = value[2] if len(value) == 3 else "application/octet-stream"
    return Upload(value[0], media_type, io.BytesIO(value[1]))


class JobRunner:
    """`Harness.run` for synchronous tests: each `run` starts a harness (a new store) in a
    directory of its own under `directory`, runs one job in it and stops it."""

    def __init__(self, directory: Path, jobs: Iterable[JobSpec] = (), **settings: Any) -> None:
        self.directory = Path(directory)
        self.jobs = list(jobs)
        self.settings = settings
        self._runs = 0

    def run(
        self, job: JobSpec | str, params: Params = None, files: Files = None, *,
        server: bool | None = None,
        cancel_when: Callable[[Thread], bool] | None = None,
        timeout: float = 60.0,
    ) -> Outcome:
        self._runs += 1
        directory = self.directory / f"run-{self._runs}"
        directory.mkdir(parents=True, exist_ok=True)

        async def main() -> Outcome:
            async with Harness(directory, self.jobs, timeout=timeout, **self.settings) as harness:
                return await harness.run(
                    job, params, files, server=server, cancel_when=cancel_when
                )

        return anyio.run(main)


def run_job(
    job: JobSpec | str,
    params: Params = None,
    files: Files = None,
    *,
    jobs: Iterable[JobSpec] = (),
    server: bool | None = None,
    cancel_when: Callable[[Thread], bool] | None = None,
    timeout: float = 60.0,
    **settings: Any,
) -> Outcome:
    """Run one job to its end in a temporary directory (removed afterwards); see `Harness`."""
    with tempfile.TemporaryDirectory(prefix="threadsvc-testing-") as directory:
        runner = JobRunner(Path(directory), jobs, **settings)
        return runner.run(
            job, params, files, server=server, cancel_when=cancel_when, timeout=timeout
        )


class FakeContext(Context):
    """A Context that stores nothing and records every report, for unit tests of a job
    function: `ctx = FakeContext.for_job(spec, to=3)`, `await call(spec, ctx)`, then read
    `ctx.events`, `ctx.progress_calls`, `ctx.result`, `ctx.thread.status`.

    The status rules are the server's (a warning sets `warning` until the next progress or
    message). `cancel()` makes `cancelled` true and `check_cancelled()` raise, as a user's
    cancel does; it does not interrupt an await (only the real runner cancels the task)."""

    def __init__(
        self,
        params: Params = None,
        files: Files = None,
        *,
        job: str = "job",
        group: Group | None = None,
    ) -> None:
        # Nothing of Context.__init__: no writer, no storage; the reports land in the lists.
        self._thread = Thread(
            id="0" * 32, name=f"{job} thread", username=TESTER.username,
            group_id=group.id if group else SERVER_GROUP_ID, job=job, params=dict(params or {}),
            status=Status.INPROGRESS, created=now_ms(), started=now_ms(), version=1,
        )
        self._seq = 1
        self._cancel = False
        self._result = None
        self.sync = SyncContext(self)
        self.events: list[tuple[Level, str]] = []
        self.progress_calls: list[tuple[int, int | None]] = []
        self.result: bytes | None = None
        self.media_type: str | None = None
        self.result_name: str | None = None
        self._directory = tempfile.TemporaryDirectory(prefix="threadsvc-fake-")
        self._inputs = {
            name: [self._input(name, i, item) for i, item in enumerate(_as_list(value))]
            for name, value in (files or {}).items()
        }

    @classmethod
    def for_job(
        cls,
        spec: JobSpec,
        files: Files = None,
        **params: Any,
    ) -> FakeContext:
        """A context whose parameters are `params` with the job's declared defaults for the
        others (values are the parsed ones: an int for `Integer`; not checked)."""
        values = {
            name: ([] if param.multiple and param.default is None else param.default)
            for name, param in spec.params.items()
        }
        return cls({**values, **params}, files, job=spec.name)

    # -- what the job reads -----------------------------------------------------------------
    def files(self, name: str) -> list[InputFile]:
        return list(self._inputs.get(name, []))

    def cancel(self) -> None:
        """As a user's cancel: `cancelled` is true, `check_cancelled()` raises."""
        self._cancel = True

    # -- what the test reads ----------------------------------------------------------------
    def logs(self, level: Level = Level.DEBUG, *, only: bool = False) -> list[str]:
        """The texts reported at `level` or above (exactly `level` with `only`)."""
        return [text for lvl, text in self.events if (lvl is level if only else lvl >= level)]

    def json(self) -> Any:
        assert self.result is not None, "the job set no result"
        return json.loads(self.result)

    # -- in place of the writer and the file storage ----------------------------------------
    async def _report(
        self, status: Status | None, event: tuple[Level, str] | None, **fields: Any
    ) -> None:
        if status is Status.INPROGRESS and self._thread.status is not Status.INPROGRESS:
            self.events.append((Level.INFO, "Status: inprogress"))
        if event is not None:
            self.events.append(event)
        if "progress_current" in fields:
            self.progress_calls.append((fields["progress_current"], fields["progress_total"]))
        if status is not None:
            fields["status"] = status
        self._thread = dataclasses.replace(self._thread, **fields)
        await anyio.lowlevel.checkpoint()  # as the real one, a report lets others run

    @contextlib.asynccontextmanager
    async def result_file(
        self, name: str, media_type: str = "application/octet-stream"
    ) -> AsyncIterator[BinaryIO]:
        buffer = io.BytesIO()
        yield buffer
        self.result, self.media_type = buffer.getvalue(), media_type
        self.result_name = download_name(name)

    def _input(self, name: str, index: int, value: FileValue) -> InputFile:
        if isinstance(value, Path):
            return InputFile(value.name, value, value.stat().st_size, "application/octet-stream")
        filename, data, media_type = (
            (name, value, "application/octet-stream") if isinstance(value, bytes)
            else (value[0], value[1], value[2] if len(value) == 3 else "application/octet-stream")
        )
        path = Path(self._directory.name) / f"{name}-{index}"
        path.write_bytes(data)
        return InputFile(filename, path, len(data), media_type)


def _as_list(value: FileValue | list[FileValue]) -> list[FileValue]:
    return value if isinstance(value, list) else [value]


async def call(job: JobSpec, ctx: Context) -> Any:
    """Call the function `@job` declared (a JobSpec is not callable itself)."""
    return await job.fn(ctx)


try:
    import pytest
except ImportError:  # the helpers work without pytest; only the fixture needs it
    pass
else:

    @pytest.fixture
    def job_runner(tmp_path: Path) -> JobRunner:
        """A JobRunner in the test's temporary directory: `job_runner.run(my_job, {...})`."""
        return JobRunner(tmp_path)
