"""The dialect primitives (dialect.py) on a SQLite connection, and SQLite's own rule: a start."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar, cast

from threadsvc.models import BEHIND, NewLogEvent, Thread, now_ms
from threadsvc.store.dialect import Args, Row, Tx, Where
from threadsvc.store.listing import statement
from threadsvc.store.queries import load_queries
from threadsvc.store.rows import insert_args, snapshot_json, state_args, thread_from_row
from threadsvc.store.starts import Start, check_limits, check_replay, count_active_args

T = TypeVar("T")
Q = load_queries("sqlite")


class SQLiteTx:
    """The dialect primitives (dialect.py) on a SQLite connection: each runs at once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def array(self, values: list[Any]) -> Any:
        return json.dumps(values)  # read with json_each

    def _execute(self, name: str, args: Args, where: Where) -> sqlite3.Cursor:
        return self.conn.execute(statement(Q, name, where), args or {})

    async def one(self, name: str, args: Args = None, where: Where = None) -> Row | None:
        return cast(Row | None, self._execute(name, args, where).fetchone())

    async def all(self, name: str, args: Args = None, where: Where = None) -> list[Row]:
        return cast(list[Row], self._execute(name, args, where).fetchall())

    async def value(self, name: str, args: Args = None, where: Where = None) -> Any:
        return self._execute(name, args, where).fetchone()[0]

    async def run(self, name: str, args: Args = None) -> int:
        return self._execute(name, args, None).rowcount

    async def many(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.conn.executemany(Q[name], rows)

    async def lock(self, name: str, args: Args = None) -> None:
        pass  # one write transaction at a time (BEGIN IMMEDIATE) holds the whole store

    async def claimed_log_seqs(self, claimed: list[Row]) -> dict[str, int]:
        # (Not a subquery in the claim's RETURNING: SQLite runs that one 30 times slower.)
        seqs = dict.fromkeys((row["id"] for row in claimed), 0)
        ids = json.dumps(list(seqs))
        rows = await self.all("last_log_seqs", {"ids": ids})
        seqs.update((row["thread_id"], row["log_seq"]) for row in rows)
        return seqs

    async def update_running(self, node: str, threads: list[Thread], now: int) -> set[str]:
        lost = set()
        for thread in threads:
            if await self.run("update_running_thread", state_args(thread, node, now)) == 0:
                lost.add(thread.id)
        return lost

    async def insert_events(self, events: list[NewLogEvent]) -> None:
        # Positional: executemany binds a tuple faster than a dict, which counts for big logs.
        self.conn.executemany(
            Q["insert_log_events"],
            [(e.thread_id, e.event.seq, e.event.timestamp, int(e.event.level), e.event.text)
             for e in events],
        )

    async def queue_deliveries(self, changes: list[Thread]) -> None:
        # Where no webhook exists, one look saves a snapshot and an insert per change (exact:
        # this transaction is the only writer, so none can appear before it commits).
        if await self.one("any_webhooks") is None:
            return
        now = now_ms()
        for thread in changes:
            await self.run(
                "queue_deliveries",
                {
                    "thread_id": thread.id,
                    "group_id": thread.group_id,
                    "event": "final" if thread.final else "status",
                    "snapshot": snapshot_json(thread),
                    "now": now,
                    "behind": BEHIND,
                },
            )


def run_now(rule: Coroutine[Any, Any, T]) -> T:
    """Run a rule over SQLiteTx to its end on this thread: its primitives never wait, so it
    ends at its first step (a rule that awaited anything else would be a bug)."""
    try:
        rule.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    rule.close()
    raise RuntimeError("a rule over SQLite waited for something")


async def insert_start(tx: Tx, start: Start) -> tuple[Thread, bool]:
    """A start's checks and insert. One write transaction at a time (BEGIN IMMEDIATE): the
    checks and the insert are atomic, so concurrent starts cannot overshoot a limit or
    duplicate a key."""
    thread, key = start.thread, start.idempotency_key
    if key is not None:
        mine = {"username": thread.username, "group_id": thread.group_id, "key": key,
                "since": start.idempotency_since}
        row = await tx.one("find_idempotent", mine)
        if row is not None:
            check_replay(key, row["request_hash"], start.request_hash)
            return thread_from_row(row), False
        await tx.run("release_idempotency_key", mine)
    if start.limits is not None:
        counts = await tx.one("count_active", count_active_args(thread, start.limits))
        assert counts is not None
        check_limits(thread, start.limits, counts["user_active"], counts["group_active"])
    args = insert_args(thread, start.first_event, key, start.request_hash)
    await tx.run("insert_thread", args)  # with its idempotency key
    await tx.insert_events([NewLogEvent(thread.id, start.first_event)])
    return thread, True
