//! Operator metrics: Prometheus exposition, liveness and readiness.
//!
//! - this file: [`Metrics`], the daemon's health state (starting,
//!   serving, stopping) and the collector that turns the live figures into
//!   OpenMetrics text with `prometheus-client`.
//! - [`http`]: the tiny HTTP/1.1 listener serving `/metrics`, `/health`
//!   and `/ready`.
//!
//! One source of truth: the engine's counters ([`StoreStats`]), the network
//! server's ([`NetStats`]) and the histograms are the atomics the hot paths
//! already update. Nothing is counted twice; the collector reads them when
//! Prometheus scrapes, so recording costs nothing beyond those atomics.
//!
//! [`StoreStats`]: logbook_storage::StoreStats

pub mod http;

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::net::NetStats;
use logbook_storage::Store;

use logbook_storage::histogram::Histogram;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where the daemon is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Recovering: the store is not open yet.
    Starting = 0,
    /// The store is open and clients are served.
    Serving = 1,
    /// Shutting down: no new clients; the store is being closed.
    Stopping = 2,
}

#[derive(Debug)]
struct State {
    started: Instant,
    phase: AtomicU8,
    /// Set once recovery finished.
    store: OnceLock<Store>,
    net: Arc<NetStats>,
    /// This daemon's cluster node, if it is one.
    cluster: OnceLock<Arc<logbook_consensus::node::Node>>,
}

impl State {
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Serving,
            _ => Phase::Stopping,
        }
    }

    fn ready(&self) -> bool {
        self.phase() == Phase::Serving
            && self
                .store
                .get()
                .is_some_and(|s| s.writer_failure().is_none())
    }
}

/// The daemon's metrics and health. Created before the store is opened, so
/// that `/health` and `/ready` answer during recovery.
#[derive(Debug)]
pub struct Metrics {
    state: Arc<State>,
    registry: Registry,
}

impl Metrics {
    /// Metrics over the network server's `net` figures; the engine's join
    /// once [`Metrics::store_opened`] is called.
    pub fn new(net: Arc<NetStats>) -> Metrics {
        let state = Arc::new(State {
            started: Instant::now(),
            phase: AtomicU8::new(Phase::Starting as u8),
            store: OnceLock::new(),
            net,
            cluster: OnceLock::new(),
        });
        let mut registry = Registry::with_prefix("logbook");
        registry.register_collector(Box::new(LogbookCollector(Arc::clone(&state))));
        Metrics { state, registry }
    }

    /// Recovery finished: export the engine's figures too.
    pub fn store_opened(&self, store: Store) {
        let _ = self.state.store.set(store);
    }

    /// The daemon is a node of a cluster: export its role, term, indexes
    /// and followers' lag too.
    pub fn cluster_started(&self, node: Option<Arc<logbook_consensus::node::Node>>) {
        if let Some(node) = node {
            let _ = self.state.cluster.set(node);
        }
    }

    /// Moves to `phase` (never back to `Starting`).
    pub fn set_phase(&self, phase: Phase) {
        self.state.phase.store(phase as u8, Ordering::Release);
    }

    /// Where the daemon is.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }

    /// Whether the daemon accepts writes: recovery finished, it is serving
    /// and not shutting down, and no write has failed (after a failed write
    /// the store refuses writes until restarted).
    pub fn is_ready(&self) -> bool {
        self.state.ready()
    }

    /// The OpenMetrics text exposition of every figure, `# EOF` included.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the live figures at scrape time.
#[derive(Debug)]
struct LogbookCollector(Arc<State>);

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> fmt::Result {
    e.encode_descriptor(name, help, unit, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> fmt::Result {
    e.encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&v)
}

fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    h: &Histogram,
) -> fmt::Result {
    let s = h.snapshot();
    e.encode_descriptor(name, help, unit, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)
}

/// One figure of every consumer group, labelled `group`.
fn per_group(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    groups: &[logbook_protocol::GroupInfo],
    value: impl Fn(&logbook_protocol::GroupInfo) -> u64,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, unit, kind)?;
    for g in groups {
        let labels = [("group", g.group.as_str())];
        let mut f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => f.encode_counter::<NoLabelSet, _, u64>(&value(g), None)?,
            _ => f.encode_gauge(&(value(g) as i64))?,
        }
    }
    Ok(())
}

/// A cluster node's figures.
fn cluster(e: &mut DescriptorEncoder, s: &logbook_consensus::node::Status) -> fmt::Result {
    use logbook_consensus::node::Role;
    let mut m = e.encode_descriptor(
        "cluster_role",
        "1 for this node's role in the cluster (label role), 0 for the others.",
        None,
        MetricType::Gauge,
    )?;
    for role in [
        Role::Leader,
        Role::Follower,
        Role::Candidate,
        Role::Learner,
        Role::Shutdown,
    ] {
        m.encode_family(&[("role", role.as_str())])?
            .encode_gauge(&i64::from(s.role == role))?;
    }
    gauge(e, "cluster_term", "The current Raft term.", None, s.term)?;
    gauge(
        e,
        "cluster_leader",
        "The leader's node id (0: none known).",
        None,
        s.leader.unwrap_or(0),
    )?;
    gauge(
        e,
        "cluster_last_index",
        "The last index of this node's Raft log.",
        None,
        s.last_index,
    )?;
    gauge(
        e,
        "cluster_committed_index",
        "The last committed Raft index this node knows of.",
        None,
        s.committed,
    )?;
    gauge(
        e,
        "cluster_applied_index",
        "The last Raft index applied to this node's event log.",
        None,
        s.applied,
    )?;
    gauge(
        e,
        "cluster_snapshot_index",
        "The last Raft index this node's latest snapshot covers.",
        None,
        s.snapshot,
    )?;
    gauge(
        e,
        "cluster_purged_index",
        "The last Raft index purged from this node's Raft log.",
        None,
        s.purged,
    )?;
    let mut m = e.encode_descriptor(
        "cluster_follower_lag",
        "On the leader: Raft entries each member has yet to receive (label node).",
        None,
        MetricType::Gauge,
    )?;
    if s.role == Role::Leader {
        for member in &s.members {
            let id = member.id.to_string();
            let lag = s.last_index.saturating_sub(member.matched.unwrap_or(0));
            m.encode_family(&[("node", id.as_str())])?
                .encode_gauge(&(lag as i64))?;
        }
    }
    Ok(())
}

impl Collector for LogbookCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let st = &self.0;
        let secs = Some(&Unit::Seconds);
        let bytes = Some(&Unit::Bytes);
        gauge(
            &mut e,
            "uptime",
            "Time since the daemon started.",
            secs,
            st.started.elapsed().as_secs_f64(),
        )?;
        gauge(
            &mut e,
            "ready",
            "1 when the store is open and accepts writes (what /ready answers).",
            None,
            i64::from(st.ready()),
        )?;

        if let Some(node) = st.cluster.get() {
            cluster(&mut e, &node.status())?;
        }

        let net = &st.net;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut e,
            "connections",
            "Open client connections.",
            None,
            load(&net.connections),
        )?;
        counter(
            &mut e,
            "connections_refused",
            "Connections refused at the connection limit.",
            None,
            load(&net.refused),
        )?;
        gauge(
            &mut e,
            "subscriptions",
            "Open subscriptions.",
            None,
            load(&net.subscriptions),
        )?;
        counter(
            &mut e,
            "events_read",
            "Events returned by ReadStream and ReadAll replies.",
            None,
            load(&net.events_read),
        )?;
        counter(
            &mut e,
            "events_pushed",
            "Events pushed to subscribers.",
            None,
            load(&net.events_pushed),
        )?;
        gauge(
            &mut e,
            "outbox",
            "Replies and pushes waiting in connection outboxes, all connections together.",
            bytes,
            load(&net.outbox_bytes),
        )?;
        gauge(
            &mut e,
            "outbox_peak",
            "The most bytes any one connection's outbox has held.",
            bytes,
            load(&net.outbox_peak),
        )?;

        let Some(store) = st.store.get() else {
            // Recovering: the engine's figures do not exist yet.
            return Ok(());
        };
        let s = store.stats();
        let groups = net.group_figures();
        if !groups.is_empty() {
            use MetricType::{Counter, Gauge};
            let g = &groups;
            per_group(
                &mut e,
                "group_floor",
                "Every event of the group's source below it is settled (a log position, or a version for a stream source).",
                None,
                Gauge,
                g,
                |g| g.floor,
            )?;
            per_group(
                &mut e,
                "group_lag_events",
                "The group's source head minus its floor: log positions (stream versions for a stream source) not yet settled, system events included.",
                None,
                Gauge,
                g,
                |g| g.head.saturating_sub(g.floor),
            )?;
            per_group(
                &mut e,
                "group_in_flight",
                "Events delivered to the group's consumers and not yet settled.",
                None,
                Gauge,
                g,
                |g| g.in_flight,
            )?;
            per_group(
                &mut e,
                "group_waiting",
                "Events waiting for a retry.",
                None,
                Gauge,
                g,
                |g| g.waiting,
            )?;
            per_group(
                &mut e,
                "group_oldest_in_flight_milliseconds",
                "Age of the group's oldest event in flight (0: none).",
                None,
                Gauge,
                g,
                |g| g.oldest_in_flight_ms,
            )?;
            per_group(
                &mut e,
                "group_consumers",
                "Consumers joined to the group.",
                None,
                Gauge,
                g,
                |g| u64::from(g.consumers),
            )?;
            per_group(
                &mut e,
                "group_parked",
                "Events on the group's parked list.",
                None,
                Gauge,
                g,
                |g| g.parked,
            )?;
            per_group(
                &mut e,
                "group_delivered",
                "Deliveries since start (redeliveries included).",
                None,
                Counter,
                g,
                |g| g.delivered,
            )?;
            per_group(
                &mut e,
                "group_acked",
                "Events acknowledged since start.",
                None,
                Counter,
                g,
                |g| g.acked,
            )?;
            per_group(
                &mut e,
                "group_failures",
                "Failed deliveries since start (nack retry, ack wait passed, consumer gone): their rate is the retries per second.",
                None,
                Counter,
                g,
                |g| g.failures,
            )?;
            per_group(
                &mut e,
                "group_parked_events",
                "Events parked since start.",
                None,
                Counter,
                g,
                |g| g.parked_total,
            )?;
        }
        let (max_lag, sum_lag) = net.subscription_lag(s.head);
        gauge(
            &mut e,
            "subscription_max_lag_events",
            "Events the furthest-behind open subscription has yet to be sent up to the durable head.",
            None,
            max_lag,
        )?;
        gauge(
            &mut e,
            "subscription_total_lag_events",
            "Events all open subscriptions together have yet to be sent up to the durable head.",
            None,
            sum_lag,
        )?;
        gauge(
            &mut e,
            "head_position",
            "Durable events: the position the next event gets.",
            None,
            s.head,
        )?;
        counter(
            &mut e,
            "appends",
            "Appends acknowledged since start (idempotent repeats included).",
            None,
            s.appends,
        )?;
        counter(
            &mut e,
            "events_written",
            "Events written since start.",
            None,
            s.events_written,
        )?;
        counter(
            &mut e,
            "group_commits",
            "Group commits (one write each) since start.",
            None,
            s.groups,
        )?;
        counter(
            &mut e,
            "fsyncs",
            "fdatasync calls on segment data since start.",
            None,
            s.fsyncs,
        )?;
        counter(
            &mut e,
            "written",
            "Bytes of log records written since start.",
            bytes,
            s.bytes_written,
        )?;
        counter(
            &mut e,
            "conflicts",
            "Appends refused for a wrong expected version since start.",
            None,
            s.conflicts,
        )?;
        gauge(
            &mut e,
            "streams",
            "Streams with at least one event.",
            None,
            s.streams,
        )?;
        gauge(&mut e, "segments", "Segments in the log.", None, s.segments)?;
        gauge(
            &mut e,
            "log",
            "Size of the log's segment files.",
            bytes,
            s.log_bytes,
        )?;
        gauge(
            &mut e,
            "index_tables",
            "Stream-index tables on disk.",
            None,
            s.index_tables,
        )?;
        gauge(
            &mut e,
            "index",
            "Size of the stream-index tables.",
            bytes,
            s.index_bytes,
        )?;
        gauge(
            &mut e,
            "memtable_entries",
            "Stream-index entries in memory, not yet in a table.",
            None,
            s.memtable_entries,
        )?;
        counter(
            &mut e,
            "index_flushes",
            "Index tables written by flushes since start.",
            None,
            s.index_flushes,
        )?;
        counter(
            &mut e,
            "index_merges",
            "Index tables written by merges since start.",
            None,
            s.index_merges,
        )?;
        counter(
            &mut e,
            "index_slowdowns",
            "Group commits the writer delayed because index flushes or merges fell behind.",
            None,
            s.index_slowdowns,
        )?;
        counter(
            &mut e,
            "index_stalls",
            "Times the writer stopped until index flushes or merges caught up.",
            None,
            s.index_stalls,
        )?;
        gauge(
            &mut e,
            "position_index_entries",
            "Sparse position index entries of sealed segments in memory (16 bytes each, at most 4M).",
            None,
            s.position_index_entries,
        )?;
        gauge(
            &mut e,
            "open_files",
            "Segment and index files open for reading (at most --max-open-files; the active segment not counted).",
            None,
            s.open_files,
        )?;
        gauge(
            &mut e,
            "lifecycle_streams",
            "Streams with a lifecycle state (metadata, a truncation or a delete), which every read filters by.",
            None,
            s.lifecycle_streams,
        )?;
        gauge(
            &mut e,
            "deleted_streams",
            "Streams deleted now: soft (nothing appended since) or hard.",
            None,
            s.deleted_streams,
        )?;
        gauge(
            &mut e,
            "erasures_owed",
            "Erased streams whose events this cluster node has yet to remove from its segment files (it does so once it applied the erase, also after a restart).",
            None,
            s.erasures_owed,
        )?;
        counter(
            &mut e,
            "scavenges",
            "Scavenges completed since start.",
            None,
            s.scavenges,
        )?;
        counter(
            &mut e,
            "scavenge_segments",
            "Segments rewritten without their removed events by scavenges and erases since start.",
            None,
            s.scavenge_segments,
        )?;
        counter(
            &mut e,
            "scavenge_bytes_reclaimed",
            "Bytes of disk given back by scavenges and erases since start.",
            None,
            s.scavenge_bytes_reclaimed,
        )?;
        gauge(
            &mut e,
            "scavenge_segments_todo",
            "Segments the running scavenge or erase (else the last one) has to rewrite.",
            None,
            s.scavenge_todo,
        )?;
        gauge(
            &mut e,
            "scavenge_segments_done",
            "Segments the running scavenge or erase (else the last one) has rewritten.",
            None,
            s.scavenge_done,
        )?;
        counter(
            &mut e,
            "file_reopens",
            "Files reopened after being closed to stay within --max-open-files.",
            None,
            s.file_reopens,
        )?;
        gauge(
            &mut e,
            "writer_failed",
            "1 once a write or fdatasync failed: writes are refused until restart.",
            None,
            i64::from(store.writer_failure().is_some()),
        )?;

        let h = store.histograms();
        histogram(
            &mut e,
            "append_latency",
            "From an append's submission to its reply (queue, group commit, fdatasync, publication).",
            secs,
            &h.append_latency,
        )?;
        histogram(
            &mut e,
            "fsync_latency",
            "Each fdatasync of segment data (group commits and segment seals).",
            secs,
            &h.fsync_latency,
        )?;
        histogram(
            &mut e,
            "group_commit_appends",
            "Appends answered by each group commit: one write and, with fsync durability, one fdatasync (appends per fsync).",
            None,
            &h.group_appends,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_before_the_store_opens() {
        let m = Metrics::new(Arc::default());
        assert!(!m.is_ready());
        let text = m.render().unwrap();
        assert!(
            text.contains("# TYPE logbook_uptime_seconds gauge"),
            "{text}"
        );
        assert!(text.contains("logbook_ready 0\n"), "{text}");
        assert!(text.contains("logbook_connections 0\n"), "{text}");
        assert!(!text.contains("logbook_appends_total"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn ready_only_while_serving_an_open_store() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(Arc::default());
        m.set_phase(Phase::Serving);
        assert!(!m.is_ready(), "no store yet");
        let store = Store::open(logbook_storage::StoreConfig::new(dir.path())).unwrap();
        m.store_opened(store.clone());
        assert!(m.is_ready());
        let text = m.render().unwrap();
        assert!(text.contains("logbook_appends_total 0\n"), "{text}");
        assert!(
            text.contains("logbook_append_latency_seconds_bucket{le=\"+Inf\"} 0\n"),
            "{text}"
        );
        m.set_phase(Phase::Stopping);
        assert!(!m.is_ready());
        store.close().unwrap();
    }

    #[test]
    fn a_failed_fsync_makes_the_daemon_unready() {
        use logbook_protocol::{EventId, ExpectedVersion, NewEvent, StreamName};
        use logbook_storage::fs::{Fault, MemFs};

        let fs = MemFs::new();
        let config = logbook_storage::StoreConfig {
            vfs: Arc::new(fs.clone()),
            ..logbook_storage::StoreConfig::new("/data")
        };
        let store = Store::open(config).unwrap();
        let m = Metrics::new(Arc::default());
        m.store_opened(store.clone());
        m.set_phase(Phase::Serving);
        assert!(m.is_ready());
        fs.fail_syncs_after(0, Fault::Eio);
        let stream = StreamName::new("s").unwrap();
        let e = NewEvent::new(EventId::from_u128(1), "E", "x");
        assert!(
            store
                .append_blocking(&stream, ExpectedVersion::Any, vec![e])
                .is_err()
        );
        assert!(!m.is_ready());
        let text = m.render().unwrap();
        assert!(text.contains("logbook_writer_failed 1\n"), "{text}");
        assert!(text.contains("logbook_ready 0\n"), "{text}");
    }
}
