-- Webhooks and their durable outbox of deliveries (SPEC §8). Named queries, as queries.sql.

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

-- name: any_webhooks
-- Only SQLite: whether queue_deliveries could insert anything at all (PostgreSQL's one
-- statement per transaction finds that out for itself).
SELECT 1 FROM webhooks LIMIT 1;

-- name: queue_deliveries
-- One delivery per webhook that wants this change: the thread's group's and the server's.
INSERT INTO webhook_deliveries
    (id, webhook_id, thread_id, event, snapshot, status, attempts, next_attempt, created)
SELECT lower(hex(randomblob(16))), id, :thread_id, :event, :snapshot, 'pending', 0, :now, :now
FROM webhooks
WHERE group_id IN (:group_id, -1) AND (:event = 'final' OR events = 'all')
ORDER BY id;

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

-- name: due_deliveries
SELECT d.*, w.group_id AS w_group_id, w.url AS w_url, w.secret AS w_secret,
       w.events AS w_events, w.created_by AS w_created_by, w.created AS w_created
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE d.status = 'pending' AND d.next_attempt <= :now
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries e
      WHERE e.webhook_id = d.webhook_id AND e.thread_id = d.thread_id
        AND e.status = 'pending' AND e.seq < d.seq)
ORDER BY d.seq LIMIT :limit;

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
