-- 0005: limits. How many active threads (initialised, inprogress, warning, error) each user and
-- each group has, kept by triggers in the transactions that insert, move or delete threads, so
-- that a start checks its limits with two lookups however many threads are active.
-- (PostgreSQL counts under advisory locks instead: counter rows that every start and every end
-- of a group's threads update would be hot rows that concurrent transactions lock in turn.)
CREATE TABLE active_by_user (
    username TEXT PRIMARY KEY,
    n INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE active_by_group (
    group_id INTEGER PRIMARY KEY,
    n INTEGER NOT NULL
);
INSERT INTO active_by_user (username, n)
SELECT username, count(*) FROM threads
WHERE status IN ('initialised', 'inprogress', 'warning', 'error') GROUP BY username;
INSERT INTO active_by_group (group_id, n)
SELECT group_id, count(*) FROM threads
WHERE status IN ('initialised', 'inprogress', 'warning', 'error') GROUP BY group_id;
CREATE TRIGGER threads_active_insert AFTER INSERT ON threads
WHEN new.status IN ('initialised', 'inprogress', 'warning', 'error')
BEGIN
    INSERT INTO active_by_user (username, n) VALUES (new.username, 1)
    ON CONFLICT (username) DO UPDATE SET n = n + 1;
    INSERT INTO active_by_group (group_id, n) VALUES (new.group_id, 1)
    ON CONFLICT (group_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER threads_active_end AFTER UPDATE OF status ON threads
WHEN old.status IN ('initialised', 'inprogress', 'warning', 'error')
    AND new.status NOT IN ('initialised', 'inprogress', 'warning', 'error')
BEGIN
    UPDATE active_by_user SET n = n - 1 WHERE username = old.username;
    UPDATE active_by_group SET n = n - 1 WHERE group_id = old.group_id;
END;
CREATE TRIGGER threads_active_again AFTER UPDATE OF status ON threads
WHEN old.status NOT IN ('initialised', 'inprogress', 'warning', 'error')
    AND new.status IN ('initialised', 'inprogress', 'warning', 'error')
BEGIN
    INSERT INTO active_by_user (username, n) VALUES (new.username, 1)
    ON CONFLICT (username) DO UPDATE SET n = n + 1;
    INSERT INTO active_by_group (group_id, n) VALUES (new.group_id, 1)
    ON CONFLICT (group_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER threads_active_delete AFTER DELETE ON threads
WHEN old.status IN ('initialised', 'inprogress', 'warning', 'error')
BEGIN
    UPDATE active_by_user SET n = n - 1 WHERE username = old.username;
    UPDATE active_by_group SET n = n - 1 WHERE group_id = old.group_id;
END;
