-- 0007: accounts that can be disabled, a credential version that ends console sessions, and
-- sign-in attempts counted per name and client address, in a new table (login_failures stays
-- for nodes of the previous version; a lock in force when the store is migrated is lifted).
ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0;
-- A removed user's id is never given again (see insert_user).
CREATE TRIGGER users_removed AFTER DELETE ON users
BEGIN
    INSERT INTO server_settings (key, value) VALUES ('removed-user-id', old.id)
    ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), old.id);
END;
CREATE TABLE sign_in_attempts (
    username TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    failures INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (username, address)
) WITHOUT ROWID;
