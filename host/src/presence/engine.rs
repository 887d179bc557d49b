//! The presence engine's moving parts: the change fan-out, the scheduler that
//! applies due transitions, and the outbox worker that pushes statuses out.
//!
//! Nothing here polls every person. The store keeps a due-time index (each
//! person's next start or expiry), so the scheduler sleeps until the earliest
//! one, or until a commit wakes it; after a restart it simply reads the index
//! again and applies whatever came due while the host was down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::health::Outcome;
use crate::health::breaker::Admission;
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, broadcast};
use tracing::Instrument;

use crate::App;
use crate::cluster::Work;
use crate::model::{Feature, PluginFault, Presence};
use crate::plugins::World;
use crate::presence::render;
use crate::store::now_ms;
use crate::store::presence::{Change, Effects, EngineRules, PendingPush};

/// Live changes buffered per subscriber before it must catch up from the store.
const BROADCAST_CAPACITY: usize = 4096;
/// The longest the scheduler sleeps without looking at the index again.
const MAX_IDLE: Duration = Duration::from_secs(30);
/// How often old changes and push-log entries are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// People re-derived per scheduler pass.
const DUE_BATCH: u32 = 500;
/// A claimed push not finished within this long is claimed again.
const PUSH_LEASE_MS: i64 = 60_000;
/// Pushes claimed per worker pass.
const PUSH_BATCH: u32 = 32;
/// Retry backoff: full jitter over `BASE * 2^attempt`, capped.
const BACKOFF_BASE_MS: i64 = 1_000;
const BACKOFF_CAP_MS: i64 = 10 * 60_000;
/// A connection whose token the provider refused is retried this rarely.
const REFUSED_RETRY_MS: i64 = 3_600_000;
/// A refused push waits this long once the connection's token was refreshed.
const REFRESHED_RETRY_MS: i64 = 1_000;

/// The engine's shared handles, owned by [`App`].
pub struct Engine {
    changes: broadcast::Sender<Arc<Change>>,
    scheduler_wake: Notify,
    outbox_wake: Notify,
    pub(crate) webhooks_wake: Arc<Notify>,
    /// Wakes the notification router (a notification was submitted).
    pub(crate) notifications_wake: Notify,
    /// Wakes the calendar sync worker (a provider asked for a sync).
    pub(crate) calendar_wake: Notify,
    /// When the scheduler means to wake next; `i64::MAX` while it is awake, so
    /// that anything committed meanwhile wakes it again.
    scheduler_planned: AtomicI64,
    /// Provider features by component hash: `describe` is asked once per
    /// component, by one caller while the others wait for its answer (a
    /// failed answer is asked again by the next).
    features: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Vec<Feature>>>>>,
    /// The other replicas, told of work they could pick up (PostgreSQL).
    pub(crate) peers: crate::cluster::Peers,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            changes: broadcast::channel(BROADCAST_CAPACITY).0,
            scheduler_wake: Notify::new(),
            outbox_wake: Notify::new(),
            webhooks_wake: Arc::new(Notify::new()),
            notifications_wake: Notify::new(),
            calendar_wake: Notify::new(),
            scheduler_planned: AtomicI64::new(i64::MAX),
            features: Mutex::new(HashMap::new()),
            peers: Default::default(),
        }
    }
}

impl Engine {
    /// Live changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Wakes the webhook sender (an endpoint was enabled again).
    pub fn wake_webhooks(&self) {
        self.webhooks_wake.notify_one();
    }

    /// Announces a commit's changes to subscribers, and wakes the workers that
    /// have something new to do: the outbox when pushes were queued, the webhook
    /// sender when messages were, the scheduler when a due time came earlier
    /// than it planned to wake.
    pub fn publish(&self, effects: Effects) {
        if !effects.changes.is_empty() {
            self.peers.announce(Work::Presence);
            self.peers.published(&effects.changes);
        }
        self.feed(effects.changes);
        if effects.pushes_queued {
            self.outbox_wake.notify_one();
            self.peers.announce(Work::Outbox);
        }
        if effects.webhooks_queued {
            self.webhooks_wake.notify_one();
            self.peers.announce(Work::Webhooks);
        }
        if effects
            .next_due
            .is_some_and(|due| due < self.scheduler_planned.load(Ordering::Acquire))
        {
            self.scheduler_wake.notify_one();
            // The others' schedulers may mean to sleep past it too. A due time
            // this replica already plans to be awake for needs no one else:
            // any replica's scheduler applies everyone's.
            self.peers.announce(Work::Scheduler);
        }
    }

    /// Hands committed changes to this replica's subscribers.
    pub(crate) fn feed(&self, changes: Vec<Change>) {
        for change in changes {
            // No subscriber is not an error: the change is in the store.
            let _ = self.changes.send(Arc::new(change));
        }
    }

    /// Wakes the notification router, here and on the other replicas (a
    /// notification was submitted, or one waiting may go now).
    pub fn wake_notifications(&self) {
        self.notifications_wake.notify_one();
        self.peers.announce(Work::Notifications);
    }

    /// Wakes the calendar sync worker, here and on the other replicas.
    pub fn wake_calendar(&self) {
        self.calendar_wake.notify_one();
        self.peers.announce(Work::Calendar);
    }

    /// Wakes this replica's worker for `work` another replica announced.
    pub(crate) fn wake_local(&self, work: Work) {
        match work {
            // Fed from the change log by the listener.
            Work::Presence => {}
            Work::Outbox => self.outbox_wake.notify_one(),
            Work::Webhooks => self.webhooks_wake.notify_one(),
            Work::Notifications => self.notifications_wake.notify_one(),
            Work::Calendar => self.calendar_wake.notify_one(),
            Work::Scheduler => self.scheduler_wake.notify_one(),
        }
    }
}

/// The rules the store's derivation needs: which plugins push, and the call cap.
pub async fn rules(app: &App) -> EngineRules {
    let mut pushers = std::collections::HashSet::new();
    for (name, plugin) in app.registry.all().iter() {
        if plugin.world() != World::Provider {
            continue;
        }
        let cell = app
            .engine
            .features
            .lock()
            .expect("features lock")
            .entry(plugin.component_sha256.clone())
            .or_default()
            .clone();
        let described = cell
            .get_or_try_init(|| async {
                app.runtime
                    .describe(&plugin.pre, &plugin.grants)
                    .await
                    .map(|info| info.features)
            })
            .await;
        let features = match described {
            Ok(features) => features.as_slice(),
            Err(e) => {
                tracing::warn!(plugin = %name, error = %e, "describe failed; the plugin gets no status pushes");
                &[]
            }
        };
        if features.contains(&Feature::PushStatus) {
            pushers.insert(name.clone());
        }
    }
    EngineRules {
        pushers,
        max_call_ms: i64::from(app.config.presence.max_call_minutes) * 60_000,
        push_coalesce_ms: i64::from(app.config.presence.push_coalesce_ms),
    }
}

/// Applies due transitions until the app shuts down.
pub async fn run_scheduler(app: Arc<App>) {
    let mut last_prune = std::time::Instant::now() - PRUNE_EVERY;
    loop {
        app.engine
            .scheduler_planned
            .store(i64::MAX, Ordering::Release);
        let now = now_ms();
        let rules = rules(&app).await;
        let mut run: Result<(), String> = Ok(());
        match app.store.apply_due(now, DUE_BATCH, &rules).await {
            Ok(mut effects) => {
                let full_batch = effects.changes.len() as u32 >= DUE_BATCH;
                if !effects.changes.is_empty() {
                    tracing::debug!(
                        count = effects.changes.len(),
                        "scheduled presence transitions applied"
                    );
                }
                // This is the scheduler: it reads its next due time below.
                effects.next_due = None;
                app.engine.publish(effects);
                if full_batch {
                    continue;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "applying due presence transitions failed");
                run = Err(e.to_string());
            }
        }
        // Pruning is housekeeping: once a minute, not on every wake.
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = std::time::Instant::now();
            let retention = i64::from(app.config.presence.change_retention_hours) * 3_600_000;
            if let Err(e) = app.store.prune_presence(now - retention).await {
                tracing::warn!(error = %e, "pruning the presence change log failed");
            }
        }
        let sleep = match app.store.next_presence_due().await {
            Ok(Some(due)) => {
                Duration::from_millis((due - now_ms()).clamp(0, MAX_IDLE.as_millis() as i64) as u64)
            }
            _ => MAX_IDLE,
        };
        let next = now_ms() + sleep.as_millis() as i64;
        app.engine.scheduler_planned.store(next, Ordering::Release);
        app.health.job_ran("presence-scheduler", run, Some(next));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = app.engine.scheduler_wake.notified() => {}
        }
    }
}

/// Delivers queued status pushes until the app shuts down.
pub async fn run_outbox(app: Arc<App>) {
    loop {
        let now = now_ms();
        let mut run: Result<(), String> = Ok(());
        match app.store.claim_pushes(now, PUSH_LEASE_MS, PUSH_BATCH).await {
            Ok(pushes) if !pushes.is_empty() => {
                for push in pushes {
                    let span = tracing::info_span!("status_push", tenant = %push.tenant, user = %push.user, connection = %push.connection);
                    if let Err(e) = deliver(&app, &push).instrument(span).await {
                        tracing::error!(error = %e, connection = %push.connection, "status push bookkeeping failed; it will be retried when its lease runs out");
                    }
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "claiming status pushes failed");
                run = Err(e.to_string());
            }
        }
        let sleep = match app.store.next_push_due().await {
            Ok(Some(due)) => {
                Duration::from_millis((due - now_ms()).clamp(0, MAX_IDLE.as_millis() as i64) as u64)
            }
            _ => MAX_IDLE,
        };
        app.health.job_ran(
            "status-outbox",
            run,
            Some(now_ms() + sleep.as_millis() as i64),
        );
        tokio::select! {
            _ = tokio::time::sleep(sleep.max(Duration::from_millis(5))) => {}
            _ = app.engine.outbox_wake.notified() => {}
        }
    }
}

/// What a push compares on: a provider shows these, nothing else.
fn shown(
    p: &Presence,
) -> (
    crate::model::Availability,
    Option<&str>,
    Option<&str>,
    Option<i64>,
) {
    (
        p.availability,
        p.status_text.as_deref(),
        p.status_emoji.as_deref(),
        p.until,
    )
}

async fn deliver(app: &App, push: &PendingPush) -> Result<(), crate::store::StoreError> {
    let now = now_ms();
    let Some(plugin) = app.registry.get(&push.plugin) else {
        return app
            .store
            .defer_push(
                push,
                now + 60_000,
                push.attempts + 1,
                Some("plugin not loaded"),
            )
            .await;
    };
    let time_zone = app.store.user_time_zone(&push.tenant, &push.user).await?;
    let texts = app
        .config
        .tenants
        .get(&push.tenant)
        .map(|t| t.status_texts.clone())
        .unwrap_or_default();
    let desired = render::render(&push.presence, &texts, time_zone.as_deref(), now);
    let last = app
        .store
        .last_pushed(&push.tenant, &push.connection)
        .await?;
    if last.as_ref().map(shown) == Some(shown(&desired)) {
        return app.store.complete_push(push, None).await;
    }
    // The person's own status in this very provider, which we never replaced:
    // it is already showing there, and it is theirs.
    if last.is_none()
        && desired.source == Some(crate::model::SignalSource::ProviderStatus)
        && desired.origin.as_deref() == Some(push.plugin.as_str())
    {
        return app.store.complete_push(push, None).await;
    }
    let budget = app.config.presence.max_pushes_per_hour;
    let (sent, oldest) = app
        .store
        .pushes_since(&push.tenant, &push.connection, now - 3_600_000)
        .await?;
    if sent >= budget {
        let free_at = oldest.unwrap_or(now) + 3_600_000;
        tracing::debug!(
            sent,
            budget,
            "hourly push budget spent; the latest state waits"
        );
        return app
            .store
            .defer_push(
                push,
                free_at,
                push.attempts,
                Some("hourly push budget spent"),
            )
            .await;
    }
    // A provider that keeps failing is left alone until its breaker lets a probe through.
    if let Admission::WaitUntil(until) = app.health.admit(&push.tenant, &push.connection) {
        tracing::debug!(until, "circuit open: the push waits");
        return app
            .store
            .defer_push(
                push,
                until,
                push.attempts,
                Some("circuit open: the provider keeps failing; a probe goes out at the due time"),
            )
            .await;
    }
    app.store
        .mark_sending(push, desired.status_text.as_deref())
        .await?;
    // A refusal may be cured by a refresh, once per pushed state: if the
    // retry is refused too (a missing scope, a deactivated account), the
    // push waits an hour instead of becoming a refresh a second.
    let token_version = if push.attempts == 0 {
        app.store
            .connection_version(&push.tenant, &push.connection)
            .await?
            .map(|(v, _)| v)
    } else {
        None
    };
    let outcome = app
        .runtime
        .push_status(
            &plugin.pre,
            &plugin.grants,
            &push.tenant,
            &push.connection,
            &desired,
        )
        .await;
    let counted = match &outcome {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(fault)) => Outcome::of_fault(fault, "push-status"),
        Err(e) => Outcome::Failed(e.kind.label(), e.to_string()),
    };
    app.health
        .connection_outcome(&push.tenant, &push.connection, &push.plugin, &counted);
    match outcome {
        Ok(Ok(())) => {
            tracing::info!(
                availability = desired.availability.as_str(),
                "status pushed"
            );
            app.store.complete_push(push, Some(&desired)).await
        }
        Ok(Err(PluginFault::Unsupported(m))) => {
            tracing::warn!(message = %m, "plugin does not push statuses; entry dropped");
            app.store.complete_push(push, None).await
        }
        Ok(Err(PluginFault::Unauthorized(m))) => {
            // The provider refused the token: a refresh may cure it (Slack
            // answers an expired token with `token_expired`, not HTTP 401).
            let refreshed = match token_version {
                Some(version) => app
                    .oauth
                    .refresh(
                        &app.store,
                        &push.tenant,
                        &push.connection,
                        version,
                        crate::oauth::refresh::Reason::Refused,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                None => Err(
                    "not refreshed again: this state was already retried after a refresh"
                        .to_string(),
                ),
            };
            let (retry_in, why) = match refreshed {
                Ok(_) => (
                    REFRESHED_RETRY_MS,
                    format!("unauthorized: {m}; token refreshed, retrying"),
                ),
                Err(e) => {
                    tracing::error!(message = %m, refresh = %e, "the provider refused the connection's token");
                    (REFUSED_RETRY_MS, format!("unauthorized: {m}; {e}"))
                }
            };
            app.store
                .defer_push(push, now + retry_in, push.attempts + 1, Some(&why))
                .await
        }
        Ok(Err(PluginFault::Upstream {
            message,
            retry_after_ms: Some(after),
            ..
        })) => {
            tracing::warn!(%message, retry_after_ms = after, "provider asked us to come back later");
            app.store
                .defer_push(push, now + after as i64, push.attempts + 1, Some(&message))
                .await
        }
        Ok(Err(fault)) => {
            let delay = backoff(push.attempts);
            tracing::warn!(error = %fault, retry_in_ms = delay, "status push failed");
            app.store
                .defer_push(
                    push,
                    now + delay,
                    push.attempts + 1,
                    Some(&fault.to_string()),
                )
                .await
        }
        Err(e) => {
            let delay = backoff(push.attempts);
            tracing::warn!(error = %e, retry_in_ms = delay, "status push call failed");
            app.store
                .defer_push(push, now + delay, push.attempts + 1, Some(&e.to_string()))
                .await
        }
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base * 2^attempt)]`.
pub fn backoff(attempt: u32) -> i64 {
    let ceiling = BACKOFF_BASE_MS
        .saturating_mul(1i64 << attempt.min(30))
        .min(BACKOFF_CAP_MS);
    rand::rng().random_range(0..=ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_its_growing_ceiling() {
        for attempt in 0..40 {
            let ceiling = (BACKOFF_BASE_MS << attempt.min(30)).min(BACKOFF_CAP_MS);
            for _ in 0..50 {
                let d = backoff(attempt);
                assert!((0..=ceiling).contains(&d), "attempt {attempt}: {d}");
            }
        }
    }
}
