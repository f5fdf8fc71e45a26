-- 0009: files kept in the store's database (the `postgres` file storage, files/postgres.py).
-- A file is its row in `files` and its chunks of at most 1 MiB in `file_chunks`, written under
-- a new id and swapped in with the key's row in one transaction, so that no reader ever sees
-- part of a file and a writer killed halfway leaves nothing. Keys compare byte by byte
-- (COLLATE "C"), so a prefix is a range of the primary key. Chunks are compressed with lz4
-- when they shrink (results are mostly XML; on a zip lz4 costs little and saves nothing).
CREATE SEQUENCE file_ids;
CREATE TABLE files (
    key TEXT COLLATE "C" PRIMARY KEY,
    id BIGINT NOT NULL UNIQUE,
    size BIGINT NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE file_chunks (
    file_id BIGINT NOT NULL,
    n INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (file_id, n)
);
-- lz4 where the server has it (PostgreSQL 14 and later, built with lz4); else the default.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE file_chunks ALTER COLUMN data SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error THEN
    NULL;
END $$;
