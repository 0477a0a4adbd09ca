//! Consumer groups at run time: the registry of groups, one task per group
//! feeding its state machine ([`crate::groups::state`]) from its source and
//! pushing deliveries to its consumers, and what is stored in the log.
//!
//! **Stored in the log, in system streams** (so a backup and every replica
//! carry them; the server refuses client writes there), written through
//! [`SystemLog`]: on a cluster, through the replicated log by the leader,
//! the only node that runs the groups ([`Groups::follow_leadership`]: it
//! starts them once its log holds every committed entry, and stops them,
//! ending their memberships with `NotLeader`, when it stops leading):
//! - `$groups`: one event per definition change (`$group-created`,
//!   `$group-updated`, `$group-deleted`, JSON), read whole at start.
//! - `$group:<name>:checkpoint`: the group's checkpoints (`$checkpoint`:
//!   floor, finished sequences above it as ranges, delivery counts, a
//!   replay in progress, the group's incarnation), with `max_count` 1 so
//!   that scavenges keep only the last. Written at most once a second
//!   while events are delivered or settled, and at shutdown; never above the
//!   floor (the state machine's rule), so a crash delivers again at most
//!   what was in flight or finished in the last second, never loses one.
//! - `$group:<name>:parked`: parked events (`$parked`: sequence, position,
//!   stream, version, reason, deliveries). An event parked is finished only
//!   once its record is durable.
//!
//! Deleting a group stops its task, then soft-deletes its two streams: a
//! group created again under the name starts afresh (its checkpoints carry
//! its incarnation, so one left by an interrupted deletion is ignored).
//!
//! **One task per group** reads its source (through the server's read
//! pool) while the state wants more, hands ready events to consumers with
//! room in their windows, in turn, writes parked records and checkpoints,
//! and sleeps until an ack or a join wakes it, the log grows, or a deadline
//! or retry falls due. Acks, nacks, extensions and departures are applied
//! by the connections directly (under the group's lock) and wake it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use logbook_protocol::lifecycle::StreamMetadata;
use logbook_protocol::msg::groups::{MAX_GROUP_WINDOW, validate_group_name};
use logbook_protocol::types::Text;
use logbook_protocol::{
    CreateGroup, Direction, ErrorCode, ErrorReply, EventId, ExpectedVersion, Filter, GroupInfo,
    GroupPush, GroupSettings, GroupSource, GroupStart, GroupStrategy, LogPosition, NackAction,
    NewEvent, RecordedEvent, StreamName, StreamVersion,
};
use logbook_storage::{ReadLimit, Store};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::outbox::Outbox;
use super::reads::ReadPool;
use super::subscription::CompiledFilter;
use super::writes::SystemLog;
use crate::groups::state::{
    Checkpoint, ConsumerId, Delivery, GroupState, Limits, Nack, REPLAY_BIT, Strategy,
};

/// The registry of group definitions.
pub(crate) const REGISTRY: &str = "$groups";
/// Streams of one group: `$group:<name>:checkpoint`, `$group:<name>:parked`.
pub(crate) const GROUP_STREAM_PREFIX: &str = "$group:";

/// Whether clients may not write `stream`: the server's group streams, and
/// the users and roles (`$auth`).
pub(crate) fn is_reserved(stream: &str) -> bool {
    stream == REGISTRY
        || stream.starts_with(GROUP_STREAM_PREFIX)
        || stream == crate::auth::AUTH_STREAM
}

fn checkpoint_stream(group: &str) -> String {
    format!("{GROUP_STREAM_PREFIX}{group}:checkpoint")
}

fn parked_stream(group: &str) -> String {
    format!("{GROUP_STREAM_PREFIX}{group}:parked")
}

/// How often a group writes a checkpoint while acks arrive.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Most events read from the source per step.
const READ_BATCH: usize = 1_000;
/// Most bytes read from the source per step.
const READ_BYTES: usize = 4 << 20;
/// Events a group reads ahead of its floor, per event it may have in
/// flight (and bytes, in all).
const AHEAD_PER_IN_FLIGHT: u32 = 4;
const MIN_AHEAD: u32 = 1_000;
const MAX_AHEAD_BYTES: usize = 8 << 20;

/// The state's limits for `s`, in a store whose events are at most
/// `max_event_bytes`: the read-ahead is also capped so that a checkpoint
/// (a range or a delivery count per event held, about 80 bytes of JSON at
/// worst) always fits in one event.
fn limits(s: &GroupSettings, max_event_bytes: u64) -> Limits {
    let fits = u32::try_from(max_event_bytes / 80)
        .unwrap_or(u32::MAX)
        .max(16);
    Limits {
        ack_wait_ms: s.ack_wait_ms,
        max_deliveries: s.max_deliveries,
        max_in_flight: s.max_in_flight,
        max_ahead: s
            .max_in_flight
            .saturating_mul(AHEAD_PER_IN_FLIGHT)
            .max(MIN_AHEAD)
            .min(fits),
        max_ahead_bytes: MAX_AHEAD_BYTES,
    }
}

/// Longest reason kept with a parked event, in bytes.
const MAX_REASON_BYTES: usize = 1024;

fn strategy(s: GroupStrategy) -> Strategy {
    match s {
        GroupStrategy::RoundRobin => Strategy::RoundRobin,
        GroupStrategy::PerStream => Strategy::PerStream,
    }
}

// ------------------------------------------------------------ stored forms

/// A filter as stored (the protocol's, in JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct FilterJson {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stream_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    type_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    type_regex: Option<String>,
}

impl From<&Filter> for FilterJson {
    fn from(f: &Filter) -> Self {
        FilterJson {
            stream_prefixes: f.stream_prefixes.clone(),
            type_prefixes: f.type_prefixes.clone(),
            stream_regex: f.stream_regex.clone(),
            type_regex: f.type_regex.clone(),
        }
    }
}

impl From<FilterJson> for Filter {
    fn from(f: FilterJson) -> Self {
        Filter {
            stream_prefixes: f.stream_prefixes,
            type_prefixes: f.type_prefixes,
            stream_regex: f.stream_regex,
            type_regex: f.type_regex,
            checkpoint_interval: 0,
        }
    }
}

/// A group's definition, as stored in `$groups`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Definition {
    group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter: Option<FilterJson>,
    /// `start`, `end` or `at`, as asked.
    start: String,
    /// The sequence it resolved to when the group was created.
    from: u64,
    /// Which creation of the name this is: its checkpoints carry it, so
    /// that a group created again under a name never takes up a checkpoint
    /// of the one before.
    #[serde(default)]
    incarnation: u64,
    ack_wait_ms: u64,
    max_deliveries: u32,
    max_in_flight: u32,
    strategy: String,
}

impl Definition {
    fn source(&self) -> GroupSource {
        match &self.stream {
            Some(stream) => GroupSource::Stream {
                stream: stream.clone(),
            },
            None => GroupSource::All {
                filter: self.filter.clone().map(Filter::from),
            },
        }
    }

    fn start(&self) -> GroupStart {
        match self.start.as_str() {
            "start" => GroupStart::Start,
            "end" => GroupStart::End,
            _ => GroupStart::At(self.from),
        }
    }

    fn settings(&self) -> GroupSettings {
        GroupSettings {
            ack_wait_ms: self.ack_wait_ms,
            max_deliveries: self.max_deliveries,
            max_in_flight: self.max_in_flight,
            strategy: GroupStrategy::parse(&self.strategy).unwrap_or_default(),
        }
    }

    fn set_settings(&mut self, s: &GroupSettings) {
        self.ack_wait_ms = s.ack_wait_ms;
        self.max_deliveries = s.max_deliveries;
        self.max_in_flight = s.max_in_flight;
        self.strategy = s.strategy.as_str().to_owned();
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointJson {
    floor: u64,
    /// Finished events above the floor, as `[first, end)` ranges (they
    /// are mostly consecutive).
    #[serde(default)]
    done: Vec<(u64, u64)>,
    #[serde(default)]
    deliveries: Vec<(u64, u32)>,
    /// A replay of parked events in progress: entries up to this version
    /// of the parked list are delivered again (those still listed; the
    /// list is truncated as they finish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replay_until: Option<u64>,
    /// The group's incarnation (see `Definition`).
    #[serde(default)]
    incarnation: u64,
}

#[derive(Serialize, Deserialize)]
struct ParkedJson {
    seq: u64,
    position: u64,
    stream: String,
    version: u64,
    reason: String,
    deliveries: u32,
}

// ------------------------------------------------------------------ groups

/// What a group reads.
enum Source {
    All(Option<CompiledFilter>),
    Stream(String),
}

impl Source {
    fn new(def: &Definition) -> Result<Source, String> {
        Ok(match def.source() {
            GroupSource::Stream { stream } => Source::Stream(stream),
            GroupSource::All { filter } => {
                Source::All(filter.map(CompiledFilter::new).transpose()?)
            }
        })
    }
}

/// A consumer joined to a group.
struct Consumer {
    out: Arc<Outbox>,
    corr_id: u32,
    window: u32,
}

struct Inner {
    state: GroupState<RecordedEvent>,
    consumers: BTreeMap<ConsumerId, Consumer>,
    /// Whose turn it is to get the next event.
    turn: usize,
    /// Something changed since the last checkpoint.
    dirty: bool,
    /// A replay of parked events: read from the parked list as the state
    /// has room.
    replay: Option<Replay>,
    /// The parked list's truncation point, as last written.
    truncated: u64,
    /// Entries of the parked list below this were read by replays.
    replayed_end: u64,
    /// Entries on the parked list now (kept here, not counted at each
    /// `info`).
    parked_now: u64,
    /// The last write of parked records failed: try again soon.
    parks_failed: bool,
}

/// A replay of parked events in progress.
#[derive(Clone, Copy, Debug)]
struct Replay {
    /// The next entry to read.
    next: u64,
    /// The last entry to replay.
    until: u64,
}

/// One group.
pub(crate) struct Group {
    name: String,
    def: Mutex<Definition>,
    source: Source,
    inner: Mutex<Inner>,
    wake: Notify,
    ended: AtomicBool,
    epoch: Instant,
    store: Store,
    max_frame: u32,
    /// Its task, awaited when the group is deleted.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Group {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Acknowledges events of `consumer`'s.
    pub(crate) fn ack(&self, ids: &[u64]) {
        let mut inner = self.inner.lock();
        for &id in ids {
            inner.dirty |= inner.state.ack(id);
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// Refuses events `consumer` holds.
    pub(crate) fn nack(&self, consumer: ConsumerId, ids: &[u64], action: &NackAction) {
        let now = self.now_ms();
        let mut inner = self.inner.lock();
        for &id in ids {
            let nack = match action {
                NackAction::Retry { delay_ms } => Nack::Retry {
                    delay_ms: *delay_ms,
                },
                NackAction::Park { reason } => Nack::Park {
                    reason: truncate_reason(reason),
                },
                NackAction::Skip => Nack::Skip,
            };
            inner.dirty |= inner.state.nack(id, consumer, nack, now);
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// Extends the ack wait of events `consumer` holds.
    pub(crate) fn extend(&self, consumer: ConsumerId, ids: &[u64]) {
        let now = self.now_ms();
        let mut inner = self.inner.lock();
        for &id in ids {
            inner.state.extend(id, consumer, now);
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// `consumer` left (unsubscribed, or its connection closed): what it
    /// held goes to the others.
    pub(crate) fn leave(&self, consumer: ConsumerId) {
        let now = self.now_ms();
        let mut inner = self.inner.lock();
        inner.consumers.remove(&consumer);
        inner.state.consumer_left(consumer, now);
        inner.dirty = true;
        drop(inner);
        self.wake.notify_one();
    }

    /// The group's definition and figures.
    pub(crate) fn info(&self) -> GroupInfo {
        let def = self.def.lock().clone();
        let head = match &self.source {
            Source::All(_) => self.store.head().0,
            Source::Stream(s) => self
                .store
                .stream_version(s)
                .ok()
                .flatten()
                .map_or(0, |v| v.0 + 1),
        };
        let now = self.now_ms();
        let inner = self.inner.lock();
        let s = &inner.state;
        let ack_wait = s.limits().ack_wait_ms;
        GroupInfo {
            group: self.name.clone(),
            source: def.source(),
            start: def.start(),
            settings: def.settings(),
            floor: s.floor(),
            cursor: s.cursor(),
            head,
            outstanding: s.outstanding() as u64,
            in_flight: s.in_flight() as u64,
            waiting: s.waiting() as u64,
            consumers: inner.consumers.len() as u32,
            oldest_in_flight_ms: s
                .oldest_in_flight_deadline()
                .map_or(0, |d| now.saturating_sub(d.saturating_sub(ack_wait))),
            parked: inner.parked_now,
            delivered: s.stats.delivered,
            acked: s.stats.acked,
            skipped: s.stats.skipped + s.stats.removed,
            failures: s.stats.failures,
            parked_total: s.stats.parked,
        }
    }

    /// Ends the group: its task stops, every consumer's pushes end with
    /// `code` and the consumers are dropped (a join from here on is
    /// refused: both under the group's lock).
    fn end(&self, code: ErrorCode, message: &str) {
        let mut inner = self.inner.lock();
        self.ended.store(true, Ordering::Release);
        let push = GroupPush::Ended {
            code,
            message: message.to_owned(),
        };
        for c in std::mem::take(&mut inner.consumers).into_values() {
            let _ = c.out.push(|b| push.encode(b, c.corr_id, self.max_frame));
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// Whether the group was deleted.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Hands ready events to consumers with room, one at a time in turn,
    /// and pushes each consumer's share as frames.
    /// True if events were left ready only because consumers' outboxes
    /// were full (nothing wakes the task when they drain: look again soon).
    fn dispatch(&self, now: u64) -> bool {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        inner.state.tick(now);
        if inner.consumers.is_empty() || !inner.state.has_ready() {
            return false;
        }
        let mut outbox_full = false;
        let ids: Vec<ConsumerId> = inner.consumers.keys().copied().collect();
        let mut batches: HashMap<ConsumerId, Vec<Delivery<RecordedEvent>>> = HashMap::new();
        let mut full = 0;
        while inner.state.has_ready() && full < ids.len() {
            let Some(&c) = ids.get(inner.turn % ids.len()) else {
                break;
            };
            inner.turn = inner.turn.wrapping_add(1);
            // A consumer whose connection holds unsent replies and pushes
            // past its high-water mark has no room either: its events
            // would wait in the server's memory with their ack wait
            // running.
            let window = inner
                .consumers
                .get(&c)
                .filter(|x| {
                    let full = x.out.is_full();
                    outbox_full |= full;
                    !full
                })
                .map_or(0, |x| x.window as usize);
            if inner.state.held_by(c) >= window {
                full += 1;
                continue;
            }
            full = 0;
            let store = &self.store;
            match inner.state.deliver_live(c, now, |e| store.is_live(e)) {
                Some(d) => batches.entry(c).or_default().push(d),
                None => break,
            }
        }
        // Delivery counts are part of the checkpoint.
        inner.dirty |= !batches.is_empty();
        for (c, batch) in batches {
            if let Some(consumer) = inner.consumers.get(&c) {
                push_deliveries(consumer, batch, self.max_frame);
            }
        }
        outbox_full && inner.state.has_ready()
    }
}

/// `reason`, cut to [`MAX_REASON_BYTES`] at a character boundary.
fn truncate_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}

/// Pushes `batch` to `consumer`, in frames that fit.
fn push_deliveries(consumer: &Consumer, batch: Vec<Delivery<RecordedEvent>>, max_frame: u32) {
    let budget = (max_frame as usize).saturating_sub(4096);
    let mut frame = (Vec::new(), Vec::new(), Vec::new());
    let mut used = 0;
    let flush = |frame: &mut (Vec<RecordedEvent>, Vec<u64>, Vec<u32>)| {
        if frame.0.is_empty() {
            return;
        }
        let push = GroupPush::Events {
            events: std::mem::take(&mut frame.0),
            ids: std::mem::take(&mut frame.1),
            deliveries: std::mem::take(&mut frame.2),
        };
        if let Err(e) = consumer
            .out
            .push(|b| push.encode(b, consumer.corr_id, max_frame))
        {
            // The event was read and stored within the frame limit, so
            // this is a bug; it is delivered again after the ack wait.
            tracing::warn!(error = %e, "could not encode a group push");
        }
    };
    for d in batch {
        let n = logbook_protocol::msg::recorded_event_wire_len(&d.item) + 16;
        if used + n > budget {
            flush(&mut frame);
            used = 0;
        }
        used += n;
        frame.0.push(d.item);
        frame.1.push(d.seq);
        frame.2.push(d.deliveries);
    }
    flush(&mut frame);
}

/// The registry of groups.
pub(crate) struct Groups {
    store: Store,
    /// Where the groups' definitions, checkpoints and parked events are
    /// written: the engine, or the cluster's log.
    log: SystemLog,
    /// Whether this node runs the groups: always on a single server; on
    /// a cluster node while it leads (from when its log holds every
    /// committed entry, so that each group starts from its last
    /// checkpoint).
    active: AtomicBool,
    reads: Arc<ReadPool>,
    max_frame: u32,
    max_groups: usize,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    next_consumer: AtomicU64,
    /// Definition changes one at a time.
    admin: tokio::sync::Mutex<()>,
    stop: watch::Receiver<bool>,
}

/// A refused group request: the error reply to send.
pub(crate) type Refusal = Box<ErrorReply>;

fn refusal(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Box::new(ErrorReply::new(code, message.into()))
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    refusal(ErrorCode::Internal, e.to_string())
}

fn name(s: &str) -> Result<StreamName, Refusal> {
    StreamName::new(s).map_err(|e| refusal(ErrorCode::BadRequest, e.to_string()))
}

fn not_found(group: &str) -> Refusal {
    refusal(
        ErrorCode::GroupNotFound,
        format!("no consumer group {group:?}"),
    )
}

impl Groups {
    /// Loads the groups stored in the log and starts their tasks; on a
    /// cluster node, only once it leads ([`Groups::follow_leadership`]).
    pub(crate) async fn load(
        log: SystemLog,
        reads: Arc<ReadPool>,
        max_frame: u32,
        max_groups: usize,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Groups>, String> {
        let single = log.cluster().is_none();
        let groups = Arc::new(Groups {
            store: log.store().clone(),
            log,
            active: AtomicBool::new(false),
            reads,
            max_frame,
            max_groups,
            groups: Mutex::new(HashMap::new()),
            next_consumer: AtomicU64::new(1),
            admin: tokio::sync::Mutex::new(()),
            stop,
        });
        if single {
            groups.start_all()?;
        }
        Ok(groups)
    }

    /// Starts every group the log defines, and serves the requests.
    fn start_all(self: &Arc<Self>) -> Result<(), String> {
        let store = &self.store;
        let mut defs: BTreeMap<String, Definition> = BTreeMap::new();
        let mut from = 0u64;
        loop {
            let slice = match store.read_stream(
                REGISTRY,
                Some(StreamVersion(from)),
                Direction::Forward,
                1_000,
            ) {
                Ok(s) => s,
                Err(e) => return Err(format!("reading {REGISTRY}: {e}")),
            };
            for e in &slice.events {
                match e.event_type.as_str() {
                    "$group-created" | "$group-updated" => {
                        match serde_json::from_slice::<Definition>(&e.data) {
                            Ok(def) => {
                                defs.insert(def.group.clone(), def);
                            }
                            Err(x) => tracing::error!(
                                version = e.version.0,
                                error = %x,
                                "unreadable consumer group definition in {REGISTRY} passed over"
                            ),
                        }
                    }
                    "$group-deleted" => {
                        if let Ok(d) = serde_json::from_slice::<serde_json::Value>(&e.data)
                            && let Some(g) = d.get("group").and_then(|g| g.as_str())
                        {
                            defs.remove(g);
                        }
                    }
                    _ => {}
                }
            }
            match slice.next {
                Some(n) => from = n.0,
                None => break,
            }
        }
        for def in defs.into_values() {
            // One group that cannot start (a filter this version refuses,
            // an unreadable checkpoint) must not keep the server down: it
            // is left out, and said so.
            let name = def.group.clone();
            let started = self
                .last_checkpoint(&def.group, &def)
                .and_then(|checkpoint| self.start(def, checkpoint));
            if let Err(e) = started {
                tracing::error!(group = %name, error = %e, "consumer group left out: it cannot start");
            }
        }
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    /// Stops every group (its consumers told `NotLeader`), and refuses
    /// the requests: this cluster node no longer leads. Its tasks are
    /// aborted: a write of theirs could not be committed any more.
    async fn stop_all(&self) {
        let _admin = self.admin.lock().await;
        self.active.store(false, Ordering::Release);
        let groups: Vec<Arc<Group>> = self.groups.lock().drain().map(|(_, g)| g).collect();
        for g in groups {
            g.end(
                ErrorCode::NotLeader,
                "this node no longer leads the cluster: join the group again (on the leader)",
            );
            let task = g.task.lock().take();
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Whether this node serves group requests: a cluster node that does
    /// not lead refuses them with `NotLeader` (and the leader's address
    /// when it knows it).
    pub(crate) fn serving(&self) -> Result<(), Refusal> {
        if self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let status = self.log.cluster().map(|node| node.status());
        if status
            .as_ref()
            .is_some_and(|s| s.role == logbook_consensus::node::Role::Leader)
        {
            return Err(refusal(
                ErrorCode::ServerBusy,
                "this node leads the cluster since a moment: its consumer groups are starting",
            ));
        }
        let mut reply = ErrorReply::new(
            ErrorCode::NotLeader,
            "consumer groups run on the cluster's leader",
        );
        if let Some(leader) = status.as_ref().and_then(|s| s.leader_member()) {
            reply = reply.with_leader(leader.client.clone());
        }
        Err(Box::new(reply))
    }

    /// On a cluster node: runs the groups while it leads, until `stop`.
    pub(crate) async fn follow_leadership(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        use logbook_consensus::node::Role;
        let Some(node) = self.log.cluster().cloned() else {
            return;
        };
        let mut changes = node.status_changes();
        loop {
            let leads = node.status().role == Role::Leader;
            let active = self.active.load(Ordering::Acquire);
            if leads && !active {
                // Every committed entry first: the groups' last
                // definitions and checkpoints (written by the last leader).
                match node.read_barrier().await {
                    Ok(()) => {
                        let _admin = self.admin.lock().await;
                        // It may have stepped down while it caught up.
                        if node.status().role != Role::Leader {
                            continue;
                        }
                        if let Err(e) = self.start_all() {
                            tracing::error!(error = %e, "the consumer groups could not start; trying again");
                            drop(_admin);
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                _ = stop.changed() => return,
                            }
                        } else {
                            tracing::info!("leading: the consumer groups run here");
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "not starting the consumer groups yet");
                        // Not leading after all, or no quorum: look again
                        // at the next change, or soon.
                        tokio::select! {
                            _ = changes.changed() => {}
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = stop.changed() => return,
                        }
                    }
                }
                continue;
            }
            if !leads && active {
                self.stop_all().await;
                tracing::info!("not leading: the consumer groups stopped here");
                continue;
            }
            tokio::select! {
                alive = changes.changed() => if !alive { return },
                _ = stop.changed() => return,
            }
        }
    }

    fn last_checkpoint(
        &self,
        group: &str,
        def: &Definition,
    ) -> Result<Option<(Checkpoint, Option<u64>)>, String> {
        let stream = checkpoint_stream(group);
        let slice = self
            .store
            .read_stream(&stream, None, Direction::Backward, 1)
            .map_err(|e| format!("reading {stream}: {e}"))?;
        let Some(e) = slice.events.first() else {
            return Ok(None);
        };
        let c: CheckpointJson = serde_json::from_slice(&e.data)
            .map_err(|x| format!("{stream} at {}: {x}", e.version.0))?;
        if c.incarnation != def.incarnation {
            // An earlier group of the name's (its deletion was cut short).
            return Ok(None);
        }
        let done = c
            .done
            .iter()
            .flat_map(|&(a, b)| a..b.min(a.saturating_add(1 << 24)))
            .collect();
        Ok(Some((
            Checkpoint {
                floor: c.floor,
                done,
                deliveries: c.deliveries,
            },
            c.replay_until,
        )))
    }

    /// Starts a group's task.
    fn start(
        self: &Arc<Self>,
        def: Definition,
        checkpoint: Option<(Checkpoint, Option<u64>)>,
    ) -> Result<Arc<Group>, String> {
        let settings = def.settings();
        let l = limits(&settings, self.store.config().max_event_bytes);
        let state = match &checkpoint {
            Some((c, _)) => GroupState::restore(l, strategy(settings.strategy), c),
            None => GroupState::new(l, strategy(settings.strategy), def.from),
        };
        // A replay goes on from the first entry still listed.
        let replay = checkpoint.and_then(|(_, until)| until).map(|until| Replay {
            next: self.first_parked(&def.group),
            until,
        });
        let parked_now = self.parked_count(&def.group);
        let first_parked = self.first_parked(&def.group);
        let group = Arc::new(Group {
            name: def.group.clone(),
            source: Source::new(&def)?,
            def: Mutex::new(def),
            inner: Mutex::new(Inner {
                state,
                consumers: BTreeMap::new(),
                turn: 0,
                dirty: false,
                replay,
                truncated: first_parked,
                replayed_end: first_parked,
                parked_now,
                parks_failed: false,
            }),
            wake: Notify::new(),
            ended: AtomicBool::new(false),
            epoch: Instant::now(),
            store: self.store.clone(),
            max_frame: self.max_frame,
            task: Mutex::new(None),
        });
        self.groups
            .lock()
            .insert(group.name.clone(), Arc::clone(&group));
        let task = tokio::spawn(run(Arc::clone(self), Arc::clone(&group)));
        *group.task.lock() = Some(task);
        Ok(group)
    }

    /// Creates a group.
    pub(crate) async fn create(self: &Arc<Self>, req: CreateGroup) -> Result<GroupInfo, Refusal> {
        let bad = |m: String| refusal(ErrorCode::BadRequest, m);
        validate_group_name(&req.group).map_err(bad)?;
        req.settings.validate().map_err(bad)?;
        let (stream, filter) = match &req.source {
            GroupSource::Stream { stream } => {
                name(stream)?;
                if stream.starts_with('$') {
                    return Err(bad(
                        "a group reads application streams, not system ones".into()
                    ));
                }
                (Some(stream.clone()), None)
            }
            GroupSource::All { filter } => {
                if let Some(f) = filter {
                    CompiledFilter::new(f.clone()).map_err(bad)?;
                }
                (None, filter.as_ref().map(FilterJson::from))
            }
        };
        let _admin = self.admin.lock().await;
        // The node may have stopped leading since the request was let in.
        self.serving()?;
        let count = self.groups.lock().len();
        if count >= self.max_groups {
            return Err(Box::new(
                ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!(
                        "the server keeps at most {} consumer groups (--max-groups)",
                        self.max_groups
                    ),
                )
                .with_limit(self.max_groups as u64),
            ));
        }
        if self.groups.lock().contains_key(&req.group) {
            return Err(refusal(
                ErrorCode::GroupExists,
                format!("consumer group {:?} exists", req.group),
            ));
        }
        let from = match req.start {
            GroupStart::Start => 0,
            GroupStart::At(at) => at,
            GroupStart::End => match &stream {
                Some(s) => self
                    .store
                    .stream_version(s)
                    .map_err(internal)?
                    .map_or(0, |v| v.0 + 1),
                None => self.store.head().0,
            },
        };
        let mut def = Definition {
            group: req.group.clone(),
            stream,
            filter,
            start: match req.start {
                GroupStart::Start => "start",
                GroupStart::End => "end",
                GroupStart::At(_) => "at",
            }
            .to_owned(),
            from,
            incarnation: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            ack_wait_ms: 0,
            max_deliveries: 0,
            max_in_flight: 0,
            strategy: String::new(),
        };
        def.set_settings(&req.settings);
        // The checkpoint stream keeps its last event only.
        self.log
            .set_metadata(
                &name(&checkpoint_stream(&req.group))?,
                ExpectedVersion::Any,
                StreamMetadata {
                    max_count: Some(1),
                    ..StreamMetadata::default()
                },
            )
            .await?;
        self.write_registry("$group-created", &def).await?;
        let group = self.start(def, None).map_err(bad)?;
        Ok(group.info())
    }

    /// Changes a group's settings.
    pub(crate) async fn update(
        &self,
        group: &str,
        settings: GroupSettings,
    ) -> Result<GroupInfo, Refusal> {
        settings
            .validate()
            .map_err(|m| refusal(ErrorCode::BadRequest, m))?;
        let _admin = self.admin.lock().await;
        self.serving()?;
        let g = self.get(group)?;
        let mut def = g.def.lock().clone();
        if def.settings().strategy != settings.strategy {
            // Switching would reorder what is in flight: a new group (from
            // this one's floor) is the way.
            return Err(refusal(
                ErrorCode::BadRequest,
                "a group's strategy is fixed at creation: create another group to change it",
            ));
        }
        def.set_settings(&settings);
        self.write_registry("$group-updated", &def).await?;
        {
            let mut inner = g.inner.lock();
            inner
                .state
                .set_limits(limits(&settings, self.store.config().max_event_bytes));
        }
        *g.def.lock() = def;
        g.wake.notify_one();
        Ok(g.info())
    }

    /// Deletes a group.
    pub(crate) async fn delete(&self, group: &str) -> Result<(), Refusal> {
        let _admin = self.admin.lock().await;
        self.serving()?;
        let g = self.get(group)?;
        self.write_registry("$group-deleted", &serde_json::json!({ "group": group }))
            .await?;
        self.groups.lock().remove(group);
        g.end(ErrorCode::GroupNotFound, "the group was deleted");
        // Its task may be writing a park or a checkpoint: wait for it to
        // stop, so that nothing of it lands after the streams are deleted.
        let task = g.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        for s in [checkpoint_stream(group), parked_stream(group)] {
            if let Err(e) = self.log.delete_softly(&name(&s)?).await {
                tracing::warn!(stream = %s, error = %e.message, "could not delete a deleted group's stream");
            }
        }
        Ok(())
    }

    /// Every group, by name.
    pub(crate) fn list(&self) -> Vec<GroupInfo> {
        let mut groups: Vec<Arc<Group>> = self.groups.lock().values().cloned().collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        groups.iter().map(|g| g.info()).collect()
    }

    /// The group named `group`.
    pub(crate) fn get(&self, group: &str) -> Result<Arc<Group>, Refusal> {
        self.groups
            .lock()
            .get(group)
            .cloned()
            .ok_or_else(|| self.missing(group))
    }

    /// The refusal for a group that is not (or no longer) here: not
    /// found, or, on a cluster node that stopped leading meanwhile, not
    /// here but on the leader.
    fn missing(&self, group: &str) -> Refusal {
        match self.serving() {
            Ok(()) => not_found(group),
            Err(refused) => refused,
        }
    }

    /// Joins `group` as a consumer pushing to `out` under `corr_id`.
    pub(crate) fn join(
        &self,
        group: &str,
        window: u32,
        out: Arc<Outbox>,
        corr_id: u32,
    ) -> Result<(Arc<Group>, ConsumerId), Refusal> {
        if window == 0 || window > MAX_GROUP_WINDOW {
            return Err(refusal(
                ErrorCode::BadRequest,
                format!("a consumer's window is 1 to {MAX_GROUP_WINDOW} events"),
            ));
        }
        let g = self.get(group)?;
        let id = self.next_consumer.fetch_add(1, Ordering::Relaxed);
        {
            let mut inner = g.inner.lock();
            // Deleted since it was looked up (or stopped: the node no
            // longer leads): `end` ran under this lock.
            if g.is_ended() {
                return Err(self.missing(group));
            }
            inner.consumers.insert(
                id,
                Consumer {
                    out,
                    corr_id,
                    window,
                },
            );
        }
        g.wake.notify_one();
        Ok((g, id))
    }

    /// Entries on `group`'s parked list (from the catalog).
    fn parked_count(&self, group: &str) -> u64 {
        let stream = parked_stream(group);
        self.store
            .list_streams(&stream, None, 1, 4096)
            .ok()
            .and_then(|p| p.streams.into_iter().next())
            .filter(|s| s.stream == stream)
            .map_or(0, |s| s.event_count)
    }

    /// The version of the first entry still on `group`'s parked list (its
    /// next version if none).
    fn first_parked(&self, group: &str) -> u64 {
        let stream = parked_stream(group);
        match self.store.read_stream(&stream, None, Direction::Forward, 1) {
            Ok(s) => match s.events.first() {
                Some(e) => e.version.0,
                None => s.last_version.map_or(0, |v| v.0 + 1),
            },
            Err(_) => 0,
        }
    }

    /// A page of `group`'s parked events.
    pub(crate) async fn list_parked(
        &self,
        group: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<logbook_protocol::ListParkedOk, Refusal> {
        self.get(group)?;
        let limit = limit.clamp(1, logbook_protocol::msg::groups::MAX_LIST_PARKED) as usize;
        let (store, stream) = (self.store.clone(), parked_stream(group));
        let from = after.map_or(0, |a| a.saturating_add(1));
        let slice = self
            .reads
            .run(move || {
                store.read_stream(
                    &stream,
                    Some(StreamVersion(from)),
                    Direction::Forward,
                    limit,
                )
            })
            .await
            .map_err(internal)?;
        let entries: Vec<logbook_protocol::ParkedEntry> = slice
            .events
            .iter()
            .filter_map(|e| {
                let p: ParkedJson = serde_json::from_slice(&e.data).ok()?;
                Some(logbook_protocol::ParkedEntry {
                    version: e.version.0,
                    seq: p.seq,
                    position: p.position,
                    stream: p.stream,
                    event_version: p.version,
                    reason: p.reason,
                    deliveries: p.deliveries,
                    parked_at_us: u64::try_from(e.timestamp_us).unwrap_or(0),
                })
            })
            .collect();
        let next = slice
            .next
            .and_then(|_| slice.events.last().map(|e| e.version.0));
        Ok(logbook_protocol::ListParkedOk { entries, next })
    }

    /// Starts delivering `group`'s parked events again (up to `max` of
    /// them): the group's task reads them from the list as it has room.
    pub(crate) fn replay_parked(
        &self,
        group: &str,
        max: Option<u64>,
    ) -> Result<logbook_protocol::ReplayParkedOk, Refusal> {
        let g = self.get(group)?;
        let first = self.first_parked(group);
        let last = self
            .store
            .stream_version(&parked_stream(group))
            .map_err(internal)?;
        let Some(last) = last.map(|v| v.0).filter(|&l| l >= first) else {
            return Ok(logbook_protocol::ReplayParkedOk {
                until: 0,
                entries: 0,
            });
        };
        let until = match max {
            Some(0) => {
                return Ok(logbook_protocol::ReplayParkedOk {
                    until: 0,
                    entries: 0,
                });
            }
            Some(m) => last.min(first.saturating_add(m - 1)),
            None => last,
        };
        let mut inner = g.inner.lock();
        inner.replay = Some(match inner.replay {
            // One running already: it goes on, further.
            Some(r) => Replay {
                next: r.next,
                until: r.until.max(until),
            },
            None => Replay { next: first, until },
        });
        inner.dirty = true;
        drop(inner);
        g.wake.notify_one();
        Ok(logbook_protocol::ReplayParkedOk {
            until,
            entries: until + 1 - first,
        })
    }

    /// Drops every entry of `group`'s parked list (a replay reading it
    /// stops; events already taken from it are delivered still).
    pub(crate) async fn delete_parked(
        &self,
        group: &str,
    ) -> Result<logbook_protocol::DeleteParkedOk, Refusal> {
        let g = self.get(group)?;
        let first = self.first_parked(group);
        let Some(last) = self
            .store
            .stream_version(&parked_stream(group))
            .map_err(internal)?
            .map(|v| v.0)
        else {
            return Ok(logbook_protocol::DeleteParkedOk { removed: 0 });
        };
        {
            let mut inner = g.inner.lock();
            inner.replay = None;
            inner.dirty = true;
        }
        self.log
            .truncate(&name(&parked_stream(group))?, StreamVersion(last + 1))
            .await?;
        {
            let mut inner = g.inner.lock();
            inner.truncated = last + 1;
            inner.replayed_end = inner.replayed_end.max(last + 1);
            inner.parked_now = 0;
        }
        Ok(logbook_protocol::DeleteParkedOk {
            removed: (last + 1).saturating_sub(first),
        })
    }

    async fn write_registry(&self, event_type: &str, data: &impl Serialize) -> Result<(), Refusal> {
        let json = serde_json::to_vec(data).map_err(internal)?;
        self.log
            .append(
                &name(REGISTRY)?,
                ExpectedVersion::Any,
                vec![NewEvent::new(EventId::new_v7(), event_type, json)],
            )
            .await?;
        Ok(())
    }

    /// Waits for every group's task to write its last checkpoint (after
    /// the stop signal).
    pub(crate) async fn stopped(&self) {
        let groups: Vec<Arc<Group>> = self.groups.lock().values().cloned().collect();
        for g in groups {
            let task = g.task.lock().take();
            if let Some(t) = task {
                let _ = t.await;
            }
        }
    }
}

/// A group's task (see the module's documentation).
async fn run(groups: Arc<Groups>, group: Arc<Group>) {
    let mut head = groups.store.watch_head();
    let mut stop = groups.stop.clone();
    // The log head at the last read of a stream source (None: read now).
    let mut seen: Option<u64> = None;
    let mut last_checkpoint = Instant::now();
    loop {
        if group.ended.load(Ordering::Acquire) {
            return;
        }
        let stopping = *stop.borrow();
        // Read the source while the state wants more.
        let read = if stopping {
            false
        } else {
            let read = match read_source(&groups, &group, &mut seen).await {
                Ok(a) => read_replay(&groups, &group).await.map(|b| a || b),
                Err(e) => Err(e),
            };
            match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(group = %group.name, error = %e, "reading the group's source or parked list failed; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    false
                }
            }
        };
        let now = group.now_ms();
        let look_again = !stopping && group.dispatch(now);
        write_parks(&groups, &group).await;
        let dirty = group.inner.lock().dirty;
        if dirty && (stopping || last_checkpoint.elapsed() >= CHECKPOINT_EVERY) {
            match write_checkpoint(&groups, &group).await {
                Ok(()) => last_checkpoint = Instant::now(),
                Err(e) => {
                    tracing::warn!(group = %group.name, error = %e, "could not write the group's checkpoint");
                }
            }
        }
        if stopping {
            return;
        }
        if read {
            continue;
        }
        // Sleep until something happens.
        // The log's growth matters only to a group that would read it: one
        // with consumers and room (a group without either is woken by a
        // join or a settle), so idle groups cost nothing per commit.
        let (timer, parks_failed, follow_head) = {
            let mut inner = group.inner.lock();
            let follow = !inner.consumers.is_empty() && inner.state.wants_more();
            (
                inner.state.next_timer(),
                std::mem::take(&mut inner.parks_failed),
                follow,
            )
        };
        let checkpoint_due = dirty.then(|| last_checkpoint + CHECKPOINT_EVERY);
        let soon = (look_again || parks_failed).then(|| {
            Instant::now()
                + if parks_failed {
                    Duration::from_millis(200)
                } else {
                    Duration::from_millis(20)
                }
        });
        let deadline = [
            timer.map(|t| {
                let now = group.now_ms();
                Instant::now() + Duration::from_millis(t.saturating_sub(now))
            }),
            checkpoint_due,
            soon,
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            () = group.wake.notified() => {}
            r = head.changed(), if follow_head => if r.is_err() { return },
            _ = stop.changed() => {}
            () = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// Reads a batch of the group's source into its state, if it wants more
/// and there may be more. True if it read something.
async fn read_source(
    groups: &Arc<Groups>,
    group: &Arc<Group>,
    seen: &mut Option<u64>,
) -> Result<bool, String> {
    let (cursor, room) = {
        let inner = group.inner.lock();
        // No consumer: no read-ahead held for nobody.
        if inner.consumers.is_empty() || !inner.state.wants_more() {
            return Ok(false);
        }
        (inner.state.cursor(), inner.state.room())
    };
    let head = groups.store.head().0;
    let want = room.clamp(1, READ_BATCH);
    let store = groups.store.clone();
    match &group.source {
        Source::All(filter) => {
            if cursor >= head {
                return Ok(false);
            }
            let slice = groups
                .reads
                .run(move || {
                    store.read_all(
                        Some(LogPosition(cursor)),
                        Direction::Forward,
                        ReadLimit {
                            events: want,
                            bytes: READ_BYTES,
                        },
                    )
                })
                .await
                .map_err(|e| e.to_string())?;
            let mut inner = group.inner.lock();
            let mut stopped = false;
            for e in slice.events {
                if !inner.state.wants_more() {
                    stopped = true;
                    break;
                }
                let wanted =
                    !e.stream.starts_with('$') && filter.as_ref().is_none_or(|f| f.matches(&e));
                if wanted {
                    let (seq, bytes) = (e.position.0, e.data.len() + e.metadata.len() + 64);
                    let stream = e.stream.clone();
                    inner.state.offer(seq, stream, e, bytes);
                } else {
                    inner.state.advance_to(e.position.0 + 1);
                }
            }
            if !stopped {
                inner.state.advance_to(slice.through.0);
            }
            Ok(true)
        }
        Source::Stream(stream) => {
            if *seen == Some(head) {
                return Ok(false);
            }
            let name = stream.clone();
            let slice = groups
                .reads
                .run(move || {
                    store.read_stream(
                        &name,
                        Some(StreamVersion(cursor)),
                        Direction::Forward,
                        ReadLimit {
                            events: want,
                            bytes: READ_BYTES,
                        },
                    )
                })
                .await;
            let slice = match slice {
                Ok(s) => s,
                // Not created yet, or deleted: nothing to read now.
                Err(_) => {
                    *seen = Some(head);
                    return Ok(false);
                }
            };
            let more = slice.next.is_some();
            if !more {
                *seen = Some(head);
            }
            if slice.events.is_empty() {
                return Ok(false);
            }
            let mut inner = group.inner.lock();
            for e in slice.events {
                if !inner.state.wants_more() {
                    *seen = None;
                    break;
                }
                let (seq, bytes) = (e.version.0, e.data.len() + e.metadata.len() + 64);
                let stream = Text::from(e.stream.as_str());
                inner.state.offer(seq, stream, e, bytes);
            }
            Ok(true)
        }
    }
}

/// Takes a page of the parked list into the state, if a replay runs and
/// the state has room: each entry's event is read again by its position
/// (an entry whose event is gone, deleted or erased since, is passed
/// over). True if it took something.
async fn read_replay(groups: &Arc<Groups>, group: &Arc<Group>) -> Result<bool, String> {
    let (replay, room) = {
        let inner = group.inner.lock();
        match inner.replay {
            Some(r) if inner.state.wants_more() && !inner.consumers.is_empty() => {
                (r, inner.state.room())
            }
            _ => return Ok(false),
        }
    };
    let want = room
        .clamp(1, 500)
        .min((replay.until + 1 - replay.next) as usize);
    let (store, stream) = (groups.store.clone(), parked_stream(&group.name));
    let next = replay.next;
    let taken = groups
        .reads
        .run(
            move || -> Result<(Vec<(u64, RecordedEvent)>, u64), String> {
                let slice = store
                    .read_stream(&stream, Some(StreamVersion(next)), Direction::Forward, want)
                    .map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                // The first entry not read: after the last one read, or past
                // the list's end (truncated entries are skipped by the read).
                let mut end = slice.last_version.map_or(next, |v| v.0 + 1).max(next);
                if let Some(last) = slice.events.last()
                    && slice.next.is_some()
                {
                    end = last.version.0 + 1;
                }
                for entry in &slice.events {
                    let Ok(p) = serde_json::from_slice::<ParkedJson>(&entry.data) else {
                        continue;
                    };
                    let event = store
                        .read_all(Some(LogPosition(p.position)), Direction::Forward, 1)
                        .map_err(|e| e.to_string())?
                        .events
                        .into_iter()
                        .next()
                        .filter(|e| e.position.0 == p.position);
                    if let Some(event) = event {
                        out.push((entry.version.0, event));
                    }
                }
                Ok((out, end))
            },
        )
        .await?;
    let (events, end) = taken;
    let mut inner = group.inner.lock();
    // The replay was dropped meanwhile (the list deleted): take nothing.
    let Some(r) = inner.replay.filter(|r| r.next == next) else {
        return Ok(false);
    };
    let mut took = false;
    for (version, event) in events {
        if version > r.until {
            break;
        }
        let bytes = event.data.len() + event.metadata.len() + 64;
        let stream = event.stream.clone();
        inner
            .state
            .offer_replay(REPLAY_BIT | version, stream, event, bytes);
        took = true;
    }
    let next = end.min(r.until + 1);
    inner.replayed_end = inner.replayed_end.max(next);
    inner.replay = (next <= r.until).then_some(Replay {
        next,
        until: r.until,
    });
    // Read past the end of the list: nothing more to replay.
    if next == r.next && !took {
        inner.replay = None;
        inner.replayed_end = inner.replayed_end.max(r.until + 1);
    }
    inner.dirty = true;
    Ok(took || next > r.next)
}

/// Writes the records of events the state decided to park; each is
/// finished once its record is durable. A failure leaves them holding the
/// floor, and they are written at the next turn.
async fn write_parks(groups: &Arc<Groups>, group: &Arc<Group>) {
    if group.is_ended() {
        return;
    }
    let parks = group.inner.lock().state.take_parks();
    if parks.is_empty() {
        return;
    }
    let Ok(stream) = StreamName::new(parked_stream(&group.name)) else {
        return;
    };
    let events: Vec<NewEvent> = parks
        .iter()
        .map(|p| {
            // A replayed event keeps its source sequence.
            let seq = if p.seq >= REPLAY_BIT {
                match group.source {
                    Source::Stream(_) => p.item.version.0,
                    Source::All(_) => p.item.position.0,
                }
            } else {
                p.seq
            };
            let json = serde_json::to_vec(&ParkedJson {
                seq,
                position: p.item.position.0,
                stream: p.item.stream.to_string(),
                version: p.item.version.0,
                reason: p.reason.clone(),
                deliveries: p.deliveries,
            })
            .unwrap_or_default();
            NewEvent::new(EventId::new_v7(), "$parked", json)
        })
        .collect();
    // In batches the store takes (events and bytes per append); each
    // batch's events are finished once it is durable. A failed batch and
    // those after it are tried again at the next turn (`parks_failed`
    // brings one within 200 ms).
    let config = groups.store.config();
    let max_events = (config.max_batch_events as usize).max(1);
    let max_bytes = (config.max_batch_bytes / 2).max(1) as usize;
    let mut parks = parks.into_iter().zip(events).peekable();
    while parks.peek().is_some() {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some((_, e)) = parks.peek() {
            let n = e.data.len() + 128;
            if !batch.is_empty() && (batch.len() >= max_events || bytes + n > max_bytes) {
                break;
            }
            bytes += n;
            batch.extend(parks.next());
        }
        let (these, events): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match groups
            .log
            .append(&stream, ExpectedVersion::Any, events)
            .await
        {
            Ok(_) => {
                let mut inner = group.inner.lock();
                for p in &these {
                    inner.state.parked(p.seq);
                }
                inner.parked_now += these.len() as u64;
                inner.dirty = true;
            }
            Err(e) => {
                tracing::warn!(group = %group.name, error = %e.message, "could not write parked events; trying again");
                let mut inner = group.inner.lock();
                inner.state.unpark_pending(these);
                inner.state.unpark_pending(parks.map(|(p, _)| p).collect());
                inner.parks_failed = true;
                return;
            }
        }
    }
}

async fn write_checkpoint(groups: &Arc<Groups>, group: &Arc<Group>) -> Result<(), String> {
    if group.is_ended() {
        return Ok(());
    }
    let (checkpoint, replay_until, before, truncated) = {
        let mut inner = group.inner.lock();
        inner.dirty = false;
        // Parked entries read by replays and not outstanding any more are
        // finished: the list drops them (below the lowest outstanding one).
        let outstanding = inner.state.replay_floor();
        let before = outstanding.map_or(inner.replayed_end, |f| f.min(inner.replayed_end));
        // A replay to go on with after a restart: the one reading, or the
        // entries taken and not finished.
        let until = inner
            .replay
            .map(|r| r.until)
            .or_else(|| outstanding.map(|_| inner.replayed_end.saturating_sub(1)));
        (inner.state.checkpoint(), until, before, inner.truncated)
    };
    if before > truncated {
        let stream = StreamName::new(parked_stream(&group.name)).map_err(|e| e.to_string())?;
        groups
            .log
            .truncate(&stream, StreamVersion(before))
            .await
            .map_err(|e| e.message)?;
        let mut inner = group.inner.lock();
        let removed = before.saturating_sub(inner.truncated);
        inner.parked_now = inner.parked_now.saturating_sub(removed);
        inner.truncated = inner.truncated.max(before);
    }
    let incarnation = group.def.lock().incarnation;
    let mut done: Vec<(u64, u64)> = Vec::new();
    for q in checkpoint.done {
        match done.last_mut() {
            Some((_, end)) if *end == q => *end = q + 1,
            _ => done.push((q, q + 1)),
        }
    }
    let json = serde_json::to_vec(&CheckpointJson {
        floor: checkpoint.floor,
        done,
        deliveries: checkpoint.deliveries,
        replay_until,
        incarnation,
    })
    .map_err(|e| e.to_string())?;
    let stream = StreamName::new(checkpoint_stream(&group.name)).map_err(|e| e.to_string())?;
    let r = groups
        .log
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new_v7(), "$checkpoint", json)],
        )
        .await;
    if let Err(e) = r {
        group.inner.lock().dirty = true;
        return Err(e.message);
    }
    Ok(())
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Groups")
            .field("groups", &self.groups.lock().len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
