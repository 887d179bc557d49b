//! The calendar sync worker: keeps every connection of a calendar provider
//! watched (push subscriptions created, renewed before they lapse) and synced
//! (incrementally when the provider's notification asks, and every few hours
//! in case one was lost).
//!
//! Work is claimed from the store with a lease, so a crashed worker's
//! connection is picked up again once the lease runs out. Each page of a sync
//! commits with the cursor that follows it. A failed watch or sync is retried
//! with doubling waits (a provider's Retry-After is honoured), and counted in
//! the plugin's health like every plugin call.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::App;
use crate::model::{Instant, KeyedSignal, PluginFault, SyncedEvent};
use crate::plugins::LoadedPlugin;
use crate::presence::engine::rules;
use crate::store::calendar::{CalendarSync, PageUpdate, event_key};
use crate::store::presence::EngineRules;
use crate::store::{StoreError, now_ms};

/// How long a claim holds a connection; extended before each plugin call and
/// each page's write, so it outlasts the longest plugin call (60 s) with room.
const LEASE_MS: i64 = 180_000;
/// Connections worked on at once.
const BATCH: u32 = 8;
/// Pages, and wall-clock time, one claim goes through before letting others
/// have a turn (the sync goes on from its cursor in a later claim).
const MAX_PAGES_PER_CLAIM: u32 = 100;
const CLAIM_BUDGET: Duration = Duration::from_secs(60);
/// A tick claims at most this many batches' worth of connections before it
/// looks for new and gone connections again.
const ROUNDS_PER_TICK: u32 = 16;
/// Events plus removed ids one page may carry; a larger page is refused.
pub const MAX_PAGE_ITEMS: usize = 5_000;
/// The longest Retry-After honoured.
const MAX_RETRY_AFTER_MS: i64 = 24 * 3_600_000;
/// Instants a calendar event may have: from 1970 to the end of year 9999.
const LATEST_INSTANT: Instant = 253_402_300_799_999;
/// A synced connection is synced again after this long even if no
/// notification asked: notifications can be lost.
pub const RESYNC_MS: i64 = 6 * 3_600_000;
/// When `watch` gave no expiry, it is called again after this long.
const REWATCH_MS: i64 = 24 * 3_600_000;
/// How often the worker looks for new connections when nothing is due.
const POLL: Duration = Duration::from_secs(30);
/// Retry waits: doubling from the first, capped at the last.
const RETRY_FIRST_MS: i64 = 30_000;
const RETRY_MAX_MS: i64 = 3_600_000;

/// What a plugin (or the API) asks the worker to do for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Sync,
    Watch,
}

/// Marks `connections` (named by `plugin`, in `tenant`) due for a sync or a
/// watch now and wakes the worker. Names that are not the plugin's tracked
/// connections in `tenant` are logged and ignored.
pub async fn request(
    app: &App,
    tenant: &str,
    plugin: &str,
    wanted: Wanted,
    connections: &[String],
) -> Result<(), StoreError> {
    let marked = app
        .store
        .request_calendar(
            tenant,
            plugin,
            wanted == Wanted::Watch,
            connections,
            now_ms(),
        )
        .await?;
    if marked.len() < connections.len() {
        let ignored: Vec<&String> = connections.iter().filter(|c| !marked.contains(c)).collect();
        tracing::warn!(
            plugin,
            tenant,
            ?wanted,
            ?ignored,
            "asked for connections this plugin does not sync; ignored"
        );
    }
    if !marked.is_empty() {
        app.engine.wake_calendar();
    }
    Ok(())
}

/// Runs the worker until the task is aborted.
pub async fn run(app: Arc<App>) {
    loop {
        let run = tick(&app).await.map_err(|e| {
            tracing::warn!(error = %e, "calendar sync round failed; retrying");
            e.to_string()
        });
        let wait = match app.store.next_calendar_due().await {
            Ok(Some(due)) => {
                Duration::from_millis((due - now_ms()).clamp(0, POLL.as_millis() as i64) as u64)
            }
            _ => POLL,
        };
        // Watches, renewals and syncs: the health report's job "calendar-sync".
        app.health.job_ran(
            "calendar-sync",
            run,
            Some(now_ms() + wait.as_millis() as i64),
        );
        tokio::select! {
            _ = app.engine.calendar_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One round: track new and gone connections, then work through what is due.
async fn tick(app: &Arc<App>) -> Result<(), StoreError> {
    let calendars: Vec<String> = app
        .registry
        .all()
        .iter()
        .filter(|(_, p)| p.pre.is_calendar())
        .map(|(name, _)| name.clone())
        .collect();
    let rules = rules(app).await;
    let (untracked, effects) = app
        .store
        .track_calendar_connections(&calendars, now_ms(), &rules)
        .await?;
    app.engine.publish(effects);
    for gone in untracked {
        let Some(plugin) = app.registry.get(&gone.plugin) else {
            continue;
        };
        // Best effort: a subscription left behind lapses by itself.
        match app
            .runtime
            .unwatch(&plugin.pre, &plugin.grants, &gone.tenant, &gone.connection)
            .await
        {
            Ok(Ok(())) => {
                tracing::info!(tenant = %gone.tenant, connection = %gone.connection, "calendar subscriptions stopped")
            }
            Ok(Err(fault)) => {
                tracing::warn!(tenant = %gone.tenant, connection = %gone.connection, error = %fault, "stopping calendar subscriptions failed; they lapse by themselves")
            }
            Err(e) => {
                tracing::warn!(tenant = %gone.tenant, connection = %gone.connection, error = %e, "stopping calendar subscriptions failed; they lapse by themselves")
            }
        }
    }
    // Up to BATCH connections at once, a freed slot refilled at once: one slow
    // provider does not hold the others back.
    let mut running = tokio::task::JoinSet::new();
    let mut claims_left = BATCH * ROUNDS_PER_TICK;
    loop {
        let room = BATCH.saturating_sub(running.len() as u32).min(claims_left);
        if room > 0 {
            let claimed = app
                .store
                .claim_calendar_syncs(now_ms(), LEASE_MS, room)
                .await?;
            claims_left -= claimed.len() as u32;
            for sync in claimed {
                running.spawn(work_and_release(app.clone(), sync, rules.clone()));
            }
        }
        if running.join_next().await.is_none() {
            return Ok(());
        }
    }
}

/// Works on one claimed connection, then lets go of it.
async fn work_and_release(app: Arc<App>, sync: CalendarSync, rules: EngineRules) {
    let (tenant, connection) = (&sync.tenant, &sync.connection);
    match work_on(&app, &sync, &rules).await {
        Ok(()) => {}
        Err(StoreError::ClaimLost(_)) => {
            tracing::info!(%tenant, %connection, "calendar claim lapsed and was taken by another worker; its work there stands");
            return;
        }
        Err(e) => {
            tracing::warn!(%tenant, %connection, error = %e, "calendar sync could not be recorded; the claim lapses and it is tried again");
            return;
        }
    }
    if let Err(e) = app.store.release_calendar_claim(&sync).await {
        tracing::warn!(%tenant, %connection, error = %e, "releasing a calendar claim failed; it lapses");
    }
}

/// Watches and/or syncs one claimed connection.
async fn work_on(app: &App, sync: &CalendarSync, rules: &EngineRules) -> Result<(), StoreError> {
    let now = now_ms();
    let Some(plugin) = app
        .registry
        .get(&sync.plugin)
        .filter(|p| p.pre.is_calendar())
    else {
        let error = format!("calendar plugin {:?} is not loaded", sync.plugin);
        let watching = sync.watch_due(now);
        return app
            .store
            .calendar_failed(sync, watching, &error, now + RETRY_FIRST_MS * 10)
            .await;
    };
    if sync.watch_due(now) {
        watch(app, &plugin, sync, now).await?;
    }
    if sync.sync_due(now) {
        sync_pages(app, &plugin, sync, rules).await?;
    }
    Ok(())
}

async fn watch(
    app: &App,
    plugin: &LoadedPlugin,
    sync: &CalendarSync,
    now: Instant,
) -> Result<(), StoreError> {
    let (tenant, connection) = (&sync.tenant, &sync.connection);
    if app.runtime.services().public_base.get().is_none() {
        // Not serving yet (the address is known once the listener is bound).
        let error = "the host has no address for providers to notify yet: set public_url";
        return app
            .store
            .calendar_failed(sync, true, error, now + 2_000)
            .await;
    }
    let answer = app
        .runtime
        .watch(&plugin.pre, &plugin.grants, tenant, connection)
        .await;
    match answer {
        Ok(Ok(lease)) if lease.expires.is_some_and(|e| e <= now_ms()) => {
            let error = "the provider's subscriptions lapse before they were made";
            failed(app, sync, true, error, None).await
        }
        Ok(Ok(lease)) => {
            let after = now_ms();
            // Subscriptions that had lapsed (or never existed) may have missed
            // changes: sync now. A first watch comes with its first sync anyway.
            let lapsed = sync.watch_expires_at.is_some_and(|e| e <= now);
            tracing::info!(%tenant, %connection, expires = ?lease.expires, lapsed, "calendar watched");
            app.store
                .calendar_watched(
                    sync,
                    lease.expires,
                    renew_at(after, lease.expires),
                    lapsed.then_some(after),
                    after,
                )
                .await?;
            if lapsed {
                app.engine.wake_calendar();
            }
            Ok(())
        }
        Ok(Err(fault)) => failed(app, sync, true, &fault.to_string(), retry_after(&fault)).await,
        Err(e) => failed(app, sync, true, &e.to_string(), None).await,
    }
}

/// Goes through a sync's pages, committing each with the cursor after it.
async fn sync_pages(
    app: &App,
    plugin: &LoadedPlugin,
    sync: &CalendarSync,
    rules: &EngineRules,
) -> Result<(), StoreError> {
    let (tenant, connection) = (&sync.tenant, &sync.connection);
    let claimed_at = std::time::Instant::now();
    // A sync resumed from an earlier claim started when its first page did.
    let started = match (sync.paging, sync.sync_started_at) {
        (true, Some(started)) => started,
        _ => now_ms(),
    };
    // A sync from no cursor is a full one: what is not in it is gone.
    let mut full = sync.cursor.is_none() && !sync.paging;
    // A full sync under way (resumed from an earlier claim, or started here)
    // sweeps, at its last page, what it did not bring.
    let mut sweep = sync.sweep_before.filter(|_| sync.paging);
    let mut cursor = sync.cursor.clone();
    let zone: Tz = app
        .store
        .user_time_zone(tenant, &sync.user)
        .await?
        .and_then(|z| z.parse().ok())
        .unwrap_or(Tz::UTC);
    let chain = match crate::api::tenants::chain_for(app, tenant).await {
        Ok(chain) => chain.classifiers,
        Err(e) => {
            return failed(
                app,
                sync,
                false,
                &format!("reading the tenant's classifiers: {e}"),
                None,
            )
            .await;
        }
    };
    let origin = plugin.grants.plugin.as_str();
    for _ in 0..MAX_PAGES_PER_CLAIM {
        if claimed_at.elapsed() > CLAIM_BUDGET {
            break;
        }
        app.store
            .extend_calendar_claim(sync, now_ms() + LEASE_MS)
            .await?;
        let asked_at = now_ms();
        let answer = app
            .runtime
            .sync_page(
                &plugin.pre,
                &plugin.grants,
                tenant,
                connection,
                cursor.as_deref(),
            )
            .await;
        let page = match answer {
            Ok(Ok(page)) => page,
            Ok(Err(fault)) => {
                return failed(app, sync, false, &fault.to_string(), retry_after(&fault)).await;
            }
            Err(e) => return failed(app, sync, false, &e.to_string(), None).await,
        };
        let items = page.events.len() + page.removed.len();
        if items > MAX_PAGE_ITEMS {
            let error =
                format!("a page of {items} items, above the {MAX_PAGE_ITEMS} a page may carry");
            return failed(app, sync, false, &error, None).await;
        }
        let now = now_ms();
        let mut removed = page.removed;
        let mut signals: Vec<KeyedSignal> = Vec::with_capacity(page.events.len());
        for synced in &page.events {
            let SyncedEvent { event, show_as } = synced;
            let in_range = |t: Instant| (0..=LATEST_INSTANT).contains(&t);
            if !in_range(event.start) || !in_range(event.end) {
                tracing::warn!(%tenant, %connection, event = %event.id, "an event outside 1970-9999; skipped");
                continue;
            }
            let mut event = event.clone();
            if event.all_day {
                place_all_day(&mut event, zone);
            }
            // Over already: nothing to say about it (and whatever was, goes).
            if event.end <= now || event.end <= event.start {
                removed.push(event.id.clone());
                continue;
            }
            signals.push(
                crate::classify::event_signal(
                    crate::classify::Chain {
                        registry: &app.registry,
                        classifiers: &chain,
                        tenant,
                    },
                    &sync.user,
                    event_key(connection, &event.id),
                    origin,
                    &event,
                    *show_as,
                )
                .await,
            );
        }
        let more = page.more && page.next_cursor.is_some();
        if page.reset || full {
            // Everything written from now on is this full sync's.
            sweep = Some(asked_at);
        }
        let update = PageUpdate {
            reset: page.reset || full,
            signals: &signals,
            removed: &removed,
            next_cursor: page.next_cursor.as_deref(),
            more,
            next_sync_at: Some(now + RESYNC_MS),
            started,
            sweep,
        };
        app.store
            .extend_calendar_claim(sync, now_ms() + LEASE_MS)
            .await?;
        let effects = app
            .store
            .apply_calendar_page(sync, &update, now, rules)
            .await?;
        app.engine.publish(effects);
        if !more {
            tracing::info!(%tenant, %connection, "calendar synced");
            return Ok(());
        }
        full = false;
        cursor = page.next_cursor;
    }
    // More pages remain: the row stays due (apply_calendar_page set it), and
    // the next round goes on from the stored cursor.
    Ok(())
}

async fn failed(
    app: &App,
    sync: &CalendarSync,
    watching: bool,
    error: &str,
    retry_after_ms: Option<u64>,
) -> Result<(), StoreError> {
    let what = if watching { "watch" } else { "sync" };
    let asked = retry_after_ms.unwrap_or(0).min(MAX_RETRY_AFTER_MS as u64) as i64;
    let failures = if watching {
        sync.watch_failures
    } else {
        sync.failures
    };
    let wait = backoff(failures).max(asked);
    tracing::warn!(tenant = %sync.tenant, connection = %sync.connection, error, retry_in_ms = wait, "calendar {what} failed");
    app.store
        .calendar_failed(sync, watching, error, now_ms().saturating_add(wait))
        .await
}

fn retry_after(fault: &PluginFault) -> Option<u64> {
    match fault {
        PluginFault::Upstream { retry_after_ms, .. } => *retry_after_ms,
        _ => None,
    }
}

/// The wait after `failures` earlier consecutive failures: doubling, capped,
/// with up to a fifth added at random so connections do not retry in step.
fn backoff(failures: u32) -> i64 {
    let base = RETRY_FIRST_MS
        .saturating_mul(1_i64 << failures.min(20))
        .min(RETRY_MAX_MS);
    base + rand::random_range(0..=base / 5)
}

/// When to call `watch` again: a quarter of the lease before it lapses (at
/// most an hour before), and not sooner than a second from now.
pub fn renew_at(now: Instant, expires: Option<Instant>) -> Instant {
    match expires {
        Some(expires) => {
            let margin = (expires.saturating_sub(now) / 4).clamp(0, 3_600_000);
            expires
                .saturating_sub(margin)
                .max(now.saturating_add(1_000))
        }
        None => now.saturating_add(REWATCH_MS),
    }
}

/// Places an all-day event's dates (midnight UTC of its first day and of the
/// day after its last) at midnight in the person's zone.
fn place_all_day(event: &mut crate::model::CalendarEvent, zone: Tz) {
    let local_midnight = |instant: Instant| -> Option<Instant> {
        let date: NaiveDate = chrono::DateTime::from_timestamp_millis(instant)?.date_naive();
        let midnight = date.and_hms_opt(0, 0, 0)?;
        Some(super::local(zone, midnight).timestamp_millis())
    };
    if let (Some(start), Some(end)) = (local_midnight(event.start), local_midnight(event.end)) {
        event.start = start;
        event.end = end;
        event.time_zone = Some(zone.name().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renewal_comes_a_quarter_of_the_lease_early_at_most_an_hour() {
        // A Graph presence subscription: 55 minutes.
        assert_eq!(renew_at(0, Some(55 * 60_000)), 55 * 60_000 - 55 * 15_000);
        // A Google channel of a week: an hour before.
        let week = 7 * 24 * 3_600_000;
        assert_eq!(renew_at(0, Some(week)), week - 3_600_000);
        // Lapsed already: soon, not at once in a loop.
        assert_eq!(renew_at(10_000, Some(5_000)), 11_000);
        assert_eq!(renew_at(0, None), REWATCH_MS);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        for (failures, base) in [(0, 30_000), (1, 60_000), (2, 120_000), (10, RETRY_MAX_MS)] {
            let wait = backoff(failures);
            assert!(
                (base..=base + base / 5).contains(&wait),
                "{failures}: {wait}"
            );
        }
    }

    #[test]
    fn all_day_events_are_placed_in_the_persons_zone_across_dst() {
        // 28-29 March 2026 in London: the clocks go forward on the 29th.
        let mut event = crate::model::CalendarEvent {
            id: "e".into(),
            title: "Wedding weekend".into(),
            description: None,
            location: None,
            attendees: vec![],
            start: chrono::Utc
                .with_ymd_and_hms(2026, 3, 28, 0, 0, 0)
                .unwrap()
                .timestamp_millis(),
            end: chrono::Utc
                .with_ymd_and_hms(2026, 3, 30, 0, 0, 0)
                .unwrap()
                .timestamp_millis(),
            time_zone: None,
            all_day: true,
            transparency: crate::model::Transparency::Opaque,
            online_meeting_url: None,
        };
        place_all_day(&mut event, "Europe/London".parse().unwrap());
        // Midnight GMT on the 28th; midnight BST on the 30th is 23:00 UTC on the 29th.
        assert_eq!(
            event.start,
            chrono::Utc
                .with_ymd_and_hms(2026, 3, 28, 0, 0, 0)
                .unwrap()
                .timestamp_millis()
        );
        assert_eq!(
            event.end,
            chrono::Utc
                .with_ymd_and_hms(2026, 3, 29, 23, 0, 0)
                .unwrap()
                .timestamp_millis()
        );
        assert_eq!(event.end - event.start, 47 * 3_600_000);
    }
}
