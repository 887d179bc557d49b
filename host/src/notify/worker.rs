//! The router's worker: claims due notifications, decides, and delivers
//! through the recipient's channels, falling back from one to the next.
//!
//! It wakes at the earliest due time, when a notification is submitted, and
//! when the presence of someone with a waiting notification changes (it
//! listens to the presence engine; at start-up, and whenever it fell behind
//! that stream, it looks at every waiting notification again). A channel
//! attempt is recorded before the channel is called; a notification whose
//! delivery was recorded is never sent again, even if the host died before
//! it was marked delivered.
//!
//! General notes waiting for the same person go out together as one digest:
//! the companions are claimed atomically with the lead, so a note is in one
//! digest only, and one that arrives meanwhile goes out after it. A delivered
//! emergency with an escalation path stays due until acknowledged; when its
//! time runs out it goes to the path's next contact, the chain recorded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinSet;

use super::{Decision, Recipient, channels_now, decide};
use crate::App;
use crate::model::{Notification, PluginFault};
use crate::plugins::World;
use crate::store::notifications::{
    Channel, Escalation, NewNotification, NotificationRecord, Submitted, decision,
};
use crate::store::{StoreError, now_ms};

/// Notifications claimed per free worker slot.
const PER_RECIPIENT: u32 = 8;
/// How many recipients' notifications are handled at once, each by its own
/// task: channel calls overlap, store writes still go one at a time.
const CONCURRENT_RECIPIENTS: usize = 8;
const MAX_IDLE: Duration = Duration::from_secs(60);
/// How soon to look again when every free worker slot is taken, or all that
/// was due belongs to recipients already being handled (here or elsewhere).
const BLOCKED_RECHECK: Duration = Duration::from_millis(200);
/// Retry rounds: jittered over the upper nine tenths of `BASE * 2^round`, capped.
const RETRY_BASE_MS: i64 = 5_000;
const RETRY_CAP_MS: i64 = 15 * 60_000;

/// How long a claim lasts (`[notifications] claim_lease_seconds`).
fn lease_ms(app: &App) -> i64 {
    i64::from(app.config.notifications.claim_lease_seconds.max(1)) * 1000
}

pub async fn run(app: Arc<App>) {
    let mut changes = app.engine.subscribe();
    // People with notifications waiting: presence changes of others are ignored.
    let mut waiting: HashSet<(String, String)> = HashSet::new();
    // Recipients whose notifications are being handled, one task each: a
    // recipient's notifications go one after another (a digest takes its
    // companions along), different recipients' at once. A slow channel holds
    // up its own recipient only; claiming goes on while tasks run.
    let mut tasks: JoinSet<((String, String), bool)> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
    // Recipients whose presence changed while their task ran (it may have
    // decided on what it read before): looked at again when it ends.
    let mut changed_meanwhile: HashSet<(String, String)> = HashSet::new();
    let mut sweep = true;
    loop {
        while let Some(done) = tasks.try_join_next_with_id() {
            finished(
                &app,
                done,
                &mut running,
                &mut waiting,
                &mut changed_meanwhile,
            )
            .await;
        }
        let now = now_ms();
        let mut run: Result<(), String> = Ok(());
        if sweep {
            // Presence may have changed while we were not listening.
            sweep = false;
            match app.store.recipients_waiting().await {
                Ok(people) => waiting = people.into_iter().collect(),
                Err(e) => run = Err(e.to_string()),
            }
            if let Err(e) = app.store.wake_all_notifications(now).await {
                run = Err(e.to_string());
            }
        }
        if running.len() < CONCURRENT_RECIPIENTS {
            let busy: Vec<(String, String)> = running.values().cloned().collect();
            let room = (CONCURRENT_RECIPIENTS - running.len()) as u32 * PER_RECIPIENT;
            match app
                .store
                .claim_notifications(now, lease_ms(&app), room, &busy)
                .await
            {
                Ok(due) if !due.is_empty() => {
                    let mut groups: Vec<Vec<NotificationRecord>> = Vec::new();
                    for n in due {
                        match groups
                            .iter_mut()
                            .find(|g| g[0].tenant == n.tenant && g[0].recipient == n.recipient)
                        {
                            Some(g) => g.push(n),
                            None => groups.push(vec![n]),
                        }
                    }
                    // Recipients being handled were not claimed (`busy`, and
                    // the claims they hold): each group starts while there
                    // is a free slot, and the rest are released.
                    let mut blocked = Vec::new();
                    for group in groups {
                        if running.len() >= CONCURRENT_RECIPIENTS {
                            blocked.extend(group);
                            continue;
                        }
                        let key = (group[0].tenant.clone(), group[0].recipient.clone());
                        let handle = tasks.spawn(handle_group(app.clone(), group));
                        running.insert(handle.id(), key);
                    }
                    if let Some(token) = blocked.first().and_then(|n| n.claim_token.clone()) {
                        let ids: Vec<String> = blocked.iter().map(|n| n.id.clone()).collect();
                        if let Err(e) = app.store.release_claims(&ids, &token, false).await {
                            tracing::error!(error = %e, "releasing notifications failed; they wait for their lease");
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "claiming notifications failed");
                    run = Err(e.to_string());
                }
            }
        }
        // With tasks running, what is due may be theirs to take (a busy
        // recipient's): their ends wake the loop, so no tight polling. What is
        // due but was not claimed belongs to a recipient another holder (a
        // replica, or a claim outliving its task) has a claim on: looked at
        // again soon, not at once.
        let sleep = if !running.is_empty() {
            BLOCKED_RECHECK
        } else {
            let next = app.store.next_notification_due().await.ok().flatten();
            next.map_or(MAX_IDLE, |due| {
                if due <= now {
                    BLOCKED_RECHECK
                } else {
                    let wait = (due - now_ms()).clamp(5, MAX_IDLE.as_millis() as i64);
                    Duration::from_millis(wait as u64)
                }
            })
        };
        app.health.job_ran(
            "notifications",
            run,
            Some(now_ms() + sleep.as_millis() as i64),
        );
        // Waits for a reason to claim again: a task ended, the due time came,
        // a notification was submitted or freed, or a presence change woke
        // someone waiting. A change for anyone else (most changes, under load)
        // is noted and waited past without touching the store.
        let deadline = tokio::time::Instant::now() + sleep;
        loop {
            tokio::select! {
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    finished(&app, done, &mut running, &mut waiting, &mut changed_meanwhile).await;
                    break;
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = app.engine.notifications_wake.notified() => break,
                change = changes.recv() => match change {
                    Ok(change) => {
                        let key = (change.tenant.clone(), change.user.clone());
                        if running.values().any(|k| *k == key) {
                            changed_meanwhile.insert(key.clone());
                        }
                        if waiting.remove(&key) {
                            if let Err(e) = app.store.wake_notifications(&key.0, &key.1, now_ms()).await {
                                tracing::error!(error = %e, "waking notifications failed");
                                waiting.insert(key);
                            }
                            break;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the router fell behind presence changes; looking at every waiting notification");
                        sweep = true;
                        break;
                    }
                    // The engine is gone (shutting down): stop listening, keep polling.
                    Err(RecvError::Closed) => {
                        changes = app.engine.subscribe();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                },
            }
        }
    }
}

type Finished = Result<(tokio::task::Id, ((String, String), bool)), tokio::task::JoinError>;

/// A recipient's task ended: they may be handled again, and watched for
/// presence changes if something of theirs waits; if their presence changed
/// while it ran, what waits is looked at again now.
async fn finished(
    app: &App,
    done: Finished,
    running: &mut HashMap<tokio::task::Id, (String, String)>,
    waiting: &mut HashSet<(String, String)>,
    changed_meanwhile: &mut HashSet<(String, String)>,
) {
    let key = match done {
        Ok((id, (key, waits))) => {
            running.remove(&id);
            if waits {
                waiting.insert(key.clone());
            }
            key
        }
        Err(e) => {
            // Its claims run out and the notifications are handled again.
            tracing::error!(error = %e, "a notification task failed");
            let Some(key) = running.remove(&e.id()) else {
                return;
            };
            waiting.insert(key.clone());
            key
        }
    };
    if changed_meanwhile.remove(&key)
        && let Err(e) = app.store.wake_notifications(&key.0, &key.1, now_ms()).await
    {
        tracing::error!(error = %e, "waking notifications failed");
    }
}

/// Handles one recipient's claimed notifications in order; the recipient, and
/// whether any of them waits again.
async fn handle_group(app: Arc<App>, group: Vec<NotificationRecord>) -> ((String, String), bool) {
    let key = (group[0].tenant.clone(), group[0].recipient.clone());
    let mut waits = false;
    let mut view = None;
    for n in &group {
        match handle(&app, n, &mut view).await {
            Ok(w) => waits |= w,
            Err(e) => {
                tracing::error!(notification = %n.id, error = %e, "notification bookkeeping failed; retried when its lease runs out");
            }
        }
    }
    (key, waits)
}

/// When a delivered notification is looked at again: an emergency with
/// somewhere left to escalate to, unless acknowledged.
fn escalation_due(app: &App, n: &NotificationRecord, now: i64) -> Option<i64> {
    next_contact(n)?;
    (n.acked_at.is_none())
        .then(|| now + i64::from(app.config.notifications.escalate_after_seconds) * 1000)
}

/// The next contact of an emergency's escalation path, if any is left.
fn next_contact(n: &NotificationRecord) -> Option<&String> {
    let e = n.escalation.as_ref()?;
    (n.urgency == super::Class::Emergency)
        .then(|| e.path.get(e.step))
        .flatten()
}

/// The most notes one digest carries (the first and this many more).
const DIGEST_COMPANIONS: u32 = 9;

/// What the router reads of a recipient: once per task, for all of their
/// claimed notifications (nothing of it changes while they are handled).
struct View {
    presence: Option<crate::model::Presence>,
    settings: crate::store::notifications::RecipientSettings,
    channels: Vec<Channel>,
}

impl View {
    async fn read(app: &App, n: &NotificationRecord, now: i64) -> Result<Self, StoreError> {
        let signals = app.store.signals(&n.tenant, &n.recipient, now).await?;
        Ok(Self {
            presence: (!signals.is_empty())
                .then(|| crate::presence::derive(&n.recipient, &signals, now)),
            settings: app
                .store
                .recipient_settings(&n.tenant, &n.recipient)
                .await?,
            channels: app.store.user_channels(&n.tenant, &n.recipient).await?,
        })
    }
}

/// Decides and acts on one claimed notification; true when it waits again.
/// `view` is the recipient as read for the first of their notifications.
async fn handle(
    app: &App,
    n: &NotificationRecord,
    view: &mut Option<View>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let Some(token) = n.claim_token.as_deref() else {
        return Ok(false);
    };
    // A recipient's notifications are handled one by one: this copy is acted
    // on only if its claim is still ours (a digest sent before it may have
    // taken it along, or a lapsed claim been taken over). A claim past half
    // its lease is extended; a fresh one is only read.
    let fresh = n
        .claimed_until
        .is_some_and(|until| until - now > lease_ms(app) / 2);
    let holds = if fresh {
        app.store.claim_holds(&n.id, token, now).await?
    } else {
        app.store
            .renew_claim(&n.id, token, now + lease_ms(app))
            .await?
    };
    if !holds {
        return Ok(false);
    }
    if n.state == "delivered" {
        escalate(app, n, token, "delivered", "not acknowledged in time").await?;
        return Ok(false);
    }
    // It rode in a digest whose delivery was recorded before a restart (a
    // delivered attempt of the lead carried it; a lead delivered without it
    // leaves it to go out on its own below).
    if let Some(lead) = &n.digest_lead
        && app.store.delivered_with(lead, &n.id).await?
    {
        let mut entry = decision(
            now,
            "delivered",
            &format!("in one digest with {lead}, recorded before a restart; not sent again"),
        );
        entry["digest_of"] = lead.clone().into();
        app.store
            .notification_decided(&n.id, token, "delivered", None, n.rounds, Some(entry))
            .await?;
        return Ok(false);
    }
    // It rode in a digest whose send was cut short: it goes out again only in
    // that digest, when its lead is handled; it looks again just after the lead.
    if let Some(lead) = n.digest_lead.as_deref().filter(|l| *l != n.id)
        && let Some(lead_due) = app.store.interrupted_lead(lead).await?
    {
        let again = lead_due.unwrap_or(now + lease_ms(app)).max(now) + 1_000;
        app.store
            .notification_decided(&n.id, token, &n.state, Some(again), n.rounds, None)
            .await?;
        return Ok(false);
    }
    // Delivered before a restart cut the bookkeeping short: never twice.
    if let Some(done) = n
        .attempts
        .iter()
        .find(|a| a.outcome.as_deref() == Some("delivered"))
    {
        let entry = serde_json::json!({
            "at": now, "decision": "delivered",
            "reason": "its delivery was recorded before a restart; not sent again",
            "plugin": done.plugin, "address": done.address,
        });
        // Sends to other channels the restart cut short stay unknown, not in flight.
        app.store.close_open_attempts(&n.id).await?;
        let due = escalation_due(app, n, now);
        app.store
            .notification_decided(&n.id, token, "delivered", due, n.rounds, Some(entry))
            .await?;
        return Ok(false);
    }
    if view.is_none() {
        *view = Some(View::read(app, n, now).await?);
    }
    let View {
        presence,
        settings,
        channels,
    } = view.as_ref().expect("read above");
    let recipient = Recipient {
        presence: presence.as_ref(),
        time_zone: settings.time_zone.as_deref(),
        hours: settings.hours.as_ref(),
        quiet: settings.quiet.as_ref(),
    };
    let deliver_by = n.deliver_by.unwrap_or(now);
    let presence_says = decide(
        &app.config.notifications,
        n.urgency,
        n.wedding.as_ref(),
        &recipient,
        deliver_by,
        now,
    );
    let channels = channels.clone();
    // The channels to use now, and when closed ones open (if the open ones
    // refuse it for good, it waits for those rather than failing).
    let (verdict, channels, closed_open_at) = match presence_says {
        Decision::Deliver {
            all_channels: true, ..
        } => (presence_says, channels, None),
        Decision::Deliver { .. } => {
            let urgent = n.urgency == super::Class::Emergency || now >= deliver_by;
            match channels_now(&channels, recipient.time_zone, now, urgent) {
                Err(opens) => (
                    Decision::Defer {
                        until: opens.map_or(deliver_by, |t| t.min(deliver_by)),
                        reason: "none of the recipient's channels is inside its send window; waits for the first to open, at the latest until then".into(),
                    },
                    channels,
                    None,
                ),
                Ok(open) => {
                    // Would the router deliver at `t` (the presence known now)?
                    let deliverable = |t: i64| {
                        matches!(
                            decide(&app.config.notifications, n.urgency, n.wedding.as_ref(), &recipient, deliver_by, t),
                            Decision::Deliver { .. }
                        ) && channels_now(&channels, recipient.time_zone, t, false).is_ok()
                    };
                    match best_moment(app, n, recipient.time_zone, urgent, now, deliverable).await? {
                        Some(later) => (
                            Decision::Defer {
                                until: later.at,
                                reason: later.reason,
                            },
                            channels,
                            None,
                        ),
                        None => {
                            let closed_open_at = (!urgent)
                                .then(|| {
                                    channels
                                        .iter()
                                        .filter(|c| !open.contains(c))
                                        .filter_map(|c| {
                                            c.send_windows()?.next_open(recipient.time_zone, now)
                                        })
                                        .min()
                                })
                                .flatten()
                                .map(|t| t.min(deliver_by));
                            (presence_says, open, closed_open_at)
                        }
                    }
                }
            }
        }
        Decision::Defer { .. } => (presence_says, channels, None),
    };
    match verdict {
        Decision::Defer { until, reason } => {
            // Deciding the same again is not news: record only a change of mind.
            let repeated = n.state == "deferred"
                && n.decisions
                    .last()
                    .is_some_and(|d| d["decision"] == "deferred" && d["reason"] == reason.as_str());
            let entry = (!repeated).then(|| {
                let mut entry = decision(now, "deferred", &reason);
                entry["until"] = until.into();
                entry
            });
            app.store
                .notification_decided(&n.id, token, "deferred", Some(until), n.rounds, entry)
                .await?;
            Ok(true)
        }
        Decision::Deliver {
            all_channels,
            reason,
        } => {
            // General notes that wait for the same person go out with it, as one.
            // A send of this note was cut short (the host died mid-call): the
            // message may have gone out, so it goes again exactly as it was.
            let resuming = n.attempts.iter().any(|a| a.outcome.is_none());
            let digest = if n.urgency == super::Class::General {
                app.store
                    .claim_digest(n, token, now, lease_ms(app), DIGEST_COMPANIONS, resuming)
                    .await?
            } else {
                Vec::new()
            };
            if resuming {
                app.store.close_open_attempts(&n.id).await?;
            }
            let plan = Plan {
                digest: &digest,
                channels: &channels,
                all_channels,
                closed_open_at,
                reason: &reason,
            };
            // The companions' claims, then the lead's.
            let mut held: Vec<String> = digest.iter().map(|m| m.id.clone()).collect();
            held.push(n.id.clone());
            let sending = deliver(app, n, token, &plan);
            let delivered = holding_claims(app, &held, token, n.claimed_until, sending).await;
            if !digest.is_empty() && !matches!(delivered, Ok(true)) {
                let companions = &held[..digest.len()];
                app.store.release_claims(companions, token, true).await?;
            }
            delivered.map(|_| false)
        }
    }
}

/// Runs `work` (a send) while keeping the claims on `ids`: they are renewed
/// when the lead's claim (lasting until `claimed_until`) is half spent, and
/// every third of the lease after, so a send that outlasts its claim is not
/// taken over and sent again by another worker or replica, and the recipient
/// stays held (see `claim_notifications`). The renewals run beside the send,
/// never in its place: on SQLite both use the one writing connection, and a
/// renewal waiting for it must not stop the send from giving it back. A
/// renewal that fails is logged; the send goes on, and its outcome is
/// recorded only under a claim still held.
async fn holding_claims<T>(
    app: &App,
    ids: &[String],
    token: &str,
    claimed_until: Option<i64>,
    work: impl std::future::Future<Output = T>,
) -> T {
    let every = Duration::from_millis((lease_ms(app) / 3).max(1) as u64);
    let half_spent = claimed_until.map_or(0, |until| until - lease_ms(app) / 2 - now_ms());
    let first = tokio::time::Instant::now() + Duration::from_millis(half_spent.max(0) as u64);
    let renewing = async {
        let mut renew = tokio::time::interval_at(first, every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            renew.tick().await;
            let until = now_ms() + lease_ms(app);
            // Fewer than all: some were decided meanwhile, or lapsed and taken over.
            match app.store.renew_claims(ids, token, until).await {
                Ok(kept) => tracing::debug!(kept, of = ids.len(), "claims renewed during a send"),
                Err(e) => tracing::warn!(error = %e, "renewing claims during a send failed"),
            }
        }
    };
    tokio::select! {
        biased;
        out = work => out,
        never = renewing => never,
    }
}

/// Optimal timing (see [`super::timing`]): a better hour to deliver `n` in,
/// when its class asks for it and it is not urgent.
async fn best_moment(
    app: &App,
    n: &NotificationRecord,
    time_zone: Option<&str>,
    urgent: bool,
    now: i64,
    deliverable: impl Fn(i64) -> bool,
) -> Result<Option<super::timing::Suggestion>, StoreError> {
    let Some(deliver_by) = n.deliver_by else {
        return Ok(None);
    };
    if urgent || !app.config.notifications.policy(n.urgency).optimal_timing {
        return Ok(None);
    }
    let since = now - super::timing::HISTORY_DAYS * 24 * 3_600_000;
    let history = app
        .store
        .ack_history(&n.tenant, &n.recipient, since)
        .await?;
    Ok(super::timing::best_moment(
        &history,
        time_zone,
        now,
        deliver_by,
        deliverable,
    ))
}

/// An emergency not acknowledged in time, or that could not be delivered: on
/// to the next contact of its escalation path, the chain carried along. It is
/// left in `state` with the step recorded.
async fn escalate(
    app: &App,
    n: &NotificationRecord,
    token: &str,
    state: &str,
    why: &str,
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut chain = n
        .escalation
        .as_ref()
        .map(|e| e.chain.clone())
        .unwrap_or_default();
    chain.push(n.id.clone());
    // Read now, not when claimed: an acknowledgement anywhere up the chain stops it.
    if n.acked_at.is_some() || app.store.any_acknowledged(&chain).await? {
        app.store
            .notification_decided(&n.id, token, state, None, n.rounds, None)
            .await?;
        return Ok(());
    }
    let (Some(next), Some(e)) = (next_contact(n), n.escalation.as_ref()) else {
        let entry = decision(now, "unacknowledged", "the escalation path is exhausted");
        app.store
            .notification_decided(&n.id, token, state, None, n.rounds, Some(entry))
            .await?;
        return Ok(());
    };
    let id = format!("ntf_{}", hex::encode(rand::random::<[u8; 10]>()));
    let minutes = app.config.notifications.escalate_after_seconds.div_ceil(60);
    let child = NewNotification {
        id: id.clone(),
        tenant: n.tenant.clone(),
        recipient: next.clone(),
        class: n.urgency,
        wedding: n.wedding.clone(),
        subject: Some(match n.subject.as_deref() {
            Some(s) if s.starts_with("Escalated: ") => s.to_string(),
            Some(s) => format!("Escalated: {s}"),
            None => "Escalated: emergency".to_string(),
        }),
        body: if state == "delivered" {
            format!(
                "{}\n\n{} did not acknowledge this within {minutes} minute(s).",
                n.body, n.recipient
            )
        } else {
            format!("{}\n\n{} could not be reached.", n.body, n.recipient)
        },
        // In a namespace clients cannot reach: header values hold no control
        // characters. One step is taken once, whatever happens meanwhile.
        idempotency_key: Some(format!("\u{1}escalation\u{1}{}", n.id)),
        deliver_by: now,
        escalation: Some(Escalation {
            path: e.path.clone(),
            step: e.step + 1,
            chain,
        }),
    };
    let child_id = match app.store.submit_notification(&child).await? {
        Submitted::Created => id,
        Submitted::Existing(first) => first,
    };
    let mut entry = decision(now, "escalated", &format!("{why}; sent on to {next}"));
    entry["to"] = next.clone().into();
    entry["notification"] = child_id.into();
    app.engine.wake_notifications();
    app.store
        .notification_decided(&n.id, token, state, None, n.rounds, Some(entry))
        .await?;
    Ok(())
}

/// The message a notification (with its digest companions) goes out as.
fn message_of(n: &NotificationRecord, digest: &[NotificationRecord]) -> Notification {
    if digest.is_empty() {
        return Notification {
            id: n.id.clone(),
            recipient: String::new(),
            subject: n.subject.clone(),
            body: n.body.clone(),
            urgency: n.urgency.urgency(),
        };
    }
    let body = std::iter::once(n)
        .chain(digest)
        .enumerate()
        .map(|(i, m)| match &m.subject {
            Some(s) => format!("{}. {s}: {}", i + 1, m.body),
            None => format!("{}. {}", i + 1, m.body),
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    Notification {
        id: n.id.clone(),
        recipient: String::new(),
        subject: Some(format!("{} notes", digest.len() + 1)),
        body,
        urgency: n.urgency.urgency(),
    }
}

/// How a notification goes out.
#[derive(Clone, Copy)]
struct Plan<'a> {
    /// The general notes riding along in one digest.
    digest: &'a [NotificationRecord],
    /// The channels to use, in order.
    channels: &'a [Channel],
    /// Every channel, not just the first that delivers (the wedding day).
    all_channels: bool,
    /// When channels outside their send window open, if any.
    closed_open_at: Option<i64>,
    /// Why it goes now.
    reason: &'a str,
}

/// Sends `n` (with `digest`) through the recipient's channels and records the
/// outcome on each notification; true when it was delivered. An emergency
/// that cannot be delivered escalates at once.
async fn deliver(
    app: &App,
    n: &NotificationRecord,
    token: &str,
    plan: &Plan<'_>,
) -> Result<bool, StoreError> {
    let Plan {
        digest,
        channels,
        all_channels,
        closed_open_at,
        reason,
    } = *plan;
    let rounds = n.rounds + 1;
    if channels.is_empty() {
        let why = format!(
            "{reason}, but {} has no channels: set them with PUT /api/users/{}",
            n.recipient, n.recipient
        );
        if next_contact(n).is_some() {
            escalate(app, n, token, "failed", &why).await?;
        } else {
            let entry = decision(now_ms(), "failed", &why);
            app.store
                .notification_decided(&n.id, token, "failed", None, rounds, Some(entry))
                .await?;
        }
        return Ok(false);
    }
    let message = message_of(n, digest);
    let mut delivered = Vec::new();
    let mut errors = Vec::new();
    let mut all_permanent = true;
    let mut retry_after_ms: Option<u64> = None;
    for channel in channels {
        match send(app, n, &message, plan.digest, channel).await? {
            Ok(()) => {
                delivered.push(format!("{} {}", channel.plugin, channel.address));
                if !all_channels {
                    break;
                }
            }
            Err(e) => {
                all_permanent &= e.permanent;
                // The soonest any channel said it could take it again.
                retry_after_ms = match (retry_after_ms, e.retry_after_ms) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                errors.push(format!(
                    "{} {}: {}",
                    channel.plugin, channel.address, e.message
                ));
            }
        }
    }
    let now = now_ms();
    if !delivered.is_empty() {
        let mut entry = decision(now, "delivered", reason);
        entry["channels"] = delivered.into();
        if !errors.is_empty() {
            entry["failed_channels"] = errors.into();
        }
        if !digest.is_empty() {
            entry["digest"] = digest
                .iter()
                .map(|m| m.id.clone())
                .collect::<Vec<_>>()
                .into();
        }
        for m in digest {
            let mut with = decision(now, "delivered", &format!("in one digest with {}", n.id));
            with["digest_of"] = n.id.clone().into();
            app.store
                .notification_decided(&m.id, token, "delivered", None, m.rounds + 1, Some(with))
                .await?;
        }
        let due = escalation_due(app, n, now);
        app.store
            .notification_decided(&n.id, token, "delivered", due, rounds, Some(entry))
            .await?;
        return Ok(true);
    }
    // The channels open now refused it for good, but others open later.
    if all_permanent && let Some(until) = closed_open_at {
        let mut entry = decision(
            now,
            "deferred",
            "the channels inside their send window refused it for good; waits for the others to open",
        );
        entry["errors"] = errors.into();
        entry["until"] = until.into();
        app.store
            .notification_waits_for_windows(&n.id, token, until, rounds, entry)
            .await?;
        return Ok(false);
    }
    let max_rounds = i64::from(app.config.notifications.max_rounds.max(1));
    if rounds >= max_rounds || all_permanent {
        let why = if all_permanent {
            format!("every channel refused it for good: {}", errors.join("; "))
        } else {
            format!("every channel failed {rounds} times: {}", errors.join("; "))
        };
        if next_contact(n).is_some() {
            escalate(app, n, token, "failed", &why).await?;
        } else {
            let mut entry = decision(
                now,
                "failed",
                &if all_permanent {
                    "every channel refused it for good".to_string()
                } else {
                    format!("every channel failed {rounds} times")
                },
            );
            entry["errors"] = errors.into();
            app.store
                .notification_decided(&n.id, token, "failed", None, rounds, Some(entry))
                .await?;
        }
        return Ok(false);
    }
    let delay = retry_delay(
        rounds,
        n.urgency == super::Class::Emergency,
        retry_after_ms,
        rand::random::<f64>(),
    );
    let mut entry = decision(now, "retry", "every channel failed; trying again");
    entry["errors"] = errors.into();
    entry["retry_at"] = (now + delay).into();
    app.store
        .notification_decided(&n.id, token, "due", Some(now + delay), rounds, Some(entry))
        .await?;
    Ok(false)
}

/// Why one channel did not deliver.
struct ChannelFailure {
    message: String,
    /// Trying again will not help (the plugin refused the address, has no
    /// credentials or configuration, or cannot send at all).
    permanent: bool,
    /// When the provider asked to be called again.
    retry_after_ms: Option<u64>,
}

impl ChannelFailure {
    fn permanent(message: String) -> Self {
        Self {
            message,
            permanent: true,
            retry_after_ms: None,
        }
    }

    fn of(fault: PluginFault) -> Self {
        match fault {
            PluginFault::Upstream { retry_after_ms, .. } => Self {
                message: fault.to_string(),
                permanent: false,
                retry_after_ms,
            },
            PluginFault::Unsupported(m) => {
                Self::permanent(format!("the plugin does not send notifications: {m}"))
            }
            // The plugin's verdict on this message or address: no retry helps.
            PluginFault::InvalidInput(_) => Self::permanent(fault.to_string()),
            // Credentials and configuration can come back (a token endpoint
            // that was down, a refresh another host held, an operator fixing
            // the config): tried again, up to the round limit.
            PluginFault::Unauthorized(_) | PluginFault::Internal(_) => Self {
                message: fault.to_string(),
                permanent: false,
                retry_after_ms: None,
            },
        }
    }
}

/// The wait before the next round once every channel failed `rounds` times:
/// a random point (`jitter`, 0 to 1) in the upper nine tenths of
/// `RETRY_BASE_MS * 2^rounds`, capped at `RETRY_CAP_MS`, and never sooner
/// than a provider's `Retry-After`. An emergency waits `RETRY_BASE_MS` at
/// most whatever a provider asked: it has other channels and an escalation
/// path to get on with.
fn retry_delay(rounds: i64, emergency: bool, retry_after_ms: Option<u64>, jitter: f64) -> i64 {
    let ceiling = RETRY_BASE_MS
        .saturating_mul(1i64 << rounds.clamp(0, 20))
        .min(RETRY_CAP_MS);
    let backoff = ceiling / 10 + ((ceiling - ceiling / 10) as f64 * jitter.clamp(0.0, 1.0)) as i64;
    let asked = retry_after_ms.map_or(0, |ms| {
        i64::try_from(ms).unwrap_or(i64::MAX).min(RETRY_CAP_MS)
    });
    let delay = backoff.max(asked);
    if emergency {
        delay.min(RETRY_BASE_MS)
    } else {
        delay
    }
}

/// One attempt on one channel: recorded before and after the plugin's call.
async fn send(
    app: &App,
    n: &NotificationRecord,
    message: &Notification,
    digest: &[NotificationRecord],
    channel: &Channel,
) -> Result<Result<(), ChannelFailure>, StoreError> {
    let carried: Vec<String> = digest.iter().map(|m| m.id.clone()).collect();
    let attempt = app
        .store
        .start_attempt(&n.id, &channel.plugin, &channel.address, &carried)
        .await?;
    let outcome = match app
        .registry
        .get(&channel.plugin)
        .filter(|p| p.world() == World::Provider)
    {
        // Perhaps being replaced (a plugin folder change): tried again later.
        None => Err(ChannelFailure {
            message: format!("no provider plugin {:?} is loaded", channel.plugin),
            permanent: false,
            retry_after_ms: None,
        }),
        Some(plugin) => {
            let message = Notification {
                recipient: channel.address.clone(),
                ..message.clone()
            };
            match app
                .runtime
                .send_notification(
                    &plugin.pre,
                    &plugin.grants,
                    &n.tenant,
                    channel.connection.as_deref().unwrap_or(""),
                    &message,
                )
                .await
            {
                Ok(Ok(receipt)) => Ok(receipt.provider_message_id),
                Ok(Err(fault)) => Err(ChannelFailure::of(fault)),
                // A trap, a timeout, the host's own failure: worth another try.
                Err(e) => Err(ChannelFailure {
                    message: e.to_string(),
                    permanent: false,
                    retry_after_ms: None,
                }),
            }
        }
    };
    match outcome {
        Ok(message_id) => {
            app.store
                .finish_attempt(&n.id, attempt, "delivered", message_id.as_deref(), None)
                .await?;
            tracing::info!(notification = %n.id, plugin = %channel.plugin, "notification delivered");
            Ok(Ok(()))
        }
        Err(e) => {
            app.store
                .finish_attempt(&n.id, attempt, "failed", None, Some(&e.message))
                .await?;
            tracing::warn!(notification = %n.id, plugin = %channel.plugin, error = %e.message, permanent = e.permanent, "notification channel failed");
            Ok(Err(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_and_honour_retry_after_within_the_caps() {
        // Jitter spans the upper nine tenths of BASE * 2^rounds.
        assert_eq!(retry_delay(1, false, None, 0.0), 1_000);
        assert_eq!(retry_delay(1, false, None, 1.0), 10_000);
        assert_eq!(retry_delay(3, false, None, 1.0), 40_000);
        assert_eq!(retry_delay(30, false, None, 1.0), RETRY_CAP_MS);
        // A provider's Retry-After is the earliest retry, up to the cap.
        assert_eq!(retry_delay(1, false, Some(30_000), 0.5), 30_000);
        assert_eq!(retry_delay(1, false, Some(u64::MAX), 0.0), RETRY_CAP_MS);
        assert_eq!(retry_delay(1, false, Some(500), 0.0), 1_000);
        // An emergency waits the base at most, whatever was asked.
        assert_eq!(retry_delay(4, true, None, 1.0), RETRY_BASE_MS);
        assert_eq!(retry_delay(1, true, Some(900_000), 0.0), RETRY_BASE_MS);
        assert_eq!(retry_delay(1, true, Some(2_000), 0.0), 2_000);
    }

    #[test]
    fn only_a_verdict_on_the_message_is_final() {
        let permanent = |f: PluginFault| ChannelFailure::of(f).permanent;
        assert!(permanent(PluginFault::InvalidInput("not E.164".into())));
        assert!(permanent(PluginFault::Unsupported("no".into())));
        assert!(!permanent(PluginFault::Unauthorized(
            "token refresh failed".into()
        )));
        assert!(!permanent(PluginFault::Internal(
            "config from is not set".into()
        )));
        let throttled = ChannelFailure::of(PluginFault::Upstream {
            message: "429".into(),
            status: Some(429),
            retry_after_ms: Some(2_000),
        });
        assert!(!throttled.permanent);
        assert_eq!(throttled.retry_after_ms, Some(2_000));
    }
}
