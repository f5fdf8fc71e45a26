-- 0008: an idempotency key belongs to a user in one place (a group, or the server level) and
-- remembers what was asked with it (request_hash): the same key with other parameters is a
-- conflict, not a replay. Keys of threads started before have no hash: they replay as before.
ALTER TABLE threads ADD COLUMN request_hash TEXT;
DROP INDEX threads_idempotency;
CREATE UNIQUE INDEX threads_idempotency ON threads (username, group_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
