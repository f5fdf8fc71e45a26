"""The PostgreSQL store's webhook methods (store/base.py holds their contract), and the outbox hook.

As in SQLite (sqlite_webhooks.py), `_status_changed` runs inside the very transaction that changes
a thread's status, so a delivery is queued if and only if the change is stored. Claiming skips
deliveries another worker is claiming (FOR UPDATE SKIP LOCKED), so several nodes can deliver.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

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
from threadsvc.store.postgres_sql import Conn
from threadsvc.store.queries import load_queries

T = TypeVar("T")
Q = load_queries("postgres")


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


async def _rowcount(conn: Conn, name: str, args: Mapping[str, Any]) -> int:
    cur = await conn.execute(Q[name], args)
    return cur.rowcount


class PostgresWebhookQueries:
    """Mixed into PostgresStore, whose `_read` and `_write` run these in its transactions."""

    if TYPE_CHECKING:

        async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

        async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T: ...

    # -- the outbox -------------------------------------------------------------------------
    async def _status_changed(self, conn: Conn, changes: list[Thread]) -> None:
        """Inside the transaction that changed these threads' status (oldest change first):
        queue their webhook deliveries, all in one statement."""
        # created, or put back to run again: not a change webhooks hear of
        changes = [thread for thread in changes if thread.status is not Status.INITIALISED]
        if not changes:
            return
        await conn.execute(
            Q["queue_deliveries"],
            {
                "thread_id": [thread.id for thread in changes],
                "group_id": [thread.group_id for thread in changes],
                "event": ["final" if thread.final else "status" for thread in changes],
                "snapshot": [snapshot_json(thread) for thread in changes],
                "now": now_ms(),
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

        async def do(conn: Conn) -> Webhook:
            row = await (await conn.execute(Q["insert_webhook"], args)).fetchone()
            assert row is not None
            return Webhook(row["id"], group_id, url, secret, events, created_by, now)

        return await self._write(do)

    async def get_webhook(self, webhook_id: int) -> Webhook | None:
        async def do(conn: Conn) -> Webhook | None:
            row = await (await conn.execute(Q["get_webhook"], {"id": webhook_id})).fetchone()
            return None if row is None else webhook_from_row(row)

        return await self._read(do)

    async def list_webhooks(self, group_id: int) -> list[Webhook]:
        async def do(conn: Conn) -> list[Webhook]:
            cur = await conn.execute(Q["list_webhooks"], {"group_id": group_id})
            return [webhook_from_row(row) for row in await cur.fetchall()]

        return await self._read(do)

    async def delete_webhook(self, webhook_id: int) -> bool:
        async def do(conn: Conn) -> bool:
            # Its deliveries go with it (ON DELETE CASCADE).
            return await _rowcount(conn, "delete_webhook", {"id": webhook_id}) > 0

        return await self._write(do)

    # -- deliveries -------------------------------------------------------------------------
    async def recent_deliveries(self, webhook_id: int, limit: int) -> list[Delivery]:
        async def do(conn: Conn) -> list[Delivery]:
            args = {"webhook_id": webhook_id, "limit": limit}
            cur = await conn.execute(Q["recent_deliveries"], args)
            return [delivery_from_row(row) for row in await cur.fetchall()]

        return await self._read(do)

    async def next_delivery_due(self) -> int | None:
        async def do(conn: Conn) -> int | None:
            row = await (await conn.execute(Q["next_delivery_due"])).fetchone()
            value = None if row is None else row["min"]
            return None if value is None else int(value)

        return await self._read(do)

    async def claim_deliveries(self, now: int, lease_ms: int, limit: int) -> list[DueDelivery]:
        async def do(conn: Conn) -> list[DueDelivery]:
            cur = await conn.execute(Q["due_deliveries"], {"now": now, "limit": limit})
            claimed = []
            for row in await cur.fetchall():
                await conn.execute(Q["lease_delivery"], {"id": row["id"], "until": now + lease_ms})
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
        await self._write(lambda conn: _rowcount(conn, "record_delivery_attempt", args))

    async def release_delivery(self, delivery_id: str, now: int) -> None:
        args = {"id": delivery_id, "now": now}
        await self._write(lambda conn: _rowcount(conn, "release_delivery", args))

    async def release_all_deliveries(self, now: int) -> int:
        return await self._write(
            lambda conn: _rowcount(conn, "release_all_deliveries", {"now": now})
        )

    async def prune_deliveries(self, created_before: int) -> int:
        return await self._write(
            lambda conn: _rowcount(conn, "prune_deliveries", {"before": created_before})
        )
