-- 0012: the audit log (store/audit.py): who changed users, groups, memberships, threads and
-- webhooks, and the failed sign-ins, each written in the transaction of what it records.
-- Kept for audit-ttl (the purge deletes by time, hence the index on ts).
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    actor TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    group_name TEXT,
    address TEXT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts);
-- The filters of a page (an action; a user, as actor or target), so that a rare one is found
-- without reading every entry.
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_target ON audit_log (target, id);
