"""What both stores need alike."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from threadsvc.models import LogEvent, Result, Status, Thread


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


def insert_args(thread: Thread) -> dict[str, Any]:
    """The named arguments of `insert_thread` for a new thread."""
    return {
        "id": thread.id,
        "name": thread.name,
        "username": thread.username,
        "group_id": thread.group_id,
        "job": thread.job,
        "params": json.dumps(thread.params),
        "status": thread.status.value,
        "created": thread.created,
    }


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
