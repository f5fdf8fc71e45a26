"""Running one declared command: its output is the thread's log, its exit the final status.

The command runs in its own process group; a cancel or the timeout sends it SIGTERM, then
SIGKILL after `grace` seconds, and whatever is left in the group is killed once it ends.
Its standard output's lines are INFO events (a `progress: N/M` line is progress instead), its
standard error's WARN events.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from collections.abc import Awaitable, Callable

from threadsvc import process_group
from threadsvc.jobs.command.settings import Command
from threadsvc.models import Level
from threadsvc.runner.context import Context

log = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0  # how long output is still read once the process group is gone
MAX_LINE = 16_384  # bytes of one output line that are logged; the rest of the line is dropped
READ_CHUNK = 65_536
PROGRESS = re.compile(r"progress:[ \t]*([0-9]{1,18})[ \t]*/[ \t]*([0-9]{1,18})[ \t]*")

_LIVE: set[int] = set()  # process groups of the commands running on this node


def kill_all() -> int:
    """SIGKILL the process group of every command still running here; returns how many.

    For the server's shutdown: a cancel gives a command `grace` seconds, which the runner's
    shutdown may not wait for, and a process group outlives the server that started it."""
    groups = list(_LIVE)
    for pgid in groups:
        process_group.kill(pgid, signal.SIGKILL)
    return len(groups)


class CommandFailed(Exception):
    """The command could not start, exited with a non-zero status, or timed out."""


async def run_command(ctx: Context, command: Command, argv: list[str]) -> None:
    """Run `argv` for `command`: output to the log, exit status to the final status."""
    name = command.name
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=command.cwd,
            env=command.environment(),
            start_new_session=True,  # its own process group, signalled as a whole
        )
    except OSError as exc:
        what = exc.strerror or str(exc)
        if exc.filename is not None:
            what = f"{what}: '{exc.filename}'"
        else:  # uvloop's errors name no file: the program, or the directory it runs in
            what = f"{what}: '{argv[0]}'" + (f" in '{command.cwd}'" if command.cwd else "")
        raise CommandFailed(f"Command '{name}' could not start: {what}") from None
    pgid = process.pid
    _LIVE.add(pgid)

    async def out_line(text: str) -> None:
        match = PROGRESS.fullmatch(text)
        if match:
            current, total = int(match.group(1)), int(match.group(2))
            if current <= total:
                await ctx.progress(current, total)
                return
        await ctx.log(text, Level.INFO)

    async def err_line(text: str) -> None:
        await ctx.log(text, Level.WARN)

    assert process.stdout is not None and process.stderr is not None
    readers = [
        asyncio.create_task(_pump(process.stdout, out_line), name=f"{ctx.thread_id}-stdout"),
        asyncio.create_task(_pump(process.stderr, err_line), name=f"{ctx.thread_id}-stderr"),
    ]
    timed_out = False
    reader_error: BaseException | None = None
    try:
        try:
            await ctx.log(f"Command '{name}' started (process {process.pid})", Level.DEBUG)
            async with asyncio.timeout(command.timeout):
                await process_group.exited(process)
        except TimeoutError:
            timed_out = True
            await ctx.log(
                f"Command '{name}' timed out after {command.timeout:g} seconds; stopping it",
                Level.WARN,
            )
            await process_group.terminate(process, pgid, command.grace)
    except asyncio.CancelledError:
        await process_group.terminate(process, pgid, command.grace)
        raise
    finally:
        process_group.kill(pgid, signal.SIGKILL)  # whatever the command left behind in its group
        try:
            reader_error = await _drain(readers)
        finally:
            _LIVE.discard(pgid)
            # Output still held open (by a process that left the group) is abandoned.
            transport = getattr(process, "_transport", None)
            if transport is not None:
                transport.close()
    if timed_out:
        raise CommandFailed(f"Command '{name}' timed out after {command.timeout:g} seconds")
    if reader_error is not None:
        raise CommandFailed(f"Command '{name}': its output could not be read: {reader_error}")
    status = process.returncode
    assert status is not None
    if status < 0:
        raise CommandFailed(f"Command '{name}' was killed by signal {process_group.signal_name(-status)}")
    if status != 0:
        raise CommandFailed(f"Command '{name}' exited with status {status}")
    await ctx.message(f"Command '{name}' completed")


async def _drain(readers: list[asyncio.Task[None]]) -> BaseException | None:
    """Let the readers reach the end of the output (a bounded wait), then stop them."""
    try:
        await asyncio.wait(readers, timeout=DRAIN_SECONDS)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    for reader in readers:
        if not reader.cancelled() and reader.exception() is not None:
            log.error("reading a command's output failed", exc_info=reader.exception())
            return reader.exception()
    return None


async def _pump(stream: asyncio.StreamReader, on_line: Callable[[str], Awaitable[None]]) -> None:
    """Call `on_line` for each non-blank line; a line longer than MAX_LINE bytes is cut."""
    buffer = bytearray()
    skipping = False  # inside the rest of a line that was cut
    while chunk := await stream.read(READ_CHUNK):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if skipping:
                skipping = False
            else:
                await _emit(line, on_line)
        if len(buffer) > MAX_LINE:
            if not skipping:
                await _emit(bytes(buffer[:MAX_LINE]), on_line, cut=True)
            skipping = True
            buffer.clear()
    if buffer and not skipping:
        await _emit(bytes(buffer), on_line)


async def _emit(line: bytes, on_line: Callable[[str], Awaitable[None]], cut: bool = False) -> None:
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    if cut:
        text += " … (line cut)"
    elif not text.strip():
        return
    await on_line(text.rstrip())