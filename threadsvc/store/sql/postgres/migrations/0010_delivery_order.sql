-- 0010: deliveries found by index lookups whatever the outbox holds. A pending delivery that
-- waits behind an earlier pending one of its webhook and thread has next_attempt 2^62 (never
-- due) until that one is delivered or given up, so "due" needs no anti-join; webhooks count
-- their consecutive failed attempts and pause after several (the circuit breaker).
ALTER TABLE webhooks ADD COLUMN failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webhooks ADD COLUMN paused_until BIGINT NOT NULL DEFAULT 0;
UPDATE webhook_deliveries SET next_attempt = 4611686018427387904
WHERE status = 'pending' AND EXISTS (
    SELECT 1 FROM webhook_deliveries e
    WHERE e.webhook_id = webhook_deliveries.webhook_id
      AND e.thread_id = webhook_deliveries.thread_id
      AND e.status = 'pending' AND e.seq < webhook_deliveries.seq);
CREATE INDEX deliveries_next ON webhook_deliveries (webhook_id, next_attempt, seq)
    WHERE status = 'pending';
