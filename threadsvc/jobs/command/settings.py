r"""The `[commands.NAME]` tables of the settings, checked into `Command`s.

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

`parse_commands` checks every table (a SettingsError names the command and the key); a
parameter's value is checked against its pattern when a thread starts (`Command.parse`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from threadsvc.errors import BadParameter
from threadsvc.models import Role, Scope
from threadsvc.settings import Bad, SettingsError, named_table

GRACE_SECONDS = 10.0  # between SIGTERM and SIGKILL (docs/api.md#jobs); a command may declare `grace`
MAX_VALUE = 10_000  # characters in one parameter value

KEYS = frozenset({"argv", "params", "role", "level", "timeout", "cwd", "env", "grace"})
RESERVED = frozenset({"name", "job"})  # fields the `command` job itself uses
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ARGV_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

# One piece of an argv item: literal text, or the name of a parameter to put there.
Piece = tuple[bool, str]  # (is_param, text or parameter name)


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


def parse_commands(tables: Mapping[str, Any]) -> dict[str, Command]:
    """Check the `[commands.NAME]` tables; a SettingsError names the command and the key."""
    return {name: _parse_command(name, table) for name, table in tables.items()}


def _parse_command(name: str, raw: Any) -> Command:
    table, bad = named_table("commands", name, raw, KEYS)
    params = _params(table.get("params", {}), bad)
    argv = _argv(table.get("argv"), params, bad)
    role = _role(table.get("role", "contributor"), bad)
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
    return Command(
        name=name,
        argv=argv,
        params=params,
        role=role,
        level=Scope(level),
        timeout=float(timeout) if timeout is not None else None,
        cwd=cwd,
        env=_env(table.get("env", {}), bad),
        grace=float(grace),
    )


def _params(raw: Any, bad: Bad) -> dict[str, re.Pattern[str]]:
    if not isinstance(raw, Mapping):
        raise bad("params", "must be a table of parameter names and patterns")
    params: dict[str, re.Pattern[str]] = {}
    for key, pattern in raw.items():
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
    return params


def _argv(
    argv: Any, params: Mapping[str, re.Pattern[str]], bad: Bad
) -> tuple[tuple[Piece, ...], ...]:
    """The argv items as pieces; every declared parameter is used, none in the program."""
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
        for text in (text for is_param, text in pieces if is_param):
            if text not in params:
                raise bad("argv", f"item {index}: {{{text}}} is not a declared parameter")
            if index == 0:
                raise bad("argv", "item 0 (the program) cannot hold a parameter")
            used.add(text)
        items.append(pieces)
    if not "".join(text for _, text in items[0]):
        raise bad("argv", "item 0 (the program) is empty")
    for key in params:
        if key not in used:
            raise bad(f"params.{key}", "is declared but used in no argv item")
    return tuple(items)


def _role(role: Any, bad: Bad) -> Role:
    roles = {r.label: r for r in Role}
    if not isinstance(role, str) or role.strip().lower() not in roles:
        raise bad("role", "must be reviewer, contributor, manager or approver")
    return roles[role.strip().lower()]


def _env(env: Any, bad: Bad) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise bad("env", "must be a table of variable names and string values")
    for key, value in env.items():
        if not ENV_NAME.fullmatch(key):
            raise bad(f"env.{key}", "is not a variable name")
        if not isinstance(value, str) or "\x00" in value:
            raise bad(f"env.{key}", "must be a string")
    return dict(env)


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
