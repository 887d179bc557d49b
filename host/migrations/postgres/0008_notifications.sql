-- Notifications routed by presence and urgency. A notification waits
-- (`deferred`) until its recipient is free or its latest delivery time comes,
-- then goes out (`due`, claimed by a worker) through the recipient's channels,
-- each attempt recorded; `decisions` is its history, as the API shows it. A
-- delivered emergency with an escalation path stays due until acknowledged:
-- unacknowledged at `due_at`, it goes to the path's next contact.
-- (PostgreSQL translation of migrations/sqlite/0008_notifications.sql.)
CREATE TABLE notifications (
    id               TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant           TEXT COLLATE "C" NOT NULL,
    recipient        TEXT COLLATE "C" NOT NULL,
    urgency          TEXT COLLATE "C" NOT NULL,
    wedding          TEXT COLLATE "C",
    subject          TEXT COLLATE "C",
    body             TEXT COLLATE "C" NOT NULL,
    idempotency_key  TEXT COLLATE "C",
    state            TEXT COLLATE "C" NOT NULL,
    due_at           BIGINT,
    deliver_by       BIGINT,
    claimed_until    BIGINT,
    -- Who holds the claim: every update of a claimed notification names it,
    -- so a worker whose claim lapsed (and was taken over) changes nothing.
    claim_token      TEXT COLLATE "C",
    -- The notification whose digest this one rides in, while it is sent.
    digest_lead      TEXT COLLATE "C",
    attempts         BIGINT NOT NULL DEFAULT 0,
    decisions        TEXT COLLATE "C" NOT NULL,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    -- An emergency's escalation: {"path": [users], "step": n, "chain": [earlier ids]}.
    escalation       TEXT COLLATE "C",
    acked_at         BIGINT,
    acked_by         TEXT COLLATE "C"
);
-- The arbiter of `ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL`.
CREATE UNIQUE INDEX notifications_idempotency ON notifications (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX notifications_due ON notifications (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX notifications_recipient ON notifications (tenant, recipient, state);

-- Every attempt on a channel. An attempt is written before the channel is
-- called and finished after, so a crash in between leaves it open (outcome NULL).
CREATE TABLE notification_attempts (
    notification_id      TEXT COLLATE "C" NOT NULL,
    attempt              BIGINT NOT NULL,
    plugin               TEXT COLLATE "C" NOT NULL,
    address              TEXT COLLATE "C" NOT NULL,
    started_at           BIGINT NOT NULL,
    outcome              TEXT COLLATE "C",
    provider_message_id  TEXT COLLATE "C",
    error                TEXT COLLATE "C",
    finished_at          BIGINT,
    PRIMARY KEY (notification_id, attempt)
);

-- A person's channels, in order of preference: [{"plugin": "twilio", "address": "+1555..."}].
ALTER TABLE users ADD COLUMN channels TEXT COLLATE "C";
