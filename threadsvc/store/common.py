"""What both stores need alike."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from threadsvc.errors import Conflict, TooManyActiveThreads
from threadsvc.models import (
    SERVER_GROUP_ID,
    LogEvent,
    Result,
    Status,
    Thread,
    ThreadFilter,
)

ALL_STATUSES = frozenset(Status)

if TYPE_CHECKING:
    from threadsvc.models import ActiveLimits


def state_args(thread: Thread, node: str, now: int) -> dict[str, Any]:
    result = thread.result
    return {
        "id": thread.id,
        "node": node,
        "status": thread.status.value,
        "message": thread.message,
        "progress_current": thread.progress_current,
        "progress_total": thread.progress_total,
        "warnings": thread.warnings,
        "errors": thread.errors,
        "ended": thread.ended,
        "heartbeat": now,
        "version": thread.version,
        "result_file": result.file if result else None,
        "result_type": result.media_type if result else None,
        "result_size": result.size if result else None,
        "result_name": result.name if result else None,
        "result_deletion": result.deletion if result else None,
    }


def thread_from_row(row: Mapping[str, Any]) -> Thread:
    return Thread(
        id=row["id"],
        name=row["name"],
        username=row["username"],
        group_id=row["group_id"],
        job=row["job"],
        params=json.loads(row["params"]),
        status=Status(row["status"]),
        created=row["created"],
        started=row["started"],
        ended=row["ended"],
        message=row["message"],
        progress_current=row["progress_current"],
        progress_total=row["progress_total"],
        warnings=row["warnings"],
        errors=row["errors"],
        node=row["node"],
        heartbeat=row["heartbeat"],
        cancel_requested=bool(row["cancel_requested"]),
        version=row["version"],
        result=_result(row),
    )


def _result(row: Mapping[str, Any]) -> Result | None:
    if row["result_type"] is None:
        return None
    return Result(
        file=row["result_file"],
        media_type=row["result_type"],
        size=row["result_size"],
        name=row["result_name"],
        deletion=row["result_deletion"],
    )


def event_row(thread_id: str, event: LogEvent) -> dict[str, Any]:
    return {
        "thread_id": thread_id,
        "seq": event.seq,
        "ts": event.timestamp,
        "level": int(event.level),
        "text": event.text,
    }


def insert_args(
    thread: Thread, first_event: LogEvent, idempotency_key: str | None, request_hash: str | None
) -> dict[str, Any]:
    """The named arguments of `insert_thread`: a new thread, its key and its first log event."""
    return {
        "id": thread.id,
        "name": thread.name,
        "username": thread.username,
        "group_id": thread.group_id,
        "job": thread.job,
        "params": json.dumps(thread.params),
        "status": thread.status.value,
        "created": thread.created,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash if idempotency_key is not None else None,
        "seq": first_event.seq,
        "ts": first_event.timestamp,
        "level": int(first_event.level),
        "text": first_event.text,
    }


def check_replay(key: str, stored_hash: str | None, request_hash: str | None) -> None:
    """A key that comes back must ask for what it asked the first time (a key stored before
    hashes were kept, or a start without a hash, replays as before)."""
    if stored_hash is not None and request_hash is not None and stored_hash != request_hash:
        raise Conflict(
            f"Idempotency-Key '{key}' was used here with other parameters; use a new key"
        )


def columns(rows: list[dict[str, Any]], names: Iterable[str]) -> dict[str, list[Any]]:
    """Rows of named values as one list per name: the arrays that set-based statements take."""
    return {name: [row[name] for row in rows] for name in names}


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


_SNAPSHOT_FIELDS = (
    "id", "name", "username", "group_id", "job", "status", "created", "started", "ended",
    "message", "progress_current", "progress_total", "warnings", "errors", "version",
)


def snapshot_json(thread: Thread) -> str:
    """The thread as it is now, as JSON (any store may keep it as text)."""
    data: dict[str, Any] = {name: getattr(thread, name) for name in _SNAPSHOT_FIELDS}
    data["status"] = thread.status.value
    if thread.result is not None:
        result = thread.result
        data["result"] = {
            "file": result.file,
            "media_type": result.media_type,
            "size": result.size,
            "name": result.name,
            "deletion": result.deletion,
        }
    return json.dumps(data, separators=(",", ":"))


def thread_from_snapshot(text: str) -> Thread:
    data = json.loads(text)
    result = data.pop("result", None)
    return Thread(
        **{name: data[name] for name in _SNAPSHOT_FIELDS if name != "status"},
        params={},
        status=Status(data["status"]),
        result=Result(**result) if result is not None else None,
    )


def count_active_args(thread: Thread, limits: ActiveLimits) -> dict[str, Any]:
    """The arguments of `count_active`: server-level threads count against no group (LIMIT 0)."""
    per_group = limits.per_group if thread.group_id != SERVER_GROUP_ID else 0
    return {
        "username": thread.username,
        "group_id": thread.group_id,
        "per_user": max(limits.per_user, 0),
        "per_group": max(per_group, 0),
    }


def check_limits(thread: Thread, limits: ActiveLimits, mine: int, group: int) -> None:
    """Refuse a start past a limit, given the counts of `count_active` (capped at the limits)."""
    if mine >= limits.per_user:
        raise TooManyActiveThreads(
            f"User '{thread.username}' has {mine} active threads, the most allowed"
        )
    if thread.group_id != SERVER_GROUP_ID and group >= limits.per_group:
        raise TooManyActiveThreads(f"The group has {group} active threads, the most allowed")


_FILTERS = {
    "group_id": "filter_group",
    "username": "filter_username",
    "job": "filter_job",
    "since": "filter_since",
    "until": "filter_until",
    "deletion_before": "filter_deletion_before",
}
_COUNTED = frozenset({"group_id"})  # the filters that thread_counts can total, with statuses


@dataclass(frozen=True, slots=True)
class ListQuery:
    """A list's WHERE clause and its arguments, and whether thread_counts can answer for it."""

    where: str
    args: dict[str, Any]
    counted: bool
    limit: int
    offset: int

    def counts(self, queries: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        """locate_page, when `counted`: the total, and the bucket where the page starts."""
        return queries["locate_page"].format(where=self.where), {**self.args, "offset": self.offset}

    def rows(
        self, queries: Mapping[str, str], bucket: int | None = None, newer: int = 0
    ) -> tuple[str, dict[str, Any]]:
        """list_threads, skipping the buckets above `bucket` (and the `newer` threads they
        hold) rather than counting through them."""
        where, args = self.where, {**self.args, "limit": self.limit, "offset": self.offset}
        if bucket is not None:
            where = f"{where} AND ({queries['filter_below_bucket']})"
            args.update(bucket=bucket, offset=self.offset - newer)
        return queries["list_threads"].format(where=where), args

    def total(self, queries: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        """count_threads, when not `counted`."""
        return queries["count_threads"].format(where=self.where), self.args


def list_query(query: ThreadFilter, queries: Mapping[str, str], statuses: Any) -> ListQuery:
    """`statuses`: the dialect's form of the statuses argument, used unless every status is
    asked for (then the clause leaves status out, so that an index without it serves)."""
    where, args, counted = [], {}, True
    if query.statuses != ALL_STATUSES:
        where.append(queries["filter_statuses"])
        args["statuses"] = statuses
    for name, fragment in _FILTERS.items():
        value = getattr(query, name)
        if value is not None:
            where.append(queries[fragment])
            args[name] = value
            counted = counted and name in _COUNTED
    clause = " AND ".join(f"({part})" for part in where) or "1 = 1"
    offset = (query.page - 1) * query.pagesize
    return ListQuery(clause, args, counted, query.pagesize, offset)
