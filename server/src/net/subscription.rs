//! Catch-up subscriptions: history, then live, in order, exactly once.
//!
//! A subscription is in one of two modes, and exactly one party sends its
//! pushes at any time, so history and live can never disagree:
//!
//! - **Catching up**: its own task reads the log (the global log from its
//!   cursor, or its stream from its last version), within its credit. When
//!   a read finds nothing new, it asks the [`Hub`] to take it live.
//! - **Live**: the hub's single dispatcher task delivers it. On each new
//!   durable head the dispatcher reads the new events once, from the log,
//!   and hands the same reference-counted event buffers to every live
//!   subscription (no copy per subscriber), encoding each one's push into
//!   its connection's outbox. One task wakes per commit, not one per
//!   subscriber.
//!
//! The handover is exact because the hub's registry lock covers both sides:
//! the dispatcher holds it while delivering a range `[next, head)` and then
//! sets `next = head`; a catching-up subscription whose cursor is `c` goes
//! live under the same lock only if `c >= next` (else it reads on), and the
//! dispatcher delivers each live subscription only events at or after its
//! own cursor. Stream subscriptions also skip versions they already sent,
//! because their catch-up reads may run past the cursor.
//!
//! Flow control: the dispatcher never sends more than the subscription's
//! credit and never writes to a connection whose outbox is over its high
//! water mark. When either stops it, the subscription drops back to catching
//! up (with a `fell_behind` push) and its task resumes from the log when
//! credit and room return. Nothing is queued per subscriber beyond what sits
//! in its connection's outbox, so a slow consumer costs the server a bounded
//! amount of memory and never slows the writer or other subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::collections::HashMap;

use bytes::BytesMut;
use logbook_protocol::{
    Direction, ErrorCode, Filter, LogPosition, Push, RecordedEvent, SharedFrame, SubscribeFrom,
    SubscriptionTarget, Text,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::outbox::Outbox;
use logbook_storage::{ReadLimit, Store};

/// Events scanned between checkpoints of a filtered subscription when the
/// client leaves the interval to the server.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 1_000;
/// Most events read from the log per catch-up step or dispatch step.
const READ_BATCH: u64 = 2_000;
/// Most bytes read per step (an event past it may still be taken): with the
/// connection's high-water mark, this bounds the memory a subscriber costs.
const READ_BYTES: usize = 1 << 20;

/// What a subscription follows, in the form the server checks.
#[derive(Debug)]
pub(crate) enum Target {
    All { filter: Option<CompiledFilter> },
    Stream { name: Text },
}

/// A filter ready to test events.
#[derive(Debug)]
pub(crate) struct CompiledFilter {
    streams: Vec<String>,
    types: Vec<String>,
    stream_regex: Option<regex::Regex>,
    type_regex: Option<regex::Regex>,
    checkpoint_interval: u64,
}

/// Longest regular expression accepted in a filter.
pub(crate) const MAX_REGEX_LEN: usize = 1024;
/// Memory one compiled regular expression may take (the `regex` crate's
/// limits; matching is linear time whatever the pattern).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn compile(what: &str, pattern: Option<String>) -> Result<Option<regex::Regex>, String> {
    let Some(p) = pattern else {
        return Ok(None);
    };
    if p.len() > MAX_REGEX_LEN {
        return Err(format!(
            "{what} regex is {} bytes; at most {MAX_REGEX_LEN}",
            p.len()
        ));
    }
    regex::RegexBuilder::new(&p)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|e| format!("{what} regex: {e}"))
}

impl CompiledFilter {
    /// Compiles `f`; a bad or oversized regular expression is the error,
    /// for a `BadRequest` reply.
    pub(crate) fn new(f: Filter) -> Result<CompiledFilter, String> {
        Ok(CompiledFilter {
            checkpoint_interval: match f.checkpoint_interval {
                0 => DEFAULT_CHECKPOINT_INTERVAL,
                n => u64::from(n),
            },
            stream_regex: compile("stream", f.stream_regex)?,
            type_regex: compile("type", f.type_regex)?,
            streams: f.stream_prefixes,
            types: f.type_prefixes,
        })
    }

    fn matches(&self, e: &RecordedEvent) -> bool {
        (self.streams.is_empty()
            || self
                .streams
                .iter()
                .any(|p| e.stream.starts_with(p.as_str())))
            && (self.types.is_empty()
                || self
                    .types
                    .iter()
                    .any(|p| e.event_type.starts_with(p.as_str())))
            && self
                .stream_regex
                .as_ref()
                .is_none_or(|r| r.is_match(e.stream.as_str()))
            && self
                .type_regex
                .as_ref()
                .is_none_or(|r| r.is_match(e.event_type.as_str()))
    }
}

#[derive(Debug)]
struct State {
    /// Events the client still allows.
    credit: u64,
    /// Next global position to deliver (or scan).
    cursor: u64,
    /// Stream subscriptions: the last version delivered.
    last_version: Option<u64>,
    /// Filtered subscriptions: events scanned since the last checkpoint.
    scanned: u64,
    /// Delivered by the dispatcher.
    live: bool,
    /// Whether a caught-up push is due when it next goes live.
    announce: bool,
}

/// One subscription.
#[derive(Debug)]
pub(crate) struct Sub {
    id: u64,
    corr_id: u32,
    out: Arc<Outbox>,
    max_frame: u32,
    target: Target,
    state: Mutex<State>,
    /// Wakes the catch-up task: credit arrived, or it was sent back to
    /// catching up, or it ended.
    wake: Notify,
    ended: AtomicBool,
    /// The server's figures: events pushed.
    stats: Arc<super::NetStats>,
    /// A copy of `state.cursor`, readable without the lock, for the lag
    /// gauge ([`super::NetStats::subscription_lag`]).
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

    fn push(&self, p: &Push) {
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
    fn deliver(
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

/// One batch of live events being handed to every live subscription:
/// pushes for the same range of it are encoded once.
pub(crate) struct FanOut<'a> {
    events: &'a [RecordedEvent],
    /// `prefix[i]`: wire bytes of `events[..i]`.
    prefix: Vec<usize>,
    frames: HashMap<(usize, usize), SharedFrame>,
    max_frame: u32,
}

impl<'a> FanOut<'a> {
    fn new(events: &'a [RecordedEvent], max_frame: u32) -> FanOut<'a> {
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
            max_frame,
        }
    }

    /// Writes `events[start..end]` as one push for `sub`, from a frame
    /// encoded once per range. False if the range does not fit one frame
    /// (the caller then splits it).
    fn write(&mut self, sub: &Sub, start: usize, end: usize) -> bool {
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
        let frame = match self.frames.entry((start, end)) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let mut b = BytesMut::new();
                let slice = self.events.get(start..end).unwrap_or_default();
                if Push::encode_events(&mut b, 0, slice, self.max_frame).is_err() {
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
    store: Store,
    registry: Mutex<Registry>,
    ids: AtomicU64,
    stats: Arc<super::NetStats>,
    /// Frame limit of every connection (for shared pushes).
    max_frame: u32,
}

impl Hub {
    pub(crate) fn new(store: Store, stats: Arc<super::NetStats>, max_frame: u32) -> Arc<Hub> {
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
                        // will meet (and report) the same error.
                        tracing::error!(error = %e, "live delivery could not read the log");
                        for sub in reg.live.drain(..) {
                            sub.state.lock().live = false;
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
                    st.live = false;
                    st.announce = true;
                    sub.push(&Push::FellBehind {
                        position: LogPosition(st.cursor),
                    });
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
        // Nothing more in the log right now: go live. Under the registry
        // lock the dispatcher is idle and `next` is where it will resume; if
        // it already passed our cursor (it runs concurrently), deliver the
        // gap from here, so that the handover always completes.
        drop(st);
        let mut reg = self.registry.lock();
        let mut st = sub.state.lock();
        if sub.ended.load(Ordering::Acquire) {
            return Ok(());
        }
        if st.cursor < reg.next {
            if reg.next - st.cursor > READ_BATCH {
                return Ok(());
            }
            let limit = ReadLimit {
                events: (reg.next - st.cursor) as usize,
                bytes: READ_BYTES,
            };
            let gap = self
                .store
                .read_all(Some(LogPosition(st.cursor)), Direction::Forward, limit)
                .map_err(|e| e.to_string())?
                .events;
            let gap: Vec<RecordedEvent> = gap
                .into_iter()
                .take_while(|e| e.position.0 < reg.next)
                .collect();
            if sub.deliver(&mut st, &gap, scratch, None) || st.cursor < reg.next {
                // Out of credit or room, or the gap was cut short: read on.
                return Ok(());
            }
        }
        st.live = true;
        if st.announce {
            st.announce = false;
            sub.push(&Push::CaughtUp {
                position: LogPosition(st.cursor),
            });
        }
        drop(st);
        reg.live.push(Arc::clone(sub));
        Ok(())
    }
}
