//! One TCP connection: the handshake, the writer and reader tasks, and the
//! table of requests awaiting a reply.
//!
//! ```text
//!  caller tasks                          writer task         server
//!  ─────────────                         ───────────         ──────
//!  send(): table.insert(corr_id, tx) ──┐
//!          encode frame into outbox ───┼─► swap outbox out,
//!          wake writer ────────────────┘   one write() ─────► ...
//!  ReplyFuture ◄── oneshot ◄── reader task: decode_frame,     ◄── replies
//!                               table.remove(corr_id), send     (any order)
//! ```
//!
//! - **Outbox.** Callers encode their frame straight into one shared
//!   `BytesMut` (a short `parking_lot` section, never held across `.await`)
//!   and wake the writer. The writer swaps the buffer for its spare one and
//!   writes everything in one `write_all`, so requests that arrive while a
//!   write is under way leave together in the next one: batching grows with
//!   load, with no timer. The two buffers trade places forever, so steady
//!   state allocates nothing.
//! - **Table.** Entries are keyed by `corr_id` (never 0, which the server
//!   uses for connection-level errors). A [`Pending::Reply`] is removed by
//!   its reply; a [`Pending::Pushes`] entry belongs to a subscription,
//!   whose `SubscribeOk` and pushes carry the Subscribe's `corr_id` and
//!   are forwarded to its channel until it ends.
//! - **Decoding** of bodies happens in the caller's task, not the reader's:
//!   the reader only cuts frames (checking crc) and routes them, so bulk
//!   reads decode in parallel on a multi-threaded runtime.
//! - **Failure.** Whichever side fails first (read error, EOF, write error,
//!   bad frame, or the last handle dropped) calls [`Shared::close`], which
//!   marks the table closed, drops every pending sender (their callers see
//!   `Disconnected`) and cancels both tasks, dropping the socket.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use logbook_protocol::frame::decode_frame;
use logbook_protocol::{
    ErrorReply, Frame, Hello, HelloOk, Kind, Opcode, PROTOCOL_VERSION, Request, Response,
    ServerMessage,
};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use crate::error::{Error, Result};
use crate::options::ClientOptions;

/// `corr_id` of the Hello request (the first on every connection).
const HELLO_CORR_ID: u32 = 1;
/// The reader keeps at least this much free space before each read, so one
/// `read` syscall can take many frames.
const READ_MIN_FREE: usize = 16 * 1024;
/// How much the reader grows its buffer by when it runs low.
const READ_CHUNK: usize = 128 * 1024;
/// The writer's spare buffer is shrunk back to this after a burst larger
/// than [`WRITE_KEEP_MAX`], so one huge append does not pin memory forever.
const WRITE_INITIAL: usize = 64 * 1024;
/// Largest spare buffer capacity the writer keeps between writes.
const WRITE_KEEP_MAX: usize = 4 * 1024 * 1024;

/// What the reader does with frames carrying one `corr_id`.
pub(crate) enum Pending {
    /// A request awaiting its single reply (Response or Error frame).
    Reply(oneshot::Sender<Frame>),
    /// A subscription: its `SubscribeOk`, pushes and final error are all
    /// forwarded here (flow control bounds what is queued: the server sends
    /// no more events than the credit granted). An Error frame ends it.
    /// Unbounded because the reader must never wait for one slow consumer:
    /// the credit window, not the channel, bounds it.
    Pushes(mpsc::UnboundedSender<Frame>),
}

/// Requests awaiting a reply, and whether the connection still takes more.
struct Table {
    entries: HashMap<u32, Pending, BuildHasherDefault<IdHasher>>,
    /// Next `corr_id` to try; skips 0 and ids still in use after wrapping.
    next_id: u32,
    /// False once the connection has failed or been closed.
    open: bool,
}

impl Table {
    fn alloc_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            // 0 is reserved for connection-level errors (PROTOCOL.md §2.2).
            if id != 0 && !self.entries.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Hashes `corr_id`s with one multiply: they are small distinct integers,
/// not attacker-chosen keys, so SipHash would only cost time.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }

    fn finish(&self) -> u64 {
        // Fibonacci hashing spreads the bits hashbrown's control bytes use.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// State shared by the connection's handle, its two tasks and the
/// [`ReplyFuture`]s of requests in flight.
pub(crate) struct Shared {
    /// A `parking_lot` mutex: held only to insert or remove an entry (and,
    /// in the reader, to route one batch of frames), never across `.await`.
    table: Mutex<Table>,
    /// Frames waiting for the writer. Held only while one frame is encoded
    /// or while the writer swaps buffers.
    outbox: Mutex<BytesMut>,
    /// Wakes the writer. `notify_one` stores a permit when the writer is
    /// busy writing, so a wake-up is never lost.
    wake_writer: Notify,
    /// Cancelled when the connection closes; stops both tasks. Also what
    /// [`Connection::is_open`] reads, so the per-call liveness check costs
    /// no lock.
    cancel: CancellationToken,
    /// Largest frame we may send: the smaller of the server's and ours.
    max_out_frame: u32,
}

impl Shared {
    /// Marks the connection closed, fails every request awaiting a reply
    /// with `Disconnected`, and stops both tasks. Idempotent.
    pub(crate) fn close(&self, reason: &str) {
        let drained = {
            let mut table = self.table.lock();
            if !table.open {
                return;
            }
            table.open = false;
            std::mem::take(&mut table.entries)
        };
        debug!(reason, in_flight = drained.len(), "connection closed");
        // Dropping the senders (outside the lock) wakes their callers.
        drop(drained);
        self.cancel.cancel();
    }

    /// Routes a batch of frames to the requests (or subscriptions) waiting
    /// for them. Returns why the connection must close, if it must.
    fn dispatch(&self, frames: &mut Vec<Frame>) -> Option<String> {
        let mut fatal = None;
        let mut table = self.table.lock();
        for frame in frames.drain(..) {
            let id = frame.header.corr_id;
            match frame.header.kind {
                Kind::Response | Kind::Error if id == 0 => {
                    // A connection-level error: the server is about to close
                    // (it could not parse our bytes).
                    let why = match ErrorReply::decode(&frame) {
                        Ok(reply) => format!("server error on the connection: {reply}"),
                        Err(e) => format!("undecodable connection-level error: {e}"),
                    };
                    warn!("{why}");
                    fatal = Some(why);
                }
                Kind::Response | Kind::Error => match table.entries.remove(&id) {
                    Some(Pending::Reply(tx)) => {
                        // An error means the caller gave up (timeout): the
                        // late reply is dropped.
                        let _ = tx.send(frame);
                    }
                    Some(Pending::Pushes(tx)) => {
                        // SubscribeOk keeps the subscription; an error ends it.
                        let ends = frame.header.kind == Kind::Error;
                        if tx.send(frame).is_ok() && !ends {
                            table.entries.insert(id, Pending::Pushes(tx));
                        }
                    }
                    None => trace!(corr_id = id, "reply to a request no longer awaited"),
                },
                Kind::Push => match table.entries.get(&id) {
                    Some(Pending::Pushes(tx)) => {
                        if tx.send(frame).is_err() {
                            table.entries.remove(&id);
                        }
                    }
                    _ => debug!(corr_id = id, "push for no subscription ignored"),
                },
                Kind::Request => {
                    fatal = Some(format!("server sent a request frame (corr_id {id})"));
                }
            }
            if fatal.is_some() {
                break;
            }
        }
        fatal
    }
}

/// A handle to one open (or failed) connection. Dropping the last handle
/// closes it.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    hello: Arc<HelloOk>,
    /// The server's address (`None` through a custom connector).
    peer: Option<SocketAddr>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.close("client dropped the connection");
    }
}

impl Connection {
    /// Opens a connection to the first of `addrs` that completes the
    /// handshake (a node of a cluster that accepts and then dies, or is
    /// shutting down, is passed over for the next), each attempt bounded by
    /// the connect timeout. An answer that would be the same from every
    /// address (a refused login, say) ends the search.
    pub(crate) async fn open(addrs: &[SocketAddr], options: &ClientOptions) -> Result<Connection> {
        if options.connector.is_some() || addrs.len() <= 1 {
            return Connection::open_one(addrs, options).await;
        }
        let mut failure = None;
        for addr in addrs {
            match Connection::open_one(std::slice::from_ref(addr), options).await {
                Ok(c) => return Ok(c),
                Err(e) if e.is_retryable() || matches!(e, Error::Timeout) => failure = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(failure.unwrap_or(Error::Disconnected))
    }

    /// Connects to the first of `addrs` that accepts, says Hello and waits
    /// for `HelloOk`, then starts the reader and writer tasks. The whole
    /// exchange is bounded by the connect timeout.
    async fn open_one(addrs: &[SocketAddr], options: &ClientOptions) -> Result<Connection> {
        let attempt = async {
            if let Some(connector) = &options.connector {
                let mut s = connector.open().await.map_err(Error::Connect)?;
                let mut buf = BytesMut::with_capacity(READ_CHUNK);
                let hello = handshake(&mut s, options, &mut buf).await?;
                return Ok::<_, Error>((Stream::Other(s), buf, hello, None));
            }
            let stream = TcpStream::connect(addrs).await.map_err(Error::Connect)?;
            let peer = stream.peer_addr().ok();
            // Requests are small and latency-bound; the writer batches them
            // itself, so Nagle's algorithm would only add delay.
            stream.set_nodelay(true).map_err(Error::Connect)?;
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            let (stream, hello) = match &options.tls {
                None => {
                    let mut s = stream;
                    let hello = handshake(&mut s, options, &mut buf).await?;
                    (Stream::Plain(s), hello)
                }
                Some(tls) => {
                    let (connector, name) = tls.connector();
                    let mut s = connector
                        .connect(name, stream)
                        .await
                        .map_err(Error::Connect)?;
                    let hello = handshake(&mut s, options, &mut buf).await?;
                    (Stream::Tls(Box::new(s)), hello)
                }
            };
            Ok::<_, Error>((stream, buf, hello, peer))
        };
        let (stream, buf, hello, peer) = match options.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt).await.map_err(|_| {
                Error::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection and handshake within {limit:?}"),
                ))
            })??,
            None => attempt.await?,
        };
        debug!(
            server_version = %hello.server_version,
            max_in_flight = hello.max_in_flight,
            "connected"
        );

        let shared = Arc::new(Shared {
            table: Mutex::new(Table {
                entries: HashMap::default(),
                next_id: HELLO_CORR_ID.wrapping_add(1),
                open: true,
            }),
            outbox: Mutex::new(BytesMut::with_capacity(WRITE_INITIAL)),
            wake_writer: Notify::new(),
            cancel: CancellationToken::new(),
            max_out_frame: hello.max_frame_bytes.min(options.max_frame_bytes),
        });
        let max_in = options.max_frame_bytes;
        match stream {
            Stream::Plain(s) => {
                let (rd, wr) = s.into_split();
                tokio::spawn(reader(Arc::clone(&shared), rd, buf, max_in));
                tokio::spawn(writer(Arc::clone(&shared), wr));
            }
            Stream::Tls(s) => {
                let (rd, wr) = tokio::io::split(*s);
                tokio::spawn(reader(Arc::clone(&shared), rd, buf, max_in));
                tokio::spawn(writer(Arc::clone(&shared), wr));
            }
            Stream::Other(s) => {
                let (rd, wr) = tokio::io::split(s);
                tokio::spawn(reader(Arc::clone(&shared), rd, buf, max_in));
                tokio::spawn(writer(Arc::clone(&shared), wr));
            }
        }
        Ok(Connection {
            shared,
            hello: Arc::new(hello),
            peer,
        })
    }

    /// The server's address, if known.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The server's `HelloOk` for this connection.
    pub(crate) fn hello(&self) -> &Arc<HelloOk> {
        &self.hello
    }

    /// Whether the connection still takes requests.
    pub(crate) fn is_open(&self) -> bool {
        !self.shared.cancel.is_cancelled()
    }

    /// Closes the connection (after a protocol violation in a reply, or a
    /// `ShuttingDown` answer), so the next call opens a new one.
    pub(crate) fn close(&self, reason: &str) {
        self.shared.close(reason);
    }

    /// Queues `request` and returns the future of its reply frame.
    ///
    /// The entry is registered before the frame is queued, so the reply can
    /// never arrive before its entry. Fails with `Disconnected` if the
    /// connection has closed, or with the encoding error (nothing queued).
    pub(crate) fn send(&self, request: &Request) -> Result<ReplyFuture> {
        let (tx, rx) = oneshot::channel();
        let id = self.register(request, Pending::Reply(tx))?;
        Ok(ReplyFuture {
            rx,
            shared: Arc::clone(&self.shared),
            id,
            done: false,
        })
    }

    /// Queues a `Subscribe` request and returns its `corr_id` (which names
    /// the subscription) and the channel that receives every frame carrying
    /// it: `SubscribeOk` or an error first, then the pushes. The entry stays
    /// until an Error frame arrives, the receiver is dropped, or
    /// [`Connection::forget`] removes it.
    pub(crate) fn subscribe(
        &self,
        request: &Request,
    ) -> Result<(u32, mpsc::UnboundedReceiver<Frame>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.register(request, Pending::Pushes(tx))?;
        Ok((id, rx))
    }

    /// Queues a request that gets no reply (`Credit`) under `corr_id`.
    /// Fails with `Disconnected` if the connection has closed.
    pub(crate) fn send_oneway(&self, request: &Request, corr_id: u32) -> Result<()> {
        if !self.shared.table.lock().open {
            return Err(Error::Disconnected);
        }
        self.enqueue(request, corr_id)
    }

    /// Drops the entry of `corr_id`: frames still arriving for it are
    /// discarded by the reader.
    pub(crate) fn forget(&self, corr_id: u32) {
        self.shared.table.lock().entries.remove(&corr_id);
    }

    /// Registers `pending` under a fresh `corr_id`, then queues `request`
    /// under it. The entry is in the table before the frame can leave, so a
    /// reply can never beat its entry.
    fn register(&self, request: &Request, pending: Pending) -> Result<u32> {
        let id = {
            let mut table = self.shared.table.lock();
            if !table.open {
                return Err(Error::Disconnected);
            }
            let id = table.alloc_id();
            table.entries.insert(id, pending);
            id
        };
        if let Err(e) = self.enqueue(request, id) {
            self.shared.table.lock().entries.remove(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// Encodes `request` into the outbox and wakes the writer.
    fn enqueue(&self, request: &Request, corr_id: u32) -> Result<()> {
        let encoded = {
            let mut outbox = self.shared.outbox.lock();
            request.encode(&mut outbox, corr_id, self.shared.max_out_frame)
        };
        encoded.map_err(Error::from_encode)?;
        self.shared.wake_writer.notify_one();
        Ok(())
    }
}

/// The reply frame to one request. Dropping it before the reply arrives
/// (a timeout, a cancelled caller) removes the request's entry, so the late
/// reply is discarded by the reader.
pub(crate) struct ReplyFuture {
    rx: oneshot::Receiver<Frame>,
    shared: Arc<Shared>,
    id: u32,
    done: bool,
}

impl Future for ReplyFuture {
    type Output = Result<Frame>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Frame>> {
        let this = &mut *self;
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Ready(result) => {
                this.done = true;
                // The sender is dropped unsent only when the connection
                // closes.
                Poll::Ready(result.map_err(|_| Error::Disconnected))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for ReplyFuture {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut table = self.shared.table.lock();
        // Under the table lock the reader cannot be between removing our
        // entry and sending: if nothing was sent, the entry is still ours.
        if matches!(self.rx.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            table.entries.remove(&self.id);
        }
    }
}

/// A connection's byte stream: clear text, TLS, or a [`Connector`]'s.
///
/// [`Connector`]: crate::Connector
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Other(crate::BoxIo),
}

/// Sends Hello and waits for the server's answer (PROTOCOL.md §2.1).
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    options: &ClientOptions,
    buf: &mut BytesMut,
) -> Result<HelloOk> {
    let hello = Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        client_name: options.client_name.clone(),
        token: options.auth_token.clone(),
        user: options.user.clone(),
    });
    let mut out = BytesMut::new();
    hello
        .encode(&mut out, HELLO_CORR_ID, options.max_frame_bytes)
        .map_err(Error::from_encode)?;
    stream.write_all(&out).await.map_err(Error::Connect)?;
    stream.flush().await.map_err(Error::Connect)?;

    let frame = loop {
        if let Some(frame) = decode_frame(buf, options.max_frame_bytes).map_err(Error::Protocol)? {
            break frame;
        }
        if stream.read_buf(buf).await.map_err(Error::Connect)? == 0 {
            return Err(Error::Connect(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection during the handshake",
            )));
        }
    };
    let header = frame.header;
    // The answer echoes Hello's corr_id; a connection-level error (corr_id
    // 0, opcode Hello) is as good an answer.
    if header.opcode != Opcode::Hello || (header.corr_id != HELLO_CORR_ID && header.corr_id != 0) {
        return Err(Error::Protocol(logbook_protocol::Error::UnexpectedFrame {
            expected: Kind::Response,
            kind: header.kind,
            opcode: header.opcode,
        }));
    }
    match ServerMessage::decode(&frame).map_err(Error::Protocol)? {
        ServerMessage::Response(Response::HelloOk(ok)) => {
            // We speak version 1 only: the server must pick it.
            if ok.protocol_version != PROTOCOL_VERSION || header.version != PROTOCOL_VERSION {
                return Err(Error::UnsupportedVersion {
                    max_version: Some(ok.protocol_version),
                });
            }
            Ok(ok)
        }
        ServerMessage::Error(reply) => Err(Error::from_reply(reply, &hello)),
        _ => Err(Error::Protocol(logbook_protocol::Error::UnexpectedFrame {
            expected: Kind::Response,
            kind: header.kind,
            opcode: header.opcode,
        })),
    }
}

/// Closes the connection when a task ends, however it ends: also when the
/// runtime drops the task at shutdown, so callers on another runtime see
/// `Disconnected` (and reconnect) instead of queueing for a dead writer.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close("connection task ended");
    }
}

/// Owns the write half: writes whatever callers queued in the outbox.
async fn writer<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut socket: W) {
    let _close = CloseOnExit(Arc::clone(&shared));
    let mut spare = BytesMut::with_capacity(WRITE_INITIAL);
    loop {
        tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            () = shared.wake_writer.notified() => {}
        }
        loop {
            {
                let mut outbox = shared.outbox.lock();
                if outbox.is_empty() {
                    break;
                }
                std::mem::swap(&mut *outbox, &mut spare);
            }
            let written = tokio::select! {
                biased;
                () = shared.cancel.cancelled() => return,
                // A TLS stream may hold written bytes until flushed.
                r = async {
                    socket.write_all(&spare).await?;
                    socket.flush().await
                } => r,
            };
            if let Err(e) = written {
                shared.close(&format!("write failed: {e}"));
                return;
            }
            spare.clear();
            if spare.capacity() > WRITE_KEEP_MAX {
                spare = BytesMut::with_capacity(WRITE_INITIAL);
            }
        }
    }
}

/// Owns the read half: cuts frames and routes them by `corr_id`.
async fn reader<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut socket: R,
    mut buf: BytesMut,
    max_in: u32,
) {
    let _close = CloseOnExit(Arc::clone(&shared));
    let mut frames = Vec::with_capacity(64);
    let reason = loop {
        let mut bad_frame = None;
        loop {
            match decode_frame(&mut buf, max_in) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    bad_frame = Some(format!("bad frame from the server: {e}"));
                    break;
                }
            }
        }
        // Frames decoded before a bad one are still delivered.
        if !frames.is_empty()
            && let Some(why) = shared.dispatch(&mut frames)
        {
            break why;
        }
        if let Some(why) = bad_frame {
            warn!("{why}");
            break why;
        }
        if buf.capacity() - buf.len() < READ_MIN_FREE {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            r = socket.read_buf(&mut buf) => r,
        };
        match read {
            Ok(0) => break "server closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
    };
    shared.close(&reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corr_ids_skip_zero_and_ids_in_use_when_wrapping() {
        let mut table = Table {
            entries: HashMap::default(),
            next_id: u32::MAX,
            open: true,
        };
        let (tx, _rx) = oneshot::channel();
        table.entries.insert(1, Pending::Reply(tx));
        assert_eq!(table.alloc_id(), u32::MAX);
        // 0 is reserved and 1 is still awaiting its reply.
        assert_eq!(table.alloc_id(), 2);
    }
}
