//! Tenants' presence webhooks: their endpoints, and the durable queue of
//! messages to them. A message is queued in the same transaction as the
//! presence change it announces (see `presence::recompute`), so a change that
//! happened is always announced, even across a crash.

use serde::Serialize;
use sqlx::AnyConnection;
use sqlx::Row;

use super::presence::Change;
use super::{SecretValue, Store, StoreError, now_ms};
use crate::model::Instant;

/// An endpoint as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PresenceWebhook {
    pub id: String,
    pub url: String,
    pub users: Option<Vec<String>>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub failing_since: Option<Instant>,
    pub last_success_at: Option<Instant>,
    pub pending: i64,
}

/// A message claimed for delivery.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub msg_id: String,
    pub tenant: String,
    pub endpoint: String,
    pub url: String,
    pub payload: String,
    pub attempts: u32,
    pub secret: SecretValue,
    pub failing_since: Option<Instant>,
}

fn aad(tenant: &str, id: &str) -> Vec<u8> {
    format!("presence-webhook:{tenant}/{id}").into_bytes()
}

impl Store {
    pub async fn create_presence_webhook(
        &self,
        tenant: &str,
        id: &str,
        url: &str,
        users: Option<&[String]>,
        secret: &[u8],
    ) -> Result<(), StoreError> {
        let (nonce, ciphertext) = self.key.seal(secret, &aad(tenant, id));
        sqlx::query(
            "INSERT INTO presence_webhooks (tenant, id, url, users, key_id, nonce, ciphertext, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(tenant)
        .bind(id)
        .bind(url)
        .bind(users.map(|u| serde_json::to_string(u).expect("a list of strings serializes")))
        .bind(self.key.id())
        .bind(nonce)
        .bind(ciphertext)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn presence_webhooks(
        &self,
        tenant: &str,
    ) -> Result<Vec<PresenceWebhook>, StoreError> {
        let rows = sqlx::query(
            "SELECT w.id, w.url, w.users, w.enabled, w.disabled_reason, w.failing_since,
               w.last_success_at,
               (SELECT COUNT(*) FROM presence_webhook_outbox o
                WHERE o.tenant = w.tenant AND o.endpoint = w.id AND o.due_at IS NOT NULL) AS pending
             FROM presence_webhooks w WHERE w.tenant = $1 ORDER BY w.created_at, w.id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let users: Option<String> = r.try_get("users")?;
                Ok(PresenceWebhook {
                    id: r.try_get("id")?,
                    url: r.try_get("url")?,
                    users: users
                        .map(|u| serde_json::from_str(&u))
                        .transpose()
                        .map_err(|e| {
                            StoreError::Corrupt(format!("presence_webhooks.users: {e}"))
                        })?,
                    enabled: r.try_get::<i64, _>("enabled")? != 0,
                    disabled_reason: r.try_get("disabled_reason")?,
                    failing_since: r.try_get("failing_since")?,
                    last_success_at: r.try_get("last_success_at")?,
                    pending: r.try_get("pending")?,
                })
            })
            .collect()
    }

    /// Removes an endpoint and its queued messages; true when there was one.
    pub async fn delete_presence_webhook(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM presence_webhook_outbox WHERE tenant = $1 AND endpoint = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM presence_webhooks WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Turns a disabled endpoint back on; its given-up messages are not resent.
    pub async fn enable_presence_webhook(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE presence_webhooks SET enabled = 1, disabled_reason = NULL, failing_since = NULL
             WHERE tenant = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Claims due messages of enabled endpoints for `lease_ms`.
    pub async fn claim_webhook_messages(
        &self,
        now: Instant,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<OutgoingMessage>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(self.sql(
            "UPDATE presence_webhook_outbox SET claimed_until = $1
             WHERE msg_id IN (
               SELECT o.msg_id FROM presence_webhook_outbox o
               JOIN presence_webhooks w ON w.tenant = o.tenant AND w.id = o.endpoint
               WHERE w.enabled = 1 AND o.due_at <= $2 AND (o.claimed_until IS NULL OR o.claimed_until <= $3)
               ORDER BY o.due_at, o.msg_id LIMIT $4)
             RETURNING msg_id, tenant, endpoint, payload, attempts",
            // Replicas claiming at once skip each other's rows.
            "UPDATE presence_webhook_outbox SET claimed_until = $1
             WHERE msg_id IN (
               SELECT o.msg_id FROM presence_webhook_outbox o
               JOIN presence_webhooks w ON w.tenant = o.tenant AND w.id = o.endpoint
               WHERE w.enabled = 1 AND o.due_at <= $2 AND (o.claimed_until IS NULL OR o.claimed_until <= $3)
               ORDER BY o.due_at, o.msg_id LIMIT $4 FOR UPDATE OF o SKIP LOCKED)
             RETURNING msg_id, tenant, endpoint, payload, attempts",
        ))
        .bind(now + lease_ms)
        .bind(now)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let tenant: String = r.try_get("tenant")?;
            let endpoint: String = r.try_get("endpoint")?;
            let w = sqlx::query(
                "SELECT url, key_id, nonce, ciphertext, failing_since FROM presence_webhooks
                 WHERE tenant = $1 AND id = $2",
            )
            .bind(&tenant)
            .bind(&endpoint)
            .fetch_one(&mut *tx)
            .await?;
            let secret = self.unseal(
                &w,
                &aad(&tenant, &endpoint),
                &format!("presence webhook {endpoint}"),
            )?;
            let attempts: i64 = r.try_get("attempts")?;
            out.push(OutgoingMessage {
                msg_id: r.try_get("msg_id")?,
                url: w.try_get("url")?,
                failing_since: w.try_get("failing_since")?,
                tenant,
                endpoint,
                payload: r.try_get("payload")?,
                attempts: attempts.max(0) as u32,
                secret,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The earliest due message of an enabled endpoint.
    pub async fn next_webhook_message_due(&self) -> Result<Option<Instant>, StoreError> {
        Ok(sqlx::query_scalar(self.sql(
            "SELECT MIN(MAX(o.due_at, COALESCE(o.claimed_until, 0))) FROM presence_webhook_outbox o
             JOIN presence_webhooks w ON w.tenant = o.tenant AND w.id = o.endpoint
             WHERE w.enabled = 1 AND o.due_at IS NOT NULL",
            "SELECT MIN(GREATEST(o.due_at, COALESCE(o.claimed_until, 0))) FROM presence_webhook_outbox o
             JOIN presence_webhooks w ON w.tenant = o.tenant AND w.id = o.endpoint
             WHERE w.enabled = 1 AND o.due_at IS NOT NULL",
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    /// A 2xx: the message is done and the endpoint is healthy again.
    pub async fn webhook_delivered(&self, msg: &OutgoingMessage) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM presence_webhook_outbox WHERE msg_id = $1")
            .bind(&msg.msg_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE presence_webhooks SET failing_since = NULL, last_success_at = $1
             WHERE tenant = $2 AND id = $3",
        )
        .bind(now_ms())
        .bind(&msg.tenant)
        .bind(&msg.endpoint)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A failed attempt: retried at `retry_at`, or given up (kept, with its
    /// error, for the operator) when none; the endpoint is disabled with
    /// `disable` as the reason when its failure run has lasted too long.
    pub async fn webhook_failed(
        &self,
        msg: &OutgoingMessage,
        retry_at: Option<Instant>,
        error: &str,
        disable: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "UPDATE presence_webhook_outbox SET attempts = attempts + 1, due_at = $1,
               claimed_until = NULL, last_error = $2 WHERE msg_id = $3",
        )
        .bind(retry_at)
        .bind(error)
        .bind(&msg.msg_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE presence_webhooks SET failing_since = COALESCE(failing_since, $1),
               enabled = CASE WHEN $2 IS NULL THEN enabled ELSE 0 END,
               disabled_reason = COALESCE($3, disabled_reason)
             WHERE tenant = $4 AND id = $5",
        )
        .bind(now)
        .bind(disable)
        .bind(disable)
        .bind(&msg.tenant)
        .bind(&msg.endpoint)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Queues a message for each enabled endpoint of the change's tenant that
/// wants this user; true when any was queued. Runs inside the change's transaction.
pub(crate) async fn enqueue(conn: &mut AnyConnection, change: &Change) -> Result<bool, StoreError> {
    let endpoints: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, users FROM presence_webhooks WHERE tenant = $1 AND enabled = 1")
            .bind(&change.tenant)
            .fetch_all(&mut *conn)
            .await?;
    if endpoints.is_empty() {
        return Ok(false);
    }
    let mut queued = false;
    let payload = serde_json::json!({
        "type": "presence.changed",
        "timestamp": chrono::DateTime::from_timestamp_millis(change.at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "data": change,
    })
    .to_string();
    for (id, users) in endpoints {
        if let Some(users) = users {
            let users: Vec<String> = serde_json::from_str(&users)
                .map_err(|e| StoreError::Corrupt(format!("presence_webhooks.users: {e}")))?;
            if !users.contains(&change.user) {
                continue;
            }
        }
        sqlx::query(
            "INSERT INTO presence_webhook_outbox (msg_id, tenant, endpoint, payload, due_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(format!("msg_{}_{id}", change.seq))
        .bind(&change.tenant)
        .bind(&id)
        .bind(&payload)
        .bind(change.at)
        .bind(change.at)
        .execute(&mut *conn)
        .await?;
        queued = true;
    }
    Ok(queued)
}

impl Store {
    /// Queues an event other than a presence change (a connection that needs
    /// re-consent, or recovered) for each enabled endpoint of `tenant` that
    /// wants `user`; true when any was queued. `event_id` makes the message id,
    /// so the same event is never queued twice.
    pub async fn enqueue_tenant_event(
        &self,
        tenant: &str,
        user: &str,
        event_type: &str,
        event_id: &str,
        data: serde_json::Value,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let payload = serde_json::json!({
            "type": event_type,
            "timestamp": chrono::DateTime::from_timestamp_millis(now)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "data": data,
        })
        .to_string();
        let endpoints: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT id, users FROM presence_webhooks WHERE tenant = $1 AND enabled = 1",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        let mut queued = false;
        for (id, users) in endpoints {
            if let Some(users) = users {
                let users: Vec<String> = serde_json::from_str(&users)
                    .map_err(|e| StoreError::Corrupt(format!("presence_webhooks.users: {e}")))?;
                if !users.iter().any(|u| u == user) {
                    continue;
                }
            }
            let n = sqlx::query(
                "INSERT INTO presence_webhook_outbox (msg_id, tenant, endpoint, payload, due_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (msg_id) DO NOTHING",
            )
            .bind(format!("msg_{event_id}_{id}"))
            .bind(tenant)
            .bind(&id)
            .bind(&payload)
            .bind(now)
            .bind(now)
            .execute(&self.writer)
            .await?
            .rows_affected();
            queued |= n > 0;
        }
        Ok(queued)
    }
}
