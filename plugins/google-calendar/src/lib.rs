//! Google Calendar: push notification channels on a person's calendar, and
//! incremental sync with sync tokens (Calendar API v3, a `calendar-provider`).
//!
//! - `watch`: events.watch on the calendar (the `calendar_id` setting,
//!   default `primary`) with a new channel id and token, sent to the host's
//!   `webhook-url`; the lease is the channel's `expiration`. Channels cannot be
//!   renewed, so each `watch` creates one and then stops the one it replaces
//!   (channels.stop); see [`channels`].
//! - `handle-webhook`: a notification is checked against the channel it names
//!   (token in constant time, resource id); `sync` (the handshake Google sends
//!   when a channel is created) is only acknowledged, `exists` and
//!   `not_exists` ask the host for a sync of the channel's connection. The
//!   delivery id is `{channel id}:{message number}`. Notifications carry no
//!   event data ("the notification does not contain any resource data").
//! - `sync`: events.list with `singleEvents=true` (recurring series come as
//!   occurrences), `maxResults=250`, and the cursor's `syncToken`/`pageToken`
//!   ([`cursor`]); a 410 on a cursor starts a full sync, answered with
//!   `reset`. Events are read by [`events`]; errors by [`api`].
//!
//! Every call names the person's connection; the host adds its OAuth token
//! (scope `calendar.readonly`, enough for events.list and events.watch).

pub mod api;
pub mod channels;
pub mod cursor;
pub mod events;

use presence_sdk::calendar::calendar_host::{request_sync, webhook_url};
use presence_sdk::calendar::{CalendarGuest, CalendarPage, WatchLease};
use presence_sdk::log;
use presence_sdk::provider::{
    Feature, PluginError, ProviderInfo, WebhookOutcome, WebhookRequest, config, kv,
};
use presence_sdk::settings;
use presence_sdk::webhook::{answer_only, header, ok};

use crate::api::ListAnswer;
use crate::channels::{ChannelRecord, ConnectionRecord, Notification};
use crate::cursor::Cursor;

/// Where the Calendar API is, unless the `api_base` setting says otherwise.
pub const DEFAULT_API_BASE: &str = "https://www.googleapis.com";
/// The calendar watched and synced, unless the `calendar_id` setting names another.
pub const DEFAULT_CALENDAR_ID: &str = "primary";
/// Events per page: Google's default, asked for explicitly (at most 2,500).
pub const MAX_RESULTS: u32 = 250;

pub struct GoogleCalendar;

fn api_base() -> String {
    settings::api_base(&config::get, DEFAULT_API_BASE)
}

/// `{api_base}/calendar/v3/calendars/{calendar_id}/events`.
fn events_url() -> String {
    let calendar = settings::setting(&config::get, "calendar_id")
        .unwrap_or_else(|| DEFAULT_CALENDAR_ID.to_string());
    format!(
        "{}/calendar/v3/calendars/{}/events",
        api_base(),
        api::encode_component(&calendar)
    )
}

fn kv_failure(e: kv::KvError) -> PluginError {
    match e {
        kv::KvError::QuotaExceeded => {
            PluginError::Internal("the plugin's kv quota is full: raise limits.kv_quota_kib".into())
        }
        kv::KvError::TooLarge => PluginError::Internal("a kv record is too large".into()),
        kv::KvError::Unavailable(m) => {
            presence_sdk::upstream::upstream(format!("kv store unavailable: {m}"), None, None)
        }
    }
}

fn load<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, PluginError> {
    let Some(bytes) = kv::get(key).map_err(kv_failure)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PluginError::Internal(format!("kv record {key} is unreadable: {e}")))
}

fn save<T: serde::Serialize>(key: &str, value: &T) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| PluginError::Internal(format!("cannot encode {key}: {e}")))?;
    kv::set(key, &bytes).map_err(kv_failure)
}

fn random<const N: usize>() -> Result<[u8; N], PluginError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| PluginError::Internal(format!("no randomness from the host: {e}")))?;
    Ok(bytes)
}

/// Creates a channel for `connection`; its record is kept from before the
/// call (see [`channels`]) and removed again if the call fails.
fn create_channel(connection: &str) -> Result<(String, ChannelRecord), PluginError> {
    let id = channels::new_channel_id(random::<16>()?);
    let mut record = ChannelRecord {
        connection: connection.to_string(),
        token: presence_sdk::signature::encode_hex(&random::<32>()?),
        resource_id: None,
        expiration_ms: None,
    };
    let key = channels::channel_key(&id);
    save(&key, &record)?;
    let body = serde_json::json!({
        "id": id,
        "type": "web_hook",
        "address": webhook_url(),
        "token": record.token,
    });
    let request = api::request(
        "POST",
        format!("{}/watch", events_url()),
        Some(body.to_string().into_bytes()),
        connection,
    );
    let answer = api::call("Google Calendar events.watch", &request).and_then(|body| {
        serde_json::from_slice::<serde_json::Value>(&body).map_err(|_| {
            PluginError::Internal(
                "events.watch answered 2xx without a channel: check the plugin's api_base".into(),
            )
        })
    });
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            let _ = kv::delete(&key);
            return Err(e);
        }
    };
    let Some(resource_id) = answer["resourceId"].as_str().filter(|r| !r.is_empty()) else {
        let _ = kv::delete(&key);
        return Err(PluginError::Internal(
            "events.watch answered 2xx without a resourceId: check the plugin's api_base".into(),
        ));
    };
    record.resource_id = Some(resource_id.to_string());
    record.expiration_ms = channels::expiration_ms(&answer);
    save(&key, &record)?;
    Ok((id, record))
}

/// Stops channel `id` (channels.stop). A channel Google no longer knows, or
/// one that never got its resource id, is as good as stopped.
fn stop_channel(
    connection: &str,
    id: &str,
    record: Option<&ChannelRecord>,
) -> Result<(), PluginError> {
    let Some(resource_id) = record.and_then(|r| r.resource_id.as_deref()) else {
        return Ok(());
    };
    let body = serde_json::json!({ "id": id, "resourceId": resource_id });
    let request = api::request(
        "POST",
        format!("{}/calendar/v3/channels/stop", api_base()),
        Some(body.to_string().into_bytes()),
        connection,
    );
    let response = api::send("Google Calendar channels.stop", &request)?;
    match response.status {
        200..=299 | 404 => Ok(()),
        status => Err(api::error(
            "Google Calendar channels.stop",
            status,
            &response.headers,
            &response.body,
        )),
    }
}

/// Stops each of `ids` and forgets it; the ones that could not be stopped
/// (and have not expired anyway) are returned, to be tried again.
fn retire(connection: &str, ids: Vec<String>) -> Result<Vec<String>, PluginError> {
    let mut left = Vec::new();
    for id in ids {
        let key = channels::channel_key(&id);
        let record: Option<ChannelRecord> = load(&key)?;
        let expired = record
            .as_ref()
            .and_then(|r| r.expiration_ms)
            .is_some_and(|at| at <= presence_sdk::now_ms());
        let stopped = if expired {
            Ok(())
        } else {
            stop_channel(connection, &id, record.as_ref())
        };
        match stopped {
            Ok(()) => kv::delete(&key).map_err(kv_failure)?,
            Err(e) => {
                log::warn(&format!(
                    "channel {id} of {connection} not stopped yet: {e:?}"
                ));
                left.push(id);
            }
        }
    }
    Ok(left)
}

fn verified(request: &WebhookRequest) -> Result<(Notification<'_>, ChannelRecord), PluginError> {
    let notification =
        Notification::read(|name| header(request, name)).map_err(PluginError::Unauthorized)?;
    let record: ChannelRecord =
        load(&channels::channel_key(notification.channel_id))?.ok_or_else(|| {
            PluginError::Unauthorized(format!(
                "unknown channel {}: not one of this plugin's",
                notification.channel_id
            ))
        })?;
    notification
        .verify(&record)
        .map_err(|why| PluginError::Unauthorized(why.to_string()))?;
    Ok((notification, record))
}

/// One events.list call at `cursor`.
fn list(connection: &str, cursor: &Cursor) -> Result<ListAnswer, PluginError> {
    let request = api::request(
        "GET",
        format!("{}?{}", events_url(), cursor.query(MAX_RESULTS)),
        None,
        connection,
    );
    let response = api::send("Google Calendar events.list", &request)?;
    api::list_answer(response.status, &response.headers, response.body)
}

/// The calendar page for an events.list answer read at `cursor`.
fn page(body: &[u8], cursor: &Cursor, reset: bool) -> Result<CalendarPage, PluginError> {
    let content = events::read_page(body).map_err(|e| {
        PluginError::Internal(format!(
            "events.list answered 2xx, but {e}: check the plugin's api_base"
        ))
    })?;
    for why in &content.skipped {
        log::warn(&format!("skipped: {why}"));
    }
    Ok(content.into_page(cursor, reset))
}

impl presence_sdk::calendar::Guest for GoogleCalendar {
    fn describe() -> ProviderInfo {
        ProviderInfo {
            display_name: "Google Calendar".into(),
            features: vec![Feature::Webhooks, Feature::SyncCalendar],
        }
    }

    fn handle_webhook(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
        let (notification, record) = verified(&request)?;
        match notification.resource_state {
            "sync" => return Ok(answer_only(ok())),
            "exists" | "not_exists" => request_sync(&record.connection),
            other => log::warn(&format!(
                "channel {}: resource state {other:?} is not one Google documents; acknowledged",
                notification.channel_id
            )),
        }
        let mut outcome = answer_only(ok());
        outcome.delivery_id = notification.delivery_id();
        Ok(outcome)
    }

    presence_sdk::unsupported!(push_status, sync_calendar, send_notification);
}

impl CalendarGuest for GoogleCalendar {
    fn watch(connection: String) -> Result<WatchLease, PluginError> {
        let (id, record) = create_channel(&connection)?;
        let key = channels::connection_key(&connection);
        let previous: ConnectionRecord = load(&key)?.unwrap_or_default();
        let mut replaced = previous.retired;
        replaced.extend(previous.current);
        // Saved before stopping: should stopping fail midway, the next watch
        // still knows every channel left to stop.
        let mut kept = ConnectionRecord {
            current: Some(id),
            retired: replaced.clone(),
        };
        save(&key, &kept)?;
        if !replaced.is_empty() {
            kept.retired = retire(&connection, replaced)?;
            save(&key, &kept)?;
        }
        // Google channels always expire; one whose expiry we could not read
        // is renewed within a day rather than trusted for ever.
        Ok(WatchLease {
            expires: Some(
                record
                    .expiration_ms
                    .unwrap_or(presence_sdk::now_ms() + 24 * 3_600_000),
            ),
        })
    }

    fn unwatch(connection: String) -> Result<(), PluginError> {
        let key = channels::connection_key(&connection);
        let Some(kept) = load::<ConnectionRecord>(&key)? else {
            return Ok(());
        };
        let mut ids = kept.retired;
        ids.extend(kept.current);
        // Best effort: a channel Google still runs sends notifications nobody
        // accepts until it expires.
        for id in retire(&connection, ids)? {
            kv::delete(&channels::channel_key(&id)).map_err(kv_failure)?;
        }
        kv::delete(&key).map_err(kv_failure)
    }

    fn sync(connection: String, cursor: Option<String>) -> Result<CalendarPage, PluginError> {
        let (at, reset) = Cursor::resume(cursor.as_deref());
        if reset {
            log::warn("a cursor this plugin did not write: starting a full sync");
        }
        match list(&connection, &at)? {
            ListAnswer::Page(body) => page(&body, &at, reset),
            ListAnswer::Gone if at != Cursor::full() => {
                log::info("Google no longer accepts the sync token: starting a full sync");
                let full = Cursor::full();
                match list(&connection, &full)? {
                    ListAnswer::Page(body) => page(&body, &full, true),
                    ListAnswer::Gone => Err(gone_on_full_sync()),
                }
            }
            ListAnswer::Gone => Err(gone_on_full_sync()),
        }
    }
}

fn gone_on_full_sync() -> PluginError {
    presence_sdk::upstream::upstream(
        "Google Calendar events.list answered 410 Gone to a full sync",
        Some(410),
        None,
    )
}

// Wasm only: the interface exports' symbol names (`wedsync:calendar/calendar@0.1.0#sync`)
// cannot be written in a native linker's version script, and natively only the
// pure modules are tested.
#[cfg(target_family = "wasm")]
presence_sdk::export_calendar_provider!(GoogleCalendar);
