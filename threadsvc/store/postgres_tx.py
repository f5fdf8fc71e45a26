"""The dialect primitives (dialect.py) on a PostgreSQL connection: named queries, advisory locks,
and the batch writes as set-based statements (arrays, COPY)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from psycopg import AsyncConnection
from psycopg.rows import DictRow

from threadsvc.models import BEHIND, NewLogEvent, Thread, now_ms
from threadsvc.store.dialect import Args, Row, Where
from threadsvc.store.listing import statement
from threadsvc.store.queries import load_queries
from threadsvc.store.rows import columns, event_row, snapshot_json, state_args

Conn = AsyncConnection[DictRow]
Q = load_queries("postgres")
COPY_FROM = 500  # log events in a batch from which COPY stores them
_STATE_ARRAYS = (
    "id", "status", "message", "progress_current", "progress_total", "warnings", "errors",
    "ended", "version", "result_file", "result_type", "result_size", "result_name",
    "result_deletion",
)
_EVENT_ARRAYS = ("thread_id", "seq", "ts", "level", "text")
_EVENT_TYPES = ["text", "int8", "int8", "int4", "text"]  # of COPY's binary format, column by column


class PostgresTx:
    """The dialect primitives (dialect.py) on a PostgreSQL connection."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def array(self, values: list[Any]) -> Any:
        return values  # psycopg sends a list as an array

    async def _execute(self, name: str, args: Args, where: Where) -> Any:
        return await self.conn.execute(statement(Q, name, where), args)

    async def one(self, name: str, args: Args = None, where: Where = None) -> Row | None:
        return cast(Row | None, await (await self._execute(name, args, where)).fetchone())

    async def all(self, name: str, args: Args = None, where: Where = None) -> list[Row]:
        return cast(list[Row], await (await self._execute(name, args, where)).fetchall())

    async def value(self, name: str, args: Args = None, where: Where = None) -> Any:
        row = await self.one(name, args, where)
        assert row is not None
        return next(iter(row.values()))

    async def run(self, name: str, args: Args = None) -> int:
        return int((await self._execute(name, args, None)).rowcount)

    async def many(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(Q[name], rows)  # pipelined: one round trip for the batch

    async def lock(self, name: str, args: Args = None) -> None:
        await self._execute(name, args, None)  # an advisory lock (overrides.sql, "Only PostgreSQL")

    async def claimed_log_seqs(self, claimed: list[Row]) -> dict[str, int]:
        return {row["id"]: row["log_seq"] for row in claimed}  # the claim returns them

    async def update_running(self, node: str, threads: list[Thread], now: int) -> set[str]:
        if not threads:
            return set()
        # One state per thread, its latest, as updates one after another would leave it (a row
        # matched twice by UPDATE ... FROM would take either). One statement for the batch.
        latest = {thread.id: thread for thread in threads}
        states = [state_args(thread, node, now) for thread in latest.values()]
        args = {**columns(states, _STATE_ARRAYS), "node": node, "heartbeat": now}
        return set(latest) - {row["id"] for row in await self.all("update_running_thread", args)}

    async def insert_events(self, events: list[NewLogEvent]) -> None:
        """One INSERT for a few, COPY for many (a thread logging fast gives batches of
        thousands, which binary COPY stores two to three times as fast as the INSERT; it costs
        one more round trip)."""
        if len(events) >= COPY_FROM:
            async with self.conn.cursor() as cur, cur.copy(Q["copy_log_events"]) as copy:
                copy.set_types(_EVENT_TYPES)
                for e in events:
                    event = e.event
                    await copy.write_row(
                        (e.thread_id, event.seq, event.timestamp, int(event.level), event.text)
                    )
        elif events:
            rows = [event_row(e.thread_id, e.event) for e in events]
            await self.run("insert_log_events", columns(rows, _EVENT_ARRAYS))

    async def queue_deliveries(self, changes: list[Thread]) -> None:
        # All the transaction's changes in one statement.
        await self.run(
            "queue_deliveries",
            {
                "changes": json.dumps([
                    {
                        "thread_id": thread.id,
                        "group_id": thread.group_id,
                        "event": "final" if thread.final else "status",
                        "snapshot": snapshot_json(thread),
                    }
                    for thread in changes
                ]),
                "now": now_ms(),
                "behind": BEHIND,
            },
        )
