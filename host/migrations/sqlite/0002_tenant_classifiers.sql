-- A tenant's classifier chain as set through the admin API; it takes precedence
-- over the configuration file's [tenants.<name>] classifiers.
CREATE TABLE tenant_classifiers (
    tenant       TEXT PRIMARY KEY NOT NULL,
    classifiers  TEXT NOT NULL,          -- JSON array of plugin names, in order
    updated_at   INTEGER NOT NULL
);
