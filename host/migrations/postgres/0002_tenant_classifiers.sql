-- A tenant's classifier chain as set through the admin API; it takes precedence
-- over the configuration file's [tenants.<name>] classifiers.
-- (PostgreSQL translation of migrations/sqlite/0002_tenant_classifiers.sql.)
CREATE TABLE tenant_classifiers (
    tenant       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    classifiers  TEXT COLLATE "C" NOT NULL,          -- JSON array of plugin names, in order
    updated_at   BIGINT NOT NULL
);
