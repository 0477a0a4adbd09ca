//! The `Stats` reply: one snapshot of the engine's and the server's
//! figures, with recent rates from a once-a-second sampler.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_protocol::{RecoveryStats, StatsOk};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::NetStats;
use logbook_storage::{Store, StoreStats};

/// Rates are measured over (at most) this much recent time.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Counters sampled at one instant.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    appends: u64,
    events: u64,
    fsyncs: u64,
}

impl Sample {
    fn of(s: &StoreStats, at: Instant) -> Sample {
        Sample {
            at,
            appends: s.appends,
            events: s.events_written,
            fsyncs: s.fsyncs,
        }
    }
}

/// Recent samples of the engine's counters, for rates.
#[derive(Debug)]
pub struct RateMeter {
    started: Instant,
    samples: Mutex<VecDeque<Sample>>,
}

impl RateMeter {
    /// A meter whose first sample is "nothing happened yet, now".
    pub fn new() -> RateMeter {
        let started = Instant::now();
        RateMeter {
            started,
            samples: Mutex::new(VecDeque::from([Sample {
                at: started,
                appends: 0,
                events: 0,
                fsyncs: 0,
            }])),
        }
    }

    /// When the server started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records the counters now, keeping a window's worth.
    pub fn sample(&self, s: &StoreStats) {
        let now = Instant::now();
        let mut q = self.samples.lock();
        q.push_back(Sample::of(s, now));
        // Keep the newest sample that is at least a window old, as the base.
        while q.len() > 2 && q.get(1).is_some_and(|b| now - b.at >= RATE_WINDOW) {
            q.pop_front();
        }
    }

    /// Appends, events and fsyncs per second between the oldest kept
    /// sample and `s` (now).
    fn rates(&self, s: &StoreStats) -> (f64, f64, f64) {
        let now = Sample::of(s, Instant::now());
        let base = self.samples.lock().front().copied().unwrap_or(now);
        let secs = (now.at - base.at).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0, 0.0);
        }
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
        (
            rate(now.appends, base.appends),
            rate(now.events, base.events),
            rate(now.fsyncs, base.fsyncs),
        )
    }

    /// Samples `store` once a second until `stop` turns true (or its
    /// sender is gone).
    pub async fn run(self: Arc<Self>, store: Store, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sample(&store.stats()),
                r = stop.changed() => if r.is_err() || *stop.borrow() {
                    return;
                },
            }
        }
    }
}

impl Default for RateMeter {
    fn default() -> Self {
        RateMeter::new()
    }
}

/// A cluster node's part of the `Stats` reply.
pub fn cluster(s: &logbook_consensus::node::Status) -> logbook_protocol::ClusterStats {
    use logbook_consensus::node::Role;
    let leader = s.role == Role::Leader;
    logbook_protocol::ClusterStats {
        node_id: s.id,
        role: s.role.as_str().to_owned(),
        term: s.term,
        leader: s.leader,
        last_index: s.last_index,
        committed_index: s.committed,
        applied_index: s.applied,
        snapshot_index: s.snapshot,
        purged_index: s.purged,
        members: s
            .members
            .iter()
            .map(|m| logbook_protocol::MemberStats {
                node_id: m.id,
                raft_addr: m.member.raft.clone(),
                client_addr: m.member.client.clone(),
                matched: m.matched,
                lag: leader.then(|| s.last_index.saturating_sub(m.matched.unwrap_or(0))),
                learner: !m.voter,
            })
            .collect(),
    }
}

/// The figures a `Stats` request returns.
pub fn snapshot(store: &Store, net: &NetStats, meter: &RateMeter) -> StatsOk {
    use std::sync::atomic::Ordering::Relaxed;
    let s = store.stats();
    let (appends_per_sec, events_per_sec, fsyncs_per_sec) = meter.rates(&s);
    let (lag_max, lag_total) = net.subscription_lag(s.head);
    let r = store.recovery_report();
    StatsOk {
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: meter.started().elapsed().as_millis() as u64,
        events: s.head,
        streams: s.streams,
        segments: s.segments,
        log_bytes: s.log_bytes,
        index_tables: s.index_tables,
        index_bytes: s.index_bytes,
        memtable_entries: s.memtable_entries,
        connections: net.connections.load(Relaxed),
        subscriptions: net.subscriptions.load(Relaxed),
        subscription_lag_max: lag_max,
        subscription_lag_total: lag_total,
        appends: s.appends,
        events_written: s.events_written,
        bytes_written: s.bytes_written,
        fsyncs: s.fsyncs,
        conflicts: s.conflicts,
        appends_per_sec,
        events_per_sec,
        fsyncs_per_sec,
        appends_per_fsync: if s.fsyncs == 0 {
            0.0
        } else {
            s.appends as f64 / s.fsyncs as f64
        },
        lifecycle_streams: s.lifecycle_streams,
        deleted_streams: s.deleted_streams,
        scavenges: s.scavenges,
        scavenge_segments: s.scavenge_segments,
        scavenge_bytes_reclaimed: s.scavenge_bytes_reclaimed,
        scavenge_todo: s.scavenge_todo,
        scavenge_done: s.scavenge_done,
        recovery: RecoveryStats {
            duration_ms: r.duration.as_secs_f64() * 1000.0,
            events: r.events,
            truncated_bytes: r.truncated.as_ref().map_or(0, |t| t.bytes),
            truncated_at: r
                .truncated
                .as_ref()
                .map(|t| format!("{}@{}: {}", t.file.display(), t.offset, t.reason)),
            sealed_segments: r.sealed.len() as u64,
            index_rebuilt: r.index_rebuilt.clone(),
            replayed_events: r.replayed_events,
            removed_files: r.removed_files.len() as u64,
        },
        cluster: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(appends: u64) -> StoreStats {
        StoreStats {
            appends,
            events_written: appends * 2,
            fsyncs: appends / 4,
            ..StoreStats::default()
        }
    }

    #[test]
    fn rates_come_from_the_oldest_kept_sample() {
        let m = RateMeter::new();
        {
            // Pretend the first sample was taken 4 s ago.
            let mut q = m.samples.lock();
            q.clear();
            q.push_back(Sample {
                at: Instant::now() - Duration::from_secs(4),
                appends: 0,
                events: 0,
                fsyncs: 0,
            });
        }
        let (a, e, f) = m.rates(&stats(400));
        assert!((95.0..=100.5).contains(&a), "{a}");
        assert!((190.0..=201.0).contains(&e), "{e}");
        assert!((23.0..=25.5).contains(&f), "{f}");
    }

    #[test]
    fn old_samples_are_dropped_but_a_base_is_kept() {
        let m = RateMeter::new();
        {
            let mut q = m.samples.lock();
            q.clear();
            let now = Instant::now();
            for age in [30u64, 20, 12, 5] {
                q.push_back(Sample {
                    at: now - Duration::from_secs(age),
                    appends: 0,
                    events: 0,
                    fsyncs: 0,
                });
            }
        }
        m.sample(&stats(10));
        let q = m.samples.lock();
        // The 12 s old sample stays as the base; 30 and 20 go.
        assert_eq!(q.len(), 3);
        assert!(
            q.front()
                .is_some_and(|s| s.at.elapsed() >= Duration::from_secs(12))
        );
    }
}
