-- The whole schema of a fresh SQLite store. Migrations must reach exactly this (a test checks).
CREATE TABLE schema_version (version INTEGER NOT NULL);

CREATE TABLE server_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    credential_version INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER users_removed AFTER DELETE ON users
BEGIN
    INSERT INTO server_settings (key, value) VALUES ('removed-user-id', old.id)
    ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), old.id);
END;

CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE memberships (
    group_id INTEGER NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role INTEGER NOT NULL,
    PRIMARY KEY (user_id, group_id)
) WITHOUT ROWID;

CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    created INTEGER NOT NULL
) WITHOUT ROWID;

-- Unused since 0007 (sign_in_attempts): kept so that nodes of the previous version keep
-- working on a migrated store until they are replaced.
CREATE TABLE login_failures (
    username TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Sign-in attempts per name ('client:ID' for OAuth clients), and per client address when
-- lockout-per-address is on ('' when it is off). `failures` counts attempts reserved in the
-- window, checked or still being checked.
CREATE TABLE sign_in_attempts (
    username TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    failures INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (username, address)
) WITHOUT ROWID;

CREATE TABLE threads (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    username TEXT NOT NULL,
    group_id INTEGER NOT NULL,
    job TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL,
    started INTEGER,
    ended INTEGER,
    message TEXT,
    progress_current INTEGER,
    progress_total INTEGER,
    warnings INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    node TEXT,
    heartbeat INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT,
    result_file TEXT,
    result_type TEXT,
    result_size INTEGER,
    result_name TEXT,
    result_deletion INTEGER,
    request_hash TEXT
);
CREATE INDEX threads_status ON threads (status, seq);
CREATE INDEX threads_group_status ON threads (group_id, status, seq);
CREATE INDEX threads_ended ON threads (ended, status, job, started) WHERE ended IS NOT NULL;
CREATE UNIQUE INDEX threads_idempotency ON threads (username, group_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX threads_result_deletion ON threads (result_deletion)
    WHERE result_deletion IS NOT NULL;
CREATE INDEX threads_user_status ON threads (username, status);
CREATE INDEX threads_group_seq ON threads (group_id, seq, status);
CREATE INDEX threads_ended_seq ON threads (coalesce(ended, 9223372036854775807), seq);
CREATE INDEX threads_group_ended ON threads (group_id, coalesce(ended, 9223372036854775807), seq);

-- How many threads each (group, status) has in each bucket of 4,096 seqs (seq >> 12), kept
-- by triggers: the totals of lists, and where their deep pages start (see migration 0004).
CREATE TABLE thread_counts (
    group_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (group_id, status, bucket)
) WITHOUT ROWID;
CREATE TRIGGER threads_counted_insert AFTER INSERT ON threads
BEGIN
    INSERT INTO thread_counts (group_id, status, bucket, n)
    VALUES (new.group_id, new.status, new.seq >> 12, 1)
    ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER threads_counted_delete AFTER DELETE ON threads
BEGIN
    UPDATE thread_counts SET n = n - 1
    WHERE group_id = old.group_id AND status = old.status AND bucket = old.seq >> 12;
END;
CREATE TRIGGER threads_counted_update AFTER UPDATE OF group_id, status, seq ON threads
WHEN old.group_id IS NOT new.group_id OR old.status IS NOT new.status OR old.seq IS NOT new.seq
BEGIN
    UPDATE thread_counts SET n = n - 1
    WHERE group_id = old.group_id AND status = old.status AND bucket = old.seq >> 12;
    INSERT INTO thread_counts (group_id, status, bucket, n)
    VALUES (new.group_id, new.status, new.seq >> 12, 1)
    ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = n + 1;
END;

CREATE TABLE log_events (
    thread_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    level INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (thread_id, seq)
) WITHOUT ROWID;

CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY,
    group_id INTEGER NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created INTEGER NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,  -- consecutive failed attempts (the circuit breaker)
    paused_until INTEGER NOT NULL DEFAULT 0  -- no delivery is claimed before (epoch ms)
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
CREATE INDEX deliveries_pending_order ON webhook_deliveries (webhook_id, thread_id, seq)
    WHERE status = 'pending';
CREATE INDEX deliveries_created ON webhook_deliveries (created) WHERE status <> 'pending';
-- next_attempt is 2^62 while an earlier pending delivery of the webhook and thread waits.
CREATE INDEX deliveries_next ON webhook_deliveries (webhook_id, next_attempt, seq)
    WHERE status = 'pending';

-- Active threads per user and per group, for the limits (kept by triggers).
CREATE TABLE active_by_user (
    username TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE active_by_group (
    group_id INTEGER PRIMARY KEY,
    n INTEGER NOT NULL
);
CREATE TRIGGER threads_active_insert AFTER INSERT ON threads
WHEN new.status IN ('initialised', 'inprogress', 'warning', 'error')
BEGIN
    INSERT INTO active_by_user (username, n) VALUES (new.username, 1)
    ON CONFLICT (username) DO UPDATE SET n = n + 1;
    INSERT INTO active_by_group (group_id, n) VALUES (new.group_id, 1)
    ON CONFLICT (group_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER threads_active_end AFTER UPDATE OF status ON threads
WHEN old.status IN ('initialised', 'inprogress', 'warning', 'error')
    AND new.status NOT IN ('initialised', 'inprogress', 'warning', 'error')
BEGIN
    UPDATE active_by_user SET n = n - 1 WHERE username = old.username;
    UPDATE active_by_group SET n = n - 1 WHERE group_id = old.group_id;
END;
CREATE TRIGGER threads_active_again AFTER UPDATE OF status ON threads
WHEN old.status NOT IN ('initialised', 'inprogress', 'warning', 'error')
    AND new.status IN ('initialised', 'inprogress', 'warning', 'error')
BEGIN
    INSERT INTO active_by_user (username, n) VALUES (new.username, 1)
    ON CONFLICT (username) DO UPDATE SET n = n + 1;
    INSERT INTO active_by_group (group_id, n) VALUES (new.group_id, 1)
    ON CONFLICT (group_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER threads_active_delete AFTER DELETE ON threads
WHEN old.status IN ('initialised', 'inprogress', 'warning', 'error')
BEGIN
    UPDATE active_by_user SET n = n - 1 WHERE username = old.username;
    UPDATE active_by_group SET n = n - 1 WHERE group_id = old.group_id;
END;

-- The ticks of the schedules (runner/schedules.py): see migrations/0011_schedule_ticks.sql.
CREATE TABLE schedule_ticks (
    name TEXT NOT NULL,
    tick INTEGER NOT NULL,
    node TEXT NOT NULL,
    claimed INTEGER NOT NULL,
    thread_id TEXT,
    outcome TEXT,
    PRIMARY KEY (name, tick)
);
CREATE INDEX schedule_ticks_open ON schedule_ticks (claimed)
    WHERE thread_id IS NULL AND outcome IS NULL;

-- The audit log (store/audit.py): see migrations/0012_audit_log.sql.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    actor TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    group_name TEXT,
    address TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts);
-- The filters of a page (an action; a user, as actor or target), so that a rare one is found
-- without reading every entry.
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);

-- The administrators' controls (store/controls.py): see migrations/0013_controls.sql.
CREATE TABLE paused_jobs (
    job TEXT PRIMARY KEY,
    paused INTEGER NOT NULL,
    actor TEXT
);
CREATE TABLE nodes (
    node TEXT PRIMARY KEY,
    started INTEGER NOT NULL,
    seen INTEGER NOT NULL,
    running INTEGER NOT NULL DEFAULT 0,
    capacity INTEGER NOT NULL,
    max_running INTEGER,
    draining INTEGER NOT NULL DEFAULT 0,
    drained INTEGER NOT NULL DEFAULT 0
);
-- The dashboard's time ranges: see migrations/0014_dashboard_index.sql.
CREATE INDEX threads_created ON threads (created);
CREATE INDEX threads_started ON threads (started, created) WHERE started IS NOT NULL;
