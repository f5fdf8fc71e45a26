"""The store contract. Stores only store: every rule lives in the service and the runner.

Every method may raise `StoreUnavailable` when the database cannot be reached, and the
identity methods raise `Conflict` when a unique name or id is taken. Each method is one
transaction: it happens whole or not at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from threadsvc.models import (
    ActiveLimits,
    Delivery,
    DeliveryStatus,
    Group,
    Level,
    LogEvent,
    LoginFailures,
    LogPage,
    NewLogEvent,
    Role,
    Status,
    Thread,
    ThreadFilter,
    ThreadPage,
    User,
    Webhook,
    WebhookEvents,
)


@dataclass(frozen=True, slots=True)
class UserEntry:
    """A user as `threadsvc user list` shows them."""

    user: User
    disabled: bool
    created: int


class Store(Protocol):
    shared: bool
    """True when several nodes may share the store (and so must announce their changes)."""

    async def open(self) -> None:
        """Connect and bring the schema up to date (fresh stores get schema.sql)."""

    async def close(self) -> None: ...

    # -- between nodes ----------------------------------------------------------------------
    async def announce(self, message: str) -> None:
        """Tell every node sharing the store, this one included; a no-op where one node owns
        it. Messages may be lost (a node must also poll); each is at most 7,000 bytes."""

    def announcements(self) -> AsyncIterator[str]:
        """The messages announced by any node, as they come, until cancelled; where one node
        owns the store, it waits forever and yields nothing."""

    # -- server settings ------------------------------------------------------------------
    async def get_or_put_setting(self, key: str, value: str) -> str:
        """The stored value of `key`, storing `value` first when there is none."""

    async def put_setting(self, key: str, value: str) -> None: ...

    # -- identity ---------------------------------------------------------------------------
    async def create_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        """Raises Conflict when the username is taken."""

    async def update_user(self, username: str, password_hash: str | None, is_admin: bool) -> User:
        """Raises NotFound when there is no such user."""

    async def get_user(self, username: str) -> tuple[User, str | None] | None:
        """The user and their password hash; None for a disabled user, as for an unknown one
        (every credential is looked up through here, `user_for_token` or `get_oauth_client`,
        which also ignore disabled users)."""

    async def list_users(self) -> list[UserEntry]: ...

    async def set_password(self, username: str, password_hash: str | None) -> bool:
        """Bumps the credential version; False when there is no such user."""

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        """Disabling bumps the credential version and deletes the user's API tokens and OAuth
        clients, in one transaction; False when there is no such user."""

    async def remove_user(self, username: str) -> bool:
        """With their memberships, tokens and clients (their threads stay); False when none."""

    async def add_api_token(self, user_id: int, token_hash: str) -> None: ...

    async def user_for_token(self, token_hash: str) -> User | None: ...

    async def remove_api_token(self, token_hash: str) -> bool:
        """False when there was no such token."""

    async def add_oauth_client(self, user_id: int, client_id: str, secret_hash: str) -> None: ...

    async def get_oauth_client(self, client_id: str) -> tuple[User, str] | None:
        """The client's user and the hash of its secret."""

    async def remove_oauth_client(self, client_id: str) -> bool: ...

    async def list_oauth_clients(self) -> list[tuple[str, str, int]]:
        """(client id, username, created) of every client."""

    async def create_group(self, name: str, group_id: int | None = None) -> Group:
        """Raises Conflict when the name or id is taken."""

    async def get_group(self, name: str) -> Group | None: ...

    async def get_group_by_id(self, group_id: int) -> Group | None: ...

    async def set_membership(self, group_id: int, user_id: int, role: Role) -> None: ...

    async def remove_membership(self, group_id: int, user_id: int) -> bool:
        """False when the user was not a member of the group."""

    async def roles_of(self, user_id: int) -> dict[int, Role]: ...

    async def groups_of(self, user_id: int) -> list[tuple[Group, Role]]: ...

    async def get_login_failures(self, username: str, address: str = "") -> LoginFailures | None:
        ...

    async def reserve_login_attempt(
        self, username: str, address: str, now: int, window_ms: int, attempts: int
    ) -> tuple[LoginFailures | None, bool]:
        """Reserve one sign-in attempt atomically (across nodes) by `reserve_attempt`: the
        counts as they stand afterwards, and whether the attempt may be made."""

    async def clear_login_failures(self, username: str, address: str | None = None) -> bool:
        """Forget the attempts of `username` from `address`, or from everywhere (None); False
        when there were none."""

    async def forget_login_failures(self, now: int, window_ms: int) -> int:
        """Delete the counts that no longer matter: window over and no lock; how many. (Each
        made-up name tried makes one, so they must not stay.)"""

    # -- threads ----------------------------------------------------------------------------
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

    async def expired_results(self, now: int, limit: int) -> list[Thread]:
        """Threads whose result file is still kept although its deletion moment has come."""

    async def forget_result_file(self, thread_id: str) -> None:
        """Record that the thread's result file is deleted (its deletion moment stays)."""

    async def ended_before(self, moment: int, limit: int) -> list[Thread]:
        """Final threads that ended before `moment`, oldest first."""

    async def threads_by_ids(self, ids: list[str]) -> list[Thread]:
        """The threads of `ids` that exist, in no set order (the purge looks for files whose
        thread is gone)."""

    async def forget_idempotency_keys(self, created_before: int) -> int:
        """Clear idempotency keys of threads created before the moment; how many."""

    async def last_log_seq(self, thread_id: str) -> int: ...

    async def count_by_status(self) -> dict[Status, int]: ...

    # -- webhooks (docs/api.md#webhooks) -----------------------------------------------------------
    # Deliveries are queued by the store itself, inside the transaction of each status change
    # (claim_threads, write_batch, cancel_initialised, recover_thread): for every webhook of the
    # thread's group and every server webhook (group_id -1), one delivery with event `final`
    # for a final status, or `status` for an earlier change (webhooks with events `all` only);
    # none when a thread is created or put back to `initialised`. Each holds a snapshot of the
    # thread as it was at that change.
    async def create_webhook(
        self,
        group_id: int,
        url: str,
        secret: str,
        events: WebhookEvents,
        created_by: str,
        now: int,
    ) -> Webhook:
        """Store a webhook of the group (-1: of the server) and return it with its new id."""

    async def get_webhook(self, webhook_id: int) -> Webhook | None: ...

    async def list_webhooks(self, group_id: int) -> list[Webhook]:
        """The webhooks of one group (-1: the server's), oldest first."""

    async def delete_webhook(self, webhook_id: int) -> bool:
        """Delete a webhook with all its deliveries; False when there was none."""

    async def recent_deliveries(self, webhook_id: int, limit: int) -> list[Delivery]:
        """The webhook's latest `limit` deliveries, newest first."""

    async def next_delivery_due(self) -> int | None:
        """When the earliest deliverable `pending` delivery is due (epoch ms), None if none is.

        Deliverable: no earlier delivery (same webhook, same thread) is still pending."""

    async def claim_deliveries(self, now: int, lease_ms: int, limit: int) -> list[DueDelivery]:
        """Take up to `limit` deliverable pending deliveries due at `now`, oldest first, each with
        its webhook and snapshot, and push their `next_attempt` to `now + lease_ms` in the same
        transaction, so that no other worker takes them while the lease lasts. At most one
        delivery per (webhook, thread) is pending-and-deliverable, so their order is kept."""

    async def record_attempt(
        self,
        delivery_id: str,
        now: int,
        code: int,
        status: DeliveryStatus,
        next_attempt: int,
    ) -> None:
        """Count one attempt of a pending delivery: its HTTP status `code` (0 without a
        response), its new `status`, and when to try next (used while `pending`)."""

    async def release_delivery(self, delivery_id: str, now: int) -> None:
        """Give back a claimed, still pending delivery that was not attempted: due at `now`."""

    async def release_all_deliveries(self, now: int) -> int:
        """Make every pending delivery due at `now` (leases and backoff alike); how many. For a
        node starting alone on its store, whose leases a crash may have left behind."""

    async def prune_deliveries(self, created_before: int) -> int:
        """Delete delivered and failed deliveries created before the moment; how many."""


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery, with what it takes to send it."""

    delivery: Delivery
    webhook: Webhook
    thread: Thread  # the thread as it was at that change
