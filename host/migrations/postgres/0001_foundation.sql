-- Secrets, encrypted with AES-256-GCM under the master key identified by key_id.
--
-- PostgreSQL translation of migrations/sqlite/0001_foundation.sql. Throughout
-- these files: INTEGER -> BIGINT (0/1 flags included: the code decodes every
-- integer as i64), BLOB -> BYTEA, TEXT -> TEXT COLLATE "C" (the code relies on
-- byte-order comparisons and range scans, as SQLite's BINARY collation gives).
--
-- `rowid`: SQLite gives these tables an implicit rowid, and the Rust code uses
-- it (store/reseal.rs rewrites sealed rows by rowid; store/presence.rs orders
-- signals by it). On PostgreSQL an identity column named rowid, kept last, lets
-- the same SQL run.
CREATE TABLE secrets (
    name        TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    key_id      TEXT COLLATE "C" NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    -- SQLite's implicit rowid, used by store/reseal.rs (sealed secrets).
    rowid       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);

-- Plugin key-value data, one namespace per (plugin, tenant).
CREATE TABLE kv (
    plugin      TEXT COLLATE "C" NOT NULL,
    tenant      TEXT COLLATE "C" NOT NULL,
    key         TEXT COLLATE "C" NOT NULL,
    value       BYTEA NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (plugin, tenant, key)
);

-- Provider delivery ids already processed: a redelivery is acknowledged and ignored.
CREATE TABLE webhook_deliveries (
    plugin       TEXT COLLATE "C" NOT NULL,
    tenant       TEXT COLLATE "C" NOT NULL,
    delivery_id  TEXT COLLATE "C" NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (plugin, tenant, delivery_id)
);

-- Every source's current statement about a person; presence is derived from these.
-- signal_key tells apart several statements of one source (one per calendar event).
CREATE TABLE presence_signals (
    tenant        TEXT COLLATE "C" NOT NULL,
    user_id       TEXT COLLATE "C" NOT NULL,
    source        TEXT COLLATE "C" NOT NULL,
    signal_key    TEXT COLLATE "C" NOT NULL,
    availability  TEXT COLLATE "C" NOT NULL,
    status_text   TEXT COLLATE "C",
    status_emoji  TEXT COLLATE "C",
    category      TEXT COLLATE "C",
    starts_at     BIGINT,
    expires_at    BIGINT,
    origin        TEXT COLLATE "C" NOT NULL,
    updated_at    BIGINT NOT NULL,
    -- SQLite's implicit rowid: store/presence.rs orders signals by it (`rowid AS row`).
    rowid         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (tenant, user_id, source, signal_key)
);
CREATE INDEX presence_signals_expiry ON presence_signals (expires_at);
