//! The hub: the registry of live subscriptions, the live dispatcher, the
//! handover of a subscription from history to live, and its end.
//!
//! The handover invariant (the module docs give the whole picture): the
//! registry lock covers both sides. [`Hub::dispatch_to`] holds it while it
//! delivers a range `[next, end)` to every live subscription and then sets
//! `next = end`; [`Hub::go_live`] holds it while it adds a catching-up
//! subscription to `live`, which it does only once the subscription's
//! cursor has reached `next` (delivering a short gap itself if the
//! dispatcher has already passed the cursor); and [`Hub::end`] holds it,
//! and then the subscription's state lock, while it takes a subscription
//! out, so that no push follows. Each live
//! subscription is delivered only events at or after its own cursor, so no
//! event is sent twice or skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use logbook_protocol::{Direction, ErrorCode, LogPosition, Push, RecordedEvent};
use parking_lot::Mutex;

use super::catchup::Sub;
use super::fanout::FanOut;
use super::{READ_BATCH, READ_BYTES};
use crate::net::NetStats;
use logbook_storage::{ReadError, ReadLimit, Store};

#[derive(Debug, Default)]
struct Registry {
    /// Next position the dispatcher will deliver; everything before it has
    /// been delivered to every live subscription.
    next: u64,
    live: Vec<Arc<Sub>>,
}

/// The subscriptions of a server, and the live dispatcher.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(super) store: Store,
    registry: Mutex<Registry>,
    pub(super) ids: AtomicU64,
    pub(super) stats: Arc<NetStats>,
    /// Frame limit of every connection (for shared pushes).
    max_frame: u32,
}

impl Hub {
    pub(crate) fn new(store: Store, stats: Arc<NetStats>, max_frame: u32) -> Arc<Hub> {
        let next = store.head().0;
        Arc::new(Hub {
            max_frame,
            store,
            registry: Mutex::new(Registry {
                next,
                live: Vec::new(),
            }),
            ids: AtomicU64::new(1),
            stats,
        })
    }

    /// The dispatcher: delivers each new durable range to every live
    /// subscription, until `stop` fires.
    pub(crate) async fn dispatch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut head = self.store.watch_head();
        let mut scratch = Vec::new();
        loop {
            let target = *head.borrow_and_update();
            self.dispatch_to(target, &mut scratch);
            tokio::select! {
                r = head.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }

    fn dispatch_to(&self, head: u64, scratch: &mut Vec<RecordedEvent>) {
        loop {
            let mut reg = self.registry.lock();
            if reg.next >= head {
                return;
            }
            if reg.live.is_empty() {
                reg.next = head;
                return;
            }
            let want = ReadLimit {
                events: (head - reg.next).min(READ_BATCH) as usize,
                bytes: READ_BYTES,
            };
            let events =
                match self
                    .store
                    .read_all(Some(LogPosition(reg.next)), Direction::Forward, want)
                {
                    Ok(slice) => slice.events,
                    Err(e) => {
                        // Live subscribers fall back to their own tasks, which
                        // read the same range again and report the error if
                        // it persists. They fell behind like any other, and
                        // say so: the client hears `fell_behind` now and
                        // `caught_up` once they are live again.
                        tracing::error!(error = %e, "live delivery could not read the log");
                        for sub in reg.live.drain(..) {
                            sub.fall_behind(&mut sub.state.lock());
                            sub.wake.notify_one();
                        }
                        return;
                    }
                };
            let Some(last) = events.last() else { return };
            let end = last.position.0 + 1;
            let mut demoted = Vec::new();
            let mut fan_out = FanOut::new(&events, self.max_frame);
            reg.live.retain(|sub| {
                let mut st = sub.state.lock();
                let full = sub.out.is_full();
                let stopped = full || sub.deliver(&mut st, &events, scratch, Some(&mut fan_out));
                if stopped && !sub.ended.load(Ordering::Relaxed) {
                    // Back to the log; say so before anything else is sent.
                    sub.fall_behind(&mut st);
                    demoted.push(Arc::clone(sub));
                    false
                } else {
                    true
                }
            });
            reg.next = end;
            drop(reg);
            for sub in demoted {
                sub.wake.notify_one();
            }
        }
    }

    /// Ends a subscription: no push follows once this returns. With a
    /// reason, the client is told with an `ended` push.
    pub(crate) fn end(&self, sub: &Sub, reason: Option<(ErrorCode, &str)>) {
        if sub.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            // Under the registry lock the dispatcher is not delivering.
            let mut reg = self.registry.lock();
            reg.live.retain(|s| s.id != sub.id);
            // And under the state lock the catch-up task is not pushing.
            let _st = sub.state.lock();
            if let Some((code, message)) = reason {
                sub.push(&Push::Ended {
                    code,
                    message: message.to_owned(),
                });
            }
        }
        self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.stats.untrack_subscription(sub.id);
        sub.wake.notify_one();
    }

    /// The handover from history to live, for a catch-up step that found
    /// nothing more in the log.
    ///
    /// If the dispatcher has already passed the subscription's cursor (it
    /// runs concurrently), the gap is delivered from here. The gap is read
    /// *before* taking the registry lock: a read under it would stall the
    /// dispatcher, and every other handover, for as long as the disk takes.
    /// Only what was committed during that read is read under the lock, so
    /// that the handover always completes however fast the log grows.
    pub(super) fn go_live(
        &self,
        sub: &Arc<Sub>,
        scratch: &mut Vec<RecordedEvent>,
    ) -> Result<(), ReadError> {
        let (cursor, next) = {
            let reg = self.registry.lock();
            let cursor = sub.state.lock().cursor;
            (cursor, reg.next)
        };
        if next.saturating_sub(cursor) > READ_BATCH {
            // Too far behind for one read: go on reading the log.
            return Ok(());
        }
        let gap = if cursor < next {
            self.read_gap(cursor, next)?
        } else {
            Vec::new()
        };
        let mut reg = self.registry.lock();
        let mut st = sub.state.lock();
        if sub.ended.load(Ordering::Acquire) {
            return Ok(());
        }
        if st.cursor < reg.next {
            let until = reg.next;
            let gap = gap.get(..gap.partition_point(|e| e.position.0 < until));
            if sub.deliver(&mut st, gap.unwrap_or_default(), scratch, None) {
                // Out of credit: read on once it comes.
                return Ok(());
            }
            if st.cursor < until {
                // Committed while the gap was read: a short read.
                if until - st.cursor > READ_BATCH {
                    return Ok(());
                }
                let rest = self.read_gap(st.cursor, until)?;
                if sub.deliver(&mut st, &rest, scratch, None) || st.cursor < until {
                    // Out of credit or room, or the read was cut short.
                    return Ok(());
                }
            }
        }
        sub.announce_live(&mut st);
        drop(st);
        reg.live.push(Arc::clone(sub));
        Ok(())
    }

    /// The events at positions `from..until` (fewer if the byte budget
    /// cuts the read short).
    fn read_gap(&self, from: u64, until: u64) -> Result<Vec<RecordedEvent>, ReadError> {
        let limit = ReadLimit {
            events: (until - from) as usize,
            bytes: READ_BYTES,
        };
        let mut events = self
            .store
            .read_all(Some(LogPosition(from)), Direction::Forward, limit)?
            .events;
        events.truncate(events.partition_point(|e| e.position.0 < until));
        Ok(events)
    }
}
