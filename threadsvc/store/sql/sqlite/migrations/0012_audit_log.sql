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
