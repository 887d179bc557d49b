//! Durable state: secrets, plugin key-value data, webhook deliveries and presence signals.
//!
//! sqlx with migrations, on its `Any` driver: SQLite (a file in the data
//! directory, WAL mode) is the embedded default, PostgreSQL (`postgres://`) the
//! backend several replicas share. The methods here are the whole interface the
//! rest of the host uses; the few statements the two databases spell differently
//! are written per backend (`dialect`), the rest once with `$n` parameters.

pub mod audit;
pub mod calendar;
pub mod connections;
pub mod crypto;
pub mod notifications;
pub mod oauth_states;
pub mod presence;
pub mod presence_webhooks;
pub mod reseal;
pub mod tenants;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use zeroize::Zeroizing;

pub use crypto::MasterKey;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite:// (the embedded default) or postgres://")]
    UnsupportedUrl(String),
    #[error("secret {name:?}: {source}")]
    Secret {
        name: String,
        source: crypto::KeyError,
    },
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    /// A worker's claim on a row lapsed and another took it: its write was not made.
    #[error("the claim on {0} was lost to another worker")]
    ClaimLost(String),
    /// A bug met while writing: the transaction was rolled back, and the
    /// worker goes on with the next write.
    #[error("committing failed on a bug (rolled back): {0}")]
    Panicked(String),
}

/// A secret's name: what plugins and operators use in place of its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

impl SecretName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'));
        if ok {
            Ok(Self(name.to_string()))
        } else {
            Err(format!(
                "secret name {name:?} must be 1-128 characters of letters, digits and - _ . / :"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SecretName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret's value. It never prints, and its memory is wiped when the last copy is dropped.
#[derive(Clone)]
pub struct SecretValue(std::sync::Arc<Zeroizing<Vec<u8>>>);

impl SecretValue {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Result of a quota-checked write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvWrite {
    Written,
    QuotaExceeded,
}

pub use crate::model::KeyedSignal;

/// Whether a webhook's effects were recorded, or it was a redelivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookCommit {
    Recorded,
    Duplicate,
}

/// The database behind the store, chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: one file, one writer at a time.
    Sqlite,
    /// The scale-out path: several replicas on one server.
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }

    /// Whether `conn` (a connection of either backend) is PostgreSQL's.
    fn of(conn: &sqlx::AnyConnection) -> Self {
        if conn.backend_name() == "PostgreSQL" {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// A statement that must be written differently for each backend; the rest
/// of the store's SQL (numbered `$n` parameters, `ON CONFLICT`, `RETURNING`)
/// means the same to both.
fn dialect<'a>(backend: Backend, sqlite: &'a str, postgres: &'a str) -> &'a str {
    match backend {
        Backend::Sqlite => sqlite,
        Backend::Postgres => postgres,
    }
}

#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// PostgreSQL's URL (for the replicas' listener) and the schema in use
    /// (the deployment's name within the server); none on SQLite.
    postgres: Option<std::sync::Arc<(String, String)>>,
    /// Readers. On SQLite several connections read alongside the writer
    /// (WAL); on PostgreSQL this is the one pool, writers included.
    pool: AnyPool,
    /// The writing connections. On SQLite, one: SQLite takes one writer at a
    /// time anyway, and queueing writers here, in order, replaces its
    /// busy-wait retries (sleeps of up to 100 ms) with a fair wait for the
    /// connection. On PostgreSQL, the same pool as `pool`: row locks, `SKIP
    /// LOCKED` claims and per-person advisory locks keep concurrent writers
    /// (and replicas) apart.
    writer: AnyPool,
    /// Webhook commits, grouped into shared transactions by
    /// [`presence::group_commit`] on the writer.
    webhooks: tokio::sync::mpsc::Sender<presence::WebhookJob>,
    key: std::sync::Arc<MasterKey>,
    secrets: std::sync::Arc<std::sync::Mutex<SecretCache>>,
}

/// Decrypted secrets (and known absences) for a few seconds: every webhook
/// verification reads its signing secret, and a read plus an AES-GCM open per
/// request showed in the load benchmark. A `secret set` from another process
/// takes effect within [`SECRET_CACHE_TTL`]; one from this process at once.
type SecretCache = std::collections::HashMap<String, (std::time::Instant, Option<SecretValue>)>;

/// How long a read secret is reused before it is read again.
pub const SECRET_CACHE_TTL: Duration = Duration::from_secs(5);

/// Connections per PostgreSQL pool (each replica has its own).
const POSTGRES_CONNECTIONS: u32 = 16;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Takes PostgreSQL's transaction-scoped advisory lock named by `key`, so
/// transactions that read and then write the same thing (across replicas
/// too) take turns; it is released at commit or rollback. Nothing on SQLite,
/// whose one writer at a time already takes turns.
pub(crate) async fn lock_key(conn: &mut sqlx::AnyConnection, key: &str) -> Result<(), StoreError> {
    if Backend::of(conn) == Backend::Postgres {
        // Named within the schema: deployments sharing a server do not wait on each other.
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended(current_schema() || '/' || $1, 0))",
        )
        .bind(key)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// SQLite's settings, on every connection: WAL (readers beside the writer),
/// synchronous NORMAL (durable at checkpoints, safe in WAL), foreign keys on,
/// and a busy timeout for the rare writer from another process.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";

impl Store {
    /// Opens the database at `url` (`sqlite://path`, created if missing, or
    /// `postgres://...`) and runs its pending migrations. Replicas starting
    /// together on one PostgreSQL migrate once: sqlx holds an advisory lock
    /// while it migrates.
    pub async fn open(url: &str, key: MasterKey) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let mut postgres = None;
        let (pool, writer) = match backend {
            Backend::Sqlite => {
                // No ping before each use: a file's connection does not go
                // stale as a network one does, and each ping is one more
                // hand-over to the connection's thread.
                let options = || {
                    AnyPoolOptions::new()
                        .test_before_acquire(false)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute(SQLITE_PRAGMAS).await?;
                                Ok(())
                            })
                        })
                };
                if url.contains(":memory:") {
                    // Each connection would open a database of its own: one
                    // connection, kept for the store's life, serves all.
                    let pool = options()
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .connect(url)
                        .await?;
                    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                    (pool.clone(), pool)
                } else {
                    let url = if url.contains('?') {
                        url.to_string()
                    } else {
                        format!("{url}?mode=rwc")
                    };
                    let pool = options().max_connections(8).connect(&url).await?;
                    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                    let writer = options().max_connections(1).connect(&url).await?;
                    (pool, writer)
                }
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_CONNECTIONS)
                    .connect(url)
                    .await?;
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
                let schema: String = sqlx::query_scalar("SELECT CAST(current_schema() AS TEXT)")
                    .fetch_one(&pool)
                    .await?;
                postgres = Some(std::sync::Arc::new((url.to_string(), schema)));
                (pool.clone(), pool)
            }
        };
        let (webhooks, jobs) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(presence::group_commit(writer.clone(), jobs));
        Ok(Self {
            backend,
            postgres,
            pool,
            writer,
            webhooks,
            key: std::sync::Arc::new(key),
            secrets: Default::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The PostgreSQL URL the store opened (None on SQLite).
    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres.as_deref().map(|(url, _)| url.as_str())
    }

    /// The PostgreSQL schema the store works in (None on SQLite).
    pub fn schema(&self) -> Option<&str> {
        self.postgres.as_deref().map(|(_, schema)| schema.as_str())
    }

    /// PostgreSQL's NOTIFY of `payload` on `channel` (nothing on SQLite).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// [`dialect`] for this store's backend.
    fn sql<'a>(&self, sqlite: &'a str, postgres: &'a str) -> &'a str {
        dialect(self.backend, sqlite, postgres)
    }

    /// Whether the database answers (readiness and health).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn master_key_id(&self) -> &str {
        self.key.id()
    }

    // --- secrets -------------------------------------------------------------

    fn secret_aad(name: &SecretName) -> Vec<u8> {
        format!("secret:{name}").into_bytes()
    }

    pub async fn set_secret(&self, name: &SecretName, value: &[u8]) -> Result<(), StoreError> {
        let (nonce, ciphertext) = self.key.seal(value, &Self::secret_aad(name));
        sqlx::query(
            "INSERT INTO secrets (name, key_id, nonce, ciphertext, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce,
             ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(name.as_str())
        .bind(self.key.id())
        .bind(nonce)
        .bind(ciphertext)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        self.secrets
            .lock()
            .expect("secret cache lock")
            .remove(name.as_str());
        Ok(())
    }

    pub async fn secret(&self, name: &SecretName) -> Result<Option<SecretValue>, StoreError> {
        if let Some((read_at, value)) = self
            .secrets
            .lock()
            .expect("secret cache lock")
            .get(name.as_str())
            && read_at.elapsed() < SECRET_CACHE_TTL
        {
            return Ok(value.clone());
        }
        let value = self.read_secret(name).await?;
        self.secrets.lock().expect("secret cache lock").insert(
            name.as_str().to_string(),
            (std::time::Instant::now(), value.clone()),
        );
        Ok(value)
    }

    async fn read_secret(&self, name: &SecretName) -> Result<Option<SecretValue>, StoreError> {
        let row = sqlx::query("SELECT key_id, nonce, ciphertext FROM secrets WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(self.unseal(
            &row,
            &Self::secret_aad(name),
            name.as_str(),
        )?))
    }

    /// Opens a row's `key_id`, `nonce` and `ciphertext` columns, sealed with
    /// `aad` (the row's identity); `what` names it in errors.
    fn unseal(&self, row: &AnyRow, aad: &[u8], what: &str) -> Result<SecretValue, StoreError> {
        let key_id: String = row.try_get("key_id")?;
        let nonce: Vec<u8> = row.try_get("nonce")?;
        let ciphertext: Vec<u8> = row.try_get("ciphertext")?;
        let plain = self
            .key
            .open(&key_id, &nonce, &ciphertext, aad)
            .map_err(|source| StoreError::Secret {
                name: what.to_string(),
                source,
            })?;
        Ok(SecretValue(std::sync::Arc::new(plain)))
    }

    pub async fn secret_names(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT name, updated_at FROM secrets ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("updated_at")?)))
            .collect()
    }

    // --- plugin key-value ----------------------------------------------------

    pub async fn kv_get(
        &self,
        plugin: &str,
        tenant: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row =
            sqlx::query("SELECT value FROM kv WHERE plugin = $1 AND tenant = $2 AND key = $3")
                .bind(plugin)
                .bind(tenant)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    /// Writes `key`, unless the namespace's keys and values would then exceed `quota` bytes.
    pub async fn kv_set(
        &self,
        plugin: &str,
        tenant: &str,
        key: &str,
        value: &[u8],
        quota: i64,
    ) -> Result<KvWrite, StoreError> {
        // IMMEDIATE: this transaction reads then writes, and a deferred one would
        // fail with SQLITE_BUSY_SNAPSHOT if another write committed in between.
        // On PostgreSQL the namespace's lock does that job.
        let mut tx = self
            .writer
            .begin_with(self.sql("BEGIN IMMEDIATE", "BEGIN"))
            .await?;
        lock_key(&mut tx, &format!("kv/{plugin}/{tenant}")).await?;
        let used: i64 = sqlx::query_scalar(self.sql(
            "SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) FROM kv
             WHERE plugin = $1 AND tenant = $2 AND key <> $3",
            "SELECT CAST(COALESCE(SUM(octet_length(key) + octet_length(value)), 0) AS BIGINT)
             FROM kv WHERE plugin = $1 AND tenant = $2 AND key <> $3",
        ))
        .bind(plugin)
        .bind(tenant)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        if used + (key.len() + value.len()) as i64 > quota {
            return Ok(KvWrite::QuotaExceeded);
        }
        sqlx::query(
            "INSERT INTO kv (plugin, tenant, key, value, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (plugin, tenant, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(plugin)
        .bind(tenant)
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(KvWrite::Written)
    }

    pub async fn kv_delete(&self, plugin: &str, tenant: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM kv WHERE plugin = $1 AND tenant = $2 AND key = $3")
            .bind(plugin)
            .bind(tenant)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn kv_list(
        &self,
        plugin: &str,
        tenant: &str,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        // substr comparison instead of LIKE: a prefix with % or _ means itself.
        let rows = sqlx::query(
            "SELECT key FROM kv WHERE plugin = $1 AND tenant = $2 AND substr(key, 1, length($3)) = $4
             ORDER BY key LIMIT $5",
        )
        .bind(plugin)
        .bind(tenant)
        .bind(prefix)
        .bind(prefix)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("key")?)).collect()
    }

    /// Whether any signal was ever stored for `user` (expired ones included).
    pub async fn knows_user(&self, tenant: &str, user: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM presence_signals WHERE tenant = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The classifier chain set for `tenant` through the admin API, if any.
    pub async fn tenant_classifiers(
        &self,
        tenant: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let row: Option<String> =
            sqlx::query_scalar("SELECT classifiers FROM tenant_classifiers WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|json| {
            serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("tenant_classifiers: {e}")))
        })
        .transpose()
    }

    /// Sets (`Some`) or removes (`None`) the tenant's classifier chain.
    pub async fn set_tenant_classifiers(
        &self,
        tenant: &str,
        chain: Option<&[String]>,
    ) -> Result<(), StoreError> {
        match chain {
            Some(chain) => {
                sqlx::query(
                    "INSERT INTO tenant_classifiers (tenant, classifiers, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (tenant) DO UPDATE SET classifiers = excluded.classifiers, updated_at = excluded.updated_at",
                )
                .bind(tenant)
                .bind(serde_json::to_string(chain).expect("a list of strings serializes"))
                .bind(now_ms())
                .execute(&self.writer)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM tenant_classifiers WHERE tenant = $1")
                    .bind(tenant)
                    .execute(&self.writer)
                    .await?;
            }
        }
        Ok(())
    }

    /// A digest of every table's rows, for tests that prove a refusal changed
    /// nothing. The audit trail is left out: an audit entry is the one trace a
    /// refused request may leave.
    pub async fn digest(&self) -> Result<String, StoreError> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for (table, order) in [
            ("secrets", "name"),
            ("kv", "plugin, tenant, key"),
            ("webhook_deliveries", "plugin, tenant, delivery_id"),
            ("presence_signals", "tenant, user_id, source, signal_key"),
            ("tenant_classifiers", "tenant"),
            ("connections", "tenant, name"),
            ("presence_state", "tenant, user_id"),
            ("presence_changes", "seq"),
            ("status_outbox", "tenant, connection"),
            ("status_pushed", "tenant, connection"),
            ("status_push_log", "tenant, connection, pushed_at"),
            ("users", "tenant, user_id"),
            ("presence_webhooks", "tenant, id"),
            ("presence_webhook_outbox", "msg_id"),
            ("tenants", "name"),
            ("api_keys", "id"),
            ("oauth_states", "state_sha256"),
            ("notifications", "id"),
            ("notification_attempts", "notification_id, attempt"),
        ] {
            let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .fetch_all(&self.pool)
                .await?;
            hasher.update(table.as_bytes());
            for row in rows {
                for i in 0..row.len() {
                    // Each value as whichever of text, bytes or integer it is
                    // (the others fail to decode and read as None).
                    let t: Option<String> = row.try_get_unchecked(i).unwrap_or(None);
                    let v: Option<Vec<u8>> = row.try_get_unchecked(i).unwrap_or(None);
                    let n: Option<i64> = row.try_get_unchecked(i).unwrap_or(None);
                    hasher.update(format!("{t:?}{v:?}{n:?}|").as_bytes());
                }
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let key = MasterKey::load_or_create(None, dir.path()).unwrap();
        (dir, Store::open(&url, key).await.unwrap())
    }

    #[tokio::test]
    async fn secrets_are_encrypted_at_rest_and_round_trip() {
        let (_dir, store) = store().await;
        let name = SecretName::parse("slack.signing-secret").unwrap();
        store
            .set_secret(&name, b"8f742231b10e8888abcd99yyyzzz85a5")
            .await
            .unwrap();
        assert_eq!(
            store.secret(&name).await.unwrap().unwrap().expose(),
            b"8f742231b10e8888abcd99yyyzzz85a5"
        );
        let raw: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM secrets")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert!(
            !raw.windows(8).any(|w| w == b"8f742231"),
            "plaintext found at rest"
        );
        assert_eq!(
            format!("{:?}", store.secret(&name).await.unwrap().unwrap()),
            "***"
        );
        assert!(
            store
                .secret(&SecretName::parse("missing").unwrap())
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_digest_sees_every_kind_of_value_change() {
        let (_dir, store) = store().await;
        store.create_tenant("agency", None).await.unwrap();
        let before = store.digest().await.unwrap();
        // Text only: a tenant's display name.
        sqlx::query("UPDATE tenants SET display_name = 'Agency' WHERE name = 'agency'")
            .execute(&store.writer)
            .await
            .unwrap();
        let renamed = store.digest().await.unwrap();
        assert_ne!(before, renamed, "a text change");
        // Bytes only: a kv value of the same length.
        store.kv_set("p", "t", "k", b"aa", 100).await.unwrap();
        let written = store.digest().await.unwrap();
        store.kv_set("p", "t", "k", b"ab", 100).await.unwrap();
        assert_ne!(written, store.digest().await.unwrap(), "a byte change");
    }

    #[tokio::test]
    async fn kv_quota_counts_keys_and_values_per_namespace() {
        let (_dir, store) = store().await;
        assert_eq!(
            store.kv_set("p", "t1", "k1", &[0; 60], 100).await.unwrap(),
            KvWrite::Written
        );
        assert_eq!(
            store.kv_set("p", "t1", "k2", &[0; 60], 100).await.unwrap(),
            KvWrite::QuotaExceeded
        );
        // Overwriting a key does not count its old value; other namespaces have their own quota.
        assert_eq!(
            store.kv_set("p", "t1", "k1", &[1; 90], 100).await.unwrap(),
            KvWrite::Written
        );
        assert_eq!(
            store.kv_set("p", "t2", "k2", &[0; 60], 100).await.unwrap(),
            KvWrite::Written
        );
        assert_eq!(
            store.kv_get("p", "t1", "k1").await.unwrap().unwrap(),
            vec![1; 90]
        );
        assert_eq!(store.kv_get("q", "t1", "k1").await.unwrap(), None);
        store.kv_set("p", "t1", "a%", b"x", 1000).await.unwrap();
        assert_eq!(
            store.kv_list("p", "t1", "a%", 10).await.unwrap(),
            vec!["a%".to_string()]
        );
        assert_eq!(
            store.kv_list("p", "t1", "k", 10).await.unwrap(),
            vec!["k1".to_string()]
        );
    }
}
