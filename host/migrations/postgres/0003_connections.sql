-- A person's account at a provider, through which the host acts for them
-- (status pushes, messages). Plugins name a connection; only the host reads its
-- token, stored encrypted with AES-256-GCM under the master key `key_id`.
-- (PostgreSQL translation of migrations/sqlite/0003_connections.sql.)
--
-- The `rowid` column that store/reseal.rs needs on this table (sealed tokens)
-- is added at the end of 0007_tenants_keys_oauth.sql, after that migration's
-- ADD COLUMNs, so it stays the last column as in the other tables and every
-- other column keeps SQLite's position.
CREATE TABLE connections (
    tenant        TEXT COLLATE "C" NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    plugin        TEXT COLLATE "C" NOT NULL,
    user_id       TEXT COLLATE "C" NOT NULL,
    key_id        TEXT COLLATE "C" NOT NULL,
    nonce         BYTEA NOT NULL,
    ciphertext    BYTEA NOT NULL,
    expires_at    BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE INDEX connections_user ON connections (tenant, user_id);
