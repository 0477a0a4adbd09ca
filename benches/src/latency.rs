//! Latency recording: an HDR histogram of nanoseconds (3 significant
//! digits, 1 ns to 10 min) and its summary.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Records latencies; cheap to record into, mergeable across tasks.
#[derive(Clone, Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder {
            hist: Histogram::new_with_bounds(1, 600_000_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }

    /// Records one latency (clamped to the histogram's range).
    pub fn record(&mut self, d: Duration) {
        self.hist.saturating_record(d.as_nanos() as u64);
    }

    /// Adds every latency of `other`.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds on both sides, so the addition cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Number of latencies recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Forgets everything recorded.
    pub fn clear(&mut self) {
        self.hist.reset();
    }

    /// Percentiles and mean of what was recorded.
    pub fn summary(&self) -> Summary {
        let at = |q| Duration::from_nanos(self.hist.value_at_quantile(q));
        Summary {
            count: self.hist.len(),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_nanos(self.hist.max()),
            mean: Duration::from_nanos(self.hist.mean() as u64),
        }
    }
}

/// Summary of recorded latencies.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Latencies recorded.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

impl Summary {
    /// Operations per second one at a time would reach at the median
    /// latency: `1 / p50` (0 when nothing was recorded).
    pub fn per_second_at_p50(&self) -> f64 {
        let s = self.p50.as_secs_f64();
        if s > 0.0 { 1.0 / s } else { 0.0 }
    }
}

/// Milliseconds with three decimals, as the benches print them.
pub fn ms(d: Duration) -> String {
    format!("{:.3}ms", d.as_secs_f64() * 1e3)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50={} p99={} max={} mean={} n={}",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            ms(self.mean),
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut a = Recorder::new();
        for us in 1..=100u64 {
            a.record(Duration::from_micros(us));
        }
        let mut b = Recorder::new();
        b.record(Duration::from_millis(50));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 101);
        // 3 significant digits: within 0.1%.
        assert!((s.p50.as_micros() as i64 - 51).abs() <= 1, "{s}");
        assert!(s.p99.as_micros() >= 99, "{s}");
        assert!(s.p999 >= s.p99, "{s}");
        assert!(s.max >= Duration::from_micros(49_950), "{s}");
        assert!((s.per_second_at_p50() - 1e6 / 51.0).abs() < 1e6 / 51.0 * 0.02);
        a.clear();
        assert_eq!(a.count(), 0);
        assert_eq!(a.summary().per_second_at_p50(), 0.0);
    }
}
