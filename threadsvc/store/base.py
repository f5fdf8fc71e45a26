"""The store contract. Stores only store: every rule lives in the service and the runner.

Every method may raise `StoreUnavailable` when the database cannot be reached, and the
identity methods raise `Conflict` when a unique name or id is taken. Each method is one
transaction: it happens whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from threadsvc.models import (
    Group,
    Level,
    LogEvent,
    LogPage,
    Role,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
    User,
)


@dataclass(frozen=True, slots=True)
class NewLogEvent:
    thread_id: str
    event: LogEvent


@dataclass(frozen=True, slots=True)
class LoginFailures:
    failures: int
    window_start: int
    locked_until: int


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date (fresh stores get schema.sql)."""

    async def close(self) -> None: ...

    # -- server settings ------------------------------------------------------------------
    async def get_or_put_setting(self, key: str, value: str) -> str:
        """The stored value of `key`, storing `value` first when there is none."""

    # -- identity ---------------------------------------------------------------------------
    async def create_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        """Raises Conflict when the username is taken."""

    async def update_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        """Raises NotFound when there is no such user."""

    async def get_user(self, username: str) -> tuple[User, str | None] | None:
        """The user and their password hash."""

    async def add_api_token(self, user_id: int, token_hash: str) -> None: ...

    async def user_for_token(self, token_hash: str) -> User | None: ...

    async def add_oauth_client(self, user_id: int, client_id: str, secret_hash: str) -> None: ...

    async def get_oauth_client(self, client_id: str) -> tuple[User, str] | None:
        """The client's user and the hash of its secret."""

    async def create_group(self, name: str, group_id: int | None = None) -> Group:
        """Raises Conflict when the name or id is taken."""

    async def get_group(self, name: str) -> Group | None: ...

    async def get_group_by_id(self, group_id: int) -> Group | None: ...

    async def set_membership(self, group_id: int, user_id: int, role: Role) -> None: ...

    async def roles_of(self, user_id: int) -> dict[int, Role]: ...

    async def groups_of(self, user_id: int) -> list[tuple[Group, Role]]: ...

    async def get_login_failures(self, username: str) -> LoginFailures | None: ...

    async def record_login_failure(
        self, username: str, now: int, window_ms: int, attempts: int
    ) -> LoginFailures:
        """Count a failed password atomically: a new window once the last one is `window_ms`
        old; the count reaching `attempts` locks the name until `now + window_ms`."""

    async def clear_login_failures(self, username: str) -> None: ...

    # -- threads ----------------------------------------------------------------------------
    async def insert_thread(self, thread: Thread, first_event: LogEvent) -> None:
        """Store a new `initialised` thread with the first event of its log; durable on return."""

    async def get_thread(self, thread_id: str) -> Thread | None: ...

    async def list_threads(self, query: ThreadFilter) -> ThreadPage:
        """Newest first; `total` counts every thread matching, across pages."""

    async def claim_threads(self, node: str, limit: int, now: int) -> list[Thread]:
        """Move up to `limit` of the oldest `initialised` threads to `inprogress` on `node`."""

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

    async def cancel_initialised(
        self, thread_id: str, message: str, event: LogEvent
    ) -> Thread | None:
        """End an `initialised` thread as cancelled at `event.timestamp` (it never started),
        with `message` and `event` appended to its log; None if it was not `initialised`."""

    async def request_cancel(self, thread_id: str) -> None:
        """Flag a running thread so that the node running it cancels it."""

    async def cancel_requests(self, node: str) -> list[str]:
        """Ids of threads running on `node` that were asked to cancel."""

    async def heartbeat(self, node: str, now: int) -> None: ...

    async def running_threads(self) -> list[Thread]:
        """Every thread in a running status, oldest first."""

    async def recover_thread(
        self, thread: Thread, requeue: bool, message: str, now: int, level: Level
    ) -> Thread | None:
        """End `thread` failed (or put it back to `initialised` when `requeue`) with `message`
        logged, if it is still running on the node it had; None when another did it first."""

    async def delete_thread(self, thread_id: str) -> bool:
        """Delete a final thread with its log; False when it is absent or not final."""

    async def get_logs(
        self, thread_id: str, since: int, limit: int, level: Level
    ) -> LogPage: ...

    async def last_log_seq(self, thread_id: str) -> int: ...

    async def count_by_status(self) -> dict[Status, int]: ...
