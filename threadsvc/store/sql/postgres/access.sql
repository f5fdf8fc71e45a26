-- Taking access away: revoked tokens and removed memberships. Each answers the rows it
-- removed, so that the caller can tell "gone" from "there was none".

-- name: delete_api_token
DELETE FROM api_tokens WHERE token_hash = %(token_hash)s RETURNING user_id;

-- name: delete_membership
DELETE FROM memberships WHERE group_id = %(group_id)s AND user_id = %(user_id)s RETURNING role;
