//! Refreshing connections' tokens: one refresh at a time per connection, and a
//! rotated refresh token stored before the new access token is used.
//!
//! Every caller names the token version it found wanting. Callers in this
//! process queue on a mutex; across processes the store's refresh lock
//! (`lock_owner`, `lock_until`) decides. Whoever gets the lock while the
//! version is still the one it saw refreshes; everyone else finds a newer
//! version and uses it. So twenty callers with the same stale token make one
//! token request.
//!
//! Outcomes:
//! - success: the new tokens (and the rotated refresh token) are written in
//!   one statement that also releases the lock; audited as `connection.refreshed`;
//! - `invalid_grant`: the connection needs re-consent. Scheduled refreshes stop,
//!   the tenant's endpoints get `connection.needs_reconsent`, and plugins'
//!   requests on it are refused with that reason until the person consents again;
//! - anything else (5xx, timeouts, rate limits, our own misconfiguration):
//!   retried later with exponential backoff and full jitter, never marking the
//!   connection as needing re-consent.

use std::sync::Arc;
use std::time::Duration;

use super::{OAuth, TokenError};
use crate::store::audit::Actor;
use crate::store::connections::{NEEDS_RECONSENT, NewTokens};
use crate::store::{Store, StoreError, now_ms};

/// Why a refresh was asked for (recorded in the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The access token expires soon.
    Expiring,
    /// The provider refused the access token (HTTP 401, Slack's `token_expired`).
    Refused,
    /// The scheduled daily check.
    Scheduled,
    /// An operator or tenant asked through the API.
    Requested,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Expiring => "expiring",
            Reason::Refused => "refused",
            Reason::Scheduled => "scheduled",
            Reason::Requested => "requested",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("connection {0:?} does not exist")]
    Gone(String),
    #[error("connection {0:?} has no refresh token (it was seeded with a bare token)")]
    NotRefreshable(String),
    #[error("connection {name:?} needs re-consent: {detail}")]
    NeedsReconsent { name: String, detail: String },
    #[error("provider {0:?} is not configured")]
    UnknownProvider(String),
    #[error("refreshing connection {name:?} failed: {error}")]
    Provider { name: String, error: TokenError },
    #[error("another process has held the refresh lock of connection {0:?} too long")]
    Busy(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long a caller waits for another process's refresh before giving up.
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(15);
/// Backoff of scheduled retries after transient failures.
const RETRY_BASE_MS: i64 = 30_000;
const RETRY_CAP_MS: i64 = 3_600_000;

impl OAuth {
    /// Makes sure connection `name` has a token newer than `seen_version`,
    /// refreshing it if nobody else has; returns the version now current.
    ///
    /// The work runs in a task of its own, which the caller only waits for: a
    /// caller that gives up (a plugin call out of time, a client gone) never
    /// cancels a token request whose answer may carry a rotated refresh token.
    pub async fn refresh(
        self: &Arc<Self>,
        store: &Store,
        tenant: &str,
        name: &str,
        seen_version: i64,
        reason: Reason,
    ) -> Result<i64, RefreshError> {
        let (oauth, store) = (self.clone(), store.clone());
        let (tenant, name) = (tenant.to_string(), name.to_string());
        tokio::spawn(async move {
            oauth
                .refresh_detached(&store, &tenant, &name, seen_version, reason)
                .await
        })
        .await
        .map_err(|e| RefreshError::Store(StoreError::Corrupt(format!("refresh task: {e}"))))?
    }

    async fn refresh_detached(
        &self,
        store: &Store,
        tenant: &str,
        name: &str,
        seen_version: i64,
        reason: Reason,
    ) -> Result<i64, RefreshError> {
        let local = self.local_lock(tenant, name);
        let _queued = local.lock().await;
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHERS;
        // Each attempt is its own lock owner, so a lapsed attempt's release
        // cannot free a lock another attempt holds.
        let owner = format!("{}-{:016x}", self.owner, rand::random::<u64>());
        loop {
            let (version, lock_until) = store
                .connection_version(tenant, name)
                .await?
                .ok_or_else(|| RefreshError::Gone(name.to_string()))?;
            if version != seen_version {
                return Ok(version);
            }
            let now = now_ms();
            if lock_until.is_none_or(|until| until < now)
                && store
                    .lock_refresh(tenant, name, version, &owner, now + self.lock_ms)
                    .await?
            {
                return self
                    .refresh_locked(store, tenant, name, version, &owner, reason)
                    .await;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RefreshError::Busy(name.to_string()));
            }
            // Another process is refreshing: its result will show as a new version.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Refreshes whatever token `name` has now (the API's and the scheduler's entry).
    pub async fn refresh_current(
        self: &Arc<Self>,
        store: &Store,
        tenant: &str,
        name: &str,
        reason: Reason,
    ) -> Result<i64, RefreshError> {
        let (version, _) = store
            .connection_version(tenant, name)
            .await?
            .ok_or_else(|| RefreshError::Gone(name.to_string()))?;
        self.refresh(store, tenant, name, version, reason).await
    }

    /// The version current now (after another refresher won a race).
    async fn current_version(store: &Store, tenant: &str, name: &str) -> Result<i64, RefreshError> {
        store
            .connection_version(tenant, name)
            .await?
            .map(|(v, _)| v)
            .ok_or_else(|| RefreshError::Gone(name.to_string()))
    }

    /// Appends an audit event; a failure to do so is logged, not fatal, since
    /// what it records has already happened.
    async fn audit(
        &self,
        store: &Store,
        tenant: &str,
        action: &str,
        name: &str,
        detail: serde_json::Value,
    ) {
        if let Err(e) = store
            .audit(tenant, &Actor::System, action, Some(name), Some(detail))
            .await
        {
            tracing::error!(%tenant, connection = %name, %action, error = %e, "could not write an audit event");
        }
    }

    async fn refresh_locked(
        &self,
        store: &Store,
        tenant: &str,
        name: &str,
        version: i64,
        owner: &str,
        reason: Reason,
    ) -> Result<i64, RefreshError> {
        let Some(grant) = store.refresh_grant(tenant, name).await? else {
            self.release(
                store,
                tenant,
                name,
                owner,
                version,
                "no refresh token".into(),
                false,
                i64::MAX,
            )
            .await?;
            return Err(RefreshError::NotRefreshable(name.to_string()));
        };
        if grant.status == NEEDS_RECONSENT {
            // Only a new consent helps; asking the provider again would only be refused again.
            self.release(
                store,
                tenant,
                name,
                owner,
                version,
                "needs re-consent".into(),
                true,
                0,
            )
            .await?;
            return Err(RefreshError::NeedsReconsent {
                name: name.to_string(),
                detail: "the provider refused the refresh token; the person must connect again"
                    .into(),
            });
        }
        let Some(provider) = self.provider(&grant.provider) else {
            let detail = format!("provider {:?} is no longer configured", grant.provider);
            self.release(
                store,
                tenant,
                name,
                owner,
                version,
                detail,
                false,
                now_ms() + RETRY_CAP_MS,
            )
            .await?;
            return Err(RefreshError::UnknownProvider(grant.provider));
        };
        let refresh_token = std::str::from_utf8(grant.refresh_token.expose())
            .map_err(|_| StoreError::Corrupt(format!("connection {name}: refresh token")))?
            .to_string();
        let refresh_token = zeroize::Zeroizing::new(refresh_token);
        match self.exchange_refresh(store, provider, &refresh_token).await {
            Ok(tokens) => {
                let scopes = tokens
                    .scopes
                    .clone()
                    .unwrap_or_else(|| grant.scopes.clone());
                let new = NewTokens {
                    access_token: tokens.access_token.as_bytes(),
                    refresh_token: tokens.refresh_token.as_ref().map(|t| t.as_bytes()),
                    expires_at: tokens.expires_at,
                    scopes: &scopes,
                };
                // The provider may have rotated the refresh token: it must be
                // durable before anything uses the new access token, so a
                // failing write is retried rather than dropped.
                let mut attempt = 0;
                let stored = loop {
                    match store.store_refreshed(tenant, name, version, &new).await {
                        Ok(stored) => break stored,
                        Err(e) if attempt < 5 => {
                            attempt += 1;
                            tracing::error!(%tenant, connection = %name, error = %e, "storing refreshed tokens failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                if !stored {
                    tracing::warn!(%tenant, connection = %name, "another refresh stored newer tokens first; these are dropped");
                    return Self::current_version(store, tenant, name).await;
                }
                self.audit(
                    store,
                    tenant,
                    "connection.refreshed",
                    name,
                    serde_json::json!({
                        "reason": reason.as_str(),
                        "expires_at": tokens.expires_at,
                        "rotated": tokens.refresh_token.is_some(),
                    }),
                )
                .await;
                if scopes != grant.scopes {
                    self.audit(
                        store,
                        tenant,
                        "connection.scope_changed",
                        name,
                        serde_json::json!({ "before": grant.scopes, "after": scopes }),
                    )
                    .await;
                }
                if grant.refresh_failures > 0
                    && let Err(e) = self
                        .announce(
                            store,
                            tenant,
                            name,
                            &grant.user,
                            "connection.recovered",
                            None,
                        )
                        .await
                {
                    tracing::error!(%tenant, connection = %name, error = %e, "could not announce a recovered connection");
                }
                self.wake.notify_one();
                self.count(tenant, name, &grant.plugin, crate::health::Outcome::Ok);
                tracing::info!(%tenant, connection = %name, reason = reason.as_str(), "connection token refreshed");
                Self::current_version(store, tenant, name).await
            }
            Err(error @ TokenError::Refused { .. }) => {
                let detail = error.to_string();
                if !self
                    .release(store, tenant, name, owner, version, detail.clone(), true, 0)
                    .await?
                {
                    // A concurrent refresh (after our lock lapsed) rotated the
                    // token we sent: its result stands.
                    return Self::current_version(store, tenant, name).await;
                }
                tracing::error!(%tenant, connection = %name, error = %detail, "the provider refused the refresh token: the connection needs re-consent");
                self.count(
                    tenant,
                    name,
                    &grant.plugin,
                    crate::health::Outcome::Failed("token_refused", detail.clone()),
                );
                self.announce(
                    store,
                    tenant,
                    name,
                    &grant.user,
                    "connection.needs_reconsent",
                    Some(&detail),
                )
                .await?;
                Err(RefreshError::NeedsReconsent {
                    name: name.to_string(),
                    detail,
                })
            }
            Err(error) => {
                let delay = retry_delay(grant.refresh_failures);
                let detail = error.to_string();
                if !self
                    .release(
                        store,
                        tenant,
                        name,
                        owner,
                        version,
                        detail.clone(),
                        false,
                        now_ms() + delay,
                    )
                    .await?
                {
                    return Self::current_version(store, tenant, name).await;
                }
                tracing::warn!(%tenant, connection = %name, error = %detail, retry_in_ms = delay, "token refresh failed; will retry");
                self.count(
                    tenant,
                    name,
                    &grant.plugin,
                    crate::health::Outcome::Failed("token_refresh", detail.clone()),
                );
                self.audit(
                    store,
                    tenant,
                    "connection.refresh_failed",
                    name,
                    serde_json::json!({
                        "reason": reason.as_str(),
                        "error": detail,
                        "retry_in_ms": delay,
                    }),
                )
                .await;
                Err(RefreshError::Provider {
                    name: name.to_string(),
                    error,
                })
            }
        }
    }

    /// Records a failed refresh and releases the lock (see
    /// `Store::refresh_failed`); false when the token changed meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn release(
        &self,
        store: &Store,
        tenant: &str,
        name: &str,
        owner: &str,
        version: i64,
        detail: String,
        refused: bool,
        retry_at: i64,
    ) -> Result<bool, StoreError> {
        store
            .refresh_failed(tenant, name, owner, version, refused, &detail, retry_at)
            .await
    }

    /// Tells the tenant: an audit event, and a message to its webhook endpoints.
    pub(crate) async fn announce(
        &self,
        store: &Store,
        tenant: &str,
        name: &str,
        user: &str,
        event: &str,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let data = serde_json::json!({
            "connection": name,
            "user": user,
            "detail": detail,
        });
        store
            .audit(
                tenant,
                &Actor::System,
                event,
                Some(name),
                Some(data.clone()),
            )
            .await?;
        let event_id = format!("{event}_{}_{}", name.replace(':', "-"), now_ms());
        if store
            .enqueue_tenant_event(tenant, user, event, &event_id, data)
            .await?
        {
            self.webhooks_wake.notify_one();
        }
        Ok(())
    }
}

/// Exponential backoff with full jitter for scheduled retries.
fn retry_delay(failures: i64) -> i64 {
    let ceiling = RETRY_BASE_MS
        .saturating_mul(1i64 << failures.clamp(0, 20))
        .min(RETRY_CAP_MS);
    rand::Rng::random_range(&mut rand::rng(), ceiling / 10..=ceiling)
}

/// The scheduled refresher: refreshes what comes due (ahead of expiry, and
/// daily), sleeping until the next due time or until woken.
pub async fn run(app: Arc<crate::App>) {
    loop {
        let now = now_ms();
        let mut run: Result<(), String> = Ok(());
        match app.store.due_refreshes(now, 32).await {
            Ok(due) => {
                for (tenant, name) in due {
                    let reason = Reason::Scheduled;
                    if let Err(e) = app
                        .oauth
                        .refresh_current(&app.store, &tenant, &name, reason)
                        .await
                    {
                        tracing::debug!(%tenant, connection = %name, error = %e, "scheduled refresh did not succeed");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reading due refreshes failed");
                run = Err(e.to_string());
            }
        }
        // Another replica may schedule work too: look again within a minute.
        let next = app.store.next_refresh_due().await.ok().flatten();
        let wait = next
            .map(|at| (at - now_ms()).clamp(0, 60_000))
            .unwrap_or(60_000);
        app.health
            .job_ran("token-refresh", run, Some(now_ms() + wait));
        if wait == 0 {
            // Due but locked by someone else: give them a moment.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            _ = app.oauth.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        for failures in 0..30 {
            let d = retry_delay(failures);
            let ceiling = (RETRY_BASE_MS << failures.min(20)).min(RETRY_CAP_MS);
            assert!(d >= ceiling / 10 && d <= ceiling, "{failures}: {d}");
        }
    }
}
