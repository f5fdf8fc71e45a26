-- The PostgreSQL store's own queries: those whose SQL differs from ../queries.sql, and the few
-- listed under "Only PostgreSQL": the advisory locks that SQLite needs not (it has one writer at
-- a time), COPY, and a start's insert in one statement. Parameters as ../queries.sql writes them.

-- name: insert_user
INSERT INTO users (username, password_hash, is_admin, created)
VALUES (:username, :password_hash, :is_admin, :created)
RETURNING id;

-- name: insert_group
-- With or without an explicit id; either way the identity sequence is moved past the new id, so
-- that later automatic ids never collide with an explicit one (the caller holds lock_group_ids).
WITH new AS (
    INSERT INTO groups (id, name)
    VALUES (coalesce(:id, nextval(pg_get_serial_sequence('groups', 'id'))), :name)
    RETURNING id
)
SELECT id, setval(
    pg_get_serial_sequence('groups', 'id'),
    greatest(id, coalesce(pg_sequence_last_value(pg_get_serial_sequence('groups', 'id')::regclass), 0), 1)
) AS next_from
FROM new;

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
SELECT (SELECT coalesce(sum(n), 0) FROM buckets)::bigint AS total, page.bucket::bigint AS bucket,
       page.newer::bigint AS newer
FROM (SELECT 1) AS one LEFT JOIN page ON true;

-- name: get_threads
-- A page of threads by id (an array), for a list that follows them.
SELECT * FROM threads WHERE id = ANY(:ids::text[]);

-- name: filter_statuses
status = ANY(:statuses)

-- name: claim_threads
-- The threads store/fair.py chose. SKIP LOCKED: nodes claiming together take different
-- threads, and none waits for another (a thread another node took is no longer initialised).
-- log_seq: the last seq of each thread's log, which the runner numbers its next events from.
UPDATE threads
SET status = 'inprogress', started = GREATEST(:now, created), node = :node, heartbeat = :now,
    version = version + 1
WHERE seq IN (
    SELECT seq FROM threads WHERE seq = ANY(:seqs::bigint[]) AND status = 'initialised'
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
    ended = s.ended, heartbeat = :heartbeat, version = s.version,
    result_file = s.result_file, result_type = s.result_type, result_size = s.result_size,
    result_name = s.result_name, result_deletion = s.result_deletion
FROM unnest(
    :id::text[], :status::text[], :message::text[], :progress_current::bigint[],
    :progress_total::bigint[], :warnings::bigint[], :errors::bigint[],
    :ended::bigint[], :version::bigint[], :result_file::text[], :result_type::text[],
    :result_size::bigint[], :result_name::text[], :result_deletion::bigint[]
) AS s (id, status, message, progress_current, progress_total, warnings, errors, ended, version,
        result_file, result_type, result_size, result_name, result_deletion)
WHERE t.id = s.id AND t.node = :node AND t.status NOT IN ('completed', 'failed', 'cancelled')
RETURNING t.id;

-- name: cancel_requests
SELECT id FROM threads
WHERE node = :node AND cancel_requested AND status IN ('inprogress', 'warning', 'error');

-- name: heartbeat
-- Rows another transaction holds (a batch of this node's writer, which sets the heartbeat itself,
-- or a recovery) are skipped rather than waited for: no lock waits, no deadlock with the writer.
UPDATE threads SET heartbeat = :now
WHERE seq IN (
    SELECT seq FROM threads
    WHERE node = :node AND status IN ('inprogress', 'warning', 'error')
    FOR NO KEY UPDATE SKIP LOCKED
);

-- name: fail_orphan
UPDATE threads
SET status = 'failed', ended = :now, message = :message, node = NULL, version = version + 1
WHERE id = :id AND node IS NOT DISTINCT FROM :node
  AND status IN ('inprogress', 'warning', 'error')
RETURNING *;

-- name: requeue_orphan
UPDATE threads
SET status = 'initialised', node = NULL, heartbeat = NULL, message = :message,
    version = version + 1
WHERE id = :id AND node IS NOT DISTINCT FROM :node
  AND status IN ('inprogress', 'warning', 'error')
RETURNING *;

-- name: insert_log_events
-- Many events in one statement: each parameter is an array with one element per event.
INSERT INTO log_events (thread_id, seq, ts, level, text)
SELECT * FROM unnest(
    :thread_id::text[], :seq::bigint[], :ts::bigint[], :level::integer[],
    :text::text[]
);

-- name: count_threads_by_status
-- From thread_counts (kept by triggers): a few rows, not every thread, for each health check.
SELECT status, sum(n)::bigint AS count FROM thread_counts GROUP BY status HAVING sum(n) > 0;

-- name: filter_below_bucket
-- The threads of buckets up to `bucket` (a bucket is 4,096 seqs: seq >> 12).
seq < (:bucket::bigint + 1) << 12

-- Only PostgreSQL ---------------------------------------------------------------------------
-- Transaction-level advisory locks, released at commit or rollback. Under READ COMMITTED two
-- starts could both count 4 active threads and both insert a fifth; holding the user's lock
-- (then the group's: always in that order, so no deadlock) around count-and-insert makes the
-- check atomic, as SQLite's single writer does. Each statement after the lock sees what the
-- previous holder committed.

-- name: lock_user
-- A user's starts (limits, idempotency keys) and their failed logins.
SELECT pg_advisory_xact_lock(hashtext('threadsvc.user'), hashtext(:username));

-- name: lock_user_and_group
-- A group's starts (limits): the user's lock, then the group's (a select list is evaluated left
-- to right), in one round trip.
SELECT pg_advisory_xact_lock(hashtext('threadsvc.user'), hashtext(:username)) AS user_lock,
       pg_advisory_xact_lock(hashtext('threadsvc.group'), hashint8(:group_id)) AS group_lock;

-- name: lock_claims
-- Claims, one at a time across nodes: each sees the ones before it committed, so the fair
-- choice (store/fair.py) is made knowing every node's claims, and no two nodes pick alike.
SELECT pg_advisory_xact_lock(hashtext('threadsvc.claims'), 0);

-- name: lock_delivery_claims
-- Delivery claims, one at a time across nodes (as lock_claims for threads).
SELECT pg_advisory_xact_lock(hashtext('threadsvc.deliveries'), 0);

-- name: lock_webhooks
-- Creating webhooks, so that the caps are counted knowing every committed one.
SELECT pg_advisory_xact_lock(hashtext('threadsvc.webhooks'), 0);

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
        coalesce((SELECT n FROM active_by_user WHERE username = :username), 0) AS user_active,
        coalesce((SELECT sum(n) FROM thread_counts
                  WHERE group_id = :group_id
                    AND status IN ('initialised', 'inprogress', 'warning', 'error'))::bigint, 0)
            AS group_active,
        (SELECT id FROM threads
         WHERE username = :username AND group_id = :group_id
           AND idempotency_key = :idempotency_key) AS existing
), thread AS (
    INSERT INTO threads
        (id, name, username, group_id, job, params, status, created, version, idempotency_key,
         request_hash)
    SELECT :id, :name, :username, :group_id, :job, :params, :status,
           :created, 1, :idempotency_key, :request_hash
    FROM active
    WHERE existing IS NULL
      AND user_active < :per_user AND (:group_id = -1 OR group_active < :per_group)
    RETURNING id
), event AS (
    INSERT INTO log_events (thread_id, seq, ts, level, text)
    SELECT id, :seq, :ts, :level, :text FROM thread
)
SELECT user_active, group_active, existing, EXISTS (SELECT 1 FROM thread) AS inserted,
       (SELECT request_hash FROM threads WHERE id = active.existing) AS existing_hash
FROM active;

-- name: lock_users
-- The users' locks of a batch of starts (as lock_user), in the order of their keys: every
-- transaction takes users' locks, then groups', each in that order, so none waits in a circle.
SELECT count(pg_advisory_xact_lock(hashtext('threadsvc.user'), k))
FROM (SELECT DISTINCT hashtext(u) AS k FROM unnest(:usernames::text[]) AS u ORDER BY k) AS keys;

-- name: lock_groups
-- The groups' locks of a batch of starts (as lock_user_and_group), after the users'.
SELECT count(pg_advisory_xact_lock(hashtext('threadsvc.group'), k))
FROM (SELECT DISTINCT hashint8(g) AS k FROM unnest(:group_ids::bigint[]) AS g ORDER BY k) AS keys;

-- name: insert_threads_within_limits
-- Starts without an idempotency key, many at once (one statement, so the counting triggers run
-- once), all or none: none when one of them would pass its user's or its group's limit,
-- counting the starts before it in the batch; the caller then runs them one by one, each with
-- its own answer. Run under lock_users and lock_groups, in the message that takes them.
WITH start AS (
    SELECT s.*,
           row_number() OVER (PARTITION BY s.username ORDER BY s.n) AS user_nth,
           row_number() OVER (PARTITION BY s.group_id ORDER BY s.n) AS group_nth
    FROM unnest(:id::text[], :name::text[], :username::text[], :group_id::bigint[],
                :job::text[], :params::text[], :status::text[], :created::bigint[],
                :seq::bigint[], :ts::bigint[], :level::integer[], :text::text[],
                :per_user::bigint[], :per_group::bigint[])
         WITH ORDINALITY AS s (id, name, username, group_id, job, params, status, created,
                               seq, ts, level, text, per_user, per_group, n)
), refused AS (
    SELECT 1 FROM start s
    WHERE coalesce((SELECT a.n FROM active_by_user a WHERE a.username = s.username), 0)
              + s.user_nth > s.per_user
       OR (s.group_id <> -1
           AND coalesce((SELECT sum(c.n) FROM thread_counts c
                         WHERE c.group_id = s.group_id
                           AND c.status IN ('initialised', 'inprogress', 'warning', 'error')),
                        0) + s.group_nth > s.per_group)
    LIMIT 1
), thread AS (
    INSERT INTO threads (id, name, username, group_id, job, params, status, created, version)
    SELECT id, name, username, group_id, job, params, status, created, 1 FROM start
    WHERE NOT EXISTS (SELECT 1 FROM refused)
    ORDER BY n
    RETURNING id
), event AS (
    INSERT INTO log_events (thread_id, seq, ts, level, text)
    SELECT s.id, s.seq, s.ts, s.level, s.text FROM start s JOIN thread t ON t.id = s.id
)
SELECT NOT EXISTS (SELECT 1 FROM refused) AS inserted, (SELECT count(*) FROM thread) AS n;

-- name: queue_deliveries
-- One delivery per webhook that wants each change: the thread's group's and the server's. The
-- changes of a transaction in one statement (one JSON array of objects, oldest first: one
-- text to bind, where four arrays cost the client a conversion per element);
-- it inserts nothing, at the cost of one index probe, where no webhook wants them. Rows are
-- numbered (seq) in the ORDER BY's order: change by change, then webhook by webhook.
INSERT INTO webhook_deliveries
    (id, webhook_id, thread_id, event, snapshot, status, attempts, next_attempt, created)
SELECT replace(gen_random_uuid()::text, '-', ''), w.id, c.thread_id, c.event, c.snapshot,
       'pending', 0,
       -- due now, unless it waits behind an earlier pending one (stored, or in this batch)
       CASE WHEN row_number() OVER (PARTITION BY w.id, c.thread_id ORDER BY c.n) = 1
                 AND NOT EXISTS (
                     SELECT 1 FROM webhook_deliveries e
                     WHERE e.webhook_id = w.id AND e.thread_id = c.thread_id
                       AND e.status = 'pending')
            THEN :now::bigint ELSE :behind::bigint END,
       :now
FROM ROWS FROM (json_to_recordset(:changes::json)
                AS (thread_id text, group_id bigint, event text, snapshot text))
     WITH ORDINALITY AS c (thread_id, group_id, event, snapshot, n)
JOIN webhooks w ON w.group_id IN (c.group_id, -1) AND (c.event = 'final' OR w.events = 'all')
ORDER BY c.n, w.id;

-- name: due_deliveries
-- The first `limit` due deliveries of each webhook not paused, for store/fair.py to choose
-- from: one index range per webhook, whatever the outbox holds. (Claims take turns under
-- lock_delivery_claims, so nothing here needs locking.)
SELECT d.*, w.group_id AS w_group_id, w.url AS w_url, w.secret AS w_secret,
       w.events AS w_events, w.created_by AS w_created_by, w.created AS w_created
FROM webhooks w
CROSS JOIN LATERAL (
    SELECT * FROM webhook_deliveries e
    WHERE e.webhook_id = w.id AND e.status = 'pending' AND e.next_attempt <= :now
    ORDER BY e.next_attempt, e.seq LIMIT :limit
) AS d
WHERE w.paused_until <= :now;

-- name: threads_by_ids
SELECT * FROM threads WHERE id = ANY(:ids);

-- name: database_now
-- The clock every node reads times from (runner/clock.py).
SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint;

-- name: lock_audit
-- Audited changes commit one at a time, so that entry ids grow in commit order and a reader
-- paging by id (`since`) never passes an entry that commits later with a smaller id.
SELECT pg_advisory_xact_lock(hashtext('threadsvc.audit'), 0);

-- name: search_logs
-- As ../queries.sql, with ILIKE: LIKE is case-sensitive here.
SELECT seq, ts, level, text FROM log_events
WHERE thread_id = :thread_id AND seq > :since AND level >= :level
  AND text ILIKE :pattern ESCAPE '\'
ORDER BY seq LIMIT :limit;

-- name: filter_dash_groups
-- The dashboard of a manager: the threads of their groups (store/dashboard.py).
group_id = ANY(:groups)
