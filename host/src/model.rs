//! The host's own vocabulary: events, classifications, presence signals.
//!
//! These are the types the rest of the host works with. Each supported WIT
//! version converts its generated bindings into and out of these (see
//! `runtime::since_v0_1_0`), so the host can move on without breaking old plugins.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
pub type Instant = i64;

/// What a person can be reached for right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    Available,
    Busy,
    InCall,
    DoNotDisturb,
    Away,
    OutOfOffice,
    Offline,
}

impl Availability {
    pub const ALL: [Availability; 7] = [
        Self::Available,
        Self::Busy,
        Self::InCall,
        Self::DoNotDisturb,
        Self::Away,
        Self::OutOfOffice,
        Self::Offline,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Busy => "busy",
            Self::InCall => "in_call",
            Self::DoNotDisturb => "do_not_disturb",
            Self::Away => "away",
            Self::OutOfOffice => "out_of_office",
            Self::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transparency {
    #[default]
    Opaque,
    Transparent,
}

/// How a calendar entry shows its owner's time (`wedsync:calendar` `show-as`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShowAs {
    Free,
    Tentative,
    Busy,
    OutOfOffice,
    WorkingElsewhere,
    Focus,
}

/// One event of a calendar sync: the occurrence, and how it shows time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncedEvent {
    pub event: CalendarEvent,
    pub show_as: ShowAs,
}

/// One page of a connection's calendar sync (`wedsync:calendar` `calendar-page`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarPage {
    /// The cursor given was stale: forget the connection's events first.
    pub reset: bool,
    pub events: Vec<SyncedEvent>,
    pub removed: Vec<String>,
    pub next_cursor: Option<String>,
    pub more: bool,
}

/// How long a calendar provider's push subscriptions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLease {
    pub expires: Option<Instant>,
}

/// One occurrence of a calendar entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarEvent {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub attendees: Vec<String>,
    pub start: Instant,
    pub end: Instant,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub all_day: bool,
    #[serde(default)]
    pub transparency: Transparency,
    #[serde(default)]
    pub online_meeting_url: Option<String>,
}

/// The wedding categories; `Other` carries an agency's own category name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Ceremony,
    Venue,
    Client,
    Vendor,
    Other(String),
}

impl Category {
    /// A stable text form for storage: the four known names, or `other:<name>`.
    pub fn to_storage(&self) -> String {
        match self {
            Self::Ceremony => "ceremony".into(),
            Self::Venue => "venue".into(),
            Self::Client => "client".into(),
            Self::Vendor => "vendor".into(),
            Self::Other(name) => format!("other:{name}"),
        }
    }

    pub fn from_storage(s: &str) -> Self {
        match s {
            "ceremony" => Self::Ceremony,
            "venue" => Self::Venue,
            "client" => Self::Client,
            "vendor" => Self::Vendor,
            other => Self::Other(other.strip_prefix("other:").unwrap_or(other).to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    Low,
    Normal,
    High,
    Critical,
}

/// What a classifier decided about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub category: Category,
    pub status_text: String,
    pub status_emoji: String,
    pub availability: Availability,
    pub urgency: Urgency,
}

/// Where a presence signal comes from. Declaration order is precedence, highest first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SignalSource {
    Manual,
    Call,
    Calendar,
    ProviderStatus,
    WorkingHours,
}

impl SignalSource {
    pub const ALL: [SignalSource; 5] = [
        Self::Manual,
        Self::Call,
        Self::Calendar,
        Self::ProviderStatus,
        Self::WorkingHours,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Call => "call",
            Self::Calendar => "calendar",
            Self::ProviderStatus => "provider_status",
            Self::WorkingHours => "working_hours",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One source's statement about a person, valid for a window of time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PresenceSignal {
    pub user: String,
    pub source: SignalSource,
    pub availability: Availability,
    pub status_text: Option<String>,
    pub status_emoji: Option<String>,
    pub starts: Option<Instant>,
    pub expires: Option<Instant>,
    /// The source withdraws its previous statement instead of making a new one.
    pub clears: bool,
    /// The wedding classification behind a calendar signal, if any.
    pub category: Option<Category>,
}

/// A signal as stored: with the key that tells it apart from the same source's
/// other statements (one per calendar event), and the plugin it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyedSignal {
    pub key: String,
    pub origin: String,
    pub signal: PresenceSignal,
}

/// A calendar event concerning one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    pub user: String,
    pub event: CalendarEvent,
}

/// An HTTP request received on a plugin's webhook route.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a provider plugin made of a verified webhook.
#[derive(Debug, Clone)]
pub struct WebhookOutcome {
    pub response: WebhookResponse,
    pub delivery_id: Option<String>,
    pub events: Vec<UserEvent>,
    pub signals: Vec<PresenceSignal>,
    /// Connections the plugin asked to have synced (`calendar-host.request-sync`),
    /// in the order asked, each once.
    pub sync_requests: Vec<String>,
    /// Connections it asked to have watched again (`calendar-host.request-watch`).
    pub watch_requests: Vec<String>,
}

/// A person's effective presence, derived from their active signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Presence {
    pub user: String,
    pub availability: Availability,
    pub status_text: Option<String>,
    pub status_emoji: Option<String>,
    pub until: Option<Instant>,
    pub category: Option<Category>,
    /// The source whose signal decided, none when no signal is active.
    pub source: Option<SignalSource>,
    /// The plugin (or `api`) that stated the deciding signal.
    #[serde(default)]
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    Webhooks,
    PushStatus,
    SyncCalendar,
    SendNotification,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    pub display_name: String,
    pub features: Vec<Feature>,
}

/// A plugin's own account of why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginFault {
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("provider API failed: {message}")]
    Upstream {
        message: String,
        status: Option<u16>,
        retry_after_ms: Option<u64>,
    },
    #[error("internal: {0}")]
    Internal(String),
}

/// A message for a channel provider to deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub body: String,
    pub urgency: Urgency,
}

/// What a channel answered for one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReceipt {
    pub provider_message_id: Option<String>,
}
