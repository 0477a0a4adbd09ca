//! # logbook-consensus
//!
//! Replication for Logbook, on [openraft](https://docs.rs/openraft) pinned
//! to one exact version and used only here: the rest of Logbook sees this
//! crate's types, so an upgrade of openraft touches one crate.
//!
//! The design (`../shared/research/replication.md`, option a′): one Raft
//! group; the Raft log is a file of its own ([`wal`]: ordered records,
//! group commit, torn tails cut and damage refused); the event log is the
//! state machine ([`sm`]): applying an entry runs the append with its
//! expected-version check and gives it its positions, so every replica
//! holds the same committed events at the same positions, and the event
//! log never holds anything uncommitted (it is never truncated).
//!
//! The modules: [`wal`] (the Raft log), [`sm`] (the state machine and its
//! record of what the event log holds durably), [`store_log`] (the engine
//! as the event log, applying with the leader's time), [`catchup`] (a
//! snapshot's events fetched from a member), [`tcp`] (Raft's messages
//! between nodes, and those fetches), [`node`] (what the daemon sees: start,
//! propose, status), [`local`] (an in-process network for tests) and
//! [`frame`] (the framing of files and messages).
//!
//! ## Where this stands
//! `logbookd --cluster` runs on it: appends and lifecycle changes
//! replicated, reads and subscriptions on every node, failover, adding and
//! removing nodes, snapshots that let the Raft log be purged (a node that
//! needs one fetches the events it lacks from a member: [`catchup`]). Not
//! yet here (issue 17): replicating the other writes (scavenge, erasure,
//! users, groups).

pub mod catchup;
pub mod frame;
pub mod local;
pub mod node;
pub mod sm;
pub mod store_log;
pub mod tcp;
pub mod wal;

/// A Raft node applying to event log `L`.
pub type Raft<L> = openraft::Raft<TypeConfig, sm::StateMachine<L>>;

/// Raft entries between two snapshots, by default. A snapshot is cheap
/// (the event log is its state: it records where the event log stands,
/// `sm.rs`), and the Raft log is purged up to [`KEEP_AFTER_SNAPSHOT`]
/// entries before it, so this bounds the Raft log's size.
pub const SNAPSHOT_EVERY: u64 = 10_000;

/// Entries a snapshot covers that the Raft log keeps: a follower that lags
/// by fewer gets entries, not the snapshot.
pub const KEEP_AFTER_SNAPSHOT: u64 = 1_000;

/// The Raft settings of a Logbook cluster, for a small, busy machine: an
/// election starts after 600-1200 ms without a heartbeat (every 150 ms),
/// far above an fsync (0.1-1 ms here) so that a slow disk does not look
/// like a dead leader (openraft's defaults, 150-300 ms, cause election
/// storms on 2 cores), yet a new leader follows a lost one in about 2 s
/// (measured: the followers also wait out the old leader's lease); pre-vote
/// keeps a node that was cut off from raising the term when it comes back.
/// A snapshot every [`SNAPSHOT_EVERY`] entries.
pub fn config() -> std::sync::Arc<openraft::Config> {
    config_snapshotting(SNAPSHOT_EVERY, KEEP_AFTER_SNAPSHOT)
}

/// [`config`] with a snapshot every `every` entries (`0`: never, and the
/// Raft log keeps every entry), keeping `keep` entries before each.
pub fn config_snapshotting(every: u64, keep: u64) -> std::sync::Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "logbook".into(),
        election_timeout_min: 600,
        election_timeout_max: 1200,
        heartbeat_interval: 150,
        enable_pre_vote: Some(true),
        snapshot_policy: match every {
            0 => openraft::SnapshotPolicy::Never,
            n => openraft::SnapshotPolicy::LogsSinceLast(n),
        },
        max_in_snapshot_log_to_keep: keep,
        ..Default::default()
    };
    // The values above always validate.
    std::sync::Arc::new(config.validate().expect("fixed settings validate"))
}

pub use logbook_protocol::ExpectedVersion;
use serde::{Deserialize, Serialize};

/// A change to the event log, as proposed through Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Appends `events` to `stream` if its version is as `expected`.
    Append {
        /// The stream.
        stream: String,
        /// The expected version.
        expected: ExpectedVersion,
        /// The events.
        events: Vec<EventData>,
        /// The leader's clock when it proposed the append, microseconds
        /// since the epoch. Every replica records it as the commit time,
        /// raised past the previous entry's (`Command::time`).
        timestamp_us: i64,
    },
    /// Changes `stream`'s lifecycle (metadata, truncation, deletion),
    /// written as the event `id` of its metadata stream if that stream is
    /// at `meta_expected`.
    Lifecycle {
        /// The stream.
        stream: String,
        /// The metadata stream's expected version (a metadata change's
        /// optimistic check; `Any` for the others).
        meta_expected: ExpectedVersion,
        /// The change.
        change: LifecycleChange,
        /// The id of the event that records it (chosen by the leader).
        id: [u8; 16],
        /// The leader's clock, as an append's.
        timestamp_us: i64,
    },
}

impl Command {
    /// The stream the command writes (a lifecycle change's target, not
    /// its metadata stream).
    pub fn stream(&self) -> &str {
        match self {
            Command::Append { stream, .. } | Command::Lifecycle { stream, .. } => stream,
        }
    }

    /// The leader's clock when it proposed the command (the state machine
    /// raises it past the previous entry's time: see
    /// [`sm::EventLog::submit`]).
    pub fn time(&self) -> i64 {
        match self {
            Command::Append { timestamp_us, .. } | Command::Lifecycle { timestamp_us, .. } => {
                *timestamp_us
            }
        }
    }
}

/// A change to a stream's lifecycle, as [`Command::Lifecycle`] carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LifecycleChange {
    /// Set the stream's metadata (its JSON, as the protocol writes it).
    SetMetadata {
        /// The metadata's JSON.
        metadata: String,
    },
    /// Remove the events below version `before` from every read.
    Truncate {
        /// The first version kept.
        before: u64,
    },
    /// Delete the stream if it is at `expected`.
    Delete {
        /// For ever (otherwise soft: a later append starts it again).
        hard: bool,
        /// The stream's expected version.
        expected: ExpectedVersion,
    },
    /// Erase the stream: delete it for ever, forget its metadata, and
    /// remove its events from every replica's files (each rewrites its own
    /// segments once it applied the tombstone).
    Erase,
}

/// One event of an [`Command::Append`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    /// Its id (a UUID's bytes).
    pub id: [u8; 16],
    /// Its type.
    pub event_type: String,
    /// Its metadata bytes.
    pub metadata: bytes::Bytes,
    /// Its payload bytes.
    pub data: bytes::Bytes,
}

/// One record of the event log as it was written (an appended batch),
/// as a replica that lacks it fetches it ([`catchup`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Its stream.
    pub stream: String,
    /// The position of its first event.
    pub first_position: u64,
    /// The version of its first event.
    pub first_version: u64,
    /// Its commit time.
    pub timestamp_us: i64,
    /// Its events.
    pub events: Vec<EventData>,
    /// Its events were removed on the replica it came from, which kept
    /// their ids only (see `logbook_storage::LogBatch::removed`).
    #[serde(default)]
    pub removed: bool,
}

impl From<logbook_protocol::NewEvent> for EventData {
    fn from(e: logbook_protocol::NewEvent) -> EventData {
        EventData {
            id: e.id.0,
            event_type: e.event_type.as_str().to_owned(),
            metadata: e.metadata,
            data: e.data,
        }
    }
}

impl From<EventData> for logbook_protocol::NewEvent {
    fn from(e: EventData) -> logbook_protocol::NewEvent {
        logbook_protocol::NewEvent {
            id: logbook_protocol::EventId(e.id),
            event_type: e.event_type.as_str().into(),
            metadata: e.metadata,
            data: e.data,
        }
    }
}

impl From<logbook_storage::LogBatch> for Batch {
    fn from(b: logbook_storage::LogBatch) -> Batch {
        Batch {
            stream: b.stream,
            first_position: b.first_position,
            first_version: b.first_version,
            timestamp_us: b.timestamp_us,
            events: b.events.into_iter().map(EventData::from).collect(),
            removed: b.removed,
        }
    }
}

impl From<Batch> for logbook_storage::LogBatch {
    fn from(b: Batch) -> logbook_storage::LogBatch {
        logbook_storage::LogBatch {
            stream: b.stream,
            first_position: b.first_position,
            first_version: b.first_version,
            timestamp_us: b.timestamp_us,
            events: b.events.into_iter().map(Into::into).collect(),
            removed: b.removed,
        }
    }
}

impl Batch {
    /// Where the next record starts.
    pub fn end_position(&self) -> u64 {
        self.first_position + self.events.len() as u64
    }
}

/// What applying a [`Command`] gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Nothing to report (a blank or membership entry).
    None,
    /// Appended: the first event's position and version, and the last's.
    Appended {
        /// The first event's log position.
        first_position: u64,
        /// The first event's stream version.
        first_version: u64,
        /// The last event's log position.
        last_position: u64,
        /// The last event's stream version.
        last_version: u64,
    },
    /// The stream was not at the expected version; nothing was written.
    WrongExpectedVersion {
        /// The stream's last version then (`None`: no events).
        actual: Option<u64>,
    },
    /// An event id of the append is stored already, by a batch the append
    /// does not repeat exactly; nothing was written.
    DuplicateEventId {
        /// The id.
        id: [u8; 16],
        /// The stream that holds it.
        stream: String,
        /// Its position (`None`: the id repeats within the append).
        position: Option<u64>,
    },
    /// The stream was hard-deleted; nothing was written.
    StreamDeleted,
    /// Refused for another reason (nothing was written).
    Refused(String),
}

/// A member of the cluster: where its peers reach it, and where its
/// clients do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its replication address (`host:port`).
    pub raft: String,
    /// Its client address (`host:port`), for redirects and for clients
    /// learning the members.
    pub client: String,
}

openraft::declare_raft_types!(
    /// Logbook's Raft types: node ids are numbers, nodes carry their
    /// replication and client addresses.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = Member,
);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Append { stream, events, .. } => {
                write!(f, "append {} events to {stream}", events.len())
            }
            Command::Lifecycle { stream, change, .. } => write!(f, "{change:?} of {stream}"),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::None => f.write_str("-"),
            Outcome::Appended {
                first_position,
                last_position,
                ..
            } => write!(f, "appended at {first_position}..={last_position}"),
            Outcome::WrongExpectedVersion { actual } => {
                write!(f, "wrong expected version (the stream is at {actual:?})")
            }
            Outcome::DuplicateEventId { stream, .. } => {
                write!(f, "an event id is stored already, in {stream}")
            }
            Outcome::StreamDeleted => f.write_str("the stream is deleted"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}
