//! `GET /api/presence/stream`: every presence change as Server-Sent Events.
//!
//! Each event's id is the change's `seq` in the store, so a client that
//! reconnects with `Last-Event-ID` gets exactly what it missed (from the store),
//! then the live feed, with nothing doubled: the subscription to the live feed
//! is taken *before* the backlog is read, and anything at or below the last id
//! sent is skipped. A client further behind than the retained log gets a
//! `resync` event telling it to read current state.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use crate::App;
use crate::api::error::ApiError;
use crate::store::presence::Change;

/// Backlog rows read per store query.
const PAGE: u32 = 500;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The tenant, for the operator (or `X-Presence-Tenant`; a tenant key acts for its own).
    pub tenant: Option<String>,
    /// Comma-separated user ids; all of the tenant's when absent.
    pub users: Option<String>,
    /// For clients that cannot set headers (`EventSource` can on reconnect only).
    pub last_event_id: Option<i64>,
}

struct Filter {
    tenant: String,
    users: Option<HashSet<String>>,
}

impl Filter {
    fn wants(&self, c: &Change) -> bool {
        c.tenant == self.tenant && self.users.as_ref().is_none_or(|u| u.contains(&c.user))
    }
}

fn event_of(change: &Change) -> Event {
    Event::default()
        .id(change.seq.to_string())
        .event("presence")
        .data(serde_json::to_string(change).expect("a change serializes"))
}

/// The event stream. Each `presence` event's data is a `PresenceChange` (see
/// the components); a `resync` event (`{"oldest_available": seq}`) says the
/// client is further behind than the retained log and must read current state.
#[utoipa::path(
    get,
    path = "/api/presence/stream",
    operation_id = "presence_stream",
    tag = "presence",
    params(
        StreamQuery,
        ("X-Presence-Tenant" = Option<String>, Header, description = "The tenant, for the operator; a tenant key may name only its own"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this change number"),
    ),
    security(("api_key" = []), ("admin_token" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: `event: presence`, `id` = the change number, `data` = a PresenceChange as JSON; `event: resync` when changes were missed; a keep-alive comment every 15 s", content_type = "text/event-stream", body = String),
        (status = 400, description = "A Last-Event-ID that is not an event id, or an invalid tenant name (JSON); a query the extractor refuses (plain text)", content(
            (crate::api::openapi::ErrorBody = "application/json"),
            (String = "text/plain"),
        )),
        (status = 403, description = "The API key belongs to another tenant", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such tenant", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn stream(
    State(app): State<Arc<App>>,
    axum::Extension(caller): axum::Extension<crate::api::auth::Caller>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant =
        crate::api::presence::tenant_of(&app, &caller, &headers, q.tenant.as_deref()).await?;
    let last_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event id".into()))?,
        ),
        None => q.last_event_id,
    };
    let filter = Filter {
        tenant,
        users: q.users.as_deref().map(|u| {
            u.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        }),
    };
    // Subscribe first: whatever commits from here on is either in the backlog
    // read below or in this receiver, and the seq check drops the overlap.
    let live = app.engine.subscribe();
    let (tx, mut rx) = mpsc::channel::<Event>(64);
    let key = match &caller {
        crate::api::auth::Caller::Tenant { tenant, key_id } => {
            Some((tenant.clone(), key_id.clone()))
        }
        crate::api::auth::Caller::Operator => None,
    };
    tokio::spawn(feed(app.clone(), filter, last_id, live, tx, key));
    let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn feed(
    app: Arc<App>,
    filter: Filter,
    last_id: Option<i64>,
    mut live: broadcast::Receiver<Arc<Change>>,
    tx: mpsc::Sender<Event>,
    key: Option<(String, String)>,
) {
    // A stream opened with a tenant key ends soon after the key is revoked or expires.
    let mut key_check = tokio::time::interval(KEY_RECHECK);
    key_check.tick().await;
    let mut sent = match last_id {
        Some(id) => id,
        // A new subscriber starts from what is committed now.
        None => match app.store.latest_change().await {
            Ok(latest) => latest.unwrap_or(0),
            Err(e) => {
                tracing::error!(error = %e, "reading the presence change log failed");
                return;
            }
        },
    };
    if last_id.is_some() && !backlog(&app, &filter, &mut sent, &tx).await {
        return;
    }
    loop {
        // A client that went away while nothing changed must not leave this task behind.
        let received = tokio::select! {
            r = live.recv() => r,
            _ = tx.closed() => return,
            _ = key_check.tick(), if key.is_some() => {
                if let Some((tenant, id)) = &key
                    && !key_still_valid(&app, tenant, id).await
                {
                    tracing::info!(%tenant, key = %id, "SSE stream ended: its API key was revoked or expired");
                    return;
                }
                continue;
            }
        };
        match received {
            Ok(change) => {
                // Changes commit in seq order but may be announced out of it: a
                // gap means one is committed and not yet heard of, so read it.
                if change.seq > sent + 1 && !backlog(&app, &filter, &mut sent, &tx).await {
                    return;
                }
                if change.seq <= sent {
                    continue;
                }
                sent = change.seq;
                if filter.wants(&change) && tx.send(event_of(&change)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(
                    missed,
                    "SSE subscriber fell behind; catching up from the store"
                );
                if !backlog(&app, &filter, &mut sent, &tx).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// How often an open stream re-checks the tenant key it was opened with.
const KEY_RECHECK: Duration = Duration::from_secs(10);

async fn key_still_valid(app: &App, tenant: &str, id: &str) -> bool {
    match app.store.api_key(tenant, id).await {
        Ok(Some(k)) => {
            k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > crate::store::now_ms())
        }
        Ok(None) => false,
        // The store not answering is not the key's fault: keep the stream.
        Err(_) => true,
    }
}

/// Sends the stored changes after `sent`; false when the client is gone.
async fn backlog(app: &App, filter: &Filter, sent: &mut i64, tx: &mpsc::Sender<Event>) -> bool {
    if let Ok(Some(oldest)) = app.store.oldest_change().await
        && oldest > *sent + 1
    {
        let gap = Event::default()
            .event("resync")
            .data(format!("{{\"oldest_available\":{oldest}}}"));
        if tx.send(gap).await.is_err() {
            return false;
        }
    }
    loop {
        let page = match app
            .store
            .changes_since(Some(&filter.tenant), *sent, PAGE)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "reading the presence change log failed");
                return false;
            }
        };
        let full = page.len() as u32 == PAGE;
        for change in page {
            *sent = change.seq;
            if filter.wants(&change) && tx.send(event_of(&change)).await.is_err() {
                return false;
            }
        }
        if !full {
            return true;
        }
    }
}
