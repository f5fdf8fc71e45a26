r"""`command`: runs a command that an administrator declared in the settings (SPEC §12).

Each `[commands.NAME]` table of the settings declares one command:

    [commands.greet]
    argv = ["python3", "greet.py", "--name", "{who}"]   # {param} is replaced inside an item
    params = { who = "^[a-z]{1,20}$" }                 # each parameter and its pattern (below)
    role = "manager"                                   # minimum role (default contributor)
    level = "group"                                    # group (default), server or both
    timeout = 600                                      # seconds (default: none)
    cwd = "/srv/tools"                                 # working directory (default: the server's)
    env = { TOOL_HOME = "/srv/tools" }                 # added to PATH and LANG
    grace = 10                                         # seconds between SIGTERM and SIGKILL

A pattern must match the whole value (as `re.fullmatch`: `^` and `$` are optional, and `$` never
forgives a trailing newline), and is compiled with `re.ASCII`: `\d` is `[0-9]`, `\w` is
`[A-Za-z0-9_]`, `\s` is ASCII white space and case-insensitive matching folds ASCII letters
only, so that Arabic-Indic digits, fullwidth letters or the Kelvin sign never pass a pattern
written for ASCII (`\D`, `\W` and `\S`, their opposites, match any other character: prefer
classes that list what is allowed).

`command_job(settings)` checks every table at start-up (a SettingsError names the command and
the key) and makes the one job `command`, whose parameters are `name` and that command's own.
No shell runs: a parameter replaces `{param}` inside one argv item and never adds an item.
The command runs in its own process group; a cancel or the timeout sends it SIGTERM, then
SIGKILL after `grace` seconds, and whatever is left in the group is killed once it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from threadsvc.errors import BadParameter, Forbidden
from threadsvc.models import Group, Level, Principal, Role, Scope
from threadsvc.runner.context import Context
from threadsvc.runner.registry import JobSpec
from threadsvc.settings import Settings, SettingsError
from threadsvc.uploads import Upload

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0  # between SIGTERM and SIGKILL (SPEC §12); a command may declare `grace`
DRAIN_SECONDS = 5.0  # how long output is still read once the process group is gone
MAX_VALUE = 10_000  # characters in one parameter value
MAX_LINE = 16_384  # bytes of one output line that are logged; the rest of the line is dropped
READ_CHUNK = 65_536
EXIT_POLL_SECONDS = 0.02

KEYS = frozenset({"argv", "params", "role", "level", "timeout", "cwd", "env", "grace"})
RESERVED = frozenset({"name", "job"})  # fields the `command` job itself uses
COMMAND_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ARGV_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
PROGRESS = re.compile(r"progress:[ \t]*([0-9]{1,18})[ \t]*/[ \t]*([0-9]{1,18})[ \t]*")

_LIVE: set[int] = set()  # process groups of the commands running on this node


def kill_all() -> int:
    """SIGKILL the process group of every command still running here; returns how many.

    For the server's shutdown: a cancel gives a command `grace` seconds, which the runner's
    shutdown may not wait for, and a process group outlives the server that started it."""
    groups = list(_LIVE)
    for pgid in groups:
        _killpg(pgid, signal.SIGKILL)
    return len(groups)


# One piece of an argv item: literal text, or the name of a parameter to put there.
Piece = tuple[bool, str]  # (is_param, text or parameter name)


class CommandFailed(Exception):
    """The command could not start, exited with a non-zero status, or timed out."""


@dataclass(frozen=True)
class Command:
    """One declared command, checked."""

    name: str
    argv: tuple[tuple[Piece, ...], ...]
    params: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    role: Role = Role.CONTRIBUTOR
    level: Scope = Scope.GROUP
    timeout: float | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    grace: float = GRACE_SECONDS

    def parse(self, given: Mapping[str, str]) -> dict[str, str]:
        """The caller's values: exactly the declared parameters, each matching its pattern."""
        for key in given:
            if key not in self.params:
                raise BadParameter(key, f"is not a parameter of command '{self.name}'")
        values: dict[str, str] = {}
        for key, pattern in self.params.items():
            value = given.get(key)
            if value is None:
                raise BadParameter(key, f"is required by command '{self.name}'")
            if len(value) > MAX_VALUE:
                raise BadParameter(key, f"is longer than {MAX_VALUE} characters")
            if "\x00" in value:
                raise BadParameter(key, "must not contain a NUL character")
            if not pattern.fullmatch(value):
                raise BadParameter(key, f"must match {pattern.pattern}")
            values[key] = value
        return values

    def argv_for(self, values: Mapping[str, str]) -> list[str]:
        """The argv to run: one item per declared item, whatever the values hold."""
        return [
            "".join(values[text] if is_param else text for is_param, text in item)
            for item in self.argv
        ]

    def environment(self) -> dict[str, str]:
        base = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        return {**base, **self.env}


# -- settings -------------------------------------------------------------------------------
def parse_commands(tables: Mapping[str, Any]) -> dict[str, Command]:
    """Check the `[commands.NAME]` tables; a SettingsError names the command and the key."""
    return {name: _parse_command(name, table) for name, table in tables.items()}


def _parse_command(name: str, table: Any) -> Command:
    def bad(key: str | None, problem: str) -> SettingsError:
        where = f"commands.{name}" + (f".{key}" if key else "")
        return SettingsError(f"setting '{where}': {problem}")

    if not COMMAND_NAME.fullmatch(name):
        raise bad(None, "a command name is 1 to 64 letters, digits, '.', '_' or '-'")
    if not isinstance(table, Mapping):
        raise bad(None, "must be a table")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise bad(unknown[0], f"unknown key (known: {', '.join(sorted(KEYS))})")

    raw_params = table.get("params", {})
    if not isinstance(raw_params, Mapping):
        raise bad("params", "must be a table of parameter names and patterns")
    params: dict[str, re.Pattern[str]] = {}
    for key, pattern in raw_params.items():
        if not PARAM_NAME.fullmatch(key):
            raise bad(f"params.{key}", "a parameter name is a letter or '_', then letters, "
                      "digits, '_', '.' or '-' (at most 64)")
        if key in RESERVED:
            raise bad(f"params.{key}", f"'{key}' is the command job's own field")
        if not isinstance(pattern, str):
            raise bad(f"params.{key}", "must be a regular expression (a string)")
        try:
            params[key] = re.compile(pattern, re.ASCII)  # \d is 0-9, not every script's digits
        except (re.error, ValueError) as exc:
            raise bad(f"params.{key}", f"the pattern does not compile: {exc}") from None

    argv = table.get("argv")
    if not isinstance(argv, list) or not argv:
        raise bad("argv", "is required: a non-empty list of strings")
    items: list[tuple[Piece, ...]] = []
    used: set[str] = set()
    for index, item in enumerate(argv):
        if not isinstance(item, str):
            raise bad("argv", f"item {index} is not a string")
        if "\x00" in item:
            raise bad("argv", f"item {index} holds a NUL character")
        pieces = _pieces(item, f"item {index}", lambda problem: bad("argv", problem))
        for is_param, text in pieces:
            if is_param and text not in params:
                raise bad("argv", f"item {index}: {{{text}}} is not a declared parameter")
            if is_param:
                if index == 0:
                    raise bad("argv", "item 0 (the program) cannot hold a parameter")
                used.add(text)
        items.append(pieces)
    if not "".join(text for _, text in items[0]):
        raise bad("argv", "item 0 (the program) is empty")
    for key in params:
        if key not in used:
            raise bad(f"params.{key}", "is declared but used in no argv item")

    role = table.get("role", "contributor")
    roles = {r.label: r for r in Role}
    if not isinstance(role, str) or role.strip().lower() not in roles:
        raise bad("role", "must be reviewer, contributor, manager or approver")
    parsed_role = roles[role.strip().lower()]

    level = table.get("level", "group")
    if level not in ("group", "server", "both"):
        raise bad("level", "must be group, server or both")

    timeout = table.get("timeout")
    if timeout is not None and not _positive(timeout):
        raise bad("timeout", "must be a positive number of seconds")
    grace = table.get("grace", GRACE_SECONDS)
    if not (_positive(grace) or (grace == 0 and not isinstance(grace, bool))):
        raise bad("grace", "must be a number of seconds, 0 or more")

    cwd = table.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd or "\x00" in cwd):
        raise bad("cwd", "must be a directory (a non-empty string)")

    env = table.get("env", {})
    if not isinstance(env, Mapping):
        raise bad("env", "must be a table of variable names and string values")
    for key, value in env.items():
        if not ENV_NAME.fullmatch(key):
            raise bad(f"env.{key}", "is not a variable name")
        if not isinstance(value, str) or "\x00" in value:
            raise bad(f"env.{key}", "must be a string")

    return Command(
        name=name,
        argv=tuple(items),
        params=params,
        role=parsed_role,
        level=Scope(level),
        timeout=float(timeout) if timeout is not None else None,
        cwd=cwd,
        env=dict(env),
        grace=float(grace),
    )


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _pieces(item: str, where: str, bad: Callable[[str], SettingsError]) -> tuple[Piece, ...]:
    """`{name}` is a parameter, `{{` and `}}` are literal braces, any other brace is an error."""
    pieces: list[Piece] = []
    text: list[str] = []
    position = 0
    for match in ARGV_TOKEN.finditer(item):
        text.append(item[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            text.append(token[0])
        elif match.group(1) is not None:
            if not PARAM_NAME.fullmatch(match.group(1)):
                raise bad(f"{where}: {token} is not a parameter name "
                          "(write {{ and }} for literal braces)")
            if "".join(text):
                pieces.append((False, "".join(text)))
            text = []
            pieces.append((True, match.group(1)))
        else:
            raise bad(f"{where}: a lone '{token}' (write {{{{ and }}}} for literal braces)")
    text.append(item[position:])
    if "".join(text) or not pieces:
        pieces.append((False, "".join(text)))
    return tuple(pieces)


# -- the job --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommandJob(JobSpec):
    """The `command` job: its parameters, level and role are those of the named command."""

    commands: Mapping[str, Command] = field(default_factory=dict)

    def parse_params(self, fields: Iterable[tuple[str, str | Upload]]) -> dict[str, Any]:
        given: dict[str, str] = {}
        for key, raw in fields:
            if key in given:
                raise BadParameter(key, "is given more than once")
            if isinstance(raw, Upload):
                raise BadParameter(key, "must be text, not a file")
            given[key] = raw
        name = given.pop("name", None)
        if name is None or not name:
            raise BadParameter("name", "is required: the command to run")
        command = self.commands.get(name)
        if command is None:
            if not self.commands:
                raise BadParameter("name", "names no command: none is declared on this server")
            raise BadParameter("name", f"names no declared command: '{name[:40]}'")
        return {"name": command.name, **command.parse(given)}

    def check(self, who: Principal, group: Group | None, params: dict[str, Any]) -> None:
        """The named command's own level and role (the service checked the lowest of all)."""
        command = self.commands[params["name"]]
        if not command.level.allows(server_level=group is None):
            where = "at server level" if group is None else "in a group"
            raise BadParameter("name", f"command '{command.name}' cannot run {where}")
        if group is not None and not who.has_role(group.id, command.role):
            raise Forbidden(
                f"Command '{command.name}' needs the role {command.role.label} in '{group.name}'"
            )


def command_job(settings: Settings) -> CommandJob:
    """The `command` job for the commands of `settings` (raises SettingsError when one is bad)."""
    commands = parse_commands(settings.commands)
    levels = {command.level for command in commands.values()}
    if levels == {Scope.GROUP}:
        scope = Scope.GROUP
    elif levels == {Scope.SERVER}:
        scope = Scope.SERVER
    else:
        scope = Scope.BOTH
    group_roles = [c.role for c in commands.values() if c.level is not Scope.SERVER]
    role = min(group_roles, default=Role.CONTRIBUTOR)

    async def command(ctx: Context) -> None:
        """Run a command declared in the settings; its output is the thread's log."""
        name = ctx.params.get("name")
        declared = commands.get(name) if isinstance(name, str) else None
        if declared is None:
            raise CommandFailed(f"No command named '{name}' is declared on this server any more")
        values = declared.parse(
            {k: v for k, v in ctx.params.items() if k != "name" and isinstance(v, str)}
        )
        await run_command(ctx, declared, declared.argv_for(values))

    return CommandJob(
        name="command",
        fn=command,
        scope=scope,
        role=role,
        title="Command thread",
        description=(command.__doc__ or "").strip(),
        commands=commands,
    )


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
                await _exited(process)
        except TimeoutError:
            timed_out = True
            await ctx.log(
                f"Command '{name}' timed out after {command.timeout:g} seconds; stopping it",
                Level.WARN,
            )
            await _terminate(process, pgid, command.grace)
    except asyncio.CancelledError:
        await _terminate(process, pgid, command.grace)
        raise
    finally:
        _killpg(pgid, signal.SIGKILL)  # whatever the command left behind in its group
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
        raise CommandFailed(f"Command '{name}' was killed by signal {_signal_name(-status)}")
    if status != 0:
        raise CommandFailed(f"Command '{name}' exited with status {status}")
    await ctx.message(f"Command '{name}' completed")


async def _terminate(process: asyncio.subprocess.Process, pgid: int, grace: float) -> None:
    """SIGTERM the group; SIGKILL it once the process ended or after `grace` seconds.

    Returns once the process has ended. A cancel arriving meanwhile kills at once, and is
    raised again after the process has ended, so that nothing is left running."""
    cancelled = False
    _killpg(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(_exited(process), grace)
    except TimeoutError:
        log.info("process group %d outlived its %g s grace; killing it", pgid, grace)
    except asyncio.CancelledError:
        cancelled = True
    _killpg(pgid, signal.SIGKILL)
    while True:
        try:
            await _exited(process)
            break
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _exited(process: asyncio.subprocess.Process) -> int:
    """The exit status, once the process has ended. Not `process.wait()`: on Python 3.11 that
    also waits for the end of its output, which a process left behind may hold open."""
    while (status := process.returncode) is None:
        await asyncio.sleep(EXIT_POLL_SECONDS)
    return status


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
