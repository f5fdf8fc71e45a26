-- 0006: limits. A start counted the user's and the group's active threads under their advisory
-- locks, at a cost that grew with them (up to the limits). Now a group's come from
-- thread_counts (a few rows), and a user's from active_by_user, kept by threads_counted() in
-- the same trigger run: thread_counts' rows first, then the users', each in one order, so the
-- rule that made thread_counts deadlock-free (one statement moves threads in a transaction)
-- covers both. The rows are hot only for starts of one user, which its lock serializes anyway.
LOCK TABLE threads IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE active_by_user (
    username TEXT PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO active_by_user (username, n)
SELECT username, count(*) FROM threads
WHERE status IN ('initialised', 'inprogress', 'warning', 'error') GROUP BY username;
CREATE OR REPLACE FUNCTION threads_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO thread_counts AS c (group_id, status, bucket, n)
        SELECT group_id, status, seq >> 12, count(*) FROM new_rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = c.n + excluded.n;
        INSERT INTO active_by_user AS a (username, n)
        SELECT username, count(*) FROM new_rows
        WHERE status IN ('initialised', 'inprogress', 'warning', 'error')
        GROUP BY 1 ORDER BY 1
        ON CONFLICT (username) DO UPDATE SET n = a.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO thread_counts AS c (group_id, status, bucket, n)
        SELECT group_id, status, seq >> 12, -count(*) FROM old_rows
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = c.n + excluded.n;
        INSERT INTO active_by_user AS a (username, n)
        SELECT username, -count(*) FROM old_rows
        WHERE status IN ('initialised', 'inprogress', 'warning', 'error')
        GROUP BY 1 ORDER BY 1
        ON CONFLICT (username) DO UPDATE SET n = a.n + excluded.n;
    ELSE
        INSERT INTO thread_counts AS c (group_id, status, bucket, n)
        SELECT group_id, status, seq >> 12, sum(d) FROM (
            SELECT group_id, status, seq, 1 AS d FROM new_rows
            UNION ALL
            SELECT group_id, status, seq, -1 AS d FROM old_rows
        ) AS moved
        GROUP BY 1, 2, 3 HAVING sum(d) <> 0 ORDER BY 1, 2, 3
        ON CONFLICT (group_id, status, bucket) DO UPDATE SET n = c.n + excluded.n;
        INSERT INTO active_by_user AS a (username, n)
        SELECT username, sum(d) FROM (
            SELECT username, 1 AS d FROM new_rows
            WHERE status IN ('initialised', 'inprogress', 'warning', 'error')
            UNION ALL
            SELECT username, -1 AS d FROM old_rows
            WHERE status IN ('initialised', 'inprogress', 'warning', 'error')
        ) AS moved
        GROUP BY 1 HAVING sum(d) <> 0 ORDER BY 1
        ON CONFLICT (username) DO UPDATE SET n = a.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;
