-- 0014: the dashboard (store/dashboard.py) counts the threads created, and the queue waits of
-- those started, in the last hour or day: read by range of these times rather than over every
-- thread. (Threads ended in a range already have threads_ended.)
CREATE INDEX threads_created ON threads (created);
CREATE INDEX threads_started ON threads (started) WHERE started IS NOT NULL;
