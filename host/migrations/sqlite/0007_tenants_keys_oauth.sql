-- Agencies. `default` and the tenants named in the configuration file are
-- registered at start-up; others are created with the admin API or the CLI.
CREATE TABLE tenants (
    name          TEXT PRIMARY KEY NOT NULL,
    display_name  TEXT,
    created_at    INTEGER NOT NULL
);

-- Tenant API keys. The key itself is shown once; only its SHA-256 is kept
-- (a 256-bit random key needs no slow hash). `id` is the key's public part.
CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY NOT NULL,
    tenant         TEXT NOT NULL REFERENCES tenants (name),
    label          TEXT NOT NULL,
    secret_sha256  BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER,
    last_used_at   INTEGER,
    replaced_by    TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant);

-- The audit trail: append-only, enforced by the triggers below.
CREATE TABLE audit_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    subject  TEXT,
    detail   TEXT
);
CREATE INDEX audit_events_tenant ON audit_events (tenant, seq);
CREATE TRIGGER audit_events_append_only_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_events_append_only_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;

-- Pending OAuth authorizations. The state parameter is kept as its SHA-256 and
-- used once; the PKCE verifier and OIDC nonce are sealed like every secret.
CREATE TABLE oauth_states (
    state_sha256  BLOB PRIMARY KEY NOT NULL,
    provider      TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    plugin        TEXT NOT NULL,
    connection    TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    nonce         BLOB NOT NULL,
    ciphertext    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);
CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

-- OAuth connections: the provider, the sealed refresh token, the granted
-- scopes, the provider-side account, and the refresh bookkeeping. `version`
-- grows with every token write, so a caller that waited for another's refresh
-- can tell it happened. `lock_owner`/`lock_until` is the refresh lock: one
-- refresh at a time per connection, across processes.
ALTER TABLE connections ADD COLUMN provider TEXT;
ALTER TABLE connections ADD COLUMN refresh_key_id TEXT;
ALTER TABLE connections ADD COLUMN refresh_nonce BLOB;
ALTER TABLE connections ADD COLUMN refresh_ciphertext BLOB;
ALTER TABLE connections ADD COLUMN scopes TEXT;
ALTER TABLE connections ADD COLUMN account TEXT;
ALTER TABLE connections ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE connections ADD COLUMN status_detail TEXT;
ALTER TABLE connections ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN refreshed_at INTEGER;
ALTER TABLE connections ADD COLUMN next_refresh_at INTEGER;
ALTER TABLE connections ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN lock_owner TEXT;
ALTER TABLE connections ADD COLUMN lock_until INTEGER;
CREATE INDEX connections_next_refresh ON connections (next_refresh_at);
