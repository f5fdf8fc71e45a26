-- Named queries of the SQLite store. Each starts with a line `-- name: NAME`.
-- The PostgreSQL store defines the same names (a test checks).

-- name: get_setting
SELECT value FROM server_settings WHERE key = :key;

-- name: put_setting_if_absent
INSERT INTO server_settings (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING;

-- name: insert_user
-- Never the id of a removed user (SQLite would reuse the highest): what named that user (a
-- console session) must not name the new one. users_removed keeps the highest removed id.
INSERT INTO users (id, username, password_hash, is_admin, created)
VALUES (
    max(coalesce((SELECT max(id) FROM users), 0),
        coalesce((SELECT CAST(value AS INTEGER) FROM server_settings WHERE key = 'removed-user-id'), 0)) + 1,
    :username, :password_hash, :is_admin, :created)
RETURNING id;

-- name: update_user
UPDATE users SET password_hash = :password_hash, is_admin = :is_admin,
    credential_version = credential_version + 1
WHERE username = :username
RETURNING id, credential_version;

-- name: get_user_by_name
-- A disabled user is no user for every credential.
SELECT id, username, is_admin, password_hash, credential_version FROM users
WHERE username = :username AND NOT disabled;

-- name: get_user_by_id
SELECT id, username, is_admin, password_hash, credential_version FROM users
WHERE id = :id AND NOT disabled;

-- name: insert_api_token
INSERT INTO api_tokens (token_hash, user_id, created) VALUES (:token_hash, :user_id, :created);

-- name: user_for_token
SELECT u.id, u.username, u.is_admin, u.password_hash, u.credential_version
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = :token_hash AND NOT u.disabled;

-- name: insert_oauth_client
INSERT INTO oauth_clients (client_id, user_id, secret_hash, created)
VALUES (:client_id, :user_id, :secret_hash, :created);

-- name: get_oauth_client
SELECT u.id, u.username, u.is_admin, c.secret_hash, u.credential_version
FROM oauth_clients c JOIN users u ON u.id = c.user_id
WHERE c.client_id = :client_id AND NOT u.disabled;

-- name: insert_group
INSERT INTO groups (id, name) VALUES (:id, :name) RETURNING id;

-- name: get_group_by_name
SELECT id, name FROM groups WHERE name = :name;

-- name: get_group_by_id
SELECT id, name FROM groups WHERE id = :id;

-- name: set_membership
INSERT INTO memberships (group_id, user_id, role) VALUES (:group_id, :user_id, :role)
ON CONFLICT (user_id, group_id) DO UPDATE SET role = excluded.role;

-- name: roles_of
SELECT group_id, role FROM memberships WHERE user_id = :user_id;

-- name: groups_of
SELECT g.id, g.name, m.role FROM memberships m JOIN groups g ON g.id = m.group_id
WHERE m.user_id = :user_id ORDER BY g.name;

-- name: get_login_failures
SELECT failures, window_start, locked_until FROM sign_in_attempts
WHERE username = :username AND address = :address;

-- name: put_login_failures
INSERT INTO sign_in_attempts (username, address, failures, window_start, locked_until)
VALUES (:username, :address, :failures, :window_start, :locked_until)
ON CONFLICT (username, address) DO UPDATE SET
    failures = excluded.failures,
    window_start = excluded.window_start,
    locked_until = excluded.locked_until;

-- name: clear_login_failures
DELETE FROM sign_in_attempts WHERE username = :username;

-- name: forget_login_failures
DELETE FROM sign_in_attempts WHERE window_start <= :window_over AND locked_until <= :now;

-- name: insert_thread
INSERT INTO threads
    (id, name, username, group_id, job, params, status, created, version, idempotency_key,
     request_hash)
VALUES (:id, :name, :username, :group_id, :job, :params, :status, :created, 1, :idempotency_key,
        :request_hash);

-- name: get_thread
SELECT * FROM threads WHERE id = :id;

-- name: list_threads
-- The page's seqs first, from an index alone (a deep page skips index entries, not whole rows;
-- threads_group_seq serves a group's list), then only the page's rows.
SELECT * FROM threads WHERE seq IN (
    SELECT seq FROM threads WHERE {where} ORDER BY seq DESC LIMIT :limit OFFSET :offset
)
ORDER BY seq DESC;

-- name: count_threads
SELECT count(*) FROM threads WHERE {where};

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

-- name: filter_statuses
status IN (SELECT value FROM json_each(:statuses))

-- name: filter_group
group_id = :group_id

-- name: filter_username
username = :username

-- name: filter_job
job = :job

-- name: filter_since
created >= :since

-- name: filter_until
created <= :until

-- name: claim_threads
UPDATE threads
SET status = 'inprogress', started = max(:now, created), node = :node, heartbeat = :now, version = version + 1
WHERE seq IN (
    SELECT seq FROM threads WHERE status = 'initialised' ORDER BY seq LIMIT :limit
)
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

-- name: cancel_initialised
UPDATE threads
SET status = 'cancelled', ended = :now, message = :message, version = version + 1
WHERE id = :id AND status = 'initialised'
RETURNING *;

-- name: request_cancel
UPDATE threads SET cancel_requested = 1
WHERE id = :id AND status IN ('inprogress', 'warning', 'error');

-- name: cancel_requests
SELECT id FROM threads
WHERE node = :node AND cancel_requested = 1 AND status IN ('inprogress', 'warning', 'error');

-- name: heartbeat
UPDATE threads SET heartbeat = :now
WHERE node = :node AND status IN ('inprogress', 'warning', 'error');

-- name: running_threads
SELECT * FROM threads WHERE status IN ('inprogress', 'warning', 'error') ORDER BY seq;

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

-- name: delete_thread
DELETE FROM threads WHERE id = :id AND status IN ('completed', 'failed', 'cancelled');

-- name: delete_logs
DELETE FROM log_events WHERE thread_id = :id;

-- name: insert_log_events
-- Positional: executemany binds a tuple faster than a dict, which counts for big logs.
INSERT INTO log_events (thread_id, seq, ts, level, text) VALUES (?, ?, ?, ?, ?);

-- name: append_log_event
INSERT INTO log_events (thread_id, seq, ts, level, text)
SELECT :thread_id, coalesce(max(seq), 0) + 1, :ts, :level, :text
FROM log_events WHERE thread_id = :thread_id;

-- name: last_log_seq
SELECT coalesce(max(seq), 0) FROM log_events WHERE thread_id = :thread_id;

-- name: get_logs
SELECT seq, ts, level, text FROM log_events
WHERE thread_id = :thread_id AND seq > :since AND level >= :level
ORDER BY seq LIMIT :limit;

-- name: count_threads_by_status
-- From thread_counts (kept by triggers): a few rows, not every thread, for each health check.
SELECT status, sum(n) AS count FROM thread_counts GROUP BY status HAVING sum(n) > 0;

-- name: filter_below_bucket
-- The threads of buckets up to `bucket` (a bucket is 4,096 seqs: seq >> 12).
seq < (:bucket + 1) << 12

-- name: filter_deletion_before
result_deletion IS NOT NULL AND result_deletion < :deletion_before

-- name: find_idempotent
SELECT * FROM threads
WHERE username = :username AND group_id = :group_id AND idempotency_key = :key
  AND created >= :since;

-- name: release_idempotency_key
UPDATE threads SET idempotency_key = NULL
WHERE username = :username AND group_id = :group_id AND idempotency_key = :key
  AND created < :since;

-- name: count_active
-- The active threads of a user and of a group, from the counts the triggers of migration 0005
-- keep (two lookups, however many threads are active).
SELECT
    coalesce((SELECT n FROM active_by_user WHERE username = :username), 0) AS user_active,
    coalesce((SELECT n FROM active_by_group WHERE group_id = :group_id), 0) AS group_active;

-- name: expired_results
SELECT * FROM threads
WHERE result_deletion IS NOT NULL AND result_deletion <= :now AND result_file IS NOT NULL
ORDER BY result_deletion LIMIT :limit;

-- name: forget_result_file
UPDATE threads SET result_file = NULL WHERE id = :id;

-- name: ended_before
SELECT * FROM threads
WHERE ended IS NOT NULL AND ended < :moment AND status IN ('completed', 'failed', 'cancelled')
ORDER BY ended LIMIT :limit;

-- name: forget_idempotency_keys
UPDATE threads SET idempotency_key = NULL
WHERE idempotency_key IS NOT NULL AND created < :before;
