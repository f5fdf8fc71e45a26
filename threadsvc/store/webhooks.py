"""The store's webhooks and their outbox, written once over the dialect primitives (dialect.py).

`_status_changed` runs inside the very transaction that changes a thread's status, so a
delivery is queued if and only if the change is stored (a transactional outbox): a crash can
lose neither, and the delivery worker (threadsvc/delivery/worker.py) finds it in the store later.
PostgreSQL claims with FOR UPDATE SKIP LOCKED (skipping deliveries another worker is claiming),
so several nodes can deliver.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from threadsvc.errors import TooManyWebhooks
from threadsvc.models import (
    BEHIND,
    SERVER_GROUP_ID,
    Actor,
    Delivery,
    DeliveryStatus,
    DueDelivery,
    Status,
    Thread,
    Webhook,
    WebhookEvents,
)
from threadsvc.store import fair
from threadsvc.store.audit import Audit, AuditRules
from threadsvc.store.dialect import Tx
from threadsvc.store.rows import delivery_from_row, thread_from_snapshot, webhook_from_row


class WebhookRules(AuditRules):
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
        *,
        most_in_group: int = 0,
        most_in_all: int = 0,
        by: Actor | None = None,
    ) -> Webhook:
        """Store a webhook of the group (-1: of the server) and return it with its new id.
        TooManyWebhooks, and nothing stored, when the group already has `most_in_group` or the
        server `most_in_all` (0: no bound)."""
        args = {
            "group_id": group_id,
            "url": url,
            "secret": secret,
            "events": events,
            "created_by": created_by,
            "created": now,
        }

        async def do(tx: Tx, audit: Audit) -> Webhook:
            await tx.lock("lock_webhooks")
            counts = await tx.one("count_webhooks", {"group_id": group_id})
            assert counts is not None
            if 0 < most_in_group <= counts["in_group"]:
                where = "The server" if group_id == SERVER_GROUP_ID else "The group"
                raise TooManyWebhooks(f"{where} has {most_in_group} webhooks, the most allowed")
            if 0 < most_in_all <= counts["in_all"]:
                raise TooManyWebhooks(f"The server has {most_in_all} webhooks, the most allowed")
            webhook_id = await tx.value("insert_webhook", args)
            await audit(tx, "webhook.add", str(webhook_id), group_id=group_id, detail=_host(url))
            return Webhook(webhook_id, group_id, url, secret, events, created_by, now)

        return await self._audited(by, do)

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

    async def delete_webhook(self, webhook_id: int, *, by: Actor | None = None) -> bool:
        # Its deliveries go with it (ON DELETE CASCADE).
        """Delete a webhook with all its deliveries; False when there was none."""
        async def do(tx: Tx, audit: Audit) -> bool:
            row = await tx.one("delete_webhook", {"id": webhook_id})
            if row is None:
                return False
            await audit(tx, "webhook.remove", str(webhook_id), group_id=row["group_id"],
                        detail=_host(row["url"]))
            return True

        return await self._audited(by, do)

    # -- deliveries -------------------------------------------------------------------------
    async def recent_deliveries(self, webhook_id: int, limit: int) -> list[Delivery]:
        """The webhook's latest `limit` deliveries, newest first."""
        async def do(tx: Tx) -> list[Delivery]:
            args = {"webhook_id": webhook_id, "limit": limit}
            return [delivery_from_row(row) for row in await tx.all("recent_deliveries", args)]

        return await self._read(do)

    async def next_delivery_due(self) -> int | None:
        """When the earliest claimable delivery is due (epoch ms), None if none is.

        Claimable: pending, its webhook not paused, and no earlier delivery of its webhook and
        thread still pending (such a one waits with next_attempt BEHIND)."""
        async def do(tx: Tx) -> int | None:
            value = await tx.value("next_delivery_due", {"behind": BEHIND})
            return None if value is None else int(value)

        return await self._read(do)

    async def claim_deliveries(
        self,
        now: int,
        lease_ms: int,
        limit: int,
        *,
        busy: Iterable[tuple[fair.Owner, int]] = (),
        workers: int = 0,
        share: float = 1.0,
    ) -> list[DueDelivery]:
        """Take up to `limit` claimable deliveries due at `now`, each with its webhook and
        snapshot, and push their `next_attempt` to `now + lease_ms` in the same transaction,
        so that no other worker takes them while the lease lasts.

        Chosen fairly (store/fair.py) among the first `limit` due of each webhook: by group,
        then webhook (the owner `(group id, str(webhook id))`), counting `busy`, the attempts
        the caller has in flight, against its `workers` (0: `limit` and those) and `share`:
        one group's dead or slow receivers cannot take every worker from another's."""
        async def do(tx: Tx) -> list[DueDelivery]:
            await tx.lock("lock_delivery_claims")
            rows = {
                row["seq"]: row
                for row in await tx.all("due_deliveries", {"now": now, "limit": limit})
            }
            in_flight = list(busy)
            waiting = [fair.Waiting(s, r["w_group_id"], str(r["webhook_id"])) for s, r in rows.items()]
            size = workers or limit + sum(n for _, n in in_flight)
            claimed = []
            for seq in fair.pick(in_flight, waiting, limit, size, share):
                row = rows[seq]
                try:
                    thread = thread_from_snapshot(row["snapshot"])
                except (KeyError, TypeError, ValueError):
                    # Not a snapshot a status change wrote (a row written by hand): given up,
                    # lest it stop every delivery claimed with it.
                    args = {"id": row["id"], "now": now}
                    await tx.run("give_up_delivery", args)
                    await tx.run("unblock_next_delivery", {
                        **args, "webhook_id": row["webhook_id"], "thread_id": row["thread_id"],
                        "behind": BEHIND,
                    })
                    continue
                await tx.run("lease_delivery", {"id": row["id"], "until": now + lease_ms})
                claimed.append(DueDelivery(
                    delivery=delivery_from_row(row),
                    webhook=webhook_from_row(row, prefix="w_"),
                    thread=thread,
                ))
            return claimed

        return await self._write(do)

    async def record_attempt(
        self,
        delivery_id: str,
        now: int,
        code: int,
        status: DeliveryStatus,
        next_attempt: int,
    ) -> int:
        """Count one attempt of a pending delivery: its HTTP status `code` (0 without a
        response), its new `status`, and when to try next (used while `pending`). One that is
        no longer pending lets the next of its webhook and thread be due. Returns the
        webhook's consecutive failed attempts (0 after a 2xx, or when the delivery was given
        up or deleted meanwhile)."""
        args = {
            "id": delivery_id,
            "now": now,
            "code": code,
            "status": status,
            "next_attempt": next_attempt,
        }

        async def do(tx: Tx) -> int:
            row = await tx.one("record_delivery_attempt", args)
            if row is None:
                return 0
            if status != "pending":
                await tx.run("unblock_next_delivery", {
                    "webhook_id": row["webhook_id"], "thread_id": row["thread_id"],
                    "now": now, "behind": BEHIND,
                })
            if 200 <= code < 300:
                await tx.run("webhook_answered", {"id": row["webhook_id"]})
                return 0
            return int(await tx.value("webhook_failed", {"id": row["webhook_id"]}))

        return await self._write(do)

    async def pause_webhook(self, webhook_id: int, until: int) -> None:
        """Claim none of the webhook's deliveries before `until` (its circuit is open)."""
        await self._write(lambda tx: tx.run("pause_webhook", {"id": webhook_id, "until": until}))

    async def give_up_excess(self, most: int, now: int) -> dict[int, int]:
        """Give up (status failed) the oldest pending deliveries of each webhook holding more
        than `most`, so that it holds `most`; how many per webhook."""
        async def do(tx: Tx) -> dict[int, int]:
            over = {
                int(row["webhook_id"]): int(row["excess"])
                for row in await tx.all("over_pending_cap", {"most": most})
            }
            for webhook_id, excess in over.items():
                args = {"webhook_id": webhook_id, "excess": excess, "now": now}
                await tx.run("give_up_oldest", args)
                await tx.run("unblock_webhook_heads", {**args, "behind": BEHIND})
            return over

        return await self._write(do)

    async def release_delivery(self, delivery_id: str, now: int) -> None:
        """Give back a claimed, still pending delivery that was not attempted: due at `now`."""
        args = {"id": delivery_id, "now": now}
        await self._write(lambda tx: tx.run("release_delivery", args))

    async def release_all_deliveries(self, now: int) -> int:
        """Make every pending delivery due at `now` (leases and backoff alike); how many. For a
        node starting alone on its store, whose leases a crash may have left behind."""
        args = {"now": now, "behind": BEHIND}
        return await self._write(lambda tx: tx.run("release_all_deliveries", args))

    async def prune_deliveries(self, created_before: int) -> int:
        """Delete delivered and failed deliveries created before the moment; how many."""
        return await self._write(lambda tx: tx.run("prune_deliveries", {"before": created_before}))


def _host(url: str) -> str:
    """What an audit entry says of a webhook's URL: its scheme and host (a path or query may
    carry the receiver's own token)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
    except ValueError:
        return ""
