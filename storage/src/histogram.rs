//! A histogram with fixed buckets, recorded with atomics only.
//!
//! `prometheus-client`'s own `Histogram` keeps its buckets behind a mutex:
//! the writer thread and the sync lanes would then contend on every append
//! and every fsync. This one is a row of `AtomicU64`s: `observe` is a
//! binary search over a `'static` bound table and two relaxed
//! `fetch_add`s, with no lock and no allocation. The exporter reads it at
//! scrape time ([`Histogram::snapshot`]) and hands the numbers to
//! `prometheus-client`'s encoder.
//!
//! Values are recorded as integers in a base unit (nanoseconds, appends) and
//! divided into the exported unit (seconds) only at scrape time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in nanoseconds: 10 µs to 10 s.
pub const LATENCY_BOUNDS_NS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the group-size buckets (appends per group commit).
pub const GROUP_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// A fixed-bucket histogram of `u64` observations.
#[derive(Debug)]
pub struct Histogram {
    /// Inclusive upper bounds, ascending, in the recorded unit.
    bounds: &'static [u64],
    /// `counts[i]`: observations in `(bounds[i-1], bounds[i]]`; the extra
    /// last one counts those above every bound (`+Inf`).
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in the recorded unit.
    sum: AtomicU64,
    /// Divides recorded values into the exported unit (1e9: ns to s).
    divisor: f64,
}

/// A histogram's figures at one moment, in the exported unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations (the sum of every bucket).
    pub count: u64,
    /// `(upper bound, observations in this bucket only)`, not cumulative;
    /// the last bound is `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// A histogram over `bounds` (ascending), exported divided by `divisor`.
    pub fn new(bounds: &'static [u64], divisor: f64) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            divisor,
        }
    }

    /// Latency buckets from 10 µs to 10 s, recorded in nanoseconds and
    /// exported in seconds.
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS_NS, 1e9)
    }

    /// Counts one observation. Lock-free and allocation-free.
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Counts one duration, in nanoseconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The figures now. Buckets are read one by one while others may be
    /// recording, so the count is derived from the buckets (a scrape then
    /// always has `count` equal to the `+Inf` bucket); the sum may be a few
    /// observations ahead or behind.
    pub fn snapshot(&self) -> Snapshot {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut count = 0u64;
        let bounds = self
            .bounds
            .iter()
            .map(|&b| b as f64 / self.divisor)
            .chain(std::iter::once(f64::INFINITY));
        for (bound, c) in bounds.zip(self.counts.iter()) {
            let n = c.load(Ordering::Relaxed);
            count += n;
            buckets.push((bound, n));
        }
        Snapshot {
            sum: self.sum.load(Ordering::Relaxed) as f64 / self.divisor,
            count,
            buckets,
        }
    }
}

/// The engine's histograms: what `Store::stats` counts, spread over time.
#[derive(Debug)]
pub struct EngineHistograms {
    /// From `Store::submit` (or `append`) to the reply: queueing, group
    /// commit, fdatasync and publication. Every reply the commit pipeline
    /// sends counts, refusals included (they wait for the group's fsync too).
    pub append_latency: Histogram,
    /// Each `fdatasync` of segment data: one per group commit, plus one per
    /// segment seal.
    pub fsync_latency: Histogram,
    /// Appends answered by each group commit that wrote something: one
    /// `write` and, with fsync durability, one `fdatasync` (appends per
    /// fsync).
    pub group_appends: Histogram,
}

impl Default for EngineHistograms {
    fn default() -> Self {
        EngineHistograms {
            append_latency: Histogram::latency(),
            fsync_latency: Histogram::latency(),
            group_appends: Histogram::new(GROUP_BOUNDS, 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let h = Histogram::new(&[1, 2, 4], 1.0);
        for v in [0, 1, 2, 3, 4, 5, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            vec![(1.0, 2), (2.0, 1), (4.0, 2), (f64::INFINITY, 2)]
        );
        assert_eq!(s.count, 7);
        assert_eq!(s.sum, 1015.0);
    }

    #[test]
    fn latency_bounds_export_in_seconds() {
        let h = Histogram::latency();
        h.observe_duration(Duration::from_micros(30));
        h.observe_duration(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.buckets.first(), Some(&(1e-5, 0)));
        assert_eq!(s.buckets.get(2), Some(&(5e-5, 1)));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(s.count, 2);
        assert!((s.sum - 60.00003).abs() < 1e-9);
        assert!(LATENCY_BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        assert!(GROUP_BOUNDS.windows(2).all(|w| w[0] < w[1]));
    }
}
