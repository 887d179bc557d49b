//! Reading webhook requests and building answers.

use crate::provider::{UserEvent, WebhookOutcome, WebhookRequest, WebhookResponse};

/// The first value of header `name` (compared case-insensitively).
pub fn header<'a>(request: &'a WebhookRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// An answer with a body and a content type.
pub fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> WebhookResponse {
    WebhookResponse {
        status,
        headers: vec![("content-type".into(), content_type.into())],
        body: body.into(),
    }
}

/// `200 OK` with an empty body: the usual acknowledgement.
pub fn ok() -> WebhookResponse {
    WebhookResponse {
        status: 200,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

/// `200` with a JSON body.
pub fn json(value: &serde_json::Value) -> WebhookResponse {
    respond(200, "application/json", value.to_string())
}

/// An outcome that only answers (handshakes, ignored event types).
pub fn answer_only(response: WebhookResponse) -> WebhookOutcome {
    WebhookOutcome {
        response,
        delivery_id: None,
        events: Vec::<UserEvent>::new(),
        signals: Vec::new(),
    }
}
