//! A connection's outgoing bytes.
//!
//! Whoever produces a reply encodes it straight into the shared buffer
//! (no intermediate frame, no channel message per reply) and wakes the
//! connection's writer task, which swaps the buffer out and writes it with
//! one call. Replies produced while a write is in progress leave together in
//! the next one, so a busy connection makes few system calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use super::NetStats;

/// Outgoing bytes above which the connection stops reading requests until
/// the client has read some replies: a client that never reads cannot make
/// the server buffer without bound.
pub const HIGH_WATER: usize = 4 << 20;

#[derive(Debug, Default)]
struct State {
    buf: BytesMut,
    closed: bool,
}

/// The outgoing buffer of one connection.
#[derive(Debug)]
pub struct Outbox {
    stats: Arc<NetStats>,
    /// Outgoing bytes all connections together may hold before those with
    /// bytes pending stop reading.
    total_limit: usize,
    state: Mutex<State>,
    /// Wakes the writer: there are bytes, or the connection is closing.
    ready: Notify,
    /// Wakes the reader: the buffer drained below `HIGH_WATER`.
    drained: Notify,
}

impl Outbox {
    /// An empty outbox that accounts its bytes in `stats`.
    pub fn new(stats: Arc<NetStats>, total_limit: usize) -> Outbox {
        Outbox {
            stats,
            total_limit,
            state: Mutex::default(),
            ready: Notify::new(),
            drained: Notify::new(),
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
            self.stats
                .outbox_bytes
                .fetch_add((after - before) as u64, Ordering::Relaxed);
            self.stats
                .outbox_peak
                .fetch_max(after as u64, Ordering::Relaxed);
            out
        };
        self.ready.notify_one();
        out
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.state.lock().buf.len()
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

    /// Resolves when the buffer drained below `HIGH_WATER` (or at once if it
    /// already is).
    pub async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if !self.is_full() {
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
    /// fails), then shuts the socket's write side down.
    pub async fn write_loop(&self, mut wr: OwnedWriteHalf) -> std::io::Result<()> {
        let mut spare = BytesMut::with_capacity(64 << 10);
        loop {
            let closed = {
                let mut s = self.state.lock();
                // Swap buffers so producers keep encoding into warm memory
                // while this one is written.
                std::mem::swap(&mut s.buf, &mut spare);
                s.closed
            };
            if spare.is_empty() {
                if closed {
                    break;
                }
                self.ready.notified().await;
                continue;
            }
            let result = wr.write_all(&spare).await;
            self.stats
                .outbox_bytes
                .fetch_sub(spare.len() as u64, Ordering::Relaxed);
            spare.clear();
            self.drained.notify_waiters();
            if let Err(e) = result {
                // The client is gone: make producers' pushes harmless and
                // wake a reader waiting for the buffer to drain.
                let mut s = self.state.lock();
                s.closed = true;
                self.stats
                    .outbox_bytes
                    .fetch_sub(s.buf.len() as u64, Ordering::Relaxed);
                s.buf = BytesMut::new();
                drop(s);
                self.drained.notify_waiters();
                return Err(e);
            }
        }
        wr.shutdown().await
    }
}
