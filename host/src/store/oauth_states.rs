//! Pending OAuth authorizations, each waiting for its one callback.
//!
//! The `state` parameter is an unguessable bearer value, so only its SHA-256 is
//! kept; what must stay secret until the callback (the PKCE verifier, the OIDC
//! nonce) is sealed under the master key and bound to the state's digest.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{SecretValue, Store, StoreError, now_ms};

/// What a state was issued for.
#[derive(Debug, Clone)]
pub struct PendingAuthorization {
    pub provider: String,
    pub tenant: String,
    pub user: String,
    pub plugin: String,
    pub connection: String,
    /// The scopes the plugin needs, which the grant must cover.
    pub scopes: Vec<String>,
    pub expires_at: i64,
}

/// Why a callback's state is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateRefusal {
    #[error("the state parameter is unknown: this authorization was not started here")]
    Unknown,
    #[error("the state parameter was already used: an authorization is completed once")]
    Reused,
    #[error("the authorization expired before it was completed; start it again")]
    Expired,
    #[error("the state was issued for provider {0:?}, not this one")]
    Foreign(String),
}

fn state_digest(state: &str) -> Vec<u8> {
    Sha256::digest(state.as_bytes()).to_vec()
}

/// Binds the sealed verifier to the state and to everything it was issued
/// for, so a pending authorization cannot be retargeted in the database.
fn aad(digest: &[u8], p: &PendingAuthorization) -> Vec<u8> {
    let mut aad = b"oauth-state:".to_vec();
    aad.extend_from_slice(digest);
    for part in [&p.provider, &p.tenant, &p.user, &p.plugin, &p.connection] {
        aad.push(0);
        aad.extend_from_slice(part.as_bytes());
    }
    aad.push(0);
    aad.extend_from_slice(p.scopes.join(" ").as_bytes());
    aad.push(0);
    aad.extend_from_slice(&p.expires_at.to_be_bytes());
    aad
}

impl Store {
    /// Records a started authorization; `secret` (the PKCE verifier and nonce) is sealed.
    pub async fn put_oauth_state(
        &self,
        state: &str,
        pending: &PendingAuthorization,
        secret: &[u8],
    ) -> Result<(), StoreError> {
        let digest = state_digest(state);
        let (nonce, ciphertext) = self.key.seal(secret, &aad(&digest, pending));
        let now = now_ms();
        // Expired states are of no use to anyone: drop them as new ones come.
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(now - 3_600_000)
            .execute(&self.writer)
            .await?;
        sqlx::query(
            "INSERT INTO oauth_states (state_sha256, provider, tenant, user_id, plugin, connection,
               scopes, key_id, nonce, ciphertext, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&digest)
        .bind(&pending.provider)
        .bind(&pending.tenant)
        .bind(&pending.user)
        .bind(&pending.plugin)
        .bind(&pending.connection)
        .bind(pending.scopes.join(" "))
        .bind(self.key.id())
        .bind(nonce)
        .bind(ciphertext)
        .bind(now)
        .bind(pending.expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Uses up `state` for a callback of `provider`: at most one caller ever
    /// gets it, and only before it expires.
    pub async fn take_oauth_state(
        &self,
        state: &str,
        provider: &str,
    ) -> Result<Result<(PendingAuthorization, SecretValue), StateRefusal>, StoreError> {
        let digest = state_digest(state);
        let now = now_ms();
        // Only a callback of the provider the state was issued for uses it up:
        // a foreign callback cannot burn someone's pending authorization.
        let row = sqlx::query(
            "UPDATE oauth_states SET used_at = $1
             WHERE state_sha256 = $2 AND used_at IS NULL AND provider = $3
             RETURNING provider, tenant, user_id, plugin, connection, scopes, key_id, nonce,
               ciphertext, expires_at",
        )
        .bind(now)
        .bind(&digest)
        .bind(provider)
        .fetch_optional(&self.writer)
        .await?;
        let Some(row) = row else {
            let known: Option<(String, Option<i64>)> = sqlx::query_as(
                "SELECT provider, used_at FROM oauth_states WHERE state_sha256 = $1",
            )
            .bind(&digest)
            .fetch_optional(&self.pool)
            .await?;
            return Ok(Err(match known {
                None => StateRefusal::Unknown,
                Some((_, Some(_))) => StateRefusal::Reused,
                Some((issued_for, None)) => StateRefusal::Foreign(issued_for),
            }));
        };
        let pending = PendingAuthorization {
            provider: row.try_get("provider")?,
            tenant: row.try_get("tenant")?,
            user: row.try_get("user_id")?,
            plugin: row.try_get("plugin")?,
            connection: row.try_get("connection")?,
            scopes: row
                .try_get::<String, _>("scopes")?
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            expires_at: row.try_get("expires_at")?,
        };
        if pending.expires_at <= now {
            return Ok(Err(StateRefusal::Expired));
        }
        let secret = self.unseal(&row, &aad(&digest, &pending), "oauth state")?;
        Ok(Ok((pending, secret)))
    }
}
