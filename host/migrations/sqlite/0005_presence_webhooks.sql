-- Tenants' own endpoints that receive presence changes, signed as Standard Webhooks.
CREATE TABLE presence_webhooks (
    tenant           TEXT NOT NULL,
    id               TEXT NOT NULL,
    url              TEXT NOT NULL,
    -- Only these users' changes (a JSON array), or all of the tenant's when NULL.
    users            TEXT,
    -- The signing secret, encrypted with AES-256-GCM under the master key `key_id`.
    key_id           TEXT NOT NULL,
    nonce            BLOB NOT NULL,
    ciphertext       BLOB NOT NULL,
    enabled          INTEGER NOT NULL DEFAULT 1,
    disabled_reason  TEXT,
    -- When the current run of failed deliveries began; NULL after a success.
    failing_since    INTEGER,
    last_success_at  INTEGER,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- Messages waiting for delivery (or retry); `msg_id` is the webhook-id, stable
-- across retries so receivers can deduplicate.
CREATE TABLE presence_webhook_outbox (
    msg_id         TEXT PRIMARY KEY NOT NULL,
    tenant         TEXT NOT NULL,
    endpoint       TEXT NOT NULL,
    payload        TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    due_at         INTEGER,
    claimed_until  INTEGER,
    last_error     TEXT,
    created_at     INTEGER NOT NULL
);
CREATE INDEX presence_webhook_outbox_due ON presence_webhook_outbox (due_at) WHERE due_at IS NOT NULL;
