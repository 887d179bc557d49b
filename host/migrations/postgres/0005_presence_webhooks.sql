-- Tenants' own endpoints that receive presence changes, signed as Standard Webhooks.
-- (PostgreSQL translation of migrations/sqlite/0005_presence_webhooks.sql.)
CREATE TABLE presence_webhooks (
    tenant           TEXT COLLATE "C" NOT NULL,
    id               TEXT COLLATE "C" NOT NULL,
    url              TEXT COLLATE "C" NOT NULL,
    -- Only these users' changes (a JSON array), or all of the tenant's when NULL.
    users            TEXT COLLATE "C",
    -- The signing secret, encrypted with AES-256-GCM under the master key `key_id`.
    key_id           TEXT COLLATE "C" NOT NULL,
    nonce            BYTEA NOT NULL,
    ciphertext       BYTEA NOT NULL,
    -- 0/1, as in SQLite (not BOOLEAN: the code writes and reads integers).
    enabled          BIGINT NOT NULL DEFAULT 1,
    disabled_reason  TEXT COLLATE "C",
    -- When the current run of failed deliveries began; NULL after a success.
    failing_since    BIGINT,
    last_success_at  BIGINT,
    created_at       BIGINT NOT NULL,
    -- SQLite's implicit rowid, used by store/reseal.rs (sealed signing secrets).
    rowid            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (tenant, id)
);

-- Messages waiting for delivery (or retry); `msg_id` is the webhook-id, stable
-- across retries so receivers can deduplicate.
CREATE TABLE presence_webhook_outbox (
    msg_id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant         TEXT COLLATE "C" NOT NULL,
    endpoint       TEXT COLLATE "C" NOT NULL,
    payload        TEXT COLLATE "C" NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    due_at         BIGINT,
    claimed_until  BIGINT,
    last_error     TEXT COLLATE "C",
    created_at     BIGINT NOT NULL
);
CREATE INDEX presence_webhook_outbox_due ON presence_webhook_outbox (due_at) WHERE due_at IS NOT NULL;
