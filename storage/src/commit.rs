//! The commit pipeline: groups the writer has written go through
//! `fdatasync` on one of a few sync lanes, and are then published and
//! answered strictly in order.
//!
//! ```text
//! writer thread:  gather -> check -> encode -> write ─┐  (next group...)
//!                                                     v
//! sync lanes:               fdatasync (up to `sync_lanes` groups at once)
//!                                                     v
//! in order:       publish (segment end, index, head) -> reply
//! ```
//!
//! Why lanes: with one fsync at a time, closed-loop clients split into two
//! alternating halves (one half waits in the running fsync while the other
//! queues), so each fsync carries only half of them. This disk completes
//! overlapping fdatasyncs nearly as fast as single ones, so letting the next
//! group start its fsync at once roughly doubles what each fsync carries per
//! unit of time, and lowers latency too. Publication stays in group order, so
//! readers still never see position n+1 before n, nor anything not durable.
//!
//! A group written while others are in flight is at most `sync_lanes`
//! groups past the oldest unacknowledged one: recovery relies on that bound
//! ([`MAX_SYNC_LANES`]) to tell a torn tail from damage to acknowledged data.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use logbook_protocol::AppendResult;
use parking_lot::{Condvar, Mutex};

use crate::config::Durability;
use crate::error::{AppendError, StorageError};
use crate::segment::{PidxEntry, Segment};
use crate::shared::Shared;
use crate::writer::AppendRequest;

/// Why writing failed, shared by every request of the groups it fails.
pub(crate) type Failure = Arc<StorageError>;

/// The most sync lanes a store may use. Recovery assumes this bound: a crash
/// can leave at most `MAX_SYNC_LANES + 1` group writes unacknowledged.
pub const MAX_SYNC_LANES: usize = 4;

/// What happened to one request of a group.
#[derive(Debug)]
pub(crate) enum Outcome {
    Written(AppendResult),
    /// A retry of a batch already written; `durable` if the original was
    /// durable when the retry was recognised (else it shares its fate).
    Duplicate {
        result: AppendResult,
        durable: bool,
    },
    Refused(AppendError),
}

/// Index entries to publish for one record.
#[derive(Debug)]
pub(crate) struct IndexAdd {
    pub req: usize,
    pub hash: u64,
    pub first_version: u64,
    pub first_position: u64,
    pub count: u64,
    pub offset: u64,
}

/// A lifecycle state a group wrote, to publish with it.
#[derive(Debug)]
pub(crate) struct Published {
    /// The hash of the stream it is the state of.
    pub hash: u64,
    pub state: logbook_protocol::lifecycle::StreamLifecycle,
    /// Where its `$$` event is, and its version there.
    pub position: u64,
    pub version: u64,
}

/// A segment a group wrote to, with what to publish for it.
#[derive(Debug)]
pub(crate) struct SegmentUpdate {
    pub segment: Arc<Segment>,
    pub data_end: u64,
    pub end_position: u64,
    pub new_pidx: Vec<PidxEntry>,
    /// Set when the group sealed the segment: its pidx as the seal wrote
    /// it (entries, crc32c).
    pub sealed: Option<(u32, u32)>,
}

/// A written group on its way to being durable and answered.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub seq: u64,
    pub group: Vec<AppendRequest>,
    pub outcomes: Vec<Outcome>,
    pub adds: Vec<IndexAdd>,
    pub updates: Vec<SegmentUpdate>,
    /// The segment to fdatasync; `None` when the group wrote nothing.
    pub sync: Option<Arc<Segment>>,
    /// Position after the group's last event.
    pub end_position: u64,
    /// Set when writing the group failed.
    pub failure: Option<Failure>,
    /// Freeze the active memtable once this group is published, with these
    /// event ids (the writer's generation for its range): the writer
    /// decided the memtable is full or a segment was sealed.
    pub freeze: Option<Arc<crate::index::ids::IdMap>>,
    /// Lifecycle states the group wrote, in order.
    pub lifecycle: Vec<Published>,
}

#[derive(Debug, Default)]
struct State {
    /// Tickets waiting for a lane.
    queue: VecDeque<Ticket>,
    /// Tickets submitted and not yet completed.
    in_flight: usize,
    /// Synced tickets waiting for their predecessors.
    done: BTreeMap<u64, (Ticket, Result<(), Failure>)>,
    /// Sequence number of the next ticket to complete.
    next: u64,
    /// Set by the first failure; every later ticket fails too.
    poisoned: Option<Failure>,
    stop: bool,
}

/// The sync lanes and the in-order completion.
#[derive(Debug)]
pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    flush_tx: Mutex<std::sync::mpsc::Sender<()>>,
    lanes: usize,
    state: Mutex<State>,
    /// Lanes wait here for tickets.
    work: Condvar,
    /// The writer waits here for room; `drain` waits for completion.
    room: Condvar,
}

impl Pipeline {
    pub(crate) fn new(shared: Arc<Shared>, flush_tx: std::sync::mpsc::Sender<()>) -> Arc<Pipeline> {
        let lanes = shared.lanes();
        Arc::new(Pipeline {
            shared,
            flush_tx: Mutex::new(flush_tx),
            lanes,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            room: Condvar::new(),
        })
    }

    /// Number of lane threads to run.
    pub(crate) fn lanes(&self) -> usize {
        self.lanes
    }

    /// Why writes fail, once something failed.
    pub(crate) fn poisoned(&self) -> Option<Failure> {
        self.state.lock().poisoned.clone()
    }

    /// Hands a written group to the lanes; waits while `lanes` groups are
    /// already in flight (so at most that many fsyncs overlap, and memory
    /// stays bounded).
    ///
    /// A lone ticket (`alone`: the writer has nothing else queued) arriving
    /// while nothing is in flight is synced and completed on the calling
    /// thread: a single client then pays no hand-off to a lane (a thread
    /// wake-up, tens of microseconds on a small VM) on top of its fsync.
    /// Under load tickets are never alone, so the lanes keep overlapping.
    pub(crate) fn submit(&self, ticket: Ticket, alone: bool) {
        let mut st = self.state.lock();
        if alone && st.in_flight == 0 {
            st.in_flight += 1;
            drop(st);
            self.sync_and_complete(ticket, None);
            return;
        }
        while st.in_flight >= self.lanes {
            self.room.wait(&mut st);
        }
        st.in_flight += 1;
        st.queue.push_back(ticket);
        drop(st);
        self.work.notify_one();
    }

    /// Waits until every submitted ticket is completed, then stops the
    /// lanes.
    pub(crate) fn drain_and_stop(&self) {
        let mut st = self.state.lock();
        while st.in_flight > 0 {
            self.room.wait(&mut st);
        }
        st.stop = true;
        drop(st);
        self.work.notify_all();
    }

    /// A lane: fdatasync tickets as they come, completing in order.
    pub(crate) fn run_lane(&self, lane: usize) {
        loop {
            let ticket = {
                let mut st = self.state.lock();
                loop {
                    if let Some(t) = st.queue.pop_front() {
                        break t;
                    }
                    if st.stop {
                        return;
                    }
                    self.work.wait(&mut st);
                }
            };
            self.sync_and_complete(ticket, Some(lane));
        }
    }

    /// fdatasyncs a ticket's segment, then completes every ticket that is
    /// now next in order.
    /// `lane`: the sync lane running this (`None`: the writer thread), which
    /// picks the file description synced through (see `Segment::sync_file`).
    fn sync_and_complete(&self, ticket: Ticket, lane: Option<usize>) {
        let counters = &self.shared.counters;
        let synced = match (&ticket.sync, ticket.failure.is_none()) {
            (Some(seg), true) if self.shared.config.durability == Durability::Fsync => {
                let started = Instant::now();
                let r = seg
                    .sync_file(lane)
                    .sync_data()
                    .map_err(|e| Arc::new(StorageError::io("fdatasync", &seg.path, e)));
                counters
                    .histograms
                    .fsync_latency
                    .observe_duration(started.elapsed());
                counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                r
            }
            _ => Ok(()),
        };
        if ticket.sync.is_some() {
            counters
                .histograms
                .group_appends
                .observe(ticket.group.len() as u64);
        }
        let mut st = self.state.lock();
        st.done.insert(ticket.seq, (ticket, synced));
        let next = st.next;
        loop {
            let n = st.next;
            let Some((t, r)) = st.done.remove(&n) else {
                break;
            };
            st.next += 1;
            st.in_flight -= 1;
            self.complete(&mut st, t, r);
        }
        let progressed = st.next != next;
        drop(st);
        if progressed {
            self.room.notify_all();
        }
    }

    /// Publishes a durable ticket and answers its requests, or fails them.
    /// Runs under the state lock, in ticket order.
    fn complete(&self, st: &mut State, mut t: Ticket, synced: Result<(), Failure>) {
        let failure = st.poisoned.clone().or(t.failure.take()).or(synced.err());
        match &failure {
            None => self.publish(&t),
            Some(cause) => {
                if st.poisoned.is_none() {
                    // Nothing of this group (or any later one) is published.
                    // Bytes written past the durable end are ignored by
                    // readers and cut by recovery.
                    tracing::error!(error = %cause, "write failed: refusing writes until restart");
                    *self.shared.writer_failure.lock() = Some(Arc::clone(cause));
                    st.poisoned = Some(Arc::clone(cause));
                }
            }
        }
        let counters = &self.shared.counters;
        // One clock read per group: its replies all go out now.
        let now = Instant::now();
        for (req, outcome) in t.group.drain(..).zip(t.outcomes.drain(..)) {
            let reply = match (outcome, &failure) {
                // The original was durable before this group: true whatever
                // happened to this one.
                (
                    Outcome::Duplicate {
                        result,
                        durable: true,
                    },
                    _,
                ) => Ok(result),
                (
                    Outcome::Written(r)
                    | Outcome::Duplicate {
                        result: r,
                        durable: false,
                    },
                    None,
                ) => Ok(r),
                (Outcome::Refused(e), None) => Err(e),
                // On failure even a refusal may have been decided against a
                // version that never became durable: report the failure.
                (_, Some(cause)) => Err(AppendError::Storage(StorageError::writer_failed(cause))),
            };
            match &reply {
                Ok(_) => {
                    counters.appends.fetch_add(1, Ordering::Relaxed);
                }
                Err(AppendError::WrongExpectedVersion { .. }) => {
                    counters.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
            }
            counters
                .histograms
                .append_latency
                .observe_duration(now.saturating_duration_since(req.submitted));
            // The caller may have given up waiting; nothing to do then.
            let _ = req.reply.send(reply);
        }
    }

    /// Makes a durable ticket visible: segment ends and position indexes,
    /// index entries, then the durable head (last, so that whatever a reader
    /// finds below the head is already indexed).
    fn publish(&self, t: &Ticket) {
        let shared = &self.shared;
        let head = shared.head();
        if t.end_position <= head {
            return;
        }
        for u in &t.updates {
            u.segment.publish(u.data_end, u.end_position, &u.new_pidx);
            if let Some(on_disk) = u.sealed {
                u.segment.mark_sealed(on_disk);
            }
        }
        {
            let mut idx = shared.index.write();
            for a in &t.adds {
                if let Some(req) = t.group.get(a.req) {
                    idx.active.insert(
                        a.hash,
                        req.stream.as_str(),
                        a.first_version,
                        a.first_position,
                        a.count,
                        a.offset,
                    );
                }
            }
        }
        // Lifecycle states before the head passes their events: a reader
        // that can see a delete's event sees the delete take effect.
        for p in &t.lifecycle {
            shared
                .lifecycle
                .apply(p.hash, p.state.clone(), p.position, p.version, None);
        }
        shared
            .counters
            .events
            .fetch_add(t.end_position - head, Ordering::Relaxed);
        shared.head.store(t.end_position, Ordering::Release);
        // After the head: a reader that sees the new last version (and so
        // a first live version moved up by max_count) also sees the events
        // that moved it; before the head, it could find none live.
        if !shared.lifecycle.is_empty() {
            for a in &t.adds {
                if let Some(req) = t.group.get(a.req) {
                    shared.lifecycle.note_last(
                        a.hash,
                        req.stream.as_str(),
                        a.first_version + a.count - 1,
                    );
                }
            }
        }
        shared
            .lifecycle
            .noted_through
            .store(t.end_position, Ordering::Release);
        shared.head_watch.send_replace(t.end_position);
        if let Some(ids) = &t.freeze
            && shared.freeze_active(Arc::clone(ids))
        {
            let _ = self.flush_tx.lock().send(());
        }
    }
}
