-- Named queries of the dashboard (store/dashboard.py), for both stores: a few aggregates over
-- a time range, each read from an index on its time that holds what it counts
-- (threads_created, threads_ended, threads_started: migration 0014), not from the rows. `{where}` is the viewer's groups, or nothing.

-- name: dash_created
SELECT (created - :since) / :width AS b, count(*) AS n FROM threads
WHERE created >= :since AND {where}
GROUP BY 1;

-- name: dash_ended
SELECT (ended - :since) / :width AS b, status, count(*) AS n FROM threads
WHERE ended >= :since AND {where}
GROUP BY 1, 2;

-- name: dash_queue
SELECT count(*) AS n, min(created) AS oldest,
       coalesce(sum(CASE WHEN job IN (SELECT job FROM paused_jobs) THEN 1 ELSE 0 END), 0) AS paused
FROM threads WHERE status = 'initialised' AND {where};

-- name: dash_run_times
-- The nearest-rank 50th, 90th and 99th percentiles and the longest of the run times of each
-- job's threads ended in the range: ranks numbered by a window, only those rows returned.
SELECT job, n, k, d FROM (
    SELECT job, d, row_number() OVER (PARTITION BY job ORDER BY d) AS k,
           count(*) OVER (PARTITION BY job) AS n
    FROM (SELECT job, ended - started AS d FROM threads
          WHERE ended >= :since AND started IS NOT NULL AND {where}) AS t
) AS r
WHERE k = (n * 50 + 99) / 100 OR k = (n * 90 + 99) / 100 OR k = (n * 99 + 99) / 100 OR k = n;

-- name: dash_waits
-- As dash_run_times, for the time the threads started in the range waited in the queue.
SELECT n, k, d FROM (
    SELECT d, row_number() OVER (ORDER BY d) AS k, count(*) OVER () AS n
    FROM (SELECT started - created AS d FROM threads
          WHERE started >= :since AND {where}) AS t
) AS r
WHERE k = (n * 50 + 99) / 100 OR k = (n * 90 + 99) / 100 OR k = (n * 99 + 99) / 100 OR k = n;
