"""Jobs declared `process=True`: the job function runs in a child process of its own.

`run_in_child` starts a Python running `child.main` in a new session (its own process
group), sends it one start frame (where the job is, the thread's id and parameters, the local
paths of its uploads, where to write a result) and reads its reports until it ends. The child
imports the job's module, runs the job with a `ChildContext`, and sends each `ctx` call back
as a frame: 4 bytes of length, then a JSON object. The server never sends anything after the
start frame; a cancel is a signal: SIGTERM to the group (the job sees `JobCancelled` at once,
wherever it is), SIGKILL after `GRACE_SECONDS`, and the job's task ends only once the child
has exited. Whatever the child left in its group is killed when it ends, and a child whose
server is gone exits by itself.

Threat model: the child runs the job author's code, which the server already trusts as much
as it trusts its own jobs (it imported the module); what is not trusted is what comes back
over the pipe, from code that may be buggy, crashed half-way or write junk to the wrong file
descriptor. So a frame longer than `MAX_FRAME` bytes, text that is not JSON, an unknown
report, a field of the wrong type, a number beyond 64 bits or a media type that is not one
ends the thread `failed` (and the child killed); each report is then applied through the
thread's `Context`, whose own rules (status, limits, XML-safe text) hold as for any job. A result is taken only from the
one file the server named for it, opened without following links, and copied into the file
storage; the child never names a path the server acts on. A child that dies without saying it
finished fails the thread with how it died (signal, or exit status).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import stat
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import anyio.to_thread

from threadsvc import process_group
from threadsvc.files.scratch import Scratch
from threadsvc.models import Level
from threadsvc.runner.context import (
    MAX_LOG_TEXT,
    MAX_MESSAGE,
    Cancellable,
    Context,
    JobCancelled,
)
from threadsvc.runner.params import File
from threadsvc.uploads import InputFile

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_FRAME = 1024 * 1024  # bytes of one report (a log text is at most 64,000 characters)
GRACE_SECONDS = 2.0  # after SIGTERM, before SIGKILL
DRAIN_SECONDS = 2.0  # reports still read once the child has exited
MAX_INT = 2**63 - 1  # a progress value a store column holds
YIELD_EVERY = 32  # reports applied before the event loop gets a turn, for a child that floods
MAX_TRACE = 16_000  # characters of a child's traceback kept for the server's log
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}(;[ -~]{0,200})?")
_LEVELS = {level.name: level for level in Level}


class ChildRaised(Exception):
    """The job raised in its process: says the exception's type (qualified but for builtins)
    and its text."""

    def __init__(self, type_name: str, text: str) -> None:
        super().__init__(f"{type_name}: {text}" if text else type_name)
        self.type_name = type_name


class ChildDied(Exception):
    """The job's process ended without saying that the job ended."""


class ChildProtocolError(Exception):
    """The job's process sent a report the server does not take."""


def check_importable(fn: Callable[..., Any]) -> None:
    """A process job is found again in the child by its module and qualified name: refuse
    (at registration) a function the child could not import."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or module == "__main__":
        raise ValueError(
            f"job function {qualname!r} is declared in __main__; a process=True job must be "
            "in a module the child process can import by name"
        )
    if "<" in qualname:  # <locals>, <lambda>
        raise ValueError(
            f"job function {qualname!r} is a closure or lambda; a process=True job must be "
            "defined at the top level of its module"
        )


# -- the server's side -----------------------------------------------------------------------
async def run_in_child(fn: Callable[..., Any], ctx: Context, file_params: list[str],
                       scratch: Scratch) -> None:
    """Run job function `fn` for `ctx`'s thread in a child process, applying its reports to
    `ctx`; returns when the job returned, raises as the job ended otherwise. Cancelled, it
    kills the child and raises only once the child is gone."""
    check_importable(fn)
    folder = await anyio.to_thread.run_sync(scratch.folder, f"job-{ctx.thread_id}")
    result_path = folder / "result"
    start = {
        "module": fn.__module__,
        "qualname": fn.__qualname__,
        "thread_id": ctx.thread_id,
        "params": ctx.params,
        "files": {name: [_file_json(f) for f in ctx.files(name)] for name in file_params},
        "result": str(result_path),
        "path": sys.path,
    }
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from threadsvc.runner.child import main; main()",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group, signalled as a whole
        )
        try:
            await _follow(process, ctx, _frame(start), result_path)
        except BaseException:  # a cancel, a timeout, a report refused: the child goes first
            await _stop(process)
            raise
        finally:
            process_group.kill(process.pid, signal.SIGKILL)  # whatever it left behind in its group
            transport = getattr(process, "_transport", None)
            if transport is not None:
                transport.close()
    finally:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))


async def _follow(process: asyncio.subprocess.Process, ctx: Context, start: bytes,
                  result_path: Path) -> None:
    assert process.stdin is not None and process.stdout is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # its exit tells why
        process.stdin.write(start)
        await process.stdin.drain()
        process.stdin.close()
    reader = asyncio.create_task(_read(process.stdout, ctx, result_path))
    exited = asyncio.create_task(process_group.exited(process))
    try:
        await asyncio.wait({reader, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not reader.done():  # exited: what it wrote last is still in the pipe
            await asyncio.wait({reader}, timeout=DRAIN_SECONDS)
        outcome = reader.result() if reader.done() else None
        if outcome is None and not exited.done():  # it closed its reports, yet runs on
            await asyncio.wait({exited}, timeout=DRAIN_SECONDS)
            if not exited.done():
                raise ChildDied("The job's process stopped reporting before the job ended")
        status = await exited
    finally:
        for task in (reader, exited):
            task.cancel()
        await asyncio.gather(reader, exited, return_exceptions=True)
    if isinstance(outcome, dict) and outcome["op"] == "raised":
        if outcome["type"] == "threadsvc.runner.context.JobCancelled":
            raise JobCancelled(outcome["text"] or "cancelled")
        raise ChildRaised(outcome["type"], outcome["text"])
    if outcome is not None and status == 0:
        return
    if status < 0:
        raise ChildDied(f"The job's process was killed by signal {process_group.signal_name(-status)}")
    raise ChildDied(f"The job's process exited with status {status} before the job ended")


async def _read(stream: asyncio.StreamReader, ctx: Context, result_path: Path
                ) -> dict[str, Any] | None:
    """Apply the child's reports until it says the job ended (that last report) or its
    output ends (None)."""
    applied = 0
    while True:
        try:
            head = await stream.readexactly(4)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ChildProtocolError("The job's process sent part of a report") from None
            return None
        size = int.from_bytes(head, "big")
        if size > MAX_FRAME:
            raise ChildProtocolError(f"The job's process sent a report of {size} bytes")
        try:
            report = json.loads(await stream.readexactly(size))
        except asyncio.IncompleteReadError:
            raise ChildProtocolError("The job's process sent part of a report") from None
        except (ValueError, RecursionError):  # nested too deep for the parser, too
            raise ChildProtocolError("The job's process sent a report that is not JSON") from None
        if not isinstance(report, dict):
            raise ChildProtocolError("The job's process sent a report that is not an object")
        if await _apply(ctx, report, result_path):
            return report
        applied += 1
        if applied % YIELD_EVERY == 0:  # reports already buffered are read without a wait
            await asyncio.sleep(0)


async def _apply(ctx: Context, report: dict[str, Any], result_path: Path) -> bool:
    """Apply one report through the thread's Context; True for the last one."""
    match report:
        case {"op": "progress", "current": int() as current, "total": None | int() as total}:
            if max(current, total or 0) > MAX_INT:
                raise ChildProtocolError("The job's progress is beyond what the store holds")
            await ctx.progress(current, total)  # its own checks refuse bools and bad values
        case {"op": "message", "text": str() as text}:
            await ctx.message(text)
        case {"op": "log", "text": str() as text, "level": str() as level} if level in _LEVELS:
            await ctx.log(text, _LEVELS[level])
        case {"op": "warning", "text": str() as text}:
            await ctx.warning(text)
        case {"op": "error", "text": str() as text}:
            await ctx.error(text)
        case {"op": "result", "name": str() as name, "media_type": str() as media_type}:
            if not _MEDIA_TYPE.fullmatch(media_type):
                raise ChildProtocolError(f"The job's result has no valid media type: {media_type[:100]!r}")
            await _take_result(ctx, result_path, name[:200], media_type)
        case {"op": "done"}:
            return True
        case {"op": "raised", "type": str(), "text": str(), "trace": str() as trace}:
            report["text"] = report["text"][:MAX_MESSAGE]
            if trace:
                log.error("thread %s raised in its process:\n%s", ctx.thread_id, trace[:MAX_TRACE])
            return True
        case _:
            what = str(report.get("op"))[:50]
            raise ChildProtocolError(f"The job's process sent an unknown report ({what!r})")
    return False


async def _take_result(ctx: Context, path: Path, name: str, media_type: str) -> None:
    """Copy the file the child wrote at the path the server named into the thread's result."""
    try:
        fd = await anyio.to_thread.run_sync(
            lambda: os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)))
    except OSError as exc:
        raise ChildProtocolError(f"The job's result file cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ChildProtocolError("The job's result is not a regular file")
    with os.fdopen(fd, "rb") as source:
        async with ctx.result_file(name, media_type) as out:
            await anyio.to_thread.run_sync(shutil.copyfileobj, source, out)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the child's group, SIGKILL it after the grace; returns once the child has
    exited. A cancel arriving meanwhile is raised again only then."""
    await process_group.terminate(process, process.pid, GRACE_SECONDS)


def _file_json(item: InputFile) -> dict[str, Any]:
    return {"name": item.name, "path": str(item.path), "size": item.size,
            "content_type": item.content_type}


def _frame(value: Any) -> bytes:
    data = json.dumps(value, ensure_ascii=False).encode()
    return len(data).to_bytes(4, "big") + data


def file_params(params: Any) -> list[str]:
    """The names of a job's File parameters (whose uploads the child gets as local paths)."""
    return [name for name, param in params.items() if isinstance(param, File)]


# -- the child's side ------------------------------------------------------------------------
class ChildContext(Cancellable):
    """What a process job's `ctx` is: the thread's id, parameters and uploads, and the
    reports, each sent to the server. `ctx.thread` is not available in a process job."""

    def __init__(self, start: dict[str, Any], sink: BinaryIO) -> None:
        self.thread_id: str = start["thread_id"]
        self.params: dict[str, Any] = start["params"]
        self._files: dict[str, list[dict[str, Any]]] = start["files"]
        self._result = Path(start["result"])
        self._sink = sink
        self._lock = threading.Lock()  # reports may come from the job's own threads
        self._cancel = False
        self.sync = SyncChildContext(self)

    def files(self, name: str) -> list[InputFile]:
        return [InputFile(f["name"], Path(f["path"]), f["size"], f["content_type"])
                for f in self._files.get(name, [])]

    async def progress(self, current: int, total: int | None = None) -> None:
        self.send({"op": "progress", "current": current, "total": total})

    async def message(self, text: str) -> None:
        self.send({"op": "message", "text": str(text)[:MAX_MESSAGE]})

    async def log(self, text: str, level: Level = Level.INFO) -> None:
        self.send({"op": "log", "text": str(text)[:MAX_LOG_TEXT], "level": Level(level).name})

    async def warning(self, text: str) -> None:
        self.send({"op": "warning", "text": str(text)[:MAX_MESSAGE]})

    async def error(self, text: str) -> None:
        self.send({"op": "error", "text": str(text)[:MAX_MESSAGE]})

    @contextlib.asynccontextmanager
    async def result_file(self, name: str, media_type: str = "application/octet-stream"
                          ) -> AsyncIterator[BinaryIO]:
        with open(self._result, "wb") as out:  # noqa: ASYNC230 (this loop runs the job alone)
            yield out
        self.send({"op": "result", "name": str(name), "media_type": str(media_type)})

    async def set_result(self, data: bytes | str, media_type: str = "text/plain",
                         name: str = "result.txt") -> None:
        async with self.result_file(name, media_type) as out:
            out.write(data.encode() if isinstance(data, str) else data)

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking work needs no worker thread here: the process is the job's alone."""
        return fn(*args)

    def send(self, report: dict[str, Any]) -> None:
        with self._lock:
            self._sink.write(_frame(report))
            self._sink.flush()

    def _cancelled(self, signum: int, frame: Any) -> None:
        """SIGTERM: the thread is being cancelled; stop the job wherever it is."""
        if not self._cancel:
            self._cancel = True
            raise JobCancelled("cancelled")


class SyncChildContext:
    """`ctx.sync` in a process job: the same reports, from blocking code."""

    def __init__(self, ctx: ChildContext) -> None:
        self._ctx = ctx

    def progress(self, current: int, total: int | None = None) -> None:
        self._ctx.send({"op": "progress", "current": current, "total": total})

    def message(self, text: str) -> None:
        self._ctx.send({"op": "message", "text": str(text)[:MAX_MESSAGE]})

    def log(self, text: str, level: Level = Level.INFO) -> None:
        self._ctx.send({"op": "log", "text": str(text)[:MAX_LOG_TEXT], "level": Level(level).name})

    def warning(self, text: str) -> None:
        self._ctx.send({"op": "warning", "text": str(text)[:MAX_MESSAGE]})

    def error(self, text: str) -> None:
        self._ctx.send({"op": "error", "text": str(text)[:MAX_MESSAGE]})


def _watch_parent(parent: int) -> None:
    """End the child when the server is gone, even in the middle of the job."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def _resolve(start: dict[str, Any]) -> Callable[..., Any]:
    sys.path[:] = [*start["path"], *(p for p in sys.path if p not in start["path"])]
    target: Any = __import__(start["module"], fromlist=["_"])
    for part in start["qualname"].split("."):
        target = getattr(target, part)
    fn: Callable[..., Any] = getattr(target, "fn", target)  # the name holds the JobSpec the decorator made
    return fn


def main() -> None:
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    sink = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the job's prints go to the server's log, never into the reports
    head = sys.stdin.buffer.read(4)
    start = json.loads(sys.stdin.buffer.read(int.from_bytes(head, "big")))
    ctx = ChildContext(start, sink)
    signal.signal(signal.SIGTERM, ctx._cancelled)
    try:
        fn = _resolve(start)
        asyncio.run(fn(ctx))
        ctx.send({"op": "done"})
    except JobCancelled as exc:
        if not ctx.cancelled:  # the job's own: it fails saying so, as in the server
            ctx.send({"op": "raised", "type": "threadsvc.runner.context.JobCancelled",
                      "text": str(exc), "trace": ""})
    except Exception as exc:  # noqa: BLE001 (whatever the job raised is its outcome)
        kind = type(exc)
        name = kind.__qualname__ if kind.__module__ == "builtins" else (
            f"{kind.__module__}.{kind.__qualname__}")
        ctx.send({"op": "raised", "type": name, "text": str(exc)[:MAX_MESSAGE],
                  "trace": traceback.format_exc()[-MAX_TRACE:]})
    sys.stderr.flush()
    os._exit(0)

