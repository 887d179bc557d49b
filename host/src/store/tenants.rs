//! Tenants (agencies) and their API keys.
//!
//! A key reads `phk_<id>_<secret>`: `id` (12 hex digits) is its public name,
//! shown in lists and the audit trail; the whole key is shown once, when it is
//! made, and only its SHA-256 is kept. A 256-bit random secret needs no slow
//! password hash: there is nothing to guess from the digest.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{Store, StoreError, now_ms};

/// The prefix of every API key: what secret scanners and people recognise.
pub const KEY_PREFIX: &str = "phk_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub name: String,
    pub display_name: Option<String>,
    pub created_at: i64,
}

/// An API key as lists show it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub label: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub replaced_by: Option<String>,
}

/// A key just made: the only time its full value exists outside the caller.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub meta: ApiKey,
    /// The key to present as `Authorization: Bearer <key>`. Shown once.
    pub key: String,
}

/// Why a presented key does not open the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRefusal {
    Unknown,
    Revoked,
    Expired,
}

/// The tenant a valid key acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    pub key_id: String,
    pub tenant: String,
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Splits `phk_<id>_<secret>` into its id; None when it is not shaped like a key.
pub fn key_id_of(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && secret.len() >= 32)
        .then_some(id)
}

fn new_key() -> (String, Zeroizing<String>) {
    let mut id = [0u8; 6];
    let mut secret = Zeroizing::new([0u8; 32]);
    let mut rng = rand::rng();
    rng.fill_bytes(&mut id);
    rng.fill_bytes(secret.as_mut());
    let id = hex::encode(id);
    let key = Zeroizing::new(format!(
        "{KEY_PREFIX}{id}_{}",
        URL_SAFE_NO_PAD.encode(secret.as_ref())
    ));
    (id, key)
}

fn api_key_from(r: &sqlx::any::AnyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        label: r.try_get("label")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
        replaced_by: r.try_get("replaced_by")?,
    })
}

impl Store {
    /// Registers a tenant; false when it already existed (nothing changes then).
    pub async fn create_tenant(
        &self,
        name: &str,
        display_name: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "INSERT INTO tenants (name, display_name, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(display_name)
        .bind(now_ms())
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub async fn tenant(&self, name: &str) -> Result<Option<Tenant>, StoreError> {
        let row = sqlx::query("SELECT name, display_name, created_at FROM tenants WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(Tenant {
                name: r.try_get("name")?,
                display_name: r.try_get("display_name")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query("SELECT name, display_name, created_at FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Tenant {
                    name: r.try_get("name")?,
                    display_name: r.try_get("display_name")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Makes a key for `tenant`; `expires_at` (ms) when it should stop working by itself.
    pub async fn issue_api_key(
        &self,
        tenant: &str,
        label: &str,
        expires_at: Option<i64>,
    ) -> Result<IssuedKey, StoreError> {
        let (id, key) = new_key();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, label, secret_sha256, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(tenant)
        .bind(label)
        .bind(&digest(&key)[..])
        .bind(now)
        .bind(expires_at)
        .execute(&self.writer)
        .await?;
        Ok(IssuedKey {
            meta: ApiKey {
                id,
                tenant: tenant.to_string(),
                label: label.to_string(),
                created_at: now,
                expires_at,
                revoked_at: None,
                last_used_at: None,
                replaced_by: None,
            },
            key: key.to_string(),
        })
    }

    /// Replaces key `id` of `tenant` by a new one with the same label; the old
    /// key keeps working for `grace_ms` (0: it stops now). None when there is
    /// no such live key.
    pub async fn rotate_api_key(
        &self,
        tenant: &str,
        id: &str,
        grace_ms: i64,
    ) -> Result<Option<IssuedKey>, StoreError> {
        // One transaction: two concurrent rotations of one key make one new key.
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query(self.sql(
            "SELECT * FROM api_keys WHERE tenant = $1 AND id = $2",
            "SELECT * FROM api_keys WHERE tenant = $1 AND id = $2 FOR UPDATE",
        ))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(old) = row.as_ref().map(api_key_from).transpose()? else {
            return Ok(None);
        };
        if old.revoked_at.is_some() || old.replaced_by.is_some() {
            return Ok(None);
        }
        let (new_id, key) = new_key();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, label, secret_sha256, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&new_id)
        .bind(tenant)
        .bind(&old.label)
        .bind(&digest(&key)[..])
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let until = now + grace_ms.max(0);
        sqlx::query(
            "UPDATE api_keys SET replaced_by = $1,
               expires_at = CASE WHEN expires_at IS NULL OR expires_at > $2 THEN $3 ELSE expires_at END
             WHERE tenant = $4 AND id = $5",
        )
        .bind(&new_id)
        .bind(until)
        .bind(until)
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(IssuedKey {
            meta: ApiKey {
                id: new_id,
                tenant: tenant.to_string(),
                label: old.label,
                created_at: now,
                expires_at: None,
                revoked_at: None,
                last_used_at: None,
                replaced_by: None,
            },
            key: key.to_string(),
        }))
    }

    /// Revokes key `id` of `tenant`; true when it was live.
    pub async fn revoke_api_key(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(tenant)
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub async fn api_key(&self, tenant: &str, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key_from).transpose()
    }

    pub async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_keys WHERE tenant = $1 ORDER BY created_at, id")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(api_key_from).collect()
    }

    /// Checks a presented key: its digest in constant time, then revocation and expiry.
    pub async fn check_api_key(
        &self,
        presented: &str,
    ) -> Result<Result<KeyGrant, KeyRefusal>, StoreError> {
        let Some(id) = key_id_of(presented) else {
            return Ok(Err(KeyRefusal::Unknown));
        };
        let row = sqlx::query(
            "SELECT tenant, secret_sha256, expires_at, revoked_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Err(KeyRefusal::Unknown));
        };
        let stored: Vec<u8> = row.try_get("secret_sha256")?;
        if !bool::from(stored.as_slice().ct_eq(&digest(presented)[..])) {
            return Ok(Err(KeyRefusal::Unknown));
        }
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            return Ok(Err(KeyRefusal::Revoked));
        }
        if row
            .try_get::<Option<i64>, _>("expires_at")?
            .is_some_and(|at| at <= now_ms())
        {
            return Ok(Err(KeyRefusal::Expired));
        }
        Ok(Ok(KeyGrant {
            key_id: id.to_string(),
            tenant: row.try_get("tenant")?,
        }))
    }

    /// Records that key `id` was used (callers limit how often).
    pub async fn touch_api_key(&self, id: &str, at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_recognised_by_shape() {
        let (id, key) = new_key();
        assert_eq!(key_id_of(&key), Some(id.as_str()));
        assert!(key.starts_with("phk_"));
        assert_eq!(key_id_of("phk_0123456789ab_short"), None);
        assert_eq!(key_id_of("Bearer something"), None);
        assert_eq!(
            key_id_of("phk_zzzzzzzzzzzz_0123456789012345678901234567890123"),
            None
        );
        assert_ne!(new_key().1, new_key().1);
    }
}
