"""A start's rules, which each store runs inside the transaction that inserts the thread: the
idempotency key that names an earlier start, and the limits of active threads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from threadsvc.errors import Conflict, TooManyActiveThreads
from threadsvc.models import SERVER_GROUP_ID, ActiveLimits, LogEvent, Thread


@dataclass(frozen=True, slots=True)
class Start:
    """What `insert_thread` is asked: the new thread, its first event, and what guards it."""

    thread: Thread
    first_event: LogEvent
    limits: ActiveLimits | None
    idempotency_key: str | None
    idempotency_since: int
    request_hash: str | None


def check_replay(key: str, stored_hash: str | None, request_hash: str | None) -> None:
    """A key that comes back must ask for what it asked the first time (a key stored before
    hashes were kept, or a start without a hash, replays as before)."""
    if stored_hash is not None and request_hash is not None and stored_hash != request_hash:
        raise Conflict(
            f"Idempotency-Key '{key}' was used here with other parameters; use a new key"
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
