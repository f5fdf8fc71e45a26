-- 0007: accounts that can be disabled, a credential version that ends console sessions, and
-- sign-in attempts counted per name and client address, in a new table (login_failures stays
-- for nodes of the previous version; a lock in force when the store is migrated is lifted).
ALTER TABLE users
    ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN credential_version BIGINT NOT NULL DEFAULT 0;
CREATE TABLE sign_in_attempts (
    username TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT '',
    failures BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (username, address)
);
