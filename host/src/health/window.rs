//! Sliding windows of call outcomes and a latency histogram, both fixed-size.
//!
//! A [`Window`] keeps one-minute buckets for the last hour and one-hour
//! buckets for the last day: 84 small buckets per subject, whatever the
//! traffic. Each bucket knows which minute (or hour) it holds, so a bucket
//! from an earlier lap of the ring is recognised as stale and ignored.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    /// The minute (or hour) since the epoch this bucket counts.
    slot: i64,
    ok: u32,
    failed: u32,
    refused: u32,
}

impl Bucket {
    fn at(&mut self, slot: i64) -> &mut Self {
        if self.slot != slot {
            *self = Bucket {
                slot,
                ..Default::default()
            };
        }
        self
    }
}

#[derive(Debug, Clone)]
pub struct Window {
    minutes: [Bucket; 60],
    hours: [Bucket; 24],
}

impl Default for Window {
    fn default() -> Self {
        Self {
            minutes: [Bucket::default(); 60],
            hours: [Bucket::default(); 24],
        }
    }
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;

impl Window {
    fn buckets(&mut self, now: i64) -> (&mut Bucket, &mut Bucket) {
        let (m, h) = (now.div_euclid(MINUTE), now.div_euclid(HOUR));
        let minute = self.minutes[m.rem_euclid(60) as usize].at(m);
        let hour = self.hours[h.rem_euclid(24) as usize].at(h);
        (minute, hour)
    }

    pub fn record(&mut self, now: i64, ok: bool) {
        let (m, h) = self.buckets(now);
        for b in [m, h] {
            if ok {
                b.ok += 1;
            } else {
                b.failed += 1;
            }
        }
    }

    pub fn record_refusal(&mut self, now: i64) {
        let (m, h) = self.buckets(now);
        m.refused += 1;
        h.refused += 1;
    }

    /// (ok, failed, refused) over the last `minutes` (up to 60 from minute
    /// buckets, beyond that from hour buckets, up to a day).
    fn sums(&self, now: i64, minutes: i64) -> (u64, u64, u64) {
        let (buckets, span, width): (&[Bucket], i64, i64) = if minutes <= 60 {
            (&self.minutes, minutes, MINUTE)
        } else {
            (&self.hours, ((minutes + 59) / 60).min(24), HOUR)
        };
        let current = now.div_euclid(width);
        buckets
            .iter()
            .filter(|b| b.slot > current - span && b.slot <= current)
            .fold((0, 0, 0), |(o, f, r), b| {
                (o + b.ok as u64, f + b.failed as u64, r + b.refused as u64)
            })
    }

    /// Successes over successes and failures; None without either.
    pub fn success_ratio(&self, now: i64, minutes: i64) -> Option<f64> {
        let (ok, failed, _) = self.sums(now, minutes);
        (ok + failed > 0).then(|| ok as f64 / (ok + failed) as f64)
    }

    /// Calls (refusals included) over the last `minutes`.
    pub fn calls(&self, now: i64, minutes: i64) -> u64 {
        let (ok, failed, refused) = self.sums(now, minutes);
        ok + failed + refused
    }

    pub fn failures(&self, now: i64, minutes: i64) -> u64 {
        self.sums(now, minutes).1
    }
}

/// Upper bounds of the latency buckets, in milliseconds (the last is +∞).
const BOUNDS_MS: [f64; 14] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
];

#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    counts: [u64; BOUNDS_MS.len() + 1],
    total: u64,
    sum_ms: f64,
}

/// Quantiles estimated as the upper bound of the bucket they fall in.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct LatencySummary {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
}

impl LatencyHistogram {
    pub fn observe(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        self.counts[i] += 1;
        self.total += 1;
        self.sum_ms += ms;
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = (q * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(BOUNDS_MS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        None
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            p50: self.quantile(0.5),
            p95: self.quantile(0.95),
            p99: self.quantile(0.99),
            mean: (self.total > 0).then(|| self.sum_ms / self.total as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_their_buckets() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.summary().p50, None);
        for ms in [1, 2, 2, 3, 4, 8, 9, 20, 40, 900] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.summary();
        assert_eq!(s.p50, Some(5.0));
        assert_eq!(s.p99, Some(1_000.0));
        assert!((s.mean.unwrap() - 98.9).abs() < 0.01);
    }

    #[test]
    fn stale_buckets_of_an_earlier_lap_are_ignored() {
        let mut w = Window::default();
        w.record(0, false);
        // Exactly one hour later the same minute bucket is reused.
        w.record(HOUR, true);
        assert_eq!(w.success_ratio(HOUR, 5), Some(1.0));
        assert_eq!(w.success_ratio(HOUR, 120), Some(0.5));
        w.record_refusal(HOUR);
        assert_eq!(w.calls(HOUR, 5), 2);
        assert_eq!(w.failures(HOUR, 5), 0);
    }
}
