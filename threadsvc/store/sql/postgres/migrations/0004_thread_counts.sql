-- 0004: lists. thread_counts keeps how many threads each (group, status) has in each bucket of
-- 4,096 seqs (bucket = seq >> 12), kept by triggers in the very transactions that insert, delete
-- or move threads. A list filtered by status and group then totals a few rows rather than
-- counting every thread, and finds the bucket where its page starts, so that a deep page skips
-- at most one bucket's threads (locate_page). threads_group_seq gives a group's threads newest
-- first, with their status, from the index alone.
-- Writers wait while the counts are taken and the triggers made, so that no change falls between.
LOCK TABLE threads IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE thread_counts (
    group_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (group_id, status, bucket)
);
INSERT INTO thread_counts (group_id, status, bucket, n)
SELECT group_id, status, seq >> 12, count(*) FROM threads GROUP BY group_id, status, seq >> 12;
-- Statement-level, from the transition tables: one upsert per (group, status, bucket) that a
-- statement changed, taken in one order (ORDER BY). Every transaction moves threads in one
-- statement at most, so concurrent ones may wait for each other's counts but never deadlock.
CREATE FUNCTION threads_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO thread_counts AS c (group_id, status, bucket, n)
        SELECT group_id, status, seq >> 12, count(*) FROM new_rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO thread_counts AS c (group_id, status, bucket, n)
        SELECT group_id, status, seq >> 12, -count(*) FROM old_rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = c.n + excluded.n;
    ELSE
        INSERT INTO thread_counts AS c (group_id, status, bucket, n)
        SELECT group_id, status, seq >> 12, sum(d) FROM (
            SELECT group_id, status, seq, 1 AS d FROM new_rows
            UNION ALL
            SELECT group_id, status, seq, -1 AS d FROM old_rows
        ) AS moved
        GROUP BY 1, 2, 3 HAVING sum(d) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER threads_counted_insert AFTER INSERT ON threads
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION threads_counted();
CREATE TRIGGER threads_counted_delete AFTER DELETE ON threads
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION threads_counted();
CREATE TRIGGER threads_counted_update AFTER UPDATE ON threads
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION threads_counted();
CREATE INDEX threads_group_seq ON threads (group_id, seq, status);
