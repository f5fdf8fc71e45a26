"""The figures of the dashboard, written once over the dialect primitives: a few aggregate
queries over one time range on one snapshot (sql/dashboard.sql), each read through an index
on its time, so that the cost follows the threads of the range, not the store.

Nothing here decides who sees what: the caller passes the groups to count (service.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from threadsvc.models import Status
from threadsvc.store.dialect import Row, Transactions, Tx

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class Spread:
    """Nearest-rank percentiles of some durations (ms), and how many there were."""

    count: int = 0
    p50: int = 0
    p90: int = 0
    p99: int = 0
    longest: int = 0


@dataclass(frozen=True, slots=True)
class Figures:
    """The dashboard's figures from `since` on, in buckets `width` ms wide (bucket i starts at
    since + i * width)."""

    since: int
    width: int
    buckets: int
    created: list[int]  # threads created in each bucket
    ended: dict[Status, list[int]]  # threads that ended in each bucket, by final status
    queued: int  # threads waiting now
    queued_paused: int  # of which, threads of paused jobs
    oldest_queued: int | None  # when the oldest waiting thread was created
    waits: Spread  # how long the threads started in the range waited
    run_times: dict[str, Spread] = field(default_factory=dict)  # by job

    @property
    def finished(self) -> int:
        return sum(sum(counts) for counts in self.ended.values())

    @property
    def failure_rate(self) -> float | None:
        """The share of the threads ended in the range that failed (None: none ended)."""
        finished = self.finished
        return None if finished == 0 else sum(self.ended[Status.FAILED]) / finished


class DashboardRules(Transactions):
    async def dashboard(
        self, since: int, width: int, buckets: int, groups: Sequence[int] | None
    ) -> Figures:
        """The figures of the threads of `groups` (None: every thread) from `since` on."""
        async def do(tx: Tx) -> Figures:
            args: dict[str, object] = {"since": since, "width": width}
            where: list[str] = []
            if groups is not None:
                where.append("filter_dash_groups")
                args["groups"] = tx.array(sorted(groups))
            created = [0] * buckets
            for row in await tx.all("dash_created", args, where):
                if 0 <= row["b"] < buckets:
                    created[row["b"]] += row["n"]
            ended = {s: [0] * buckets for s in Status if s.final}
            for row in await tx.all("dash_ended", args, where):
                status = Status(row["status"])
                if status in ended and 0 <= row["b"] < buckets:
                    ended[status][row["b"]] += row["n"]
            queue = await tx.one("dash_queue", args, where)
            assert queue is not None
            waits = _spreads(await tx.all("dash_waits", args, where), None).get("", Spread())
            run_times = _spreads(await tx.all("dash_run_times", args, where), "job")
            return Figures(since, width, buckets, created, ended, queue["n"],
                           queue["paused"], queue["oldest"], waits, run_times)

        return await self._snapshot(do)


def _spreads(rows: list[Row], key: str | None) -> dict[str, Spread]:
    """The rows of a percentile query (n, k, d and maybe `key`) as a Spread per key."""
    ranked: dict[str, tuple[int, dict[int, int]]] = {}
    for row in rows:
        name = "" if key is None else row[key]
        ranked.setdefault(name, (row["n"], {}))[1][row["k"]] = row["d"]
    spreads = {}
    for name, (n, at) in ranked.items():
        p50, p90, p99 = (at.get((n * p + 99) // 100, 0) for p in PERCENTILES)
        spreads[name] = Spread(n, p50, p90, p99, at.get(n, 0))
    return dict(sorted(spreads.items()))
