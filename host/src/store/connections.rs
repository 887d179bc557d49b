//! Connections: a person's account at a provider, and the token the host uses for it.
//!
//! Until the OAuth flows exist, an operator seeds a connection's access token
//! through the admin API; either way a plugin only ever names the connection.

use serde::Serialize;
use sqlx::Row;

use super::{SecretValue, Store, StoreError, now_ms};

/// A connection as the API shows it: never its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connection {
    pub name: String,
    pub plugin: String,
    pub user: String,
    pub expires_at: Option<i64>,
    pub updated_at: i64,
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

impl Store {
    /// Creates or replaces a connection and its access token.
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
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, name) DO UPDATE SET plugin = excluded.plugin,
               user_id = excluded.user_id, key_id = excluded.key_id, nonce = excluded.nonce,
               ciphertext = excluded.ciphertext, expires_at = excluded.expires_at,
               updated_at = excluded.updated_at",
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

    /// Removes a connection; true when there was one.
    pub async fn delete_connection(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM connections WHERE tenant = ? AND name = ?")
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
        let rows = sqlx::query(
            "SELECT name, plugin, user_id, expires_at, updated_at FROM connections
             WHERE tenant = ? AND (? IS NULL OR user_id = ?) ORDER BY name",
        )
        .bind(tenant)
        .bind(user)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Connection {
                    name: r.try_get("name")?,
                    plugin: r.try_get("plugin")?,
                    user: r.try_get("user_id")?,
                    expires_at: r.try_get("expires_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// The access token of `name`, if the connection exists and belongs to `plugin`:
    /// a plugin can only use the connections made for it.
    pub async fn connection_token(
        &self,
        tenant: &str,
        name: &str,
        plugin: &str,
    ) -> Result<Option<SecretValue>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, nonce, ciphertext FROM connections
             WHERE tenant = ? AND name = ? AND plugin = ?",
        )
        .bind(tenant)
        .bind(name)
        .bind(plugin)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(self.unseal(
            &row,
            &aad(tenant, name),
            &format!("connection {name}"),
        )?))
    }
}
