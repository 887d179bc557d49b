//! A circuit breaker per provider connection, so a dead provider is not hammered.
//!
//! Closed: calls flow; it opens after `failures_to_open` consecutive failures,
//! or when at least half of the last `ratio_window` calls failed. Open: calls
//! wait until `open_until`; each time it opens the wait doubles (from
//! `open_ms` to `max_open_ms`, with full jitter over the upper half so
//! replicas do not probe in step). Half-open: one probe call is let through;
//! its success closes the breaker, its failure opens it again.

use serde::Serialize;

/// Breaker settings (`[health]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failures_to_open: u32,
    pub ratio_window: u32,
    pub open_ms: i64,
    pub max_open_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    Closed,
    Open { until: i64 },
    HalfOpen { probing: bool },
}

/// The most outcomes a breaker remembers (its ratio window is at most this).
const RECENT_CAP: u32 = 100;

#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    /// The outcomes of the last calls, newest last (true: failed).
    recent: std::collections::VecDeque<bool>,
    /// How many times it opened in a row without closing (for the doubling wait).
    opened_in_a_row: u32,
    pub opened_at: Option<i64>,
    pub last_error: Option<String>,
    /// When the probe under way was let through: a probe whose outcome never
    /// comes back (its caller failed before reporting) is given up after
    /// [`PROBE_TIMEOUT_MS`], and another is let through.
    probe_started: i64,
}

/// How long a half-open breaker waits for its probe's outcome.
pub const PROBE_TIMEOUT_MS: i64 = 60_000;

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// The probe of a half-open breaker: report its outcome.
    Probe,
    /// Wait until then.
    WaitUntil(i64),
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            recent: Default::default(),
            opened_in_a_row: 0,
            opened_at: None,
            last_error: None,
            probe_started: 0,
        }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go now.
    pub fn admit(&mut self, now: i64) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Go,
            BreakerState::Open { until } if now < until => Admission::WaitUntil(until),
            // Someone is probing; others wait a moment for its verdict.
            BreakerState::HalfOpen { probing: true }
                if now - self.probe_started < PROBE_TIMEOUT_MS =>
            {
                Admission::WaitUntil(now + 1_000)
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::HalfOpen { probing: true };
                self.probe_started = now;
                Admission::Probe
            }
        }
    }

    /// An outcome that says nothing about the provider's health (a refusal,
    /// a rate limit): a probe in flight is released for the next call.
    pub fn neutral(&mut self) {
        if let BreakerState::HalfOpen { probing: true } = self.state {
            self.state = BreakerState::HalfOpen { probing: false };
        }
    }

    pub fn success(&mut self) {
        self.consecutive_failures = 0;
        self.push(false, RECENT_CAP);
        if matches!(self.state, BreakerState::HalfOpen { .. }) {
            self.state = BreakerState::Closed;
            self.opened_in_a_row = 0;
            self.opened_at = None;
            self.recent.clear();
        }
    }

    /// Records a failure; `jitter` in [0, 1) picks the wait within its upper half.
    pub fn failure(&mut self, c: &BreakerConfig, now: i64, error: &str, jitter: f64) {
        self.consecutive_failures += 1;
        self.last_error = Some(error.to_string());
        self.push(true, c.ratio_window);
        let failed = self.recent.iter().filter(|f| **f).count();
        let trips = match self.state {
            BreakerState::HalfOpen { .. } => true,
            BreakerState::Open { .. } => false,
            BreakerState::Closed => {
                self.consecutive_failures >= c.failures_to_open
                    || (self.recent.len() >= c.ratio_window as usize
                        && failed * 2 >= self.recent.len())
            }
        };
        if trips {
            let ceiling = c
                .open_ms
                .saturating_mul(1i64 << self.opened_in_a_row.min(20))
                .min(c.max_open_ms);
            let wait = ceiling / 2 + ((ceiling / 2) as f64 * jitter.clamp(0.0, 1.0)) as i64;
            self.state = BreakerState::Open { until: now + wait };
            self.opened_in_a_row += 1;
            self.opened_at.get_or_insert(now);
        }
    }

    fn push(&mut self, failed: bool, keep: u32) {
        self.recent.push_back(failed);
        while self.recent.len() > (keep as usize).min(RECENT_CAP as usize) {
            self.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: BreakerConfig = BreakerConfig {
        failures_to_open: 3,
        ratio_window: 10,
        open_ms: 1_000,
        max_open_ms: 8_000,
    };

    #[test]
    fn opens_after_consecutive_failures_probes_once_and_closes_on_success() {
        let mut b = Breaker::default();
        let mut now = 0;
        for _ in 0..2 {
            assert_eq!(b.admit(now), Admission::Go);
            b.failure(&C, now, "HTTP 500", 0.0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure(&C, now, "HTTP 500", 0.0);
        let BreakerState::Open { until } = b.state() else {
            panic!("{:?}", b.state())
        };
        assert_eq!(until, 500, "half of the first 1 s wait, jitter 0");
        assert_eq!(b.admit(now), Admission::WaitUntil(500));
        now = 500;
        assert_eq!(b.admit(now), Admission::Probe);
        // While the probe runs, others wait.
        assert!(matches!(b.admit(now), Admission::WaitUntil(_)));
        // A probe whose outcome never comes back is given up after a while.
        assert_eq!(b.admit(now + PROBE_TIMEOUT_MS), Admission::Probe);
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(now), Admission::Go);
    }

    #[test]
    fn a_failed_probe_reopens_for_longer_within_jittered_bounds() {
        let mut b = Breaker::default();
        let mut now = 0;
        let mut waits = Vec::new();
        for round in 0..6 {
            for _ in 0..3 {
                b.failure(&C, now, "timeout", 0.999);
                if !matches!(b.state(), BreakerState::Closed) {
                    break;
                }
            }
            let BreakerState::Open { until } = b.state() else {
                panic!("round {round}: {:?}", b.state())
            };
            let wait = until - now;
            let ceiling = (C.open_ms << round).min(C.max_open_ms);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "round {round}: {wait}"
            );
            waits.push(wait);
            now = until;
            assert_eq!(b.admit(now), Admission::Probe);
        }
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert!(*waits.last().unwrap() <= C.max_open_ms);
    }

    #[test]
    fn a_high_failure_ratio_opens_even_without_a_streak() {
        let mut b = Breaker::default();
        for i in 0..11 {
            if i % 2 == 0 {
                b.failure(&C, 0, "HTTP 503", 0.5);
            } else {
                b.success();
            }
        }
        assert!(
            matches!(b.state(), BreakerState::Open { .. }),
            "{:?}",
            b.state()
        );
    }
}
