"""The store: threads and their logs, identities, webhooks and their outbox, schedules' ticks,
the audit log, the administrators' controls (paused jobs, nodes) and the dashboard's figures.

Stores only store: every rule of who may do what lives in the service and the runner. The
store's own rules (what a claim takes, what a start checks, what a status change queues) are
written once over a dialect's few primitives (dialect.py), in threads.py, identity.py,
webhooks.py, schedules.py, audit.py and transfer.py; sqlite.py and postgres.py give those
primitives, the connections and the messages between nodes, and nothing else.

Every method may raise `StoreUnavailable` when the database cannot be reached, and the
identity methods raise `Conflict` when a unique name or id is taken. Each method is one
transaction: it happens whole or not at all.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

from threadsvc.store.audit import AuditRules
from threadsvc.store.controls import ControlRules
from threadsvc.store.dashboard import DashboardRules
from threadsvc.store.identity import IdentityRules
from threadsvc.store.schedules import ScheduleRules
from threadsvc.store.threads import ThreadRules
from threadsvc.store.transfer import TransferRules


class Store(
    ThreadRules, IdentityRules, ScheduleRules,
    ControlRules, DashboardRules,  # the administrators' controls and dashboard
    AuditRules, TransferRules,
    abc.ABC,
):
    shared: bool
    """True when several nodes may share the store (and so must announce their changes)."""
    errors = 0
    """Operations that failed because the database could not be reached or failed (their
    StoreUnavailable), since the store was made: for /metrics."""

    @abc.abstractmethod
    async def open(self, create: bool = True) -> None:
        """Connect and bring the schema up to date (fresh stores get schema.sql). Without
        `create`, a store that is not there raises NotAStore and nothing is created; either
        way, a schema newer than this code knows raises NewerSchema (store/migrate.py)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def announce(self, message: str) -> None:
        """Tell every node sharing the store, this one included; a no-op where one node owns
        it. Messages may be lost (a node must also poll); each is at most 7,000 bytes."""

    @abc.abstractmethod
    def announcements(self) -> AsyncIterator[str]:
        """The messages announced by any node, as they come, until cancelled; where one node
        owns the store, it waits forever and yields nothing."""
