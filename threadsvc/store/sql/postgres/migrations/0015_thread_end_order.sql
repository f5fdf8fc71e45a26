-- 0015: lists ordered by end time (newest or oldest ended first, threads not yet ended as if
-- they ended last) read a page from an index, the server's and a group's, rather than
-- sorting every matching thread.
CREATE INDEX threads_ended_seq ON threads (ended, seq);
CREATE INDEX threads_group_ended ON threads (group_id, ended, seq);
