//! Webhook rate limits: a token bucket per endpoint (plugin and tenant), checked
//! before the plugin runs, and one per person for calendar events (the seed's
//! 100 events per hour), checked once the plugin has said whose events they are.
//!
//! Buckets live in this process (`governor`'s GCRA, which is a token bucket
//! without a timer per key). With several replicas behind a load balancer each
//! holds its own buckets, so the effective ceiling is the configured one times
//! the replicas; set the per-replica share accordingly.
//!
//! A refused delivery is answered 429 with `Retry-After` and records nothing, so
//! the provider's retry is processed normally.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::WebhookLimits;

/// Why a delivery was refused, and when to come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub what: String,
    pub retry_after: Duration,
}

pub struct Limits {
    config: WebhookLimits,
    /// Per plugin: a bucket per tenant. Plugins may have their own ceilings.
    endpoints: Mutex<HashMap<String, Arc<DefaultKeyedRateLimiter<String>>>>,
    /// Calendar events per (tenant, user).
    calendar: DefaultKeyedRateLimiter<(String, String)>,
    clock: DefaultClock,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    pub fn new(config: WebhookLimits) -> Self {
        let calendar = RateLimiter::keyed(
            Quota::per_hour(nonzero(config.calendar_events_per_user_per_hour))
                .allow_burst(nonzero(config.calendar_events_per_user_per_hour)),
        );
        Self {
            config,
            endpoints: Mutex::new(HashMap::new()),
            calendar,
            clock: DefaultClock::default(),
        }
    }

    fn endpoint(
        &self,
        plugin: &str,
        per_second: Option<u32>,
    ) -> Arc<DefaultKeyedRateLimiter<String>> {
        let mut endpoints = self.endpoints.lock().expect("rate limit lock");
        endpoints
            .entry(plugin.to_string())
            .or_insert_with(|| {
                let rate = per_second.unwrap_or(self.config.per_endpoint_per_second);
                Arc::new(RateLimiter::keyed(
                    Quota::per_second(nonzero(rate)).allow_burst(nonzero(rate.saturating_mul(2))),
                ))
            })
            .clone()
    }

    /// Takes one delivery from the endpoint's bucket.
    pub fn check_endpoint(
        &self,
        plugin: &str,
        tenant: &str,
        per_second: Option<u32>,
    ) -> Result<(), Limited> {
        self.endpoint(plugin, per_second)
            .check_key(&tenant.to_string())
            .map_err(|not_until| Limited {
                what: format!("webhook endpoint {plugin}/{tenant}"),
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }

    /// Takes `count` calendar events from `user`'s hourly bucket.
    pub fn check_calendar_events(
        &self,
        tenant: &str,
        user: &str,
        count: u32,
    ) -> Result<(), Limited> {
        let key = (tenant.to_string(), user.to_string());
        match self.calendar.check_key_n(&key, nonzero(count)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Limited {
                what: format!("calendar events of {user}"),
                retry_after: not_until.wait_time_from(self.clock.now()),
            }),
            // More events in one delivery than the hour allows at all.
            Err(_) => Err(Limited {
                what: format!(
                    "calendar events of {user}: {count} in one delivery exceed {} per hour",
                    self.config.calendar_events_per_user_per_hour
                ),
                retry_after: Duration::from_secs(3600),
            }),
        }
    }

    /// Forgets buckets that have refilled, so idle keys do not accumulate.
    pub fn shrink(&self) {
        self.calendar.retain_recent();
        for limiter in self.endpoints.lock().expect("rate limit lock").values() {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, per_hour: u32) -> Limits {
        Limits::new(WebhookLimits {
            per_endpoint_per_second: per_second,
            calendar_events_per_user_per_hour: per_hour,
            ..WebhookLimits::default()
        })
    }

    #[test]
    fn an_endpoint_allows_its_burst_then_says_when_to_come_back() {
        let l = limits(5, 100);
        for _ in 0..10 {
            l.check_endpoint("slack", "default", None).unwrap();
        }
        let refused = l.check_endpoint("slack", "default", None).unwrap_err();
        assert!(
            refused.retry_after > Duration::ZERO
                && refused.retry_after <= Duration::from_millis(200)
        );
        // Other tenants and plugins have their own buckets.
        l.check_endpoint("slack", "agency-b", None).unwrap();
        l.check_endpoint("zoom", "default", None).unwrap();
    }

    #[test]
    fn calendar_events_are_counted_per_person_per_hour() {
        let l = limits(1000, 100);
        l.check_calendar_events("t", "alice", 60).unwrap();
        l.check_calendar_events("t", "alice", 40).unwrap();
        let refused = l.check_calendar_events("t", "alice", 1).unwrap_err();
        assert!(
            refused.retry_after >= Duration::from_secs(30),
            "{refused:?}"
        );
        l.check_calendar_events("t", "bob", 100).unwrap();
        assert!(l.check_calendar_events("t", "carol", 101).is_err());
    }
}
