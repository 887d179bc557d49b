//! Bindings for `wedsync:calendar@0.1.0`: what a calendar provider adds to a
//! `wedsync:presence@0.1.0` provider (the `calendar` export: watch, unwatch,
//! sync; the `calendar-host` import: request-sync, webhook-url), the host side
//! of that import, and the conversions into the host's model.
//!
//! A calendar provider is linked as a provider; this extension is bound on top
//! when the component exports `calendar`, so the presence half is the same code
//! for every provider.

use crate::model;
use crate::runtime::since_v0_1_0;
use crate::runtime::state::CallState;

pub const VERSION: &str = "0.1.0";

/// The most connections one call may ask to have synced (or watched); more are ignored.
const MAX_SYNC_REQUESTS: usize = 100;

pub mod extension {
    wasmtime::component::bindgen!({
        path: ["../wit/v0.1.0", "../wit/calendar/v0.1.0"],
        world: "wedsync:calendar/calendar-extension@0.1.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wedsync:presence/types@0.1.0": crate::runtime::since_v0_1_0::classifier::wedsync::presence::types,
        },
    });
}

use extension::wedsync::calendar::{calendar_host, types as ct};

impl ct::Host for CallState {}

impl calendar_host::Host for CallState {
    async fn request_sync(&mut self, connection: String) {
        let started = self.import_starts();
        let taken = if !crate::store::connections::valid_connection_name(&connection) {
            "ignored: not a connection name"
        } else if self.sync_requests.contains(&connection) {
            "already asked"
        } else if self.sync_requests.len() >= MAX_SYNC_REQUESTS {
            tracing::warn!(plugin = %self.grants.plugin, tenant = %self.tenant, "more than {MAX_SYNC_REQUESTS} sync requests in one call; ignoring the rest");
            "ignored: too many"
        } else {
            self.sync_requests.push(connection.clone());
            "queued"
        };
        self.import_ended(
            started,
            "calendar-host.request-sync",
            || format!("{:?}", crate::capabilities::log::truncate(&connection, 256)),
            || taken.to_string(),
        );
    }

    async fn request_watch(&mut self, connection: String) {
        let started = self.import_starts();
        let taken = if !crate::store::connections::valid_connection_name(&connection) {
            "ignored: not a connection name"
        } else if self.watch_requests.contains(&connection) {
            "already asked"
        } else if self.watch_requests.len() >= MAX_SYNC_REQUESTS {
            tracing::warn!(plugin = %self.grants.plugin, tenant = %self.tenant, "more than {MAX_SYNC_REQUESTS} watch requests in one call; ignoring the rest");
            "ignored: too many"
        } else {
            self.watch_requests.push(connection.clone());
            "queued"
        };
        self.import_ended(
            started,
            "calendar-host.request-watch",
            || format!("{:?}", crate::capabilities::log::truncate(&connection, 256)),
            || taken.to_string(),
        );
    }

    async fn webhook_url(&mut self) -> String {
        let started = self.import_starts();
        let url = self
            .services
            .webhook_url(self.grants.plugin.as_str(), &self.tenant);
        self.import_ended(started, "calendar-host.webhook-url", String::new, || {
            url.clone()
        });
        url
    }
}

fn show_as_from(s: ct::ShowAs) -> model::ShowAs {
    match s {
        ct::ShowAs::Free => model::ShowAs::Free,
        ct::ShowAs::Tentative => model::ShowAs::Tentative,
        ct::ShowAs::Busy => model::ShowAs::Busy,
        ct::ShowAs::OutOfOffice => model::ShowAs::OutOfOffice,
        ct::ShowAs::WorkingElsewhere => model::ShowAs::WorkingElsewhere,
        ct::ShowAs::Focus => model::ShowAs::Focus,
    }
}

fn event_from(e: ct::Event) -> model::SyncedEvent {
    let show_as = show_as_from(e.show_as);
    model::SyncedEvent {
        event: model::CalendarEvent {
            id: e.id,
            title: e.title,
            description: e.description,
            location: e.location,
            attendees: e.attendees,
            start: e.start,
            end: e.end,
            time_zone: e.time_zone,
            all_day: e.all_day,
            transparency: match show_as {
                model::ShowAs::Free | model::ShowAs::WorkingElsewhere => {
                    model::Transparency::Transparent
                }
                _ => model::Transparency::Opaque,
            },
            online_meeting_url: e.online_meeting_url,
        },
        show_as,
    }
}

pub(crate) fn page_from(p: ct::CalendarPage) -> model::CalendarPage {
    model::CalendarPage {
        reset: p.reset,
        events: p.events.into_iter().map(event_from).collect(),
        removed: p.removed,
        next_cursor: p.next_cursor,
        more: p.more,
    }
}

pub(crate) fn lease_from(l: ct::WatchLease) -> model::WatchLease {
    model::WatchLease { expires: l.expires }
}

pub(crate) use since_v0_1_0::plugin_error_from;
