-- Named queries of the PostgreSQL store. Each starts with a line `-- name: NAME`.
-- The same names as the SQLite store (a test checks), but for the few listed under "Only
-- PostgreSQL" at the end: the advisory locks that SQLite needs not (it has one writer at a time),
-- and COPY.
-- Parameters are psycopg's %(name)s; `{where}` is filled with filter_* fragments.

-- name: get_setting
SELECT value FROM server_settings WHERE key = %(key)s;

-- name: put_setting_if_absent
INSERT INTO server_settings (key, value) VALUES (%(key)s, %(value)s) ON CONFLICT (key) DO NOTHING;

-- name: insert_user
INSERT INTO users (username, password_hash, is_admin, created)
VALUES (%(username)s, %(password_hash)s, %(is_admin)s, %(created)s)
RETURNING id;

-- name: update_user
UPDATE users SET password_hash = %(password_hash)s, is_admin = %(is_admin)s,
    credential_version = credential_version + 1
WHERE username = %(username)s
RETURNING id, credential_version;

-- name: get_user_by_name
-- A disabled user is no user for every credential.
SELECT id, username, is_admin, password_hash, credential_version FROM users
WHERE username = %(username)s AND NOT disabled;

-- name: get_user_by_id
SELECT id, username, is_admin, password_hash, credential_version FROM users
WHERE id = %(id)s AND NOT disabled;

-- name: insert_api_token
INSERT INTO api_tokens (token_hash, user_id, created) VALUES (%(token_hash)s, %(user_id)s, %(created)s);

-- name: user_for_token
SELECT u.id, u.username, u.is_admin, u.password_hash, u.credential_version
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = %(token_hash)s AND NOT u.disabled;

-- name: insert_oauth_client
INSERT INTO oauth_clients (client_id, user_id, secret_hash, created)
VALUES (%(client_id)s, %(user_id)s, %(secret_hash)s, %(created)s);

-- name: get_oauth_client
SELECT u.id, u.username, u.is_admin, c.secret_hash, u.credential_version
FROM oauth_clients c JOIN users u ON u.id = c.user_id
WHERE c.client_id = %(client_id)s AND NOT u.disabled;

-- name: insert_group
-- With or without an explicit id; either way the identity sequence is moved past the new id, so
-- that later automatic ids never collide with an explicit one (the caller holds lock_group_ids).
WITH new AS (
    INSERT INTO groups (id, name)
    VALUES (coalesce(%(id)s, nextval(pg_get_serial_sequence('groups', 'id'))), %(name)s)
    RETURNING id
)
SELECT id, setval(
    pg_get_serial_sequence('groups', 'id'),
    greatest(id, coalesce(pg_sequence_last_value(pg_get_serial_sequence('groups', 'id')::regclass), 0), 1)
) AS next_from
FROM new;

-- name: get_group_by_name
SELECT id, name FROM groups WHERE name = %(name)s;

-- name: get_group_by_id
SELECT id, name FROM groups WHERE id = %(id)s;

-- name: set_membership
INSERT INTO memberships (group_id, user_id, role) VALUES (%(group_id)s, %(user_id)s, %(role)s)
ON CONFLICT (user_id, group_id) DO UPDATE SET role = excluded.role;

-- name: roles_of
SELECT group_id, role FROM memberships WHERE user_id = %(user_id)s;

-- name: groups_of
SELECT g.id, g.name, m.role FROM memberships m JOIN groups g ON g.id = m.group_id
WHERE m.user_id = %(user_id)s ORDER BY g.name;

-- name: get_login_failures
SELECT failures, window_start, locked_until FROM sign_in_attempts
WHERE username = %(username)s AND address = %(address)s;

-- name: put_login_failures
INSERT INTO sign_in_attempts (username, address, failures, window_start, locked_until)
VALUES (%(username)s, %(address)s, %(failures)s, %(window_start)s, %(locked_until)s)
ON CONFLICT (username, address) DO UPDATE SET
    failures = excluded.failures,
    window_start = excluded.window_start,
    locked_until = excluded.locked_until;

-- name: clear_login_failures
DELETE FROM sign_in_attempts WHERE username = %(username)s;

-- name: forget_login_failures
DELETE FROM sign_in_attempts WHERE window_start <= %(window_over)s AND locked_until <= %(now)s;

-- name: get_thread
SELECT * FROM threads WHERE id = %(id)s;

-- name: list_threads
-- The page's seqs first, from an index alone (a deep page skips index entries, not whole rows;
-- threads_group_seq serves a group's list), then only the page's rows.
SELECT * FROM threads WHERE seq IN (
    SELECT seq FROM threads WHERE {where} ORDER BY seq DESC LIMIT %(limit)s OFFSET %(offset)s
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
    SELECT bucket, upto - n AS newer FROM running WHERE upto > %(offset)s
    ORDER BY bucket DESC LIMIT 1
)
SELECT (SELECT coalesce(sum(n), 0) FROM buckets)::bigint AS total, page.bucket::bigint AS bucket,
       page.newer::bigint AS newer
FROM (SELECT 1) AS one LEFT JOIN page ON true;

-- name: filter_statuses
status = ANY(%(statuses)s)

-- name: filter_group
group_id = %(group_id)s

-- name: filter_username
username = %(username)s

-- name: filter_job
job = %(job)s

-- name: filter_since
created >= %(since)s

-- name: filter_until
created <= %(until)s

-- name: claim_threads
-- SKIP LOCKED: nodes claiming together take different threads, and none waits for another.
-- log_seq: the last seq of each thread's log, which the runner numbers its next events from.
UPDATE threads
SET status = 'inprogress', started = GREATEST(%(now)s, created), node = %(node)s, heartbeat = %(now)s,
    version = version + 1
WHERE seq IN (
    SELECT seq FROM threads WHERE status = 'initialised' ORDER BY seq LIMIT %(limit)s
    FOR NO KEY UPDATE SKIP LOCKED
)
RETURNING *,
    (SELECT coalesce(max(l.seq), 0) FROM log_events l WHERE l.thread_id = threads.id) AS log_seq;

-- name: update_running_thread
-- Every thread of a batch in one statement: each parameter but node and heartbeat is an array
-- holding one element per thread. Returns the ids it wrote (the others are no longer the node's).
UPDATE threads AS t
SET status = s.status, message = s.message, progress_current = s.progress_current,
    progress_total = s.progress_total, warnings = s.warnings, errors = s.errors,
    ended = s.ended, heartbeat = %(heartbeat)s, version = s.version,
    result_file = s.result_file, result_type = s.result_type, result_size = s.result_size,
    result_name = s.result_name, result_deletion = s.result_deletion
FROM unnest(
    %(id)s::text[], %(status)s::text[], %(message)s::text[], %(progress_current)s::bigint[],
    %(progress_total)s::bigint[], %(warnings)s::bigint[], %(errors)s::bigint[],
    %(ended)s::bigint[], %(version)s::bigint[], %(result_file)s::text[], %(result_type)s::text[],
    %(result_size)s::bigint[], %(result_name)s::text[], %(result_deletion)s::bigint[]
) AS s (id, status, message, progress_current, progress_total, warnings, errors, ended, version,
        result_file, result_type, result_size, result_name, result_deletion)
WHERE t.id = s.id AND t.node = %(node)s AND t.status NOT IN ('completed', 'failed', 'cancelled')
RETURNING t.id;

-- name: cancel_initialised
UPDATE threads
SET status = 'cancelled', ended = %(now)s, message = %(message)s, version = version + 1
WHERE id = %(id)s AND status = 'initialised'
RETURNING *;

-- name: request_cancel
UPDATE threads SET cancel_requested = true
WHERE id = %(id)s AND status IN ('inprogress', 'warning', 'error');

-- name: cancel_requests
SELECT id FROM threads
WHERE node = %(node)s AND cancel_requested AND status IN ('inprogress', 'warning', 'error');

-- name: heartbeat
-- Rows another transaction holds (a batch of this node's writer, which sets the heartbeat itself,
-- or a recovery) are skipped rather than waited for: no lock waits, no deadlock with the writer.
UPDATE threads SET heartbeat = %(now)s
WHERE seq IN (
    SELECT seq FROM threads
    WHERE node = %(node)s AND status IN ('inprogress', 'warning', 'error')
    FOR NO KEY UPDATE SKIP LOCKED
);

-- name: running_threads
SELECT * FROM threads WHERE status IN ('inprogress', 'warning', 'error') ORDER BY seq;

-- name: fail_orphan
UPDATE threads
SET status = 'failed', ended = %(now)s, message = %(message)s, node = NULL, version = version + 1
WHERE id = %(id)s AND node IS NOT DISTINCT FROM %(node)s
  AND status IN ('inprogress', 'warning', 'error')
RETURNING *;

-- name: requeue_orphan
UPDATE threads
SET status = 'initialised', node = NULL, heartbeat = NULL, message = %(message)s,
    version = version + 1
WHERE id = %(id)s AND node IS NOT DISTINCT FROM %(node)s
  AND status IN ('inprogress', 'warning', 'error')
RETURNING *;

-- name: delete_thread
DELETE FROM threads WHERE id = %(id)s AND status IN ('completed', 'failed', 'cancelled');

-- name: delete_logs
DELETE FROM log_events WHERE thread_id = %(id)s;

-- name: insert_log_events
-- Many events in one statement: each parameter is an array with one element per event.
INSERT INTO log_events (thread_id, seq, ts, level, text)
SELECT * FROM unnest(
    %(thread_id)s::text[], %(seq)s::bigint[], %(ts)s::bigint[], %(level)s::integer[],
    %(text)s::text[]
);

-- name: append_log_event
INSERT INTO log_events (thread_id, seq, ts, level, text)
SELECT %(thread_id)s, coalesce(max(seq), 0) + 1, %(ts)s, %(level)s, %(text)s
FROM log_events WHERE thread_id = %(thread_id)s;

-- name: last_log_seq
SELECT coalesce(max(seq), 0) FROM log_events WHERE thread_id = %(thread_id)s;

-- name: get_logs
SELECT seq, ts, level, text FROM log_events
WHERE thread_id = %(thread_id)s AND seq > %(since)s AND level >= %(level)s
ORDER BY seq LIMIT %(limit)s;

-- name: count_threads_by_status
-- From thread_counts (kept by triggers): a few rows, not every thread, for each health check.
SELECT status, sum(n)::bigint AS count FROM thread_counts GROUP BY status HAVING sum(n) > 0;

-- name: filter_below_bucket
-- The threads of buckets up to `bucket` (a bucket is 4,096 seqs: seq >> 12).
seq < (%(bucket)s::bigint + 1) << 12

-- name: filter_deletion_before
result_deletion IS NOT NULL AND result_deletion < %(deletion_before)s

-- name: release_idempotency_key
UPDATE threads SET idempotency_key = NULL
WHERE username = %(username)s AND group_id = %(group_id)s AND idempotency_key = %(key)s
  AND created < %(since)s;

-- name: expired_results
SELECT * FROM threads
WHERE result_deletion IS NOT NULL AND result_deletion <= %(now)s AND result_file IS NOT NULL
ORDER BY result_deletion LIMIT %(limit)s;

-- name: forget_result_file
UPDATE threads SET result_file = NULL WHERE id = %(id)s;

-- name: ended_before
SELECT * FROM threads
WHERE ended IS NOT NULL AND ended < %(moment)s AND status IN ('completed', 'failed', 'cancelled')
ORDER BY ended LIMIT %(limit)s;

-- name: forget_idempotency_keys
UPDATE threads SET idempotency_key = NULL
WHERE idempotency_key IS NOT NULL AND created < %(before)s;

-- Only PostgreSQL ---------------------------------------------------------------------------
-- Transaction-level advisory locks, released at commit or rollback. Under READ COMMITTED two
-- starts could both count 4 active threads and both insert a fifth; holding the user's lock
-- (then the group's: always in that order, so no deadlock) around count-and-insert makes the
-- check atomic, as SQLite's single writer does. Each statement after the lock sees what the
-- previous holder committed.

-- name: lock_user
-- A user's starts (limits, idempotency keys) and their failed logins.
SELECT pg_advisory_xact_lock(hashtext('threadsvc.user'), hashtext(%(username)s));

-- name: lock_user_and_group
-- A group's starts (limits): the user's lock, then the group's (a select list is evaluated left
-- to right), in one round trip.
SELECT pg_advisory_xact_lock(hashtext('threadsvc.user'), hashtext(%(username)s)) AS user_lock,
       pg_advisory_xact_lock(hashtext('threadsvc.group'), hashint8(%(group_id)s)) AS group_lock;

-- name: lock_group_ids
-- Creating groups, so that insert_group moves the id sequence knowing every committed id.
SELECT pg_advisory_xact_lock(hashtext('threadsvc.groups'), 0);

-- name: copy_log_events
-- The log events of a big batch (binary: the store gives each column's type), two to three times
-- as fast as insert_log_events, for one more round trip.
COPY log_events (thread_id, seq, ts, level, text) FROM STDIN (FORMAT BINARY);

-- name: insert_thread_within_limits
-- The thread and the first event of its log, unless the user's idempotency key already names a
-- thread in this group (or at server level) (`existing`; an expired use of the key was released before) or the user or the group
-- (none for server-level threads, group -1) has reached its limit of active threads. The counts
-- are kept by threads_counted() (0006): two lookups, whatever the number of active threads.
-- Run under the user's lock (and the group's), in the message that takes them.
WITH active AS (
    SELECT
        coalesce((SELECT n FROM active_by_user WHERE username = %(username)s), 0) AS user_active,
        coalesce((SELECT sum(n) FROM thread_counts
                  WHERE group_id = %(group_id)s
                    AND status IN ('initialised', 'inprogress', 'warning', 'error'))::bigint, 0)
            AS group_active,
        (SELECT id FROM threads
         WHERE username = %(username)s AND group_id = %(group_id)s
           AND idempotency_key = %(idempotency_key)s) AS existing
), thread AS (
    INSERT INTO threads
        (id, name, username, group_id, job, params, status, created, version, idempotency_key,
         request_hash)
    SELECT %(id)s, %(name)s, %(username)s, %(group_id)s, %(job)s, %(params)s, %(status)s,
           %(created)s, 1, %(idempotency_key)s, %(request_hash)s
    FROM active
    WHERE existing IS NULL
      AND user_active < %(per_user)s AND (%(group_id)s = -1 OR group_active < %(per_group)s)
    RETURNING id
), event AS (
    INSERT INTO log_events (thread_id, seq, ts, level, text)
    SELECT id, %(seq)s, %(ts)s, %(level)s, %(text)s FROM thread
)
SELECT user_active, group_active, existing, EXISTS (SELECT 1 FROM thread) AS inserted,
       (SELECT request_hash FROM threads WHERE id = active.existing) AS existing_hash
FROM active;
