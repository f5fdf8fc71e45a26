-- 0014: the dashboard (store/dashboard.py) reads the threads created, started and ended in the
-- last hour or day by range of those times, from indexes that hold what it counts (so no row
-- is read): created; started with created (the queue wait); and ended, which threads_ended
-- already ranged over, now with status, job and started (the finished counts and run times).
CREATE INDEX threads_created ON threads (created);
CREATE INDEX threads_started ON threads (started, created) WHERE started IS NOT NULL;
DROP INDEX threads_ended;
CREATE INDEX threads_ended ON threads (ended, status, job, started) WHERE ended IS NOT NULL;
