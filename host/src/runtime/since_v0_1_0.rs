//! Bindings for `wedsync:presence@0.1.0`, the host side of its imports, and the
//! conversions between its types and the host's model.
//!
//! One module per accepted WIT version (Zed's `since_vX_Y_Z` pattern): when 0.2.0
//! arrives it gets its own module, and plugins built against 0.1.0 keep loading
//! through this one.

use crate::capabilities::{self, http::OutboundRequest};
use crate::model;
use crate::runtime::state::CallState;

pub const VERSION: &str = "0.1.0";

pub mod classifier {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "classifier",
        imports: { default: async },
        exports: { default: async },
    });
}

pub mod provider {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "provider",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wedsync:presence/types": super::classifier::wedsync::presence::types,
            "wedsync:presence/log": super::classifier::wedsync::presence::log,
        },
    });
}

use classifier::wedsync::presence::{log as wit_log, types as t};
use provider::wedsync::presence::{
    config as wit_config, http as wit_http, kv as wit_kv, secrets as wit_secrets,
};

// --- host imports ------------------------------------------------------------

impl t::Host for CallState {}

impl wit_log::Host for CallState {
    async fn write(&mut self, level: wit_log::Level, message: String) {
        let started = self.import_starts();
        let level = match level {
            wit_log::Level::Trace => capabilities::log::Level::Trace,
            wit_log::Level::Debug => capabilities::log::Level::Debug,
            wit_log::Level::Info => capabilities::log::Level::Info,
            wit_log::Level::Warn => capabilities::log::Level::Warn,
            wit_log::Level::Error => capabilities::log::Level::Error,
        };
        self.log_lines = self.log_lines.saturating_add(1);
        capabilities::log::write(
            self.grants.plugin.as_str(),
            &self.tenant,
            self.log_lines,
            level,
            &message,
        );
        self.import_ended(
            started,
            "log.write",
            || format!("{level:?} {message:?}"),
            String::new,
        );
    }
}

impl wit_config::Host for CallState {
    async fn get(&mut self, key: String) -> Option<String> {
        let started = self.import_starts();
        let value = capabilities::config::get(&self.grants, &key);
        self.import_ended(
            started,
            "config.get",
            || format!("{key:?}"),
            || format!("{value:?}"),
        );
        value
    }
}

impl wit_http::Host for CallState {
    async fn send(
        &mut self,
        req: wit_http::Request,
    ) -> Result<wit_http::Response, wit_http::HttpError> {
        use capabilities::http::HttpError as E;
        let started = self.import_starts();
        let request = OutboundRequest {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
            connection: req.connection,
            bearer_secret: req.bearer_secret,
        };
        let args = (started.is_some()).then(|| {
            let mut args = format!(
                "{} {} ({} body bytes)",
                request.method,
                request.url,
                request.body.len()
            );
            if let Some(c) = &request.connection {
                args.push_str(&format!(", connection {c:?}"));
            }
            if let Some(s) = &request.bearer_secret {
                args.push_str(&format!(", bearer secret {s:?}"));
            }
            args
        });
        let wire = match self.services.stand.as_deref().filter(|s| s.replays_http()) {
            Some(stand) => capabilities::http::Wire::Recorded(stand),
            None => capabilities::http::Wire::Network(&self.services.http),
        };
        let result = capabilities::http::send(
            wire,
            &self.services.store,
            &self.services.oauth,
            &self.grants,
            &self.tenant,
            request,
            &mut self.http_budget,
        )
        .await;
        self.import_ended(
            started,
            "http.send",
            || args.unwrap_or_default(),
            || match &result {
                Ok(r) => format!("{} ({} bytes)", r.status, r.body.len()),
                Err(e) => format!("error: {e}"),
            },
        );
        match result {
            Ok(r) => Ok(wit_http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(e) => {
                tracing::warn!(plugin = %self.grants.plugin, tenant = %self.tenant, error = %e, "outbound HTTP refused or failed");
                Err(match e {
                    E::NotAllowed(m) => wit_http::HttpError::NotAllowed(m),
                    E::InvalidRequest(m) => wit_http::HttpError::InvalidRequest(m),
                    E::Timeout => wit_http::HttpError::Timeout,
                    E::TooLarge => wit_http::HttpError::TooLarge,
                    E::CredentialUnavailable(m) => wit_http::HttpError::CredentialUnavailable(m),
                    E::Transport(m) => wit_http::HttpError::Transport(m),
                })
            }
        }
    }
}

fn secret_error(
    state: &CallState,
    e: capabilities::secrets::SecretError,
) -> wit_secrets::SecretError {
    use capabilities::secrets::SecretError as E;
    tracing::warn!(plugin = %state.grants.plugin, tenant = %state.tenant, error = %e, "secret use refused");
    match e {
        E::NotGranted { name, .. } => wit_secrets::SecretError::NotGranted(name),
        E::NotSet(name) => wit_secrets::SecretError::NotSet(name),
        // The plugin learns only that the secret cannot be read now; the detail is in the host's log.
        E::Unavailable { name, .. } => wit_secrets::SecretError::Unavailable(name),
    }
}

fn algorithm_name(a: wit_secrets::HmacAlgorithm) -> &'static str {
    match a {
        wit_secrets::HmacAlgorithm::Sha1 => "sha1",
        wit_secrets::HmacAlgorithm::Sha256 => "sha256",
    }
}

fn algorithm(a: wit_secrets::HmacAlgorithm) -> capabilities::secrets::HmacAlgorithm {
    match a {
        wit_secrets::HmacAlgorithm::Sha1 => capabilities::secrets::HmacAlgorithm::Sha1,
        wit_secrets::HmacAlgorithm::Sha256 => capabilities::secrets::HmacAlgorithm::Sha256,
    }
}

/// A profiled answer: the value's summary, or the error.
fn summary<T, E: std::fmt::Debug>(result: &Result<T, E>, ok: impl FnOnce(&T) -> String) -> String {
    match result {
        Ok(v) => ok(v),
        Err(e) => format!("error: {e:?}"),
    }
}

impl wit_secrets::Host for CallState {
    async fn hmac_sign(
        &mut self,
        secret: String,
        alg: wit_secrets::HmacAlgorithm,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, wit_secrets::SecretError> {
        let started = self.import_starts();
        let result = capabilities::secrets::hmac_sign(
            &self.services.store,
            &self.grants,
            &self.tenant,
            &secret,
            algorithm(alg),
            &message,
        )
        .await
        .map_err(|e| secret_error(self, e));
        self.import_ended(
            started,
            "secrets.hmac-sign",
            || {
                format!(
                    "{secret:?} {} over {} bytes",
                    algorithm_name(alg),
                    message.len()
                )
            },
            || summary(&result, |mac| format!("{} bytes", mac.len())),
        );
        result
    }

    async fn hmac_verify(
        &mut self,
        secret: String,
        alg: wit_secrets::HmacAlgorithm,
        message: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool, wit_secrets::SecretError> {
        let started = self.import_starts();
        let result = capabilities::secrets::hmac_verify(
            &self.services.store,
            &self.grants,
            &self.tenant,
            &secret,
            algorithm(alg),
            &message,
            &signature,
        )
        .await
        .map_err(|e| secret_error(self, e));
        self.import_ended(
            started,
            "secrets.hmac-verify",
            || {
                format!(
                    "{secret:?} {} over {} bytes",
                    algorithm_name(alg),
                    message.len()
                )
            },
            || summary(&result, |ok| format!("{ok}")),
        );
        result
    }

    async fn equals(
        &mut self,
        secret: String,
        candidate: Vec<u8>,
    ) -> Result<bool, wit_secrets::SecretError> {
        let started = self.import_starts();
        let result = capabilities::secrets::equals(
            &self.services.store,
            &self.grants,
            &self.tenant,
            &secret,
            &candidate,
        )
        .await
        .map_err(|e| secret_error(self, e));
        self.import_ended(
            started,
            "secrets.equals",
            || format!("{secret:?} against {} bytes", candidate.len()),
            || summary(&result, |ok| format!("{ok}")),
        );
        result
    }
}

fn kv_error(e: capabilities::kv::KvError) -> wit_kv::KvError {
    use capabilities::kv::KvError as E;
    match e {
        E::QuotaExceeded => wit_kv::KvError::QuotaExceeded,
        E::TooLarge => wit_kv::KvError::TooLarge,
        E::Unavailable(m) => wit_kv::KvError::Unavailable(m),
    }
}

impl wit_kv::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, wit_kv::KvError> {
        let started = self.import_starts();
        let result = capabilities::kv::get(&self.services.store, &self.grants, &self.tenant, &key)
            .await
            .map_err(kv_error);
        self.import_ended(
            started,
            "kv.get",
            || format!("{key:?}"),
            || {
                summary(&result, |v| match v {
                    Some(v) => format!("{} bytes", v.len()),
                    None => "none".into(),
                })
            },
        );
        result
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), wit_kv::KvError> {
        let started = self.import_starts();
        let result = capabilities::kv::set(
            &self.services.store,
            &self.grants,
            &self.tenant,
            &key,
            &value,
        )
        .await
        .map_err(kv_error);
        self.import_ended(
            started,
            "kv.set",
            || format!("{key:?} ({} bytes)", value.len()),
            || summary(&result, |_| "ok".into()),
        );
        result
    }

    async fn delete(&mut self, key: String) -> Result<(), wit_kv::KvError> {
        let started = self.import_starts();
        let result =
            capabilities::kv::delete(&self.services.store, &self.grants, &self.tenant, &key)
                .await
                .map_err(kv_error);
        self.import_ended(
            started,
            "kv.delete",
            || format!("{key:?}"),
            || summary(&result, |_| "ok".into()),
        );
        result
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> Result<Vec<String>, wit_kv::KvError> {
        let started = self.import_starts();
        let result = capabilities::kv::list_keys(
            &self.services.store,
            &self.grants,
            &self.tenant,
            &prefix,
            limit,
        )
        .await
        .map_err(kv_error);
        self.import_ended(
            started,
            "kv.list-keys",
            || format!("{prefix:?} limit {limit}"),
            || summary(&result, |keys| format!("{} keys", keys.len())),
        );
        result
    }
}

// --- conversions ---------------------------------------------------------------

pub(crate) fn availability_from(a: t::Availability) -> model::Availability {
    match a {
        t::Availability::Available => model::Availability::Available,
        t::Availability::Busy => model::Availability::Busy,
        t::Availability::InCall => model::Availability::InCall,
        t::Availability::DoNotDisturb => model::Availability::DoNotDisturb,
        t::Availability::Away => model::Availability::Away,
        t::Availability::OutOfOffice => model::Availability::OutOfOffice,
        t::Availability::Offline => model::Availability::Offline,
    }
}

pub(crate) fn availability_into(a: model::Availability) -> t::Availability {
    match a {
        model::Availability::Available => t::Availability::Available,
        model::Availability::Busy => t::Availability::Busy,
        model::Availability::InCall => t::Availability::InCall,
        model::Availability::DoNotDisturb => t::Availability::DoNotDisturb,
        model::Availability::Away => t::Availability::Away,
        model::Availability::OutOfOffice => t::Availability::OutOfOffice,
        model::Availability::Offline => t::Availability::Offline,
    }
}

pub(crate) fn category_from(c: t::Category) -> model::Category {
    match c {
        t::Category::Ceremony => model::Category::Ceremony,
        t::Category::Venue => model::Category::Venue,
        t::Category::Client => model::Category::Client,
        t::Category::Vendor => model::Category::Vendor,
        t::Category::Other(name) => model::Category::Other(name),
    }
}

pub(crate) fn category_into(c: &model::Category) -> t::Category {
    match c {
        model::Category::Ceremony => t::Category::Ceremony,
        model::Category::Venue => t::Category::Venue,
        model::Category::Client => t::Category::Client,
        model::Category::Vendor => t::Category::Vendor,
        model::Category::Other(name) => t::Category::Other(name.clone()),
    }
}

pub(crate) fn event_into(e: &model::CalendarEvent) -> t::CalendarEvent {
    t::CalendarEvent {
        id: e.id.clone(),
        title: e.title.clone(),
        description: e.description.clone(),
        location: e.location.clone(),
        attendees: e.attendees.clone(),
        start: e.start,
        end: e.end,
        time_zone: e.time_zone.clone(),
        all_day: e.all_day,
        transparency: match e.transparency {
            model::Transparency::Opaque => t::Transparency::Opaque,
            model::Transparency::Transparent => t::Transparency::Transparent,
        },
        online_meeting_url: e.online_meeting_url.clone(),
    }
}

pub(crate) fn event_from(e: t::CalendarEvent) -> model::CalendarEvent {
    model::CalendarEvent {
        id: e.id,
        title: e.title,
        description: e.description,
        location: e.location,
        attendees: e.attendees,
        start: e.start,
        end: e.end,
        time_zone: e.time_zone,
        all_day: e.all_day,
        transparency: match e.transparency {
            t::Transparency::Opaque => model::Transparency::Opaque,
            t::Transparency::Transparent => model::Transparency::Transparent,
        },
        online_meeting_url: e.online_meeting_url,
    }
}

pub(crate) fn classification_from(c: t::Classification) -> model::Classification {
    model::Classification {
        category: category_from(c.category),
        status_text: c.status_text,
        status_emoji: c.status_emoji,
        availability: availability_from(c.availability),
        urgency: match c.urgency {
            t::Urgency::Low => model::Urgency::Low,
            t::Urgency::Normal => model::Urgency::Normal,
            t::Urgency::High => model::Urgency::High,
            t::Urgency::Critical => model::Urgency::Critical,
        },
    }
}

fn source_from(s: t::SignalSource) -> model::SignalSource {
    match s {
        t::SignalSource::Manual => model::SignalSource::Manual,
        t::SignalSource::Call => model::SignalSource::Call,
        t::SignalSource::Calendar => model::SignalSource::Calendar,
        t::SignalSource::ProviderStatus => model::SignalSource::ProviderStatus,
        t::SignalSource::WorkingHours => model::SignalSource::WorkingHours,
    }
}

fn signal_from(s: t::PresenceSignal) -> model::PresenceSignal {
    model::PresenceSignal {
        user: s.user,
        source: source_from(s.source),
        availability: availability_from(s.availability),
        status_text: s.status_text,
        status_emoji: s.status_emoji,
        starts: s.starts,
        expires: s.expires,
        clears: s.clears,
        category: None,
    }
}

pub(crate) fn webhook_request_into(r: &model::WebhookRequest) -> t::WebhookRequest {
    t::WebhookRequest {
        method: r.method.clone(),
        url: r.url.clone(),
        headers: r.headers.clone(),
        body: r.body.clone(),
        tenant: r.tenant.clone(),
    }
}

pub(crate) fn webhook_outcome_from(o: t::WebhookOutcome) -> model::WebhookOutcome {
    model::WebhookOutcome {
        response: model::WebhookResponse {
            status: o.response.status,
            headers: o.response.headers,
            body: o.response.body,
        },
        delivery_id: o.delivery_id,
        events: o
            .events
            .into_iter()
            .map(|ue| model::UserEvent {
                user: ue.user,
                event: event_from(ue.event),
            })
            .collect(),
        signals: o.signals.into_iter().map(signal_from).collect(),
        // Filled in from the call's state by the runtime.
        sync_requests: Vec::new(),
        watch_requests: Vec::new(),
    }
}

pub(crate) fn plugin_error_from(e: t::PluginError) -> model::PluginFault {
    match e {
        t::PluginError::Unauthorized(m) => model::PluginFault::Unauthorized(m),
        t::PluginError::InvalidInput(m) => model::PluginFault::InvalidInput(m),
        t::PluginError::Unsupported(m) => model::PluginFault::Unsupported(m),
        t::PluginError::Upstream(u) => model::PluginFault::Upstream {
            message: u.message,
            status: u.status,
            retry_after_ms: u.retry_after_ms,
        },
        t::PluginError::Internal(m) => model::PluginFault::Internal(m),
    }
}

pub(crate) fn provider_info_from(i: t::ProviderInfo) -> model::ProviderInfo {
    model::ProviderInfo {
        display_name: i.display_name,
        features: i
            .features
            .into_iter()
            .map(|f| match f {
                t::Feature::Webhooks => model::Feature::Webhooks,
                t::Feature::PushStatus => model::Feature::PushStatus,
                t::Feature::SyncCalendar => model::Feature::SyncCalendar,
                t::Feature::SendNotification => model::Feature::SendNotification,
            })
            .collect(),
    }
}

pub(crate) fn presence_into(p: &model::Presence) -> t::Presence {
    t::Presence {
        user: p.user.clone(),
        availability: availability_into(p.availability),
        status_text: p.status_text.clone(),
        status_emoji: p.status_emoji.clone(),
        until: p.until,
        category: p.category.as_ref().map(category_into),
    }
}

fn urgency_into(u: model::Urgency) -> t::Urgency {
    match u {
        model::Urgency::Low => t::Urgency::Low,
        model::Urgency::Normal => t::Urgency::Normal,
        model::Urgency::High => t::Urgency::High,
        model::Urgency::Critical => t::Urgency::Critical,
    }
}

pub(crate) fn notification_into(n: &model::Notification) -> t::Notification {
    t::Notification {
        id: n.id.clone(),
        recipient: n.recipient.clone(),
        subject: n.subject.clone(),
        body: n.body.clone(),
        urgency: urgency_into(n.urgency),
    }
}

pub(crate) fn receipt_from(r: t::DeliveryReceipt) -> model::DeliveryReceipt {
    model::DeliveryReceipt {
        provider_message_id: r.provider_message_id,
    }
}
