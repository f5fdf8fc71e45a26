-- The SQLite store's own queries: those whose SQL differs from ../queries.sql (or that only
-- SQLite needs), as ../queries.sql writes them.

-- name: insert_user
-- Never the id of a removed user (SQLite would reuse the highest): what named that user (a
-- console session) must not name the new one. users_removed keeps the highest removed id.
INSERT INTO users (id, username, password_hash, is_admin, created)
VALUES (
    max(coalesce((SELECT max(id) FROM users), 0),
        coalesce((SELECT CAST(value AS INTEGER) FROM server_settings WHERE key = 'removed-user-id'), 0)) + 1,
    :username, :password_hash, :is_admin, :created)
RETURNING id;

-- name: insert_group
INSERT INTO groups (id, name) VALUES (:id, :name) RETURNING id;

-- name: insert_thread
INSERT INTO threads
    (id, name, username, group_id, job, params, status, created, version, idempotency_key,
     request_hash)
VALUES (:id, :name, :username, :group_id, :job, :params, :status, :created, 1, :idempotency_key,
        :request_hash);

-- name: locate_page
-- For a filter of statuses and group only (columns thread_counts has too): the total, and the
-- newest bucket holding the page's first thread, with how many matching threads are newer than
-- that bucket (the page then starts that many fewer threads below the bucket's top).
WITH buckets AS (
    SELECT bucket, sum(n) AS n FROM thread_counts WHERE {where} GROUP BY bucket
), running AS (
    SELECT bucket, n, sum(n) OVER (ORDER BY bucket DESC) AS upto FROM buckets
), page AS (
    SELECT bucket, upto - n AS newer FROM running WHERE upto > :offset
    ORDER BY bucket DESC LIMIT 1
)
SELECT (SELECT coalesce(sum(n), 0) FROM buckets) AS total, page.bucket AS bucket,
       page.newer AS newer
FROM (SELECT 1) AS one LEFT JOIN page ON true;

-- name: order_ended_asc
-- As the shared one, in the expression of the indexes of migration 0015 (SQLite's indexes
-- keep NULL first, and cannot serve NULLS LAST).
coalesce(ended, 9223372036854775807) ASC, seq ASC

-- name: order_ended_desc
coalesce(ended, 9223372036854775807) DESC, seq DESC

-- name: filter_id_prefix
-- As the shared one, marked as matching few rows: without the hint SQLite's planner prefers an
-- index that gives the list's order (a whole group's threads read to find one id).
likelihood(id >= :id_prefix, 0.0001) AND likelihood(id < :id_prefix_end, 0.0001)

-- name: get_threads
-- A page of threads by id (an array), for a list that follows them.
SELECT * FROM threads WHERE id IN (SELECT value FROM json_each(:ids));

-- name: filter_statuses
status IN (SELECT value FROM json_each(:statuses))

-- name: claim_threads
UPDATE threads
SET status = 'inprogress', started = max(:now, created), node = :node, heartbeat = :now, version = version + 1
WHERE seq IN (SELECT value FROM json_each(:seqs)) AND status = 'initialised'
RETURNING *;

-- name: last_log_seqs
-- (Not a subquery in the claim's RETURNING: SQLite runs that one 30 times slower.)
SELECT thread_id, max(seq) AS log_seq FROM log_events
WHERE thread_id IN (SELECT value FROM json_each(:ids))
GROUP BY thread_id;

-- name: update_running_thread
UPDATE threads
SET status = :status, message = :message, progress_current = :progress_current,
    progress_total = :progress_total, warnings = :warnings, errors = :errors,
    ended = :ended, heartbeat = :heartbeat, version = :version,
    result_file = :result_file, result_type = :result_type, result_size = :result_size,
    result_name = :result_name, result_deletion = :result_deletion
WHERE id = :id AND node = :node AND status NOT IN ('completed', 'failed', 'cancelled');

-- name: cancel_requests
SELECT id FROM threads
WHERE node = :node AND cancel_requested = 1 AND status IN ('inprogress', 'warning', 'error');

-- name: heartbeat
UPDATE threads SET heartbeat = :now
WHERE node = :node AND status IN ('inprogress', 'warning', 'error');

-- name: fail_orphan
UPDATE threads
SET status = 'failed', ended = :now, message = :message, node = NULL, version = version + 1
WHERE id = :id AND node IS :node AND status IN ('inprogress', 'warning', 'error')
RETURNING *;

-- name: requeue_orphan
UPDATE threads
SET status = 'initialised', node = NULL, heartbeat = NULL, message = :message,
    version = version + 1
WHERE id = :id AND node IS :node AND status IN ('inprogress', 'warning', 'error')
RETURNING *;

-- name: insert_log_events
-- Positional: executemany binds a tuple faster than a dict, which counts for big logs.
INSERT INTO log_events (thread_id, seq, ts, level, text) VALUES (?, ?, ?, ?, ?);

-- name: count_threads_by_status
-- From thread_counts (kept by triggers): a few rows, not every thread, for each health check.
SELECT status, sum(n) AS count FROM thread_counts GROUP BY status HAVING sum(n) > 0;

-- name: filter_below_bucket
-- The threads of buckets up to `bucket` (a bucket is 4,096 seqs: seq >> 12).
seq < (:bucket + 1) << 12

-- name: find_idempotent
SELECT * FROM threads
WHERE username = :username AND group_id = :group_id AND idempotency_key = :key
  AND created >= :since;

-- name: count_active
-- The active threads of a user and of a group, from the counts the triggers of migration 0005
-- keep (two lookups, however many threads are active).
SELECT
    coalesce((SELECT n FROM active_by_user WHERE username = :username), 0) AS user_active,
    coalesce((SELECT n FROM active_by_group WHERE group_id = :group_id), 0) AS group_active;

-- name: any_webhooks
-- Only SQLite: whether queue_deliveries could insert anything at all (PostgreSQL's one
-- statement per transaction finds that out for itself).
SELECT 1 FROM webhooks LIMIT 1;

-- name: queue_deliveries
-- One delivery per webhook that wants this change: the thread's group's and the server's.
INSERT INTO webhook_deliveries
    (id, webhook_id, thread_id, event, snapshot, status, attempts, next_attempt, created)
SELECT lower(hex(randomblob(16))), id, :thread_id, :event, :snapshot, 'pending', 0,
       -- due now, unless it waits behind an earlier pending one
       CASE WHEN EXISTS (
                SELECT 1 FROM webhook_deliveries e
                WHERE e.webhook_id = webhooks.id AND e.thread_id = :thread_id
                  AND e.status = 'pending')
            THEN :behind ELSE :now END,
       :now
FROM webhooks
WHERE group_id IN (:group_id, -1) AND (:event = 'final' OR events = 'all')
ORDER BY id;

-- name: due_deliveries
-- The first `limit` due deliveries of each webhook not paused, for store/fair.py to choose
-- from: one index range per webhook, whatever the outbox holds.
SELECT d.*, w.group_id AS w_group_id, w.url AS w_url, w.secret AS w_secret,
       w.events AS w_events, w.created_by AS w_created_by, w.created AS w_created
FROM webhooks w JOIN webhook_deliveries d ON d.seq IN (
    SELECT e.seq FROM webhook_deliveries e
    WHERE e.webhook_id = w.id AND e.status = 'pending' AND e.next_attempt <= :now
    ORDER BY e.next_attempt, e.seq LIMIT :limit
)
WHERE w.paused_until <= :now;

-- name: threads_by_ids
SELECT * FROM threads WHERE id IN (SELECT value FROM json_each(:ids));

-- name: database_now
-- One machine owns the store: its clock is the only one (runner/clock.py).
SELECT NULL;

-- name: filter_dash_groups
-- The dashboard of a manager: the threads of their groups (store/dashboard.py).
group_id IN (SELECT value FROM json_each(:groups))
