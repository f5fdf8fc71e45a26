"""The store's webhooks and their outbox, written once over the dialect primitives (dialect.py).

`_status_changed` runs inside the very transaction that changes a thread's status, so a
delivery is queued if and only if the change is stored (a transactional outbox): a crash can
lose neither, and the delivery worker (threadsvc/delivery/worker.py) finds it in the store later.
PostgreSQL claims with FOR UPDATE SKIP LOCKED (skipping deliveries another worker is claiming),
so several nodes can deliver.
"""

from __future__ import annotations

from threadsvc.models import (
    Delivery,
    DeliveryStatus,
    DueDelivery,
    Status,
    Thread,
    Webhook,
    WebhookEvents,
)
from threadsvc.store.dialect import Transactions, Tx
from threadsvc.store.rows import delivery_from_row, thread_from_snapshot, webhook_from_row


class WebhookRules(Transactions):
    # -- the outbox -------------------------------------------------------------------------
    async def _status_changed(self, tx: Tx, changes: list[Thread]) -> None:
        """Inside the transaction that changed these threads' status (oldest change first):
        queue their webhook deliveries."""
        # created, or put back to run again: not a change webhooks hear of
        changes = [thread for thread in changes if thread.status is not Status.INITIALISED]
        if changes:
            await tx.queue_deliveries(changes)

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
        """Store a webhook of the group (-1: of the server) and return it with its new id."""
        args = {
            "group_id": group_id,
            "url": url,
            "secret": secret,
            "events": events,
            "created_by": created_by,
            "created": now,
        }

        async def do(tx: Tx) -> Webhook:
            webhook_id = await tx.value("insert_webhook", args)
            return Webhook(webhook_id, group_id, url, secret, events, created_by, now)

        return await self._write(do)

    async def get_webhook(self, webhook_id: int) -> Webhook | None:
        async def do(tx: Tx) -> Webhook | None:
            row = await tx.one("get_webhook", {"id": webhook_id})
            return None if row is None else webhook_from_row(row)

        return await self._read(do)

    async def list_webhooks(self, group_id: int) -> list[Webhook]:
        """The webhooks of one group (-1: the server's), oldest first."""
        async def do(tx: Tx) -> list[Webhook]:
            rows = await tx.all("list_webhooks", {"group_id": group_id})
            return [webhook_from_row(row) for row in rows]

        return await self._read(do)

    async def delete_webhook(self, webhook_id: int) -> bool:
        # Its deliveries go with it (ON DELETE CASCADE).
        """Delete a webhook with all its deliveries; False when there was none."""
        return await self._write(lambda tx: tx.run("delete_webhook", {"id": webhook_id})) > 0

    # -- deliveries -------------------------------------------------------------------------
    async def recent_deliveries(self, webhook_id: int, limit: int) -> list[Delivery]:
        """The webhook's latest `limit` deliveries, newest first."""
        async def do(tx: Tx) -> list[Delivery]:
            args = {"webhook_id": webhook_id, "limit": limit}
            return [delivery_from_row(row) for row in await tx.all("recent_deliveries", args)]

        return await self._read(do)

    async def next_delivery_due(self) -> int | None:
        """When the earliest deliverable `pending` delivery is due (epoch ms), None if none is.

        Deliverable: no earlier delivery (same webhook, same thread) is still pending."""
        async def do(tx: Tx) -> int | None:
            value = await tx.value("next_delivery_due")
            return None if value is None else int(value)

        return await self._read(do)

    async def claim_deliveries(self, now: int, lease_ms: int, limit: int) -> list[DueDelivery]:
        """Take up to `limit` deliverable pending deliveries due at `now`, oldest first, each with
        its webhook and snapshot, and push their `next_attempt` to `now + lease_ms` in the same
        transaction, so that no other worker takes them while the lease lasts. At most one
        delivery per (webhook, thread) is pending-and-deliverable, so their order is kept."""
        async def do(tx: Tx) -> list[DueDelivery]:
            claimed = []
            for row in await tx.all("due_deliveries", {"now": now, "limit": limit}):
                await tx.run("lease_delivery", {"id": row["id"], "until": now + lease_ms})
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
        """Count one attempt of a pending delivery: its HTTP status `code` (0 without a
        response), its new `status`, and when to try next (used while `pending`)."""
        args = {
            "id": delivery_id,
            "now": now,
            "code": code,
            "status": status,
            "next_attempt": next_attempt,
        }
        await self._write(lambda tx: tx.run("record_delivery_attempt", args))

    async def release_delivery(self, delivery_id: str, now: int) -> None:
        """Give back a claimed, still pending delivery that was not attempted: due at `now`."""
        args = {"id": delivery_id, "now": now}
        await self._write(lambda tx: tx.run("release_delivery", args))

    async def release_all_deliveries(self, now: int) -> int:
        """Make every pending delivery due at `now` (leases and backoff alike); how many. For a
        node starting alone on its store, whose leases a crash may have left behind."""
        return await self._write(lambda tx: tx.run("release_all_deliveries", {"now": now}))

    async def prune_deliveries(self, created_before: int) -> int:
        """Delete delivered and failed deliveries created before the moment; how many."""
        return await self._write(lambda tx: tx.run("prune_deliveries", {"before": created_before}))
