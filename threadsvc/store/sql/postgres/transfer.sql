-- Export and import (store/transfer.py): the highest user id ever given, as each dialect keeps it.

-- name: user_id_high
-- The highest id a user had, removed ones included (an identity never gives one twice).
SELECT greatest(coalesce((SELECT max(id) FROM users), 0),
                coalesce(pg_sequence_last_value(pg_get_serial_sequence('users', 'id')::regclass), 0))
       AS high;

-- name: reset_ids
-- After an import, which wrote the ids: each identity goes on after the highest (the users'
-- after any the source store gave to users since removed).
SELECT
    setval(pg_get_serial_sequence('users', 'id'),
           greatest(coalesce((SELECT max(id) FROM users), 0), :user_high::bigint, 1),
           greatest(coalesce((SELECT max(id) FROM users), 0), :user_high::bigint) > 0),
    setval(pg_get_serial_sequence('groups', 'id'),
           coalesce((SELECT max(id) FROM groups), 1), EXISTS (SELECT 1 FROM groups)),
    setval(pg_get_serial_sequence('threads', 'seq'),
           coalesce((SELECT max(seq) FROM threads), 1), EXISTS (SELECT 1 FROM threads)),
    setval(pg_get_serial_sequence('webhooks', 'id'),
           coalesce((SELECT max(id) FROM webhooks), 1), EXISTS (SELECT 1 FROM webhooks)),
    setval(pg_get_serial_sequence('audit_log', 'id'),
           coalesce((SELECT max(id) FROM audit_log), 1), EXISTS (SELECT 1 FROM audit_log));
