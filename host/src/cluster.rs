//! Replicas on one PostgreSQL hear of each other's work through `LISTEN/NOTIFY`.
//!
//! Every worker already sleeps only until the store's earliest due time, and
//! at most a minute: that polling alone keeps several replicas correct. What
//! NOTIFY adds is speed. A replica that commits something another replica's
//! workers could act on (a presence change, a queued push, a submitted
//! notification, a requested sync) announces it. The others wake the matching
//! worker at once, and feed presence changes to their own SSE subscribers,
//! so a client connected to replica B sees a change made on replica A.
//!
//! Announcements are coalesced: a burst of commits becomes one NOTIFY of the
//! kinds of work it made. A replica ignores its own. If the listening
//! connection drops, the notifications sent meanwhile are lost, so a
//! reconnect wakes every worker, and the polling covers the gap. SQLite has one
//! process and no peers: none of this runs there.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use crate::App;
use crate::store::presence::Change;

/// The NOTIFY channel (deployments sharing a server tell theirs apart by schema).
pub const CHANNEL: &str = "presence_host";

/// Kinds of work, as bits of one announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Work {
    /// Presence changed (new rows in the change log).
    Presence = 1,
    /// Status pushes were queued.
    Outbox = 2,
    /// Presence webhook messages were queued.
    Webhooks = 4,
    /// Notifications were submitted or may go now.
    Notifications = 8,
    /// A calendar sync or watch was requested.
    Calendar = 16,
    /// Someone's presence changes on its own sooner than planned.
    Scheduler = 32,
}

impl Work {
    const ALL: [Work; 6] = [
        Work::Presence,
        Work::Outbox,
        Work::Webhooks,
        Work::Notifications,
        Work::Calendar,
        Work::Scheduler,
    ];

    fn of(bits: u8) -> impl Iterator<Item = Work> {
        Self::ALL
            .into_iter()
            .filter(move |w| bits & (*w as u8) != 0)
    }
}

/// How many of its own change numbers a replica remembers, so as not to feed
/// them to its subscribers a second time when it reads the log after a peer's
/// announcement. Past that, a change may be fed twice: streams drop repeats.
const OWN_CHANGES: usize = 8192;

/// This replica's side: what it has yet to announce, and the changes it
/// published itself.
#[derive(Default)]
pub struct Peers {
    /// Set once the announcer runs (PostgreSQL only); announcing is a no-op before.
    active: AtomicBool,
    pending: AtomicU8,
    kick: Notify,
    own: Mutex<OwnChanges>,
}

/// Change numbers this replica published, oldest first, bounded.
#[derive(Default)]
struct OwnChanges {
    seqs: HashSet<i64>,
    order: VecDeque<i64>,
}

impl Peers {
    /// Remembers changes this replica published to its own subscribers.
    pub(crate) fn published(&self, changes: &[Change]) {
        if changes.is_empty() || !self.active.load(Ordering::Relaxed) {
            return;
        }
        let mut own = self.own.lock().expect("own changes lock");
        for change in changes {
            if own.seqs.insert(change.seq) {
                own.order.push_back(change.seq);
            }
        }
        while own.order.len() > OWN_CHANGES {
            if let Some(oldest) = own.order.pop_front() {
                own.seqs.remove(&oldest);
            }
        }
    }

    /// The changes read from the log that this replica did not publish itself.
    fn foreign(&self, changes: Vec<Change>) -> Vec<Change> {
        let mut own = self.own.lock().expect("own changes lock");
        // Each is read from the log once; its number is not needed again.
        changes
            .into_iter()
            .filter(|c| !own.seqs.remove(&c.seq))
            .collect()
    }

    /// Tells the other replicas of `work` (soon, coalesced with what follows).
    pub fn announce(&self, work: Work) {
        if self.active.load(Ordering::Relaxed) {
            self.pending.fetch_or(work as u8, Ordering::AcqRel);
            self.kick.notify_one();
        }
    }
}

/// An announcement: `{schema} {origin} {bits}`.
fn payload(schema: &str, origin: &str, bits: u8) -> String {
    format!("{schema} {origin} {bits}")
}

/// Reads an announcement meant for `schema` and not made by `origin`: its work bits.
fn parse(payload: &str, schema: &str, origin: &str) -> Option<u8> {
    let mut parts = payload.split(' ');
    let (from_schema, from, bits) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || from_schema != schema || from == origin {
        return None;
    }
    bits.parse().ok()
}

/// Starts the announcer and the listener when the store is PostgreSQL's.
pub fn start(app: &Arc<App>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(url) = app.store.postgres_url() else {
        return Vec::new();
    };
    let origin = hex::encode(rand::random::<[u8; 8]>());
    app.engine.peers.active.store(true, Ordering::Release);
    vec![
        tokio::spawn(announce_loop(app.clone(), origin.clone())),
        tokio::spawn(listen_loop(app.clone(), url.to_string(), origin)),
    ]
}

async fn announce_loop(app: Arc<App>, origin: String) {
    let peers = &app.engine.peers;
    let schema = app.store.schema().unwrap_or_default().to_string();
    loop {
        peers.kick.notified().await;
        let bits = peers.pending.swap(0, Ordering::AcqRel);
        if bits == 0 {
            continue;
        }
        if let Err(e) = app
            .store
            .notify(CHANNEL, &payload(&schema, &origin, bits))
            .await
        {
            // The others' polling picks the work up within a minute.
            tracing::warn!(error = %e, "telling the other replicas failed");
        }
    }
}

/// How long the listener waits before connecting again after a failure.
const RECONNECT: Duration = Duration::from_secs(2);

async fn listen_loop(app: Arc<App>, url: String, origin: String) {
    let schema = app.store.schema().unwrap_or_default().to_string();
    // Presence changes are read from the log after the last one fed in.
    let mut fed = app.store.latest_change().await.ok().flatten().unwrap_or(0);
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listening for the other replicas failed; retrying");
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(RECONNECT).await;
            continue;
        }
        tracing::debug!("listening for the other replicas");
        // Whatever was announced while we were not listening: wake everything.
        woken(&app, u8::MAX, &mut fed).await;
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if let Some(bits) = parse(n.payload(), &schema, &origin) {
                        woken(&app, bits, &mut fed).await;
                    }
                }
                // The connection dropped and was made again: notifications
                // may have been missed.
                Ok(None) => woken(&app, u8::MAX, &mut fed).await,
                Err(e) => {
                    tracing::warn!(error = %e, "listening for the other replicas failed; reconnecting");
                    tokio::time::sleep(RECONNECT).await;
                    break;
                }
            }
        }
    }
}

/// Changes read from the log per page when feeding a peer's changes in.
const FEED_PAGE: u32 = 500;

/// Wakes this replica's workers for `bits` of another's work, feeding its
/// presence changes (those after `fed`) to this replica's subscribers.
async fn woken(app: &App, bits: u8, fed: &mut i64) {
    for work in Work::of(bits) {
        match work {
            Work::Presence => loop {
                match app.store.changes_since(None, *fed, FEED_PAGE).await {
                    Ok(page) => {
                        let full = page.len() as u32 == FEED_PAGE;
                        if let Some(last) = page.last() {
                            *fed = last.seq;
                        }
                        app.engine.feed(app.engine.peers.foreign(page));
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading another replica's presence changes failed");
                        break;
                    }
                }
            },
            other => app.engine.wake_local(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_reach_other_replicas_of_the_same_schema_only() {
        let p = payload("tenant_a", "r1", Work::Outbox as u8 | Work::Presence as u8);
        assert_eq!(parse(&p, "tenant_a", "r2"), Some(3));
        assert_eq!(parse(&p, "tenant_a", "r1"), None, "our own");
        assert_eq!(parse(&p, "tenant_b", "r2"), None, "another deployment");
        assert_eq!(parse("tenant_a r1", "tenant_a", "r2"), None);
        assert_eq!(parse("tenant_a r1 3 x", "tenant_a", "r2"), None);
        assert_eq!(parse("tenant_a r1 999", "tenant_a", "r2"), None);
        assert_eq!(
            Work::of(3).collect::<Vec<_>>(),
            vec![Work::Presence, Work::Outbox]
        );
    }
}
