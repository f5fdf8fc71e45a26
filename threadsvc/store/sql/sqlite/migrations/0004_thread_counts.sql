-- 0004: lists. thread_counts keeps how many threads each (group, status) has in each bucket of
-- 4,096 seqs (bucket = seq >> 12), kept by triggers in the very transactions that insert, delete
-- or move threads. A list filtered by status and group then totals a few rows rather than
-- counting every thread, and finds the bucket where its page starts, so that a deep page skips
-- at most one bucket's threads (locate_page). threads_group_seq gives a group's threads newest
-- first, with their status, from the index alone.
CREATE TABLE thread_counts (
    group_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (group_id, status, bucket)
) WITHOUT ROWID;
INSERT INTO thread_counts (group_id, status, bucket, n)
SELECT group_id, status, seq >> 12, count(*) FROM threads GROUP BY group_id, status, seq >> 12;
CREATE TRIGGER threads_counted_insert AFTER INSERT ON threads
BEGIN
    INSERT INTO thread_counts (group_id, status, bucket, n)
    VALUES (new.group_id, new.status, new.seq >> 12, 1)
    ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER threads_counted_delete AFTER DELETE ON threads
BEGIN
    UPDATE thread_counts SET n = n - 1
    WHERE group_id = old.group_id AND status = old.status AND bucket = old.seq >> 12;
END;
CREATE TRIGGER threads_counted_update AFTER UPDATE OF group_id, status, seq ON threads
WHEN old.group_id IS NOT new.group_id OR old.status IS NOT new.status OR old.seq IS NOT new.seq
BEGIN
    UPDATE thread_counts SET n = n - 1
    WHERE group_id = old.group_id AND status = old.status AND bucket = old.seq >> 12;
    INSERT INTO thread_counts (group_id, status, bucket, n)
    VALUES (new.group_id, new.status, new.seq >> 12, 1)
    ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = n + 1;
END;
CREATE INDEX threads_group_seq ON threads (group_id, seq, status);
