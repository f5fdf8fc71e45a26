"""The store's threads and their logs, written once over the dialect primitives (dialect.py);
but for the insert of a start (`_insert`), each store's own, as their ways of making its checks
(starts.py) atomic with it differ: SQLite's one writer, PostgreSQL's advisory locks."""

from __future__ import annotations

import abc
from collections.abc import Mapping

from threadsvc.models import (
    ActiveLimits,
    Actor,
    Level,
    LogEvent,
    LogPage,
    NewLogEvent,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
)
from threadsvc.store import fair
from threadsvc.store.audit import Audit
from threadsvc.store.dialect import Tx
from threadsvc.store.listing import list_query
from threadsvc.store.rows import thread_from_row
from threadsvc.store.starts import Start
from threadsvc.store.webhooks import WebhookRules


class ClaimedLogSeqs:
    """The last log seq of each thread of the latest claim, which `claim_threads` reads in its
    own transaction: the runner asks `last_log_seq` right after claiming, to number the thread's
    next events, and a hit saves a query per thread. Each is given once; a miss (another claim
    came between) is simply asked of the store. Nothing but this node appends to the log of a
    thread it just claimed, so the value is still right when it is asked for."""

    def __init__(self) -> None:
        self._seqs: dict[str, int] = {}

    def remember(self, seqs: dict[str, int]) -> None:
        self._seqs = seqs

    def take(self, thread_id: str) -> int | None:
        return self._seqs.pop(thread_id, None)


class ThreadRules(WebhookRules):
    def __init__(self) -> None:
        self._claimed_seqs = ClaimedLogSeqs()

    async def insert_thread(
        self,
        thread: Thread,
        first_event: LogEvent,
        *,
        limits: ActiveLimits | None = None,
        idempotency_key: str | None = None,
        idempotency_since: int = 0,
        request_hash: str | None = None,
    ) -> tuple[Thread, bool]:
        """Store a new `initialised` thread with the first event of its log; durable on return.

        Atomically: when the same user started a thread in the same group (or at server level)
        with `idempotency_key` created at or after `idempotency_since`, nothing is stored and
        that thread is returned with False, unless it was started with another `request_hash`
        (what was asked: job and parameters), which raises Conflict;
        when `limits` would be exceeded, TooManyActiveThreads is raised and nothing is stored.
        Otherwise returns (thread, True)."""
        start = Start(
            thread, first_event, limits, idempotency_key, idempotency_since, request_hash
        )
        return await self._insert(start)

    @abc.abstractmethod
    async def _insert(self, start: Start) -> tuple[Thread, bool]:
        """Each store's own: the checks of a start and its insert, atomic."""

    async def get_thread(self, thread_id: str) -> Thread | None:
        async def do(tx: Tx) -> Thread | None:
            row = await tx.one("get_thread", {"id": thread_id})
            return None if row is None else thread_from_row(row)

        return await self._read(do)

    async def get_threads(self, thread_ids: list[str]) -> list[Thread]:
        """The threads of these ids that exist, in one read (a live list's page, when its
        stream opens); in no particular order."""
        async def do(tx: Tx) -> list[Thread]:
            rows = await tx.all("get_threads", {"ids": tx.array(sorted(set(thread_ids)))})
            return [thread_from_row(row) for row in rows]

        return await self._read(do) if thread_ids else []

    async def list_threads(self, query: ThreadFilter) -> ThreadPage:
        """Newest first; `total` counts every thread matching, across pages."""
        async def do(tx: Tx) -> ThreadPage:
            plan = list_query(query, tx.array(sorted(s.value for s in query.statuses)))
            if plan.counted:
                found = await tx.one(*plan.counts())
                assert found is not None
                total, bucket = found["total"], found["bucket"]
                rows = [] if bucket is None else await tx.all(*plan.rows(bucket, found["newer"]))
            else:
                rows = await tx.all(*plan.rows())
                total = await tx.value(*plan.total())
            return ThreadPage(
                threads=[thread_from_row(row) for row in rows],
                total=total,
                page=query.page,
                pagesize=query.pagesize,
            )

        return await self._snapshot(do)

    async def claim_threads(
        self,
        node: str,
        limit: int,
        now: int,
        *,
        slots: int = 0,
        share: float = 1.0,
        concurrency: Mapping[str, int] | None = None,
    ) -> list[Thread]:
        """Move up to `limit` `initialised` threads to `inprogress` on `node`, chosen fairly
        (store/fair.py) for a node of `slots` (0: `limit` and what it runs) and `share`, and so
        that no job of `concurrency` (job name -> most) has more than its most running on all
        nodes together (claims take turns: each counts what the ones before it claimed)."""
        async def do(tx: Tx) -> tuple[list[Thread], dict[str, int]]:
            await tx.lock("lock_claims")
            running = [
                ((row["group_id"], row["username"]), row["n"])
                for row in await tx.all("running_on_node", {"node": node})
            ]
            free: dict[str, int] = {}  # of the jobs with a limit: how many more may run
            if concurrency:
                jobs = {row["job"]: row["n"] for row in await tx.all("running_by_job")}
                free = {job: most - jobs.get(job, 0) for job, most in concurrency.items()}
                heads = await tx.all("waiting_heads_by_job", {"limit": limit})
            else:
                heads = await tx.all("waiting_heads", {"limit": limit, "node": node})
            waiting = [
                fair.Waiting(row["seq"], row["group_id"], row["username"], row["job"] if concurrency else "")
                for row in heads
            ]
            size = slots or limit + sum(n for _, n in running)
            seqs = fair.pick(running, waiting, limit, size, share, free)
            if not seqs:
                return [], {}
            args = {"node": node, "seqs": tx.array(seqs), "now": now}
            rows = await tx.all("claim_threads", args)
            claimed = [thread_from_row(row) for row in sorted(rows, key=lambda r: r["seq"])]
            await self._status_changed(tx, claimed)
            return claimed, await tx.claimed_log_seqs(rows)

        claimed, seqs = await self._write(do)
        self._claimed_seqs.remember(seqs)  # once committed: a rolled-back claim took nothing
        return claimed

    async def write_batch(
        self,
        node: str,
        threads: list[Thread],
        status_changes: list[Thread],
        events: list[NewLogEvent],
        now: int,
    ) -> set[str]:
        """In one transaction: log events, then the reported state (status, message, progress,
        counts, ended, result, version; heartbeat = now) of threads that `node` runs, then the
        webhook deliveries of each status change (`status_changes`, oldest first).

        Returns the ids whose state was not written because the thread is no longer this
        node's to run (it was recovered elsewhere or is already final)."""
        async def do(tx: Tx) -> set[str]:
            # The threads' rows first: on PostgreSQL a recovery (which locks the row, then
            # appends to the log) then waits for this batch instead of deadlocking with it.
            # Inside the transaction the order is not visible.
            lost = await tx.update_running(node, threads, now)
            await tx.insert_events(events)
            await self._status_changed(tx, [t for t in status_changes if t.id not in lost])
            return lost

        return await self._write(do)

    async def cancel_initialised(
        self, thread_id: str, message: str, event: LogEvent, *, by: Actor | None = None
    ) -> Thread | None:
        """End an `initialised` thread as cancelled at `event.timestamp` (it never started),
        with `message` and `event` appended to its log; None if it was not `initialised`."""
        now = event.timestamp

        async def do(tx: Tx, audit: Audit) -> Thread | None:
            args = {"id": thread_id, "now": now, "message": message}
            row = await tx.one("cancel_initialised", args)
            if row is None:
                return None
            await tx.run(
                "append_log_event",
                {"thread_id": thread_id, "ts": now, "level": int(event.level), "text": event.text},
            )
            cancelled = thread_from_row(row)
            await self._status_changed(tx, [cancelled])
            await audit(tx, "thread.cancel", thread_id, group_id=cancelled.group_id,
                        detail=f"{cancelled.job}, initialised")
            return cancelled

        return await self._audited(by, do)

    async def request_cancel(self, thread_id: str, *, by: Actor | None = None) -> bool:
        """Flag a running thread so that the node running it cancels it; False when it is not
        running (any more)."""
        async def do(tx: Tx, audit: Audit) -> bool:
            row = await tx.one("request_cancel", {"id": thread_id})
            if row is None:
                return False
            await audit(tx, "thread.cancel", thread_id, group_id=row["group_id"],
                        detail=f"{row['job']}, {row['status']}")
            return True

        return await self._audited(by, do)

    async def cancel_requests(self, node: str) -> list[str]:
        """Ids of threads running on `node` that were asked to cancel."""
        async def do(tx: Tx) -> list[str]:
            return [row["id"] for row in await tx.all("cancel_requests", {"node": node})]

        return await self._read(do)

    async def heartbeat(self, node: str, now: int) -> None:
        await self._write(lambda tx: tx.run("heartbeat", {"node": node, "now": now}))

    async def running_threads(self) -> list[Thread]:
        """Every thread in a running status, oldest first."""
        return await self._read(lambda tx: _threads(tx, "running_threads", None))

    async def recover_thread(
        self, thread: Thread, requeue: bool, message: str, now: int, level: Level
    ) -> Thread | None:
        """End `thread` failed (or put it back to `initialised` when `requeue`) with `message`
        logged, if it is still running on the node it had; None when another did it first."""
        async def do(tx: Tx) -> Thread | None:
            query = "requeue_orphan" if requeue else "fail_orphan"
            args = {"id": thread.id, "node": thread.node, "now": now, "message": message}
            row = await tx.one(query, args)
            if row is None:
                return None
            await tx.run(
                "append_log_event",
                {"thread_id": thread.id, "ts": now, "level": int(level), "text": message},
            )
            recovered = thread_from_row(row)
            await self._status_changed(tx, [recovered])
            return recovered

        return await self._write(do)

    async def delete_thread(self, thread_id: str, *, by: Actor | None = None) -> bool:
        """Delete a final thread with its log; False when it is absent or not final."""
        async def do(tx: Tx, audit: Audit) -> bool:
            row = await tx.one("delete_thread", {"id": thread_id})
            if row is None:
                return False
            await tx.run("delete_logs", {"id": thread_id})
            await audit(tx, "thread.delete", thread_id, group_id=row["group_id"],
                        detail=f"{row['job']}, {row['status']}")
            return True

        return await self._audited(by, do)

    async def get_logs(self, thread_id: str, since: int, limit: int, level: Level) -> LogPage:
        return await self._snapshot(
            lambda tx: _log_page(tx, "get_logs", thread_id, since, limit, {"level": int(level)}))

    async def search_logs(
        self, thread_id: str, text: str, since: int, limit: int, level: Level
    ) -> LogPage:
        """The events after `since`, at `level` or above, whose text holds `text` (letters A-Z
        in either case), oldest first: a page as `get_logs` gives, whose `next` is the last
        event found (or `since`) and `total` the whole log's count."""
        args = {"level": int(level), "pattern": like_pattern(text)}
        return await self._snapshot(
            lambda tx: _log_page(tx, "search_logs", thread_id, since, limit, args))

    async def expired_results(self, now: int, limit: int) -> list[Thread]:
        """Threads whose result file is still kept although its deletion moment has come."""
        args = {"now": now, "limit": limit}
        return await self._read(lambda tx: _threads(tx, "expired_results", args))

    async def forget_result_file(self, thread_id: str) -> None:
        """Record that the thread's result file is deleted (its deletion moment stays)."""
        await self._write(lambda tx: tx.run("forget_result_file", {"id": thread_id}))

    async def ended_before(self, moment: int, limit: int) -> list[Thread]:
        """Final threads that ended before `moment`, oldest first."""
        args = {"moment": moment, "limit": limit}
        return await self._read(lambda tx: _threads(tx, "ended_before", args))

    async def threads_by_ids(self, ids: list[str]) -> list[Thread]:
        """The threads of these ids that exist, in no set order (the purge's orphan check)."""
        if not ids:
            return []

        async def do(tx: Tx) -> list[Thread]:
            rows = await tx.all("threads_by_ids", {"ids": tx.array(ids)})
            return [thread_from_row(row) for row in rows]

        return await self._read(do)

    async def forget_idempotency_keys(self, created_before: int) -> int:
        """Clear idempotency keys of threads created before the moment; how many."""
        args = {"before": created_before}
        return await self._write(lambda tx: tx.run("forget_idempotency_keys", args))

    async def last_log_seq(self, thread_id: str) -> int:
        claimed = self._claimed_seqs.take(thread_id)
        if claimed is not None:
            return claimed

        async def do(tx: Tx) -> int:
            return int(await tx.value("last_log_seq", {"thread_id": thread_id}))

        return await self._read(do)

    async def database_now(self) -> int | None:
        """The database server's clock (epoch ms), where nodes share it; None for a store one
        node owns (runner/clock.py)."""
        async def do(tx: Tx) -> int | None:
            value = await tx.value("database_now")
            return None if value is None else int(value)

        return await self._read(do)

    async def count_by_status(self) -> dict[Status, int]:
        async def do(tx: Tx) -> dict[Status, int]:
            rows = await tx.all("count_threads_by_status")
            return {Status(row["status"]): row["count"] for row in rows}

        return await self._read(do)

    async def count_by_group_and_status(self) -> dict[int, dict[Status, int]]:
        """How many threads each group (SERVER_GROUP_ID: the server level) has in each status,
        from one query over the trigger-kept counts; a group or status without threads is
        left out."""
        async def do(tx: Tx) -> dict[int, dict[Status, int]]:
            found: dict[int, dict[Status, int]] = {}
            for row in await tx.all("count_threads_by_group_status"):
                found.setdefault(int(row["group_id"]), {})[Status(row["status"])] = int(row["count"])
            return found

        return await self._read(do)


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape character `\\`) matching any text that holds `text`."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def _log_page(
    tx: Tx, query: str, thread_id: str, since: int, limit: int, args: dict[str, object]
) -> LogPage:
    """A page of `limit` events at most from `query`, asked for one more (is there more?)."""
    rows = await tx.all(query, {**args, "thread_id": thread_id, "since": since, "limit": limit + 1})
    total = await tx.value("last_log_seq", {"thread_id": thread_id})
    events = [
        LogEvent(row["seq"], row["ts"], Level(row["level"]), row["text"]) for row in rows[:limit]
    ]
    return LogPage(
        thread_id=thread_id,
        events=events,
        total=total,
        next=events[-1].seq if events else since,
        more=len(rows) > limit,
    )


async def _threads(tx: Tx, name: str, args: dict[str, int] | None) -> list[Thread]:
    return [thread_from_row(row) for row in await tx.all(name, args)]
