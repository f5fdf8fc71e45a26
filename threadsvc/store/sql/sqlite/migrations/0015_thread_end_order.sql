-- 0015: lists ordered by end time (newest or oldest ended first, threads not yet ended as if
-- they ended last) read a page from an index, the server's and a group's, rather than
-- sorting every matching thread. SQLite sorts NULL first and its indexes cannot serve
-- NULLS LAST: the key is the end time with "not yet" as the largest number (overrides.sql
-- orders by the same expression).
CREATE INDEX threads_ended_seq ON threads (coalesce(ended, 9223372036854775807), seq);
CREATE INDEX threads_group_ended ON threads (group_id, coalesce(ended, 9223372036854775807), seq);
