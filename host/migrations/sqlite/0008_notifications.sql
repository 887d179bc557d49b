-- Notifications routed by presence and urgency. A notification waits
-- (`deferred`) until its recipient is free or its latest delivery time comes,
-- then goes out (`due`, claimed by a worker) through the recipient's channels,
-- each attempt recorded; `decisions` is its history, as the API shows it. A
-- delivered emergency with an escalation path stays due until acknowledged:
-- unacknowledged at `due_at`, it goes to the path's next contact.
CREATE TABLE notifications (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant           TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    urgency          TEXT NOT NULL,
    wedding          TEXT,
    subject          TEXT,
    body             TEXT NOT NULL,
    idempotency_key  TEXT,
    state            TEXT NOT NULL,
    due_at           INTEGER,
    deliver_by       INTEGER,
    claimed_until    INTEGER,
    -- Who holds the claim: every update of a claimed notification names it,
    -- so a worker whose claim lapsed (and was taken over) changes nothing.
    claim_token      TEXT,
    -- The notification whose digest this one rides in, while it is sent.
    digest_lead      TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    decisions        TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    -- An emergency's escalation: {"path": [users], "step": n, "chain": [earlier ids]}.
    escalation       TEXT,
    acked_at         INTEGER,
    acked_by         TEXT
);
CREATE UNIQUE INDEX notifications_idempotency ON notifications (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX notifications_due ON notifications (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX notifications_recipient ON notifications (tenant, recipient, state);

-- Every attempt on a channel. An attempt is written before the channel is
-- called and finished after, so a crash in between leaves it open (outcome NULL).
CREATE TABLE notification_attempts (
    notification_id      TEXT NOT NULL,
    attempt              INTEGER NOT NULL,
    plugin               TEXT NOT NULL,
    address              TEXT NOT NULL,
    started_at           INTEGER NOT NULL,
    outcome              TEXT,
    provider_message_id  TEXT,
    error                TEXT,
    finished_at          INTEGER,
    PRIMARY KEY (notification_id, attempt)
);

-- A person's channels, in order of preference: [{"plugin": "twilio", "address": "+1555..."}].
ALTER TABLE users ADD COLUMN channels TEXT;
