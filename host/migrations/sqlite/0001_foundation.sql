-- Secrets, encrypted with AES-256-GCM under the master key identified by key_id.
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    key_id      TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Plugin key-value data, one namespace per (plugin, tenant).
CREATE TABLE kv (
    plugin      TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (plugin, tenant, key)
);

-- Provider delivery ids already processed: a redelivery is acknowledged and ignored.
CREATE TABLE webhook_deliveries (
    plugin       TEXT NOT NULL,
    tenant       TEXT NOT NULL,
    delivery_id  TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (plugin, tenant, delivery_id)
);

-- Every source's current statement about a person; presence is derived from these.
-- signal_key tells apart several statements of one source (one per calendar event).
CREATE TABLE presence_signals (
    tenant        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    source        TEXT NOT NULL,
    signal_key    TEXT NOT NULL,
    availability  TEXT NOT NULL,
    status_text   TEXT,
    status_emoji  TEXT,
    category      TEXT,
    starts_at     INTEGER,
    expires_at    INTEGER,
    origin        TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_id, source, signal_key)
);
CREATE INDEX presence_signals_expiry ON presence_signals (expires_at);
