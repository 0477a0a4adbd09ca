//! One client connection: a task that reads and dispatches requests, and a
//! writer task that sends what the outbox holds.
//!
//! The reader decodes every complete frame in its buffer and dispatches it:
//! pings and reads are answered at once (reads are served from the page
//! cache, so the task does them itself rather than paying a thread hop);
//! appends are queued to the engine's writer in arrival order and their
//! results are awaited together in `in_flight`, so a client can pipeline as
//! many as `max_in_flight`. Replies go into the outbox in completion order.
//!
//! The reader stops reading the socket while `max_in_flight` appends are
//! pending or the outbox holds more than `outbox::HIGH_WATER` bytes: a client
//! that sends faster than the store acknowledges, or never reads its
//! replies, is slowed by TCP rather than buffered.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use logbook_protocol::frame::decode_frame;
use logbook_protocol::{
    AppendResult, BackupBeginOk, BackupFile, BackupRead, ErrorCode, ErrorReply, Frame, HelloOk,
    Kind, LogPosition, Opcode, PROTOCOL_VERSION, Pong, ReadAllOk, ReadStreamOk, Request, Response,
    StreamName,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Shared;
use super::errors::{append_error, read_error, storage_error};
use super::outbox::Outbox;
use super::subscription::{CompiledFilter, Sub};
use logbook_storage::backup::BackupImage;
use logbook_storage::{AppendError, PendingAppend};

/// An append whose result is awaited, with the request it answers.
struct InFlight {
    corr_id: u32,
    pending: PendingAppend,
}

impl Future for InFlight {
    type Output = (u32, Result<AppendResult, AppendError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let corr_id = self.corr_id;
        Pin::new(&mut self.pending).poll(cx).map(|r| (corr_id, r))
    }
}

/// Why a connection ends.
#[derive(Debug)]
enum Close {
    /// The client closed its side.
    Eof,
    /// The server is shutting down.
    Shutdown,
    /// A protocol violation, already answered with an error frame.
    Violation(String),
    /// The socket failed.
    Io(std::io::Error),
}

pub(super) struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    out: Arc<Outbox>,
    in_flight: FuturesUnordered<InFlight>,
    handshaken: bool,
    /// Open subscriptions, by their Subscribe's corr_id.
    subs: HashMap<u32, Arc<Sub>>,
    /// When the frame now partly in the read buffer started arriving.
    frame_started: Option<tokio::time::Instant>,
    /// Its charge on the server's budget for large incomplete frames.
    frame_charge: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Pinned backup images, by session id, with their server-wide slot.
    backups: HashMap<u32, (Arc<BackupImage>, tokio::sync::OwnedSemaphorePermit)>,
    /// Id of the last backup session opened.
    next_backup: u32,
}

/// Backup sessions one connection may hold at once (each pins files).
const MAX_BACKUPS_PER_CONNECTION: usize = 4;
/// Backup sessions the server holds at once.
pub(super) const MAX_BACKUPS: usize = 16;

/// Frames up to this size are not charged to the budget: every connection
/// may hold one without asking.
const SMALL_FRAME: usize = 64 << 10;

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Serves one connection until it closes.
    pub(super) async fn run(
        shared: Arc<Shared>,
        socket: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        // Replies are small and latency-bound: do not let Nagle hold them.
        let _ = socket.set_nodelay(true);
        let (rd, wr) = socket.into_split();
        let out = Arc::new(Outbox::new(
            Arc::clone(&shared.stats),
            shared.config.max_outbox_bytes,
        ));
        let writer = {
            let out = Arc::clone(&out);
            tokio::spawn(async move { out.write_loop(wr).await })
        };
        let mut conn = Connection {
            shared,
            peer,
            out: Arc::clone(&out),
            in_flight: FuturesUnordered::new(),
            handshaken: false,
            subs: HashMap::new(),
            frame_started: None,
            frame_charge: None,
            backups: HashMap::new(),
            next_backup: 0,
        };
        let why = conn.serve(rd, shutdown).await;
        // Answer what was accepted before closing: appends already queued
        // will commit, and their clients deserve to know.
        while let Some((corr_id, r)) = conn.in_flight.next().await {
            conn.reply_append(corr_id, r);
        }
        // End the subscriptions: no push follows this point.
        let reason = matches!(why, Close::Shutdown)
            .then_some((ErrorCode::ShuttingDown, "the server is shutting down"));
        for (_, sub) in conn.subs.drain() {
            conn.shared.hub.end(&sub, reason);
        }
        if matches!(why, Close::Shutdown) {
            // Tell the client why the connection ends.
            out.push(|b| {
                ErrorReply::new(ErrorCode::ShuttingDown, "the server is shutting down").encode(
                    b,
                    Opcode::Hello,
                    0,
                    conn.shared.config.max_frame_bytes,
                )
            })
            .ok();
        }
        out.close();
        let _ = writer.await;
        match why {
            Close::Eof => tracing::debug!(peer = %conn.peer, "connection closed by the client"),
            Close::Shutdown => {
                tracing::debug!(peer = %conn.peer, "connection closed: shutting down")
            }
            Close::Violation(what) => {
                tracing::debug!(peer = %conn.peer, %what, "connection closed: protocol violation")
            }
            Close::Io(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "connection closed: socket error")
            }
        }
    }

    async fn serve(
        &mut self,
        mut rd: tokio::net::tcp::OwnedReadHalf,
        mut shutdown: watch::Receiver<bool>,
    ) -> Close {
        let max_frame = self.shared.config.max_frame_bytes;
        let max_in_flight = self.shared.config.max_in_flight as usize;
        let mut buf = BytesMut::with_capacity(64 << 10);
        let handshake_deadline = tokio::time::sleep(self.shared.config.handshake_timeout);
        tokio::pin!(handshake_deadline);
        if *shutdown.borrow() {
            return Close::Shutdown;
        }
        loop {
            // Dispatch every complete frame, unless the client is already at
            // its in-flight limit (the rest waits in `buf`).
            while self.in_flight.len() < max_in_flight && !self.out.is_full() {
                match decode_frame(&mut buf, max_frame) {
                    Ok(Some(frame)) => {
                        // A whole frame arrived: whatever follows is a new one.
                        self.frame_started = None;
                        self.frame_charge = None;
                        if let Err(why) = self.dispatch(frame).await {
                            return why;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The byte stream can no longer be trusted to find the
                        // next frame: answer once, on corr_id 0, and close.
                        let code = match &e {
                            logbook_protocol::Error::UnsupportedVersion { .. } => {
                                ErrorCode::UnsupportedVersion
                            }
                            logbook_protocol::Error::FrameTooLarge { .. } => ErrorCode::TooLarge,
                            _ => ErrorCode::BadRequest,
                        };
                        self.send_error(Opcode::Hello, 0, ErrorReply::new(code, e.to_string()));
                        return Close::Violation(e.to_string());
                    }
                }
            }
            // A frame partly received: it must complete within the frame
            // timeout, and if it is large its bytes are charged to the
            // server-wide budget, so that clients trickling huge frames can
            // neither hold buffers forever nor make the server's memory grow
            // without bound.
            if let Err(why) = self.account_partial_frame(&buf) {
                return why;
            }
            let frame_deadline = self
                .frame_started
                .map(|t| t + self.shared.config.frame_timeout);
            let can_read = self.in_flight.len() < max_in_flight && !self.out.is_full();
            tokio::select! {
                r = rd.read_buf(&mut buf), if can_read => match r {
                    Ok(0) => return Close::Eof,
                    Ok(_) => {}
                    Err(e) => return Close::Io(e),
                },
                Some((corr_id, r)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.reply_append(corr_id, r);
                }
                () = self.out.wait_drained(), if self.out.is_full() => {}
                () = sleep_until_opt(frame_deadline), if frame_deadline.is_some() => {
                    self.send_error(Opcode::Hello, 0, ErrorReply::new(ErrorCode::BadRequest, "frame not completed within the frame timeout"));
                    return Close::Violation("frame timeout".into());
                }
                () = &mut handshake_deadline, if !self.handshaken => {
                    self.send_error(Opcode::Hello, 0, ErrorReply::new(ErrorCode::BadRequest, "no Hello within the handshake timeout"));
                    return Close::Violation("handshake timeout".into());
                }
                _ = shutdown.changed() => return Close::Shutdown,
            }
        }
    }

    /// Tracks the incomplete frame at the start of `buf` (if any): when it
    /// started, and a charge on the server's budget for large frames.
    fn account_partial_frame(&mut self, buf: &BytesMut) -> Result<(), Close> {
        if buf.is_empty() {
            self.frame_started = None;
            self.frame_charge = None;
            return Ok(());
        }
        if self.frame_started.is_none() {
            self.frame_started = Some(tokio::time::Instant::now());
            self.frame_charge = None;
        }
        let declared = buf
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(|b| u32::from_le_bytes(b) as usize + 4)
            .unwrap_or(0);
        if declared > SMALL_FRAME && self.frame_charge.is_none() {
            let kib = declared.div_ceil(1024).min(u32::MAX as usize) as u32;
            match Arc::clone(&self.shared.frame_budget).try_acquire_many_owned(kib) {
                Ok(permit) => self.frame_charge = Some(permit),
                Err(_) => {
                    self.send_error(
                        Opcode::Hello,
                        0,
                        ErrorReply::new(
                            ErrorCode::ServerBusy,
                            "too many large frames in progress; try again later",
                        ),
                    );
                    return Err(Close::Violation("frame budget exhausted".into()));
                }
            }
        }
        Ok(())
    }

    fn send_error(&self, opcode: Opcode, corr_id: u32, reply: ErrorReply) {
        let max = self.shared.config.max_frame_bytes;
        if let Err(e) = self.out.push(|b| reply.encode(b, opcode, corr_id, max)) {
            tracing::warn!(peer = %self.peer, error = %e, "could not encode an error reply");
        }
    }

    fn send(&self, corr_id: u32, opcode: Opcode, resp: &Response) {
        let max = self.shared.config.max_frame_bytes;
        let r = self.out.push(|b| resp.encode(b, corr_id, max));
        if let Err(e) = r {
            // Reads are sized to fit, so this is a bug or a huge event; the
            // client still gets an answer.
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!("reply does not fit in a frame: {e}"),
                ),
            );
        }
    }

    fn reply_append(&self, corr_id: u32, r: Result<AppendResult, AppendError>) {
        match r {
            Ok(res) => self.send(corr_id, Opcode::Append, &Response::AppendOk(res)),
            Err(e) => self.send_error(Opcode::Append, corr_id, append_error(&e)),
        }
    }

    /// Handles one frame. `Err` closes the connection.
    async fn dispatch(&mut self, frame: Frame) -> Result<(), Close> {
        let corr_id = frame.header.corr_id;
        let opcode = frame.header.opcode;
        if frame.header.kind != Kind::Request {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::BadRequest, "clients send only requests"),
            );
            return Err(Close::Violation("non-request frame".into()));
        }
        let req = match Request::decode(&frame) {
            Ok(r) => r,
            Err(e) => {
                // The frame was well formed, only its body was not: refuse the
                // request and keep the connection.
                self.send_error(
                    opcode,
                    corr_id,
                    ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
                );
                return if self.handshaken {
                    Ok(())
                } else {
                    Err(Close::Violation("bad Hello".into()))
                };
            }
        };
        if !self.handshaken {
            return self.handshake(corr_id, req);
        }
        if corr_id == 0 {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::BadRequest, "corr_id 0 is reserved"),
            );
            return Ok(());
        }
        match req {
            Request::Hello(_) => {
                self.send_error(
                    opcode,
                    corr_id,
                    ErrorReply::new(ErrorCode::BadRequest, "already said Hello"),
                );
            }
            Request::Ping(p) => {
                self.send(corr_id, opcode, &Response::Pong(Pong { nonce: p.nonce }))
            }
            Request::Append(a) => {
                let stream = match StreamName::new(a.stream) {
                    Ok(s) => s,
                    Err(e) => {
                        self.send_error(
                            opcode,
                            corr_id,
                            ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
                        );
                        return Ok(());
                    }
                };
                // Queue in arrival order; only the wait for the result is
                // concurrent. A full writer queue pauses this connection.
                match self
                    .shared
                    .store
                    .submit(&stream, a.expected, a.events)
                    .await
                {
                    Ok(pending) => self.in_flight.push(InFlight { corr_id, pending }),
                    Err(e) => self.reply_append(corr_id, Err(e)),
                }
            }
            Request::ReadStream(r) => {
                if let Err(e) = logbook_protocol::validate_stream_name(&r.stream) {
                    self.send_error(
                        opcode,
                        corr_id,
                        ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
                    );
                    return Ok(());
                }
                let max = self.shared.read_limit(r.max_count);
                match self
                    .shared
                    .store
                    .read_stream(&r.stream, r.from, r.direction, max)
                {
                    Ok(slice) if slice.last_version.is_none() => self.send_error(
                        opcode,
                        corr_id,
                        ErrorReply::new(
                            ErrorCode::StreamNotFound,
                            format!("stream {} has no events", &*r.stream),
                        )
                        .with_stream(r.stream.clone()),
                    ),
                    Ok(mut slice) => {
                        // Big events: send what fits, and say where to go on.
                        if let Some(left) = self.shared.fit(&mut slice.events) {
                            slice.next = Some(left.version);
                        }
                        self.shared.count_read(slice.events.len());
                        self.send(
                            corr_id,
                            opcode,
                            &Response::ReadStreamOk(ReadStreamOk {
                                events: slice.events,
                                last_version: slice.last_version,
                                next: slice.next,
                            }),
                        )
                    }
                    Err(e) => self.send_error(opcode, corr_id, read_error(&e)),
                }
            }
            Request::ReadAll(r) => {
                let max = self.shared.read_limit(r.max_count);
                match self.shared.store.read_all(r.from, r.direction, max) {
                    Ok(mut slice) => {
                        if let Some(left) = self.shared.fit(&mut slice.events) {
                            slice.next = Some(left.position);
                        }
                        self.shared.count_read(slice.events.len());
                        self.send(
                            corr_id,
                            opcode,
                            &Response::ReadAllOk(ReadAllOk {
                                events: slice.events,
                                head: slice.head,
                                next: slice.next,
                            }),
                        )
                    }
                    Err(e) => self.send_error(opcode, corr_id, read_error(&e)),
                }
            }
            Request::Subscribe(s) => self.subscribe(corr_id, s),
            Request::Unsubscribe(u) => {
                // Idempotent: ending an unknown subscription is not an error.
                if let Some(sub) = self.subs.remove(&u.subscription) {
                    self.shared.hub.end(&sub, None);
                }
                self.send(corr_id, opcode, &Response::UnsubscribeOk);
            }
            Request::Credit(c) => {
                if let Some(sub) = self.subs.get(&c.subscription) {
                    sub.grant(c.events);
                }
            }
            Request::Stats(_) => {
                let sh = &self.shared;
                let stats = super::stats::snapshot(&sh.store, &sh.stats, &sh.meter);
                self.send(corr_id, opcode, &Response::StatsOk(Box::new(stats)));
            }
            Request::BackupBegin(_) => self.backup_begin(corr_id).await,
            Request::BackupRead(r) => self.backup_read(corr_id, r).await,
            Request::BackupEnd(e) => {
                // Idempotent, like Unsubscribe.
                self.backups.remove(&e.backup);
                self.send(corr_id, opcode, &Response::BackupEndOk);
            }
            _ => {
                self.send_error(
                    opcode,
                    corr_id,
                    ErrorReply::new(ErrorCode::BadRequest, "unsupported request"),
                );
            }
        }
        Ok(())
    }

    /// Pins a backup image for this connection. The snapshot may wait for
    /// an index flush and stats files: off the runtime's threads.
    async fn backup_begin(&mut self, corr_id: u32) {
        let opcode = Opcode::BackupBegin;
        if self.backups.len() >= MAX_BACKUPS_PER_CONNECTION {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    format!(
                        "at most {MAX_BACKUPS_PER_CONNECTION} backup sessions per connection; end one first"
                    ),
                ),
            );
            return;
        }
        let Ok(slot) = Arc::clone(&self.shared.backup_slots).try_acquire_owned() else {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    format!("the server holds {MAX_BACKUPS} backup sessions; try again later"),
                ),
            );
            return;
        };
        let store = self.shared.store.clone();
        let image = match tokio::task::spawn_blocking(move || store.backup_image()).await {
            Ok(Ok(image)) => Arc::new(image),
            Ok(Err(e)) => {
                self.send_error(opcode, corr_id, storage_error(&e));
                return;
            }
            Err(e) => {
                self.send_error(
                    opcode,
                    corr_id,
                    ErrorReply::new(ErrorCode::Internal, e.to_string()),
                );
                return;
            }
        };
        self.next_backup = self.next_backup.wrapping_add(1);
        let id = self.next_backup;
        let reply = BackupBeginOk {
            backup: id,
            position: LogPosition(image.position),
            files: image
                .files
                .iter()
                .map(|f| BackupFile {
                    name: f.name.clone(),
                    len: f.len,
                })
                .collect(),
            manifest: Bytes::from(image.manifest.clone()),
            max_read: self.shared.max_backup_read(),
        };
        tracing::info!(peer = %self.peer, position = image.position, bytes = image.total_bytes(), "backup started");
        self.backups.insert(id, (image, slot));
        self.send(corr_id, opcode, &Response::BackupBeginOk(reply));
    }

    /// Reads part of a pinned image's file (a blocking `pread`, off the
    /// runtime's threads: backups read cold segments).
    async fn backup_read(&mut self, corr_id: u32, r: BackupRead) {
        let opcode = Opcode::BackupRead;
        let Some(image) = self.backups.get(&r.backup).map(|(i, _)| Arc::clone(i)) else {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!("no backup session {} on this connection", r.backup),
                ),
            );
            return;
        };
        if image.files.get(r.file as usize).is_none() {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!("backup session {} has no file {}", r.backup, r.file),
                ),
            );
            return;
        }
        let max = self.shared.max_backup_read().min(r.len) as usize;
        let read = tokio::task::spawn_blocking(move || {
            image
                .files
                .get(r.file as usize)
                .map(|f| f.read(r.offset, max))
        })
        .await;
        match read {
            Ok(Some(Ok(data))) => self.send(corr_id, opcode, &Response::BackupReadOk(data)),
            Ok(Some(Err(e))) => self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::Internal, format!("reading backup file: {e}")),
            ),
            Ok(None) | Err(_) => self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::Internal, "backup read failed"),
            ),
        }
    }

    fn subscribe(&mut self, corr_id: u32, mut s: logbook_protocol::Subscribe) {
        let opcode = Opcode::Subscribe;
        if self.subs.contains_key(&corr_id) {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::BadRequest,
                    "a subscription with this corr_id is open",
                ),
            );
            return;
        }
        if self.subs.len() >= self.shared.config.max_subscriptions_per_connection {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    "too many subscriptions on this connection",
                )
                .with_limit(self.shared.config.max_subscriptions_per_connection as u64),
            );
            return;
        }
        if let logbook_protocol::SubscriptionTarget::Stream { stream, .. } = &s.target
            && let Err(e) = logbook_protocol::validate_stream_name(stream)
        {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
            );
            return;
        }
        let filter = match &mut s.target {
            logbook_protocol::SubscriptionTarget::All { filter, .. } => {
                filter.take().map(CompiledFilter::new).transpose()
            }
            logbook_protocol::SubscriptionTarget::Stream { .. } => Ok(None),
        };
        let filter = match filter {
            Ok(f) => f,
            Err(e) => {
                self.send_error(opcode, corr_id, ErrorReply::new(ErrorCode::BadRequest, e));
                return;
            }
        };
        let head = self.shared.store.head();
        self.send(
            corr_id,
            opcode,
            &Response::SubscribeOk(logbook_protocol::SubscribeOk { head }),
        );
        let sub = self.shared.hub.start(
            corr_id,
            s,
            filter,
            Arc::clone(&self.out),
            self.shared.config.max_frame_bytes,
            head.0,
        );
        self.subs.insert(corr_id, sub);
    }

    fn handshake(&mut self, corr_id: u32, req: Request) -> Result<(), Close> {
        let Request::Hello(hello) = req else {
            self.send_error(
                req_opcode(&req),
                corr_id,
                ErrorReply::new(ErrorCode::BadRequest, "the first request must be Hello"),
            );
            return Err(Close::Violation("request before Hello".into()));
        };
        if hello.protocol_version < PROTOCOL_VERSION {
            self.send_error(
                Opcode::Hello,
                corr_id,
                ErrorReply::new(
                    ErrorCode::UnsupportedVersion,
                    format!("protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}", hello.protocol_version),
                )
                .with_max_version(PROTOCOL_VERSION),
            );
            return Err(Close::Violation("unsupported version".into()));
        }
        if let Some(token) = &self.shared.config.auth_token {
            let given = hello.token.as_deref().unwrap_or("");
            if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                self.send_error(
                    Opcode::Hello,
                    corr_id,
                    ErrorReply::new(ErrorCode::NotAuthenticated, "missing or wrong token"),
                );
                return Err(Close::Violation("not authenticated".into()));
            }
        }
        self.handshaken = true;
        tracing::debug!(peer = %self.peer, client = %hello.client_name, "client said hello");
        let c = &self.shared.config;
        let store = self.shared.store.config();
        self.send(
            corr_id,
            Opcode::Hello,
            &Response::HelloOk(HelloOk {
                protocol_version: PROTOCOL_VERSION,
                server_version: env!("CARGO_PKG_VERSION").to_string(),
                max_frame_bytes: c.max_frame_bytes,
                max_append_bytes: store.max_batch_bytes.min(u64::from(u32::MAX)) as u32,
                max_events_per_append: store.max_batch_events,
                max_in_flight: c.max_in_flight,
            }),
        );
        Ok(())
    }
}

fn req_opcode(r: &Request) -> Opcode {
    r.opcode()
}

/// Compares secrets without leaking, through timing, how long a prefix
/// matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
