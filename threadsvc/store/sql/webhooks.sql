-- Webhooks and their durable outbox of deliveries (docs/api.md#webhooks). Named queries, as queries.sql.

-- name: insert_webhook
INSERT INTO webhooks (group_id, url, secret, events, created_by, created)
VALUES (:group_id, :url, :secret, :events, :created_by, :created)
RETURNING id;

-- name: get_webhook
SELECT * FROM webhooks WHERE id = :id;

-- name: list_webhooks
SELECT * FROM webhooks WHERE group_id = :group_id ORDER BY id;

-- name: delete_webhook
DELETE FROM webhooks WHERE id = :id;

-- name: recent_deliveries
SELECT * FROM webhook_deliveries WHERE webhook_id = :webhook_id ORDER BY seq DESC LIMIT :limit;

-- name: next_delivery_due
-- Only the oldest pending delivery of each (webhook, thread) may go: later ones wait for it.
SELECT min(d.next_attempt) FROM webhook_deliveries d
WHERE d.status = 'pending'
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries e
      WHERE e.webhook_id = d.webhook_id AND e.thread_id = d.thread_id
        AND e.status = 'pending' AND e.seq < d.seq);

-- name: lease_delivery
UPDATE webhook_deliveries SET next_attempt = :until WHERE id = :id AND status = 'pending';

-- name: record_delivery_attempt
UPDATE webhook_deliveries
SET status = :status, attempts = attempts + 1, last_attempt = :now, code = :code,
    next_attempt = :next_attempt
WHERE id = :id AND status = 'pending';

-- name: release_delivery
UPDATE webhook_deliveries SET next_attempt = :now WHERE id = :id AND status = 'pending';

-- name: release_all_deliveries
UPDATE webhook_deliveries SET next_attempt = :now WHERE status = 'pending' AND next_attempt > :now;

-- name: prune_deliveries
DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created < :before;
