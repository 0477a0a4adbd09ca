//! One subscription: its state, the delivery of a batch of events within
//! its credit (shared by its catch-up task and the live dispatcher), and
//! its catch-up task, which reads the log until it can go live.
//!
//! Credit holds back events, nothing else (PROTOCOL.md §2.3, §5.7): a
//! subscription waits for credit only once it has an event to deliver and
//! none left (`State::stalled`). Until then it reads on: a filtered one
//! scans past events that do not match, sending checkpoints, and any
//! subscription with nothing left to deliver goes live and says
//! `caught_up`, credit or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use logbook_protocol::{
    Direction, LogPosition, Push, RecordedEvent, StreamVersion, SubscriptionTarget, Text,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::fanout::FanOut;
use super::filter::CompiledFilter;
use super::hub::Hub;
use super::start::StartPoint;
use super::{READ_BATCH, READ_BYTES};
use crate::net::NetStats;
use crate::net::errors::read_error;
use crate::net::outbox::{Covered, Outbox, Room, SMALL_ROOM};
use logbook_storage::{ReadError, ReadLimit};

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
    /// Stream subscriptions: the last version delivered. Every event of
    /// the stream at a position before `cursor` has a version at or below
    /// it (`start` sets this up; delivery keeps it), so reading the stream
    /// from the next version never meets an event the cursor has passed.
    last_version: Option<u64>,
    /// Unfiltered global-log subscriptions: where the frames sent so far
    /// end (after the last event pushed, or a marker's position): the
    /// `from` of the next events push, which is what the client expects
    /// next. `cursor` may be past it (removed events read past silently).
    pub(super) told: u64,
    /// Filtered subscriptions: events scanned since the last checkpoint.
    scanned: u64,
    /// Delivery stopped at an event it had no credit for; nothing moves
    /// until a `Credit` arrives.
    stalled: bool,
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
    /// Its charge on the server's subscription memory budget.
    _charge: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Sub {
    /// Adds credit (a `Credit` request).
    pub(crate) fn grant(&self, events: u32) {
        let mut st = self.state.lock();
        st.credit = st.credit.saturating_add(u64::from(events));
        if events > 0 {
            st.stalled = false;
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Whether the subscription is over (unsubscribed, or ended by the
    /// server with an `ended` push).
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(super) fn push(&self, p: &Push) {
        let (id, max) = (self.corr_id, self.max_frame);
        if let Err(e) = self.out.push(|b| p.encode(b, id, max)) {
            tracing::warn!(subscription = id, error = %e, "could not encode a push");
        }
    }

    /// Stream subscriptions: the first version not yet delivered, which
    /// their `caught_up` and `fell_behind` pushes carry so that a client
    /// can resume from them (PROTOCOL.md §5.7).
    pub(super) fn next_version(&self, st: &State) -> Option<StreamVersion> {
        match self.target {
            Target::Stream { .. } => Some(StreamVersion(st.last_version.map_or(0, |v| v + 1))),
            Target::All { .. } => None,
        }
    }

    /// Says the subscription fell behind and is back to reading the log;
    /// the next time it goes live it says `caught_up` again.
    pub(super) fn fall_behind(&self, st: &mut State) {
        st.live = false;
        st.announce = true;
        if !self.ended.load(Ordering::Acquire) {
            st.told = st.told.max(st.cursor);
            self.push(&Push::FellBehind {
                position: LogPosition(st.cursor),
                next_version: self.next_version(st),
            });
        }
    }

    /// Says the subscription is live, once per catch-up.
    pub(super) fn announce_live(&self, st: &mut State) {
        st.live = true;
        if st.announce {
            st.announce = false;
            st.told = st.told.max(st.cursor);
            self.push(&Push::CaughtUp {
                position: LogPosition(st.cursor),
                next_version: self.next_version(st),
            });
        }
    }

    /// Pushes `events`, split to fit frames; `from` is the first push's
    /// coverage start (see `Push::Events`), each later one's the position
    /// (or version) after the one before.
    fn push_events(&self, events: &[RecordedEvent], mut from: Option<u64>) {
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
            if let Err(e) = self
                .out
                .push(|b| Push::encode_events(b, id, chunk, from, max))
            {
                // Unreachable within the configured limits (a frame holds
                // the largest batch); were it reached, going on would let
                // the next push's `from` cover events never sent. End the
                // subscription instead: the client resubscribes from what
                // it has.
                tracing::warn!(subscription = id, error = %e, "could not encode an events push; ending the subscription");
                if !self.ended.swap(true, Ordering::AcqRel) {
                    self.push(&Push::Ended {
                        code: logbook_protocol::ErrorCode::Internal,
                        message: format!("an events push could not be encoded: {e}"),
                    });
                }
                return;
            }
            if let (Some(f), Some(last)) = (&mut from, chunk.last()) {
                *f = match self.target {
                    Target::Stream { .. } => last.version.0 + 1,
                    Target::All { .. } => last.position.0 + 1,
                };
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
        from: Option<u64>,
    ) {
        let pushed = if let Some((a, b)) = run.take() {
            st.credit -= (b - a) as u64;
            let run = events.get(a..b).unwrap_or_default();
            self.push_events(run, from);
            run.last().map(|e| e.position.0)
        } else if !scratch.is_empty() {
            st.credit -= scratch.len() as u64;
            self.push_events(scratch, from);
            let last = scratch.last().map(|e| e.position.0);
            scratch.clear();
            last
        } else {
            None
        };
        // A global-log push that says where it starts moves where the
        // frames end (what the client expects next).
        if from.is_some()
            && matches!(self.target, Target::All { .. })
            && let Some(last) = pushed
        {
            st.told = st.told.max(last + 1);
        }
    }

    /// Delivers `events`, the live events of the log from a position at or
    /// before the cursor up to `through` (exclusive; removed events leave
    /// holes in the positions), within credit. Returns whether it stopped
    /// before the end at an event it had no credit for (and then the
    /// subscription is stalled until credit arrives); otherwise the cursor
    /// moves to `through`.
    pub(super) fn deliver(
        &self,
        st: &mut State,
        events: &[RecordedEvent],
        through: u64,
        scratch: &mut Vec<RecordedEvent>,
        fan_out: Option<&mut FanOut<'_>>,
    ) -> bool {
        let stopped = self.deliver_events(st, events, scratch, fan_out);
        if !stopped {
            st.cursor = st.cursor.max(through);
        }
        st.stalled |= stopped;
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
                    // encode them once and copy the frame to each (those
                    // whose frames so far end at the same place).
                    let from = st.told;
                    let shared = fan_out
                        .filter(|f| std::ptr::eq(f.events, all))
                        .is_some_and(|f| f.write(self, skip, skip + n, from));
                    if !shared {
                        self.push_events(sent, Some(from));
                    }
                    st.credit -= n as u64;
                }
                if let Some(last) = sent.last() {
                    st.cursor = last.position.0 + 1;
                    st.told = st.cursor;
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
                        let from = f.is_access_only().then_some(st.told);
                        self.flush_matches(st, events, &mut run, scratch, from);
                        st.told = st.cursor;
                        self.push(&Push::Checkpoint {
                            position: LogPosition(st.cursor),
                        });
                        st.scanned = 0;
                    }
                }
                let from = f.is_access_only().then_some(st.told);
                self.flush_matches(st, events, &mut run, scratch, from);
                stopped
            }
            Target::Stream { name } => {
                scratch.clear();
                let mut stopped = false;
                // Every live version of the stream from here to the last
                // one pushed is in the push: truncated or deleted versions
                // are skipped, not lost.
                let from = st.last_version.map_or(0, |v| v + 1);
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
                self.flush_matches(st, events, &mut None, scratch, Some(from));
                stopped
            }
        }
    }
}

impl Hub {
    /// Starts a subscription at `start` (resolved by `start::resolve`
    /// against the head the caller sent in `SubscribeOk`).
    /// `request`'s filter, if any, is `filter`, compiled. Its pushes are
    /// framed within the server's frame limit, the hub's.
    pub(crate) fn start(
        self: &Arc<Self>,
        corr_id: u32,
        request: logbook_protocol::Subscribe,
        filter: Option<CompiledFilter>,
        start: StartPoint,
        out: Arc<Outbox>,
        charge: impl Into<Option<tokio::sync::OwnedSemaphorePermit>>,
    ) -> Arc<Sub> {
        let max_frame = self.max_frame;
        let target = match request.target {
            SubscriptionTarget::All { .. } => Target::All { filter },
            SubscriptionTarget::Stream { stream, .. } => Target::Stream { name: stream },
        };
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let sub = Arc::new(Sub {
            id,
            corr_id,
            out,
            max_frame,
            target,
            state: Mutex::new(State {
                credit: u64::from(request.initial_credit),
                cursor: start.cursor,
                last_version: start.last_version,
                told: start.cursor,
                scanned: 0,
                stalled: false,
                live: false,
                announce: true,
            }),
            wake: Notify::new(),
            ended: AtomicBool::new(false),
            stats: Arc::clone(&self.stats),
            position: self.stats.track_subscription(id, start.cursor),
            _charge: charge.into(),
        });
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        let (hub, s) = (Arc::clone(self), Arc::clone(&sub));
        tokio::spawn(async move { hub.catch_up(s).await });
        sub
    }

    /// The catch-up task of one subscription.
    async fn catch_up(self: Arc<Self>, sub: Arc<Sub>) {
        let mut scratch = Vec::new();
        // The room the next step needs at least: 0, or the size of an event
        // that did not fit the last one.
        let mut need = 0usize;
        // Live, or stalled at an event it has no credit for: the dispatcher
        // or a Credit moves it on, and wakes this task if it must read.
        let waiting = |sub: &Sub| {
            let st = sub.state.lock();
            st.live || st.stalled
        };
        loop {
            if sub.ended.load(Ordering::Acquire) {
                return;
            }
            if waiting(&sub) || sub.out.is_full() {
                // Wait for credit, a demotion, the end, or room to write.
                let wake = sub.wake.notified();
                tokio::pin!(wake);
                wake.as_mut().enable();
                let still = waiting(&sub);
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
            // A reader slot of the subscriptions' share, then room on the
            // outbox budget for what this step may push, taken before
            // reading (waiting for bytes to drain somewhere if the server
            // is short of it; an unsubscribe ends either wait).
            let share = {
                let wake = sub.wake.notified();
                tokio::select! {
                    share = self.reads.background_share() => share,
                    () = wake => continue,
                }
            };
            let room = {
                let wake = sub.wake.notified();
                tokio::select! {
                    room = sub.out.room(READ_BYTES.max(need), need.max(SMALL_ROOM)) => room,
                    () = wake => continue,
                }
            };
            let Some(mut room) = room else {
                // The connection broke: it is ending its subscriptions.
                return;
            };
            match self.step(&sub, &mut scratch, &mut room).await {
                Ok(next) => need = next.unwrap_or(0),
                Err(e) => {
                    // The failure's own code (I/O: Internal, damaged bytes:
                    // Corruption, shutdown: ShuttingDown), as a request that
                    // met it would get.
                    let reply = read_error(&e);
                    self.end(&sub, Some((reply.code, &reply.message)));
                    return;
                }
            }
            drop(room);
            drop(share);
            // Let other tasks run between steps of a long catch-up.
            tokio::task::yield_now().await;
        }
    }

    /// One catch-up step, pushing no more than `room` covers: read a batch
    /// from the log and deliver it, or go live if there is nothing new.
    /// `Some(bytes)`: the next event alone needs a room of that size (the
    /// next step takes one; nothing read is kept meanwhile).
    async fn step(
        &self,
        sub: &Arc<Sub>,
        scratch: &mut Vec<RecordedEvent>,
        room: &mut Room,
    ) -> Result<Option<usize>, ReadError> {
        let (cursor, last_version, credit) = {
            let st = sub.state.lock();
            (st.cursor, st.last_version, st.credit)
        };
        // With no credit, one event: enough to find out whether there is
        // something to deliver (stall) or nothing (go live).
        let want = credit.clamp(1, READ_BATCH) as usize;
        let head = self.store.head().0;
        let bytes = room.bytes().clamp(1, READ_BYTES);
        // The events read, and whether the read stopped before the end.
        let (mut events, more, mut through) = match &sub.target {
            Target::All { filter } => {
                // Filtered subscriptions scan more than they send.
                let want = if filter.is_some() {
                    READ_BATCH as usize
                } else {
                    want
                };
                let store = self.store.clone();
                let slice = self
                    .reads
                    .run(move || {
                        store.read_all(
                            Some(LogPosition(cursor)),
                            Direction::Forward,
                            ReadLimit {
                                events: want,
                                bytes,
                            },
                        )
                    })
                    .await?;
                (slice.events, slice.next.is_some(), slice.through.0)
            }
            Target::Stream { name } => {
                let from = last_version.map_or(0, |v| v + 1);
                let (store, name) = (self.store.clone(), name.clone());
                let slice = self
                    .reads
                    .run(move || {
                        store.read_stream(
                            &name,
                            Some(StreamVersion(from)),
                            Direction::Forward,
                            ReadLimit {
                                events: want,
                                bytes,
                            },
                        )
                    })
                    .await?;
                // A stream read says nothing of log positions.
                (slice.events, slice.next.is_some(), 0)
            }
        };
        // A read returns one event past its budget if need be; what is left
        // out is read again, so the scan ends at the first of it.
        let exhausted = match room.cover(&mut events) {
            Covered::Send(left) => {
                if let Some(l) = &left {
                    through = l.position.0;
                }
                !more && left.is_none()
            }
            Covered::Grow(need) => return Ok(Some(need)),
        };
        {
            let mut st = sub.state.lock();
            if sub.ended.load(Ordering::Acquire) {
                return Ok(None);
            }
            if let Target::All { .. } = sub.target
                && events.is_empty()
                && through > st.cursor
            {
                // Only removed events (deleted, truncated, expired) here:
                // say how far the scan went, so that the client's frames
                // tile the log, then read on (or go live).
                st.cursor = through;
                st.told = through;
                sub.position.store(st.cursor, Ordering::Relaxed);
                sub.push(&Push::Checkpoint {
                    position: LogPosition(through),
                });
                if more {
                    return Ok(None);
                }
            } else if !events.is_empty() {
                let through = match sub.target {
                    Target::All { .. } => through,
                    // Stream reads: the cursor moves event by event.
                    Target::Stream { .. } => 0,
                };
                let stopped = sub.deliver(&mut st, &events, through, scratch, None);
                if let Target::Stream { .. } = sub.target {
                    // A stream read covers the stream up to at least `head`.
                    if exhausted && !stopped {
                        st.cursor = st.cursor.max(head);
                        sub.position.store(st.cursor, Ordering::Relaxed);
                    }
                }
                // The room is spent: the next step, with a room of its
                // own, goes live if it finds nothing more.
                return Ok(None);
            } else if let Target::Stream { .. } = sub.target {
                st.cursor = st.cursor.max(head);
                sub.position.store(st.cursor, Ordering::Relaxed);
            }
        }
        // Nothing more in the log right now: go live (`Hub::go_live`).
        self.go_live(sub, scratch, room).await.map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::BytesMut;
    use logbook_protocol::frame::decode_frame;
    use logbook_protocol::{
        EventId, ExpectedVersion, NewEvent, Push, ServerMessage, StreamName, Subscribe,
        SubscribeFrom, SubscriptionTarget, Text,
    };
    use logbook_storage::{Durability, Store, StoreConfig};
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use crate::net::NetStats;
    use crate::net::outbox::Outbox;
    use crate::net::subscription::{Hub, resolve};

    const MAX_FRAME: u32 = 1 << 20;

    async fn append(store: &Store, stream: &str, id: u128) {
        let name = StreamName::new(Text::from(stream)).expect("a valid name");
        let event = NewEvent::new(EventId::from_u128(id), "Noted", &b"{}"[..]);
        store
            .append(&name, ExpectedVersion::Any, vec![event])
            .await
            .expect("append");
    }

    /// An outbox whose writer sends into a socket, and the other end of it.
    async fn outbox(stats: &Arc<NetStats>) -> (Arc<Outbox>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let out = Arc::new(Outbox::new(
            Arc::clone(stats),
            usize::MAX,
            std::time::Duration::from_secs(60),
        ));
        let (_, wr) = server.into_split();
        let writer = Arc::clone(&out);
        tokio::spawn(async move { writer.write_loop(wr).await });
        (out, client)
    }

    async fn next_push(socket: &mut TcpStream, buf: &mut BytesMut) -> Push {
        loop {
            if let Some(frame) = decode_frame(buf, MAX_FRAME).expect("a frame") {
                match ServerMessage::decode(&frame).expect("a message") {
                    ServerMessage::Push(p) => return p,
                    other => panic!("{other:?}"),
                }
            }
            let n = socket.read_buf(buf).await.expect("read");
            assert_ne!(n, 0, "the outbox closed");
        }
    }

    /// The Subscribe handler reads the head it reports in `SubscribeOk`
    /// and only then resolves where the subscription starts: an event
    /// committed to the stream in between is at or after that head, so it
    /// must be delivered.
    #[tokio::test]
    async fn a_stream_subscription_from_end_delivers_an_event_committed_while_it_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(StoreConfig {
            durability: Durability::Os,
            ..StoreConfig::new(dir.path())
        })
        .expect("open");
        for id in 1..=3 {
            append(&store, "s", id).await;
            append(&store, "other", 100 + id).await;
        }
        // What SubscribeOk reports...
        let head = store.head();
        // ...then a commit lands before the subscription starts.
        append(&store, "s", 4).await;
        let stats = Arc::new(NetStats::default());
        let reads = Arc::new(crate::net::reads::ReadPool::new(2));
        let hub = Hub::new(store.clone(), Arc::clone(&stats), MAX_FRAME, reads);
        let (out, mut socket) = outbox(&stats).await;
        let request = Subscribe {
            target: SubscriptionTarget::Stream {
                stream: Text::from("s"),
                from: SubscribeFrom::End,
            },
            initial_credit: 10,
        };
        let start = resolve(&store, &request.target, head.0).expect("a start");
        let _sub = hub.start(1, request, None, start, out, None);
        let mut buf = BytesMut::new();
        match next_push(&mut socket, &mut buf).await {
            Push::Events { events, .. } => {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].version.0, 3);
                assert_eq!(events[0].position, head);
            }
            other => panic!("the event at the head was skipped: {other:?}"),
        }
        assert!(matches!(
            next_push(&mut socket, &mut buf).await,
            Push::CaughtUp { .. }
        ));
        store.close().expect("close");
    }
}
