-- Export and import (store/transfer.py, `threadsvc export | threadsvc import`): each table
-- read in key order, a page after the last key read, and written back with every column as it
-- was (ids included, so that URLs and sessions still name the same things).

-- name: export_server_settings
SELECT key, value FROM server_settings WHERE key > :after_a ORDER BY key LIMIT :limit;

-- name: export_users
SELECT id, username, password_hash, is_admin, created, disabled, credential_version
FROM users WHERE id > :after_a ORDER BY id LIMIT :limit;

-- name: export_groups
SELECT id, name FROM groups WHERE id > :after_a ORDER BY id LIMIT :limit;

-- name: export_memberships
SELECT group_id, user_id, role FROM memberships
WHERE (user_id, group_id) > (:after_a, :after_b) ORDER BY user_id, group_id LIMIT :limit;

-- name: export_api_tokens
SELECT token_hash, user_id, created FROM api_tokens
WHERE token_hash > :after_a ORDER BY token_hash LIMIT :limit;

-- name: export_oauth_clients
SELECT client_id, user_id, secret_hash, created FROM oauth_clients
WHERE client_id > :after_a ORDER BY client_id LIMIT :limit;

-- name: export_threads
SELECT seq, id, name, username, group_id, job, params, status, created, started, ended, message,
       progress_current, progress_total, warnings, errors, node, heartbeat, cancel_requested,
       version, idempotency_key, result_file, result_type, result_size, result_name,
       result_deletion, request_hash
FROM threads WHERE seq > :after_a ORDER BY seq LIMIT :limit;

-- name: export_log_events
SELECT thread_id, seq, ts, level, text FROM log_events
WHERE (thread_id, seq) > (:after_a, :after_b) ORDER BY thread_id, seq LIMIT :limit;

-- name: export_webhooks
SELECT id, group_id, url, secret, events, created_by, created, failures, paused_until
FROM webhooks WHERE id > :after_a ORDER BY id LIMIT :limit;

-- name: export_schedule_ticks
SELECT name, tick, node, claimed, thread_id, outcome FROM schedule_ticks
WHERE (name, tick) > (:after_a, :after_b) ORDER BY name, tick LIMIT :limit;

-- name: export_paused_jobs
SELECT job, paused, actor FROM paused_jobs WHERE job > :after_a ORDER BY job LIMIT :limit;

-- name: export_audit_log
SELECT id, ts, actor, action, target, group_name, address, detail FROM audit_log
WHERE id > :after_a ORDER BY id LIMIT :limit;

-- name: import_server_settings
INSERT INTO server_settings (key, value) VALUES (:key, :value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: import_users
INSERT INTO users (id, username, password_hash, is_admin, created, disabled, credential_version)
VALUES (:id, :username, :password_hash, :is_admin, :created, :disabled, :credential_version);

-- name: import_groups
INSERT INTO groups (id, name) VALUES (:id, :name);

-- name: import_memberships
INSERT INTO memberships (group_id, user_id, role) VALUES (:group_id, :user_id, :role);

-- name: import_api_tokens
INSERT INTO api_tokens (token_hash, user_id, created) VALUES (:token_hash, :user_id, :created);

-- name: import_oauth_clients
INSERT INTO oauth_clients (client_id, user_id, secret_hash, created)
VALUES (:client_id, :user_id, :secret_hash, :created);

-- name: import_threads
INSERT INTO threads
    (seq, id, name, username, group_id, job, params, status, created, started, ended, message,
     progress_current, progress_total, warnings, errors, node, heartbeat, cancel_requested,
     version, idempotency_key, result_file, result_type, result_size, result_name,
     result_deletion, request_hash)
VALUES
    (:seq, :id, :name, :username, :group_id, :job, :params, :status, :created, :started, :ended,
     :message, :progress_current, :progress_total, :warnings, :errors, :node, :heartbeat,
     :cancel_requested, :version, :idempotency_key, :result_file, :result_type, :result_size,
     :result_name, :result_deletion, :request_hash);

-- name: import_log_events
INSERT INTO log_events (thread_id, seq, ts, level, text) VALUES (:thread_id, :seq, :ts, :level, :text);

-- name: import_webhooks
INSERT INTO webhooks (id, group_id, url, secret, events, created_by, created, failures, paused_until)
VALUES (:id, :group_id, :url, :secret, :events, :created_by, :created, :failures, :paused_until);

-- name: import_schedule_ticks
INSERT INTO schedule_ticks (name, tick, node, claimed, thread_id, outcome)
VALUES (:name, :tick, :node, :claimed, :thread_id, :outcome);

-- name: import_paused_jobs
INSERT INTO paused_jobs (job, paused, actor) VALUES (:job, :paused, :actor);

-- name: import_audit_log
INSERT INTO audit_log (id, ts, actor, action, target, group_name, address, detail)
VALUES (:id, :ts, :actor, :action, :target, :group_name, :address, :detail);

-- name: transfer_occupied
-- Whether the store holds anything an import would collide with or mix with.
SELECT CASE WHEN EXISTS (SELECT 1 FROM users) OR EXISTS (SELECT 1 FROM groups)
    OR EXISTS (SELECT 1 FROM threads) OR EXISTS (SELECT 1 FROM webhooks)
    OR EXISTS (SELECT 1 FROM schedule_ticks) OR EXISTS (SELECT 1 FROM audit_log)
    OR EXISTS (SELECT 1 FROM paused_jobs)
    THEN 1 ELSE 0 END AS occupied;

-- name: wipe_paused_jobs
DELETE FROM paused_jobs;

-- name: wipe_audit_log
DELETE FROM audit_log;

-- name: wipe_schedule_ticks
DELETE FROM schedule_ticks;

-- name: wipe_webhooks
DELETE FROM webhooks;

-- name: wipe_log_events
DELETE FROM log_events;

-- name: wipe_threads
DELETE FROM threads;

-- name: wipe_oauth_clients
DELETE FROM oauth_clients;

-- name: wipe_api_tokens
DELETE FROM api_tokens;

-- name: wipe_memberships
DELETE FROM memberships;

-- name: wipe_groups
DELETE FROM groups;

-- name: wipe_users
DELETE FROM users;

-- name: wipe_server_settings
DELETE FROM server_settings;
