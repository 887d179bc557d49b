//! Notifications and their delivery attempts: the router's durable queue.
//!
//! Workers claim due notifications with a lease (an atomic `UPDATE ...
//! RETURNING`), so a notification is handled by one worker at a time and a
//! crashed worker's claim runs out. Every decision is appended to the
//! notification's `decisions`, every channel attempt is a row written before
//! the channel is called.

use serde::Serialize;
use sqlx::Row;

use super::{Backend, Store, StoreError, lock_key, now_ms};
use crate::model::Instant;
use crate::notify::{Class, Wedding};

/// A notification as submitted.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub id: String,
    pub tenant: String,
    pub recipient: String,
    pub class: Class,
    pub wedding: Option<Wedding>,
    pub subject: Option<String>,
    pub body: String,
    pub idempotency_key: Option<String>,
    pub deliver_by: Instant,
    pub escalation: Option<Escalation>,
}

/// Where an unacknowledged emergency goes next, and where it has been.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Escalation {
    /// The contacts, in order, after the first recipient.
    pub path: Vec<String>,
    /// The next contact's index in `path`.
    pub step: usize,
    /// The notifications before this one in the chain, oldest first.
    #[serde(default)]
    pub chain: Vec<String>,
}

/// One channel a person is reached on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// The provider plugin that sends (`twilio`, ...).
    pub plugin: String,
    /// Where to: a phone number, `whatsapp:+...`, an email address, a Slack user id.
    pub address: String,
    /// The connection the plugin sends through, when it needs one.
    #[serde(default)]
    pub connection: Option<String>,
    /// When this channel may be used, in the person's zone
    /// (`{"daily": ["08:00", "20:00"]}`); always when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, crate::api::openapi::TimeSpan>>)]
    pub windows: Option<crate::notify::windows::WindowsSpec>,
}

impl Channel {
    /// The channel's send windows, parsed (checked when they were set).
    pub fn send_windows(&self) -> Option<crate::notify::windows::Weekly> {
        self.windows
            .as_ref()
            .and_then(|w| crate::notify::windows::Weekly::parse(w).ok())
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: i64,
    pub plugin: String,
    pub address: String,
    pub started_at: Instant,
    /// `delivered`, `failed`, `interrupted` (the host stopped during the
    /// send, which was then resumed), or null while in flight.
    pub outcome: Option<String>,
    pub provider_message_id: Option<String>,
    pub error: Option<String>,
    pub finished_at: Option<Instant>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NotificationRecord {
    pub id: String,
    pub tenant: String,
    pub recipient: String,
    pub urgency: Class,
    pub wedding: Option<Wedding>,
    pub subject: Option<String>,
    pub body: String,
    /// `deferred`, `due`, `delivered` or `failed`.
    pub state: String,
    pub due_at: Option<Instant>,
    pub deliver_by: Option<Instant>,
    /// Rounds over the recipient's channels so far.
    pub rounds: i64,
    /// What the router decided, oldest first: `{"at", "decision", "reason", ...}`.
    pub decisions: Vec<serde_json::Value>,
    pub created_at: Instant,
    pub delivered_at: Option<Instant>,
    pub escalation: Option<Escalation>,
    pub acked_at: Option<Instant>,
    pub acked_by: Option<String>,
    pub attempts: Vec<Attempt>,
    /// The claim this copy was read under, and until when (not shown).
    #[serde(skip)]
    pub claim_token: Option<String>,
    #[serde(skip)]
    pub claimed_until: Option<Instant>,
    /// The digest this notification went out in, or was being sent in.
    pub digest_lead: Option<String>,
}

/// What routing needs of a person.
#[derive(Debug, Clone, Default)]
pub struct RecipientSettings {
    pub time_zone: Option<String>,
    pub hours: Option<crate::presence::working_hours::Schedule>,
    pub quiet: Option<crate::notify::windows::Weekly>,
}

/// What submitting a notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Created,
    /// The idempotency key was used before: this is that notification's id.
    Existing(String),
}

fn record_from(r: &sqlx::any::AnyRow) -> Result<NotificationRecord, StoreError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("notifications.{what}: {e}"))
    };
    let urgency: String = r.try_get("urgency")?;
    let wedding: Option<String> = r.try_get("wedding")?;
    let decisions: String = r.try_get("decisions")?;
    let escalation: Option<String> = r.try_get("escalation")?;
    Ok(NotificationRecord {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        recipient: r.try_get("recipient")?,
        urgency: Class::parse(&urgency).ok_or_else(|| corrupt("urgency", &urgency))?,
        wedding: wedding
            .map(|w| serde_json::from_str(&w))
            .transpose()
            .map_err(|e| corrupt("wedding", &e))?,
        subject: r.try_get("subject")?,
        body: r.try_get("body")?,
        state: r.try_get("state")?,
        due_at: r.try_get("due_at")?,
        deliver_by: r.try_get("deliver_by")?,
        rounds: r.try_get("attempts")?,
        decisions: serde_json::from_str(&decisions).map_err(|e| corrupt("decisions", &e))?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
        escalation: escalation
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| corrupt("escalation", &e))?,
        acked_at: r.try_get("acked_at")?,
        acked_by: r.try_get("acked_by")?,
        attempts: Vec::new(),
        claim_token: r.try_get("claim_token")?,
        claimed_until: r.try_get("claimed_until")?,
        digest_lead: r.try_get("digest_lead")?,
    })
}

/// A decision entry.
pub fn decision(at: Instant, decision: &str, reason: &str) -> serde_json::Value {
    serde_json::json!({ "at": at, "decision": decision, "reason": reason })
}

impl Store {
    /// Stores a new notification, due at once (the worker decides). A repeated
    /// idempotency key creates nothing and names the first notification.
    pub async fn submit_notification(&self, n: &NewNotification) -> Result<Submitted, StoreError> {
        Ok(self
            .submit_notifications(std::slice::from_ref(n))
            .await?
            .remove(0))
    }

    /// Queues several notifications in one transaction (one request's
    /// recipients): all or none are stored.
    pub async fn submit_notifications(
        &self,
        batch: &[NewNotification],
    ) -> Result<Vec<Submitted>, StoreError> {
        let now = now_ms();
        let decisions =
            serde_json::Value::Array(vec![decision(now, "received", "queued for routing")])
                .to_string();
        let mut tx = self.writer.begin().await?;
        let mut out = Vec::with_capacity(batch.len());
        for n in batch {
            let inserted = sqlx::query(
                "INSERT INTO notifications (id, tenant, recipient, urgency, wedding, subject, body,
                   idempotency_key, state, due_at, deliver_by, decisions, created_at, escalation)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'due', $9, $10, $11, $12, $13)
                 ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
            )
            .bind(&n.id)
            .bind(&n.tenant)
            .bind(&n.recipient)
            .bind(n.class.as_str())
            .bind(
                n.wedding
                    .as_ref()
                    .map(|w| serde_json::to_string(w).expect("a wedding serializes")),
            )
            .bind(&n.subject)
            .bind(&n.body)
            .bind(&n.idempotency_key)
            .bind(now)
            .bind(n.deliver_by)
            .bind(&decisions)
            .bind(now)
            .bind(
                n.escalation
                    .as_ref()
                    .map(|e| serde_json::to_string(e).expect("an escalation serializes")),
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted > 0 {
                out.push(Submitted::Created);
                continue;
            }
            let existing: String = sqlx::query_scalar(
                "SELECT id FROM notifications WHERE tenant = $1 AND idempotency_key = $2",
            )
            .bind(&n.tenant)
            .bind(&n.idempotency_key)
            .fetch_one(&mut *tx)
            .await?;
            out.push(Submitted::Existing(existing));
        }
        tx.commit().await?;
        Ok(out)
    }

    /// A notification of `tenant`, with its attempts.
    pub async fn notification(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<NotificationRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM notifications WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut record = record_from(&row)?;
        record.attempts = self.attempts(id).await?;
        Ok(Some(record))
    }

    async fn attempts(&self, id: &str) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .attempts_of(&[id.to_string()])
            .await?
            .remove(id)
            .unwrap_or_default())
    }

    /// The attempts of several notifications, in one query.
    async fn attempts_of(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<Attempt>>, StoreError> {
        let ids = serde_json::to_string(ids).expect("ids serialize");
        let rows = sqlx::query(self.sql(
            "SELECT * FROM notification_attempts
             WHERE notification_id IN (SELECT value FROM json_each($1))
             ORDER BY notification_id, attempt",
            "SELECT * FROM notification_attempts
             WHERE notification_id IN (
               SELECT value FROM json_array_elements_text(CAST($1 AS json)) AS j(value))
             ORDER BY notification_id, attempt",
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        let mut by_id: std::collections::HashMap<String, Vec<Attempt>> = Default::default();
        for r in &rows {
            by_id
                .entry(r.try_get("notification_id")?)
                .or_default()
                .push(Attempt {
                    attempt: r.try_get("attempt")?,
                    plugin: r.try_get("plugin")?,
                    address: r.try_get("address")?,
                    started_at: r.try_get("started_at")?,
                    outcome: r.try_get("outcome")?,
                    provider_message_id: r.try_get("provider_message_id")?,
                    error: r.try_get("error")?,
                    finished_at: r.try_get("finished_at")?,
                });
        }
        Ok(by_id)
    }

    /// Claims up to `limit` due notifications for `lease_ms`, emergencies
    /// first, then the oldest due; none of the recipients in `busy`
    /// (`(tenant, recipient)` pairs being handled already), nor, but for
    /// emergencies, of those with a claim still held, by this process or
    /// another replica.
    pub async fn claim_notifications(
        &self,
        now: Instant,
        lease_ms: i64,
        limit: u32,
        busy: &[(String, String)],
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        let token = hex::encode(rand::random::<[u8; 12]>());
        let busy: Vec<[&str; 2]> = busy.iter().map(|(t, r)| [t.as_str(), r.as_str()]).collect();
        let busy = serde_json::to_string(&busy).expect("pairs serialize");
        // One claimer at a time (across replicas too), so each sees the
        // recipients the others have just claimed and leaves them alone: a
        // recipient's notifications are handled by one task at a time, and
        // what is due together leaves together, as one digest.
        let mut tx = self
            .writer
            .begin_with(self.sql("BEGIN IMMEDIATE", "BEGIN"))
            .await?;
        lock_key(&mut tx, "notifications/claim").await?;
        // Emergencies first, then the rest by due time.
        let mut rows = Vec::new();
        for emergencies in [true, false] {
            let room = limit.saturating_sub(rows.len() as u32);
            if room == 0 {
                break;
            }
            // Each walks its own index on the due time and stops at the limit.
            let (index, only) = if emergencies {
                ("notifications_emergency_due", "urgency = 'emergency' AND ")
            } else {
                ("notifications_due", "")
            };
            // An emergency does not wait for another holder's claim on its
            // recipient (which may be a dead replica's, until its lease ends).
            let held = if emergencies {
                ""
            } else {
                "AND NOT EXISTS (
                       SELECT 1 FROM notifications AS held
                       WHERE held.tenant = notifications.tenant
                         AND held.recipient = notifications.recipient
                         AND held.claimed_until >= $4)"
            };
            // PostgreSQL picks its index unaided; replicas claiming at once
            // skip each other's rows instead of waiting for them.
            let (indexed_by, busy_pairs, skip_locked) = match self.backend {
                Backend::Sqlite => (format!("INDEXED BY {index}"), "json_each($5) AS b", ""),
                Backend::Postgres => (
                    String::new(),
                    "json_array_elements(CAST($5 AS json)) AS b(value)",
                    "FOR UPDATE SKIP LOCKED",
                ),
            };
            let claim = format!(
                "UPDATE notifications SET claimed_until = $1, claim_token = $2
                 WHERE id IN (
                   SELECT id FROM notifications {indexed_by}
                   WHERE {only}due_at <= $3 AND state IN ('due', 'deferred', 'delivered')
                     AND (claimed_until IS NULL OR claimed_until < $4)
                     AND NOT EXISTS (
                       SELECT 1 FROM {busy_pairs}
                       WHERE b.value ->> 0 = notifications.tenant
                         AND b.value ->> 1 = notifications.recipient)
                     {held}
                   ORDER BY due_at LIMIT $6 {skip_locked})
                 RETURNING *"
            );
            rows.extend(
                sqlx::query(&claim)
                    .bind(now + lease_ms)
                    .bind(&token)
                    .bind(now)
                    .bind(now)
                    .bind(&busy)
                    .bind(i64::from(room))
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
        tx.commit().await?;
        let mut claimed = rows
            .iter()
            .map(record_from)
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<String> = claimed.iter().map(|n| n.id.clone()).collect();
        let mut attempts = self.attempts_of(&ids).await?;
        for n in &mut claimed {
            n.attempts = attempts.remove(&n.id).unwrap_or_default();
        }
        // Emergencies first, as claimed: they get the free worker slots.
        claimed.sort_by_key(|n| (n.urgency != Class::Emergency, n.due_at));
        Ok(claimed)
    }

    /// Whether the claim `token` on `id` still holds, read without writing.
    pub async fn claim_holds(
        &self,
        id: &str,
        token: &str,
        now: Instant,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM notifications WHERE id = $1 AND claim_token = $2 AND claimed_until > $3",
        )
        .bind(id)
        .bind(token)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// Extends a claim before acting on it; false when the claim lapsed and
    /// another worker took the notification (this copy is stale then).
    pub async fn renew_claim(
        &self,
        id: &str,
        token: &str,
        until: Instant,
    ) -> Result<bool, StoreError> {
        Ok(self.renew_claims(&[id.to_string()], token, until).await? > 0)
    }

    /// Extends the claims `token` still holds among `ids` to `until`; how
    /// many it held.
    pub async fn renew_claims(
        &self,
        ids: &[String],
        token: &str,
        until: Instant,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(self.sql(
            "UPDATE notifications SET claimed_until = $1
             WHERE id IN (SELECT value FROM json_each($2)) AND claim_token = $3",
            "UPDATE notifications SET claimed_until = $1
             WHERE id IN (SELECT value FROM json_array_elements_text(CAST($2 AS json)) AS j(value))
               AND claim_token = $3",
        ))
        .bind(until)
        .bind(serde_json::to_string(ids).expect("ids serialize"))
        .bind(token)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    /// Records a decision and where the notification stands after it: its
    /// state, when it is looked at next (None: never again), and its rounds.
    /// Only under the claim `token`; false (nothing written) without it.
    pub async fn notification_decided(
        &self,
        id: &str,
        token: &str,
        state: &str,
        due_at: Option<Instant>,
        rounds: i64,
        entry: Option<serde_json::Value>,
    ) -> Result<bool, StoreError> {
        self.decided(id, token, state, due_at, rounds, entry, true)
            .await
    }

    /// Defers a notification until `until` because the channels open now
    /// refused it for good: only time (another channel's send window) helps,
    /// so the recipient's presence changes do not make it due again.
    pub async fn notification_waits_for_windows(
        &self,
        id: &str,
        token: &str,
        until: Instant,
        rounds: i64,
        entry: serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.decided(
            id,
            token,
            "deferred",
            Some(until),
            rounds,
            Some(entry),
            false,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn decided(
        &self,
        id: &str,
        token: &str,
        state: &str,
        due_at: Option<Instant>,
        rounds: i64,
        entry: Option<serde_json::Value>,
        presence_wakes: bool,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let n = sqlx::query(&format!(
            "UPDATE notifications SET state = $1, due_at = $2, attempts = $3, claimed_until = NULL,
               claim_token = NULL, presence_wakes = $4,
               decisions = CASE WHEN $5 IS NULL THEN decisions ELSE {} END,
               delivered_at = CASE WHEN $7 = 'delivered' THEN COALESCE(delivered_at, $8)
                                   ELSE delivered_at END
             WHERE id = $9 AND claim_token = $10",
            self.append_decision("$6")
        ))
        .bind(state)
        .bind(due_at)
        .bind(rounds)
        .bind(i64::from(presence_wakes))
        .bind(entry.as_ref().map(|e| e.to_string()))
        .bind(entry.map(|e| e.to_string()))
        .bind(state)
        .bind(now)
        .bind(id)
        .bind(token)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Writes an attempt before its channel is called; returns its number.
    /// `carried`: the other notes the message carries (a digest's companions).
    pub async fn start_attempt(
        &self,
        id: &str,
        plugin: &str,
        address: &str,
        carried: &[String],
    ) -> Result<i64, StoreError> {
        let carried =
            (!carried.is_empty()).then(|| serde_json::to_string(carried).expect("ids serialize"));
        let attempt: i64 = sqlx::query_scalar(
            "INSERT INTO notification_attempts (notification_id, attempt, plugin, address, started_at,
               carried)
             VALUES ($1, (SELECT COALESCE(MAX(attempt), 0) + 1 FROM notification_attempts
                         WHERE notification_id = $2), $3, $4, $5, $6)
             RETURNING attempt",
        )
        .bind(id)
        .bind(id)
        .bind(plugin)
        .bind(address)
        .bind(now_ms())
        .bind(carried)
        .fetch_one(&self.writer)
        .await?;
        Ok(attempt)
    }

    pub async fn finish_attempt(
        &self,
        id: &str,
        attempt: i64,
        outcome: &str,
        provider_message_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notification_attempts SET outcome = $1, provider_message_id = $2, error = $3,
               finished_at = $4 WHERE notification_id = $5 AND attempt = $6",
        )
        .bind(outcome)
        .bind(provider_message_id)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(attempt)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Makes `user`'s notifications waiting on their presence due now (it changed);
    /// returns how many.
    pub async fn wake_notifications(
        &self,
        tenant: &str,
        user: &str,
        now: Instant,
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE notifications SET due_at = $1
             WHERE tenant = $2 AND recipient = $3 AND state = 'deferred' AND presence_wakes <> 0
               AND due_at > $4",
        )
        .bind(now)
        .bind(tenant)
        .bind(user)
        .bind(now)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    /// Makes every notification waiting on presence due now (at start-up, or after the
    /// worker missed presence changes).
    pub async fn wake_all_notifications(&self, now: Instant) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE notifications SET due_at = $1
             WHERE state = 'deferred' AND presence_wakes <> 0 AND due_at > $2",
        )
        .bind(now)
        .bind(now)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    pub async fn next_notification_due(&self) -> Result<Option<Instant>, StoreError> {
        Ok(sqlx::query_scalar(self.sql(
            "SELECT MIN(MAX(due_at, COALESCE(claimed_until, 0))) FROM notifications
             WHERE due_at IS NOT NULL",
            "SELECT MIN(GREATEST(due_at, COALESCE(claimed_until, 0))) FROM notifications
             WHERE due_at IS NOT NULL",
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    /// A person's channels, in order of preference.
    pub async fn user_channels(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<Vec<Channel>, StoreError> {
        let json: Option<Option<String>> =
            sqlx::query_scalar("SELECT channels FROM users WHERE tenant = $1 AND user_id = $2")
                .bind(tenant)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?;
        json.flatten()
            .map(|j| serde_json::from_str(&j))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("users.channels: {e}")))
            .map(Option::unwrap_or_default)
    }

    /// Sets a person's channels.
    pub async fn set_user_channels(
        &self,
        tenant: &str,
        user: &str,
        channels: &[Channel],
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(channels).expect("channels serialize");
        sqlx::query(
            "INSERT INTO users (tenant, user_id, channels, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant, user_id) DO UPDATE SET channels = excluded.channels,
               updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(user)
        .bind(json)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// What routing needs of a person: time zone, working hours (with days
    /// off) and quiet hours.
    pub async fn recipient_settings(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<RecipientSettings, StoreError> {
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT time_zone, working_hours, days_off, quiet_hours FROM users
             WHERE tenant = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        let Some((time_zone, hours, days_off, quiet)) = row else {
            return Ok(RecipientSettings::default());
        };
        let quiet = quiet
            .map(|q| {
                let spec: crate::notify::windows::WindowsSpec = serde_json::from_str(&q)
                    .map_err(|e| StoreError::Corrupt(format!("users.quiet_hours: {e}")))?;
                crate::notify::windows::Weekly::parse(&spec)
                    .map_err(|e| StoreError::Corrupt(format!("users.quiet_hours: {e}")))
            })
            .transpose()?;
        Ok(RecipientSettings {
            time_zone,
            hours: super::presence::schedule_of(hours.as_deref(), days_off.as_deref())?,
            quiet,
        })
    }

    /// When `user`'s acknowledged notifications of the last `since` were
    /// delivered and acknowledged, newest first (a thousand at most).
    pub async fn ack_history(
        &self,
        tenant: &str,
        user: &str,
        since: Instant,
    ) -> Result<Vec<crate::notify::timing::Ack>, StoreError> {
        let rows: Vec<(Instant, Instant)> = sqlx::query_as(
            "SELECT delivered_at, acked_at FROM notifications
             WHERE tenant = $1 AND recipient = $2 AND acked_at IS NOT NULL AND delivered_at >= $3
             ORDER BY delivered_at DESC LIMIT 1000",
        )
        .bind(tenant)
        .bind(user)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(delivered_at, acked_at)| crate::notify::timing::Ack {
                delivered_at,
                acked_at,
            })
            .collect())
    }

    /// The people with notifications waiting for them.
    pub async fn recipients_waiting(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT tenant, recipient FROM notifications
             WHERE state = 'deferred' AND presence_wakes <> 0",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// SQL for `decisions` with the JSON value bound at `param` appended.
    fn append_decision(&self, param: &str) -> String {
        match self.backend {
            Backend::Sqlite => format!("json_insert(decisions, '$[#]', json({param}))"),
            // As text, not jsonb: jsonb refuses the escape `\u0000`, which
            // serde_json writes for a NUL (a provider's error text may hold
            // one), and the notification could then never be updated again.
            // `decisions` is always a compact JSON array (written by serde_json).
            Backend::Postgres => format!(
                "left(decisions, -1) || CASE WHEN decisions = '[]' THEN '' ELSE ',' END || {param} || ']'"
            ),
        }
    }

    /// Acknowledges a notification (the recipient saw it): an emergency's
    /// escalation stops. None when there is no such notification; false when
    /// it was acknowledged before.
    pub async fn ack_notification(
        &self,
        tenant: &str,
        id: &str,
        by: &str,
    ) -> Result<Option<bool>, StoreError> {
        let now = now_ms();
        let entry = decision(now, "acknowledged", &format!("by {by}"));
        let n = sqlx::query(&format!(
            "UPDATE notifications SET acked_at = $1, acked_by = $2,
               due_at = CASE WHEN state = 'delivered' THEN NULL ELSE due_at END,
               decisions = {}
             WHERE tenant = $4 AND id = $5 AND acked_at IS NULL",
            self.append_decision("$3")
        ))
        .bind(now)
        .bind(by)
        .bind(entry.to_string())
        .bind(tenant)
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        if n > 0 {
            return Ok(Some(true));
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM notifications WHERE tenant = $1 AND id = $2")
                .bind(tenant)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(exists.map(|_| false))
    }

    /// Claims the recipient's other general notifications that wait or are
    /// due, at most `limit`, to go out with `lead` as one digest, under the
    /// lead's claim and marked as riding in it: a claimed one is in this
    /// digest only, one that arrives later goes out after it. Those claimed
    /// in the lead's own batch (`token`) may join; the batch skips them after.
    pub async fn claim_digest(
        &self,
        lead: &NotificationRecord,
        token: &str,
        now: Instant,
        lease_ms: i64,
        limit: u32,
        resuming: bool,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        // On PostgreSQL, two replicas building digests for one recipient at
        // once must not both take a note: the second would wait for the first
        // and then overwrite its claim (the outer UPDATE re-checks only `id`).
        // Locked rows are skipped instead.
        let skip_locked = self.sql("", "FOR UPDATE SKIP LOCKED");
        let rows = sqlx::query(&format!(
            "UPDATE notifications SET claimed_until = $1, claim_token = $2, digest_lead = $3
             WHERE id IN (
               SELECT id FROM notifications
               WHERE tenant = $4 AND recipient = $5 AND urgency = 'general' AND id != $6
                 AND state IN ('deferred', 'due')
                 -- Not one that waits out its own retry delay (unless it rode in
                 -- the digest being resumed, and waits for it).
                 AND ($7 = 1 OR NOT (state = 'due' AND due_at > $8))
                 AND (claimed_until IS NULL OR claimed_until < $9 OR claim_token = $10
                      -- A digest being resumed takes back every note it carried,
                      -- even one still claimed by the process that died sending it.
                      OR ($11 = 1 AND digest_lead = $12))
                 -- Not one that rode in another digest, or whose own send was
                 -- cut short: that message may have gone out, and goes out
                 -- again only as it was (same content, same idempotency key).
                 AND (digest_lead IS NULL OR digest_lead = $13)
                 AND NOT EXISTS (SELECT 1 FROM notification_attempts a
                                 WHERE a.notification_id = notifications.id AND a.outcome IS NULL)
                 -- Resuming a digest cut short: exactly the notes it carried.
                 AND ($14 = 0 OR digest_lead = $15)
               ORDER BY created_at LIMIT $16 {skip_locked})
             RETURNING *",
        ))
        .bind(now + lease_ms)
        .bind(token)
        .bind(&lead.id)
        .bind(&lead.tenant)
        .bind(&lead.recipient)
        .bind(&lead.id)
        .bind(i64::from(resuming))
        .bind(now)
        .bind(now)
        .bind(token)
        .bind(i64::from(resuming))
        .bind(&lead.id)
        .bind(&lead.id)
        .bind(i64::from(resuming))
        .bind(&lead.id)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        let mut members = rows
            .iter()
            .map(record_from)
            .collect::<Result<Vec<_>, _>>()?;
        members.sort_by_key(|n| n.created_at);
        Ok(members)
    }

    /// Whether `lead` has a recorded delivery (its digest went out).
    /// When `lead` is looked at next, if a send of it was started and never
    /// finished (the host died during the channel's call, so whether it went
    /// out is unknown): `Some(due)`, `due` None when it is not scheduled.
    pub async fn interrupted_lead(
        &self,
        lead: &str,
    ) -> Result<Option<Option<Instant>>, StoreError> {
        Ok(sqlx::query_scalar::<_, Option<Instant>>(
            "SELECT n.due_at FROM notifications n
             WHERE n.id = $1 AND EXISTS (SELECT 1 FROM notification_attempts a
                                        WHERE a.notification_id = n.id AND a.outcome IS NULL)",
        )
        .bind(lead)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Closes the sends of `id` that a stopped host left open, as
    /// `interrupted`: their outcome is unknown, and the send is being resumed.
    pub async fn close_open_attempts(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notification_attempts SET outcome = 'interrupted', finished_at = $1,
               error = 'the host stopped during this send; whether it went out is unknown'
             WHERE notification_id = $2 AND outcome IS NULL",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Whether a delivered attempt of `lead` carried `member` (in its digest).
    pub async fn delivered_with(&self, lead: &str, member: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar::<_, i64>(self.sql(
            "SELECT 1 FROM notification_attempts a, json_each(a.carried) c
             WHERE a.notification_id = $1 AND a.outcome = 'delivered' AND c.value = $2",
            "SELECT 1 FROM notification_attempts a,
               json_array_elements_text(CAST(a.carried AS json)) AS c(value)
             WHERE a.notification_id = $1 AND a.outcome = 'delivered' AND c.value = $2",
        ))
        .bind(lead)
        .bind(member)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// Whether any of `ids` was acknowledged (an escalation chain stops then).
    pub async fn any_acknowledged(&self, ids: &[String]) -> Result<bool, StoreError> {
        for id in ids {
            let acked: Option<Option<i64>> =
                sqlx::query_scalar("SELECT acked_at FROM notifications WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
            if acked.flatten().is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Gives claims held under `token` back. `digest_failed`: they rode in a
    /// digest that could not go out, and leave it; otherwise (recipients that
    /// could not be started now) everything else, digest membership included,
    /// stays as it was.
    pub async fn release_claims(
        &self,
        ids: &[String],
        token: &str,
        digest_failed: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "UPDATE notifications SET claimed_until = NULL, claim_token = NULL,
               digest_lead = CASE WHEN $1 THEN NULL ELSE digest_lead END
             WHERE id IN (SELECT value FROM json_each($2)) AND claim_token = $3",
            "UPDATE notifications SET claimed_until = NULL, claim_token = NULL,
               digest_lead = CASE WHEN $1 THEN NULL ELSE digest_lead END
             WHERE id IN (SELECT value FROM json_array_elements_text(CAST($2 AS json)) AS j(value))
               AND claim_token = $3",
        ))
        .bind(digest_failed)
        .bind(serde_json::to_string(ids).expect("ids serialize"))
        .bind(token)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}
