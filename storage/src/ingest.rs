//! Copying the log from another replica, record by record.
//!
//! Replicas of a cluster hold the same records at the same positions (the
//! same batches, versions, timestamps and bytes of events), but not the
//! same files: each segment's checksums start from a secret nonce of its
//! own, and segments roll over where each replica's writer rolled them.
//! So a replica that lacks a range of the log gets it as records
//! ([`Store::read_batches`] on a replica that has it) and writes them
//! ([`Store::ingest`]) through its own writer: each record is checked to
//! take the position and version it holds on the replica it came from,
//! indexed, and made durable by the usual group commit, so a crash in the
//! middle leaves a prefix of the range, as any crash of appends does.
//!
//! A state of a metadata stream (`$$S`) is written as the event it was
//! and taken as the stream's state as it is, not resolved again (a
//! retention cut depends on when it was made).
//!
//! On a replica of a cluster a scavenge keeps the ids of the events it
//! removes (`record::FLAG_REMOVED`), so the log has no holes: a record
//! whose events are removed is sent as ids only (`LogBatch::removed`), as
//! the scavenge would keep it, whether or not one ran, and written so
//! (no read returns it). The copy then refuses the same reused ids as the
//! original, and never receives the bytes of an erased stream.

use logbook_protocol::lifecycle::meta_target;
use logbook_protocol::{ExpectedVersion, NewEvent, StreamName};

use crate::Store;
use crate::error::{AppendError, StorageError};
use crate::read::Visit;
use crate::scavenge::Plan;
use crate::store::RequestKind;

/// One record of the log as it was written: an appended batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogBatch {
    /// Its stream.
    pub stream: String,
    /// The position of its first event.
    pub first_position: u64,
    /// The version of its first event.
    pub first_version: u64,
    /// Its commit time.
    pub timestamp_us: i64,
    /// Its events.
    pub events: Vec<NewEvent>,
    /// Its events were removed: they are ids only (`record::FLAG_REMOVED`).
    pub removed: bool,
}

impl LogBatch {
    /// Where the next record starts.
    pub fn end_position(&self) -> u64 {
        self.first_position + self.events.len() as u64
    }
}

fn copy_refused(what: impl std::fmt::Display) -> StorageError {
    StorageError::Internal(format!("a record copied from another replica: {what}"))
}

impl Store {
    /// The records holding positions `from..to` (`to` past the head reads
    /// to the head), from the one starting at `from`, as many as fit in
    /// `max_bytes` (at least one). `from` must be where
    /// a record starts (the head of a replica holding a prefix of this
    /// log is). Reads the disk: call it where blocking is fine.
    pub fn read_batches(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<LogBatch>, StorageError> {
        let shared = self.shared();
        let to = to.min(shared.head());
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let segs = std::sync::Arc::clone(&shared.segments.read());
        let now = shared.removal_now_us();
        let mut bytes = 0usize;
        let mut next = from;
        shared.scan_forward(&segs, from, to, |loc, skip| {
            let rec = loc.record;
            if skip != 0 || rec.first_position != next {
                return Err(StorageError::Internal(format!(
                    "position {next} is not where a record of this log starts (the record there starts at {})",
                    rec.first_position
                )));
            }
            // Whole records only, and past `max_bytes` only the first (a
            // reply of several then stays within the budget).
            if rec.end_position() > to || (!out.is_empty() && bytes + rec.len() > max_bytes) {
                return Ok(Visit::Stop);
            }
            // As a scavenge here would keep it (on one server, as it is).
            let plan = if rec.is_removed() {
                Plan::Stub
            } else if shared.config.keep_removed_ids {
                shared.plan(rec, now)
            } else {
                Plan::Keep
            };
            let removed = plan == Plan::Stub;
            let events = crate::scavenge::rewritten(loc, plan)?;
            bytes += rec.len();
            next = rec.end_position();
            out.push(LogBatch {
                stream: rec.stream.as_str().to_owned(),
                first_position: rec.first_position,
                first_version: rec.first_version,
                timestamp_us: rec.timestamp_us,
                events,
                removed,
            });
            Ok(Visit::Continue)
        })?;
        Ok(out)
    }

    /// The first range of positions below the head that no record holds
    /// (a scavenge on a single server drops what it removes; a replica of
    /// a cluster keeps ids and never leaves one), or `None`: the whole log
    /// can be copied with [`Store::read_batches`]. Reads every record's
    /// header: call it where blocking is fine.
    pub fn first_gap(&self) -> Result<Option<(u64, u64)>, StorageError> {
        let shared = self.shared();
        let head = shared.head();
        let segs = std::sync::Arc::clone(&shared.segments.read());
        let mut next = 0;
        let mut gap = None;
        shared.scan_forward(&segs, 0, head, |loc, _| {
            let rec = loc.record;
            if rec.first_position != next {
                gap = Some((next, rec.first_position));
                return Ok(Visit::Stop);
            }
            next = rec.end_position();
            Ok(Visit::Continue)
        })?;
        if gap.is_none() && next < head {
            gap = Some((next, head));
        }
        Ok(gap)
    }

    /// Writes `batches`, records read from another replica's log with
    /// [`Store::read_batches`], at the head: each must take the position
    /// and version it holds there (the first one starting at this store's
    /// head), and is refused otherwise, with every later one (the logs
    /// differ). Returns once all of them are durable, with the new head.
    pub async fn ingest(&self, batches: Vec<LogBatch>) -> Result<u64, StorageError> {
        let mut pending = Vec::with_capacity(batches.len());
        for b in batches {
            let stream = StreamName::new(b.stream.clone())
                .map_err(|e| copy_refused(format_args!("stream {:?}: {e}", b.stream)))?;
            // Removed events are ids and content hashes only: one that
            // holds more is not what a replica sends.
            if b.removed && !b.events.iter().all(crate::record::is_removed_event) {
                return Err(copy_refused(format_args!(
                    "the record at position {} is flagged removed but holds event content",
                    b.first_position
                )));
            }
            // A removed state of a metadata stream is not the stream's
            // state (a later one is).
            let (op, kind) = match meta_target(stream.as_str()) {
                _ if b.removed => (None, RequestKind::Removed),
                None => (None, RequestKind::Append),
                Some(target) => (Some(self.restore_op(target, &b)?), RequestKind::Append),
            };
            // An erase's tombstone: the stream's events this replica holds
            // already are erased from its files too, as when it applies the
            // erase itself (`LifecycleChange::Erase`).
            let erased = match &op {
                Some(crate::lifecycle::Op {
                    target,
                    kind: crate::lifecycle::OpKind::Restore(state),
                    ..
                }) if state.erased => Some(target.as_str().to_owned()),
                _ => None,
            };
            let at = (b.first_position, b.first_version);
            let expected_end = b.end_position();
            let (mut req, rx, tx) = self
                .request(&stream, ExpectedVersion::Any, b.events, None, op, kind)
                .map_err(|e| copy_refused(format_args!("{e}")))?;
            req.at = Some(b.timestamp_us);
            req.ingest = Some(at);
            if let Some(target) = erased {
                self.owe_erasure(&target)?;
                req.seal_after = true;
            }
            let queued = self
                .enqueue((req, rx, tx))
                .await
                .map_err(|e| copy_refused(format_args!("{e}")))?;
            pending.push((at, expected_end, queued));
        }
        let mut head = self.head().0;
        for ((position, _), end, queued) in pending {
            match queued.await {
                Ok(r) if r.first_position.0 == position && r.last_position.0 + 1 == end => {
                    head = end;
                }
                Ok(r) => {
                    return Err(copy_refused(format_args!(
                        "it belongs at position {position}, but this store holds its events at {} already: the logs differ",
                        r.first_position.0
                    )));
                }
                Err(AppendError::Storage(e)) => return Err(e),
                Err(e) => return Err(copy_refused(e)),
            }
        }
        Ok(head)
    }

    /// The lifecycle state a copied record of metadata stream `$$target`
    /// records, as the operation that writes it as it is.
    fn restore_op(
        &self,
        target: &str,
        batch: &LogBatch,
    ) -> Result<crate::lifecycle::Op, StorageError> {
        let [event] = batch.events.as_slice() else {
            return Err(copy_refused(format_args!(
                "{} holds {} events; a lifecycle state is one",
                batch.stream,
                batch.events.len()
            )));
        };
        let state =
            crate::lifecycle::recorded_state(target, event.event_type.as_str(), &event.data)
                .ok_or_else(|| {
                    copy_refused(format_args!(
                        "the event of {} at position {} is not a lifecycle state",
                        batch.stream, batch.first_position
                    ))
                })?;
        let target = StreamName::new(target.to_owned())
            .map_err(|e| copy_refused(format_args!("stream {target:?}: {e}")))?;
        Ok(crate::lifecycle::Op {
            target_hash: self.shared().hasher.hash(&target),
            target,
            kind: crate::lifecycle::OpKind::Restore(state),
        })
    }
}
