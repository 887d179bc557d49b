//! Microsoft Graph (v1.0): Outlook calendars and Teams presence.
//!
//! A calendar provider (`wedsync:calendar@0.1.0`):
//! - `watch` keeps two change-notification subscriptions per connection, the
//!   calendar's events and the person's Teams presence ([`subscriptions`]);
//! - `handle-webhook` answers Graph's validation handshake, checks each
//!   notification's `clientState`, asks the host to sync a calendar that
//!   changed and reads a presence that changed ([`notifications`]);
//! - `sync` pages through `me/calendarView/delta`, from a day ago to 90 days
//!   ahead, and continues from the `deltaLink` the last page gave
//!   ([`events`]);
//! - `push-status` sets the app's presence session with `setPresence`
//!   ([`presence`]).
//!
//! Requests go to `{api_base}/v1.0/...` (config `api_base`, default
//! `https://graph.microsoft.com`) with the person's connection, whose token the
//! host adds ([`api`]). `push-status` also needs config `client_id`: the
//! application (client) id Graph expects as setPresence's `sessionId`.

pub mod api;
pub mod events;
pub mod notifications;
pub mod presence;
pub mod subscriptions;
pub mod time;

use presence_sdk::calendar::{CalendarGuest, CalendarPage, Guest, WatchLease};
use presence_sdk::provider::{
    Feature, PluginError, Presence, ProviderInfo, WebhookOutcome, WebhookRequest, config,
};

/// How far back and ahead a full sync reads the calendar.
pub const SYNC_PAST_MS: i64 = 86_400_000;
pub const SYNC_AHEAD_MS: i64 = 90 * 86_400_000;

/// Error codes meaning a delta or skip token is no longer honoured (with 410
/// Gone for Outlook resources, 400 for directory ones): start again.
const RESYNC_CODES: &[&str] = &["syncStateNotFound", "resyncRequired", "syncStateInvalid"];

/// A delta cursor carries when its window was opened: `{opened_ms} {url}`.
/// The window (from a day back to 90 days ahead) is fixed by the first
/// request of a full sync, so after a week the next sync is a full one over a
/// window from then.
const WINDOW_REOPEN_MS: i64 = 7 * 24 * 3_600_000;

fn wrap_cursor(opened: i64, url: &str) -> String {
    format!("{opened} {url}")
}

fn unwrap_cursor(cursor: &str) -> Option<(i64, &str)> {
    let (opened, url) = cursor.split_once(' ')?;
    Some((opened.parse().ok()?, url))
}

/// One page of the calendar view's changes since `cursor` (a `nextLink` or
/// `deltaLink`); a full sync without one, when Graph no longer honours it, or
/// when its window is a week old.
pub fn sync(connection: &str, cursor: Option<String>) -> Result<CalendarPage, PluginError> {
    let api_base = api::api_base();
    let now = presence_sdk::now_ms();
    let full = events::full_sync_url(&api_base, now - SYNC_PAST_MS, now + SYNC_AHEAD_MS);
    let (url, mut opened, mut reset) = match cursor.as_deref().map(unwrap_cursor) {
        None => (full.clone(), now, false),
        Some(Some((opened, url)))
            if events::is_delta_cursor(&api_base, url)
                && (0..WINDOW_REOPEN_MS).contains(&now.saturating_sub(opened)) =>
        {
            (url.to_string(), opened, false)
        }
        Some(Some((_, url))) if events::is_delta_cursor(&api_base, url) => {
            presence_sdk::log::info(&format!(
                "the sync window of {connection} is a week old; syncing in full over a new one"
            ));
            (full.clone(), now, true)
        }
        Some(_) => {
            presence_sdk::log::warn(&format!(
                "the sync cursor of {connection} is not a Graph delta URL under {api_base}; syncing in full"
            ));
            (full.clone(), now, true)
        }
    };
    let service = "Graph GET /me/calendarView/delta";
    let preferences = api::calendar_preferences();
    let mut response = api::send(service, "GET", &url, None, &preferences, connection)?;
    let expired = response.status == 410
        || (response.status == 400
            && api::error_code(&response.body).is_some_and(|c| RESYNC_CODES.contains(&c.as_str())));
    if expired && url != full {
        presence_sdk::log::info(&format!(
            "Graph no longer honours the sync cursor of {connection} ({}); syncing in full",
            response.status
        ));
        reset = true;
        opened = now;
        response = api::send(service, "GET", &full, None, &preferences, connection)?;
    }
    if !(200..300).contains(&response.status) {
        return Err(api::failure(service, &response));
    }
    let reading = events::read_page(&response.body).map_err(|e| {
        PluginError::Internal(format!("{service}: {e}; check the plugin's api_base"))
    })?;
    for warning in &reading.warnings {
        presence_sdk::log::warn(warning);
    }
    let mut page = reading.page;
    // A link is followed with the person's token: one Graph gives outside
    // api_base is refused here, not stored.
    if let Some(link) = &page.next_cursor
        && !events::is_delta_cursor(&api_base, link)
    {
        return Err(PluginError::Upstream(
            presence_sdk::provider::UpstreamFailure {
                message: format!("{service}: the next link is not a delta URL under {api_base}"),
                status: Some(response.status),
                retry_after_ms: None,
            },
        ));
    }
    page.next_cursor = page.next_cursor.map(|link| wrap_cursor(opened, &link));
    page.reset = reset;
    Ok(page)
}

/// Sets (or, for offline, clears) the app's presence session for the person.
pub fn push(connection: &str, presence: &Presence) -> Result<(), PluginError> {
    let session_id = presence_sdk::settings::setting(&config::get, "client_id").ok_or_else(|| {
        PluginError::Internal(
            "config client_id is not set: setPresence needs the app's (client) id as its sessionId; set [plugins.microsoft-graph.config] client_id".into(),
        )
    })?;
    let api_base = api::api_base();
    let user_id = subscriptions::graph_user_id(&api_base, connection)?;
    let mut call = presence::call_for(&session_id, presence, presence_sdk::now_ms());
    let own = presence::own(connection);
    if let Some(pair) = presence::pair_of(presence.availability)
        && presence::repeats_own(pair, own.as_ref().map(|(a, b)| (a.as_str(), b.as_str())))
    {
        call = presence::PresenceCall::Clear(serde_json::json!({ "sessionId": session_id }));
    }
    let service = format!("Graph POST /users/{{id}}/presence/{}", call.action());
    let url = format!("{api_base}/v1.0/users/{user_id}/presence/{}", call.action());
    let response = api::send(&service, "POST", &url, Some(call.body()), &[], connection)?;
    if !(200..300).contains(&response.status) {
        return Err(api::failure(&service, &response));
    }
    match call {
        presence::PresenceCall::Set(_) => {
            presence::remember_push(connection, presence, presence_sdk::now_ms())
        }
        presence::PresenceCall::Clear(_) => presence::forget_push(connection),
    }
    Ok(())
}

/// The component's exports (exported only in the wasm build, see below).
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
struct MicrosoftGraph;

impl Guest for MicrosoftGraph {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            display_name: "Microsoft Graph".into(),
            features: vec![
                Feature::Webhooks,
                Feature::PushStatus,
                Feature::SyncCalendar,
            ],
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        notifications::handle(request)
    }

    fn push_status(connection: String, presence: Presence) -> Result<(), PluginError> {
        push(&connection, &presence)
    }

    presence_sdk::unsupported!(sync_calendar, send_notification);
}

impl CalendarGuest for MicrosoftGraph {
    fn watch(connection: String) -> Result<WatchLease, PluginError> {
        subscriptions::watch(&connection, presence_sdk::now_ms())
    }

    fn unwatch(connection: String) -> Result<(), PluginError> {
        subscriptions::unwatch(&connection)
    }

    fn sync(connection: String, cursor: Option<String>) -> Result<CalendarPage, PluginError> {
        sync(&connection, cursor)
    }
}

// Only in the component: natively (the unit tests) a cdylib exporting the
// calendar interface's symbols, whose names hold ':', does not link.
#[cfg(target_arch = "wasm32")]
presence_sdk::export_calendar_provider!(MicrosoftGraph);
