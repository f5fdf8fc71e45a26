-- The audit log (store/audit.py). Named queries, as queries.sql.

-- name: insert_audit
-- The group by id, named as it is now (groups are never renamed or removed); none for -1.
INSERT INTO audit_log (ts, actor, action, target, group_name, address, detail)
VALUES (:ts, :actor, :action, :target, (SELECT name FROM groups WHERE id = :group_id), :address,
        :detail);

-- name: audit_entries
-- Oldest first after the cursor `since` (an id); `{where}`: the filter_audit_* fragments.
SELECT * FROM audit_log WHERE id > :since AND {where} ORDER BY id LIMIT :limit;

-- name: latest_audit_entries
-- The newest `limit` entries matching, newest first (the command line's default view).
SELECT * FROM audit_log WHERE {where} ORDER BY id DESC LIMIT :limit;

-- name: filter_audit_action
action = :action

-- name: filter_audit_user
-- What the user did, or what was done to them (a sign-in tried, a change to their account).
-- Each through its index: as `actor = :user OR target = :user`, PostgreSQL may walk the whole
-- table backwards for the latest entries of a name that has none.
id IN (SELECT id FROM audit_log WHERE actor = :user
       UNION ALL SELECT id FROM audit_log WHERE target = :user)

-- name: filter_audit_from
ts >= :from_ts

-- name: filter_audit_before
-- The latest entries before an entry (the audit page's older page).
id < :before

-- name: forget_audit
-- A batch at a time: a lowered audit-ttl may leave months to delete.
DELETE FROM audit_log
WHERE id IN (SELECT id FROM audit_log WHERE ts < :before ORDER BY ts LIMIT :limit);

-- name: audit_username
SELECT username FROM users WHERE id = :id;

-- name: audit_role
SELECT role FROM memberships WHERE group_id = :group_id AND user_id = :user_id;
