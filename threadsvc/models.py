"""The nouns of threadsvc as frozen dataclasses; times are epoch milliseconds (UTC)."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

# The clock every time rule reads through now_ms (TTLs, lockouts, retention): a seam that lets
# a test of such a rule move time on instead of sleeping through it.
wall_clock_ns: Callable[[], int] = time.time_ns
# Milliseconds added to this node's wall clock to read the database's (runner/clock.py): every
# time the node writes or compares is on the clock the nodes share. 0 with an embedded store.
_offset_ms = 0


def now_ms() -> int:
    return wall_clock_ns() // 1_000_000 + _offset_ms


def set_clock_offset(ms: int) -> None:
    global _offset_ms
    _offset_ms = ms


def iso(ms: int) -> str:
    """`2026-11-22T08:00:00.123Z`: ISO 8601 UTC with milliseconds."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


class Status(enum.StrEnum):
    INITIALISED = "initialised"
    INPROGRESS = "inprogress"
    ERROR = "error"
    WARNING = "warning"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset(Status) - FINAL
RUNNING = frozenset({Status.INPROGRESS, Status.WARNING, Status.ERROR})


class Role(enum.IntEnum):
    """Roles inside a group, lowest to highest; a role named as a requirement is the minimum."""

    REVIEWER = 1
    CONTRIBUTOR = 2
    MANAGER = 3
    APPROVER = 4

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}") from None

    @property
    def label(self) -> str:
        return self.name.lower()


class Scope(enum.StrEnum):
    """Where a job may be started: under a group, at server level, or both."""

    GROUP = "group"
    SERVER = "server"
    BOTH = "both"

    def allows(self, server_level: bool) -> bool:
        return self is Scope.BOTH or (self is Scope.SERVER) == server_level


class Level(enum.IntEnum):
    DEBUG = 10
    INFO = 20
    WARN = 30
    ERROR = 40

    @classmethod
    def parse(cls, text: str) -> Level:
        name = text.strip().upper()
        if name == "WARNING":
            name = "WARN"
        try:
            return cls[name]
        except KeyError:
            raise ValueError(f"unknown level {text!r}") from None


SERVER_GROUP_ID = -1


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    is_admin: bool
    # Bumped by a password change, disabling and removal: a console session records it, and
    # ends when it no longer matches.
    credential_version: int = 0


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class Result:
    """A thread's result: a file under the data directory, kept until `deletion`."""

    file: str | None  # None once deleted
    media_type: str
    size: int
    name: str  # the file name offered to downloads
    deletion: int | None = None  # set when the thread ends

    def kept(self, now: int) -> bool:
        return self.file is not None and (self.deletion is None or now < self.deletion)


@dataclass(frozen=True, slots=True)
class Thread:
    id: str
    name: str
    username: str
    group_id: int  # SERVER_GROUP_ID for server-level threads
    job: str
    params: dict[str, Any]
    status: Status
    created: int
    started: int | None = None
    ended: int | None = None
    message: str | None = None
    progress_current: int | None = None
    progress_total: int | None = None
    warnings: int = 0
    errors: int = 0
    node: str | None = None
    heartbeat: int | None = None
    cancel_requested: bool = False
    version: int = 0  # bumped by every visible change; the ETag of progress
    result: Result | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def server_level(self) -> bool:
        return self.group_id == SERVER_GROUP_ID


@dataclass(frozen=True, slots=True)
class LogEvent:
    seq: int
    timestamp: int
    level: Level
    text: str


@dataclass(frozen=True, slots=True)
class ThreadFilter:
    """What a thread list asks for; `None` means no constraint."""

    statuses: frozenset[Status] = ACTIVE
    group_id: int | None = None
    username: str | None = None
    job: str | None = None
    since: int | None = None
    until: int | None = None
    deletion_before: int | None = None  # only threads with a result deleted before this
    id_prefix: str | None = None  # lowercase hex: threads whose id starts so (a whole id too)
    name: str | None = None  # threads whose name holds this (letter case aside)
    text: str | None = None  # threads whose message holds this (letter case aside)
    ended_since: int | None = None
    ended_until: int | None = None
    sort: str = "created"  # one of SORTS
    descending: bool = True
    page: int = 1
    pagesize: int = 100


# How a list may be ordered. A thread not yet ended sorts as if it ended after every other
# (first when newest first, last when oldest first), for `ended` and for `duration` alike.
SORTS = ("created", "ended", "duration")


@dataclass(frozen=True, slots=True)
class ThreadPage:
    threads: list[Thread]
    total: int
    page: int
    pagesize: int


@dataclass(frozen=True, slots=True)
class LogPage:
    thread_id: str
    events: list[LogEvent]
    total: int
    next: int
    more: bool


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the user and their role in each group they belong to."""

    user: User
    roles: dict[int, Role] = field(default_factory=dict)
    # The client's, over HTTP, for the audit log; not part of who they are (a recheck, which
    # has no request, compares equal).
    address: str | None = field(default=None, compare=False)

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def actor(self) -> Actor:
        return Actor(self.user.username, self.address)

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin

    def has_role(self, group_id: int, minimum: Role) -> bool:
        if self.is_admin:
            return True
        role = self.roles.get(group_id)
        return role is not None and role >= minimum


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes an audited change (store/audit.py): a username, `cli:OSUSER` on the command
    line (no username holds a ':'), or None for no one signed in (a failed sign-in); and the
    client's address over HTTP."""

    name: str | None
    address: str | None = None


# The audit log's actions (store/audit.py): SUBJECT.VERB, the subject being what the target
# names (docs/decisions.md says why these).
AUDIT_ACTIONS = frozenset({
    "signin.failure", "signin.lockout",
    "user.add", "user.update", "user.passwd", "user.disable", "user.enable", "user.remove",
    "user.unlock", "token.add", "token.revoke", "client.add", "client.remove",
    "group.add", "member.add", "member.role", "member.remove",
    "thread.cancel", "thread.delete",
    "webhook.add", "webhook.remove",
    "job.pause", "job.resume", "node.max-running", "node.drain", "node.undrain",
})


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    timestamp: int
    actor: str | None
    action: str  # one of AUDIT_ACTIONS
    target: str
    group: str | None
    address: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries: after the entry `since` (an id), oldest first, at most `limit`; or with
    `latest`, the newest `limit` (still given oldest first), below the entry `before` if given."""

    since: int = 0
    limit: int = 1000
    action: str | None = None
    user: str | None = None  # the actor or the target
    from_ts: int | None = None  # at or after this moment
    latest: bool = False
    before: int | None = None  # with `latest`: only entries whose id is below this


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[AuditEntry]
    next: int  # the `since` of the following page
    more: bool
    older: bool = False  # with `latest`: entries before these match too (page with `before`)


@dataclass(frozen=True, slots=True)
class ActiveLimits:
    """The most active threads allowed, counting the new one: per user, and per group
    (`group_id` None for server-level threads, which count against no group)."""

    per_user: int
    per_group: int


@dataclass(frozen=True, slots=True)
class NewLogEvent:
    thread_id: str
    event: LogEvent


@dataclass(frozen=True, slots=True)
class LoginFailures:
    """Sign-in attempts of one name (and address) in the window that started at `window_start`:
    every attempt reserved, whether its check failed or is still running."""

    failures: int
    window_start: int
    locked_until: int


# A pending delivery's next_attempt while an earlier pending one of its webhook and thread
# waits: never due, so that finding what is due is an index lookup (store/webhooks.py).
BEHIND = 1 << 62

WebhookEvents = Literal["final", "all"]
DeliveryEvent = Literal["final", "status"]
DeliveryStatus = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where to POST a group's (or, with group_id -1, every) thread's changes."""

    id: int
    group_id: int
    url: str
    secret: str  # signs deliveries; never shown
    events: WebhookEvents
    created_by: str
    created: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """One change of one thread for one webhook, from the outbox, with its attempts so far."""

    id: str  # 32 hex digits, sent as X-Threadsvc-Delivery on every attempt
    webhook_id: int
    thread_id: str
    event: DeliveryEvent
    status: DeliveryStatus
    attempts: int
    next_attempt: int
    last_attempt: int | None  # None before the first attempt
    code: int | None  # the last attempt's HTTP status; 0 when no response came
    created: int


@dataclass(frozen=True, slots=True)
class UserEntry:
    """A user as `threadsvc user list` shows them."""

    user: User
    disabled: bool
    created: int


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery, with what it takes to send it."""

    delivery: Delivery
    webhook: Webhook
    thread: Thread  # the thread as it was at that change
