//! One consumer group's delivery state: which events of its source are
//! outstanding (read but not finished), which are in flight to which
//! consumer until when, which wait for a retry, how often each was
//! delivered, and the ack floor below which everything is finished.
//!
//! A pure state machine: time is passed in (milliseconds of a monotonic
//! clock), nothing here reads the log, writes anything or knows about
//! connections. The group task (`super::task`) feeds it the source's
//! events, asks it for deliveries, hands it the consumers' acks and nacks,
//! persists its [`Checkpoint`]s and its parked events. That keeps every
//! rule in one place, tested against a model (`tests` below) with random
//! acks, nacks, timeouts, departures and restarts.
//!
//! **Sequence numbers.** Events are identified by their sequence in the
//! source: the log position for a global-log source, the version for a
//! stream source. Both only rise in the order the source is read.
//!
//! **Finishing.** An event is finished when acknowledged (by any consumer:
//! an ack says "processed", even a late one after the event went to
//! someone else), skipped, or parked *durably* (its parked record written:
//! until then it holds the floor, so a crash cannot lose it). The floor is
//! the lowest unfinished sequence: `min(first outstanding, cursor)`; the
//! finished sequences above it (`done`) are kept so that a checkpoint can
//! name them and a restart does not deliver them again.
//!
//! **Deliveries** are counted when sent. A failure (nack with retry, ack
//! wait expired, consumer gone) of an event already delivered
//! `max_deliveries` times parks it: a poison event goes to the parked list
//! after a bounded number of tries, never round a loop.
//!
//! **Strategies.** Round-robin: any ready event may go out. Per-stream: only
//! the first outstanding event of each stream may be in flight or waiting
//! for a retry, so a stream's events are processed one at a time in
//! version order while different streams go in parallel; a stream is tied
//! to a consumer only while one of its events is in flight (no partitions,
//! nothing to rebalance). A parked event lets its stream go on once its
//! record is durable.
//!
//! **Bounds.** The outstanding events plus the finished ones above the
//! floor are at most `max_ahead` (and their payloads at most
//! `max_ahead_bytes`): past that the group stops reading its source until
//! the floor moves. Memory per group is bounded whatever the consumers do;
//! a stuck event holds the group back for at most its deliveries times the
//! ack wait before it is parked.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use logbook_protocol::types::Text;

/// An event's sequence in the group's source.
pub type Seq = u64;

/// A consumer of the group (one joined connection).
pub type ConsumerId = u64;

/// The longest a nack may put off a retry: 24 hours.
pub const MAX_RETRY_DELAY_MS: u64 = 24 * 3600 * 1000;

/// Sequences at or above this are replayed parked events (the bit set on
/// their entry's version in the parked list), not source events: they are
/// above every source sequence, so they never hold the floor, and are
/// never named in a checkpoint (the parked list keeps them until they are
/// finished).
pub const REPLAY_BIT: Seq = 1 << 63;

/// How events are handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Any ready event to the next consumer with room: no order.
    RoundRobin,
    /// At most one event of each stream in flight (or waiting for a retry)
    /// at a time: strict order within a stream, parallel across streams.
    PerStream,
}

/// The group's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// An event not acknowledged within this is delivered again.
    pub ack_wait_ms: u64,
    /// Deliveries after which a failure parks the event.
    pub max_deliveries: u32,
    /// Most events in flight, across all consumers.
    pub max_in_flight: u32,
    /// Most events held between the floor and the cursor (outstanding and
    /// finished above the floor).
    pub max_ahead: u32,
    /// Most payload bytes held by outstanding events.
    pub max_ahead_bytes: usize,
}

/// What a consumer says of an event it could not process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nack {
    /// Deliver it again, no sooner than this many milliseconds from now.
    Retry {
        /// Delay in milliseconds.
        delay_ms: u64,
    },
    /// Put it on the parked list, with why.
    Park {
        /// Why.
        reason: String,
    },
    /// Drop it: finished without processing.
    Skip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// May be delivered (if its strategy lets it).
    Ready,
    /// Sent to `consumer`; delivered again after `deadline`.
    InFlight { consumer: ConsumerId, deadline: u64 },
    /// Waiting for a retry, not before `until`.
    Waiting { until: u64 },
    /// Its parked record is being written.
    Parking,
}

#[derive(Debug)]
struct Slot<T> {
    stream: Text,
    item: T,
    bytes: usize,
    deliveries: u32,
    state: SlotState,
}

/// An event to write to the parked list; once written, tell the state
/// ([`GroupState::parked`]).
#[derive(Debug, PartialEq, Eq)]
pub struct ToPark<T> {
    /// Its sequence.
    pub seq: Seq,
    /// Its stream.
    pub stream: Text,
    /// The event.
    pub item: T,
    /// Why it is parked.
    pub reason: String,
    /// How often it was delivered.
    pub deliveries: u32,
}

/// One delivery: the event `seq`, sent for the `deliveries`-th time.
#[derive(Debug, PartialEq, Eq)]
pub struct Delivery<T> {
    /// Its sequence.
    pub seq: Seq,
    /// The event.
    pub item: T,
    /// How often it has been delivered, this time included.
    pub deliveries: u32,
}

/// What a group stores to go on after a restart: nothing below `floor` is
/// delivered again, nor anything in `done`; `deliveries` keeps the counts
/// of events delivered but not finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every event below it is finished.
    pub floor: Seq,
    /// Finished events above the floor, ascending.
    pub done: Vec<Seq>,
    /// Deliveries so far of unfinished events, by sequence, ascending.
    pub deliveries: Vec<(Seq, u32)>,
}

/// One group's delivery state (see the module's documentation).
#[derive(Debug)]
pub struct GroupState<T> {
    limits: Limits,
    strategy: Strategy,
    /// The next sequence to read from the source.
    cursor: Seq,
    slots: BTreeMap<Seq, Slot<T>>,
    /// Finished above the floor.
    done: BTreeSet<Seq>,
    /// Per-stream: each stream's outstanding sequences, in order.
    streams: HashMap<Text, VecDeque<Seq>>,
    /// Deliverable now.
    ready: BTreeSet<Seq>,
    deadlines: BTreeSet<(u64, Seq)>,
    waits: BTreeSet<(u64, Seq)>,
    by_consumer: HashMap<ConsumerId, BTreeSet<Seq>>,
    bytes: usize,
    to_park: Vec<ToPark<T>>,
    /// Restored delivery counts of events not read again yet.
    restored: BTreeMap<Seq, u32>,
    /// Counters.
    pub stats: Counters,
}

/// Counters since the group started (this process).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Deliveries sent.
    pub delivered: u64,
    /// Deliveries after the first of an event.
    pub redelivered: u64,
    /// Events acknowledged.
    pub acked: u64,
    /// Events skipped.
    pub skipped: u64,
    /// Events parked.
    pub parked: u64,
    /// Failed deliveries (nack retry, timeout, consumer gone).
    pub failures: u64,
    /// Events dropped because they were removed (their stream deleted or
    /// truncated) before they were delivered.
    pub removed: u64,
}

impl<T: Clone> GroupState<T> {
    /// A group that reads its source from `start`.
    pub fn new(limits: Limits, strategy: Strategy, start: Seq) -> GroupState<T> {
        GroupState {
            limits,
            strategy,
            cursor: start,
            slots: BTreeMap::new(),
            done: BTreeSet::new(),
            streams: HashMap::new(),
            ready: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            waits: BTreeSet::new(),
            by_consumer: HashMap::new(),
            bytes: 0,
            to_park: Vec::new(),
            restored: BTreeMap::new(),
            stats: Counters::default(),
        }
    }

    /// A group going on from `checkpoint`: it reads its source again from
    /// the floor, skipping what is done.
    pub fn restore(limits: Limits, strategy: Strategy, checkpoint: &Checkpoint) -> GroupState<T> {
        let mut s = GroupState::new(limits, strategy, checkpoint.floor);
        s.done = checkpoint
            .done
            .iter()
            .copied()
            .filter(|&q| q >= checkpoint.floor)
            .collect();
        s.restored = checkpoint
            .deliveries
            .iter()
            .copied()
            .filter(|&(q, _)| q >= checkpoint.floor)
            .collect();
        s
    }

    /// New limits (an update of the group); in-flight deadlines keep theirs.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The next sequence to read from the source.
    pub fn cursor(&self) -> Seq {
        self.cursor
    }

    /// Every event below it is finished.
    pub fn floor(&self) -> Seq {
        self.slots
            .keys()
            .next()
            .copied()
            .unwrap_or(self.cursor)
            .min(self.cursor)
    }

    /// Events in flight.
    pub fn in_flight(&self) -> usize {
        self.deadlines.len()
    }

    /// Events read and not finished (in flight, ready, waiting, parking).
    pub fn outstanding(&self) -> usize {
        self.slots.len()
    }

    /// Events in flight to `consumer`.
    pub fn held_by(&self, consumer: ConsumerId) -> usize {
        self.by_consumer.get(&consumer).map_or(0, BTreeSet::len)
    }

    /// Parks taken with [`GroupState::take_parks`] whose records could not
    /// be written: taken again next time.
    pub fn unpark_pending(&mut self, parks: Vec<ToPark<T>>) {
        self.to_park.extend(parks);
    }

    /// Events waiting for a retry.
    pub fn waiting(&self) -> usize {
        self.waits.len()
    }

    /// Whether the source may be read further (within `max_ahead`).
    pub fn wants_more(&self) -> bool {
        ((self.slots.len() + self.done.len()) as u64) < u64::from(self.limits.max_ahead)
            && self.bytes < self.limits.max_ahead_bytes
    }

    /// Room for more events, within `max_ahead`.
    pub fn room(&self) -> usize {
        (self.limits.max_ahead as usize).saturating_sub(self.slots.len() + self.done.len())
    }

    /// The source was read up to `seq` (exclusive) with nothing more for
    /// the group (filtered out, removed).
    pub fn advance_to(&mut self, seq: Seq) {
        if seq > self.cursor {
            self.cursor = seq;
            self.prune();
        }
    }

    /// The next event of the source, `seq` at or after the cursor. Events
    /// finished before a restart are passed over.
    pub fn offer(&mut self, seq: Seq, stream: Text, item: T, bytes: usize) {
        if seq < self.cursor {
            return;
        }
        self.cursor = seq + 1;
        if self.done.contains(&seq) {
            self.restored.remove(&seq);
            self.prune();
            return;
        }
        let deliveries = self.restored.remove(&seq).unwrap_or(0);
        self.bytes += bytes;
        self.slots.insert(
            seq,
            Slot {
                stream: stream.clone(),
                item,
                bytes,
                deliveries,
                state: SlotState::Ready,
            },
        );
        match self.strategy {
            Strategy::RoundRobin => {
                self.ready.insert(seq);
            }
            Strategy::PerStream => {
                let queue = self.streams.entry(stream).or_default();
                queue.push_back(seq);
                if queue.len() == 1 {
                    self.ready.insert(seq);
                }
            }
        }
    }

    /// A parked event delivered again (`id` has [`REPLAY_BIT`] set), with
    /// no delivery counted yet. It joins its stream's queue behind what is
    /// there (per-stream), and does not move the cursor.
    pub fn offer_replay(&mut self, id: Seq, stream: Text, item: T, bytes: usize) {
        debug_assert!(id >= REPLAY_BIT);
        if self.slots.contains_key(&id) {
            return;
        }
        self.bytes += bytes;
        self.slots.insert(
            id,
            Slot {
                stream: stream.clone(),
                item,
                bytes,
                deliveries: 0,
                state: SlotState::Ready,
            },
        );
        match self.strategy {
            Strategy::RoundRobin => {
                self.ready.insert(id);
            }
            Strategy::PerStream => {
                let queue = self.streams.entry(stream).or_default();
                queue.push_back(id);
                if queue.len() == 1 {
                    self.ready.insert(id);
                }
            }
        }
    }

    /// The lowest replayed parked event not finished (its id without
    /// [`REPLAY_BIT`]), if any.
    pub fn replay_floor(&self) -> Option<Seq> {
        self.slots
            .range(REPLAY_BIT..)
            .next()
            .map(|(&id, _)| id & !REPLAY_BIT)
    }

    /// Whether an event could go out now (ready, within `max_in_flight`).
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty() && self.in_flight() < self.limits.max_in_flight as usize
    }

    /// The next event for `consumer`, the oldest ready one, in flight until
    /// `now + ack_wait`.
    pub fn deliver(&mut self, consumer: ConsumerId, now: u64) -> Option<Delivery<T>> {
        self.deliver_live(consumer, now, |_| true)
    }

    /// [`GroupState::deliver`], passing over (and finishing, as skipped)
    /// ready events `live` says were removed since they were read: a
    /// deleted stream's events drop out of the group.
    pub fn deliver_live(
        &mut self,
        consumer: ConsumerId,
        now: u64,
        live: impl Fn(&T) -> bool,
    ) -> Option<Delivery<T>> {
        loop {
            if !self.has_ready() {
                return None;
            }
            let seq = *self.ready.first()?;
            if self.slots.get(&seq).is_some_and(|s| live(&s.item)) {
                break;
            }
            self.ready.remove(&seq);
            self.stats.removed += 1;
            self.finish(seq);
        }
        let seq = self.ready.pop_first()?;
        let slot = self.slots.get_mut(&seq)?;
        let deadline = now.saturating_add(self.limits.ack_wait_ms);
        slot.state = SlotState::InFlight { consumer, deadline };
        slot.deliveries += 1;
        self.stats.delivered += 1;
        if slot.deliveries > 1 {
            self.stats.redelivered += 1;
        }
        self.deadlines.insert((deadline, seq));
        self.by_consumer.entry(consumer).or_default().insert(seq);
        Some(Delivery {
            seq,
            item: slot.item.clone(),
            deliveries: slot.deliveries,
        })
    }

    /// `seq` was processed. True if it was outstanding and delivered (a
    /// late or repeated ack of a finished event changes nothing, nor does
    /// an ack of an event not delivered yet: an id from before a restart,
    /// which per-stream order would not allow).
    pub fn ack(&mut self, seq: Seq) -> bool {
        match self.slots.get(&seq).map(|s| (s.state, s.deliveries)) {
            None | Some((SlotState::Parking, _)) | Some((_, 0)) => false,
            Some(_) => {
                self.stats.acked += 1;
                self.finish(seq);
                true
            }
        }
    }

    /// `consumer` could not process `seq`. Ignored unless `seq` is in
    /// flight to `consumer` (a stale nack changes nothing).
    pub fn nack(&mut self, seq: Seq, consumer: ConsumerId, nack: Nack, now: u64) -> bool {
        if !self.is_in_flight_to(seq, consumer) {
            return false;
        }
        match nack {
            Nack::Retry { delay_ms } => {
                let delay = delay_ms.min(MAX_RETRY_DELAY_MS);
                self.fail(seq, now.saturating_add(delay), now)
            }
            Nack::Park { reason } => {
                self.unflight(seq);
                self.park(seq, reason);
            }
            Nack::Skip => {
                self.stats.skipped += 1;
                self.finish(seq);
            }
        }
        true
    }

    /// `consumer` is still working on `seq`: its deadline moves to
    /// `now + ack_wait`.
    pub fn extend(&mut self, seq: Seq, consumer: ConsumerId, now: u64) -> bool {
        if !self.is_in_flight_to(seq, consumer) {
            return false;
        }
        let deadline = now.saturating_add(self.limits.ack_wait_ms);
        if let Some(slot) = self.slots.get_mut(&seq)
            && let SlotState::InFlight { deadline: old, .. } = slot.state
        {
            self.deadlines.remove(&(old, seq));
            self.deadlines.insert((deadline, seq));
            slot.state = SlotState::InFlight { consumer, deadline };
        }
        true
    }

    /// `consumer` is gone: what it had in flight is delivered again.
    pub fn consumer_left(&mut self, consumer: ConsumerId, now: u64) {
        let held = self.by_consumer.remove(&consumer).unwrap_or_default();
        for seq in held {
            self.fail(seq, now, now);
        }
    }

    /// Moves time to `now`: expired deliveries fail, due retries become
    /// ready.
    pub fn tick(&mut self, now: u64) {
        while let Some(&(deadline, seq)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.fail(seq, now, now);
        }
        while let Some(&(until, seq)) = self.waits.first() {
            if until > now {
                break;
            }
            self.waits.remove(&(until, seq));
            let Some(slot) = self.slots.get_mut(&seq) else {
                continue;
            };
            if slot.deliveries >= self.limits.max_deliveries {
                // `max_deliveries` was lowered while it waited.
                let reason = format!("delivered {} times without success", slot.deliveries);
                slot.state = SlotState::Ready;
                self.park(seq, reason);
            } else {
                slot.state = SlotState::Ready;
                self.make_ready_if_eligible(seq);
            }
        }
    }

    /// When the next deadline or retry falls due, if any.
    pub fn next_timer(&self) -> Option<u64> {
        let d = self.deadlines.first().map(|&(t, _)| t);
        let w = self.waits.first().map(|&(t, _)| t);
        match (d, w) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Events to write to the parked list.
    pub fn take_parks(&mut self) -> Vec<ToPark<T>> {
        std::mem::take(&mut self.to_park)
    }

    /// The parked record of `seq` is durable: it is finished.
    pub fn parked(&mut self, seq: Seq) {
        if matches!(
            self.slots.get(&seq).map(|s| s.state),
            Some(SlotState::Parking)
        ) {
            self.stats.parked += 1;
            self.finish(seq);
        }
    }

    /// Drops `seq` if outstanding and not in flight, finished without
    /// delivery (its stream was deleted). True if dropped.
    pub fn drop_removed(&mut self, seq: Seq) -> bool {
        match self.slots.get(&seq).map(|s| s.state) {
            Some(SlotState::Ready | SlotState::Waiting { .. }) => {
                self.stats.skipped += 1;
                self.finish(seq);
                true
            }
            _ => false,
        }
    }

    /// Outstanding events of `stream` (to drop them when it is deleted).
    pub fn outstanding_of(&self, stream: &str) -> Vec<Seq> {
        self.slots
            .iter()
            .filter(|(_, s)| s.stream.as_str() == stream)
            .map(|(&q, _)| q)
            .collect()
    }

    /// What to store to go on after a restart. Never above what is
    /// finished: its floor is this state's floor.
    pub fn checkpoint(&self) -> Checkpoint {
        let floor = self.floor();
        Checkpoint {
            floor,
            done: self.done.range(floor..).copied().collect(),
            deliveries: self
                .slots
                .range(..REPLAY_BIT)
                .filter(|(_, s)| s.deliveries > 0)
                .map(|(&q, s)| (q, s.deliveries))
                .collect(),
        }
    }

    /// The delivery times of the in-flight events: the oldest one's age
    /// is `now - (deadline - ack_wait)` of the first.
    pub fn oldest_in_flight_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|&(d, _)| d)
    }

    fn is_in_flight_to(&self, seq: Seq, consumer: ConsumerId) -> bool {
        matches!(
            self.slots.get(&seq).map(|s| s.state),
            Some(SlotState::InFlight { consumer: c, .. }) if c == consumer
        )
    }

    /// Takes `seq` out of flight (its state is set by the caller).
    fn unflight(&mut self, seq: Seq) {
        if let Some(slot) = self.slots.get(&seq)
            && let SlotState::InFlight { consumer, deadline } = slot.state
        {
            self.deadlines.remove(&(deadline, seq));
            if let Some(held) = self.by_consumer.get_mut(&consumer) {
                held.remove(&seq);
                if held.is_empty() {
                    self.by_consumer.remove(&consumer);
                }
            }
        }
    }

    /// A failed delivery of `seq`: parked after `max_deliveries`, else
    /// ready again at `until`.
    fn fail(&mut self, seq: Seq, until: u64, now: u64) {
        self.unflight(seq);
        self.stats.failures += 1;
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        if slot.deliveries >= self.limits.max_deliveries {
            let reason = format!("delivered {} times without success", slot.deliveries);
            self.park(seq, reason);
        } else if until > now {
            slot.state = SlotState::Waiting { until };
            self.waits.insert((until, seq));
        } else {
            slot.state = SlotState::Ready;
            self.make_ready_if_eligible(seq);
        }
    }

    fn park(&mut self, seq: Seq, reason: String) {
        let Some(slot) = self.slots.get_mut(&seq) else {
            return;
        };
        if let SlotState::Waiting { until } = slot.state {
            self.waits.remove(&(until, seq));
        }
        self.ready.remove(&seq);
        slot.state = SlotState::Parking;
        self.to_park.push(ToPark {
            seq,
            stream: slot.stream.clone(),
            item: slot.item.clone(),
            reason,
            deliveries: slot.deliveries,
        });
        // Its stream goes on once the park is durable (`parked`): were the
        // record lost in a crash, the event would come again before its
        // stream's later ones.
    }

    fn make_ready_if_eligible(&mut self, seq: Seq) {
        let eligible = match self.strategy {
            Strategy::RoundRobin => true,
            Strategy::PerStream => {
                self.slots
                    .get(&seq)
                    .and_then(|s| self.streams.get(&s.stream))
                    .and_then(|q| q.front())
                    == Some(&seq)
            }
        };
        if eligible {
            self.ready.insert(seq);
        }
    }

    /// Per-stream: takes `seq` out of its stream's queue; the stream's new
    /// first event may go out.
    fn leave_stream(&mut self, seq: Seq) {
        if self.strategy != Strategy::PerStream {
            return;
        }
        let Some(stream) = self.slots.get(&seq).map(|s| s.stream.clone()) else {
            return;
        };
        let Some(queue) = self.streams.get_mut(&stream) else {
            return;
        };
        let was_first = queue.front() == Some(&seq);
        if let Some(i) = queue.iter().position(|&q| q == seq) {
            queue.remove(i);
        }
        let next = queue.front().copied();
        if queue.is_empty() {
            self.streams.remove(&stream);
        }
        if was_first
            && let Some(next) = next
            && matches!(
                self.slots.get(&next).map(|s| s.state),
                Some(SlotState::Ready)
            )
        {
            self.ready.insert(next);
        }
    }

    fn finish(&mut self, seq: Seq) {
        self.unflight(seq);
        if let Some(slot) = self.slots.get(&seq) {
            if let SlotState::Waiting { until } = slot.state {
                self.waits.remove(&(until, seq));
            }
            self.leave_stream(seq);
        }
        self.ready.remove(&seq);
        if let Some(slot) = self.slots.remove(&seq) {
            self.bytes -= slot.bytes;
        }
        if seq < REPLAY_BIT {
            self.done.insert(seq);
        }
        self.prune();
    }

    /// Forgets finished sequences below the floor, and restored counts of
    /// events the source no longer had (removed since).
    fn prune(&mut self) {
        let floor = self.floor();
        while let Some(&first) = self.done.first() {
            if first >= floor {
                break;
            }
            self.done.pop_first();
        }
        while let Some((&first, _)) = self.restored.first_key_value() {
            if first >= self.cursor {
                break;
            }
            self.restored.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The state machine against a model, under random deliveries, acks,
    //! nacks, extensions, timeouts, departures, parks made durable (or
    //! not) and restarts (graceful: from a checkpoint taken then; crash:
    //! from the last one stored).

    use super::*;
    use std::collections::{BTreeMap, HashMap, HashSet};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum End {
        Acked,
        Skipped,
        Parked,
    }

    const LIMITS: Limits = Limits {
        ack_wait_ms: 100,
        max_deliveries: 4,
        max_in_flight: 12,
        max_ahead: 40,
        max_ahead_bytes: 1 << 20,
    };

    struct Run {
        rng: Rng,
        strategy: Strategy,
        /// The source: (sequence, stream); sequences rise with gaps.
        source: Vec<(Seq, Text)>,
        state: GroupState<Seq>,
        now: u64,
        /// What each consumer holds (believes in flight).
        consumers: BTreeMap<ConsumerId, Vec<Seq>>,
        next_consumer: ConsumerId,
        stored: Checkpoint,
        /// Model: how each event ended (first end).
        ended: HashMap<Seq, End>,
        deliveries: HashMap<Seq, u32>,
        /// Parks decided and not yet durable.
        parking: Vec<Seq>,
        /// Per-stream: the last first success.
        first_success: HashMap<Text, Seq>,
        crashes: u32,
        /// Delivery counts restored at the last restart, and deliveries in
        /// this life.
        restored: HashMap<Seq, u32>,
        life_deliveries: HashMap<Seq, u32>,
        /// Finished in this life of the state (since the last restart),
        /// and since the stored checkpoint.
        finished_this_life: HashSet<Seq>,
        finished_since_store: HashSet<Seq>,
    }

    impl Run {
        fn new(seed: u64, strategy: Strategy, events: usize) -> Run {
            let mut rng = Rng(seed | 1);
            let mut source = Vec::new();
            let mut seq = rng.below(3);
            for _ in 0..events {
                let stream = Text::from(format!("s-{}", rng.below(6)));
                source.push((seq, stream));
                seq += 1 + u64::from(rng.chance(20)) * rng.below(4);
            }
            let start = source[0].0;
            Run {
                rng,
                strategy,
                source,
                state: GroupState::new(LIMITS, strategy, start),
                now: 0,
                consumers: BTreeMap::new(),
                next_consumer: 1,
                stored: Checkpoint {
                    floor: start,
                    ..Checkpoint::default()
                },
                ended: HashMap::new(),
                deliveries: HashMap::new(),
                parking: Vec::new(),
                first_success: HashMap::new(),
                crashes: 0,
                restored: HashMap::new(),
                life_deliveries: HashMap::new(),
                finished_this_life: HashSet::new(),
                finished_since_store: HashSet::new(),
            }
        }

        fn stream_of(&self, seq: Seq) -> Text {
            let i = self.source.partition_point(|(q, _)| *q < seq);
            self.source[i].1.clone()
        }

        /// The lowest sequence of the source not ended.
        fn model_floor(&self) -> Seq {
            self.source
                .iter()
                .map(|(q, _)| *q)
                .find(|q| !self.ended.contains_key(q))
                .unwrap_or(u64::MAX)
        }

        fn read(&mut self) {
            let from = self.state.cursor();
            let i = self.source.partition_point(|(q, _)| *q < from);
            let mut n = self.rng.below(8);
            for (seq, stream) in self.source.iter().skip(i) {
                if n == 0 || !self.state.wants_more() {
                    break;
                }
                self.state.offer(*seq, stream.clone(), *seq, 10);
                n -= 1;
            }
            if n > 0 && self.state.wants_more() {
                // Read to the end: nothing more in the source.
                let end = self.source.last().map_or(0, |(q, _)| q + 1);
                self.state.advance_to(end);
            }
        }

        fn deliver(&mut self, consumer: ConsumerId) {
            let Some(d) = self.state.deliver(consumer, self.now) else {
                return;
            };
            assert_eq!(d.item, d.seq);
            *self.deliveries.entry(d.seq).or_default() += 1;
            // Counted across restarts from the stored counts: within one
            // life an event goes out at most `max_deliveries` times, or
            // once more than its restored count (a restart delivers again
            // what was in flight).
            let restored = self.restored.get(&d.seq).copied().unwrap_or(0);
            let life = self.life_deliveries.entry(d.seq).or_default();
            *life += 1;
            assert_eq!(d.deliveries, restored + *life, "the count of {}", d.seq);
            assert!(
                d.deliveries <= LIMITS.max_deliveries.max(restored + 1),
                "{} delivered {} times (restored count {restored})",
                d.seq,
                d.deliveries
            );
            self.consumers.get_mut(&consumer).unwrap().push(d.seq);
        }

        fn take_from(&mut self, consumer: ConsumerId) -> Option<Seq> {
            let held = self.consumers.get_mut(&consumer)?;
            if held.is_empty() {
                return None;
            }
            let i = self.rng.below(held.len() as u64) as usize;
            Some(held.swap_remove(i))
        }

        fn end(&mut self, seq: Seq, how: End) {
            self.ended.entry(seq).or_insert(how);
            self.finished_this_life.insert(seq);
            self.finished_since_store.insert(seq);
        }

        fn step(&mut self, failures: bool) {
            let ids: Vec<ConsumerId> = self.consumers.keys().copied().collect();
            let pick = |rng: &mut Rng| ids.get(rng.below(ids.len() as u64) as usize).copied();
            match self.rng.below(100) {
                0..15 => self.read(),
                15..40 => {
                    if let Some(c) = pick(&mut self.rng) {
                        self.deliver(c);
                    }
                }
                40..65 => {
                    if let Some(c) = pick(&mut self.rng)
                        && let Some(seq) = self.take_from(c)
                        && self.state.ack(seq)
                    {
                        let stream = self.stream_of(seq);
                        if self.strategy == Strategy::PerStream && !self.ended.contains_key(&seq) {
                            let last = self.first_success.insert(stream, seq);
                            assert!(
                                last.is_none_or(|l| l < seq),
                                "first successes out of order: {seq} after {last:?}"
                            );
                        }
                        self.end(seq, End::Acked);
                    }
                }
                65..72 if failures => {
                    if let Some(c) = pick(&mut self.rng)
                        && let Some(seq) = self.take_from(c)
                    {
                        let nack = match self.rng.below(10) {
                            0 => Nack::Park {
                                reason: "bad".into(),
                            },
                            1 => Nack::Skip,
                            _ => Nack::Retry {
                                delay_ms: self.rng.below(50),
                            },
                        };
                        let skip = nack == Nack::Skip;
                        if self.state.nack(seq, c, nack, self.now) && skip {
                            self.end(seq, End::Skipped);
                        }
                    }
                }
                72..76 => {
                    if let Some(c) = pick(&mut self.rng)
                        && let Some(held) = self.consumers.get(&c)
                        && let Some(&seq) = held.first()
                    {
                        self.state.extend(seq, c, self.now);
                    }
                }
                76..86 => {
                    self.now += self.rng.below(60);
                    self.state.tick(self.now);
                }
                86..89 if failures => {
                    if let Some(c) = pick(&mut self.rng) {
                        self.consumers.remove(&c);
                        self.state.consumer_left(c, self.now);
                    }
                }
                89..92 if self.consumers.len() < 4 => {
                    self.consumers.insert(self.next_consumer, Vec::new());
                    self.next_consumer += 1;
                }
                92..96 => {
                    // Parks made durable, some of them.
                    let parking = std::mem::take(&mut self.parking);
                    for seq in parking {
                        if self.rng.chance(70) {
                            self.state.parked(seq);
                            self.end(seq, End::Parked);
                        } else {
                            self.parking.push(seq);
                        }
                    }
                }
                96..98 => self.store(),
                98..100 if failures => {
                    let graceful = self.rng.chance(50);
                    self.restart(graceful);
                }
                _ => {}
            }
            for p in self.state.take_parks() {
                assert_eq!(p.stream, self.stream_of(p.seq));
                self.parking.push(p.seq);
            }
            self.check();
        }

        fn store(&mut self) {
            self.stored = self.state.checkpoint();
            self.finished_since_store.clear();
        }

        fn restart(&mut self, graceful: bool) {
            if graceful {
                self.store();
            } else {
                self.crashes += 1;
            }
            // Everything the consumers held is gone with the connections;
            // parks not yet written are lost (their events are not done).
            self.consumers.clear();
            self.parking.clear();
            let delivered_before: HashSet<Seq> = self.deliveries.keys().copied().collect();
            self.state = GroupState::restore(LIMITS, self.strategy, &self.stored);
            // What can come again: delivered, and neither below the stored
            // floor nor stored as done.
            let stored_done: HashSet<Seq> = self.stored.done.iter().copied().collect();
            for q in delivered_before {
                if q >= self.stored.floor
                    && !stored_done.contains(&q)
                    && self.finished_this_life.contains(&q)
                {
                    // A finished event comes again only if it finished
                    // after the stored checkpoint (never after a clean
                    // restart, which stores one first).
                    assert!(
                        self.finished_since_store.contains(&q),
                        "{q}, finished before the stored checkpoint, would come again"
                    );
                    assert!(
                        !graceful,
                        "{q}, finished, would come again after a clean restart"
                    );
                }
            }
            self.finished_this_life.clear();
            self.finished_since_store.clear();
            self.restored = self.stored.deliveries.iter().copied().collect();
            self.life_deliveries.clear();
            self.first_success.clear();
        }

        fn check(&self) {
            let s = &self.state;
            // The stored checkpoint is never above the floor.
            let floor = self.model_floor();
            assert!(
                self.stored.floor <= floor,
                "stored floor {} above the model's {floor}",
                self.stored.floor
            );
            for q in &self.stored.done {
                assert!(
                    self.ended.contains_key(q),
                    "{q} stored as done, not finished"
                );
            }
            assert!(s.checkpoint().floor <= floor);
            // Within the limits.
            assert!(s.in_flight() <= LIMITS.max_in_flight as usize);
            assert!(s.slots.len() + s.done.len() <= LIMITS.max_ahead as usize + 1);
            // Per-stream: one event of a stream in flight or waiting.
            if self.strategy == Strategy::PerStream {
                let mut busy: HashMap<&Text, Seq> = HashMap::new();
                for (q, slot) in &s.slots {
                    if matches!(
                        slot.state,
                        SlotState::InFlight { .. } | SlotState::Waiting { .. }
                    ) && let Some(other) = busy.insert(&slot.stream, *q)
                    {
                        panic!("{other} and {q} of {} at once", slot.stream.as_str());
                    }
                }
            }
            // The indexes agree with the slots.
            let flying = s
                .slots
                .values()
                .filter(|x| matches!(x.state, SlotState::InFlight { .. }))
                .count();
            assert_eq!(flying, s.deadlines.len());
            let waiting = s
                .slots
                .values()
                .filter(|x| matches!(x.state, SlotState::Waiting { .. }))
                .count();
            assert_eq!(waiting, s.waits.len());
            for q in &s.ready {
                assert_eq!(s.slots[q].state, SlotState::Ready);
            }
            assert_eq!(s.bytes, s.slots.values().map(|x| x.bytes).sum::<usize>());
        }

        /// Ends the run: no more failures; every consumer acks all it gets
        /// until the whole source has ended.
        fn drain(&mut self) {
            self.consumers.entry(self.next_consumer).or_default();
            let mut rounds = 0;
            while self.ended.len() < self.source.len() {
                rounds += 1;
                assert!(
                    rounds < 100_000,
                    "the group does not finish: {:?}",
                    self.state.checkpoint()
                );
                self.read();
                for seq in std::mem::take(&mut self.parking) {
                    self.state.parked(seq);
                    self.end(seq, End::Parked);
                }
                let ids: Vec<ConsumerId> = self.consumers.keys().copied().collect();
                for c in ids {
                    self.deliver(c);
                    while let Some(seq) = self.take_from(c) {
                        if self.state.ack(seq) {
                            self.end(seq, End::Acked);
                        }
                    }
                }
                for p in self.state.take_parks() {
                    self.parking.push(p.seq);
                }
                self.now += 200;
                self.state.tick(self.now);
                self.check();
            }
            assert_eq!(self.state.outstanding(), 0);
            let end = self.source.last().map_or(0, |(q, _)| q + 1);
            assert_eq!(self.state.floor(), end);
        }
    }

    fn run(seed: u64, strategy: Strategy) {
        let mut r = Run::new(seed, strategy, 300);
        for _ in 0..3_000 {
            r.step(true);
        }
        r.drain();
        for (q, _) in &r.source {
            assert!(r.ended.contains_key(q), "{q} never ended");
        }
    }

    #[test]
    fn round_robin_against_the_model() {
        for seed in 1..=150 {
            run(seed * 0x9E37_79B9, Strategy::RoundRobin);
        }
    }

    #[test]
    fn per_stream_against_the_model() {
        for seed in 1..=150 {
            run(seed * 0x9E37_79B9, Strategy::PerStream);
        }
    }

    #[test]
    fn a_poison_event_is_parked_after_max_deliveries_while_others_go_on() {
        let mut s: GroupState<u64> = GroupState::new(LIMITS, Strategy::PerStream, 0);
        for q in 0..10 {
            let stream = if q == 0 { "poison" } else { "other" };
            s.offer(q, Text::from(format!("{stream}-{}", q % 3)), q, 1);
        }
        let mut now = 0;
        let mut tries = 0;
        loop {
            // A consumer that crashes on event 0 each time it gets it.
            let mut got = Vec::new();
            while let Some(d) = s.deliver(7, now) {
                got.push(d.seq);
            }
            for q in &got {
                if *q != 0 {
                    assert!(s.ack(*q));
                }
            }
            if !got.contains(&0) {
                break;
            }
            tries += 1;
            s.consumer_left(7, now);
            now += 1;
        }
        assert_eq!(tries, LIMITS.max_deliveries);
        let parks = s.take_parks();
        assert_eq!(parks.len(), 1);
        assert_eq!(parks[0].seq, 0);
        assert_eq!(parks[0].deliveries, LIMITS.max_deliveries);
        // Not finished until its record is durable: the floor holds.
        assert_eq!(s.floor(), 0);
        s.parked(0);
        assert_eq!(s.floor(), 10);
        assert_eq!(s.outstanding(), 0);
    }

    #[test]
    fn per_stream_holds_a_stream_behind_its_retry_only() {
        let mut s: GroupState<u64> = GroupState::new(LIMITS, Strategy::PerStream, 0);
        s.offer(0, Text::from("a"), 0, 1);
        s.offer(1, Text::from("a"), 1, 1);
        s.offer(2, Text::from("b"), 2, 1);
        assert_eq!(s.deliver(1, 0).map(|d| d.seq), Some(0));
        assert_eq!(s.deliver(1, 0).map(|d| d.seq), Some(2));
        assert_eq!(s.deliver(1, 0), None, "a's next waits for its first");
        assert!(s.nack(0, 1, Nack::Retry { delay_ms: 50 }, 0));
        assert_eq!(s.deliver(2, 10), None, "the retry holds a back");
        s.tick(50);
        assert_eq!(
            s.deliver(2, 50).map(|d| (d.seq, d.deliveries)),
            Some((0, 2))
        );
        assert!(s.ack(0));
        assert_eq!(s.deliver(2, 50).map(|d| d.seq), Some(1));
        // A late ack of an event finished already changes nothing.
        assert!(!s.ack(0));
        // A stale nack from a consumer that does not hold it neither.
        assert!(!s.nack(1, 1, Nack::Skip, 60));
        assert!(s.ack(1) && s.ack(2));
        assert_eq!(s.floor(), 3);
    }

    #[test]
    fn a_park_holds_its_stream_until_durable_and_undelivered_acks_count_for_nothing() {
        let mut s: GroupState<u64> = GroupState::new(LIMITS, Strategy::PerStream, 0);
        s.offer(0, Text::from("a"), 0, 1);
        s.offer(1, Text::from("a"), 1, 1);
        // An ack for an event never delivered (an id from an earlier life)
        // would let `a` go out of order: refused.
        assert!(!s.ack(1));
        assert_eq!(s.deliver(1, 0).map(|d| d.seq), Some(0));
        assert!(s.nack(0, 1, Nack::Park { reason: "x".into() }, 0));
        assert_eq!(s.deliver(1, 0), None, "a waits until the park is durable");
        assert_eq!(s.take_parks().len(), 1);
        s.parked(0);
        assert_eq!(s.deliver(1, 0).map(|d| d.seq), Some(1));
        // A retry is put off a day at most.
        assert!(s.nack(1, 1, Nack::Retry { delay_ms: u64::MAX }, 0));
        assert_eq!(s.next_timer(), Some(MAX_RETRY_DELAY_MS));
    }

    #[test]
    fn a_retry_due_after_max_deliveries_was_lowered_is_parked() {
        let mut s: GroupState<u64> = GroupState::new(LIMITS, Strategy::RoundRobin, 0);
        s.offer(0, Text::from("a"), 0, 1);
        for _ in 0..2 {
            s.deliver(1, 0);
            assert!(s.nack(0, 1, Nack::Retry { delay_ms: 0 }, 0));
        }
        s.deliver(1, 0);
        assert!(s.nack(0, 1, Nack::Retry { delay_ms: 10 }, 0));
        s.set_limits(Limits {
            max_deliveries: 2,
            ..LIMITS
        });
        s.tick(10);
        assert_eq!(s.deliver(1, 10), None);
        assert_eq!(s.take_parks().len(), 1);
    }

    #[test]
    fn removed_events_drop_out_instead_of_being_delivered() {
        let mut s: GroupState<u64> = GroupState::new(LIMITS, Strategy::PerStream, 0);
        s.offer(0, Text::from("gone"), 0, 1);
        s.offer(1, Text::from("gone"), 1, 1);
        s.offer(2, Text::from("kept"), 2, 1);
        let live = |item: &u64| *item == 2;
        assert_eq!(s.deliver_live(1, 0, live).map(|d| d.seq), Some(2));
        assert_eq!(s.deliver_live(1, 0, live), None);
        assert_eq!(s.stats.removed, 2);
        assert!(s.ack(2));
        assert_eq!(s.floor(), 3);
    }

    #[test]
    fn a_checkpoint_restores_done_events_and_delivery_counts() {
        let mut s: GroupState<u64> = GroupState::new(LIMITS, Strategy::RoundRobin, 5);
        for q in 5..15 {
            s.offer(q, Text::from("x"), q, 1);
        }
        for _ in 0..6 {
            s.deliver(1, 0);
        }
        assert!(s.ack(6) && s.ack(8));
        let cp = s.checkpoint();
        assert_eq!(cp.floor, 5);
        assert_eq!(cp.done, vec![6, 8]);
        assert_eq!(cp.deliveries, vec![(5, 1), (7, 1), (9, 1), (10, 1)]);
        let mut r: GroupState<u64> = GroupState::restore(LIMITS, Strategy::RoundRobin, &cp);
        for q in 5..15 {
            r.offer(q, Text::from("x"), q, 1);
        }
        let mut again = Vec::new();
        while let Some(d) = r.deliver(2, 0) {
            again.push((d.seq, d.deliveries));
        }
        assert_eq!(
            again,
            vec![
                (5, 2),
                (7, 2),
                (9, 2),
                (10, 2),
                (11, 1),
                (12, 1),
                (13, 1),
                (14, 1)
            ]
        );
    }

    #[test]
    fn replayed_parked_events_never_hold_the_floor_nor_enter_checkpoints() {
        let mut s: GroupState<u64> = GroupState::new(LIMITS, Strategy::PerStream, 0);
        s.offer(0, Text::from("a"), 0, 1);
        s.offer_replay(REPLAY_BIT | 7, Text::from("a"), 99, 1);
        s.offer_replay(REPLAY_BIT | 8, Text::from("b"), 98, 1);
        assert_eq!(s.replay_floor(), Some(7));
        // Per-stream: the replayed event of `a` waits behind `a`'s event.
        let first: Vec<Seq> = std::iter::from_fn(|| s.deliver(1, 0).map(|d| d.seq)).collect();
        assert_eq!(first, vec![0, REPLAY_BIT | 8]);
        assert!(s.ack(0));
        assert_eq!(s.floor(), 1, "replays do not hold the floor");
        let d = s.deliver(1, 0).unwrap();
        assert_eq!((d.seq, d.item, d.deliveries), (REPLAY_BIT | 7, 99, 1));
        let cp = s.checkpoint();
        assert!(cp.done.is_empty() && cp.deliveries.is_empty(), "{cp:?}");
        assert!(s.ack(REPLAY_BIT | 7) && s.ack(REPLAY_BIT | 8));
        assert_eq!(s.replay_floor(), None);
        assert!(s.checkpoint().done.is_empty());
    }

    #[test]
    fn reading_ahead_stops_at_max_ahead_and_resumes_as_the_floor_moves() {
        let limits = Limits {
            max_ahead: 5,
            ..LIMITS
        };
        let mut s: GroupState<u64> = GroupState::new(limits, Strategy::RoundRobin, 0);
        let mut q = 0;
        while s.wants_more() {
            s.offer(q, Text::from("x"), q, 1);
            q += 1;
        }
        assert_eq!(q, 5);
        // Acks above a stuck floor do not make room: they are kept.
        s.deliver(1, 0);
        for _ in 1..5 {
            let d = s.deliver(1, 0).unwrap();
            s.ack(d.seq);
        }
        assert!(!s.wants_more());
        assert!(s.ack(0));
        assert!(s.wants_more());
        assert_eq!(s.floor(), 5);
    }
}
