-- Export and import (store/transfer.py): the highest user id ever given, as each dialect keeps it.

-- name: user_id_high
-- The highest id a user had, removed ones included (insert_user never gives one again).
SELECT max(coalesce((SELECT max(id) FROM users), 0),
           coalesce((SELECT CAST(value AS INTEGER) FROM server_settings
                     WHERE key = 'removed-user-id'), 0)) AS high;

-- name: reset_ids
-- After an import: INTEGER PRIMARY KEY gives max + 1 by itself; insert_user must also stay
-- above the ids the source store gave to users since removed.
INSERT INTO server_settings (key, value) VALUES ('removed-user-id', CAST(:user_high AS TEXT))
ON CONFLICT (key) DO UPDATE
SET value = CAST(max(CAST(value AS INTEGER), :user_high) AS TEXT);
