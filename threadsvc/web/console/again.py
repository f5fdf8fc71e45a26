"""Run again: the start form of a thread's job, prefilled with the parameters it ran with.

Threat model: the thread is read with `Service.get_thread` and the signed-in user (who sees
it only where the API would show it), and the form is offered only when `Service.startable`
lets the user start the job there; starting stays the start form's own POST, checked as any
other. The values go back into the form escaped (Jinja). Uploaded files are not carried over:
a browser cannot prefill a file input, so the form names the files to choose again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from threadsvc.errors import BadParameter
from threadsvc.models import Principal, Thread
from threadsvc.runner.params import File
from threadsvc.runner.registry import JobSpec
from threadsvc.service import Service


@dataclass(frozen=True)
class Prefill:
    """A start form's values from an earlier thread, and the file parameters it had."""

    thread: Thread
    values: dict[str, str]
    files: list[str] = field(default_factory=list)  # "PARAM: name" of each file not carried


def run_again_link(service: Service, who: Principal, base: str, thread: Thread,
                   group: Any) -> str | None:
    """The start form for `thread` again, when it has ended and `who` may start its job here."""
    if not thread.final or thread.job not in service.startable(who, group):
        return None
    return f"{base}/start?job={thread.job}&again={thread.id}"


async def prefill(
    service: Service, who: Principal, ref: str | None, thread_id: str, spec: JobSpec,
) -> Prefill:
    thread = await service.get_thread(who, ref, thread_id)
    if thread.job != spec.name:
        raise BadParameter("again", f"names a thread of the job '{thread.job}', not '{spec.name}'")
    values: dict[str, str] = {}
    more: list[str] = []
    files: list[str] = []
    for name, value in thread.params.items():
        if value is None:  # not given: left empty, so the job's default holds again
            continue
        items = value if isinstance(value, list) else [value]
        if isinstance(spec.params.get(name), File) or any(isinstance(i, dict) for i in items):
            files.extend(f"{name}: {i.get('name', '?')}" for i in items if isinstance(i, dict))
            continue
        texts = [_text(item) for item in items]
        if name in spec.params and texts:  # its own input holds one value; more go below
            values[name], texts = texts[0], texts[1:]
        more.extend(f"{name}={text}" for text in texts)
    if more:
        values["more"] = "\n".join(more)
    return Prefill(thread, values, files)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
