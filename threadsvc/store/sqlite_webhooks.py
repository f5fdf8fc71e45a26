"""The SQLite store's webhook methods (store/base.py holds their contract), and the outbox hook.

`_status_changed` runs inside the very transaction that changes a thread's status, so a
delivery is queued if and only if the change is stored (a transactional outbox): a crash can
lose neither, and the delivery worker (threadsvc/webhooks.py) finds it in the store later.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from threadsvc.models import (
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    Status,
    Thread,
    Webhook,
    WebhookEvents,
    now_ms,
)
from threadsvc.store.base import DueDelivery
from threadsvc.store.common import snapshot_json, thread_from_snapshot
from threadsvc.store.queries import load_queries

T = TypeVar("T")
Q = load_queries("sqlite")

# The fields of a thread that its rendering needs; a snapshot holds these (not its parameters,
# which may be large and are never shown).
def webhook_from_row(row: sqlite3.Row, prefix: str = "") -> Webhook:
    return Webhook(
        id=row["webhook_id" if prefix else "id"],
        group_id=row[prefix + "group_id"],
        url=row[prefix + "url"],
        secret=row[prefix + "secret"],
        events=cast(WebhookEvents, row[prefix + "events"]),
        created_by=row[prefix + "created_by"],
        created=row[prefix + "created"],
    )


def delivery_from_row(row: sqlite3.Row) -> Delivery:
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


class WebhookQueries:
    """Mixed into SQLiteStore, whose `_read` and `_write` run these in its transactions."""

    if TYPE_CHECKING:

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    # -- the outbox -------------------------------------------------------------------------
    def _status_changed(self, conn: sqlite3.Connection, changes: list[Thread]) -> None:
        """Inside the transaction that changed these threads' status (oldest change first):
        queue their webhook deliveries."""
        # created, or put back to run again: not a change webhooks hear of
        changes = [thread for thread in changes if thread.status is not Status.INITIALISED]
        # Where no webhook exists, one look saves a snapshot and an insert per change (exact:
        # this transaction is the only writer, so none can appear before it commits).
        if not changes or conn.execute(Q["any_webhooks"]).fetchone() is None:
            return
        now = now_ms()
        for thread in changes:
            conn.execute(
                Q["queue_deliveries"],
                {
                    "thread_id": thread.id,
                    "group_id": thread.group_id,
                    "event": "final" if thread.final else "status",
                    "snapshot": snapshot_json(thread),
                    "now": now,
                },
            )

    # -- webhooks ---------------------------------------------------------------------------
    async def create_webhook(
        self,
        group_id: int,
        url: str,
        secret: str,
        events: WebhookEvents,
        created_by: str,
        now: int,
    ) -> Webhook:
        args = {
            "group_id": group_id,
            "url": url,
            "secret": secret,
            "events": events,
            "created_by": created_by,
            "created": now,
        }

        def do(conn: sqlite3.Connection) -> Webhook:
            webhook_id = conn.execute(Q["insert_webhook"], args).fetchone()[0]
            return Webhook(webhook_id, group_id, url, secret, events, created_by, now)

        return await self._write(do)

    async def get_webhook(self, webhook_id: int) -> Webhook | None:
        def do(conn: sqlite3.Connection) -> Webhook | None:
            row = conn.execute(Q["get_webhook"], {"id": webhook_id}).fetchone()
            return None if row is None else webhook_from_row(row)

        return await self._read(do)

    async def list_webhooks(self, group_id: int) -> list[Webhook]:
        def do(conn: sqlite3.Connection) -> list[Webhook]:
            rows = conn.execute(Q["list_webhooks"], {"group_id": group_id}).fetchall()
            return [webhook_from_row(row) for row in rows]

        return await self._read(do)

    async def delete_webhook(self, webhook_id: int) -> bool:
        def do(conn: sqlite3.Connection) -> bool:
            # Its deliveries go with it (ON DELETE CASCADE).
            return conn.execute(Q["delete_webhook"], {"id": webhook_id}).rowcount > 0

        return await self._write(do)

    # -- deliveries -------------------------------------------------------------------------
    async def recent_deliveries(self, webhook_id: int, limit: int) -> list[Delivery]:
        def do(conn: sqlite3.Connection) -> list[Delivery]:
            args = {"webhook_id": webhook_id, "limit": limit}
            return [delivery_from_row(row) for row in conn.execute(Q["recent_deliveries"], args)]

        return await self._read(do)

    async def next_delivery_due(self) -> int | None:
        def do(conn: sqlite3.Connection) -> int | None:
            value = conn.execute(Q["next_delivery_due"]).fetchone()[0]
            return None if value is None else int(value)

        return await self._read(do)

    async def claim_deliveries(self, now: int, lease_ms: int, limit: int) -> list[DueDelivery]:
        def do(conn: sqlite3.Connection) -> list[DueDelivery]:
            rows = conn.execute(Q["due_deliveries"], {"now": now, "limit": limit}).fetchall()
            claimed = []
            for row in rows:
                conn.execute(Q["lease_delivery"], {"id": row["id"], "until": now + lease_ms})
                claimed.append(
                    DueDelivery(
                        delivery=delivery_from_row(row),
                        webhook=webhook_from_row(row, prefix="w_"),
                        thread=thread_from_snapshot(row["snapshot"]),
                    )
                )
            return claimed

        return await self._write(do)

    async def record_attempt(
        self,
        delivery_id: str,
        now: int,
        code: int,
        status: DeliveryStatus,
        next_attempt: int,
    ) -> None:
        args = {
            "id": delivery_id,
            "now": now,
            "code": code,
            "status": status,
            "next_attempt": next_attempt,
        }
        await self._write(lambda conn: conn.execute(Q["record_delivery_attempt"], args))

    async def release_delivery(self, delivery_id: str, now: int) -> None:
        args = {"id": delivery_id, "now": now}
        await self._write(lambda conn: conn.execute(Q["release_delivery"], args))

    async def release_all_deliveries(self, now: int) -> int:
        def do(conn: sqlite3.Connection) -> int:
            return conn.execute(Q["release_all_deliveries"], {"now": now}).rowcount

        return await self._write(do)

    async def prune_deliveries(self, created_before: int) -> int:
        def do(conn: sqlite3.Connection) -> int:
            return conn.execute(Q["prune_deliveries"], {"before": created_before}).rowcount

        return await self._write(do)
