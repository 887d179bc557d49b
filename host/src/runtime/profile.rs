//! What one plugin call cost and did, for `presence-host plugin run`: time,
//! fuel (about one unit per WebAssembly instruction), peak linear memory,
//! output size and every host import it called. And what such a run may put
//! in place of the real world: recorded HTTP answers and a wall clock set to
//! when a recorded request was made.
//!
//! Serving never profiles: fuel metering slows guest code, so only a runtime
//! built for a run turns it on.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::capabilities::http::{HttpError, OutboundResponse, Recorded};

/// One host import a call made.
#[derive(Debug, Clone, Serialize)]
pub struct HostCall {
    /// The import, as `interface.function` (`secrets.hmac-verify`).
    pub import: &'static str,
    /// Its arguments, summarised (a secret's name, never a value; sizes of bytes).
    pub args: String,
    /// What the host answered, summarised.
    pub answer: String,
    pub micros: u64,
}

/// What one call cost and did.
#[derive(Debug, Clone, Serialize)]
pub struct CallProfile {
    pub export: &'static str,
    pub micros: u64,
    /// Fuel consumed: WebAssembly instructions executed, roughly.
    pub fuel: u64,
    /// The most linear memory the instance held, in bytes.
    pub peak_memory_bytes: usize,
    pub memory_limit_bytes: usize,
    /// Bytes of strings and lists in what the call returned (what the output limit counts).
    pub output_bytes: usize,
    pub output_limit_bytes: usize,
    /// Every host import the call made, counted.
    pub host_call_count: u32,
    /// The first thousand of them, each summarised.
    pub host_calls: Vec<HostCall>,
}

/// A recorded answer to an outbound request, from an imports file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedAnswer {
    pub method: String,
    /// The request's URL; a trailing `*` matches any URL that starts with the rest.
    pub url: String,
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body as text; or `json`, written as JSON with a JSON content type.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// Answer every matching request, not just the first.
    #[serde(default)]
    pub repeat: bool,
}

fn ok() -> u16 {
    200
}

impl RecordedAnswer {
    fn matches(&self, method: &str, url: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
            && match self.url.strip_suffix('*') {
                Some(prefix) => url.starts_with(prefix),
                None => self.url == url,
            }
    }

    fn response(&self) -> OutboundResponse {
        let mut headers = self.headers.clone();
        let body = match (&self.json, &self.body) {
            (Some(json), _) => {
                if !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                json.to_string().into_bytes()
            }
            (None, Some(text)) => text.clone().into_bytes(),
            (None, None) => Vec::new(),
        };
        OutboundResponse {
            status: self.status,
            headers,
            body,
        }
    }
}

/// What a run puts in place of the world outside the sandbox.
#[derive(Debug, Default)]
pub struct Stand {
    /// Recorded answers, used in order; `None` sends requests for real (under the allow-list).
    http: Option<Mutex<Vec<(RecordedAnswer, bool)>>>,
    /// The wall clock the plugin reads: `(then, when the run started)`.
    clock: Option<(SystemTime, Instant)>,
}

impl Stand {
    pub fn new(http: Option<Vec<RecordedAnswer>>, now: Option<SystemTime>) -> Self {
        Self {
            http: http.map(|answers| Mutex::new(answers.into_iter().map(|a| (a, false)).collect())),
            clock: now.map(|then| (then, Instant::now())),
        }
    }

    pub fn replays_http(&self) -> bool {
        self.http.is_some()
    }

    /// The clock a call's WASI context reads, when the run sets one.
    pub fn wall_clock(&self) -> Option<ShiftedClock> {
        self.clock
            .map(|(then, started)| ShiftedClock { then, started })
    }
}

impl Recorded for Stand {
    /// The recorded answer to a request the host's checks let through.
    fn answer(&self, method: &str, url: &str) -> Result<OutboundResponse, HttpError> {
        let Some(answers) = &self.http else {
            return Err(HttpError::Transport("no recorded answers".into()));
        };
        let mut answers = answers.lock().expect("recorded answers lock");
        let found = answers
            .iter_mut()
            .find(|(a, used)| (!*used || a.repeat) && a.matches(method, url));
        match found {
            Some((answer, used)) => {
                *used = true;
                Ok(answer.response())
            }
            None => Err(HttpError::Transport(format!(
                "no recorded answer for {method} {url} (add one to the imports file's \"http\" list)"
            ))),
        }
    }
}

/// A wall clock that starts at a chosen moment and runs at real speed.
pub struct ShiftedClock {
    then: SystemTime,
    started: Instant,
}

impl wasmtime_wasi::HostWallClock for ShiftedClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        (self.then + self.started.elapsed())
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Where a profiling runtime leaves each call's profile.
#[derive(Debug, Default)]
pub struct Profiles(Mutex<Vec<CallProfile>>);

impl Profiles {
    pub(crate) fn push(&self, profile: CallProfile) {
        self.0.lock().expect("profiles lock").push(profile);
    }

    /// The profiles of the calls made since the last take, oldest first.
    pub fn take(&self) -> Vec<CallProfile> {
        std::mem::take(&mut self.0.lock().expect("profiles lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(method: &str, url: &str, repeat: bool) -> RecordedAnswer {
        RecordedAnswer {
            method: method.into(),
            url: url.into(),
            status: 201,
            headers: Vec::new(),
            body: None,
            json: Some(serde_json::json!({"sid": "SM1"})),
            repeat,
        }
    }

    #[test]
    fn recorded_answers_match_by_method_and_url_and_are_used_once_unless_repeated() {
        let stand = Stand::new(
            Some(vec![
                answer("POST", "https://api.twilio.com/2010-04-01/*", false),
                answer("GET", "https://slack.com/api/users.info", true),
            ]),
            None,
        );
        let first = stand
            .answer(
                "post",
                "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
            )
            .unwrap();
        assert_eq!(first.status, 201);
        assert!(
            first
                .headers
                .contains(&("content-type".into(), "application/json".into()))
        );
        assert_eq!(first.body, br#"{"sid":"SM1"}"#);
        let again = stand
            .answer(
                "POST",
                "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json",
            )
            .unwrap_err();
        assert!(
            again.to_string().contains("no recorded answer for POST"),
            "{again}"
        );
        for _ in 0..3 {
            assert!(
                stand
                    .answer("GET", "https://slack.com/api/users.info")
                    .is_ok()
            );
        }
        assert!(
            stand
                .answer("GET", "https://slack.com/api/users.info?user=U1")
                .is_err()
        );
    }

    #[test]
    fn the_shifted_clock_starts_at_the_chosen_moment() {
        use wasmtime_wasi::HostWallClock;
        let then = UNIX_EPOCH + Duration::from_secs(1_531_420_618);
        let clock = Stand::new(None, Some(then)).wall_clock().unwrap();
        let now = clock.now();
        assert!(now >= Duration::from_secs(1_531_420_618));
        assert!(now < Duration::from_secs(1_531_420_618 + 60));
    }
}
