"""The administrators' controls, as the store keeps them, written once over the dialect
primitives: paused jobs, which every node's claim passes over (the waiting_heads queries read
`paused_jobs`, so a pause holds across nodes sharing the store with no extra query per claim),
and a row per node, which the node beats every few seconds with what it runs and may run and
which carries back what an administrator asked of it (another max-running, a drain).

The changes an administrator makes are audited in their own transaction (audit.py); a node's
beats are not (they are the node's own state)."""

from __future__ import annotations

from dataclasses import dataclass

from threadsvc.models import Actor
from threadsvc.store.audit import Audit, AuditRules
from threadsvc.store.dialect import Row, Tx


@dataclass(frozen=True, slots=True)
class PausedJob:
    job: str
    paused: int  # since when (epoch ms)
    actor: str | None  # who paused it


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node as it last said (times in epoch ms)."""

    node: str
    started: int
    seen: int  # its last beat
    running: int  # threads it ran then
    capacity: int  # the max-running it claimed up to then
    max_running: int | None  # what an administrator set (None: its own setting)
    draining: bool  # asked to claim nothing more
    drained: bool  # it has stopped claiming

    @property
    def empty(self) -> bool:
        """Drained, and nothing left running: it may be stopped."""
        return self.draining and self.drained and self.running == 0


@dataclass(frozen=True, slots=True)
class NodeOrders:
    """What a node is asked to do, as its beat reads it."""

    max_running: int | None
    draining: bool


class ControlRules(AuditRules):
    # -- jobs -------------------------------------------------------------------------------
    async def pause_job(self, job: str, now: int, *, by: Actor | None = None) -> bool:
        """Pause `job`: no node claims its waiting threads until it is resumed (running ones
        go on). False when it was paused already (nothing changes, nothing is audited)."""
        async def do(tx: Tx, audit: Audit) -> bool:
            args = {"job": job, "now": now, "actor": by.name if by else None}
            if await tx.run("pause_job", args) == 0:
                return False
            await audit(tx, "job.pause", job)
            return True

        return await self._audited(by, do)

    async def resume_job(self, job: str, *, by: Actor | None = None) -> bool:
        """Resume a paused job; False when it was not paused."""
        async def do(tx: Tx, audit: Audit) -> bool:
            if await tx.run("resume_job", {"job": job}) == 0:
                return False
            await audit(tx, "job.resume", job)
            return True

        return await self._audited(by, do)

    async def paused_jobs(self) -> list[PausedJob]:
        """The paused jobs, by name."""
        async def do(tx: Tx) -> list[PausedJob]:
            rows = await tx.all("paused_jobs")
            return [PausedJob(row["job"], row["paused"], row["actor"]) for row in rows]

        return await self._read(do)

    # -- nodes ------------------------------------------------------------------------------
    async def node_started(self, node: str, now: int, capacity: int) -> None:
        """A node starts: its row afresh, with nothing asked of it (a restart after a drain
        claims again, at its own setting)."""
        args = {"node": node, "now": now, "capacity": capacity}
        await self._write(lambda tx: tx.run("node_started", args))

    async def node_beat(
        self, node: str, now: int, *, running: int, capacity: int, drained: bool
    ) -> NodeOrders:
        """Record what `node` runs and may run now, and whether it has stopped claiming; return
        what is asked of it."""
        args = {"node": node, "now": now, "running": running, "capacity": capacity,
                "drained": int(drained)}

        async def do(tx: Tx) -> NodeOrders:
            row = await tx.one("node_beat", args)
            assert row is not None
            return NodeOrders(row["max_running"], bool(row["draining"]))

        return await self._write(do)

    async def set_node_max_running(
        self, node: str, most: int | None, *, by: Actor | None = None
    ) -> NodeRow | None:
        """Ask `node` to claim up to `most` threads (None: its own setting again); the node
        row as it now stands, or None when no node of that name has beaten."""
        async def do(tx: Tx, audit: Audit) -> NodeRow | None:
            if await tx.run("set_node_max_running", {"node": node, "most": most}) == 0:
                return None
            await audit(tx, "node.max-running", node,
                        detail="its setting" if most is None else str(most))
            return _node(await tx.one("get_node", {"node": node}))

        return await self._audited(by, do)

    async def set_node_draining(
        self, node: str, draining: bool, *, by: Actor | None = None
    ) -> NodeRow | None:
        """Ask `node` to claim nothing more (`draining`), or to claim again; the node row as
        it now stands, or None when no node of that name has beaten."""
        async def do(tx: Tx, audit: Audit) -> NodeRow | None:
            args = {"node": node, "draining": int(draining)}
            if await tx.run("set_node_draining", args) == 0:
                return None
            await audit(tx, "node.drain" if draining else "node.undrain", node)
            return _node(await tx.one("get_node", {"node": node}))

        return await self._audited(by, do)

    async def get_node(self, node: str) -> NodeRow | None:
        async def do(tx: Tx) -> NodeRow | None:
            return _node(await tx.one("get_node", {"node": node}))

        return await self._read(do)

    async def list_nodes(self, seen_since: int) -> list[NodeRow]:
        """The nodes that beat at or after `seen_since`, by name."""
        async def do(tx: Tx) -> list[NodeRow]:
            rows = await tx.all("list_nodes", {"since": seen_since})
            return [n for n in map(_node, rows) if n is not None]

        return await self._read(do)


def _node(row: Row | None) -> NodeRow | None:
    if row is None:
        return None
    return NodeRow(row["node"], row["started"], row["seen"], row["running"], row["capacity"],
                   row["max_running"], bool(row["draining"]), bool(row["drained"]))
