-- A person's account at a provider, through which the host acts for them
-- (status pushes, messages). Plugins name a connection; only the host reads its
-- token, stored encrypted with AES-256-GCM under the master key `key_id`.
CREATE TABLE connections (
    tenant        TEXT NOT NULL,
    name          TEXT NOT NULL,
    plugin        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    expires_at    INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE INDEX connections_user ON connections (tenant, user_id);
