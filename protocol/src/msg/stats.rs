//! `Stats` (opcode 9): the server's figures, for `logbook stats` and
//! monitoring scripts.
//!
//! ```text
//! Stats   {}
//! StatsOk { server_version: str, uptime_ms: uint, events: uint, streams: uint,
//!           segments: uint, log_bytes: uint, index_tables: uint,
//!           index_bytes: uint, memtable_entries: uint, connections: uint,
//!           subscriptions: uint, subscription_lag_max: uint,
//!           subscription_lag_total: uint, appends: uint, events_written: uint,
//!           bytes_written: uint, fsyncs: uint, conflicts: uint,
//!           appends_per_sec: float, events_per_sec: float, fsyncs_per_sec: float,
//!           appends_per_fsync: float, lifecycle_streams: uint,
//!           deleted_streams: uint,
//!           scavenges: uint, scavenge_segments: uint,
//!           scavenge_bytes_reclaimed: uint, scavenge_todo: uint,
//!           scavenge_done: uint, recovery: Recovery, cluster?: Cluster }
//! Recovery { duration_ms: float, events: uint, truncated_bytes: uint,
//!            truncated_at?: str, sealed_segments: uint, index_rebuilt?: str,
//!            replayed_events: uint, removed_files: uint }
//! Cluster { node_id: uint, role: str, term: uint, leader?: uint,
//!           last_index: uint, committed_index: uint, applied_index: uint,
//!           members: [Member] }
//! Member  { node_id: uint, raft_addr: str, client_addr: str, matched?: uint,
//!           lag?: uint }
//! ```
//!
//! Counters (`appends`, `fsyncs`, ...) count since the server started;
//! rates are over the last few seconds; `appends_per_fsync` is over the
//! server's lifetime. `scavenge_todo` and `scavenge_done` are the progress
//! of the running scavenge (or erase), else of the last one: segments it
//! has to rewrite, and has rewritten. Every field is optional on decode
//! (missing ones are zero), so servers may add fields and old clients
//! still read the reply.

use serde::{Deserialize, Serialize};

/// Asks for the server's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stats;

/// The server's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsOk {
    /// The server's build version.
    pub server_version: String,
    /// Milliseconds since the server started.
    pub uptime_ms: u64,
    /// Durable events in the store (the next position).
    pub events: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// Segment files in the log.
    pub segments: u64,
    /// Bytes of segment files on disk.
    pub log_bytes: u64,
    /// Stream index tables on disk.
    pub index_tables: u64,
    /// Bytes of stream index tables on disk.
    pub index_bytes: u64,
    /// Index entries held in memory, not yet in a table.
    pub memtable_entries: u64,
    /// Open client connections.
    pub connections: u64,
    /// Open subscriptions.
    pub subscriptions: u64,
    /// Events the furthest-behind subscription has still to receive.
    pub subscription_lag_max: u64,
    /// Events all subscriptions together have still to receive.
    pub subscription_lag_total: u64,
    /// Appends acknowledged since start.
    pub appends: u64,
    /// Events written since start.
    pub events_written: u64,
    /// Bytes of records written since start.
    pub bytes_written: u64,
    /// `fdatasync` calls on the log since start.
    pub fsyncs: u64,
    /// Appends refused for a wrong expected version since start.
    pub conflicts: u64,
    /// Appends acknowledged per second, recently.
    pub appends_per_sec: f64,
    /// Events written per second, recently.
    pub events_per_sec: f64,
    /// `fdatasync` calls per second, recently.
    pub fsyncs_per_sec: f64,
    /// Appends made durable per `fdatasync`, since start (group commit at
    /// work; 0 before the first).
    pub appends_per_fsync: f64,
    /// Streams with a lifecycle state (metadata, a truncation or a
    /// delete), which every read filters by.
    pub lifecycle_streams: u64,
    /// Streams deleted now (soft, with nothing appended since, or hard),
    /// which the catalog lists as such.
    pub deleted_streams: u64,
    /// Scavenges completed since start.
    pub scavenges: u64,
    /// Segments rewritten by scavenges and erases since start.
    pub scavenge_segments: u64,
    /// Bytes of disk those rewrites gave back since start.
    pub scavenge_bytes_reclaimed: u64,
    /// Segments the running scavenge or erase (else the last one) has to
    /// rewrite.
    pub scavenge_todo: u64,
    /// Of those, how many it has done.
    pub scavenge_done: u64,
    /// What the last start-up's recovery found and did.
    pub recovery: RecoveryStats,
    /// A cluster node: its role and its view of the members (absent on a
    /// single server).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStats>,
}

/// A cluster node's view of replication.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterStats {
    /// This node's id.
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The current Raft term.
    pub term: u64,
    /// The leader's id, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<u64>,
    /// The last index of this node's Raft log.
    pub last_index: u64,
    /// The last committed Raft index this node knows of.
    pub committed_index: u64,
    /// The last Raft index applied to this node's event log.
    pub applied_index: u64,
    /// The last Raft index this node's latest snapshot covers (0: none).
    pub snapshot_index: u64,
    /// The last Raft index purged from this node's Raft log (0: none): a
    /// follower further behind is sent the snapshot.
    pub purged_index: u64,
    /// The members.
    pub members: Vec<MemberStats>,
}

/// A member as a node sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberStats {
    /// Its id.
    pub node_id: u64,
    /// Its replication address.
    pub raft_addr: String,
    /// Its client address.
    pub client_addr: String,
    /// On the leader: the last Raft index it is known to hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
    /// On the leader: Raft entries it has yet to receive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// It does not vote yet: a node being added, catching up.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub learner: bool,
}

/// What recovery found and did when the server started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RecoveryStats {
    /// Wall time of opening the store, milliseconds.
    pub duration_ms: f64,
    /// Events in the store after recovery.
    pub events: u64,
    /// Bytes cut off the log's tail (a torn last write).
    pub truncated_bytes: u64,
    /// Where the cut was made (`file@offset: reason`), if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated_at: Option<String>,
    /// Segments found complete but unsealed and sealed by recovery.
    pub sealed_segments: u64,
    /// Why the stream index was rebuilt from the log, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_rebuilt: Option<String>,
    /// Events replayed from the log into the in-memory index.
    pub replayed_events: u64,
    /// Files removed because nothing referred to them.
    pub removed_files: u64,
}

/// Body of `Stats`: an empty map.
#[derive(Serialize, Deserialize)]
pub(crate) struct StatsWire {}
