//! Graph's webhook deliveries: the validation handshake, change notifications
//! and lifecycle notifications.
//!
//! Per "Receive change notifications through webhooks":
//! - validation: when a subscription is created (or its URL changed), Graph
//!   POSTs `{notificationUrl}?validationToken={token}` with `Content-Type:
//!   text/plain` and waits up to 10 seconds for `200 OK`, `Content-Type:
//!   text/plain` and the token, URL-decoded, as the body. It carries nothing to
//!   check, and is answered with the token alone;
//! - notifications: `{"value": [changeNotification, ...]}`, each with
//!   `subscriptionId` and the `clientState` given at creation. A notification
//!   whose subscription is not ours, or whose `clientState` differs (compared in
//!   constant time), makes the whole delivery `unauthorized`: nothing in it is
//!   acted on. Graph counts any 2xx as delivered; `202 Accepted` says the work
//!   is queued (the host runs the sync after answering);
//! - calendar notifications name a changed event: the connection's calendar is
//!   synced (`request-sync`, once per connection however many items name it);
//! - presence notifications carry no presence (that takes rich notifications,
//!   encrypted with a certificate): the person's presence is read with `GET
//!   /me/presence` and turned into signals for `connection:{name}`;
//! - lifecycle notifications (`lifecycleEvent`) ask for a sync of the
//!   connection, which catches up on anything missed; `reauthorizationRequired`
//!   and `subscriptionRemoved` also ask the host to `watch` again
//!   (`request-watch`), which renews the subscription or, when Graph no longer
//!   knows it, recreates it.

use std::collections::BTreeSet;

use presence_sdk::calendar::calendar_host;
use presence_sdk::provider::{
    PluginError, PresenceSignal, WebhookOutcome, WebhookRequest, WebhookResponse,
};
use presence_sdk::webhook::answer_only;
use serde::Deserialize;
use serde_json::Value;

use crate::subscriptions::{self, Kind};
use crate::{api, presence};

/// The URL-decoded `validationToken` of a request's query, if it has one.
pub fn validation_token(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "validationToken")
        .map(|(_, v)| v.into_owned())
}

/// The answer to a validation request: the token as plain text.
pub fn validation_answer(token: &str) -> WebhookResponse {
    WebhookResponse {
        status: 200,
        headers: vec![
            ("content-type".into(), "text/plain; charset=utf-8".into()),
            // The token is echoed: never let a browser read it as markup.
            ("x-content-type-options".into(), "nosniff".into()),
        ],
        body: token.as_bytes().to_vec(),
    }
}

/// `202 Accepted`, empty.
fn accepted() -> WebhookResponse {
    WebhookResponse {
        status: 202,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// One item of a delivery's `value`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub subscription_id: Option<String>,
    pub client_state: Option<String>,
    pub lifecycle_event: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delivery {
    value: Vec<Notification>,
}

/// Whether two byte strings are equal, in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a verified delivery asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Connections whose calendar should be synced.
    pub sync: BTreeSet<String>,
    /// Connections whose subscriptions should be renewed or recreated.
    pub watch: BTreeSet<String>,
    /// Connections whose presence should be read.
    pub presence: BTreeSet<String>,
    /// Lifecycle events received, worded for the log.
    pub lifecycle: Vec<String>,
    /// Subscription ids that are not ours (skipped).
    pub unknown: Vec<String>,
    /// Items whose subscription and clientState checked out.
    pub verified: usize,
}

/// Checks every notification of a delivery against our records (looked up
/// with `record`) and says what to do; an item that is not ours refuses the
/// whole delivery.
pub fn verify(
    items: &[Notification],
    record: impl Fn(&str) -> Result<Option<subscriptions::SubscriptionRecord>, PluginError>,
) -> Result<Work, PluginError> {
    let mut work = Work::default();
    for item in items {
        let id = item.subscription_id.as_deref().ok_or_else(|| {
            PluginError::Unauthorized("a notification without a subscriptionId".into())
        })?;
        // A subscription we no longer know (renewed away, deleted) may share
        // the URL with ours: skipped, so it does not refuse the others.
        let Some(sub) = record(id)? else {
            work.unknown.push(id.to_string());
            continue;
        };
        work.verified += 1;
        let given = item.client_state.as_deref().unwrap_or("");
        if !constant_time_eq(given.as_bytes(), sub.client_state.as_bytes()) {
            return Err(PluginError::Unauthorized(format!(
                "the clientState of a notification for subscription {id} does not match"
            )));
        }
        match (&item.lifecycle_event, sub.kind) {
            (Some(event), _) => {
                work.lifecycle.push(format!(
                    "Graph lifecycle event {event} for subscription {id} of {}",
                    sub.connection
                ));
                if matches!(
                    event.as_str(),
                    "reauthorizationRequired" | "subscriptionRemoved"
                ) {
                    work.watch.insert(sub.connection.clone());
                }
                work.sync.insert(sub.connection);
            }
            (None, Kind::Events) => {
                work.sync.insert(sub.connection);
            }
            (None, Kind::Presence) => {
                work.presence.insert(sub.connection);
            }
        }
    }
    if work.verified == 0 {
        return Err(PluginError::Unauthorized(format!(
            "no notification is for a subscription of ours ({})",
            work.unknown.join(", ")
        )));
    }
    Ok(work)
}

/// The presence signals of one connection, read now.
fn presence_signals(api_base: &str, connection: &str) -> Result<Vec<PresenceSignal>, PluginError> {
    let service = "Graph GET /me/presence";
    let answer = api::json(
        service,
        api::send(
            service,
            "GET",
            &format!("{api_base}/v1.0/me/presence"),
            None,
            &[],
            connection,
        )?,
    )?;
    let field = |k: &str| answer.get(k).and_then(Value::as_str).unwrap_or("");
    let now = presence_sdk::now_ms();
    if presence::is_own_echo(connection, field("availability"), field("activity"), now) {
        presence_sdk::log::debug(&format!(
            "the presence of {connection} is our own last push; not news"
        ));
        return Ok(Vec::new());
    }
    presence::remember_own(connection, field("availability"), field("activity"));
    Ok(presence::signals(
        connection,
        field("availability"),
        field("activity"),
        now,
    ))
}

pub fn handle(request: WebhookRequest) -> Result<WebhookOutcome, PluginError> {
    if let Some(token) = validation_token(&request.url) {
        return Ok(answer_only(validation_answer(&token)));
    }
    let delivery: Delivery = serde_json::from_slice(&request.body).map_err(|e| {
        PluginError::InvalidInput(format!("not a Graph notification collection: {e}"))
    })?;
    let work = verify(&delivery.value, subscriptions::record)?;
    for event in &work.lifecycle {
        presence_sdk::log::info(event);
    }
    if !work.unknown.is_empty() {
        presence_sdk::log::info(&format!(
            "notifications for subscriptions that are not ours skipped: {}",
            work.unknown.join(", ")
        ));
    }
    for connection in &work.watch {
        calendar_host::request_watch(connection);
    }
    for connection in &work.sync {
        calendar_host::request_sync(connection);
    }
    let mut signals = Vec::new();
    if !work.presence.is_empty() {
        let api_base = api::api_base();
        // Graph wants its answer within seconds: a read that fails is
        // logged and skipped, not a failed delivery (the other work stands).
        for connection in &work.presence {
            match presence_signals(&api_base, connection) {
                Ok(read) => signals.extend(read),
                Err(e) => presence_sdk::log::warn(&format!(
                    "reading the presence of {connection} failed: {e:?}"
                )),
            }
        }
    }
    Ok(WebhookOutcome {
        response: accepted(),
        delivery_id: None,
        events: Vec::new(),
        signals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriptions::SubscriptionRecord;

    #[test]
    fn validation_tokens_are_url_decoded() {
        // The docs' example: POST https://{notificationUrl}?validationToken={opaqueTokenCreatedByMicrosoftGraph}
        assert_eq!(
            validation_token("https://host.example/api/webhooks/microsoft-graph/t1?validationToken=Validation%3a+Testing+client+application+reachability+for+subscription+Request-Id%3a+b4a8e1e3").as_deref(),
            Some("Validation: Testing client application reachability for subscription Request-Id: b4a8e1e3")
        );
        assert_eq!(
            validation_token("https://host.example/hook?a=1&validationToken=x%20y").as_deref(),
            Some("x y")
        );
        assert_eq!(validation_token("https://host.example/hook"), None);
        assert_eq!(validation_token("https://host.example/hook?other=1"), None);
        let answer = validation_answer("x y");
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (200, b"x y".as_slice())
        );
        assert!(
            answer
                .headers
                .iter()
                .any(|(k, v)| k == "content-type" && v.starts_with("text/plain"))
        );
    }

    fn records(id: &str) -> Result<Option<SubscriptionRecord>, PluginError> {
        Ok(match id {
            "events-1" => Some(SubscriptionRecord {
                connection: "alice".into(),
                client_state: "secretClientValue".into(),
                kind: Kind::Events,
                expires: 0,
            }),
            "presence-1" => Some(SubscriptionRecord {
                connection: "alice".into(),
                client_state: "other".into(),
                kind: Kind::Presence,
                expires: 0,
            }),
            _ => None,
        })
    }

    fn items(json: &str) -> Vec<Notification> {
        serde_json::from_str::<Delivery>(json).unwrap().value
    }

    #[test]
    fn notifications_are_checked_then_grouped_by_connection() {
        // The change notification example of the webhooks page, our ids.
        let delivery = items(
            r##"{"value": [
            {"id": "lsgTZMr9KwAAA", "subscriptionId": "events-1",
             "subscriptionExpirationDateTime": "2026-11-29T10:00:00.0000000Z",
             "clientState": "secretClientValue", "changeType": "created",
             "resource": "users/{user_guid}/events/{long_id_string}",
             "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
             "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": "Users/{user_guid}/Events/{long_id_string}",
                              "@odata.etag": "W/\"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf\"", "id": "{long_id_string}"}},
            {"subscriptionId": "events-1", "clientState": "secretClientValue", "changeType": "updated"},
            {"subscriptionId": "presence-1", "clientState": "other", "changeType": "updated"}
        ]}"##,
        );
        let work = verify(&delivery, records).unwrap();
        assert_eq!(work.sync.into_iter().collect::<Vec<_>>(), vec!["alice"]);
        assert_eq!(work.presence.into_iter().collect::<Vec<_>>(), vec!["alice"]);
    }

    #[test]
    fn one_foreign_item_refuses_the_whole_delivery() {
        for bad in [
            r#"{"value": [{"subscriptionId": "events-1", "clientState": "secretClientValue"},
                          {"subscriptionId": "events-1", "clientState": "secretClientValuf"}]}"#,
            r#"{"value": [{"subscriptionId": "unknown", "clientState": "secretClientValue"}]}"#,
            r#"{"value": [{"subscriptionId": "events-1"}]}"#,
            r#"{"value": [{"clientState": "secretClientValue"}]}"#,
        ] {
            assert!(
                matches!(
                    verify(&items(bad), records),
                    Err(PluginError::Unauthorized(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_subscription_we_no_longer_know_is_skipped_not_fatal() {
        let delivery = items(
            r#"{"value": [{"subscriptionId": "gone", "clientState": "whatever"},
                          {"subscriptionId": "events-1", "clientState": "secretClientValue"}]}"#,
        );
        let work = verify(&delivery, records).unwrap();
        assert_eq!(work.unknown, ["gone"]);
        assert!(work.sync.contains("alice"));
    }

    #[test]
    fn lifecycle_events_ask_for_a_sync() {
        let delivery = items(
            r#"{"value": [{"subscriptionId": "presence-1", "clientState": "other",
            "lifecycleEvent": "reauthorizationRequired", "subscriptionExpirationDateTime": "2026-11-26T10:55:00Z"}]}"#,
        );
        let work = verify(&delivery, records).unwrap();
        assert!(work.presence.is_empty());
        assert!(work.sync.contains("alice"));
        assert!(work.watch.contains("alice"), "renewed, or recreated");
        let missed = items(
            r#"{"value": [{"subscriptionId": "presence-1", "clientState": "other",
            "lifecycleEvent": "missed"}]}"#,
        );
        let work = verify(&missed, records).unwrap();
        assert!(work.sync.contains("alice") && work.watch.is_empty());
    }

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }
}
