//! Fan-out of a live batch: the dispatcher reads each new range of the log
//! once, and the pushes of every live subscription that wants the same
//! events are encoded once and copied to each connection's outbox.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use logbook_protocol::{Push, RecordedEvent, SharedFrame};

use super::catchup::Sub;

/// One batch of live events being handed to every live subscription:
/// pushes for the same range of it are encoded once.
pub(crate) struct FanOut<'a> {
    pub(super) events: &'a [RecordedEvent],
    /// `prefix[i]`: wire bytes of `events[..i]`.
    prefix: Vec<usize>,
    /// By range and `from` (subscriptions whose frames so far end at the
    /// same place share them).
    frames: HashMap<(usize, usize, u64), SharedFrame>,
    /// Bytes of the frames in `frames`.
    cached: usize,
    max_frame: u32,
}

/// Most bytes of encoded frames one batch keeps for reuse: subscriptions
/// wanting many different ranges of it (different credits or cursors)
/// get their pushes encoded straight into their outboxes past it, so the
/// cache never holds more than a few copies of the batch.
const MAX_CACHED: usize = 4 << 20;

impl<'a> FanOut<'a> {
    pub(super) fn new(events: &'a [RecordedEvent], max_frame: u32) -> FanOut<'a> {
        let mut prefix = Vec::with_capacity(events.len() + 1);
        let mut sum = 0;
        prefix.push(0);
        for e in events {
            sum += logbook_protocol::msg::recorded_event_wire_len(e);
            prefix.push(sum);
        }
        FanOut {
            events,
            prefix,
            frames: HashMap::new(),
            cached: 0,
            max_frame,
        }
    }

    /// An upper bound on the bytes a subscription whose cursor is `cursor`
    /// can be sent from this batch: the wire bytes of its events at or
    /// after the cursor, and room for frame headers and a checkpoint.
    pub(super) fn bytes_from(&self, cursor: u64) -> usize {
        let i = self.events.partition_point(|e| e.position.0 < cursor);
        let total = self.prefix.last().copied().unwrap_or(0);
        let before = self.prefix.get(i).copied().unwrap_or(total);
        total - before + (4 << 10)
    }

    /// Writes `events[start..end]` as one push for `sub` covering the log
    /// from `from`, from a frame encoded once per range and `from`. False
    /// if the range does not fit one frame (the caller then splits it).
    pub(super) fn write(&mut self, sub: &Sub, start: usize, end: usize, from: u64) -> bool {
        let bytes = match (self.prefix.get(end), self.prefix.get(start)) {
            (Some(e), Some(s)) => e - s,
            _ => return false,
        };
        let budget = (self.max_frame as usize).saturating_sub(
            logbook_protocol::msg::EVENTS_MESSAGE_OVERHEAD + logbook_protocol::HEADER_LEN,
        );
        if bytes > budget || sub.max_frame != self.max_frame {
            return false;
        }
        let frame = match self.frames.entry((start, end, from)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(_) if self.cached + bytes > MAX_CACHED => {
                return false;
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                self.cached += bytes;
                let mut b = BytesMut::new();
                let slice = self.events.get(start..end).unwrap_or_default();
                if Push::encode_events(&mut b, 0, slice, Some(from), self.max_frame).is_err() {
                    return false;
                }
                v.insert(SharedFrame::new(b.freeze()))
            }
        };
        let id = sub.corr_id;
        sub.out.push(|b| frame.write_to(b, id));
        sub.stats
            .events_pushed
            .fetch_add((end - start) as u64, Ordering::Relaxed);
        true
    }
}
