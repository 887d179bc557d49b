//! Calendar providers end to end (issue 6): the real host binary with the
//! bundled `google-calendar` and `microsoft-graph` plugins, against loopback
//! emulators of Google Calendar API v3 and Microsoft Graph v1.0 that answer
//! and notify as the providers' docs say (tests/support/google.rs, graph.rs).
//!
//! A connection seeded with an access token is watched (a channel, or two
//! subscriptions), synced in full, then kept in step by the providers'
//! notifications; what the person's calendar says becomes their presence.

mod support;

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, TimeZone, Utc};
use serde_json::{Value, json};
use support::google::{GoogleCalendarEmulator, WeeklySeries};
use support::graph::{self as graph_support, GraphEmulator, SubscriptionKind, graph_local};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or fails naming `what` (and the host's log).
async fn eventually<T, F, Fut>(host: &Host, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}; host log:\n{}", host.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Whole minutes from now, so instants compare exactly after a round trip.
fn minutes_from_now(m: i64) -> DateTime<Utc> {
    let now = Utc::now();
    Utc.timestamp_opt(now.timestamp() - now.timestamp() % 60, 0)
        .unwrap()
        + TimeDelta::minutes(m)
}

fn host_for(plugins: &[&str], plugin: &str, base: &str, allowed: &str, extra: &str) -> Host {
    let mut dir = PluginsDir::new();
    for p in plugins {
        dir = dir.with_bundled(p);
    }
    Host::start(
        dir,
        &format!(
            "[plugins.{plugin}]\nextra_allowed_hosts = [\"{allowed}\"]\n\
             [plugins.{plugin}.config]\napi_base = \"{base}\"\n{extra}"
        ),
        &[],
    )
}

async fn seed(host: &Host, name: &str, plugin: &str, user: &str, token: &str) {
    let (status, body) = host
        .api(
            "PUT",
            &format!("/api/tenants/default/connections/{name}"),
            &host.admin.clone(),
            Some(json!({"plugin": plugin, "user": user, "access_token": token})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn calendar(host: &Host, connection: &str) -> Option<Value> {
    let (status, body) = host.get_json("/api/tenants/default/calendars").await;
    assert_eq!(status, 200, "{body}");
    body["calendars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connection"] == connection)
        .cloned()
}

/// Waits until a sync of `connection` completed after `after` (ms).
async fn synced_after(host: &Host, connection: &str, after: i64) -> Value {
    eventually(
        host,
        &format!("a sync of {connection} after {after}"),
        || async {
            calendar(host, connection)
                .await
                .filter(|c| c["last_synced_at"].as_i64().is_some_and(|t| t >= after))
                .filter(|c| c["paging"] == false)
        },
    )
    .await
}

/// The person's synced events of `connection`: (id, start, end, availability).
async fn events(host: &Host, user: &str, connection: &str) -> Vec<(String, i64, i64, String)> {
    let store = host.store().await;
    let events = store
        .synced_events("default", user, connection)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, s, e, a)| (id, s.unwrap(), e.unwrap(), a))
        .collect();
    store.close().await;
    events
}

async fn ids(host: &Host, user: &str, connection: &str) -> Vec<String> {
    let mut ids: Vec<String> = events(host, user, connection)
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    ids.sort();
    ids
}

async fn presence(host: &Host, user: &str) -> Value {
    let (status, body) = host.get_json(&format!("/api/presence/{user}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

// --- Google Calendar ----------------------------------------------------------

const ANA: &str = "ana";
const ANA_TOKEN: &str = "ya29.ana";
const ANA_CALENDAR: &str = "ana@example.com";
const GOOGLE: &str = "google-calendar:ana";

fn google_event(id: &str, summary: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    json!({
        "id": id,
        "summary": summary,
        "start": {"dateTime": rfc3339(start), "timeZone": "Europe/London"},
        "end": {"dateTime": rfc3339(end), "timeZone": "Europe/London"},
    })
}

struct GoogleSetup {
    google: GoogleCalendarEmulator,
    host: Host,
}

/// A host with the Google plugin (and the wedding rules) on the emulator;
/// `prepare` fills the calendar before the connection is made.
async fn google(prepare: impl FnOnce(&GoogleCalendarEmulator)) -> GoogleSetup {
    let google = GoogleCalendarEmulator::start().await;
    google.add_calendar(ANA_TOKEN, ANA_CALENDAR, "Europe/London");
    prepare(&google);
    let host = host_for(
        &["google-calendar", "wedding-keywords"],
        "google-calendar",
        &google.base_url(),
        &google.allowed_host(),
        "",
    );
    let (status, body) = host
        .api(
            "PUT",
            &format!("/api/users/{ANA}"),
            &host.admin.clone(),
            Some(json!({"time_zone": "Europe/London"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    seed(&host, GOOGLE, "google-calendar", ANA, ANA_TOKEN).await;
    GoogleSetup { google, host }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_full_sync_then_notifications_keep_presence_in_step() {
    let (start, end) = (minutes_from_now(-30), minutes_from_now(60));
    let GoogleSetup { google, host } = google(|g| {
        let mut ceremony = google_event("ceremony", "Ceremony rehearsal", start, end);
        ceremony["location"] = json!("Old Barn");
        g.upsert_event(ANA_CALENDAR, ceremony);
        let mut free = google_event("lunch", "Lunch", start, end);
        free["transparency"] = json!("transparent");
        g.upsert_event(ANA_CALENDAR, free);
        let mut ooo = google_event(
            "holiday",
            "Holiday",
            minutes_from_now(24 * 60),
            minutes_from_now(48 * 60),
        );
        ooo["eventType"] = json!("outOfOffice");
        g.upsert_event(ANA_CALENDAR, ooo);
        g.upsert_event(
            ANA_CALENDAR,
            google_event(
                "past",
                "Yesterday",
                minutes_from_now(-1500),
                minutes_from_now(-1440),
            ),
        );
    })
    .await;

    // Watched: one channel, registered at the host's webhook route for the tenant.
    let channel = eventually(&host, "a live channel", || async {
        google.live_channels(ANA_CALENDAR).into_iter().next()
    })
    .await;
    assert_eq!(
        channel.address,
        host.url("/api/webhooks/google-calendar/default")
    );
    assert_eq!(channel.token.as_ref().map(String::len), Some(64));
    let first = synced_after(&host, GOOGLE, 0).await;
    assert!(first["watch_expires_at"].as_i64().unwrap() > ms(Utc::now()));

    // The full sync kept the busy ceremony and the holiday; free time and
    // what is over say nothing.
    assert_eq!(ids(&host, ANA, GOOGLE).await, ["ceremony", "holiday"]);
    let synced = events(&host, ANA, GOOGLE).await;
    let holiday = synced.iter().find(|e| e.0 == "holiday").unwrap();
    assert_eq!(holiday.3, "out_of_office");
    let now = presence(&host, ANA).await;
    assert_eq!(now["source"], "calendar");
    assert_eq!(now["availability"], "busy");
    assert_eq!(now["status_text"], "📸 Ceremony prep - Old Barn");
    assert_eq!(now["until"], ms(end));
    let lists = google.list_calls();
    assert!(lists[0].is_full_sync_start(), "{lists:?}");
    assert_eq!(lists[0].param("singleEvents"), Some("true"));
    // Health counts the plugin's watch and sync calls and the worker's runs.
    let (_, health) = host.get_json("/api/integrations/health").await;
    let job = health["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "calendar-sync")
        .cloned();
    assert!(job.is_some_and(|j| j["last_outcome"] == "ok"), "{health}");
    let plugin = health["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin"] == "google-calendar")
        .cloned()
        .unwrap();
    assert!(plugin["calls"].as_u64().unwrap() >= 2, "{plugin}");

    // A focus block starts now: Google notifies, the host syncs incrementally.
    let synced_at = first["last_synced_at"].as_i64().unwrap();
    let mut focus = google_event(
        "focus",
        "Editing",
        minutes_from_now(-5),
        minutes_from_now(20),
    );
    focus["eventType"] = json!("focusTime");
    google.upsert_event(ANA_CALENDAR, focus);
    google.flush().await;
    let exists: Vec<_> = google
        .deliveries()
        .into_iter()
        .filter(|d| d.state == "exists")
        .collect();
    assert!(
        !exists.is_empty() && exists.iter().all(|d| d.status == Some(200)),
        "{exists:?}"
    );
    synced_after(&host, GOOGLE, synced_at + 1).await;
    eventually(&host, "the focus block in presence", || async {
        let p = presence(&host, ANA).await;
        (p["availability"] == "do_not_disturb").then_some(())
    })
    .await;
    let last = google.list_calls().last().cloned().unwrap();
    assert!(last.is_incremental(), "{last:?}");

    // Cancelled: the focus block goes, and the ceremony shows again.
    assert!(google.cancel_event(ANA_CALENDAR, "focus"));
    eventually(&host, "the cancelled block removed", || async {
        let ids = ids(&host, ANA, GOOGLE).await;
        (ids == ["ceremony", "holiday"]).then_some(())
    })
    .await;
    eventually(&host, "the ceremony back in presence", || async {
        let p = presence(&host, ANA).await;
        (p["availability"] == "busy" && p["status_text"] == "📸 Ceremony prep - Old Barn")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_expired_sync_token_brings_a_full_sync_that_forgets_stale_events() {
    // More than one page (Google's pages hold 250), so the full re-sync's
    // forgetting must wait for its last page.
    const FILLER: usize = 300;
    let GoogleSetup { google, host } = google(|g| {
        for (id, from) in [("a", 60), ("b", 120), ("c", 180)] {
            g.upsert_event(
                ANA_CALENDAR,
                google_event(
                    id,
                    "Vendor call",
                    minutes_from_now(from),
                    minutes_from_now(from + 30),
                ),
            );
        }
        g.load_events(
            ANA_CALENDAR,
            (0..FILLER).map(|i| {
                let start = minutes_from_now(2_000 + 60 * i as i64);
                google_event(
                    &format!("f{i:03}"),
                    "Fitting",
                    start,
                    start + TimeDelta::minutes(30),
                )
            }),
        );
    })
    .await;
    let first = synced_after(&host, GOOGLE, 0).await;
    let held = ids(&host, ANA, GOOGLE).await;
    assert_eq!(held.len(), 3 + FILLER);
    assert_eq!(held[..3], ["a", "b", "c"]);

    // Google drops its sync tokens; event b is deleted meanwhile.
    google.expire_sync_tokens();
    assert!(google.delete_event(ANA_CALENDAR, "b"));
    google.upsert_event(
        ANA_CALENDAR,
        google_event("d", "Florist", minutes_from_now(240), minutes_from_now(270)),
    );
    synced_after(&host, GOOGLE, first["last_synced_at"].as_i64().unwrap() + 1).await;
    eventually(&host, "the full re-sync applied", || async {
        let ids = ids(&host, ANA, GOOGLE).await;
        (ids.len() == 3 + FILLER && ids[..3] == ["a", "c", "d"]).then_some(())
    })
    .await;
    let lists = google.list_calls();
    let gone = lists
        .iter()
        .position(|c| c.status == 410)
        .expect("an incremental call answered 410");
    assert!(lists[gone].is_incremental());
    assert!(
        lists[gone + 1..]
            .iter()
            .any(|c| c.is_full_sync_start() && c.status == 200),
        "{lists:?}"
    );
    assert!(
        lists[gone + 1..].iter().filter(|c| c.status == 200).count() >= 2,
        "the full re-sync took more than one page: {lists:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_all_day_event_across_a_dst_change_is_placed_in_the_persons_zone() {
    // The weekend British clocks go forward (28 March 2027): the Saturday and
    // the Sunday, end exclusive.
    let GoogleSetup { host, .. } = google(|g| {
        g.upsert_event(
            ANA_CALENDAR,
            json!({"id": "weekend", "summary": "Wedding weekend",
                   "start": {"date": "2027-03-27"}, "end": {"date": "2027-03-29"}}),
        );
    })
    .await;
    synced_after(&host, GOOGLE, 0).await;
    let synced = events(&host, ANA, GOOGLE).await;
    assert_eq!(synced.len(), 1, "{synced:?}");
    let (_, start, end, _) = &synced[0];
    // Midnight GMT on the 27th; midnight BST on the 29th is 23:00 UTC on the 28th.
    assert_eq!(
        *start,
        ms(Utc.with_ymd_and_hms(2027, 3, 27, 0, 0, 0).unwrap())
    );
    assert_eq!(
        *end,
        ms(Utc.with_ymd_and_hms(2027, 3, 28, 23, 0, 0).unwrap())
    );
    assert_eq!(end - start, 47 * 3_600_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_recurring_series_with_a_moved_and_a_cancelled_occurrence() {
    let first = minutes_from_now(24 * 60);
    let series_ids = std::sync::Mutex::new(Vec::new());
    let GoogleSetup { google, host } = google(|g| {
        *series_ids.lock().unwrap() = g.add_weekly_series(
            ANA_CALENDAR,
            &WeeklySeries {
                base_id: "tasting",
                summary: "Menu tasting",
                first_start: first,
                duration: Duration::from_secs(3600),
                count: 4,
                time_zone: "Europe/London",
            },
        );
    })
    .await;
    let occurrences = series_ids.into_inner().unwrap();
    let before = synced_after(&host, GOOGLE, 0).await;
    let mut all = occurrences.clone();
    all.sort();
    assert_eq!(ids(&host, ANA, GOOGLE).await, all);

    // The second moves two hours later; the third is cancelled.
    let (moved, cancelled) = (&occurrences[1], &occurrences[2]);
    let moved_start = first + TimeDelta::weeks(1) + TimeDelta::hours(2);
    assert!(google.move_occurrence(
        ANA_CALENDAR,
        moved,
        moved_start,
        moved_start + TimeDelta::hours(1)
    ));
    assert!(google.delete_event(ANA_CALENDAR, cancelled));
    synced_after(
        &host,
        GOOGLE,
        before["last_synced_at"].as_i64().unwrap() + 1,
    )
    .await;
    eventually(&host, "the series' changes", || async {
        let synced = events(&host, ANA, GOOGLE).await;
        let moved_ok = synced
            .iter()
            .any(|e| &e.0 == moved && e.1 == ms(moved_start));
        (synced.len() == 3 && moved_ok && !synced.iter().any(|e| &e.0 == cancelled)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_channels_are_renewed_before_they_lapse_and_the_old_one_stopped() {
    let GoogleSetup { google, host } = google(|g| g.set_channel_ttl(Duration::from_secs(8))).await;
    let first = eventually(&host, "a first channel", || async {
        google.live_channels(ANA_CALENDAR).into_iter().next()
    })
    .await;
    // Renewed a quarter of the lease early: a new channel, the old one stopped.
    let renewed = eventually(&host, "a renewed channel", || async {
        let channels = google.channels();
        let old_stopped = channels.iter().any(|c| c.id == first.id && c.stopped);
        let new = channels.into_iter().find(|c| c.id != first.id && c.live());
        new.filter(|_| old_stopped)
    })
    .await;
    assert!(renewed.expiration_ms > first.expiration_ms);
    // The host records the new lease once Google answered it, a moment after
    // the emulator shows the channel.
    let view = eventually(&host, "the renewed lease recorded", || async {
        calendar(&host, GOOGLE)
            .await
            .filter(|view| view["watch_expires_at"] == renewed.expiration_ms)
    })
    .await;
    assert!(view["watch_due_at"].as_i64().unwrap() < renewed.expiration_ms);
    // Notifications keep arriving through the new channel.
    google.upsert_event(
        ANA_CALENDAR,
        google_event(
            "late",
            "Cake collection",
            minutes_from_now(60),
            minutes_from_now(90),
        ),
    );
    eventually(&host, "the change through the new channel", || async {
        ids(&host, ANA, GOOGLE)
            .await
            .contains(&"late".to_string())
            .then_some(())
    })
    .await;
    assert!(
        google
            .deliveries()
            .iter()
            .any(|d| d.channel_id == renewed.id && d.state == "exists" && d.status == Some(200))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_notifications_with_a_wrong_token_are_refused_and_change_nothing() {
    let GoogleSetup { google, host } = google(|_| {}).await;
    synced_after(&host, GOOGLE, 0).await;
    let channel = google.live_channels(ANA_CALENDAR).remove(0);
    let before = host.digest().await;
    assert_eq!(
        google.notify_with(&channel.id, Some("forged-token")).await,
        Some(401)
    );
    assert_eq!(google.notify_with(&channel.id, None).await, Some(401));
    assert_eq!(
        host.digest().await,
        before,
        "refused notifications change nothing"
    );

    // A real message brings a sync; its redelivery is acknowledged too (it
    // may ask for another sync: requests coalesce and a sync is idempotent).
    let lists_before = google.list_calls().len();
    assert_eq!(google.notify(&channel.id).await, Some(200));
    eventually(&host, "the sync a real notification asked for", || async {
        (google.list_calls().len() > lists_before).then_some(())
    })
    .await;
    let number = google
        .channels()
        .iter()
        .find(|c| c.id == channel.id)
        .unwrap()
        .messages;
    assert_eq!(google.redeliver(&channel.id, number).await, Some(200));
    let store = host.store().await;
    let view = store.calendar_syncs("default").await.unwrap();
    store.close().await;
    assert_eq!(view[0].failures, 0);
}

// --- Microsoft Graph ------------------------------------------------------------

const BO: &str = "bo";
const BO_GRAPH_ID: &str = "u-bo";
const BO_TOKEN: &str = "eyJ.bo";
const OUTLOOK: &str = "microsoft-graph:bo";

fn graph_event(id: &str, subject: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    json!({
        "id": id,
        "subject": subject,
        "showAs": "busy",
        "start": {"dateTime": graph_local(start.naive_utc()), "timeZone": "UTC"},
        "end": {"dateTime": graph_local(end.naive_utc()), "timeZone": "UTC"},
    })
}

async fn graph(prepare: impl FnOnce(&GraphEmulator)) -> (GraphEmulator, Host) {
    let graph = GraphEmulator::start().await;
    graph.add_person(BO_GRAPH_ID, BO_TOKEN);
    prepare(&graph);
    let host = host_for(
        &["microsoft-graph"],
        "microsoft-graph",
        &graph.base_url(),
        &graph.allowed_host(),
        &format!("client_id = \"{}\"\n", graph_support::APPLICATION_ID),
    );
    seed(&host, OUTLOOK, "microsoft-graph", BO, BO_TOKEN).await;
    (graph, host)
}

async fn subscription(
    graph: &GraphEmulator,
    host: &Host,
    kind: SubscriptionKind,
) -> graph_support::Subscription {
    eventually(host, &format!("a live {kind:?} subscription"), || async {
        graph
            .live_subscriptions(BO_GRAPH_ID, kind)
            .into_iter()
            .next()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_subscriptions_are_validated_then_events_sync_by_delta() {
    let (start, end) = (minutes_from_now(-10), minutes_from_now(50));
    let (graph, host) = graph(|g| {
        g.upsert_event(
            BO_GRAPH_ID,
            graph_event("planning", "Seating plan", start, end),
        );
        let mut teams = graph_event(
            "sync",
            "Supplier sync",
            minutes_from_now(120),
            minutes_from_now(150),
        );
        teams["isOnlineMeeting"] = json!(true);
        teams["onlineMeetingProvider"] = json!("teamsForBusiness");
        teams["onlineMeeting"] = json!({"joinUrl": "https://teams.microsoft.com/l/meetup-join/x"});
        g.upsert_event(BO_GRAPH_ID, teams);
        let mut free = graph_event("gym", "Gym", start, end);
        free["showAs"] = json!("free");
        g.upsert_event(BO_GRAPH_ID, free);
    })
    .await;
    let events_sub = subscription(&graph, &host, SubscriptionKind::Events).await;
    let presence_sub = subscription(&graph, &host, SubscriptionKind::Presence).await;
    assert_eq!(
        events_sub.notification_url,
        host.url("/api/webhooks/microsoft-graph/default")
    );
    // Each creation was validated through the host: 200, the token echoed as text.
    let validations: Vec<_> = graph
        .deliveries()
        .into_iter()
        .filter(|d| d.kind == graph_support::DeliveryKind::Validation)
        .collect();
    assert!(validations.len() >= 2, "{validations:?}");
    assert!(
        validations.iter().all(|d| d.status == Some(200)
            && d.url.contains("?validationToken=")
            && !d.answer.is_empty()),
        "{validations:?}"
    );
    assert!(
        events_sub
            .client_state
            .as_ref()
            .is_some_and(|s| s.len() >= 32)
    );
    assert_ne!(events_sub.client_state, presence_sub.client_state);

    let first = synced_after(&host, OUTLOOK, 0).await;
    assert_eq!(ids(&host, BO, OUTLOOK).await, ["planning", "sync"]);
    let now = presence(&host, BO).await;
    assert_eq!(now["availability"], "busy");
    assert_eq!(now["until"], ms(end));
    // The meeting link makes a meeting, not a call.
    let synced = events(&host, BO, OUTLOOK).await;
    assert_eq!(synced.iter().find(|e| e.0 == "sync").unwrap().3, "busy");
    let deltas: Vec<_> = graph
        .calls()
        .into_iter()
        .filter(|c| c.uri.contains("calendarView/delta"))
        .collect();
    assert!(
        deltas[0]
            .prefer
            .iter()
            .any(|p| p.contains("outlook.timezone")),
        "{deltas:?}"
    );
    assert!(!deltas.is_empty());

    // An out-of-office entry arrives by notification (202) and an incremental delta.
    let mut away = graph_event("oof", "Away", minutes_from_now(-1), minutes_from_now(30));
    away["showAs"] = json!("oof");
    graph.upsert_event(BO_GRAPH_ID, away);
    graph.settle().await;
    let notes: Vec<_> = graph
        .notifications()
        .into_iter()
        .filter(|d| d.kind == graph_support::DeliveryKind::Notification)
        .collect();
    assert!(
        !notes.is_empty() && notes.iter().all(|d| d.status == Some(202)),
        "{notes:?}"
    );
    synced_after(
        &host,
        OUTLOOK,
        first["last_synced_at"].as_i64().unwrap() + 1,
    )
    .await;
    eventually(&host, "out of office", || async {
        (presence(&host, BO).await["availability"] == "out_of_office").then_some(())
    })
    .await;
    let last_delta = graph
        .calls()
        .into_iter()
        .rfind(|c| c.uri.contains("calendarView/delta"))
        .unwrap();
    assert!(last_delta.uri.contains("deltatoken"), "{last_delta:?}");

    // Deleted: gone from presence too.
    assert!(graph.delete_event(BO_GRAPH_ID, "oof"));
    eventually(&host, "the deletion", || async {
        (!ids(&host, BO, OUTLOOK).await.contains(&"oof".to_string())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_expired_delta_token_and_a_series_with_an_exception() {
    let first_start = minutes_from_now(24 * 60);
    let (graph, host) = graph(|_| {}).await;
    let first = synced_after(&host, OUTLOOK, 0).await;
    let series = graph.add_series(BO_GRAPH_ID, "standup", "Team standup", first_start, 15, 4);
    graph.settle().await;
    eventually(&host, "the series synced", || async {
        (ids(&host, BO, OUTLOOK).await.len() == 3).then_some(())
    })
    .await;
    let synced = events(&host, BO, OUTLOOK).await;
    let exception = synced.iter().find(|e| e.0 == series.exception).unwrap();
    assert_eq!(
        exception.1,
        ms(first_start + TimeDelta::days(1) + TimeDelta::hours(2))
    );
    assert!(
        !synced
            .iter()
            .any(|e| e.0 == series.deleted || e.0 == series.master)
    );

    // Graph forgets its delta tokens: the next sync is answered 410 and
    // starts over, forgetting what was deleted in the gap.
    let synced_at = calendar(&host, OUTLOOK).await.unwrap()["last_synced_at"]
        .as_i64()
        .unwrap();
    graph.expire_delta_tokens();
    let gone = series.occurrences[0].clone();
    assert!(graph.delete_event(BO_GRAPH_ID, &gone));
    graph.settle().await;
    synced_after(&host, OUTLOOK, synced_at + 1).await;
    eventually(&host, "the full re-sync", || async {
        let ids = ids(&host, BO, OUTLOOK).await;
        (ids.len() == 2 && !ids.contains(&gone)).then_some(())
    })
    .await;
    assert!(first["failures"] == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_a_removed_subscription_is_recreated_and_a_bad_client_state_refused() {
    let (graph, host) = graph(|_| {}).await;
    let events_sub = subscription(&graph, &host, SubscriptionKind::Events).await;
    synced_after(&host, OUTLOOK, 0).await;

    let before = host.digest().await;
    assert_eq!(
        graph
            .notify_with_client_state(&events_sub.id, "not-the-secret")
            .await,
        Some(401)
    );
    assert_eq!(
        host.digest().await,
        before,
        "a refused notification changes nothing"
    );

    // Graph drops the subscription and says so: the host watches again, the
    // renewal answers 404, and the plugin creates a new one.
    assert_eq!(graph.remove_subscription(&events_sub.id).await, Some(202));
    let recreated = eventually(&host, "a new events subscription", || async {
        graph
            .live_subscriptions(BO_GRAPH_ID, SubscriptionKind::Events)
            .into_iter()
            .find(|s| s.id != events_sub.id)
    })
    .await;
    assert_eq!(recreated.notification_url, events_sub.notification_url);
    // And it works: a change notified through it is synced.
    graph.upsert_event(
        BO_GRAPH_ID,
        graph_event(
            "cake",
            "Cake tasting",
            minutes_from_now(60),
            minutes_from_now(90),
        ),
    );
    eventually(&host, "the change through the new subscription", || async {
        ids(&host, BO, OUTLOOK)
            .await
            .contains(&"cake".to_string())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_teams_presence_becomes_a_call_and_what_teams_does_not_know_is_pushed_with_set_presence()
 {
    let (graph, host) = graph(|_| {}).await;
    subscription(&graph, &host, SubscriptionKind::Presence).await;
    synced_after(&host, OUTLOOK, 0).await;

    // A Teams call: Graph notifies, the plugin reads the presence, the host
    // derives a call. Teams shows that call itself: the app's session is
    // cleared rather than set to the same (it would outlive the call).
    graph.set_presence(BO_GRAPH_ID, "Busy", "InACall");
    graph.settle().await;
    eventually(&host, "in a call", || async {
        let p = presence(&host, BO).await;
        (p["availability"] == "in_call" && p["source"] == "call").then_some(())
    })
    .await;
    eventually(&host, "the session cleared", || async {
        graph
            .set_presence_calls()
            .into_iter()
            .find(|c| c.action == "clearPresence")
    })
    .await;
    assert!(
        !graph
            .set_presence_calls()
            .iter()
            .any(|c| c.action == "setPresence" && c.activity.as_deref() == Some("InACall")),
        "{:?}",
        graph.set_presence_calls()
    );

    graph.set_presence(BO_GRAPH_ID, "Available", "Available");
    graph.settle().await;
    eventually(&host, "the call over", || async {
        let p = presence(&host, BO).await;
        (p["availability"] == "available").then_some(())
    })
    .await;

    // What Teams does not know goes out as the app's presence, expiring by
    // itself if the host goes away.
    let (status, body) = host
        .api(
            "PUT",
            &format!("/api/presence/{BO}"),
            &host.admin.clone(),
            Some(json!({"availability": "do_not_disturb", "status_text": "Vows", "duration_minutes": 30})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let pushed = eventually(&host, "a setPresence", || async {
        graph.set_presence_calls().into_iter().find(|c| {
            c.action == "setPresence" && c.availability.as_deref() == Some("DoNotDisturb")
        })
    })
    .await;
    assert_eq!(pushed.session_id, graph_support::APPLICATION_ID);
    assert_eq!(pushed.activity.as_deref(), Some("Presenting"));
    let minutes = pushed.expiration_minutes.unwrap();
    assert!((29..=30).contains(&minutes), "{minutes}");
}
