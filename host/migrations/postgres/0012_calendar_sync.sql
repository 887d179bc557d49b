-- One row per connection of a calendar provider: where its sync stands and
-- when its push subscriptions need renewing. The sync worker adds a row when it
-- first sees the connection and removes it with the connection.
-- (PostgreSQL translation of migrations/sqlite/0012_calendar_sync.sql.)
CREATE TABLE calendar_syncs (
    tenant            TEXT COLLATE "C" NOT NULL,
    connection        TEXT COLLATE "C" NOT NULL,
    plugin            TEXT COLLATE "C" NOT NULL,
    -- The person whose calendar it is (the connection's), under whom its
    -- events are kept as calendar signals keyed 'cal/{connection}/{event id}'.
    user_id           TEXT COLLATE "C" NOT NULL,
    -- Where the next sync continues (the plugin's own cursor); NULL: a full sync.
    cursor            TEXT COLLATE "C",
    -- 1 while a sync is part-way through its pages (the cursor is the next page).
    -- A 0/1 BIGINT, not BOOLEAN, as the code reads and writes integers.
    paging            BIGINT NOT NULL DEFAULT 0,
    -- A sync is wanted from then on; NULL: none.
    sync_due_at       BIGINT,
    -- When a provider's notification last asked for a sync: one asked while a
    -- sync runs makes another after it (the running one may have read too early).
    sync_requested_at BIGINT,
    -- watch() is wanted from then on (first watch, renewal, retry); NULL: none.
    watch_due_at      BIGINT,
    -- When the provider's push subscriptions lapse unless renewed.
    watch_expires_at  BIGINT,
    -- A worker holds the row until then, under this token (its writes check it).
    claimed_until     BIGINT,
    claim_token       TEXT COLLATE "C",
    -- When the sync under way started (its first page): a request made after
    -- it makes another sync after it, whatever claims it took.
    sync_started_at   BIGINT,
    -- While a full sync is under way: events not seen since then are swept
    -- when its last page is applied (so a failure mid-way forgets nothing).
    sweep_before      BIGINT,
    -- Consecutive failures of syncs and of watches, each with its own backoff
    -- (a watch the provider keeps refusing does not retry at the pace of
    -- syncs that work).
    failures          BIGINT NOT NULL DEFAULT 0,
    watch_failures    BIGINT NOT NULL DEFAULT 0,
    last_error        TEXT COLLATE "C",
    last_synced_at    BIGINT,
    watched_at        BIGINT,
    -- PostgreSQL only: SQLite's implicit rowid, which store/calendar.rs uses to
    -- claim due rows (`UPDATE ... WHERE rowid IN (SELECT rowid ... LIMIT ?)`).
    rowid             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (tenant, connection)
);
CREATE INDEX calendar_syncs_sync_due ON calendar_syncs (sync_due_at) WHERE sync_due_at IS NOT NULL;
CREATE INDEX calendar_syncs_watch_due ON calendar_syncs (watch_due_at) WHERE watch_due_at IS NOT NULL;

-- A person's presence reads the signals holding now and the next one to start,
-- not every future calendar event: this index finds both.
CREATE INDEX presence_signals_start ON presence_signals (tenant, user_id, starts_at);
