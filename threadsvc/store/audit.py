"""The audit log: who changed users, groups, memberships, threads and webhooks, and which
sign-ins failed; written once over the dialect primitives (dialect.py).

An entry is written inside the transaction of the change it records (as the webhook outbox
is, webhooks.py), so there is an entry if and only if the change is stored; once the
transaction commits, the entry is also logged as one line on the logger `threadsvc.audit`.
The rules that change something take `by` (an `Actor`); None writes no entry (the server's own
changes, as the purge's deletes, and tests).

Threat model: targets, usernames and details are text from anyone (a name tried at sign-in, a
username an administrator typed); they are stored as given but bounded, rendered by xml/ and
cli/output.py, and logged quoted (`%r`: one line, control characters escaped). No entry holds a
password, a token, a secret or a signature: the rules write names and ids only.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from threadsvc.models import (
    AUDIT_ACTIONS,
    SERVER_GROUP_ID,
    Actor,
    AuditEntry,
    AuditFilter,
    AuditPage,
    now_ms,
)
from threadsvc.store.dialect import Row, Transactions, Tx

T = TypeVar("T")
log = logging.getLogger("threadsvc.audit")

TARGET_MAX = 200  # characters kept of a target (a name tried at sign-in may be that long)
DETAIL_MAX = 500  # characters kept of a detail
FORGET_BATCH = 1000  # entries deleted a transaction by the purge
_CUT = "…"


def bounded(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + _CUT


class Audit:
    """The entries one change writes in its transaction; logged once the transaction commits."""

    def __init__(self, by: Actor | None) -> None:
        self.by = by
        self.written: list[AuditEntry] = []

    async def __call__(
        self, tx: Tx, action: str, target: str, *, group_id: int | None = None, detail: str = ""
    ) -> None:
        """Write entry `action` about `target` (in group `group_id`, if any)."""
        if self.by is None:
            return
        assert action in AUDIT_ACTIONS, action
        if not self.written:
            # PostgreSQL: ids then grow in commit order (see lock_audit); SQLite: a no-op.
            await tx.lock("lock_audit")
        entry = AuditEntry(0, now_ms(), self.by.name, action, bounded(target, TARGET_MAX), None,
                           self.by.address, bounded(detail, DETAIL_MAX))
        await tx.run("insert_audit", {
            "ts": entry.timestamp, "actor": entry.actor, "action": action, "target": entry.target,
            "group_id": SERVER_GROUP_ID if group_id is None else group_id,
            "address": entry.address, "detail": entry.detail,
        })
        self.written.append(entry)

    def committed(self) -> None:
        for entry in self.written:
            log.info("%s by %s%s: %r%s", entry.action,
                     repr(entry.actor) if entry.actor else "no one signed in",
                     f" from {entry.address!r}" if entry.address else "", entry.target,
                     f" ({entry.detail!r})" if entry.detail else "")


class AuditRules(Transactions):
    async def _audited(self, by: Actor | None, rule: Callable[[Tx, Audit], Awaitable[T]]) -> T:
        """Run `rule` in one write transaction with an `Audit` for its entries, then log them."""
        audit = Audit(by)

        async def do(tx: Tx) -> T:
            audit.written.clear()  # a transaction run again (PostgreSQL) starts afresh
            return await rule(tx, audit)

        result = await self._write(do)
        audit.committed()
        return result

    async def record_signin_failure(
        self, name: str, by: Actor, *, locked: bool, detail: str = ""
    ) -> None:
        """A failed sign-in as `name` (a username, or `client:ID`), and when it locked the name,
        the lockout."""
        async def do(tx: Tx, audit: Audit) -> None:
            await audit(tx, "signin.failure", name, detail=detail)
            if locked:
                await audit(tx, "signin.lockout", name, detail=detail)

        await self._audited(by, do)

    async def audit_entries(self, query: AuditFilter) -> AuditPage:
        """The entries `query` asks for, oldest first; `next` is the `since` of the next page."""
        where: list[str] = []
        args: dict[str, object] = {"since": query.since, "limit": query.limit + 1}
        for fragment, name, value in (("filter_audit_action", "action", query.action),
                                      ("filter_audit_user", "user", query.user),
                                      ("filter_audit_from", "from_ts", query.from_ts),
                                      ("filter_audit_before", "before",
                                       query.before if query.latest else None)):
            if value is not None:
                where.append(fragment)
                args[name] = value

        async def do(tx: Tx) -> list[Row]:
            if query.latest:
                return await tx.all("latest_audit_entries", args, where)
            return await tx.all("audit_entries", args, where)

        rows = await self._read(do)
        entries = [_entry(row) for row in rows[: query.limit]]
        beyond = len(rows) > query.limit
        if query.latest:  # newest first from the store; nothing is newer: the page is the last
            entries.reverse()
            return AuditPage(entries, entries[-1].id if entries else query.since, False, beyond)
        return AuditPage(entries, entries[-1].id if entries else query.since, beyond)

    async def forget_audit(self, before: int) -> int:
        """Delete the entries written before `before`, FORGET_BATCH a transaction (so that no
        one deletion holds the store's writer long); how many."""
        args = {"before": before, "limit": FORGET_BATCH}
        total = 0
        while True:
            deleted = await self._write(lambda tx: tx.run("forget_audit", args))
            total += deleted
            if deleted < FORGET_BATCH:
                return total


def _entry(row: Row) -> AuditEntry:
    return AuditEntry(row["id"], row["ts"], row["actor"], row["action"], row["target"],
                      row["group_name"], row["address"], row["detail"])
