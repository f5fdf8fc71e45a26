-- Named queries of both stores, written once. Each starts with a line `-- name: NAME`.
-- Parameters are :name, rewritten to psycopg's %(name)s for PostgreSQL when loaded; `{where}` is
-- filled with filter_* fragments. Where the SQL really differs, sqlite/overrides.sql and
-- postgres/overrides.sql define the query for their dialect (a test checks both define the same
-- names, but for the few only one dialect needs).

-- name: get_setting
SELECT value FROM server_settings WHERE key = :key;

-- name: put_setting_if_absent
INSERT INTO server_settings (key, value) VALUES (:key, :value) ON CONFLICT (key) DO NOTHING;

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

-- name: get_thread
SELECT * FROM threads WHERE id = :id;

-- name: list_threads
-- The page's seqs first, from an index alone (a deep page skips index entries, not whole rows;
-- threads_group_seq serves a group's list), then only the page's rows.
SELECT * FROM threads WHERE seq IN (
    SELECT seq FROM threads WHERE {where} ORDER BY seq DESC LIMIT :limit OFFSET :offset
)
ORDER BY seq DESC;

-- name: list_threads_sorted
-- Another order than newest first ({order}: an order_* fragment, seq breaking ties), the
-- page's seqs first as list_threads does.
SELECT * FROM threads WHERE seq IN (
    SELECT seq FROM threads WHERE {where} ORDER BY {order} LIMIT :limit OFFSET :offset
)
ORDER BY {order};

-- name: order_created_asc
seq ASC

-- name: order_created_desc
seq DESC

-- name: order_ended_asc
-- A thread not yet ended sorts after every ended one (as if it ended last), both ways: the
-- order of an index on (ended, seq), read forwards or backwards.
ended ASC NULLS LAST, seq ASC

-- name: order_ended_desc
ended DESC NULLS FIRST, seq DESC

-- name: order_duration_asc
-- A thread cancelled before it started took no time; one not yet ended sorts as the longest.
(ended - coalesce(started, ended)) ASC NULLS LAST, seq ASC

-- name: order_duration_desc
(ended - coalesce(started, ended)) DESC NULLS FIRST, seq DESC

-- name: count_threads
SELECT count(*) FROM threads WHERE {where};

-- name: count_threads_by_group_status
-- From thread_counts (kept by triggers): a few rows per group, not every thread (the console's
-- groups page shows every group's counts from this one query).
SELECT group_id, status, CAST(sum(n) AS BIGINT) AS count
FROM thread_counts GROUP BY group_id, status HAVING sum(n) > 0;

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

-- name: filter_id_prefix
-- A range on the unique index of ids (lowercase hex; :id_prefix_end is the prefix and 'g').
id >= :id_prefix AND id < :id_prefix_end

-- name: filter_name
lower(name) LIKE :name ESCAPE '\'

-- name: filter_text
lower(message) LIKE :text ESCAPE '\'

-- name: filter_ended_since
ended >= :ended_since

-- name: filter_ended_until
ended <= :ended_until

-- name: cancel_initialised
UPDATE threads
SET status = 'cancelled', ended = :now, message = :message, version = version + 1
WHERE id = :id AND status = 'initialised'
RETURNING *;

-- name: request_cancel
UPDATE threads SET cancel_requested = true
WHERE id = :id AND status IN ('inprogress', 'warning', 'error')
RETURNING group_id, job, status;

-- name: running_on_node
-- What a fair claim weighs (store/fair.py): the node's running threads by owner.
SELECT group_id, username, count(*) AS n FROM threads
WHERE status IN ('inprogress', 'warning', 'error') AND node = :node
GROUP BY group_id, username;

-- name: waiting_heads
-- The waiting threads a fair claim of `limit` on `node` could choose (store/fair.py), so that
-- a claim reads a slot's worth however many owners wait: the oldest `limit` of each owner, of
-- the owners running on the node and the `limit` + 1 oldest-headed others of each group, of
-- the groups running on the node and the `limit` + 1 oldest-headed others. A pick prefers
-- owners holding none, oldest head first, so `limit` picks never reach past those; the one
-- more keeps "others wait" true wherever it is.
WITH r AS (
    SELECT DISTINCT group_id, username FROM threads
    WHERE status IN ('inprogress', 'warning', 'error') AND node = :node
), heads AS (  -- a paused job's threads wait, on every node (store/controls.py)
    SELECT group_id, username, min(seq) AS head FROM threads
    WHERE status = 'initialised' AND job NOT IN (SELECT job FROM paused_jobs)
    GROUP BY group_id, username
), owners AS (
    SELECT h.group_id, h.username, h.head,
           CASE WHEN r.username IS NULL THEN 0 ELSE 1 END AS runs,
           CASE WHEN h.group_id IN (SELECT group_id FROM r) THEN 1 ELSE 0 END AS group_runs
    FROM heads AS h LEFT JOIN r ON r.group_id = h.group_id AND r.username = h.username
), users AS (  -- the owners that could be chosen, of each group
    SELECT group_id, username FROM (
        SELECT group_id, username, runs,
               row_number() OVER (PARTITION BY group_id, runs ORDER BY head) AS uk
        FROM owners
    ) AS o
    WHERE runs = 1 OR uk <= :limit + 1
), groups AS (  -- the groups that could be chosen
    SELECT group_id FROM (
        SELECT group_id, group_runs,
               row_number() OVER (PARTITION BY group_runs ORDER BY head) AS gk
        FROM (SELECT group_id, group_runs, min(head) AS head FROM owners
              GROUP BY group_id, group_runs) AS h
    ) AS g
    WHERE group_runs = 1 OR gk <= :limit + 1
)
SELECT seq, group_id, username FROM (
    SELECT seq, group_id, username,
           row_number() OVER (PARTITION BY group_id, username ORDER BY seq) AS k
    FROM threads
    WHERE status = 'initialised' AND job NOT IN (SELECT job FROM paused_jobs)
      AND (group_id, username) IN (
        SELECT group_id, username FROM users WHERE group_id IN (SELECT group_id FROM groups)
    )
) AS w
WHERE k <= :limit;

-- name: waiting_heads_by_job
-- As waiting_heads, for a claim where jobs have concurrency limits: the oldest `limit` of each
-- owner's each job, so that threads of a job at its limit hide no others behind them.
SELECT seq, group_id, username, job FROM (
    SELECT seq, group_id, username, job,
           row_number() OVER (PARTITION BY group_id, username, job ORDER BY seq) AS k
    FROM threads WHERE status = 'initialised' AND job NOT IN (SELECT job FROM paused_jobs)
) AS w
WHERE k <= :limit;

-- name: running_by_job
-- What a claim weighs against the jobs' concurrency limits: the running threads of each job,
-- on every node.
SELECT job, count(*) AS n FROM threads
WHERE status IN ('inprogress', 'warning', 'error')
GROUP BY job;

-- name: running_threads
SELECT * FROM threads WHERE status IN ('inprogress', 'warning', 'error') ORDER BY seq;

-- name: delete_thread
DELETE FROM threads WHERE id = :id AND status IN ('completed', 'failed', 'cancelled')
RETURNING group_id, job, status;

-- name: delete_logs
DELETE FROM log_events WHERE thread_id = :id;

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

-- name: search_logs
-- The thread's events holding :pattern (a LIKE pattern, escaped with '\'), scanned in seq order
-- on the primary key from :since: a page of common text ends early, rare text reads the log once
-- (docs/decisions.md, "Searching a log"). SQLite's LIKE ignores the case of A-Z.
SELECT seq, ts, level, text FROM log_events
WHERE thread_id = :thread_id AND seq > :since AND level >= :level
  AND text LIKE :pattern ESCAPE '\'
ORDER BY seq LIMIT :limit;

-- name: filter_deletion_before
result_deletion IS NOT NULL AND result_deletion < :deletion_before

-- name: release_idempotency_key
UPDATE threads SET idempotency_key = NULL
WHERE username = :username AND group_id = :group_id AND idempotency_key = :key
  AND created < :since;

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
