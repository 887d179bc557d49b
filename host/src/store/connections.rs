//! Connections: a person's account at a provider, and the token the host uses for it.
//!
//! A connection is made by the OAuth flow (`crate::oauth`), or seeded with a
//! bare access token through the admin API; either way a plugin only ever names
//! it. Both tokens are sealed with AES-256-GCM, each bound to its row.
//!
//! Refresh bookkeeping lives on the row: `version` grows with every token
//! write, and `lock_owner`/`lock_until` lets one refresher at a time, in any
//! process sharing the database, hold the connection.

use serde::Serialize;
use sqlx::Row;

use super::{SecretValue, Store, StoreError, now_ms};

/// A connection as the API shows it: never its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Connection {
    pub name: String,
    pub plugin: String,
    pub user: String,
    pub expires_at: Option<i64>,
    pub updated_at: i64,
    /// The OAuth provider that issued the token; None for a seeded token.
    pub provider: Option<String>,
    /// The scopes the person granted, as the provider reported them.
    pub scopes: Vec<String>,
    /// The person's account id at the provider, when the provider told us.
    pub account: Option<String>,
    /// `active`, or `needs_reconsent` once the provider refused the refresh token.
    pub status: String,
    pub status_detail: Option<String>,
    pub refreshed_at: Option<i64>,
    /// Grows with every token write (a refresh, a new consent).
    pub version: i64,
}

impl Connection {
    /// A connection seeded with a bare access token: no provider, no refresh.
    pub fn seeded(name: &str, plugin: &str, user: &str, expires_at: Option<i64>) -> Self {
        Self {
            name: name.to_string(),
            plugin: plugin.to_string(),
            user: user.to_string(),
            expires_at,
            updated_at: now_ms(),
            provider: None,
            scopes: Vec::new(),
            account: None,
            status: ACTIVE.into(),
            status_detail: None,
            refreshed_at: None,
            version: 0,
        }
    }
}

/// A connection the provider refused, for health's recommendations.
#[derive(Debug, Clone)]
pub struct NeedsReconsent {
    pub tenant: String,
    pub name: String,
    pub plugin: String,
    pub user: String,
    pub provider: Option<String>,
    pub status_detail: Option<String>,
    pub updated_at: i64,
}

/// Whether a connection can be used.
pub const ACTIVE: &str = "active";
/// The provider refused the grant (`invalid_grant`): only the person can fix it.
pub const NEEDS_RECONSENT: &str = "needs_reconsent";

/// What the HTTP capability needs to authenticate a plugin's request.
#[derive(Debug, Clone)]
pub struct Credential {
    pub token: SecretValue,
    pub version: i64,
    pub expires_at: Option<i64>,
    pub status: String,
    /// Set when the connection can be refreshed (an OAuth provider and a refresh token).
    pub refreshable: bool,
}

/// What a refresher needs: the refresh token and where it came from.
#[derive(Debug, Clone)]
pub struct RefreshGrant {
    pub provider: String,
    pub plugin: String,
    pub user: String,
    pub refresh_token: SecretValue,
    pub version: i64,
    pub status: String,
    pub scopes: Vec<String>,
    pub refresh_failures: i64,
}

/// A token response to store: the refresh token only when the provider sent one
/// (Google keeps the old one; Microsoft, Slack and Zoom rotate it).
#[derive(Debug)]
pub struct NewTokens<'a> {
    pub access_token: &'a [u8],
    pub refresh_token: Option<&'a [u8]>,
    pub expires_at: Option<i64>,
    pub scopes: &'a [String],
}

/// Connection names: what fits in a route segment and reads well in logs ("slack:U123").
pub fn valid_connection_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@+".contains(c))
}

fn aad(tenant: &str, name: &str) -> Vec<u8> {
    // Bound to the row's identity: a ciphertext copied to another row does not open.
    format!("connection:{tenant}/{name}").into_bytes()
}

fn refresh_aad(tenant: &str, name: &str) -> Vec<u8> {
    format!("connection-refresh:{tenant}/{name}").into_bytes()
}

fn split_scopes(text: Option<String>) -> Vec<String> {
    text.map(|s| {
        s.split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// When to refresh a token next: a tenth of its remaining life before it
/// expires (at least a minute, at most five, but never more than half its
/// life), not sooner than a second from now, and in any case within a day, so
/// a revoked grant is noticed before it matters.
pub fn next_refresh_at(now: i64, expires_at: Option<i64>) -> i64 {
    const DAY: i64 = 24 * 3600 * 1000;
    match expires_at {
        Some(at) => {
            let life = (at - now).max(0);
            let margin = (life / 10).clamp(60_000, 300_000).min(life / 2);
            (at - margin).clamp(now + 1_000, now + DAY)
        }
        None => now + DAY,
    }
}

/// A token response sealed for its row: the access token, and the refresh
/// token when there is one, each bound to the row and to its role.
struct SealedTokens {
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    refresh_nonce: Option<Vec<u8>>,
    refresh_ciphertext: Option<Vec<u8>>,
}

impl Store {
    fn seal_tokens(&self, tenant: &str, name: &str, tokens: &NewTokens<'_>) -> SealedTokens {
        let (nonce, ciphertext) = self.key.seal(tokens.access_token, &aad(tenant, name));
        let (refresh_nonce, refresh_ciphertext) = tokens
            .refresh_token
            .map(|r| self.key.seal(r, &refresh_aad(tenant, name)))
            .unzip();
        SealedTokens {
            nonce,
            ciphertext,
            refresh_nonce,
            refresh_ciphertext,
        }
    }
}

const CONNECTION_COLUMNS: &str = "name, plugin, user_id, expires_at, updated_at, provider, scopes,
    account, status, status_detail, refreshed_at, version";

fn connection_from(r: &sqlx::any::AnyRow) -> Result<Connection, StoreError> {
    Ok(Connection {
        name: r.try_get("name")?,
        plugin: r.try_get("plugin")?,
        user: r.try_get("user_id")?,
        expires_at: r.try_get("expires_at")?,
        updated_at: r.try_get("updated_at")?,
        provider: r.try_get("provider")?,
        scopes: split_scopes(r.try_get("scopes")?),
        account: r.try_get("account")?,
        status: r.try_get("status")?,
        status_detail: r.try_get("status_detail")?,
        refreshed_at: r.try_get("refreshed_at")?,
        version: r.try_get("version")?,
    })
}

impl Store {
    /// Creates or replaces a connection with a bare access token (no provider,
    /// no refresh token: the operator seeded it).
    pub async fn put_connection(
        &self,
        tenant: &str,
        connection: &Connection,
        token: &[u8],
    ) -> Result<(), StoreError> {
        let (nonce, ciphertext) = self.key.seal(token, &aad(tenant, &connection.name));
        let now = now_ms();
        sqlx::query(
            "INSERT INTO connections (tenant, name, plugin, user_id, key_id, nonce, ciphertext,
               expires_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant, name) DO UPDATE SET plugin = excluded.plugin,
               user_id = excluded.user_id, key_id = excluded.key_id, nonce = excluded.nonce,
               ciphertext = excluded.ciphertext, expires_at = excluded.expires_at,
               updated_at = excluded.updated_at, provider = NULL, refresh_key_id = NULL,
               refresh_nonce = NULL, refresh_ciphertext = NULL, scopes = NULL, account = NULL,
               status = 'active', status_detail = NULL, version = connections.version + 1,
               next_refresh_at = NULL, refresh_failures = 0, lock_owner = NULL, lock_until = NULL",
        )
        .bind(tenant)
        .bind(&connection.name)
        .bind(&connection.plugin)
        .bind(&connection.user)
        .bind(self.key.id())
        .bind(nonce)
        .bind(ciphertext)
        .bind(connection.expires_at)
        .bind(now)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The access token of a connection, whatever its plugin (for revocation).
    pub async fn connection_access_token(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<SecretValue>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, nonce, ciphertext FROM connections WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| self.unseal(&row, &aad(tenant, name), &format!("connection {name}")))
            .transpose()
    }

    /// Removes a connection; true when there was one.
    pub async fn delete_connection(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM connections WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// The tenant's connections, optionally only one user's.
    pub async fn connections(
        &self,
        tenant: &str,
        user: Option<&str>,
    ) -> Result<Vec<Connection>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections
             WHERE tenant = $1 AND ($2 IS NULL OR user_id = $3) ORDER BY name"
        ))
        .bind(tenant)
        .bind(user)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(connection_from).collect()
    }

    pub async fn connection(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Connection>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant = $1 AND name = $2"
        ))
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(connection_from).transpose()
    }

    /// The access token of `name` and its bookkeeping, if the connection
    /// exists and belongs to `plugin`: a plugin can only use the connections
    /// made for it.
    pub async fn connection_credential(
        &self,
        tenant: &str,
        name: &str,
        plugin: &str,
    ) -> Result<Option<Credential>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, nonce, ciphertext, version, expires_at, status,
               CASE WHEN provider IS NOT NULL AND refresh_ciphertext IS NOT NULL THEN 1 ELSE 0 END
                 AS refreshable
             FROM connections WHERE tenant = $1 AND name = $2 AND plugin = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(plugin)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(Credential {
            token: self.unseal(&row, &aad(tenant, name), &format!("connection {name}"))?,
            version: row.try_get("version")?,
            expires_at: row.try_get("expires_at")?,
            status: row.try_get("status")?,
            refreshable: row.try_get::<i64, _>("refreshable")? != 0,
        }))
    }

    /// Stores the tokens an OAuth consent produced: a new connection, or a
    /// fresh grant for an existing one (which makes it active again).
    pub async fn put_oauth_connection(
        &self,
        tenant: &str,
        connection: &Connection,
        tokens: &NewTokens<'_>,
    ) -> Result<(), StoreError> {
        let SealedTokens {
            nonce,
            ciphertext,
            refresh_nonce,
            refresh_ciphertext,
        } = self.seal_tokens(tenant, &connection.name, tokens);
        let now = now_ms();
        sqlx::query(
            "INSERT INTO connections (tenant, name, plugin, user_id, key_id, nonce, ciphertext,
               expires_at, created_at, updated_at, provider, refresh_key_id, refresh_nonce,
               refresh_ciphertext, scopes, account, status, version, refreshed_at, next_refresh_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, 'active', 1, $17, $18)
             ON CONFLICT (tenant, name) DO UPDATE SET plugin = excluded.plugin,
               user_id = excluded.user_id, key_id = excluded.key_id, nonce = excluded.nonce,
               ciphertext = excluded.ciphertext, expires_at = excluded.expires_at,
               updated_at = excluded.updated_at, provider = excluded.provider,
               refresh_key_id = excluded.refresh_key_id, refresh_nonce = excluded.refresh_nonce,
               refresh_ciphertext = excluded.refresh_ciphertext, scopes = excluded.scopes,
               account = excluded.account, status = 'active', status_detail = NULL,
               version = connections.version + 1, refreshed_at = excluded.refreshed_at,
               next_refresh_at = excluded.next_refresh_at, refresh_failures = 0,
               lock_owner = NULL, lock_until = NULL",
        )
        .bind(tenant)
        .bind(&connection.name)
        .bind(&connection.plugin)
        .bind(&connection.user)
        .bind(self.key.id())
        .bind(nonce)
        .bind(ciphertext)
        .bind(tokens.expires_at)
        .bind(now)
        .bind(now)
        .bind(&connection.provider)
        .bind(refresh_nonce.as_ref().map(|_| self.key.id()))
        .bind(refresh_nonce)
        .bind(refresh_ciphertext)
        .bind(tokens.scopes.join(" "))
        .bind(&connection.account)
        .bind(now)
        .bind(
            tokens
                .refresh_token
                .map(|_| next_refresh_at(now, tokens.expires_at)),
        )
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The refresh token of an OAuth connection, with what a refresher checks.
    pub async fn refresh_grant(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<RefreshGrant>, StoreError> {
        let row = sqlx::query(
            "SELECT provider, plugin, user_id, refresh_key_id AS key_id, refresh_nonce AS nonce,
               refresh_ciphertext AS ciphertext, version, status, scopes, refresh_failures
             FROM connections WHERE tenant = $1 AND name = $2
               AND provider IS NOT NULL AND refresh_ciphertext IS NOT NULL",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(RefreshGrant {
            provider: row.try_get("provider")?,
            plugin: row.try_get("plugin")?,
            user: row.try_get("user_id")?,
            refresh_token: self.unseal(
                &row,
                &refresh_aad(tenant, name),
                &format!("connection {name} refresh token"),
            )?,
            version: row.try_get("version")?,
            status: row.try_get("status")?,
            scopes: split_scopes(row.try_get("scopes")?),
            refresh_failures: row.try_get("refresh_failures")?,
        }))
    }

    /// The current token version of a connection (None when it is gone).
    pub async fn connection_version(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<(i64, Option<i64>)>, StoreError> {
        let row = sqlx::query(
            "SELECT version, lock_until FROM connections WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("version")?, r.try_get("lock_until")?)))
            .transpose()
    }

    /// Takes the refresh lock of a connection whose token is still at
    /// `version`, until `until` (ms); false when another holds it or the token
    /// changed meanwhile.
    pub async fn lock_refresh(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
        owner: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE connections SET lock_owner = $1, lock_until = $2
             WHERE tenant = $3 AND name = $4 AND version = $5
               AND (lock_until IS NULL OR lock_until < $6)",
        )
        .bind(owner)
        .bind(until)
        .bind(tenant)
        .bind(name)
        .bind(version)
        .bind(now_ms())
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Stores refreshed tokens and releases the lock, in one statement: a
    /// rotated refresh token is durable before the new access token is used.
    /// The write is conditional on the token still being at `version` (the one
    /// the refresh started from), not on holding the lock: tokens a provider
    /// issued are kept even if the lock lapsed meanwhile, unless someone else
    /// already stored newer ones. False when nothing was written.
    pub async fn store_refreshed(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
        tokens: &NewTokens<'_>,
    ) -> Result<bool, StoreError> {
        let SealedTokens {
            nonce,
            ciphertext,
            refresh_nonce,
            refresh_ciphertext,
        } = self.seal_tokens(tenant, name, tokens);
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE connections SET key_id = $1, nonce = $2, ciphertext = $3, expires_at = $4,
               refresh_key_id = COALESCE($5, refresh_key_id),
               refresh_nonce = COALESCE($6, refresh_nonce),
               refresh_ciphertext = COALESCE($7, refresh_ciphertext),
               scopes = $8, status = 'active', status_detail = NULL, version = version + 1,
               refreshed_at = $9, updated_at = $10, next_refresh_at = $11, refresh_failures = 0,
               lock_owner = NULL, lock_until = NULL
             WHERE tenant = $12 AND name = $13 AND version = $14",
        )
        .bind(self.key.id())
        .bind(nonce)
        .bind(ciphertext)
        .bind(tokens.expires_at)
        .bind(refresh_nonce.as_ref().map(|_| self.key.id()))
        .bind(refresh_nonce)
        .bind(refresh_ciphertext)
        .bind(tokens.scopes.join(" "))
        .bind(now)
        .bind(now)
        .bind(next_refresh_at(now, tokens.expires_at))
        .bind(tenant)
        .bind(name)
        .bind(version)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Records a failed refresh of the token at `version` and releases the
    /// lock. A refused grant marks the connection as needing re-consent (and
    /// stops scheduled refreshes); a transient failure is retried at
    /// `retry_at`. False when the token changed meanwhile (someone else's
    /// refresh succeeded, so this failure is moot) and nothing was written.
    #[allow(clippy::too_many_arguments)]
    pub async fn refresh_failed(
        &self,
        tenant: &str,
        name: &str,
        owner: &str,
        version: i64,
        refused: bool,
        detail: &str,
        retry_at: i64,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE connections SET
               lock_owner = CASE WHEN lock_owner = $1 THEN NULL ELSE lock_owner END,
               lock_until = CASE WHEN lock_owner = $2 THEN NULL ELSE lock_until END,
               refresh_failures = refresh_failures + 1, status_detail = $3,
               status = CASE WHEN $4 THEN 'needs_reconsent' ELSE status END,
               next_refresh_at = CASE WHEN $5 THEN NULL ELSE $6 END
             WHERE tenant = $7 AND name = $8 AND version = $9",
        )
        .bind(owner)
        .bind(owner)
        .bind(detail)
        .bind(refused)
        .bind(refused)
        .bind(retry_at)
        .bind(tenant)
        .bind(name)
        .bind(version)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// OAuth connections whose scheduled refresh is due, oldest first.
    pub async fn due_refreshes(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, name FROM connections
             WHERE next_refresh_at <= $1 AND status = 'active'
               AND (lock_until IS NULL OR lock_until < $2)
             ORDER BY next_refresh_at LIMIT $3",
        )
        .bind(now)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("tenant")?, r.try_get("name")?)))
            .collect()
    }

    /// The earliest scheduled refresh (a locked one once its lock lapses),
    /// for the refresher's sleep.
    pub async fn next_refresh_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(self.sql(
            "SELECT MIN(MAX(next_refresh_at, COALESCE(lock_until, 0))) FROM connections
             WHERE status = 'active'",
            "SELECT MIN(GREATEST(next_refresh_at, COALESCE(lock_until, 0))) FROM connections
             WHERE status = 'active'",
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    /// Connections needing re-consent (at most 200, most recent first).
    pub async fn connections_needing_reconsent(&self) -> Result<Vec<NeedsReconsent>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, name, plugin, user_id, provider, status_detail, updated_at
             FROM connections WHERE status = 'needs_reconsent' ORDER BY updated_at DESC LIMIT 200",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NeedsReconsent {
                    tenant: r.try_get("tenant")?,
                    name: r.try_get("name")?,
                    plugin: r.try_get("plugin")?,
                    user: r.try_get("user_id")?,
                    provider: r.try_get("provider")?,
                    status_detail: r.try_get("status_detail")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }
}
