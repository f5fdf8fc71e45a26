-- 0006: nothing here. PostgreSQL now keeps a count of active threads per user, as SQLite has
-- since 0005. Kept so that both dialects share version numbers.
SELECT 1;
