//! A connection's outgoing bytes, and the server-wide budget they count
//! against.
//!
//! Whoever produces a reply encodes it straight into the shared buffer
//! (no intermediate frame, no channel message per reply) and wakes the
//! connection's writer task, which swaps the buffer out and writes it with
//! one call. Replies produced while a write is in progress leave together in
//! the next one, so a busy connection makes few system calls.
//!
//! The budget (PROTOCOL.md is silent on it; RELIABILITY.md states the
//! bound): every byte waiting in any outbox counts in
//! `NetStats::outbox_bytes`. Producers of large replies and pushes (read
//! pages, catch-up and live batches, backup chunks) first take a [`Room`],
//! which adds their largest size to the count *before* they read anything,
//! and only if that keeps the count within the server's limit (and the
//! connection within [`HIGH_WATER`] of its own): checking and adding are
//! one atomic step, so any number of connections together cannot pass the
//! limit by checking at once. While a room is held its bytes are counted
//! twice (reserved, and pushed), which only ever overstates. Small replies
//! (append results, errors, pongs, control pushes) are not reserved: a
//! connection stops reading requests while it holds `HIGH_WATER`, or any
//! bytes while the server is over its limit, so they stay few. A reader
//! that finds no room waits for bytes to drain anywhere; a client that
//! never reads is closed after the write timeout, which gives its bytes
//! back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use logbook_protocol::RecordedEvent;
use logbook_protocol::msg::recorded_event_wire_len;

use super::NetStats;

/// Outgoing bytes above which the connection stops reading requests until
/// the client has read some replies: a client that never reads cannot make
/// the server buffer without bound.
pub const HIGH_WATER: usize = 4 << 20;

/// A room of up to this size is granted to a connection holding nothing,
/// even when the server is over its limit: a well-behaved client's small
/// reads go on while slow ones hold the budget.
pub const SMALL_ROOM: usize = 64 << 10;

/// A buffer that grew past this size for one large reply is given back
/// once it is written, so that a connection that once read a large page
/// does not keep its memory.
const KEEP_CAPACITY: usize = 256 << 10;

/// The buffer a connection starts with.
const INITIAL_CAPACITY: usize = 16 << 10;

#[derive(Debug, Default)]
struct State {
    buf: BytesMut,
    /// Bytes of the write in progress (swapped out of `buf`).
    writing: usize,
    /// Bytes of the rooms taken on this connection and not yet given back.
    reserved: usize,
    closed: bool,
    /// The writer task has stopped: nothing more will be written.
    done: bool,
}

/// The outgoing buffer of one connection.
#[derive(Debug)]
pub struct Outbox {
    stats: Arc<NetStats>,
    /// Outgoing bytes all connections together may hold before those with
    /// bytes pending stop reading.
    total_limit: usize,
    /// A write that makes no progress for this long fails, and the
    /// connection closes: a client that never reads gives its bytes back.
    write_timeout: Duration,
    state: Mutex<State>,
    /// Wakes the writer: there are bytes, or the connection is closing.
    ready: Notify,
    /// Wakes the reader: the buffer drained below `HIGH_WATER`.
    drained: Notify,
    /// The socket failed or timed out: nothing more will be written.
    broken: AtomicBool,
    broken_notify: Notify,
}

/// Bytes reserved on the server's outbox budget for a reply or push being
/// produced; given back when dropped.
#[derive(Debug)]
pub struct Room {
    out: Arc<Outbox>,
    bytes: usize,
}

impl Room {
    /// The bytes reserved: the most the producer should read for its
    /// reply (one event past it may still be taken: see [`Room::cover`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the room by `extra` bytes if the server's limit allows it
    /// now (or if this room is all the server holds, so that one event
    /// larger than the limit still goes, alone).
    fn try_grow(&mut self, extra: usize) -> bool {
        let limit = self.out.total_limit as u64;
        let total = &self.out.stats.outbox_bytes;
        let mut cur = total.load(Ordering::Relaxed);
        loop {
            let alone = cur <= self.bytes as u64;
            if cur + extra as u64 > limit && !alone {
                return false;
            }
            match total.compare_exchange_weak(
                cur,
                cur + extra as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.out.state.lock().reserved += extra;
                    self.bytes += extra;
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    /// Makes the room cover `events` now, without waiting: grows it for
    /// them, or, if the server has no room for all, leaves out the events
    /// past the room (possibly all of them) and returns the first left out.
    pub fn fit(&mut self, events: &mut Vec<RecordedEvent>) -> Option<RecordedEvent> {
        self.fit_split(events).into_iter().next()
    }

    /// [`Room::fit`], returning every event left out.
    fn fit_split(&mut self, events: &mut Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        let need: usize = events.iter().map(event_bytes).sum::<usize>() + EVENT_FRAMING;
        if need <= self.bytes || self.try_grow(need - self.bytes) {
            return Vec::new();
        }
        let mut used = EVENT_FRAMING;
        let fit = events
            .iter()
            .take_while(|e| {
                used += event_bytes(e);
                used <= self.bytes
            })
            .count();
        events.split_off(fit)
    }

    /// Grows the room to `need` bytes, waiting for the server's budget if
    /// need be (bytes drain, or slow clients are closed at the write
    /// timeout). False if the connection broke meanwhile.
    pub async fn wait_grow(&mut self, need: usize) -> bool {
        let out = Arc::clone(&self.out);
        loop {
            let freed = out.stats.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let drained = out.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if out.is_broken() {
                return false;
            }
            if self.bytes >= need || self.try_grow(need - self.bytes) {
                return true;
            }
            tokio::select! {
                () = freed => {}
                () = drained => {}
                () = out.wait_broken() => return false,
            }
        }
    }
}

/// What a read that returned `events` within a [`Room`] needs to do.
pub enum Covered {
    /// Send `events` (some may have been left out: the first of those is
    /// here, to say where to go on).
    Send(Option<RecordedEvent>),
    /// Not even the first event fits: drop the read, grow the room to
    /// this many bytes, and read again (a read returns at least one event
    /// whatever its byte budget, so its result is not kept while waiting:
    /// a waiting connection holds nothing).
    Grow(usize),
}

impl Room {
    /// Checks what a read within this room returned: [`Covered`].
    pub fn cover(&mut self, events: &mut Vec<RecordedEvent>) -> Covered {
        let Some(first) = events.first().map(event_bytes) else {
            return Covered::Send(None);
        };
        let left = self.fit(events);
        if events.is_empty() {
            Covered::Grow(first + EVENT_FRAMING)
        } else {
            Covered::Send(left)
        }
    }
}

/// The bytes an event takes in a reply or push, with its share of framing.
fn event_bytes(e: &RecordedEvent) -> usize {
    recorded_event_wire_len(e) + EVENT_FRAMING
}

/// Frame header and message overhead counted per event and per reply by
/// [`Room::cover`] (generous: a push of one event carries one frame).
const EVENT_FRAMING: usize = 64;

impl Drop for Room {
    fn drop(&mut self) {
        let mut s = self.out.state.lock();
        s.reserved -= self.bytes;
        drop(s);
        self.out.release(self.bytes);
        self.out.drained.notify_waiters();
    }
}

impl Outbox {
    /// An empty outbox that accounts its bytes in `stats`.
    pub fn new(stats: Arc<NetStats>, total_limit: usize, write_timeout: Duration) -> Outbox {
        Outbox {
            stats,
            total_limit,
            write_timeout,
            state: Mutex::new(State {
                buf: BytesMut::with_capacity(INITIAL_CAPACITY),
                ..State::default()
            }),
            ready: Notify::new(),
            drained: Notify::new(),
            broken: AtomicBool::new(false),
            broken_notify: Notify::new(),
        }
    }

    /// Encodes something into the buffer with `f` and wakes the writer.
    /// Returns `f`'s result; on error `f` must leave the buffer unchanged
    /// (the protocol's encoders do).
    pub fn push<T>(&self, f: impl FnOnce(&mut BytesMut) -> T) -> T {
        let out = {
            let mut s = self.state.lock();
            let before = s.buf.len();
            let out = f(&mut s.buf);
            let after = s.buf.len();
            if s.done || (s.closed && self.broken.load(Ordering::Relaxed)) {
                // Nobody will write these: do not keep or count them.
                s.buf.truncate(before);
            } else {
                self.stats
                    .outbox_bytes
                    .fetch_add((after - before) as u64, Ordering::Relaxed);
                self.stats
                    .outbox_peak
                    .fetch_max((after + s.writing) as u64, Ordering::Relaxed);
            }
            out
        };
        self.ready.notify_one();
        out
    }

    /// Bytes waiting to be written, the write in progress included, and
    /// rooms taken for bytes still being produced.
    pub fn pending(&self) -> usize {
        let s = self.state.lock();
        s.buf.len() + s.writing + s.reserved
    }

    /// Takes `n` bytes off the server's count, and wakes producers waiting
    /// for room anywhere if the count is now under the limit (while slow
    /// clients hold the whole budget, waiters wake only when their own
    /// connection drains; a waiter may need more than the first bytes
    /// freed, so every release under the limit wakes them).
    fn release(&self, n: usize) {
        let before = self
            .stats
            .outbox_bytes
            .fetch_sub(n as u64, Ordering::AcqRel);
        if before - (n as u64) < self.total_limit as u64 {
            self.stats.freed.notify_waiters();
        }
    }

    /// Whether the reader should pause until the client catches up: this
    /// connection holds `HIGH_WATER` bytes, or holds any while all
    /// connections together are over the server's limit (so that a
    /// thousand slow clients cannot each hold 4 MiB).
    pub fn is_full(&self) -> bool {
        let pending = self.pending();
        pending >= HIGH_WATER
            || (pending > 0
                && self.stats.outbox_bytes.load(Ordering::Relaxed) >= self.total_limit as u64)
    }

    /// Reserves room for a reply or push of up to `want` bytes, and at
    /// least `min`: as much of `want` as the server's limit and this
    /// connection's `HIGH_WATER` leave (a connection holding nothing may
    /// take more than `HIGH_WATER` at once, up to the limit, so that one
    /// large page can be sent). `None` if not even `min` fits now, except
    /// that a connection holding nothing always gets [`SMALL_ROOM`].
    pub fn try_room(self: &Arc<Self>, want: usize, min: usize) -> Option<Room> {
        let min = min.min(want);
        // Under the state lock: this connection's rooms are taken one at a
        // time, so that its small-room allowance is one room, not one per
        // subscription asking at once.
        let mut s = self.state.lock();
        let pending = s.buf.len() + s.writing + s.reserved;
        let own = if pending == 0 {
            usize::MAX
        } else {
            HIGH_WATER.saturating_sub(pending)
        };
        let limit = self.total_limit as u64;
        let total = &self.stats.outbox_bytes;
        let mut cur = total.load(Ordering::Relaxed);
        loop {
            let free = limit.saturating_sub(cur).min(own as u64) as usize;
            let bytes = if free >= min {
                free.min(want)
            } else if pending == 0 && (min <= SMALL_ROOM || cur == 0) {
                // The small room every connection may take; or, when the
                // server holds nothing at all, one event larger than its
                // whole limit, alone.
                min
            } else {
                return None;
            };
            match total.compare_exchange_weak(
                cur,
                cur + bytes as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    s.reserved += bytes;
                    return Some(Room {
                        out: Arc::clone(self),
                        bytes,
                    });
                }
                Err(now) => cur = now,
            }
        }
    }

    /// [`Outbox::try_room`], waiting for bytes to drain (on any connection)
    /// until it succeeds; `None` if this connection broke meanwhile.
    pub async fn room(self: &Arc<Self>, want: usize, min: usize) -> Option<Room> {
        loop {
            let freed = self.stats.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.is_broken() {
                return None;
            }
            if let Some(r) = self.try_room(want, min) {
                return Some(r);
            }
            tokio::select! {
                () = freed => {}
                () = drained => {}
                () = self.wait_broken() => return None,
            }
        }
    }

    /// Resolves when the connection is no longer full ([`Outbox::is_full`]),
    /// or at once if it is not.
    pub async fn wait_drained(&self) {
        loop {
            // This connection's bytes drain, or the server's total falls
            // under its limit (bytes drained elsewhere): either can end it.
            let drained = self.drained.notified();
            let freed = self.stats.freed.notified();
            if !self.is_full() {
                return;
            }
            tokio::select! {
                () = drained => {}
                () = freed => {}
            }
        }
    }

    /// Whether the socket failed or a write timed out.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Resolves once the socket failed or a write timed out.
    pub async fn wait_broken(&self) {
        loop {
            let notified = self.broken_notify.notified();
            if self.is_broken() {
                return;
            }
            notified.await;
        }
    }

    /// Asks the writer to write what is buffered and then stop.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_one();
    }

    /// The writer task: writes buffered bytes until closed (or the socket
    /// fails, or makes no progress within the write timeout), then shuts
    /// the socket's write side down.
    pub async fn write_loop<W: AsyncWrite + Unpin>(&self, mut wr: W) -> std::io::Result<()> {
        let mut spare = BytesMut::with_capacity(INITIAL_CAPACITY);
        loop {
            let closed = {
                let mut s = self.state.lock();
                // Swap buffers so producers keep encoding into warm memory
                // while this one is written.
                std::mem::swap(&mut s.buf, &mut spare);
                s.writing = spare.len();
                s.closed
            };
            if spare.is_empty() {
                if closed {
                    self.state.lock().done = true;
                    break;
                }
                self.ready.notified().await;
                continue;
            }
            let result = self.write_all(&mut wr, &spare).await;
            let written = spare.len();
            self.state.lock().writing = 0;
            self.release(written);
            if spare.capacity() > KEEP_CAPACITY {
                spare = BytesMut::with_capacity(INITIAL_CAPACITY);
            } else {
                spare.clear();
            }
            self.drained.notify_waiters();
            if let Err(e) = result {
                // The client is gone or stuck: make producers' pushes
                // harmless, give the buffered bytes back, and wake the
                // connection's reader.
                let mut s = self.state.lock();
                s.closed = true;
                s.done = true;
                self.broken.store(true, Ordering::Release);
                let dropped = s.buf.len();
                s.buf = BytesMut::new();
                drop(s);
                self.release(dropped);
                self.drained.notify_waiters();
                self.broken_notify.notify_waiters();
                return Err(e);
            }
        }
        // A TLS close sends a last record: bounded like any write.
        tokio::time::timeout(self.write_timeout, wr.shutdown())
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client read nothing for the write timeout",
                ))
            })
    }

    /// Writes `bytes`, failing if the socket accepts none of them for the
    /// write timeout.
    async fn write_all<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut W,
        mut bytes: &[u8],
    ) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let n = tokio::time::timeout(self.write_timeout, wr.write(bytes))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client read nothing for the write timeout",
                    )
                })??;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            bytes = bytes.get(n..).unwrap_or_default();
        }
        // A TLS stream takes bytes into its buffer and may hold some there
        // until flushed (a plain socket's flush does nothing).
        tokio::time::timeout(self.write_timeout, wr.flush())
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client read nothing for the write timeout",
                )
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(stats: &Arc<NetStats>, limit: usize) -> Arc<Outbox> {
        Arc::new(Outbox::new(
            Arc::clone(stats),
            limit,
            Duration::from_secs(60),
        ))
    }

    /// Rooms are taken atomically against the server's limit: whatever
    /// connections ask, the reserved total never passes it, except for the
    /// small room an empty connection always gets; and dropping a room
    /// gives its bytes back.
    #[test]
    fn rooms_never_pass_the_limit() {
        let stats = Arc::new(NetStats::default());
        let limit = 10 << 20;
        let outs: Vec<Arc<Outbox>> = (0..8).map(|_| outbox(&stats, limit)).collect();
        let big: Vec<Room> = outs
            .iter()
            .filter_map(|o| o.try_room(3 << 20, 1 << 20))
            .collect();
        // 3 + 3 + 3 MiB, then the last 1 MiB: 4 rooms, exactly the limit.
        assert_eq!(big.len(), 4);
        assert_eq!(big.iter().map(Room::bytes).sum::<usize>(), limit);
        assert_eq!(
            stats.outbox_bytes.load(Ordering::Relaxed),
            limit as u64,
            "counted before anything is read"
        );
        // Over the limit: only the small room, and only if it is all.
        assert!(outs[0].try_room(1 << 20, 1 << 20).is_none());
        let small = outs[7].try_room(1 << 20, SMALL_ROOM).expect("small room");
        assert_eq!(small.bytes(), SMALL_ROOM);
        // One small room per connection at a time (many subscriptions on
        // one connection asking at once get one between them).
        assert!(outs[7].try_room(1 << 20, SMALL_ROOM).is_none());
        drop(small);
        drop(big);
        assert_eq!(stats.outbox_bytes.load(Ordering::Relaxed), 0);
    }

    /// A connection holding bytes gets room only within its own high
    /// water mark, and none past it.
    #[test]
    fn a_connection_holding_bytes_stays_within_its_high_water_mark() {
        let stats = Arc::new(NetStats::default());
        let o = outbox(&stats, usize::MAX);
        o.push(|b| b.extend_from_slice(&vec![0u8; HIGH_WATER - 1000]));
        assert_eq!(o.try_room(1 << 20, 1).map(|r| r.bytes()), Some(1000));
        assert!(o.try_room(1 << 20, SMALL_ROOM).is_none());
        assert!(!o.is_full(), "below its high water mark");
    }
}
