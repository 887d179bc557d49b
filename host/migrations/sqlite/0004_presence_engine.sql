-- The presence engine: derived state, its change log, and the status outbox.

-- Each person's effective presence as last derived, and when it next changes
-- on its own (a signal starting or expiring): the scheduler's due-time index.
CREATE TABLE presence_state (
    tenant       TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    presence     TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    next_due_at  INTEGER,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_id)
);
CREATE INDEX presence_state_due ON presence_state (next_due_at) WHERE next_due_at IS NOT NULL;

-- Every change of effective presence, in order. `seq` is the SSE event id, so a
-- subscriber resumes with Last-Event-ID.
CREATE TABLE presence_changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    presence    TEXT NOT NULL,
    changed_at  INTEGER NOT NULL
);
CREATE INDEX presence_changes_tenant ON presence_changes (tenant, seq);
CREATE INDEX presence_changes_age ON presence_changes (changed_at);

-- Status pushes waiting to go out: one row per connection, so the latest desired
-- state replaces an unsent older one (coalescing) and nothing stale follows a newer one.
CREATE TABLE status_outbox (
    tenant         TEXT NOT NULL,
    connection     TEXT NOT NULL,
    plugin         TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    presence       TEXT NOT NULL,
    revision       INTEGER NOT NULL,
    due_at         INTEGER NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    claimed_until  INTEGER,
    -- The status text being sent right now: the provider may announce it
    -- before its API call even returns, and that announcement is our echo.
    sending_text   TEXT,
    PRIMARY KEY (tenant, connection)
);
CREATE INDEX status_outbox_due ON status_outbox (due_at);

-- What was last pushed through each connection: a provider event repeating it is
-- our own echo, and a push equal to it is not sent again.
CREATE TABLE status_pushed (
    tenant        TEXT NOT NULL,
    connection    TEXT NOT NULL,
    presence      TEXT NOT NULL,
    status_text   TEXT,
    status_emoji  TEXT,
    revision      INTEGER NOT NULL,
    pushed_at     INTEGER NOT NULL,
    PRIMARY KEY (tenant, connection)
);

-- Each push sent, for the per-connection hourly budget.
CREATE TABLE status_push_log (
    tenant      TEXT NOT NULL,
    connection  TEXT NOT NULL,
    pushed_at   INTEGER NOT NULL
);
CREATE INDEX status_push_log_connection ON status_push_log (tenant, connection, pushed_at);

-- Per-person settings: the time zone statuses are rendered in.
CREATE TABLE users (
    tenant      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    time_zone   TEXT,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant, user_id)
);
