//! The presence engine's durable state.
//!
//! Every change of signals runs the derivation (`crate::presence::derive`) in the
//! same transaction that stores them: the new effective state, its change-log
//! entry, the next due time and the status-outbox entries commit together or
//! not at all. So a webhook acknowledged after commit has had all its effects,
//! and a crash at any moment leaves nothing half-applied.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sqlx::AnyConnection;
use sqlx::Row;

use super::{Store, StoreError, WebhookCommit, lock_key, now_ms};
use crate::model::{
    Availability, Category, Instant, KeyedSignal, Presence, PresenceSignal, SignalSource,
};
use crate::presence;
use crate::presence::working_hours::{self, Schedule, WorkingHours};

/// One change of a person's effective presence; `seq` orders all changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = PresenceChange)]
pub struct Change {
    pub seq: i64,
    pub tenant: String,
    pub user: String,
    pub presence: Presence,
    pub at: Instant,
}

/// What a transaction did to presence: the changes, and what the engine's
/// workers need to hear about (so they are woken only when there is work).
#[derive(Debug, Default)]
pub struct Effects {
    pub changes: Vec<Change>,
    /// The earliest next due time among the people re-derived.
    pub next_due: Option<Instant>,
    pub pushes_queued: bool,
    pub webhooks_queued: bool,
}

impl Effects {
    pub(super) fn absorb(&mut self, other: Effects) {
        self.changes.extend(other.changes);
        self.next_due = match (self.next_due, other.next_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.pushes_queued |= other.pushes_queued;
        self.webhooks_queued |= other.webhooks_queued;
    }
}

/// What the derivation needs from outside the store.
#[derive(Debug, Clone, Default)]
pub struct EngineRules {
    /// Provider plugins that push statuses: only their connections get outbox entries.
    pub pushers: HashSet<String>,
    /// A call signal stops holding after this long unless refreshed.
    pub max_call_ms: i64,
    /// A new status push waits this long for later changes to coalesce into it.
    pub push_coalesce_ms: i64,
}

/// A status push claimed by a worker.
#[derive(Debug, Clone)]
pub struct PendingPush {
    pub tenant: String,
    pub connection: String,
    pub plugin: String,
    pub user: String,
    pub presence: Presence,
    pub revision: i64,
    pub attempts: u32,
}

/// The status outbox at a glance, for health.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct OutboxStats {
    pub pending: i64,
    pub oldest_due_at: Option<Instant>,
}

/// The key of the manual signal: one per person.
const MANUAL_KEY: &str = "manual";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn presence_json(p: &Presence) -> String {
    serde_json::to_string(p).expect("a presence serializes")
}

fn presence_from(json: &str) -> Result<Presence, StoreError> {
    serde_json::from_str(json).map_err(|e| corrupt("presence", e))
}

/// A provider event that repeats a status we pushed is our own echo.
fn same_text(a: Option<&str>, b: Option<&str>) -> bool {
    a.unwrap_or("").trim() == b.unwrap_or("").trim()
}

/// A person's settings as written by `PUT /api/users/{user}`: for each,
/// `None` leaves it as it is, `Some(None)` removes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserSettings<'a> {
    pub time_zone: Option<Option<&'a str>>,
    pub working_hours: Option<Option<&'a WorkingHours>>,
    pub days_off: Option<Option<&'a [chrono::NaiveDate]>>,
    pub quiet_hours: Option<Option<&'a crate::notify::windows::WindowsSpec>>,
}

/// One webhook's commit, queued for the group committer.
pub(super) struct WebhookJob {
    plugin: String,
    tenant: String,
    delivery_id: Option<String>,
    signals: Vec<KeyedSignal>,
    rules: EngineRules,
    reply: tokio::sync::oneshot::Sender<Result<(WebhookCommit, Effects), StoreError>>,
}

/// The most webhooks committed in one transaction.
const GROUP_COMMIT_MAX: usize = 64;

/// Group commit: webhooks waiting while a transaction commits go into the
/// next one together, so concurrent deliveries share one commit (one WAL
/// append, one lock hand-over) instead of queueing for one each. A lone
/// webhook is committed at once: nothing waits to fill a batch. Each caller
/// is answered only after its transaction committed. If a batch fails, its
/// webhooks are committed one by one, so one bad delivery fails alone.
pub(super) async fn group_commit(
    writer: sqlx::AnyPool,
    mut jobs: tokio::sync::mpsc::Receiver<WebhookJob>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT_MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() > 1 {
            match commit_batch_isolated(&writer, &batch).await {
                Ok(results) => {
                    for (job, result) in batch.into_iter().zip(results) {
                        // A caller that stopped waiting still had its webhook committed.
                        let _ = job.reply.send(Ok(result));
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, webhooks = batch.len(), "a group commit failed; committing its webhooks one by one");
                }
            }
        }
        for job in batch {
            let result = commit_batch_isolated(&writer, std::slice::from_ref(&job))
                .await
                .map(|mut r| r.remove(0));
            let _ = job.reply.send(result);
        }
    }
}

/// [`commit_batch`], with a panic (a bug, met on some webhook's values) kept
/// to its transaction, which rolls back: the group-commit worker lives on to
/// commit every other webhook, instead of taking the webhook path down.
async fn commit_batch_isolated(
    writer: &sqlx::AnyPool,
    batch: &[WebhookJob],
) -> Result<Vec<(WebhookCommit, Effects)>, StoreError> {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(commit_batch(writer, batch))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, webhooks = batch.len(), "committing webhooks panicked; rolled back");
            Err(StoreError::Panicked(what))
        })
}

async fn commit_batch(
    writer: &sqlx::AnyPool,
    batch: &[WebhookJob],
) -> Result<Vec<(WebhookCommit, Effects)>, StoreError> {
    let now = now_ms();
    let mut tx = begin_presence(writer).await?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        results.push(apply_webhook(&mut tx, job, now).await?);
    }
    tx.commit().await?;
    Ok(results)
}

/// Records one webhook's delivery and signals and re-derives the presence of
/// the people it names, inside the caller's transaction.
async fn apply_webhook(
    tx: &mut AnyConnection,
    job: &WebhookJob,
    now: Instant,
) -> Result<(WebhookCommit, Effects), StoreError> {
    let (plugin, tenant, rules) = (job.plugin.as_str(), job.tenant.as_str(), &job.rules);
    // A fault the tests inject: a bug met on one webhook's values.
    #[cfg(test)]
    assert_ne!(plugin, tests::PANICS, "a fault injected by the test");
    if let Some(id) = &job.delivery_id {
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (plugin, tenant, delivery_id, received_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(plugin)
        .bind(tenant)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok((WebhookCommit::Duplicate, Effects::default()));
        }
    }
    // Each person's surroundings are read once, before their signals are
    // written: writing signals changes none of them.
    let mut around: BTreeMap<String, Surroundings> = BTreeMap::new();
    let mut users = BTreeSet::new();
    for keyed in &job.signals {
        let user = &keyed.signal.user;
        if !around.contains_key(user) {
            around.insert(user.clone(), surroundings(tx, tenant, user).await?);
        }
        // Only a person with connections can have had a status pushed.
        if keyed.signal.source == SignalSource::ProviderStatus
            && around[user].connections > 0
            && is_echo(tx, tenant, plugin, &keyed.signal).await?
        {
            tracing::debug!(user = %user, "status event repeats our own push; ignored");
            continue;
        }
        upsert_signal(tx, tenant, keyed, now, rules).await?;
        users.insert(user.clone());
    }
    let mut effects = Effects::default();
    for user in users {
        let surroundings = &around[&user];
        effects.absorb(derive_and_record(tx, tenant, &user, now, rules, surroundings).await?);
    }
    Ok((WebhookCommit::Recorded, effects))
}

impl Store {
    /// Records a verified webhook's delivery id and its signals, and derives the
    /// affected people's presence, in one transaction; a delivery id seen before
    /// changes nothing. Provider statuses that merely reflect our own last push
    /// through that provider are dropped (echo suppression).
    pub async fn commit_webhook(
        &self,
        plugin: &str,
        tenant: &str,
        delivery_id: Option<&str>,
        signals: &[KeyedSignal],
        rules: &EngineRules,
    ) -> Result<(WebhookCommit, Effects), StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = WebhookJob {
            plugin: plugin.to_string(),
            tenant: tenant.to_string(),
            delivery_id: delivery_id.map(str::to_string),
            // PostgreSQL's text cannot hold NUL: a provider's id or key with
            // one is kept with U+FFFD, alike on both backends, rather than
            // failing the delivery (which the provider would send forever).
            signals: signals.iter().map(without_nul_ids).collect(),
            rules: rules.clone(),
            reply,
        };
        self.webhooks
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Sets (`Some`) or removes (`None`) a person's manual presence.
    pub async fn set_manual(
        &self,
        tenant: &str,
        user: &str,
        manual: Option<PresenceSignal>,
        rules: &EngineRules,
    ) -> Result<Effects, StoreError> {
        let now = now_ms();
        let signal = manual.unwrap_or(PresenceSignal {
            user: user.to_string(),
            source: SignalSource::Manual,
            availability: Availability::Available,
            status_text: None,
            status_emoji: None,
            starts: None,
            expires: None,
            clears: true,
            category: None,
        });
        let keyed = KeyedSignal {
            key: MANUAL_KEY.into(),
            origin: "api".into(),
            signal,
        };
        let mut tx = begin_presence(&self.writer).await?;
        upsert_signal(&mut tx, tenant, &keyed, now, rules).await?;
        let effects = recompute(&mut tx, tenant, user, now, rules).await?;
        tx.commit().await?;
        Ok(effects)
    }

    /// Re-derives everyone whose presence was due to change by `now` (a signal
    /// started or expired), at most `limit` people per call.
    pub async fn apply_due(
        &self,
        now: Instant,
        limit: u32,
        rules: &EngineRules,
    ) -> Result<Effects, StoreError> {
        let mut tx = begin_presence(&self.writer).await?;
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT tenant, user_id FROM presence_state WHERE next_due_at <= $1
             ORDER BY next_due_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut effects = Effects::default();
        for (tenant, user) in due {
            effects.absorb(recompute(&mut tx, &tenant, &user, now, rules).await?);
        }
        tx.commit().await?;
        Ok(effects)
    }

    /// The earliest moment someone's presence changes on its own.
    pub async fn next_presence_due(&self) -> Result<Option<Instant>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT MIN(next_due_at) FROM presence_state")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The signals of `user` holding at `now` and the next one to start (what
    /// the derivation reads; later ones wait their turn), newest first.
    pub async fn signals(
        &self,
        tenant: &str,
        user: &str,
        now: Instant,
    ) -> Result<Vec<KeyedSignal>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        live_signals(&mut conn, tenant, user, now).await
    }

    /// A person's effective presence as last derived, and when it next changes.
    pub async fn presence_state(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<Option<(Presence, Option<Instant>)>, StoreError> {
        let row = sqlx::query(
            "SELECT presence, next_due_at FROM presence_state WHERE tenant = $1 AND user_id = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let json: String = r.try_get("presence")?;
            Ok((presence_from(&json)?, r.try_get("next_due_at")?))
        })
        .transpose()
    }

    /// Changes after `after` (a `seq`), oldest first, optionally of one tenant.
    pub async fn changes_since(
        &self,
        tenant: Option<&str>,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, tenant, user_id, presence, changed_at FROM presence_changes
             WHERE seq > $1 AND ($2 IS NULL OR tenant = $3) ORDER BY seq LIMIT $4",
        )
        .bind(after)
        .bind(tenant)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let json: String = r.try_get("presence")?;
                Ok(Change {
                    seq: r.try_get("seq")?,
                    tenant: r.try_get("tenant")?,
                    user: r.try_get("user_id")?,
                    presence: presence_from(&json)?,
                    at: r.try_get("changed_at")?,
                })
            })
            .collect()
    }

    /// The newest change's seq, if any.
    pub async fn latest_change(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MAX(seq) FROM presence_changes")
            .fetch_one(&self.pool)
            .await?)
    }

    /// The oldest change still replayable, if any.
    pub async fn oldest_change(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(seq) FROM presence_changes")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Forgets changes older than `before` and push-log entries older than an hour.
    pub async fn prune_presence(&self, before: Instant) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM presence_changes WHERE changed_at < $1")
            .bind(before)
            .execute(&self.writer)
            .await?;
        // Synced calendar events long over (their keys are the sync's own).
        sqlx::query(
            "DELETE FROM presence_signals WHERE source = 'calendar' AND signal_key LIKE 'cal/%'
               AND expires_at < $1",
        )
        .bind(before)
        .execute(&self.writer)
        .await?;
        sqlx::query("DELETE FROM status_push_log WHERE pushed_at < $1")
            .bind(now_ms() - 3_600_000)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    // --- per-person settings ---------------------------------------------------

    /// Sets a person's time zone and working hours (none: no working-hours
    /// signal), and re-derives their presence, which both shape.
    pub async fn set_user_settings(
        &self,
        tenant: &str,
        user: &str,
        settings: &UserSettings<'_>,
        rules: &EngineRules,
    ) -> Result<Effects, StoreError> {
        let now = now_ms();
        let mut tx = begin_presence(&self.writer).await?;
        fn json<T: serde::Serialize + ?Sized>(v: Option<Option<&T>>) -> Option<String> {
            v.flatten()
                .map(|v| serde_json::to_string(v).expect("settings serialize"))
        }
        sqlx::query(
            "INSERT INTO users (tenant, user_id, time_zone, working_hours, days_off, quiet_hours, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant, user_id) DO UPDATE SET
               time_zone = CASE WHEN $8 THEN excluded.time_zone ELSE users.time_zone END,
               working_hours = CASE WHEN $9 THEN excluded.working_hours ELSE users.working_hours END,
               days_off = CASE WHEN $10 THEN excluded.days_off ELSE users.days_off END,
               quiet_hours = CASE WHEN $11 THEN excluded.quiet_hours ELSE users.quiet_hours END,
               updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(user)
        .bind(settings.time_zone.flatten())
        .bind(json(settings.working_hours))
        .bind(json(settings.days_off))
        .bind(json(settings.quiet_hours))
        .bind(now)
        .bind(settings.time_zone.is_some())
        .bind(settings.working_hours.is_some())
        .bind(settings.days_off.is_some())
        .bind(settings.quiet_hours.is_some())
        .execute(&mut *tx)
        .await?;
        let effects = recompute(&mut tx, tenant, user, now, rules).await?;
        tx.commit().await?;
        Ok(effects)
    }

    pub async fn user_time_zone(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT time_zone FROM users WHERE tenant = $1 AND user_id = $2")
                .bind(tenant)
                .bind(user)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    // --- the status outbox -----------------------------------------------------

    /// Claims up to `limit` due pushes for `lease_ms`; a worker that dies leaves
    /// them to be claimed again when the lease runs out.
    pub async fn claim_pushes(
        &self,
        now: Instant,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<PendingPush>, StoreError> {
        let rows = sqlx::query(self.sql(
            "UPDATE status_outbox SET claimed_until = $1
             WHERE (tenant, connection) IN (
               SELECT tenant, connection FROM status_outbox
               WHERE due_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $3)
               ORDER BY due_at LIMIT $4)
             RETURNING tenant, connection, plugin, user_id, presence, revision, attempts",
            // Replicas claiming at once skip each other's rows.
            "UPDATE status_outbox SET claimed_until = $1
             WHERE (tenant, connection) IN (
               SELECT tenant, connection FROM status_outbox
               WHERE due_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $3)
               ORDER BY due_at LIMIT $4 FOR UPDATE SKIP LOCKED)
             RETURNING tenant, connection, plugin, user_id, presence, revision, attempts",
        ))
        .bind(now + lease_ms)
        .bind(now)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await?;
        rows.iter()
            .map(|r| {
                let json: String = r.try_get("presence")?;
                let attempts: i64 = r.try_get("attempts")?;
                Ok(PendingPush {
                    tenant: r.try_get("tenant")?,
                    connection: r.try_get("connection")?,
                    plugin: r.try_get("plugin")?,
                    user: r.try_get("user_id")?,
                    presence: presence_from(&json)?,
                    revision: r.try_get("revision")?,
                    attempts: attempts.max(0) as u32,
                })
            })
            .collect()
    }

    /// How many status pushes wait, and the due time of the oldest.
    pub async fn outbox_stats(&self, _now: Instant) -> Result<OutboxStats, StoreError> {
        let (pending, oldest_due_at): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(due_at) FROM status_outbox")
                .fetch_one(&self.pool)
                .await?;
        Ok(OutboxStats {
            pending,
            oldest_due_at,
        })
    }

    /// The earliest due push (a claimed one once its claim lapses).
    pub async fn next_push_due(&self) -> Result<Option<Instant>, StoreError> {
        Ok(sqlx::query_scalar(self.sql(
            "SELECT MIN(MAX(due_at, COALESCE(claimed_until, 0))) FROM status_outbox",
            "SELECT MIN(GREATEST(due_at, COALESCE(claimed_until, 0))) FROM status_outbox",
        ))
        .fetch_one(&self.pool)
        .await?)
    }

    /// Pushes sent through `connection` since `since`: how many, and the oldest.
    pub async fn pushes_since(
        &self,
        tenant: &str,
        connection: &str,
        since: Instant,
    ) -> Result<(u32, Option<Instant>), StoreError> {
        let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(pushed_at) FROM status_push_log
             WHERE tenant = $1 AND connection = $2 AND pushed_at >= $3",
        )
        .bind(tenant)
        .bind(connection)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok((count.max(0) as u32, oldest))
    }

    /// What was last pushed through `connection`.
    pub async fn last_pushed(
        &self,
        tenant: &str,
        connection: &str,
    ) -> Result<Option<Presence>, StoreError> {
        let json: Option<String> = sqlx::query_scalar(
            "SELECT presence FROM status_pushed WHERE tenant = $1 AND connection = $2",
        )
        .bind(tenant)
        .bind(connection)
        .fetch_optional(&self.pool)
        .await?;
        json.as_deref().map(presence_from).transpose()
    }

    /// Notes the status about to be sent through a claimed push, so that the
    /// provider's announcement of it is recognised as our echo even when it
    /// arrives before the provider's API call returns.
    pub async fn mark_sending(
        &self,
        push: &PendingPush,
        text: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE status_outbox SET sending_text = $1 WHERE tenant = $2 AND connection = $3",
        )
        .bind(text.unwrap_or(""))
        .bind(&push.tenant)
        .bind(&push.connection)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Finishes a claimed push: `sent` is what went out (none when nothing needed
    /// sending). The entry goes away unless a newer state replaced it meanwhile.
    pub async fn complete_push(
        &self,
        push: &PendingPush,
        sent: Option<&Presence>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.writer.begin().await?;
        if let Some(sent) = sent {
            sqlx::query(
                "INSERT INTO status_push_log (tenant, connection, pushed_at) VALUES ($1, $2, $3)",
            )
            .bind(&push.tenant)
            .bind(&push.connection)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO status_pushed (tenant, connection, presence, status_text, status_emoji, revision, pushed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (tenant, connection) DO UPDATE SET presence = excluded.presence,
                   status_text = excluded.status_text, status_emoji = excluded.status_emoji,
                   revision = excluded.revision, pushed_at = excluded.pushed_at",
            )
            .bind(&push.tenant)
            .bind(&push.connection)
            .bind(presence_json(sent))
            .bind(&sent.status_text)
            .bind(&sent.status_emoji)
            .bind(push.revision)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "DELETE FROM status_outbox WHERE tenant = $1 AND connection = $2 AND revision = $3",
        )
        .bind(&push.tenant)
        .bind(&push.connection)
        .bind(push.revision)
        .execute(&mut *tx)
        .await?;
        // A newer state arrived while this one was out: it goes next, unclaimed.
        sqlx::query(
            "UPDATE status_outbox SET claimed_until = NULL, sending_text = NULL
             WHERE tenant = $1 AND connection = $2",
        )
        .bind(&push.tenant)
        .bind(&push.connection)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts a claimed push back for later (a failure, or the hourly budget spent).
    pub async fn defer_push(
        &self,
        push: &PendingPush,
        due_at: Instant,
        attempts: u32,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "UPDATE status_outbox SET due_at = MAX(due_at, $1), attempts = $2, last_error = $3,
               claimed_until = NULL, sending_text = NULL
             WHERE tenant = $4 AND connection = $5",
            "UPDATE status_outbox SET due_at = GREATEST(due_at, $1), attempts = $2, last_error = $3,
               claimed_until = NULL, sending_text = NULL
             WHERE tenant = $4 AND connection = $5",
        ))
        .bind(due_at)
        .bind(i64::from(attempts))
        .bind(error)
        .bind(&push.tenant)
        .bind(&push.connection)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Pending pushes for a person, for the API's view.
    pub async fn pending_pushes(
        &self,
        tenant: &str,
        user: &str,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let rows = sqlx::query(
            "SELECT connection, plugin, due_at, attempts, last_error FROM status_outbox
             WHERE tenant = $1 AND user_id = $2 ORDER BY connection",
        )
        .bind(tenant)
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "connection": r.try_get::<String, _>("connection")?,
                    "plugin": r.try_get::<String, _>("plugin")?,
                    "due_at": r.try_get::<i64, _>("due_at")?,
                    "attempts": r.try_get::<i64, _>("attempts")?,
                    "last_error": r.try_get::<Option<String>, _>("last_error")?,
                }))
            })
            .collect()
    }
}

/// Whether a provider-status signal from `plugin` repeats what we last pushed
/// through one of that person's connections to `plugin`.
async fn is_echo(
    conn: &mut AnyConnection,
    tenant: &str,
    plugin: &str,
    signal: &PresenceSignal,
) -> Result<bool, StoreError> {
    let pushed: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT p.status_text FROM status_pushed p
         JOIN connections c ON c.tenant = p.tenant AND c.name = p.connection
         WHERE c.tenant = $1 AND c.user_id = $2 AND c.plugin = $3
         UNION ALL
         SELECT o.sending_text FROM status_outbox o
         JOIN connections c ON c.tenant = o.tenant AND c.name = o.connection
         WHERE c.tenant = $4 AND c.user_id = $5 AND c.plugin = $6 AND o.claimed_until IS NOT NULL",
    )
    .bind(tenant)
    .bind(&signal.user)
    .bind(plugin)
    .bind(tenant)
    .bind(&signal.user)
    .bind(plugin)
    .fetch_all(&mut *conn)
    .await?;
    let text = if signal.clears {
        None
    } else {
        signal.status_text.as_deref()
    };
    Ok(pushed.iter().any(|p| same_text(p.as_deref(), text)))
}

pub(super) async fn upsert_signal(
    conn: &mut AnyConnection,
    tenant: &str,
    keyed: &KeyedSignal,
    now: Instant,
    rules: &EngineRules,
) -> Result<(), StoreError> {
    let s = &keyed.signal;
    // A withdrawn statement is kept as one that expired now: the person stays
    // known, and the source's last word stays readable.
    let mut expires = if s.clears { Some(now) } else { s.expires };
    if s.source == SignalSource::Call && !s.clears && rules.max_call_ms > 0 {
        let cap = s
            .starts
            .unwrap_or(now)
            .max(now)
            .saturating_add(rules.max_call_ms);
        expires = Some(expires.map_or(cap, |e| e.min(cap)));
    }
    sqlx::query(
        "INSERT INTO presence_signals (tenant, user_id, source, signal_key, availability, status_text,
           status_emoji, category, starts_at, expires_at, origin, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (tenant, user_id, source, signal_key) DO UPDATE SET
           availability = excluded.availability, status_text = excluded.status_text,
           status_emoji = excluded.status_emoji, category = excluded.category,
           starts_at = excluded.starts_at, expires_at = excluded.expires_at,
           origin = excluded.origin, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(&s.user)
    .bind(s.source.as_str())
    .bind(&keyed.key)
    .bind(s.availability.as_str())
    .bind(s.status_text.as_deref().map(without_nul))
    .bind(s.status_emoji.as_deref().map(without_nul))
    .bind(s.category.as_ref().map(Category::to_storage))
    .bind(s.starts)
    .bind(expires)
    .bind(&keyed.origin)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The signals of `user` holding at `now`, their working hours included.
async fn live_signals(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
    now: Instant,
) -> Result<Vec<KeyedSignal>, StoreError> {
    let mut signals = stored_signals(conn, tenant, user, now).await?;
    let settings = surroundings(conn, tenant, user).await?.settings;
    add_working_hours(&mut signals, user, &settings, now)?;
    Ok(signals)
}

/// A person's `time_zone`, `working_hours` and `days_off` as stored (all
/// none without a row).
type Settings = (Option<String>, Option<String>, Option<String>);

/// Working hours are not stored as a signal: they are derived from the
/// person's settings for the moment asked about.
fn add_working_hours(
    signals: &mut Vec<KeyedSignal>,
    user: &str,
    (time_zone, hours, days_off): &Settings,
    now: Instant,
) -> Result<(), StoreError> {
    if let Some(schedule) = schedule_of(hours.as_deref(), days_off.as_deref())? {
        signals.extend(working_hours::signal(
            user,
            &schedule,
            time_zone.as_deref(),
            now,
        ));
    }
    Ok(())
}

/// The stored signals of `user` holding at `now` and the next to start.
async fn stored_signals(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
    now: Instant,
) -> Result<Vec<KeyedSignal>, StoreError> {
    // The signals holding now, and the one to start next (all the derivation
    // and the next due time need): a synced calendar holds thousands of future
    // events, which are not read until their turn comes.
    let rows = sqlx::query(
        "SELECT * FROM (
           SELECT source, signal_key, origin, availability, status_text, status_emoji, category,
             starts_at, expires_at, updated_at, rowid AS written
           FROM presence_signals
           WHERE tenant = $1 AND user_id = $2 AND (expires_at IS NULL OR expires_at > $3)
             AND (starts_at IS NULL OR starts_at <= $4)
           UNION ALL
           SELECT * FROM (
             SELECT source, signal_key, origin, availability, status_text, status_emoji, category,
               starts_at, expires_at, updated_at, rowid AS written
             FROM presence_signals
             WHERE tenant = $5 AND user_id = $6 AND starts_at > $7
             ORDER BY starts_at LIMIT 1) AS next_to_start) AS live
         ORDER BY updated_at DESC, written DESC",
    )
    .bind(tenant)
    .bind(user)
    .bind(now)
    .bind(now)
    .bind(tenant)
    .bind(user)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let source: String = r.try_get("source")?;
            let availability: String = r.try_get("availability")?;
            let category: Option<String> = r.try_get("category")?;
            Ok(KeyedSignal {
                key: r.try_get("signal_key")?,
                origin: r.try_get("origin")?,
                signal: PresenceSignal {
                    user: user.to_string(),
                    source: SignalSource::parse(&source)
                        .ok_or_else(|| corrupt("signal source", &source))?,
                    availability: Availability::parse(&availability)
                        .ok_or_else(|| corrupt("availability", &availability))?,
                    status_text: r.try_get("status_text")?,
                    status_emoji: r.try_get("status_emoji")?,
                    starts: r.try_get("starts_at")?,
                    expires: r.try_get("expires_at")?,
                    clears: false,
                    category: category.as_deref().map(Category::from_storage),
                },
            })
        })
        .collect()
}

/// A person's working hours with their days off, from their stored columns.
pub(crate) fn schedule_of(
    hours: Option<&str>,
    days_off: Option<&str>,
) -> Result<Option<Schedule>, StoreError> {
    let Some(hours) = hours else {
        return Ok(None);
    };
    let hours: WorkingHours =
        serde_json::from_str(hours).map_err(|e| corrupt("users.working_hours", e))?;
    let schedule = Schedule::parse(&hours).map_err(|e| corrupt("users.working_hours", e))?;
    let days_off: Vec<chrono::NaiveDate> = days_off
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| corrupt("users.days_off", e))?
        .unwrap_or_default();
    schedule
        .with_days_off(&days_off)
        .map(Some)
        .map_err(|e| corrupt("users.days_off", e))
}

/// `keyed` with NUL made U+FFFD in the person, the key and the origin.
fn without_nul_ids(keyed: &KeyedSignal) -> KeyedSignal {
    let mut keyed = keyed.clone();
    for text in [&mut keyed.key, &mut keyed.origin, &mut keyed.signal.user] {
        if text.contains('\0') {
            *text = without_nul(text);
        }
    }
    keyed
}

/// `text` with any NUL made U+FFFD: PostgreSQL's text cannot hold NUL, and a
/// provider's status saying one must not fail its webhook on one backend only.
fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Begins a transaction that derives presence. On PostgreSQL it first takes
/// the presence lock, so such transactions take turns across replicas as they
/// do on SQLite's one writer: a person's presence is derived from every
/// signal committed before, and change numbers (the SSE event ids a
/// subscriber resumes from) commit in order. Taken before any write, it
/// cannot deadlock with the row locks those writes take.
pub(super) async fn begin_presence(
    writer: &sqlx::AnyPool,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    let mut tx = writer.begin().await?;
    lock_key(&mut tx, PRESENCE_LOCK).await?;
    Ok(tx)
}

/// The advisory lock of [`begin_presence`].
const PRESENCE_LOCK: &str = "presence";

/// What deriving one person's presence reads besides their signals, read in
/// one round trip: the presence stored, their settings, and whether there
/// are connections to push to and endpoints to tell.
struct Surroundings {
    /// The presence stored and its next due time.
    stored: Option<(String, Option<Instant>)>,
    settings: Settings,
    /// The person's connections (each may push their status).
    connections: i64,
    /// The tenant's enabled presence webhook endpoints.
    endpoints: i64,
}

/// Reads [`Surroundings`] of `user`; inside the caller's transaction.
async fn surroundings(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
) -> Result<Surroundings, StoreError> {
    let row = sqlx::query(
        "SELECT
           (SELECT presence FROM presence_state WHERE tenant = $1 AND user_id = $2) AS presence,
           (SELECT next_due_at FROM presence_state WHERE tenant = $1 AND user_id = $2) AS next_due_at,
           (SELECT time_zone FROM users WHERE tenant = $1 AND user_id = $2) AS time_zone,
           (SELECT working_hours FROM users WHERE tenant = $1 AND user_id = $2) AS working_hours,
           (SELECT days_off FROM users WHERE tenant = $1 AND user_id = $2) AS days_off,
           (SELECT COUNT(*) FROM connections WHERE tenant = $1 AND user_id = $2) AS connections,
           (SELECT COUNT(*) FROM presence_webhooks WHERE tenant = $1 AND enabled = 1) AS endpoints",
    )
    .bind(tenant)
    .bind(user)
    .fetch_one(&mut *conn)
    .await?;
    let presence: Option<String> = row.try_get("presence")?;
    Ok(Surroundings {
        stored: presence
            .map(|p| Ok::<_, sqlx::Error>((p, row.try_get("next_due_at")?)))
            .transpose()?,
        settings: (
            row.try_get("time_zone")?,
            row.try_get("working_hours")?,
            row.try_get("days_off")?,
        ),
        connections: row.try_get("connections")?,
        endpoints: row.try_get("endpoints")?,
    })
}

/// Derives `user`'s presence at `now`; when it differs from the stored one,
/// records the change and queues a status push per pushing connection.
pub(super) async fn recompute(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
    now: Instant,
    rules: &EngineRules,
) -> Result<Effects, StoreError> {
    let surroundings = surroundings(conn, tenant, user).await?;
    derive_and_record(conn, tenant, user, now, rules, &surroundings).await
}

/// [`recompute`] with `user`'s surroundings read before.
async fn derive_and_record(
    conn: &mut AnyConnection,
    tenant: &str,
    user: &str,
    now: Instant,
    rules: &EngineRules,
    surroundings: &Surroundings,
) -> Result<Effects, StoreError> {
    let mut signals = stored_signals(conn, tenant, user, now).await?;
    add_working_hours(&mut signals, user, &surroundings.settings, now)?;
    let derived = presence::derive(user, &signals, now);
    let next_due = presence::next_change(&signals, now);
    let json = presence_json(&derived);
    if let Some((presence, due)) = &surroundings.stored
        && *presence == json
    {
        let due = *due;
        // Unchanged: at most the next due time moves (a write saved when not).
        if due != next_due {
            sqlx::query(
                "UPDATE presence_state SET next_due_at = $1 WHERE tenant = $2 AND user_id = $3",
            )
            .bind(next_due)
            .bind(tenant)
            .bind(user)
            .execute(&mut *conn)
            .await?;
        }
        return Ok(Effects {
            next_due,
            ..Effects::default()
        });
    }
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO presence_changes (tenant, user_id, presence, changed_at) VALUES ($1, $2, $3, $4)
         RETURNING seq",
    )
    .bind(tenant)
    .bind(user)
    .bind(&json)
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO presence_state (tenant, user_id, presence, revision, next_due_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant, user_id) DO UPDATE SET presence = excluded.presence,
           revision = excluded.revision, next_due_at = excluded.next_due_at,
           updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(user)
    .bind(&json)
    .bind(seq)
    .bind(next_due)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let connections: Vec<(String, String)> = if surroundings.connections > 0 {
        sqlx::query_as(
            "SELECT name, plugin FROM connections WHERE tenant = $1 AND user_id = $2 ORDER BY name",
        )
        .bind(tenant)
        .bind(user)
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    let mut pushes_queued = false;
    for (name, plugin) in connections {
        if !rules.pushers.contains(&plugin) {
            continue;
        }
        pushes_queued = true;
        // One entry per connection: the newest state replaces an unsent older
        // one and keeps its due time, so a burst of changes goes out as one
        // push of the latest, and a deferral (the hourly budget, a backoff) holds.
        sqlx::query(
            "INSERT INTO status_outbox (tenant, connection, plugin, user_id, presence, revision, due_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant, connection) DO UPDATE SET presence = excluded.presence,
               revision = excluded.revision",
        )
        .bind(tenant)
        .bind(&name)
        .bind(&plugin)
        .bind(user)
        .bind(&json)
        .bind(seq)
        .bind(now + rules.push_coalesce_ms)
        .execute(&mut *conn)
        .await?;
    }
    let change = Change {
        seq,
        tenant: tenant.to_string(),
        user: user.to_string(),
        presence: derived,
        at: now,
    };
    let webhooks_queued =
        surroundings.endpoints > 0 && super::presence_webhooks::enqueue(conn, &change).await?;
    Ok(Effects {
        changes: vec![change],
        next_due,
        pushes_queued,
        webhooks_queued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MasterKey;

    /// Webhooks of this plugin panic while being committed (see `apply_webhook`).
    pub(super) const PANICS: &str = "panics-on-commit";

    fn busy(user: &str) -> KeyedSignal {
        KeyedSignal {
            key: "slack".into(),
            origin: "slack".into(),
            signal: PresenceSignal {
                user: user.into(),
                source: SignalSource::ProviderStatus,
                availability: Availability::Busy,
                status_text: Some("Ceremony prep".into()),
                status_emoji: None,
                starts: None,
                expires: None,
                clears: false,
                category: None,
            },
        }
    }

    /// A panic while committing (a bug met on some webhook's values) fails
    /// that webhook alone: the rest of its group commit, and every webhook
    /// after it, are committed, and nothing of the panicking one is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_while_committing_fails_its_webhook_alone_and_the_worker_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let key = MasterKey::load_or_create(None, dir.path()).unwrap();
        let store = Store::open(&url, key).await.unwrap();
        let rules = EngineRules {
            pushers: HashSet::new(),
            max_call_ms: 4 * 3_600_000,
            push_coalesce_ms: 1000,
        };
        // Sent at once, so most share a group commit with a panicking one
        // (which then fails and is committed again one by one).
        let faulty = |i: usize| i % 10 == 3;
        let mut commits = tokio::task::JoinSet::new();
        for i in 0..60 {
            let (store, rules) = (store.clone(), rules.clone());
            commits.spawn(async move {
                let plugin = if faulty(i) { PANICS } else { "slack" };
                let signals = [busy(&format!("U{i}"))];
                let id = format!("d{i}");
                let result = store
                    .commit_webhook(plugin, "t", Some(&id), &signals, &rules)
                    .await;
                (i, result)
            });
        }
        while let Some(done) = commits.join_next().await {
            match done.unwrap() {
                (i, Err(StoreError::Panicked(what))) if faulty(i) => {
                    assert!(what.contains("injected"), "{what}")
                }
                (i, Ok((WebhookCommit::Recorded, _))) if !faulty(i) => {}
                (i, other) => panic!("webhook {i}: {:?}", other.map(|r| r.0)),
            }
        }
        let now = now_ms();
        for i in 0..60 {
            let kept = store.signals("t", &format!("U{i}"), now).await.unwrap();
            assert_eq!(kept.len(), usize::from(!faulty(i)), "U{i}: {kept:?}");
        }
        let deliveries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            deliveries, 54,
            "the panicking webhooks' delivery ids are not kept"
        );
        // The worker lives on, and a failed delivery may come again.
        let again = store
            .commit_webhook("slack", "t", Some("d3"), &[busy("U3")], &rules)
            .await
            .unwrap();
        assert_eq!(again.0, WebhookCommit::Recorded);
    }
}
