-- 0003: webhook deliveries: keep each (webhook, thread) in order cheaply, and prune old ones.
CREATE INDEX deliveries_pending_order ON webhook_deliveries (webhook_id, thread_id, seq)
    WHERE status = 'pending';
CREATE INDEX deliveries_created ON webhook_deliveries (created) WHERE status <> 'pending';
