-- Webhooks and their durable outbox of deliveries (SPEC §8). Named queries, as queries.sql.

-- name: insert_webhook
INSERT INTO webhooks (group_id, url, secret, events, created_by, created)
VALUES (%(group_id)s, %(url)s, %(secret)s, %(events)s, %(created_by)s, %(created)s)
RETURNING id;

-- name: get_webhook
SELECT * FROM webhooks WHERE id = %(id)s;

-- name: list_webhooks
SELECT * FROM webhooks WHERE group_id = %(group_id)s ORDER BY id;

-- name: delete_webhook
DELETE FROM webhooks WHERE id = %(id)s;

-- name: queue_deliveries
-- One delivery per webhook that wants each change: the thread's group's and the server's. The
-- changes of a transaction in one statement (arrays, one element per change, oldest first);
-- it inserts nothing, at the cost of one index probe, where no webhook wants them. Rows are
-- numbered (seq) in the ORDER BY's order: change by change, then webhook by webhook.
INSERT INTO webhook_deliveries
    (id, webhook_id, thread_id, event, snapshot, status, attempts, next_attempt, created)
SELECT replace(gen_random_uuid()::text, '-', ''), w.id, c.thread_id, c.event, c.snapshot,
       'pending', 0, %(now)s, %(now)s
FROM unnest(%(thread_id)s::text[], %(group_id)s::bigint[], %(event)s::text[], %(snapshot)s::text[])
     WITH ORDINALITY AS c (thread_id, group_id, event, snapshot, n)
JOIN webhooks w ON w.group_id IN (c.group_id, -1) AND (c.event = 'final' OR w.events = 'all')
ORDER BY c.n, w.id;

-- name: recent_deliveries
SELECT * FROM webhook_deliveries
WHERE webhook_id = %(webhook_id)s ORDER BY seq DESC LIMIT %(limit)s;

-- name: next_delivery_due
-- Only the oldest pending delivery of each (webhook, thread) may go: later ones wait for it.
SELECT min(d.next_attempt) FROM webhook_deliveries d
WHERE d.status = 'pending'
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries e
      WHERE e.webhook_id = d.webhook_id AND e.thread_id = d.thread_id
        AND e.status = 'pending' AND e.seq < d.seq);

-- name: due_deliveries
-- SKIP LOCKED: workers on several nodes claim different deliveries; one that another worker
-- is claiming still holds back the later ones of its (webhook, thread), being still pending.
SELECT d.*, w.group_id AS w_group_id, w.url AS w_url, w.secret AS w_secret,
       w.events AS w_events, w.created_by AS w_created_by, w.created AS w_created
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
WHERE d.status = 'pending' AND d.next_attempt <= %(now)s
  AND NOT EXISTS (
      SELECT 1 FROM webhook_deliveries e
      WHERE e.webhook_id = d.webhook_id AND e.thread_id = d.thread_id
        AND e.status = 'pending' AND e.seq < d.seq)
ORDER BY d.seq LIMIT %(limit)s
FOR NO KEY UPDATE OF d SKIP LOCKED;

-- name: lease_delivery
UPDATE webhook_deliveries SET next_attempt = %(until)s WHERE id = %(id)s AND status = 'pending';

-- name: record_delivery_attempt
UPDATE webhook_deliveries
SET status = %(status)s, attempts = attempts + 1, last_attempt = %(now)s, code = %(code)s,
    next_attempt = %(next_attempt)s
WHERE id = %(id)s AND status = 'pending';

-- name: release_delivery
UPDATE webhook_deliveries SET next_attempt = %(now)s WHERE id = %(id)s AND status = 'pending';

-- name: release_all_deliveries
UPDATE webhook_deliveries SET next_attempt = %(now)s
WHERE status = 'pending' AND next_attempt > %(now)s;

-- name: prune_deliveries
DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created < %(before)s;
