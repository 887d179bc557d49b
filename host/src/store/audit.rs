//! The audit trail: who did what to a tenant's access and connections.
//!
//! Append-only: the table refuses updates and deletes (triggers in the
//! migration), and nothing here offers either.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The operator's admin token or the CLI.
    Operator,
    /// A tenant API key, by id.
    Key(String),
    /// The host itself (refreshes, scheduled jobs).
    System,
    /// A person going through an OAuth consent.
    User(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Operator => f.write_str("operator"),
            Actor::Key(id) => write!(f, "key:{id}"),
            Actor::System => f.write_str("system"),
            Actor::User(user) => write!(f, "user:{user}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub seq: i64,
    pub tenant: String,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl Store {
    /// Appends one event.
    pub async fn audit(
        &self,
        tenant: &str,
        actor: &Actor,
        action: &str,
        subject: Option<&str>,
        detail: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_events (tenant, at, actor, action, subject, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant)
        .bind(now_ms())
        .bind(actor.to_string())
        .bind(action)
        .bind(subject)
        .bind(detail.map(|d| d.to_string()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The tenant's events after `after` (a `seq`), oldest first, optionally
    /// only actions starting with `action`.
    pub async fn audit_events(
        &self,
        tenant: &str,
        after: i64,
        action: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, tenant, at, actor, action, subject, detail FROM audit_events
             WHERE tenant = $1 AND seq > $2 AND ($3 IS NULL OR substr(action, 1, length($4)) = $5)
             ORDER BY seq LIMIT $6",
        )
        .bind(tenant)
        .bind(after)
        .bind(action)
        .bind(action)
        .bind(action)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: Option<String> = r.try_get("detail")?;
                Ok(AuditEvent {
                    seq: r.try_get("seq")?,
                    tenant: r.try_get("tenant")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    detail: detail
                        .map(|d| serde_json::from_str(&d))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
                })
            })
            .collect()
    }
}
