-- Taking access away: tokens, clients, memberships, users. Each DELETE answers the rows it
-- removed, so that the caller can tell "gone" from "there was none".

-- name: delete_api_token
DELETE FROM api_tokens WHERE token_hash = :token_hash RETURNING user_id;

-- name: delete_membership
DELETE FROM memberships WHERE group_id = :group_id AND user_id = :user_id RETURNING role;

-- name: delete_oauth_client
DELETE FROM oauth_clients WHERE client_id = :client_id RETURNING user_id;

-- name: list_oauth_clients
SELECT c.client_id, u.username, c.created FROM oauth_clients c JOIN users u ON u.id = c.user_id
ORDER BY u.username, c.created;

-- Accounts: each change of a credential bumps credential_version, which ends the console
-- sessions that recorded the old one.

-- name: set_password
UPDATE users SET password_hash = :password_hash, credential_version = credential_version + 1
WHERE username = :username RETURNING id;

-- name: disable_user
UPDATE users SET disabled = true, credential_version = credential_version + 1
WHERE username = :username RETURNING id;

-- name: enable_user
UPDATE users SET disabled = false WHERE username = :username RETURNING id;

-- name: delete_tokens_of_user
DELETE FROM api_tokens WHERE user_id = :user_id;

-- name: delete_clients_of_user
DELETE FROM oauth_clients WHERE user_id = :user_id;

-- name: delete_user
-- Memberships, API tokens and OAuth clients go with it (ON DELETE CASCADE); threads stay.
DELETE FROM users WHERE username = :username RETURNING id;

-- name: list_users
SELECT id, username, is_admin, disabled, created FROM users ORDER BY username;

-- name: find_users
-- A page of the users whose name holds :pattern (a lower-case LIKE pattern, `\` escaping).
SELECT id, username, is_admin, disabled, created FROM users
WHERE lower(username) LIKE :pattern ESCAPE '\' ORDER BY username LIMIT :limit OFFSET :offset;

-- name: count_found_users
SELECT count(*) FROM users WHERE lower(username) LIKE :pattern ESCAPE '\';

-- name: put_setting
INSERT INTO server_settings (key, value) VALUES (:key, :value)
ON CONFLICT (key) DO UPDATE SET value = excluded.value;

-- name: clear_login_failures_from
DELETE FROM sign_in_attempts WHERE username = :username AND address = :address;

-- What `threadsvc group list`, `member list`, `user show` and `user revoke-tokens` read and do.

-- name: list_groups
SELECT g.id, g.name, count(m.user_id) AS members
FROM groups g LEFT JOIN memberships m ON m.group_id = g.id
GROUP BY g.id, g.name ORDER BY g.name;

-- name: members_of
SELECT u.id, u.username, u.is_admin, u.disabled, u.created, m.role
FROM memberships m JOIN users u ON u.id = m.user_id
WHERE m.group_id = :group_id ORDER BY u.username;

-- name: count_tokens_of_user
SELECT count(*) AS n FROM api_tokens WHERE user_id = :user_id;

-- name: bump_credential_version
UPDATE users SET credential_version = credential_version + 1
WHERE username = :username RETURNING id;
