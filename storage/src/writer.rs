//! The writer: one OS thread that owns the active segment. It gathers
//! appends into groups, checks them, encodes them and writes them; the
//! commit pipeline (`commit.rs`) makes each group durable and answers it.
//!
//! Loop: block for one request, then take whatever else is queued (up to
//! `max_group_bytes`); check each expected version against the stream heads,
//! which already include every group written and not yet acknowledged, plus
//! the versions pending in this group; encode every accepted batch into one
//! buffer; one `write`; hand the group to the pipeline (one `fdatasync` on a
//! sync lane, then publication and replies, in group order).
//!
//! There is no timer: requests queue up while fsyncs run, so groups grow
//! exactly when load grows. Replies, refusals included, go out only after
//! the group is durable, so no caller ever learns of a version that a crash
//! could take back.
//!
//! If a write or an fdatasync fails, the writer cannot know what reached the
//! disk (after a failed fsync Linux may drop the dirty pages and report
//! success next time), so it stops accepting writes until the process is
//! restarted and recovery has re-read the log. Reads keep working up to the
//! last durable position.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use logbook_protocol::{
    AppendResult, EventId, ExpectedVersion, LogPosition, NewEvent, StreamName, StreamVersion,
};
use tokio::sync::{mpsc, oneshot};

use crate::commit::{Failure, IndexAdd, Outcome, Pipeline, SegmentUpdate, Ticket};
use crate::dedup::{Found, IdCheck, WriterIds, same_event};
use crate::error::{AppendError, StorageError};
use crate::fs::OpenMode;
use crate::heads::{Head, Heads};
use crate::record::{self, Record};
use crate::segment::{
    self, Footer, HEADER_LEN, Header, PIDX_INTERVAL, PidxEntry, RecordWalk, Segment,
};
use crate::shared::Shared;
use logbook_protocol::layout;

/// What an append is, by its event ids (see `dedup.rs`).
enum IdVerdict {
    /// None of its ids is stored.
    New,
    /// It repeats a stored batch exactly: answer with that batch's result.
    Resend {
        first_version: u64,
        first_position: u64,
        count: u64,
        /// The original was durable when the resend was recognised.
        durable: bool,
        /// The original's commit time (for one still in the group being
        /// built, the time its caller chose, if any).
        timestamp: Option<i64>,
    },
    /// It meets a stored id otherwise: refuse it.
    Duplicate {
        id: EventId,
        stream: String,
        position: u64,
    },
    /// An id appears twice in it: refuse it.
    Repeated { id: EventId },
}

/// Record flag: last record of a group-commit write. Recovery uses it to
/// tell a torn tail from damage to data that was acknowledged.
pub const FLAG_GROUP_END: u8 = 1;

/// An append on its way to the writer.
#[derive(Debug)]
pub struct AppendRequest {
    pub(crate) stream: StreamName,
    pub(crate) hash: u64,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) encoded_len: usize,
    /// What the index tables said of the events' ids at submission.
    pub(crate) id_check: IdCheck,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, AppendError>>,
    /// When it was submitted: append latency is measured from here to the
    /// reply.
    pub(crate) submitted: Instant,
    /// A lifecycle operation on `$$target` (this request's stream), which
    /// the writer turns into the event it writes.
    pub(crate) op: Option<crate::lifecycle::Op>,
    /// The commit time the caller chose ([`crate::Store::append_at`]),
    /// instead of the clock's: replicas applying the same appends in the
    /// same order then write the same timestamps.
    pub(crate) at: Option<i64>,
    /// Only a resend ([`crate::Store::resend`]): a new batch is refused
    /// with `NotStored` instead of written.
    pub(crate) resend_only: bool,
    /// A record copied from another replica ([`crate::Store::ingest`]):
    /// the position and version it holds there, which it must take here
    /// too (it is refused otherwise: the logs differ).
    pub(crate) ingest: Option<(u64, u64)>,
    /// The copied record's events were removed on that replica: they are
    /// ids only, written as such ([`record::FLAG_REMOVED`]).
    pub(crate) removed: bool,
    /// Seal the active segment right after this request's record (a
    /// scavenge or an erase, so that the records before it can be
    /// rewritten).
    pub(crate) seal_after: bool,
    /// Its charge on the writer queue's byte budget, given back when the
    /// request is dropped (after its group is published, or refused).
    pub(crate) _queued: Option<tokio::sync::OwnedSemaphorePermit>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<AppendRequest>,
    pipeline: Arc<Pipeline>,
    active: Arc<Segment>,
    /// Where the next record goes.
    write_offset: u64,
    /// Zeros have been written up to here.
    alloc_end: u64,
    /// Full pidx of the active segment; entries from `pidx_published` on
    /// have not been handed to a ticket yet.
    pidx: Vec<PidxEntry>,
    pidx_published: usize,
    records_in_segment: u64,
    /// Position of the next event to write (written, not yet durable, for
    /// groups in flight).
    next_position: u64,
    /// Sequence number of the next ticket.
    seq: u64,
    heads: Heads,
    /// Ids of the positions the index tables do not cover yet.
    ids: WriterIds,
    buf: Vec<u8>,
    /// Offset in `buf` of the last record encoded, to flag it as group end.
    last_record_in_buf: Option<usize>,
    last_timestamp: i64,
    /// Set when a write of this thread failed.
    failed: Option<Failure>,
    /// The lifecycle states as written (published ones plus those of
    /// groups in flight), for the checks of later appends.
    lifecycle: crate::stream_map::StreamMap<logbook_protocol::lifecycle::StreamLifecycle>,
}

/// Where the writer starts, as recovery left the log.
pub(crate) struct Resume {
    /// The segment to append to.
    pub active: Arc<Segment>,
    /// Its sparse position index, whole.
    pub pidx: Vec<PidxEntry>,
    /// Records in it.
    pub records_in_segment: u64,
    /// The last commit time (timestamps never go backwards).
    pub last_timestamp: i64,
    /// The ids of the positions the index tables do not cover.
    pub ids: WriterIds,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: mpsc::Receiver<AppendRequest>,
        flush_tx: std::sync::mpsc::Sender<()>,
        resume: Resume,
    ) -> Result<Writer, StorageError> {
        let Resume {
            active,
            pidx,
            records_in_segment,
            last_timestamp,
            ids,
        } = resume;
        let write_offset = active.data_end();
        let alloc_end = active
            .file
            .len()
            .map_err(|e| StorageError::io("stat", &active.path, e))?
            .max(write_offset);
        let next_position = shared.head();
        let heads = Heads::new(shared.config.head_cache_streams);
        let pipeline = Pipeline::new(Arc::clone(&shared), flush_tx);
        let mut lifecycle = crate::stream_map::StreamMap::default();
        for e in shared.lifecycle.all() {
            let hash = shared.hasher.hash(&e.state.stream);
            let mut state = e.state.clone();
            state.last_version = state.last_version.max(e.last());
            lifecycle.insert(hash, &e.state.stream.clone(), state);
        }
        Ok(Writer {
            lifecycle,
            pidx_published: pidx.len(),
            pidx,
            shared,
            rx,
            pipeline,
            active,
            write_offset,
            alloc_end,
            records_in_segment,
            next_position,
            seq: 0,
            heads,
            ids,
            buf: Vec::with_capacity(1 << 20),
            last_record_in_buf: None,
            last_timestamp,
            failed: None,
        })
    }

    /// Runs until every sender is gone and every group is answered.
    pub(crate) fn run(mut self) {
        let mut spawn_error = None;
        let lanes: Vec<_> = (0..self.pipeline.lanes())
            .filter_map(|i| {
                let p = Arc::clone(&self.pipeline);
                std::thread::Builder::new()
                    .name(format!("logbook-sync-{i}"))
                    .spawn(move || p.run_lane(i))
                    .map_err(|e| {
                        tracing::error!(error = %e, "cannot start a sync lane");
                        spawn_error = Some(e);
                    })
                    .ok()
            })
            .collect();
        let no_lane: Option<Failure> = lanes.is_empty().then(|| {
            let e = spawn_error.unwrap_or_else(|| std::io::Error::other("no sync lane"));
            Arc::new(StorageError::io("start sync lane", &self.active.path, e))
        });
        if let Some(f) = &no_lane {
            self.failed = Some(Arc::clone(f));
        }
        let max_group = self.shared.config.max_group_bytes as usize;
        let mut group: Vec<AppendRequest> = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            // If the index fell behind, slow down (or stop) here: appends
            // wait in the queue, bounded, instead of memtables growing.
            self.shared.wait_for_index();
            let mut bytes = first.encoded_len;
            group.push(first);
            while bytes < max_group {
                match self.rx.try_recv() {
                    Ok(r) => {
                        bytes += r.encoded_len;
                        group.push(r);
                    }
                    Err(_) => break,
                }
            }
            let ticket = self.commit(std::mem::take(&mut group));
            if let Some(cause) = &no_lane {
                // No lane will ever answer: do it here.
                for req in ticket.group {
                    let _ = req
                        .reply
                        .send(Err(AppendError::Storage(StorageError::writer_failed(
                            cause,
                        ))));
                }
                continue;
            }
            // Alone: a single request and nobody else waiting.
            let alone = ticket.group.len() == 1 && self.rx.is_empty();
            self.pipeline.submit(ticket, alone);
        }
        self.pipeline.drain_and_stop();
        for l in lanes {
            let _ = l.join();
        }
        self.finish();
    }

    /// Clean shutdown: drop the preallocated zeros, so the next start finds
    /// the segment ending at its last record.
    fn finish(&mut self) {
        if self.failed.is_some()
            || self.pipeline.poisoned().is_some()
            || self.shared.abandoned.load(Ordering::Relaxed)
        {
            return;
        }
        // The index is written whole at a clean close: freeze the last
        // memtable with its ids (the store's close flushes it).
        let ids = Arc::new(self.ids.take_current());
        self.shared.freeze_active(ids);
        if self.alloc_end <= self.write_offset {
            return;
        }
        let f = &self.active.file;
        if let Err(e) = f.set_len(self.write_offset).and_then(|_| f.sync_data()) {
            tracing::warn!(file = %self.active.path.display(), error = %e, "could not trim preallocated space");
        }
    }

    fn head_of(&mut self, hash: u64, name: &str) -> Result<Option<Head>, StorageError> {
        if let Some(h) = self.heads.get(hash, name) {
            return Ok(Some(h));
        }
        // Miss: ask the index. New streams are answered by bloom filters and
        // memtables without touching a record. A stream written by a group
        // still in flight is never a miss: its head stays in the unpublished
        // tier until the index has it.
        let Some(last_version) = self.shared.stream_last_version(name)? else {
            return Ok(None);
        };
        let head = Head { last_version };
        self.heads.cache(hash, name, head.clone());
        Ok(Some(head))
    }

    /// Claims the ids of `events` for positions `first_position` on, and
    /// returns where those already stored are: the caller's pre-check
    /// (`check`) found some in the tables; the writer's generations have
    /// the rest (one probe per id looks up and claims at once); a gap
    /// between the two (tables flushed after the pre-check, generations
    /// dropped since) is looked up in the newer tables, outside the index
    /// lock. Returns `(event index, where)` in event order, usually none.
    /// Unless the result is empty (and the batch is then written), the
    /// claims are undone with [`Writer::unclaim_ids`].
    fn claim_ids(
        &mut self,
        events: &[NewEvent],
        check: &IdCheck,
        first_position: u64,
    ) -> Result<Vec<(usize, Found)>, StorageError> {
        let hasher = self.shared.hasher;
        let mut found: Vec<(usize, Found)> = Vec::new();
        let gap = check.through < self.ids.floor();
        // The pre-check hashed the ids; a request built without one (none
        // is) would be hashed here.
        let hashes: std::borrow::Cow<'_, [u64]> = if check.hashes.len() == events.len() {
            std::borrow::Cow::Borrowed(&check.hashes)
        } else {
            std::borrow::Cow::Owned(events.iter().map(|e| hasher.hash_id(&e.id)).collect())
        };
        self.ids.touch(&hashes);
        for ((k, e), &hash) in events.iter().enumerate().zip(hashes.iter()) {
            if let Some(position) = check.found(k) {
                found.push((k, Found { position }));
                continue;
            }
            if let Some(f) = self.ids.claim(hash, e.id, first_position + k as u64) {
                found.push((k, f));
            }
        }
        if !gap {
            return Ok(found);
        }
        let newer_tables: Vec<Arc<crate::index::table::Table>> = self
            .shared
            .index
            .read()
            .tables
            .iter()
            .filter(|t| t.end_position > check.through)
            .cloned()
            .collect();
        let mut more: Vec<(usize, Found)> = Vec::new();
        for (k, e) in events.iter().enumerate() {
            if found.iter().any(|(j, _)| *j == k) {
                continue;
            }
            let hash = hasher.hash_id(&e.id);
            for t in newer_tables.iter().rev() {
                if let Some(position) = t.ids.get(hash, &e.id)? {
                    more.push((k, Found { position }));
                    break;
                }
            }
        }
        if !more.is_empty() {
            found.extend(more);
            found.sort_unstable_by_key(|(k, _)| *k);
        }
        Ok(found)
    }

    /// Undoes the claims [`Writer::claim_ids`] made for `events` at
    /// `first_position` on (the batch is not written after all).
    fn unclaim_ids(&mut self, events: &[NewEvent], first_position: u64) {
        let hasher = self.shared.hasher;
        for (k, e) in events.iter().enumerate() {
            self.ids
                .unclaim(hasher.hash_id(&e.id), &e.id, first_position + k as u64);
        }
    }

    /// The record holding `position`, which this thread has written (it
    /// may not be durable or published yet).
    /// `None` if a scavenge removed it.
    fn record_holding(
        &self,
        position: u64,
    ) -> Result<Option<(Record, std::path::PathBuf)>, StorageError> {
        let segs = Arc::clone(&self.shared.segments.read());
        let si = segs.partition_point(|s| s.first_position <= position);
        let seg = si.checked_sub(1).and_then(|i| segs.get(i)).ok_or_else(|| {
            StorageError::Internal(format!("no segment holds position {position}"))
        })?;
        // Read up to what this thread wrote, not to the durable end: the
        // record's length and checksum still guard the read.
        let (from, limit) = if Arc::ptr_eq(seg, &self.active) {
            let from = self
                .pidx
                .iter()
                .rev()
                .find(|e| e.position <= position)
                .map_or(HEADER_LEN, |e| e.offset);
            (from, self.write_offset)
        } else if seg.is_sealed() {
            (seg.seek_offset(position)?, seg.data_end())
        } else {
            let len = seg
                .file
                .len()
                .map_err(|e| StorageError::io("stat", &seg.path, e))?;
            (seg.seek_offset(position)?, len)
        };
        let mut reader = self.shared.reader(16 << 10);
        let mut walk = RecordWalk::new(seg, from, limit, None);
        while let Some((_, rec)) = walk.next(&mut reader)? {
            if rec.end_position() > position {
                return Ok(Some((rec, seg.path.clone())));
            }
        }
        if seg.gaps {
            // A scavenge removed it (its id stays taken).
            return Ok(None);
        }
        Err(StorageError::corrupt(
            &seg.path,
            walk.offset(),
            format!("no record holds position {position}, which the id index names"),
        ))
    }

    /// What `req` is, by its event ids: new (its ids are then claimed for
    /// positions from the next one on: undo with [`Writer::unclaim_ids`]
    /// if it is refused after all), a resend of a stored batch, or refused.
    fn classify_ids(
        &mut self,
        req: &AppendRequest,
        group: &[AppendRequest],
        adds: &[IndexAdd],
    ) -> Result<IdVerdict, StorageError> {
        let first_position = self.next_position;
        let mut found = self.claim_ids(&req.events, &req.id_check, first_position)?;
        if !found.is_empty() {
            self.unclaim_ids(&req.events, first_position);
        }
        // An id met at this batch's own positions repeats within it.
        if let Some(&(k, _)) = found.iter().find(|(_, f)| f.position >= first_position) {
            return Ok(IdVerdict::Repeated {
                id: req.events.get(k).map(|e| e.id).unwrap_or_default(),
            });
        }
        found.retain(|(_, f)| f.position < first_position);
        // An original in the group being built: not written yet.
        let pending = |p: u64| {
            adds.iter()
                .find(|a| a.first_position <= p && p < a.first_position + a.count)
        };
        let Some(&(first_k, first)) = found.first() else {
            return Ok(IdVerdict::New);
        };
        let n = req.events.len();
        // Every id stored, at consecutive positions from the first.
        let whole = found.len() == n
            && found
                .iter()
                .all(|(k, f)| f.position == first.position + *k as u64);
        if let Some(add) = pending(first.position) {
            let original = group.get(add.req).ok_or_else(|| {
                StorageError::Internal("a pending id names no request of the group".into())
            })?;
            let same = whole
                && first.position == add.first_position
                && original.stream == req.stream
                && original.events.len() == n
                && original.events.iter().zip(&req.events).all(|(a, b)| {
                    a.id == b.id
                        && a.event_type == b.event_type
                        && a.metadata == b.metadata
                        && a.data == b.data
                });
            return Ok(if same {
                IdVerdict::Resend {
                    first_version: add.first_version,
                    first_position: first.position,
                    count: n as u64,
                    durable: false,
                    timestamp: original.at,
                }
            } else {
                IdVerdict::Duplicate {
                    id: req.events.get(first_k).map(|e| e.id).unwrap_or_default(),
                    stream: original.stream.as_str().to_owned(),
                    position: first.position,
                }
            });
        }
        let Some((rec, path)) = self.record_holding(first.position)? else {
            // The event that holds the id was removed (deleted, truncated,
            // expired, then scavenged): ids are never reused.
            return Ok(IdVerdict::Duplicate {
                id: req.events.get(first_k).map(|e| e.id).unwrap_or_default(),
                stream: String::new(),
                position: first.position,
            });
        };
        // A metadata stream's event is the state the writer resolved for a
        // lifecycle operation (not the placeholder it was sent, or resent,
        // as): its id names it. A batch a replica's scavenge removed kept
        // its events' content hashes: the same answer as before that
        // scavenge, and as on a replica that has not run one.
        let same = whole
            && rec.first_position == first.position
            && usize::from(rec.count) == n
            && rec.stream.as_str() == req.stream.as_str()
            && (logbook_protocol::lifecycle::meta_target(req.stream.as_str()).is_some() || {
                let stored = rec
                    .events()
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| StorageError::corrupt(&path, 0, format!("{e:?}")))?;
                let same: fn(&logbook_protocol::RecordedEvent, &NewEvent) -> bool =
                    if rec.is_removed() {
                        record::same_as_removed
                    } else {
                        same_event
                    };
                stored.iter().zip(&req.events).all(|(s, e)| same(s, e))
            });
        if same {
            let durable = first.position + n as u64 <= self.shared.head();
            return Ok(IdVerdict::Resend {
                first_version: rec.first_version,
                first_position: first.position,
                count: n as u64,
                durable,
                timestamp: Some(rec.timestamp_us),
            });
        }
        // Name where the first stored id is: its own record's stream.
        let (stream, position) =
            if rec.first_position <= first.position && first.position < rec.end_position() {
                (rec.stream.as_str().to_owned(), first.position)
            } else {
                (String::new(), first.position)
            };
        Ok(IdVerdict::Duplicate {
            id: req.events.get(first_k).map(|e| e.id).unwrap_or_default(),
            stream,
            position,
        })
    }

    /// The answer to `req` when reading what decides it failed with `e`:
    /// a refusal of it alone, or, for a request at a caller's time (a
    /// replicated log, whose replicas must all decide every request
    /// alike), a stop: this replica cannot decide it as the others do, so
    /// the requests after it (`failure`) and every later one are refused
    /// too, and the caller stops applying.
    fn refuse_for(
        &mut self,
        req: &AppendRequest,
        e: StorageError,
        failure: &mut Option<Failure>,
    ) -> Outcome {
        if req.at.is_none() {
            return Outcome::Refused(AppendError::Storage(e));
        }
        let cause = Arc::new(e);
        *failure = Some(Arc::clone(&cause));
        self.failed = failure.clone();
        Outcome::Refused(AppendError::Storage(StorageError::writer_failed(&cause)))
    }

    /// Checks, encodes and writes one group; returns its ticket.
    fn commit(&mut self, group: Vec<AppendRequest>) -> Ticket {
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(group.len());
        let mut adds: Vec<IndexAdd> = Vec::with_capacity(group.len());
        let mut updates: Vec<SegmentUpdate> = Vec::new();
        let mut published: Vec<crate::commit::Published> = Vec::new();
        let start_position = self.next_position;
        // The clock, read once for the group; each record then takes it, or
        // its caller's time, and raises `last_timestamp` (not here: a time
        // chosen by the caller must not be overtaken by this reading).
        let timestamp = self.last_timestamp.max(self.shared.now_us());
        self.buf.clear();
        self.last_record_in_buf = None;
        let seq = self.seq;
        self.seq += 1;
        let durable = self.shared.head();
        self.heads.published(durable);
        self.ids
            .indexed(self.shared.indexed_through.load(Ordering::Acquire));

        let mut failure: Option<Failure> = self.failed.clone().or_else(|| self.pipeline.poisoned());
        for (i, req) in group.iter().enumerate() {
            if let Some(cause) = &failure {
                outcomes.push(Outcome::Refused(AppendError::Storage(
                    StorageError::writer_failed(cause),
                )));
                continue;
            }
            let name = req.stream.as_str();
            // Ids first: a resend is answered whatever its expected version.
            match self.classify_ids(req, &group, &adds) {
                Ok(IdVerdict::New) if req.resend_only => {
                    self.unclaim_ids(&req.events, self.next_position);
                    outcomes.push(Outcome::Refused(AppendError::NotStored {
                        stream: name.to_owned(),
                    }));
                    continue;
                }
                Ok(IdVerdict::New) => {}
                // A resend at a given time repeats only the batch written
                // at that time: the same ids written by a later request
                // (a replicated log's later entry) are not its own.
                Ok(IdVerdict::Resend { timestamp, .. })
                    if req.resend_only && req.at.is_some() && timestamp != req.at =>
                {
                    outcomes.push(Outcome::Refused(AppendError::NotStored {
                        stream: name.to_owned(),
                    }));
                    continue;
                }
                // A copied record is new here, or the logs differ.
                Ok(IdVerdict::Resend { first_position, .. }) if req.ingest.is_some() => {
                    outcomes.push(Outcome::Refused(AppendError::Storage(
                        StorageError::Internal(format!(
                            "a record of {name} copied from another replica is stored here already, at position {first_position}: the logs differ"
                        )),
                    )));
                    continue;
                }
                Ok(IdVerdict::Resend {
                    first_version,
                    first_position,
                    count,
                    durable,
                    ..
                }) => {
                    outcomes.push(Outcome::Duplicate {
                        result: AppendResult {
                            first_version: StreamVersion(first_version),
                            last_version: StreamVersion(first_version + count - 1),
                            first_position: LogPosition(first_position),
                            last_position: LogPosition(first_position + count - 1),
                        },
                        durable,
                    });
                    continue;
                }
                Ok(IdVerdict::Duplicate {
                    id,
                    stream,
                    position,
                }) => {
                    outcomes.push(Outcome::Refused(AppendError::DuplicateEventId {
                        id,
                        stream,
                        position: Some(LogPosition(position)),
                    }));
                    continue;
                }
                Ok(IdVerdict::Repeated { id }) => {
                    outcomes.push(Outcome::Refused(AppendError::DuplicateEventId {
                        id,
                        stream: name.to_owned(),
                        position: None,
                    }));
                    continue;
                }
                Err(e) => {
                    outcomes.push(self.refuse_for(req, e, &mut failure));
                    continue;
                }
            }
            // From here on the batch's ids are claimed: a refusal undoes it.
            let head = match self.head_of(req.hash, name) {
                Ok(h) => h,
                Err(e) => {
                    self.unclaim_ids(&req.events, self.next_position);
                    outcomes.push(self.refuse_for(req, e, &mut failure));
                    continue;
                }
            };
            // The stream's last version (kept by its lifecycle state once
            // its events are gone), and the one its expected version is
            // checked against (none for a soft-deleted stream).
            let state = self.lifecycle.get(req.hash, name);
            if state.is_some_and(|s| s.is_hard_deleted()) {
                self.unclaim_ids(&req.events, self.next_position);
                outcomes.push(Outcome::Refused(AppendError::StreamDeleted {
                    stream: name.to_owned(),
                }));
                continue;
            }
            let last = head
                .as_ref()
                .map(|h| h.last_version)
                .max(state.and_then(|s| s.last_version));
            let actual = crate::lifecycle::effective_version(state, last).map(StreamVersion);
            if !req.expected.admits(actual) {
                self.unclaim_ids(&req.events, self.next_position);
                outcomes.push(Outcome::Refused(AppendError::WrongExpectedVersion {
                    stream: name.to_owned(),
                    expected: req.expected,
                    actual,
                }));
                continue;
            }
            // A lifecycle operation: resolved against its stream's head
            // now, into the event that records the state it leaves.
            let op_event: [NewEvent; 1];
            let mut new_state = None;
            let events: &[NewEvent] = match &req.op {
                None => &req.events,
                // A state copied from another replica: its event as it was
                // written there, and the state it records.
                Some(crate::lifecycle::Op {
                    kind: crate::lifecycle::OpKind::Restore(state),
                    target_hash,
                    ..
                }) => {
                    new_state = Some((*target_hash, state.clone()));
                    &req.events
                }
                Some(op) => match self.resolve_op(op, req.at) {
                    Ok(state) => {
                        let id = req.events.first().map(|e| e.id).unwrap_or_default();
                        op_event = [NewEvent::new(id, state.1, state.0.to_json())];
                        new_state = Some((op.target_hash, state.0));
                        &op_event
                    }
                    Err(AppendError::Storage(e)) => {
                        self.unclaim_ids(&req.events, self.next_position);
                        outcomes.push(self.refuse_for(req, e, &mut failure));
                        continue;
                    }
                    Err(e) => {
                        self.unclaim_ids(&req.events, self.next_position);
                        outcomes.push(Outcome::Refused(e));
                        continue;
                    }
                },
            };
            let len = if req.op.is_some() {
                record::encoded_len(name, events) as u64
            } else {
                req.encoded_len as u64
            };
            let full =
                self.write_offset + self.buf.len() as u64 + len > self.shared.config.segment_bytes;
            if full && let Err(e) = self.roll(&mut updates) {
                let cause = Arc::new(e);
                failure = Some(Arc::clone(&cause));
                self.failed = failure.clone();
                outcomes.push(Outcome::Refused(AppendError::Storage(
                    StorageError::writer_failed(&cause),
                )));
                continue;
            }
            let n = events.len() as u64;
            let first_version = last.map_or(0, |v| v + 1);
            let first_position = self.next_position;
            // A copied record takes its position, version and time here
            // too (its time is raised past the previous record's like any).
            if let Some((position, version)) = req.ingest
                && ((position, version) != (first_position, first_version)
                    || req.at.is_some_and(|at| self.last_timestamp > at))
            {
                self.unclaim_ids(&req.events, self.next_position);
                outcomes.push(Outcome::Refused(AppendError::Storage(StorageError::Internal(
                    format!(
                        "a record of {name} copied from another replica holds version {version} at position {position} there, committed at {:?}, but would take version {first_version} at position {first_position}, after a record committed at {}, here: the logs differ",
                        req.at, self.last_timestamp
                    ),
                ))));
                continue;
            }
            let offset = self.write_offset + self.buf.len() as u64;
            if self
                .pidx
                .last()
                .is_none_or(|p| offset >= p.offset + PIDX_INTERVAL)
            {
                self.pidx.push(PidxEntry {
                    position: first_position,
                    offset,
                });
            }
            self.last_record_in_buf = Some(self.buf.len());
            // The group's clock reading, or the time the caller chose; never
            // before the previous record's (so, for appends that all carry
            // their time, the same on every replica whatever the grouping).
            let timestamp = self.last_timestamp.max(req.at.unwrap_or(timestamp));
            self.last_timestamp = timestamp;
            let start = self.buf.len();
            record::encode(
                &mut self.buf,
                self.active.crc_seed,
                name,
                first_position,
                first_version,
                timestamp,
                events,
            );
            if req.removed {
                record::set_flags(
                    &mut self.buf,
                    start,
                    self.active.crc_seed,
                    record::FLAG_REMOVED,
                );
            }
            if let Some((hash, state)) = new_state {
                self.lifecycle
                    .insert(hash, &state.stream.clone(), state.clone());
                published.push(crate::commit::Published {
                    hash,
                    state,
                    position: first_position,
                    version: first_version,
                });
            }
            self.records_in_segment += 1;
            self.next_position += n;
            self.heads.write(
                req.hash,
                name,
                Head {
                    last_version: first_version + n - 1,
                },
            );
            // A stream with a lifecycle state may lose its last events to
            // a scavenge (max_age, max_count): its view keeps the version,
            // so that versions are never given twice even when the head
            // cache forgets the stream.
            if let Some(v) = self.lifecycle.get_mut(req.hash, name) {
                v.last_version = Some(first_version + n - 1);
            }
            adds.push(IndexAdd {
                req: i,
                hash: req.hash,
                first_version,
                first_position,
                count: n,
                offset,
            });
            outcomes.push(Outcome::Written(AppendResult {
                first_version: StreamVersion(first_version),
                last_version: StreamVersion(first_version + n - 1),
                first_position: LogPosition(first_position),
                last_position: LogPosition(first_position + n - 1),
            }));
            if req.seal_after
                && let Err(e) = self.roll(&mut updates)
            {
                // As any failed roll-over: nothing more is written.
                let cause = Arc::new(e);
                failure = Some(Arc::clone(&cause));
                self.failed = failure.clone();
            }
        }

        let wrote = self.next_position > start_position;
        if failure.is_none()
            && wrote
            && let Err(e) = self.write_buf()
        {
            failure = Some(Arc::new(e));
            self.failed = failure.clone();
        }
        if failure.is_none() && wrote {
            updates.push(SegmentUpdate {
                segment: Arc::clone(&self.active),
                data_end: self.write_offset,
                end_position: self.next_position,
                new_pidx: self
                    .pidx
                    .get(self.pidx_published..)
                    .unwrap_or_default()
                    .to_vec(),
                sealed: None,
            });
            self.pidx_published = self.pidx.len();
            // Later groups check against these heads at once: if this group
            // fails, every later one fails with it (the pipeline is poisoned).
            self.heads.group_written(self.next_position);
            self.shared
                .last_written_us
                .store(self.last_timestamp, Ordering::Release);
        } else {
            self.heads.group_failed();
        }
        // The writer decides when the memtable is frozen, so that the id
        // generation it hands over covers exactly the memtable's range: when
        // a segment was sealed, or the memtable holds enough entries.
        let freeze = (failure.is_none()
            && wrote
            && (updates.iter().any(|u| u.sealed.is_some())
                || self.next_position - self.ids.current_start()
                    >= self.shared.config.index_flush_entries as u64))
            .then(|| self.ids.freeze(self.next_position));
        Ticket {
            seq,
            group,
            outcomes,
            adds,
            updates,
            sync: wrote.then(|| Arc::clone(&self.active)),
            end_position: self.next_position,
            failure,
            freeze,
            lifecycle: published,
        }
    }

    /// The state a lifecycle operation leaves, and its event type, from
    /// its stream's state and head as written so far.
    /// `at`: the caller's time ([`AppendRequest::at`]), which a
    /// replicated log gives so that every replica resolves the operation
    /// alike (an age-based retention cut depends on the time).
    fn resolve_op(
        &mut self,
        op: &crate::lifecycle::Op,
        at: Option<i64>,
    ) -> Result<(logbook_protocol::lifecycle::StreamLifecycle, &'static str), AppendError> {
        let target = op.target.as_str();
        let head = self.head_of(op.target_hash, target)?;
        let prev = self.lifecycle.get(op.target_hash, target);
        let last = head
            .map(|h| h.last_version)
            .max(prev.and_then(|p| p.last_version));
        let now = self
            .last_timestamp
            .max(at.unwrap_or_else(|| self.shared.now_us()));
        op.resolve(prev, last, now)
    }

    /// Writes the buffer (flagging its last record as the group's end).
    fn write_buf(&mut self) -> Result<(), StorageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(at) = self.last_record_in_buf.take() {
            flag_group_end(&mut self.buf, at, self.active.crc_seed);
        }
        let end = self.write_offset + self.buf.len() as u64;
        let prealloc = self.shared.config.preallocate_bytes;
        if prealloc > 0 && end > self.alloc_end {
            // Extend with zeros so that later fsyncs overwrite allocated
            // blocks. The zeros ride this group's fdatasync.
            let cap = self.shared.config.segment_bytes;
            let new_end = (end + prealloc).min(cap).max(end);
            let zeros = vec![0u8; (new_end - self.alloc_end.max(end)) as usize];
            if !zeros.is_empty() {
                self.active
                    .file
                    .write_all_at(&zeros, self.alloc_end.max(end))
                    .map_err(|e| StorageError::io("preallocate", &self.active.path, e))?;
            }
            self.alloc_end = new_end;
        }
        self.active
            .file
            .write_all_at(&self.buf, self.write_offset)
            .map_err(|e| StorageError::io("write", &self.active.path, e))?;
        let c = &self.shared.counters;
        c.groups.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.write_offset = end;
        self.buf.clear();
        Ok(())
    }

    /// Seals the active segment and opens the next one. Records already
    /// encoded in the buffer go to the old segment first.
    fn roll(&mut self, updates: &mut Vec<SegmentUpdate>) -> Result<(), StorageError> {
        self.write_buf()?;
        let old = Arc::clone(&self.active);
        let footer = Footer {
            data_end: self.write_offset,
            record_count: self.records_in_segment,
            first_position: old.first_position,
            end_position: self.next_position,
            pidx_count: self.pidx.len() as u32,
            pidx_crc: 0,
        };
        let seal = segment::encode_seal(&self.pidx, &footer);
        // What the seal says of the pidx, for dropping and reading it again
        // later (the very entries just encoded).
        let on_disk = (self.pidx.len() as u32, segment::pidx_crc(&self.pidx));
        let io = |op| {
            let path = old.path.clone();
            move |e| StorageError::io(op, path, e)
        };
        // The records first: a footer on disk says the segment is whole,
        // so it must never get there before the records it covers (groups
        // still being synced by the lanes, or just written above). A disk
        // may keep unsynced writes in any order: written together and
        // synced once, a power cut could keep the footer and lose records
        // before it, and the segment would pass for whole with a hole.
        let c = &self.shared.counters;
        let synced = Instant::now();
        old.file.sync_data().map_err(io("fdatasync"))?;
        c.histograms
            .fsync_latency
            .observe_duration(synced.elapsed());
        c.fsyncs.fetch_add(1, Ordering::Relaxed);
        old.file
            .write_all_at(&seal, self.write_offset)
            .map_err(io("write footer"))?;
        old.file
            .set_len(self.write_offset + seal.len() as u64)
            .map_err(io("truncate"))?;
        // The seal must be on disk before the next segment exists: recovery
        // treats a segment followed by another as complete (a torn seal
        // fails its checksum, and the segment is scanned and sealed again).
        let synced = Instant::now();
        old.file.sync_data().map_err(io("fdatasync"))?;
        c.histograms
            .fsync_latency
            .observe_duration(synced.elapsed());
        c.fsyncs.fetch_add(1, Ordering::Relaxed);
        updates.push(SegmentUpdate {
            segment: Arc::clone(&old),
            data_end: self.write_offset,
            end_position: self.next_position,
            new_pidx: self
                .pidx
                .split_off(self.pidx_published.min(self.pidx.len())),
            sealed: Some(on_disk),
        });
        let new = create_segment(&self.shared, self.next_position)?;
        {
            let mut segs = self.shared.segments.write();
            let mut v = Vec::clone(&segs);
            v.push(Arc::clone(&new));
            *segs = Arc::new(v);
        }
        self.active = new;
        self.write_offset = HEADER_LEN;
        self.alloc_end = HEADER_LEN;
        self.records_in_segment = 0;
        self.pidx.clear();
        self.pidx_published = 0;
        Ok(())
    }
}

/// Sets the group-end flag on the record at `at` in `buf` and refreshes its
/// checksum (under the segment's `seed`).
fn flag_group_end(buf: &mut [u8], at: usize, seed: u32) {
    record::set_flags(buf, at, seed, FLAG_GROUP_END);
}

/// Creates a new, empty active segment starting at `first_position`.
pub(crate) fn create_segment(
    shared: &Shared,
    first_position: u64,
) -> Result<Arc<Segment>, StorageError> {
    let vfs = &shared.config.vfs;
    let path = shared.log_dir.join(layout::segment_file(first_position));
    let io = |op| {
        let path = path.clone();
        move |e| StorageError::io(op, path, e)
    };
    let file = vfs.open(&path, OpenMode::CreateNew).map_err(io("create"))?;
    let header = Header {
        first_position,
        nonce: Some(segment_nonce()),
        gaps: false,
    };
    let nonce = header.nonce.unwrap_or(0);
    file.write_all_at(&segment::encode_header(first_position, nonce), 0)
        .map_err(io("write header"))?;
    file.sync_data().map_err(io("fdatasync"))?;
    // The new file's directory entry must be durable before any record in
    // it is acknowledged.
    vfs.sync_dir(&shared.log_dir)
        .map_err(|e| StorageError::io("sync dir", &shared.log_dir, e))?;
    let seg = Segment::new(
        path,
        file,
        header,
        HEADER_LEN,
        first_position,
        Vec::new(),
        false,
    );
    seg.open_lane_files(shared.lanes())?;
    let seg = Arc::new(seg);
    seg.track(&shared.pidx_budget);
    Ok(seg)
}

/// A random nonce for a new segment's header. It must be unknown to
/// clients (it seeds the record checksums that tell records from payload
/// bytes), so it comes from the OS; without OS randomness, from what std's
/// hash maps use.
pub(crate) fn segment_nonce() -> u32 {
    getrandom::u32().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(std::process::id().into());
        h.finish() as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_end_flag_keeps_the_record_valid() {
        let mut buf = Vec::new();
        let e = NewEvent::new(EventId::from_u128(1), "T", &b"x"[..]);
        record::encode(&mut buf, 77, "s", 0, 0, 0, std::slice::from_ref(&e));
        flag_group_end(&mut buf, 0, 77);
        let len = record::check(&buf, 1 << 20, 77).unwrap();
        let rec = Record::parse(bytes::Bytes::from(buf[..len].to_vec())).unwrap();
        assert_eq!(rec.flags & FLAG_GROUP_END, FLAG_GROUP_END);
    }
}
