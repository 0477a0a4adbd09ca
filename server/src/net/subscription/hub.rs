//! The hub: the registry of live subscriptions, the live dispatcher, the
//! handover of a subscription from history to live, and its end.
//!
//! The handover invariant (the module docs give the whole picture): `next`
//! moves only under the **gate**, an async lock held by the dispatcher for
//! each batch it reads and delivers ([`Hub::dispatch_to`]) and by a
//! subscription going live for its last short read and its registration
//! ([`Hub::go_live`]); so while either holds it, `next` stands still and
//! each sees every event before it delivered to the live set. The
//! **registry** lock, which connection tasks also take (to end a
//! subscription), is held only for work in memory: delivering a batch
//! already read into outboxes, adding or removing a subscription. No read
//! of the log, and no wait, happens under it. [`Hub::end`] holds it, and
//! then the subscription's state lock, while it takes a subscription out,
//! so that no push follows. Each live subscription is delivered only
//! events at or after its own cursor, so no event is sent twice or skipped.
//!
//! Memory: the dispatcher reads each batch once (at most `READ_BYTES` and
//! one event) and copies it into every live subscription's outbox only
//! within room taken on the server's outbox budget; a subscription that
//! gets no room falls back to catching up, which waits for room.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use logbook_protocol::{Direction, ErrorCode, LogPosition, Push, RecordedEvent};
use parking_lot::Mutex;

use super::catchup::Sub;
use super::fanout::FanOut;
use super::{READ_BATCH, READ_BYTES};
use crate::net::NetStats;
use crate::net::reads::ReadPool;
use logbook_storage::{ReadError, ReadLimit, Store};

#[derive(Debug, Default)]
struct Registry {
    /// Next position the dispatcher will deliver; everything before it has
    /// been delivered to every live subscription. Moved only under the
    /// gate.
    next: u64,
    /// By subscription id.
    live: HashMap<u64, Arc<Sub>>,
}

/// The subscriptions of a server, and the live dispatcher.
#[derive(Debug)]
pub(crate) struct Hub {
    pub(super) store: Store,
    registry: Mutex<Registry>,
    /// See the module docs.
    gate: tokio::sync::Mutex<()>,
    pub(super) ids: AtomicU64,
    pub(super) stats: Arc<NetStats>,
    /// Frame limit of every connection (for shared pushes).
    pub(super) max_frame: u32,
    /// Where reads of the log run.
    pub(super) reads: Arc<ReadPool>,
}

impl Hub {
    pub(crate) fn new(
        store: Store,
        stats: Arc<NetStats>,
        max_frame: u32,
        reads: Arc<ReadPool>,
    ) -> Arc<Hub> {
        let next = store.head().0;
        Arc::new(Hub {
            max_frame,
            store,
            registry: Mutex::new(Registry {
                next,
                live: HashMap::new(),
            }),
            gate: tokio::sync::Mutex::new(()),
            ids: AtomicU64::new(1),
            stats,
            reads,
        })
    }

    /// The dispatcher: delivers each new durable range to every live
    /// subscription, until `stop` fires.
    pub(crate) async fn dispatch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut head = self.store.watch_head();
        let mut scratch = Vec::new();
        loop {
            let target = *head.borrow_and_update();
            self.dispatch_to(target, &mut scratch).await;
            tokio::select! {
                r = head.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    }

    /// Reads up to `n` live events of the global log from `from` (fewer if
    /// the byte budget cuts it short) in the reader pool, and how far it
    /// scanned (exclusive). The dispatcher's reads are a request's (live
    /// delivery waits for no catch-up); a catch-up step's already hold a
    /// slot of the subscriptions' share.
    pub(super) async fn read_range(
        &self,
        from: u64,
        events: usize,
        bytes: usize,
    ) -> Result<(Vec<RecordedEvent>, u64), ReadError> {
        let store = self.store.clone();
        let limit = ReadLimit { events, bytes };
        self.reads
            .run(move || {
                store
                    .read_all(Some(LogPosition(from)), Direction::Forward, limit)
                    .map(|s| (s.events, s.through.0))
            })
            .await
    }

    async fn dispatch_to(&self, head: u64, scratch: &mut Vec<RecordedEvent>) {
        loop {
            let _gate = self.gate.lock().await;
            let next = {
                let mut reg = self.registry.lock();
                if reg.next >= head {
                    return;
                }
                if reg.live.is_empty() {
                    reg.next = head;
                    return;
                }
                reg.next
            };
            // Read outside the registry lock: `next` cannot move (the gate),
            // and subscriptions that go live meanwhile are at or past it.
            let want = (head - next).min(READ_BATCH) as usize;
            let (mut events, through) = match self.read_range(next, want, READ_BYTES).await {
                Ok(read) => read,
                Err(e) => {
                    // Live subscribers fall back to their own tasks, which
                    // read the same range again and report the error if
                    // it persists. They fell behind like any other, and
                    // say so: the client hears `fell_behind` now and
                    // `caught_up` once they are live again.
                    tracing::error!(error = %e, "live delivery could not read the log");
                    let mut reg = self.registry.lock();
                    for (_, sub) in reg.live.drain() {
                        sub.fall_behind(&mut sub.state.lock());
                        sub.wake.notify_one();
                    }
                    return;
                }
            };
            // Up to the head at most: a later head is the next call's.
            events.truncate(events.partition_point(|e| e.position.0 < head));
            let end = through.min(head);
            if end <= next {
                return;
            }
            let mut demoted = Vec::new();
            let mut fan_out = FanOut::new(&events, self.max_frame);
            let mut reg = self.registry.lock();
            reg.live.retain(|_, sub| {
                let mut st = sub.state.lock();
                // Room for the whole batch on the outbox budget, or back to
                // the log, which waits for room.
                let room = sub.out.try_room(fan_out.bytes_from(st.cursor), usize::MAX);
                let stopped = room.is_none()
                    || sub.deliver(&mut st, &events, end, scratch, Some(&mut fan_out));
                drop(room);
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
            reg.live.remove(&sub.id);
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
    /// runs concurrently), the gap is delivered from here: most of it read
    /// before taking the gate, the rest (what was dispatched during that
    /// read) under the gate, which holds the dispatcher, not the registry:
    /// so the handover always completes however fast the log grows, and
    /// connection tasks never wait for the disk.
    /// What it pushes stays within `room` (the caller's), half for each
    /// read; under the gate it never waits for room (the dispatcher waits
    /// on the gate), and what does not fit is read on later.
    pub(super) async fn go_live(
        &self,
        sub: &Arc<Sub>,
        scratch: &mut Vec<RecordedEvent>,
        room: &mut crate::net::outbox::Room,
    ) -> Result<(), ReadError> {
        let half = (room.bytes() / 2).max(1);
        let (cursor, next) = {
            let reg = self.registry.lock();
            let cursor = sub.state.lock().cursor;
            (cursor, reg.next)
        };
        if next.saturating_sub(cursor) > READ_BATCH {
            // Too far behind for one read: go on reading the log.
            return Ok(());
        }
        let (mut gap, gap_through) = if cursor < next {
            self.read_gap(cursor, next, half).await?
        } else {
            (Vec::new(), cursor)
        };
        let gap_through = fit_through(room, &mut gap, gap_through);
        let _gate = self.gate.lock().await;
        let until = self.registry.lock().next;
        // Committed while the gap was read: a short read, under the gate.
        let read_to = gap_through;
        let (mut rest, rest_through) = if read_to < until && until - read_to <= READ_BATCH {
            self.read_gap(read_to, until, half).await?
        } else {
            (Vec::new(), read_to)
        };
        let rest_through = fit_through(room, &mut rest, rest_through);
        let mut reg = self.registry.lock();
        let mut st = sub.state.lock();
        if sub.ended.load(Ordering::Acquire) {
            return Ok(());
        }
        for (part, through) in [(&gap, gap_through), (&rest, rest_through)] {
            if st.cursor >= until {
                break;
            }
            let part = part.get(..part.partition_point(|e| e.position.0 < until));
            if sub.deliver(
                &mut st,
                part.unwrap_or_default(),
                through.min(until),
                scratch,
                None,
            ) {
                // Out of credit: read on once it comes.
                return Ok(());
            }
        }
        if st.cursor < until {
            // Cut short by the byte budget, or too far: read on.
            return Ok(());
        }
        sub.announce_live(&mut st);
        drop(st);
        reg.live.insert(sub.id, Arc::clone(sub));
        Ok(())
    }

    /// The live events at positions `from..until` (fewer if the byte
    /// budget cuts the read short), and how far the read scanned.
    async fn read_gap(
        &self,
        from: u64,
        until: u64,
        bytes: usize,
    ) -> Result<(Vec<RecordedEvent>, u64), ReadError> {
        let (mut events, through) = self
            .read_range(from, (until - from) as usize, bytes)
            .await?;
        events.truncate(events.partition_point(|e| e.position.0 < until));
        Ok((events, through.min(until)))
    }
}

/// Fits `events` (scanned up to `through`) in `room`; returns how far what
/// is kept covers: up to the first event left out, if any.
fn fit_through(
    room: &mut crate::net::outbox::Room,
    events: &mut Vec<RecordedEvent>,
    through: u64,
) -> u64 {
    match room.fit(events) {
        Some(left) => left.position.0,
        None => through,
    }
}
