"""The ticks of the schedules (runner/schedules.py), written once over the dialect primitives.

A tick is claimed by inserting its row: the primary key (name, tick) lets exactly one node do
so, however many try at once. The claimer then starts the thread and records it (or why the
start was refused). A claim left with neither (its node died between the two) is taken over
by another node once it is older than the lease; the thread's idempotency key makes a start
that did happen before the death come back rather than run twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from threadsvc.store.dialect import Transactions, Tx


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick of a schedule as the store has it (times in epoch milliseconds)."""

    name: str
    tick: int
    node: str
    claimed: int
    thread_id: str | None
    outcome: str | None  # why the start was refused


class ScheduleRules(Transactions):
    async def claim_tick(self, name: str, tick: int, node: str, now: int) -> bool:
        """Claim the tick for `node`; False when a node (this one included) claimed it before."""
        args = {"name": name, "tick": tick, "node": node, "now": now}
        return await self._write(lambda tx: tx.run("claim_tick", args)) == 1

    async def stale_ticks(self, stale: int, since: int) -> list[tuple[str, int]]:
        """(name, tick) of the ticks from `since` on claimed before `stale` and never recorded."""
        async def do(tx: Tx) -> list[tuple[str, int]]:
            rows = await tx.all("stale_ticks", {"stale": stale, "since": since})
            return [(row["name"], row["tick"]) for row in rows]

        return await self._read(do)

    async def retake_tick(self, name: str, tick: int, node: str, now: int, stale: int) -> bool:
        """Take over a tick claimed before `stale` and never recorded; False when it has been
        recorded or taken over since."""
        args = {"name": name, "tick": tick, "node": node, "now": now, "stale": stale}
        return await self._write(lambda tx: tx.run("retake_tick", args)) == 1

    async def record_tick(
        self,
        name: str,
        tick: int,
        node: str,
        *,
        thread_id: str | None,
        outcome: str | None,
        forget_before: int,
    ) -> bool:
        """Record the thread a tick started, or why its start was refused, if `node` still
        holds the tick (False: another took it over); and forget the schedule's ticks before
        `forget_before`, but for its latest."""
        async def do(tx: Tx) -> bool:
            args = {"name": name, "tick": tick, "node": node, "thread_id": thread_id,
                    "outcome": outcome}
            recorded = await tx.run("record_tick", args) == 1
            await tx.run("prune_ticks", {"name": name, "before": forget_before})
            return recorded

        return await self._write(do)

    async def last_ticks(self) -> dict[str, Tick]:
        """The latest tick the store has of each schedule, by name."""
        async def do(tx: Tx) -> dict[str, Tick]:
            rows = await tx.all("last_ticks")
            return {
                row["name"]: Tick(row["name"], row["tick"], row["node"], row["claimed"],
                                  row["thread_id"], row["outcome"])
                for row in rows
            }

        return await self._read(do)
