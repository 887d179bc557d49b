//! Graph change-notification subscriptions: two per connection, kept alive by
//! the host calling `watch`, and what the plugin keeps to recognise their
//! notifications.
//!
//! Per "Receive change notifications through webhooks" and the subscription
//! pages (create, update, delete):
//! - calendar: `resource: "me/events"`, `changeType: "created,updated,deleted"`,
//!   at most 10,080 minutes; we ask for three days;
//! - Teams presence ("Get change notifications for presence updates"):
//!   `resource: "/communications/presences/{id}"` with the person's Graph user
//!   id, `changeType: "updated"`, at most 60 minutes; we ask for 55;
//! - `notificationUrl` and `lifecycleNotificationUrl` are the host's webhook URL
//!   for this tenant; Graph validates both before it answers the creation
//!   (the `validationToken` handshake, answered by the webhook handler);
//! - `clientState` is a fresh random secret per subscription (at most 128
//!   characters), which every notification carries back;
//! - renewal is `PATCH /subscriptions/{id}` with a new `expirationDateTime`; a
//!   404 means Graph dropped it (it expired or was removed), so it is created
//!   again.
//!
//! kv records: `subscription/{id}` -> [`SubscriptionRecord`], and
//! `connection/{name}` -> [`ConnectionRecord`] (the Graph user id and the
//! subscription ids).

use presence_sdk::calendar::WatchLease;
use presence_sdk::provider::{PluginError, kv};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{api, time};

/// How long a calendar subscription is asked for (Graph allows 10,080 minutes).
pub const EVENTS_LIFETIME_MS: i64 = 3 * 86_400_000;
/// How long a presence subscription is asked for (Graph allows 60 minutes).
pub const PRESENCE_LIFETIME_MS: i64 = 55 * 60_000;
const _: () = assert!(EVENTS_LIFETIME_MS < 10_080 * 60_000 && PRESENCE_LIFETIME_MS < 60 * 60_000);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Events,
    Presence,
}

/// What a notification is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub connection: String,
    pub client_state: String,
    pub kind: Kind,
    /// Milliseconds since the epoch.
    pub expires: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    /// The person's Graph user id (`GET /me`).
    pub user_id: Option<String>,
    pub events: Option<String>,
    pub presence: Option<String>,
}

impl ConnectionRecord {
    fn slot(&mut self, kind: Kind) -> &mut Option<String> {
        match kind {
            Kind::Events => &mut self.events,
            Kind::Presence => &mut self.presence,
        }
    }
}

fn subscription_key(id: &str) -> String {
    format!("subscription/{id}")
}

fn connection_key(connection: &str) -> String {
    format!("connection/{connection}")
}

fn kv_failure(e: kv::KvError) -> PluginError {
    PluginError::Internal(match e {
        kv::KvError::QuotaExceeded => {
            "the plugin's kv quota is spent; raise [limits] kv_quota_kib".to_string()
        }
        kv::KvError::TooLarge => "a kv record is too large".to_string(),
        kv::KvError::Unavailable(m) => format!("kv store unavailable: {m}"),
    })
}

fn load<T: DeserializeOwned>(key: &str) -> Result<Option<T>, PluginError> {
    let Some(bytes) = kv::get(key).map_err(kv_failure)? else {
        return Ok(None);
    };
    // A record this plugin cannot read is as good as none: it is rewritten.
    Ok(serde_json::from_slice(&bytes).ok())
}

fn save<T: Serialize>(key: &str, value: &T) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| PluginError::Internal(format!("cannot encode {key}: {e}")))?;
    kv::set(key, &bytes).map_err(kv_failure)
}

/// The subscription a notification names, if it is one of ours.
pub fn record(subscription_id: &str) -> Result<Option<SubscriptionRecord>, PluginError> {
    load(&subscription_key(subscription_id))
}

/// The person's Graph user id: kept from an earlier `GET /me`, or asked now and kept.
pub fn graph_user_id(api_base: &str, connection: &str) -> Result<String, PluginError> {
    let mut record: ConnectionRecord = load(&connection_key(connection))?.unwrap_or_default();
    if let Some(id) = &record.user_id {
        return Ok(id.clone());
    }
    let id = api::my_id(api_base, connection)?;
    record.user_id = Some(id.clone());
    save(&connection_key(connection), &record)?;
    Ok(id)
}

/// A fresh `clientState`: 32 random bytes, hex.
fn client_state() -> Result<String, PluginError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| PluginError::Internal(format!("no random source for clientState: {e}")))?;
    Ok(presence_sdk::signature::encode_hex(&bytes))
}

/// The `subscription` resource to create.
pub fn creation_body(
    kind: Kind,
    graph_user_id: &str,
    notification_url: &str,
    expires_ms: i64,
    client_state: &str,
) -> Value {
    let (resource, change_type) = match kind {
        Kind::Events => ("me/events".to_string(), "created,updated,deleted"),
        Kind::Presence => (
            format!("/communications/presences/{graph_user_id}"),
            "updated",
        ),
    };
    json!({
        "changeType": change_type,
        "notificationUrl": notification_url,
        "lifecycleNotificationUrl": notification_url,
        "resource": resource,
        "expirationDateTime": time::iso(expires_ms),
        "clientState": client_state,
    })
}

/// The expiry Graph granted (it may shorten what was asked), else what was asked.
fn granted_expiry(answer: &Value, asked: i64) -> i64 {
    answer
        .get("expirationDateTime")
        .and_then(Value::as_str)
        .and_then(time::parse_iso)
        .unwrap_or(asked)
}

/// What `ensure` did for one kind.
enum Outcome {
    /// The subscription lives until this instant.
    Live(i64),
    /// Graph will not let this person have it (presence without Teams).
    Refused,
}

/// Renews the connection's subscription of `kind`, or creates it.
fn ensure(
    api_base: &str,
    connection: &str,
    record: &mut ConnectionRecord,
    graph_user_id: &str,
    kind: Kind,
    now: i64,
) -> Result<Outcome, PluginError> {
    let expires = now
        + match kind {
            Kind::Events => EVENTS_LIFETIME_MS,
            Kind::Presence => PRESENCE_LIFETIME_MS,
        };
    if let Some(id) = record.slot(kind).clone() {
        let service = "Graph PATCH /subscriptions";
        let answer = api::send(
            service,
            "PATCH",
            &format!("{api_base}/v1.0/subscriptions/{id}"),
            Some(&json!({ "expirationDateTime": time::iso(expires) })),
            &[],
            connection,
        )?;
        if answer.status == 404 {
            presence_sdk::log::info(&format!(
                "Graph no longer has subscription {id} of {connection}; creating it again"
            ));
            kv::delete(&subscription_key(&id)).map_err(kv_failure)?;
            *record.slot(kind) = None;
        } else {
            let renewed = api::json(service, answer)?;
            let expires = granted_expiry(&renewed, expires);
            let key = subscription_key(&id);
            match load::<SubscriptionRecord>(&key)? {
                Some(mut sub) => {
                    sub.expires = expires;
                    save(&key, &sub)?;
                    return Ok(Outcome::Live(expires));
                }
                // Renewed, but its clientState is lost: replace it so that
                // its notifications can be recognised again.
                None => delete_subscription(api_base, connection, &id),
            }
            *record.slot(kind) = None;
        }
    }
    let service = "Graph POST /subscriptions";
    let state = client_state()?;
    let body = creation_body(
        kind,
        graph_user_id,
        &presence_sdk::calendar::calendar_host::webhook_url(),
        expires,
        &state,
    );
    let answer = api::send(
        service,
        "POST",
        &format!("{api_base}/v1.0/subscriptions"),
        Some(&body),
        &[],
        connection,
    )?;
    if kind == Kind::Presence && answer.status == 403 {
        presence_sdk::log::warn(&format!(
            "Graph refused a presence subscription for {connection} (403: no Teams, or Presence.Read.All not granted); calendar only"
        ));
        return Ok(Outcome::Refused);
    }
    let created = api::json(service, answer)?;
    let id = created
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| PluginError::Internal(format!("{service}: the answer has no id")))?
        .to_string();
    let expires = granted_expiry(&created, expires);
    save(
        &subscription_key(&id),
        &SubscriptionRecord {
            connection: connection.to_string(),
            client_state: state,
            kind,
            expires,
        },
    )?;
    *record.slot(kind) = Some(id);
    Ok(Outcome::Live(expires))
}

/// Creates or renews both subscriptions of `connection`; the lease ends with
/// the first to expire.
pub fn watch(connection: &str, now: i64) -> Result<WatchLease, PluginError> {
    let api_base = api::api_base();
    let user_id = graph_user_id(&api_base, connection)?;
    let key = connection_key(connection);
    let mut record: ConnectionRecord = load(&key)?.unwrap_or_default();
    let mut earliest: Option<i64> = None;
    for kind in [Kind::Events, Kind::Presence] {
        let outcome = ensure(&api_base, connection, &mut record, &user_id, kind, now);
        // Keep what was done so far, even when the next step fails.
        save(&key, &record)?;
        if let Outcome::Live(expires) = outcome? {
            earliest = Some(earliest.map_or(expires, |e| e.min(expires)));
        }
    }
    Ok(WatchLease { expires: earliest })
}

/// Deletes a subscription at Graph; best effort (404: already gone).
fn delete_subscription(api_base: &str, connection: &str, id: &str) {
    let service = "Graph DELETE /subscriptions";
    match api::send(
        service,
        "DELETE",
        &format!("{api_base}/v1.0/subscriptions/{id}"),
        None,
        &[],
        connection,
    ) {
        Ok(r) if (200..300).contains(&r.status) || r.status == 404 => {}
        Ok(r) => presence_sdk::log::warn(&format!(
            "{service} {id}: {:?}; it lapses by itself",
            api::failure(service, &r)
        )),
        Err(e) => presence_sdk::log::warn(&format!("{service} {id}: {e:?}; it lapses by itself")),
    }
}

/// Stops both subscriptions of `connection` and forgets them: a notification
/// still in flight for one is refused from now on.
pub fn unwatch(connection: &str) -> Result<(), PluginError> {
    let api_base = api::api_base();
    let key = connection_key(connection);
    let Some(record) = load::<ConnectionRecord>(&key)? else {
        return Ok(());
    };
    for id in [&record.events, &record.presence].into_iter().flatten() {
        delete_subscription(&api_base, connection, id);
        kv::delete(&subscription_key(id)).map_err(kv_failure)?;
    }
    kv::delete(&key).map_err(kv_failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_bodies_follow_the_subscription_docs() {
        let body = creation_body(
            Kind::Events,
            "u1",
            "https://host.example/hook",
            1_795_687_200_000,
            "s3cret",
        );
        assert_eq!(
            body,
            json!({"changeType": "created,updated,deleted",
                   "notificationUrl": "https://host.example/hook",
                   "lifecycleNotificationUrl": "https://host.example/hook",
                   "resource": "me/events", "expirationDateTime": "2026-11-26T10:00:00.000Z",
                   "clientState": "s3cret"})
        );
        let body = creation_body(
            Kind::Presence,
            "fa8bf3dc-eca7-46b7-bad1-db199b62afc3",
            "u",
            0,
            "s",
        );
        assert_eq!(
            body["resource"],
            "/communications/presences/fa8bf3dc-eca7-46b7-bad1-db199b62afc3"
        );
        assert_eq!(body["changeType"], "updated");
    }

    #[test]
    fn granted_expiry_prefers_graphs_answer() {
        let answer = json!({"expirationDateTime": "2026-11-26T10:00:00.0000000Z"});
        assert_eq!(granted_expiry(&answer, 5), 1_795_687_200_000);
        assert_eq!(granted_expiry(&json!({}), 5), 5);
    }

    #[test]
    fn records_round_trip_as_json() {
        let r = SubscriptionRecord {
            connection: "alice".into(),
            client_state: "ab".into(),
            kind: Kind::Presence,
            expires: 7,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""kind":"presence""#));
        assert_eq!(
            serde_json::from_str::<SubscriptionRecord>(&text).unwrap(),
            r
        );
    }
}
