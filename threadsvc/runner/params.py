"""Declared job parameters: each parses one form field and names itself when the value is bad."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from threadsvc.errors import BadParameter
from threadsvc.uploads import Upload


@dataclass(frozen=True)
class Param:
    """A parameter a job declares; `parse` turns the raw text into the value the job gets."""

    required: bool = False
    default: Any = None
    doc: str = ""
    multiple: bool = False  # may be given more than once (the job gets a list)

    def parse(self, name: str, raw: str) -> Any:
        return raw

    def accept(self, name: str, raw: str | Upload) -> Any:
        """Parse one value as received: text for text parameters, an upload for files."""
        if isinstance(raw, Upload):
            raise BadParameter(name, "must be text, not a file")
        return self.parse(name, raw)

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True)
class Text(Param):
    r"""`pattern` must match the whole value (`re.fullmatch`, so `$` never forgives a trailing
    newline) with ASCII classes (`re.ASCII`: `\d` is `[0-9]`, not every script's digits)."""

    pattern: str | None = None
    max_length: int = 10_000

    def parse(self, name: str, raw: str) -> Any:
        if len(raw) > self.max_length:
            raise BadParameter(name, f"is longer than {self.max_length} characters")
        if "\x00" in raw:
            raise BadParameter(name, "may not hold a NUL character")
        if self.pattern is not None and not re.fullmatch(self.pattern, raw, re.ASCII):
            raise BadParameter(name, f"must match {self.pattern}")
        return raw


@dataclass(frozen=True)
class Integer(Param):
    minimum: int | None = None
    maximum: int | None = None

    def parse(self, name: str, raw: str) -> Any:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?[0-9]{1,18}", text):
            raise BadParameter(name, f"must be a whole number, not '{raw[:40]}'")
        return _bounded(name, int(text), self.minimum, self.maximum)


@dataclass(frozen=True)
class Number(Param):
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, name: str, raw: str) -> Any:
        text = raw.strip()
        if not re.fullmatch(r"[+-]?([0-9]{1,18}(\.[0-9]*)?|\.[0-9]+)", text):
            raise BadParameter(name, f"must be a finite number, not '{raw[:40]}'")
        value = float(text)
        if not math.isfinite(value):
            raise BadParameter(name, "must be a finite number")
        return _bounded(name, value, self.minimum, self.maximum)


@dataclass(frozen=True)
class Choice(Param):
    choices: tuple[str, ...] = ()

    def parse(self, name: str, raw: str) -> Any:
        if raw not in self.choices:
            raise BadParameter(name, f"must be one of {', '.join(self.choices)}")
        return raw


@dataclass(frozen=True)
class File(Param):
    """An uploaded file (multipart); `multiple` for one or more. The job gets InputFiles
    through `ctx.files(name)`."""

    def accept(self, name: str, raw: str | Upload) -> Any:
        if not isinstance(raw, Upload):
            raise BadParameter(name, "must be a file (send the request as multipart/form-data)")
        return raw


def _bounded(name: str, value: Any, low: Any, high: Any) -> Any:
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadParameter(name, bounds_text(low, high))
    return value


def bounds_text(low: Any, high: Any) -> str:
    """What a value out of its declared bounds is told: only the bounds that were declared."""
    if low is not None and high is not None:
        return f"must be from {low} to {high}"
    if low is not None:
        return f"must be at least {low}"
    return f"must be at most {high}"


# The types a parameter is described with (the jobs service, openapi.json).
TYPES = frozenset({"text", "integer", "number", "boolean", "file", "choice"})


@dataclass(frozen=True)
class Described:
    """A parameter as the jobs service and openapi.json describe it: only what was declared."""

    type: str
    required: bool
    multiple: bool
    doc: str
    minimum: int | float | None = None
    maximum: int | float | None = None
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    max_length: int | None = None
    default: Any = None


def describe(param: Param) -> Described:
    """What `param` declares. A parameter type of a job's own is described as the type it
    derives from, else by its `kind` when that is one of TYPES, else as text (a form field)."""
    default = param.default if isinstance(param.default, str | int | float | bool) else None
    common: dict[str, Any] = {"required": param.required, "multiple": param.multiple,
                              "doc": param.doc, "default": default}
    if isinstance(param, Integer | Number):
        kind = "integer" if isinstance(param, Integer) else "number"
        return Described(kind, minimum=param.minimum, maximum=param.maximum, **common)
    if isinstance(param, Choice):
        return Described("choice", choices=param.choices, **common)
    if isinstance(param, Text):
        return Described("text", pattern=param.pattern, max_length=param.max_length, **common)
    if isinstance(param, File):
        return Described("file", **common)
    return Described(param.kind if param.kind in TYPES else "text", **common)
