-- 0002: results, idempotency keys, and webhooks with their durable outbox.
ALTER TABLE threads ADD COLUMN idempotency_key TEXT;
ALTER TABLE threads ADD COLUMN result_file TEXT;
ALTER TABLE threads ADD COLUMN result_type TEXT;
ALTER TABLE threads ADD COLUMN result_size INTEGER;
ALTER TABLE threads ADD COLUMN result_name TEXT;
ALTER TABLE threads ADD COLUMN result_deletion INTEGER;
CREATE UNIQUE INDEX threads_idempotency ON threads (username, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX threads_result_deletion ON threads (result_deletion)
    WHERE result_deletion IS NOT NULL;
CREATE INDEX threads_user_status ON threads (username, status);

CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY,
    group_id INTEGER NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX webhooks_group ON webhooks (group_id);

CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    thread_id TEXT NOT NULL,
    event TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    last_attempt INTEGER,
    code INTEGER,
    created INTEGER NOT NULL
);
CREATE INDEX deliveries_due ON webhook_deliveries (status, next_attempt);
CREATE INDEX deliveries_webhook ON webhook_deliveries (webhook_id, seq);
