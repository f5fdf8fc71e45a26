"""Rows to models and models to arguments: the mappers every dialect shares (a row is any
mapping of column names, as both drivers give them)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

from threadsvc.models import (
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    LogEvent,
    LoginFailures,
    Result,
    Status,
    Thread,
    User,
    Webhook,
    WebhookEvents,
)


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


# The columns of a thread that are its fields as they are.
_THREAD_COLUMNS = (
    "id", "name", "username", "group_id", "job", "created", "started", "ended", "message",
    "progress_current", "progress_total", "warnings", "errors", "node", "heartbeat", "version",
)


def thread_from_row(row: Mapping[str, Any]) -> Thread:
    return Thread(
        **{name: row[name] for name in _THREAD_COLUMNS},
        params=json.loads(row["params"]),
        status=Status(row["status"]),
        cancel_requested=bool(row["cancel_requested"]),
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


def columns(rows: list[dict[str, Any]], names: Iterable[str]) -> dict[str, list[Any]]:
    """Rows of named values as one list per name: the arrays that set-based statements take."""
    return {name: [row[name] for row in rows] for name in names}


def user_from_row(row: Mapping[str, Any]) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        is_admin=bool(row["is_admin"]),
        credential_version=row["credential_version"],
    )


def failures_from_row(row: Mapping[str, Any]) -> LoginFailures:
    return LoginFailures(row["failures"], row["window_start"], row["locked_until"])


def webhook_from_row(row: Mapping[str, Any], prefix: str = "") -> Webhook:
    return Webhook(
        id=row["webhook_id" if prefix else "id"],
        group_id=row[prefix + "group_id"],
        url=row[prefix + "url"],
        secret=row[prefix + "secret"],
        events=cast(WebhookEvents, row[prefix + "events"]),
        created_by=row[prefix + "created_by"],
        created=row[prefix + "created"],
    )


def delivery_from_row(row: Mapping[str, Any]) -> Delivery:
    return Delivery(
        id=row["id"],
        webhook_id=row["webhook_id"],
        thread_id=row["thread_id"],
        event=cast(DeliveryEvent, row["event"]),
        status=cast(DeliveryStatus, row["status"]),
        attempts=row["attempts"],
        next_attempt=row["next_attempt"],
        last_attempt=row["last_attempt"],
        code=row["code"],
        created=row["created"],
    )


# The fields of a thread that its rendering needs; a snapshot holds these (not its parameters,
# which may be large and are never shown).
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
