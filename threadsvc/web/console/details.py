"""What a thread page shows beyond the thread's own fields: how long it queued and ran, the
timeline of its status changes, and its parameters as a reader wants them.

Threat model: everything here is drawn from a thread the service has already let the viewer
see; the parameters come only from Service.parameters, which says who may read them (and
never gives where an upload is kept). Values are text for the templates, which escape them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from threadsvc.models import Status, Thread
from threadsvc.web.console.pages import size


@dataclass(frozen=True)
class Step:
    """One status change: the status, and when (None: reached at a moment nobody kept)."""

    status: Status
    at: int | None
    note: str = ""


@dataclass(frozen=True)
class Shown:
    """A parameter as a page shows it: text, or files (name and size)."""

    name: str
    text: str | None
    files: list[tuple[str, str]]


def duration(ms: int) -> str:
    """`850 ms`, `42 s`, `3 min 5 s`, `2 h 7 min`, `3 d 4 h`: two units at most."""
    if ms < 1000:
        return f"{max(ms, 0)} ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def queued(thread: Thread, now: int) -> tuple[str, bool] | None:
    """How long it waited to be claimed, and whether it still waits (None: it never ran)."""
    if thread.started is not None:
        return duration(thread.started - thread.created), False
    if thread.final:
        return None  # cancelled (or failed) before any node took it
    return duration(now - thread.created), True


def ran(thread: Thread, now: int) -> tuple[str, bool] | None:
    """How long it ran, and whether it still runs (None: it has not started)."""
    if thread.started is None:
        return None
    if thread.ended is not None:
        return duration(thread.ended - thread.started), False
    return duration(now - thread.started), True


def timeline(thread: Thread) -> list[Step]:
    """The status changes the store keeps the moment of: created (initialised), claimed
    (inprogress) and ended (its final status). A running thread's `warning` or `error` is
    the latest step, without a time: the store keeps its count of warnings and errors, and
    the log their moments."""
    steps = [Step(Status.INITIALISED, thread.created)]
    if thread.started is not None:
        steps.append(Step(Status.INPROGRESS, thread.started))
    if thread.status in (Status.WARNING, Status.ERROR):
        steps.append(Step(thread.status, None, "now"))
    if thread.final:
        note = "before it started" if thread.started is None else ""
        steps.append(Step(thread.status, thread.ended, note))
    elif thread.cancel_requested:
        steps.append(Step(thread.status, None, "cancel requested"))
    return steps


def parameters(found: dict[str, Any] | None) -> list[Shown] | None:
    """Each parameter given (or defaulted) as text, or its uploaded files by name and size;
    None when the viewer may not see them."""
    if found is None:
        return None
    shown = []
    for name, value in sorted(found.items()):
        if value is None or value == []:
            continue  # not given, and without a default: nothing to say
        items = value if isinstance(value, list) else [value]
        if items and all(isinstance(item, dict) for item in items):
            files = [(str(f.get("name") or "(no name)"), size(int(f.get("size") or 0)))
                     for f in items]
            shown.append(Shown(name, None, files))
        elif isinstance(value, list):
            shown.append(Shown(name, ", ".join(str(v) for v in value), []))
        else:
            shown.append(Shown(name, str(value), []))
    return shown
