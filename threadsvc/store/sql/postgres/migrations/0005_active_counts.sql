-- 0005: nothing here. SQLite keeps counts of active threads per user and per group for the
-- limits (its one writer makes them cheap); PostgreSQL counts under its advisory locks instead
-- (counter rows that every start and every end of a group's threads update would be hot rows
-- that concurrent transactions lock in turn, and could deadlock). Kept so that both dialects
-- share version numbers.
SELECT 1;
