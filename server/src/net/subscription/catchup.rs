//! One subscription: its state, the delivery of a batch of events within
//! its credit (shared by its catch-up task and the live dispatcher), and
//! its catch-up task, which reads the log until it can go live.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use logbook_protocol::{
    Direction, ErrorCode, LogPosition, Push, RecordedEvent, SubscribeFrom, SubscriptionTarget, Text,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::fanout::FanOut;
use super::filter::CompiledFilter;
use super::hub::Hub;
use super::{READ_BATCH, READ_BYTES};
use crate::net::NetStats;
use crate::net::outbox::Outbox;
use logbook_storage::ReadLimit;

/// What a subscription follows, in the form the server checks.
#[derive(Debug)]
pub(crate) enum Target {
    All { filter: Option<CompiledFilter> },
    Stream { name: Text },
}

#[derive(Debug)]
pub(super) struct State {
    /// Events the client still allows.
    credit: u64,
    /// Next global position to deliver (or scan).
    pub(super) cursor: u64,
    /// Stream subscriptions: the last version delivered.
    last_version: Option<u64>,
    /// Filtered subscriptions: events scanned since the last checkpoint.
    scanned: u64,
    /// Delivered by the dispatcher.
    pub(super) live: bool,
    /// Whether a caught-up push is due when it next goes live.
    pub(super) announce: bool,
}

/// One subscription.
#[derive(Debug)]
pub(crate) struct Sub {
    pub(super) id: u64,
    pub(super) corr_id: u32,
    pub(super) out: Arc<Outbox>,
    pub(super) max_frame: u32,
    target: Target,
    pub(super) state: Mutex<State>,
    /// Wakes the catch-up task: credit arrived, or it was sent back to
    /// catching up, or it ended.
    pub(super) wake: Notify,
    pub(super) ended: AtomicBool,
    /// The server's figures: events pushed.
    pub(super) stats: Arc<NetStats>,
    /// A copy of `state.cursor`, readable without the lock, for the lag
    /// gauge ([`NetStats::subscription_lag`]).
    position: Arc<AtomicU64>,
}

impl Sub {
    /// Adds credit (a `Credit` request).
    pub(crate) fn grant(&self, events: u32) {
        let mut st = self.state.lock();
        st.credit = st.credit.saturating_add(u64::from(events));
        drop(st);
        self.wake.notify_one();
    }

    pub(super) fn push(&self, p: &Push) {
        let (id, max) = (self.corr_id, self.max_frame);
        if let Err(e) = self.out.push(|b| p.encode(b, id, max)) {
            tracing::warn!(subscription = id, error = %e, "could not encode a push");
        }
    }

    fn push_events(&self, events: &[RecordedEvent]) {
        let (id, max) = (self.corr_id, self.max_frame);
        self.stats
            .events_pushed
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        // Split so that each push fits in a frame.
        let budget = (max as usize).saturating_sub(
            logbook_protocol::msg::EVENTS_MESSAGE_OVERHEAD + logbook_protocol::HEADER_LEN,
        );
        let mut start = 0;
        while start < events.len() {
            let mut used = 0;
            let mut end = start;
            while let Some(e) = events.get(end) {
                let n = logbook_protocol::msg::recorded_event_wire_len(e);
                if end > start && used + n > budget {
                    break;
                }
                used += n;
                end += 1;
            }
            let chunk = events.get(start..end).unwrap_or_default();
            if let Err(e) = self.out.push(|b| Push::encode_events(b, id, chunk, max)) {
                tracing::warn!(subscription = id, error = %e, "could not encode an events push");
            }
            start = end;
        }
    }

    /// Pushes the pending matches of a filtered or stream delivery (see
    /// `deliver_events`) and charges them to the credit.
    fn flush_matches(
        &self,
        st: &mut State,
        events: &[RecordedEvent],
        run: &mut Option<(usize, usize)>,
        scratch: &mut Vec<RecordedEvent>,
    ) {
        if let Some((a, b)) = run.take() {
            st.credit -= (b - a) as u64;
            self.push_events(events.get(a..b).unwrap_or_default());
        } else if !scratch.is_empty() {
            st.credit -= scratch.len() as u64;
            self.push_events(scratch);
            scratch.clear();
        }
    }

    /// Delivers `events` (consecutive positions, starting at or before the
    /// cursor) within credit. Returns how far the cursor got and whether
    /// credit or room ran out before the end.
    pub(super) fn deliver(
        &self,
        st: &mut State,
        events: &[RecordedEvent],
        scratch: &mut Vec<RecordedEvent>,
        fan_out: Option<&mut FanOut<'_>>,
    ) -> bool {
        let stopped = self.deliver_events(st, events, scratch, fan_out);
        self.position.store(st.cursor, Ordering::Relaxed);
        stopped
    }

    fn deliver_events(
        &self,
        st: &mut State,
        events: &[RecordedEvent],
        scratch: &mut Vec<RecordedEvent>,
        fan_out: Option<&mut FanOut<'_>>,
    ) -> bool {
        let skip = events.partition_point(|e| e.position.0 < st.cursor);
        let all = events;
        let events = events.get(skip..).unwrap_or_default();
        match &self.target {
            Target::All { filter: None } => {
                let n = (st.credit.min(events.len() as u64)) as usize;
                let sent = events.get(..n).unwrap_or_default();
                if !sent.is_empty() {
                    // Live subscriptions usually want the very same events:
                    // encode them once and copy the frame to each.
                    let shared = fan_out
                        .filter(|f| std::ptr::eq(f.events, all))
                        .is_some_and(|f| f.write(self, skip, skip + n));
                    if !shared {
                        self.push_events(sent);
                    }
                    st.credit -= n as u64;
                }
                if let Some(last) = sent.last() {
                    st.cursor = last.position.0 + 1;
                }
                n < events.len()
            }
            Target::All { filter: Some(f) } => {
                // Matches not pushed yet: while they are consecutive, the
                // run `events[run]` (pushed as it is, nothing copied); once
                // a gap interrupts them, copies in `scratch`.
                scratch.clear();
                let mut run: Option<(usize, usize)> = None;
                let mut stopped = false;
                for (i, e) in events.iter().enumerate() {
                    if f.matches(e) {
                        let pending = run.map_or(0, |(a, b)| b - a) + scratch.len();
                        if pending as u64 >= st.credit {
                            stopped = true;
                            break;
                        }
                        match &mut run {
                            _ if !scratch.is_empty() => scratch.push(e.clone()),
                            None => run = Some((i, i + 1)),
                            Some((_, end)) if *end == i => *end = i + 1,
                            Some((a, b)) => {
                                scratch
                                    .extend(events.get(*a..*b).unwrap_or_default().iter().cloned());
                                scratch.push(e.clone());
                                run = None;
                            }
                        }
                        st.scanned = 0;
                    } else {
                        st.scanned += 1;
                    }
                    st.cursor = e.position.0 + 1;
                    if st.scanned >= f.checkpoint_interval {
                        // Flush matches first: the checkpoint promises
                        // everything before it was delivered.
                        self.flush_matches(st, events, &mut run, scratch);
                        self.push(&Push::Checkpoint {
                            position: LogPosition(st.cursor),
                        });
                        st.scanned = 0;
                    }
                }
                self.flush_matches(st, events, &mut run, scratch);
                stopped
            }
            Target::Stream { name } => {
                scratch.clear();
                let mut stopped = false;
                for e in events {
                    if e.stream == *name && st.last_version.is_none_or(|v| e.version.0 > v) {
                        if scratch.len() as u64 >= st.credit {
                            stopped = true;
                            break;
                        }
                        st.last_version = Some(e.version.0);
                        scratch.push(e.clone());
                    }
                    st.cursor = e.position.0 + 1;
                }
                self.flush_matches(st, events, &mut None, scratch);
                stopped
            }
        }
    }
}

impl Hub {
    /// Starts a subscription; the caller has sent `SubscribeOk` with `head`,
    /// which is where a subscription from `End` begins.
    /// `request`'s filter, if any, is `filter`, compiled.
    pub(crate) fn start(
        self: &Arc<Self>,
        corr_id: u32,
        request: logbook_protocol::Subscribe,
        filter: Option<CompiledFilter>,
        out: Arc<Outbox>,
        max_frame: u32,
        head: u64,
    ) -> Arc<Sub> {
        let initial_credit = request.initial_credit;
        let (target, cursor, last_version) = match request.target {
            SubscriptionTarget::All { from, .. } => {
                let cursor = match from {
                    SubscribeFrom::Start => 0,
                    SubscribeFrom::After(p) => p.0.saturating_add(1),
                    SubscribeFrom::End => head,
                };
                (Target::All { filter }, cursor, None)
            }
            SubscriptionTarget::Stream { stream, from } => {
                let last = match from {
                    SubscribeFrom::Start => None,
                    SubscribeFrom::After(v) => Some(v.0),
                    SubscribeFrom::End => self
                        .store
                        .stream_version(&stream)
                        .ok()
                        .flatten()
                        .map(|v| v.0),
                };
                let cursor = if matches!(from, SubscribeFrom::End) {
                    head
                } else {
                    0
                };
                (Target::Stream { name: stream }, cursor, last)
            }
        };
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let sub = Arc::new(Sub {
            id,
            corr_id,
            out,
            max_frame,
            target,
            state: Mutex::new(State {
                credit: u64::from(initial_credit),
                cursor,
                last_version,
                scanned: 0,
                live: false,
                announce: true,
            }),
            wake: Notify::new(),
            ended: AtomicBool::new(false),
            stats: Arc::clone(&self.stats),
            position: self.stats.track_subscription(id, cursor),
        });
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        let (hub, s) = (Arc::clone(self), Arc::clone(&sub));
        tokio::spawn(async move { hub.catch_up(s).await });
        sub
    }

    /// The catch-up task of one subscription.
    async fn catch_up(self: Arc<Self>, sub: Arc<Sub>) {
        let mut scratch = Vec::new();
        loop {
            if sub.ended.load(Ordering::Acquire) {
                return;
            }
            let waiting = {
                let st = sub.state.lock();
                st.live || st.credit == 0
            };
            if waiting || sub.out.is_full() {
                // Wait for credit, a demotion, the end, or room to write.
                let wake = sub.wake.notified();
                tokio::pin!(wake);
                wake.as_mut().enable();
                let still = {
                    let st = sub.state.lock();
                    st.live || st.credit == 0
                };
                if sub.ended.load(Ordering::Acquire) {
                    return;
                }
                if still {
                    wake.await;
                } else if sub.out.is_full() {
                    tokio::select! {
                        () = wake => {}
                        () = sub.out.wait_drained() => {}
                    }
                }
                continue;
            }
            match self.step(&sub, &mut scratch) {
                Ok(()) => {}
                Err(message) => {
                    self.end(&sub, Some((ErrorCode::Corruption, &message)));
                    return;
                }
            }
            // Let other tasks run between steps of a long catch-up.
            tokio::task::yield_now().await;
        }
    }

    /// One catch-up step: read a batch from the log and deliver it, or go
    /// live if there is nothing new.
    fn step(&self, sub: &Arc<Sub>, scratch: &mut Vec<RecordedEvent>) -> Result<(), String> {
        let (cursor, last_version, credit) = {
            let st = sub.state.lock();
            (st.cursor, st.last_version, st.credit)
        };
        let want = credit.clamp(1, READ_BATCH) as usize;
        let head = self.store.head().0;
        let (events, exhausted) = match &sub.target {
            Target::All { filter } => {
                // Filtered subscriptions scan more than they send.
                let want = if filter.is_some() {
                    READ_BATCH as usize
                } else {
                    want
                };
                let slice = self
                    .store
                    .read_all(
                        Some(LogPosition(cursor)),
                        Direction::Forward,
                        ReadLimit {
                            events: want,
                            bytes: READ_BYTES,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                let exhausted = slice.next.is_none();
                (slice.events, exhausted)
            }
            Target::Stream { name } => {
                let from = last_version.map_or(0, |v| v + 1);
                let slice = self
                    .store
                    .read_stream(
                        name,
                        Some(logbook_protocol::StreamVersion(from)),
                        Direction::Forward,
                        ReadLimit {
                            events: want,
                            bytes: READ_BYTES,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                let exhausted = slice.next.is_none();
                (slice.events, exhausted)
            }
        };
        let mut st = sub.state.lock();
        if sub.ended.load(Ordering::Acquire) {
            return Ok(());
        }
        if !events.is_empty() {
            let stopped = sub.deliver(&mut st, &events, scratch, None);
            if let Target::Stream { .. } = sub.target {
                // A stream read covers the stream up to at least `head`.
                if exhausted && !stopped {
                    st.cursor = st.cursor.max(head);
                    sub.position.store(st.cursor, Ordering::Relaxed);
                }
            }
            if stopped || !exhausted {
                return Ok(());
            }
        } else if let Target::Stream { .. } = sub.target {
            st.cursor = st.cursor.max(head);
            sub.position.store(st.cursor, Ordering::Relaxed);
        }
        // Nothing more in the log right now: go live (`Hub::go_live`).
        drop(st);
        self.go_live(sub, scratch)
    }
}
