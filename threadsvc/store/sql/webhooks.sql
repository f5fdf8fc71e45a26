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
DELETE FROM webhooks WHERE id = :id RETURNING group_id, url;

-- name: recent_deliveries
SELECT * FROM webhook_deliveries WHERE webhook_id = :webhook_id ORDER BY seq DESC LIMIT :limit;

-- name: next_delivery_due
-- When the first claimable delivery is due: one index probe per webhook, whatever the outbox
-- holds (a delivery behind an earlier one of its thread is never due; a paused webhook's wait).
SELECT min(CASE WHEN paused_until > due THEN paused_until ELSE due END)
FROM (
    SELECT w.paused_until,
           (SELECT min(d.next_attempt) FROM webhook_deliveries d
            WHERE d.webhook_id = w.id AND d.status = 'pending') AS due
    FROM webhooks w
) AS each_webhook
WHERE due < :behind;

-- name: unblock_next_delivery
-- A delivery left pending: the next one of its webhook and thread, if any, is due now.
UPDATE webhook_deliveries SET next_attempt = :now
WHERE seq = (
    SELECT min(seq) FROM webhook_deliveries
    WHERE webhook_id = :webhook_id AND thread_id = :thread_id AND status = 'pending'
) AND next_attempt = :behind;

-- name: unblock_webhook_heads
-- After giving up deliveries in bulk: every pending delivery of the webhook that no longer
-- waits behind an earlier one of its thread is due now.
UPDATE webhook_deliveries SET next_attempt = :now
WHERE webhook_id = :webhook_id AND status = 'pending' AND next_attempt = :behind
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries e
      WHERE e.webhook_id = webhook_deliveries.webhook_id
        AND e.thread_id = webhook_deliveries.thread_id
        AND e.status = 'pending' AND e.seq < webhook_deliveries.seq);

-- name: over_pending_cap
-- Webhooks holding more pending deliveries than the cap, and by how many.
SELECT webhook_id, count(*) - :most AS excess FROM webhook_deliveries
WHERE status = 'pending' GROUP BY webhook_id HAVING count(*) > :most;

-- name: give_up_delivery
UPDATE webhook_deliveries SET status = 'failed', next_attempt = :now
WHERE id = :id AND status = 'pending';

-- name: give_up_oldest
UPDATE webhook_deliveries SET status = 'failed', next_attempt = :now
WHERE seq IN (
    SELECT seq FROM webhook_deliveries WHERE webhook_id = :webhook_id AND status = 'pending'
    ORDER BY seq LIMIT :excess
);

-- name: webhook_failed
UPDATE webhooks SET failures = failures + 1 WHERE id = :id RETURNING failures;

-- name: webhook_answered
UPDATE webhooks SET failures = 0, paused_until = 0 WHERE id = :id AND failures > 0;

-- name: pause_webhook
UPDATE webhooks SET paused_until = :until WHERE id = :id;

-- name: count_webhooks
SELECT (SELECT count(*) FROM webhooks WHERE group_id = :group_id) AS in_group,
       (SELECT count(*) FROM webhooks) AS in_all;

-- name: lease_delivery
UPDATE webhook_deliveries SET next_attempt = :until WHERE id = :id AND status = 'pending';

-- name: record_delivery_attempt
UPDATE webhook_deliveries
SET status = :status, attempts = attempts + 1, last_attempt = :now, code = :code,
    next_attempt = :next_attempt
WHERE id = :id AND status = 'pending'
RETURNING webhook_id, thread_id;

-- name: release_delivery
UPDATE webhook_deliveries SET next_attempt = :now WHERE id = :id AND status = 'pending';

-- name: release_all_deliveries
UPDATE webhook_deliveries SET next_attempt = :now
WHERE status = 'pending' AND next_attempt > :now AND next_attempt < :behind;

-- name: prune_deliveries
DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created < :before;
