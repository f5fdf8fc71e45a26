"""The administrators' controls of a running server, as Oban Web has them: pause and resume a
job, change a node's max-running, drain a node before an upgrade (and undo it). One function
each, on a store and the `Actor` the audit log names: the command line calls them as the
operator (cli/controls.py), the HTTP services and the console through `Service`, which first
checks that the caller is an administrator. The state is the store's (store/controls.py), so
every node sharing it obeys: a paused job's threads wait `initialised` on every node, and a
node picks up what is asked of it at its next beat (runner/runner.py, NODE_SECONDS).

Threat model: job and node names and the max-running come from an administrator's form, a
query or the command line: each is checked (bounded, visible characters, a number in range)
before it reaches the store, always as a bound parameter; a node that never beat is refused.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from threadsvc.errors import BadParameter
from threadsvc.models import Actor, now_ms
from threadsvc.runner.runner import MOST_RUNNING, NODE_SECONDS
from threadsvc.store.base import Store
from threadsvc.store.controls import NodeRow, PausedJob

NAME = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")  # a job or node name: visible, no spaces
SHOWN_SINCE_MS = 24 * 3600 * 1000  # nodes listed: those that beat in the last day


def checked_name(what: str, value: str | None) -> str:
    if value is None or NAME.fullmatch(value) is None:
        raise BadParameter(what, "must be 1 to 200 visible characters without spaces")
    return value


def checked_max_running(value: str | int | None) -> int | None:
    """A node's max-running as asked: 1 to MOST_RUNNING, or `default` / empty (its setting)."""
    if value is None or value in ("", "default"):
        return None
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and len(value) <= 6):
            raise BadParameter("max-running", f"must be 1 to {MOST_RUNNING} or 'default'")
        value = int(value)
    if not 1 <= value <= MOST_RUNNING:
        raise BadParameter("max-running", f"must be 1 to {MOST_RUNNING} or 'default'")
    return value


@dataclass(frozen=True)
class NodeView:
    """A node as an administrator sees it: its row, and how old its last beat is."""

    row: NodeRow
    age: float  # seconds since its last beat
    stale: bool  # older than lease-timeout: it stopped, or cannot reach the store

    @property
    def name(self) -> str:
        return self.row.node


def view(row: NodeRow, lease_timeout: float, now: int | None = None) -> NodeView:
    age = max(0.0, ((now if now is not None else now_ms()) - row.seen) / 1000)
    return NodeView(row, age, age > lease_timeout)


async def pause_job(store: Store, job: str, by: Actor) -> bool:
    """False when it was paused already."""
    return await store.pause_job(checked_name("job", job), now_ms(), by=by)


async def resume_job(store: Store, job: str, by: Actor) -> bool:
    """False when it was not paused."""
    return await store.resume_job(checked_name("job", job), by=by)


async def paused_jobs(store: Store) -> list[PausedJob]:
    return await store.paused_jobs()


async def set_max_running(store: Store, node: str, most: str | int | None, by: Actor) -> NodeRow:
    """Ask `node` to claim up to `most` (None, '' or 'default': its own setting again)."""
    found = await store.set_node_max_running(
        checked_name("node", node), checked_max_running(most), by=by
    )
    return _found(found)


async def drain(store: Store, node: str, by: Actor, draining: bool = True) -> NodeRow:
    """Ask `node` to claim nothing more (`draining`), or to claim again."""
    return _found(await store.set_node_draining(checked_name("node", node), draining, by=by))


async def nodes(store: Store, lease_timeout: float) -> list[NodeView]:
    """The nodes that beat in the last day, by name."""
    now = now_ms()
    return [view(row, lease_timeout, now) for row in await store.list_nodes(now - SHOWN_SINCE_MS)]


async def wait_until_empty(
    store: Store, node: str, lease_timeout: float, seconds: float
) -> NodeView:
    """Poll `node` until it is empty (drained, nothing running), stopped (stale), or `seconds`
    seconds have passed; the node as last read."""
    deadline = time.monotonic() + seconds
    while True:
        found = view(_found(await store.get_node(checked_name("node", node))), lease_timeout)
        if found.row.empty or found.stale or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(min(NODE_SECONDS / 2, max(0.0, deadline - time.monotonic())))


def _found(row: NodeRow | None) -> NodeRow:
    if row is None:
        raise BadParameter("node", "names no node that has run with this store")
    return row
