//! One client connection: a task that reads and dispatches requests, and a
//! writer task that sends what the outbox holds.
//!
//! This file holds the connection task: the read loop and its framing
//! limits, the in-flight appends and jobs, the replies into the outbox, the
//! close, and `Connection::dispatch`, which hands each decoded `Request` to
//! its handler in `cmd` (one file per request family).
//!
//! The reader decodes every complete frame in its buffer and dispatches it:
//! pings are answered at once; reads take room on the outbox budget and
//! run in the reader pool (one at a time per connection, in order);
//! appends are queued to the engine's writer in arrival order and their
//! results are awaited together in `in_flight`, so a client can pipeline as
//! many as `max_in_flight`; scavenges and erases run on blocking threads
//! and their replies are awaited in `jobs` (`cmd/scavenge.rs`), so that the
//! connection keeps serving while they last. Replies go into the outbox in
//! completion order.
//!
//! The reader stops reading the socket while `max_in_flight` appends and
//! jobs are pending or the outbox holds more than `outbox::HIGH_WATER`
//! bytes: a client that sends faster than the store acknowledges, or never
//! reads its replies, is slowed by TCP rather than buffered.
//!
//! Memory a connection holds is bounded: a large frame still arriving is
//! charged to the server's budget for incomplete frames, and stays charged
//! until its request is handed on (an append is then within the engine's
//! writer-queue bytes); a read buffer that grew for a large frame is given
//! back once empty; a connection with nothing going on is closed after the
//! idle timeout, and one whose client stops reading after the write
//! timeout (`outbox.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use logbook_protocol::frame::decode_frame;
use logbook_protocol::{
    AppendResult, ErrorCode, ErrorReply, Frame, Kind, Opcode, PROTOCOL_VERSION, Request, Response,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Shared;
use super::cmd::AppendTrace;
use super::outbox::{Outbox, Room, SMALL_ROOM};
use super::subscription::Sub;
use logbook_storage::PendingAppend;
use logbook_storage::backup::BackupImage;

use super::errors::append_error;

/// An append's result to come: from the engine's writer, or, on a cluster
/// node, from the replicated log.
pub(super) enum Pending {
    Local(PendingAppend),
    Replicated(Pin<Box<dyn Future<Output = Result<AppendResult, ErrorReply>> + Send + Sync>>),
}

/// An append whose result is awaited, with the request it answers.
pub(super) struct InFlight {
    pub(super) corr_id: u32,
    pub(super) pending: Pending,
    /// The append's span, if its caller traces it (see `crate::otlp`).
    pub(super) trace: Option<Box<AppendTrace>>,
}

impl Future for InFlight {
    type Output = (
        u32,
        Result<AppendResult, ErrorReply>,
        Option<Box<AppendTrace>>,
    );

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let corr_id = self.corr_id;
        let r = match &mut self.pending {
            Pending::Local(p) => match Pin::new(p).poll(cx) {
                Poll::Ready(r) => r.map_err(|e| append_error(&e)),
                Poll::Pending => return Poll::Pending,
            },
            Pending::Replicated(p) => match p.as_mut().poll(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            },
        };
        Poll::Ready((corr_id, r, self.trace.take()))
    }
}

/// A request running off the connection task (a scavenge or an erase,
/// `cmd/scavenge.rs`), with the request it answers: its task returns the
/// reply. Dropping it gives up on the reply and aborts the task: a job
/// still waiting its turn never runs; one running on a blocking thread
/// goes on to its end.
pub(super) struct Job {
    pub(super) corr_id: u32,
    pub(super) opcode: Opcode,
    pub(super) task: tokio::task::JoinHandle<JobResult>,
}

/// What a job answers: its success reply, or its error (boxed: it is
/// large, and passed by value through the task).
pub(super) type JobResult = Result<Response, Box<ErrorReply>>;

/// `fields` with `"ok": ok` (an audit line's outcome).
pub(super) fn with_ok(mut fields: serde_json::Value, ok: bool) -> serde_json::Value {
    if let Some(map) = fields.as_object_mut() {
        map.insert("ok".into(), ok.into());
    }
    fields
}

impl Future for Job {
    type Output = (u32, Opcode, JobResult);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (corr_id, opcode) = (self.corr_id, self.opcode);
        Pin::new(&mut self.task).poll(cx).map(|r| {
            let reply = r.unwrap_or_else(|e| {
                Err(Box::new(ErrorReply::new(
                    ErrorCode::Internal,
                    format!("{opcode:?} task failed: {e}"),
                )))
            });
            (corr_id, opcode, reply)
        })
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a connection ends.
#[derive(Debug)]
pub(super) enum Close {
    /// The client closed its side.
    Eof,
    /// The server is shutting down.
    Shutdown,
    /// A protocol violation, already answered with an error frame.
    Violation(String),
    /// The socket failed.
    Io(std::io::Error),
}

/// One connection's state, shared by the connection task here and the
/// request handlers in `cmd`.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: SocketAddr,
    pub(super) out: Arc<Outbox>,
    pub(super) in_flight: FuturesUnordered<InFlight>,
    /// Scavenges and erases running for this connection.
    pub(super) jobs: FuturesUnordered<Job>,
    pub(super) handshaken: bool,
    /// What the connection's user may do (set by the handshake; nothing
    /// before it).
    pub(super) access: crate::auth::Access,
    /// Changes of users and roles not yet applied to `access`.
    auth_changes: watch::Receiver<u64>,
    /// Open subscriptions, by their Subscribe's corr_id.
    pub(super) subs: HashMap<u32, Arc<Sub>>,
    /// Consumer group memberships, by their JoinGroup's corr_id.
    pub(super) memberships:
        HashMap<u32, (Arc<super::groups::Group>, crate::groups::state::ConsumerId)>,
    /// When the frame now partly in the read buffer started arriving.
    frame_started: Option<tokio::time::Instant>,
    /// Its charge on the server's budget for large incomplete frames.
    frame_charge: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Pinned backup images, by session id, with their server-wide slot.
    pub(super) backups: HashMap<u32, (Arc<BackupImage>, tokio::sync::OwnedSemaphorePermit)>,
    /// Id of the last backup session opened.
    pub(super) next_backup: u32,
    /// Fires when the server shuts down (for waits inside a request).
    shutdown: watch::Receiver<bool>,
}

/// Frames up to this size are not charged to the budget: every connection
/// may hold one without asking.
const SMALL_FRAME: usize = 64 << 10;

/// A read buffer that grew past this for a large frame is replaced by a
/// small one once it is empty.
const KEEP_READ_BUFFER: usize = 256 << 10;

/// The read buffer a connection starts with (and goes back to).
const READ_BUFFER: usize = 64 << 10;

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// Serves one connection until it closes: over TLS when the server
    /// has a certificate (the TLS handshake must end within the handshake
    /// timeout), else in clear.
    pub(super) async fn run(
        shared: Arc<Shared>,
        socket: TcpStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        // Replies are small and latency-bound: do not let Nagle hold them.
        let _ = socket.set_nodelay(true);
        let Some(tls) = shared.config.tls.clone() else {
            let (rd, wr) = socket.into_split();
            return Self::run_on(shared, rd, wr, peer, shutdown).await;
        };
        let limit = shared.config.handshake_timeout;
        let mut stop = shutdown.clone();
        let accepted = tokio::select! {
            r = tokio::time::timeout(limit, tls.acceptor().accept(socket)) => r,
            // A handshake under way does not hold the shutdown up.
            _ = stop.changed() => return,
        };
        let stream = match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                // Not audited: scanners would fill the audit log.
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "no TLS handshake within the handshake timeout");
                return;
            }
        };
        let (rd, wr) = tokio::io::split(stream);
        Self::run_on(shared, rd, wr, peer, shutdown).await
    }

    /// Serves a connection opened inside the process (never TLS).
    pub(super) async fn run_local(
        shared: Arc<Shared>,
        stream: tokio::io::DuplexStream,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) {
        let (rd, wr) = tokio::io::split(stream);
        Self::run_on(shared, rd, wr, peer, shutdown).await
    }

    /// Serves one connection, read through `rd` and written through `wr`,
    /// until it closes.
    async fn run_on<R, W>(
        shared: Arc<Shared>,
        rd: R,
        wr: W,
        peer: SocketAddr,
        shutdown: watch::Receiver<bool>,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let out = Arc::new(Outbox::new(
            Arc::clone(&shared.stats),
            shared.config.max_outbox_bytes,
            shared.config.write_timeout,
        ));
        let writer = {
            let out = Arc::clone(&out);
            tokio::spawn(async move { out.write_loop(wr).await })
        };
        let auth_changes = shared.auth.watch();
        let mut conn = Connection {
            shared,
            peer,
            out: Arc::clone(&out),
            in_flight: FuturesUnordered::new(),
            jobs: FuturesUnordered::new(),
            handshaken: false,
            access: crate::auth::Access::admin(crate::auth::ANONYMOUS_USER),
            auth_changes,
            subs: HashMap::new(),
            memberships: HashMap::new(),
            frame_started: None,
            frame_charge: None,
            backups: HashMap::new(),
            next_backup: 0,
            shutdown: shutdown.clone(),
        };
        let why = conn.serve(rd, shutdown).await;
        // Answer what was accepted before closing: appends already queued
        // will commit, and their clients deserve to know.
        while let Some((corr_id, r, trace)) = conn.in_flight.next().await {
            conn.reply_append(corr_id, r, trace);
        }
        // Scavenges and erases that ended are answered. On shutdown the
        // others are answered `ShuttingDown`: they cannot be waited for
        // (the store closes after this connection, and only its closing
        // stops a scavenge); an erase is safe to retry. Otherwise the
        // client is gone and they are dropped (see `Job`).
        while let Some(Some((corr_id, opcode, r))) = conn.jobs.next().now_or_never() {
            conn.answer(corr_id, opcode, r);
        }
        if matches!(why, Close::Shutdown) {
            for job in conn.jobs.iter() {
                conn.send_error(
                    job.opcode,
                    job.corr_id,
                    ErrorReply::new(
                        ErrorCode::ShuttingDown,
                        format!(
                            "the server is shutting down; the {:?} may not have completed",
                            job.opcode
                        ),
                    ),
                );
            }
        }
        conn.jobs.clear();
        // End the subscriptions: no push follows this point.
        let reason = matches!(why, Close::Shutdown)
            .then_some((ErrorCode::ShuttingDown, "the server is shutting down"));
        for (_, sub) in conn.subs.drain() {
            conn.shared.hub.end(&sub, reason);
        }
        // Leave the groups: what this consumer held goes to the others.
        // Not when the server stops: that is no failure of the consumer's
        // (nothing is counted against its events, nothing parked), and
        // what it held is delivered again after the restart.
        for (_, (group, consumer)) in conn.memberships.drain() {
            if !matches!(why, Close::Shutdown) {
                group.leave(consumer);
            }
        }
        if matches!(why, Close::Shutdown) {
            // Tell the client why the connection ends, after the `ended`
            // pushes (PROTOCOL.md §2.4).
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

    async fn serve<R: AsyncRead + Unpin>(
        &mut self,
        mut rd: R,
        mut shutdown: watch::Receiver<bool>,
    ) -> Close {
        let max_frame = self.shared.config.max_frame_bytes;
        let max_in_flight = self.shared.config.max_in_flight as usize;
        // Appends and jobs awaiting their result.
        let pending = |c: &Connection| c.in_flight.len() + c.jobs.len();
        let mut buf = BytesMut::with_capacity(READ_BUFFER);
        let handshake_deadline = tokio::time::sleep(self.shared.config.handshake_timeout);
        tokio::pin!(handshake_deadline);
        let idle_timeout = self.shared.config.idle_timeout;
        let mut last_request = tokio::time::Instant::now();
        if *shutdown.borrow() {
            return Close::Shutdown;
        }
        loop {
            // Dispatch every complete frame, unless the client is already at
            // its in-flight limit or its replies are not drained (the rest
            // waits in `buf`).
            let mut held = false;
            loop {
                if pending(self) >= max_in_flight || self.out.is_full() {
                    held = true;
                    break;
                }
                match decode_frame(&mut buf, max_frame) {
                    Ok(Some(frame)) => {
                        // A whole frame arrived: whatever follows is a new one.
                        // Its charge stays until its request is handed on.
                        self.frame_started = None;
                        let charge = self.frame_charge.take();
                        last_request = tokio::time::Instant::now();
                        let done = self.dispatch(frame).await;
                        drop(charge);
                        if let Err(why) = done {
                            return why;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // The byte stream can no longer be trusted to find the
                        // next frame: answer once, on corr_id 0, and close,
                        // with the detail PROTOCOL.md §6 gives each code.
                        let message = e.to_string();
                        let reply = match &e {
                            logbook_protocol::Error::UnsupportedVersion { .. } => {
                                ErrorReply::new(ErrorCode::UnsupportedVersion, message)
                                    .with_max_version(PROTOCOL_VERSION)
                            }
                            logbook_protocol::Error::FrameTooLarge { max, .. } => {
                                ErrorReply::new(ErrorCode::TooLarge, message)
                                    .with_limit(u64::from(*max))
                            }
                            _ => ErrorReply::new(ErrorCode::BadRequest, message),
                        };
                        return self.connection_error(reply);
                    }
                }
            }
            if buf.is_empty() && buf.capacity() > KEEP_READ_BUFFER {
                // A large frame passed through: give its buffer back.
                buf = BytesMut::with_capacity(READ_BUFFER);
            }
            // A frame partly received: it must complete within the frame
            // timeout, and if it is large its bytes are charged to the
            // server-wide budget, so that clients trickling huge frames can
            // neither hold buffers forever nor make the server's memory grow
            // without bound.
            if let Err(why) = self.account_partial_frame(&buf) {
                return why;
            }
            // Checked once: the read branch and the wait for room below
            // must agree, or a drain between two checks wakes nobody.
            let full = self.out.is_full();
            let can_read = pending(self) < max_in_flight && !full;
            if held && can_read {
                // Drained since the loop above stopped: frames already in
                // `buf` go first, or they would wait for bytes that may
                // never come.
                continue;
            }
            if !can_read && self.frame_started.is_some() {
                // The server is not reading (backpressure): the client's
                // time to complete its frame starts again when it does.
                self.frame_started = Some(tokio::time::Instant::now());
            }
            let frame_deadline = self
                .frame_started
                .filter(|_| can_read)
                .map(|t| t + self.shared.config.frame_timeout);
            let idle_deadline = idle_timeout
                .filter(|_| self.handshaken && buf.is_empty() && self.is_idle())
                .map(|t| last_request + t);
            tokio::select! {
                r = rd.read_buf(&mut buf), if can_read => match r {
                    Ok(0) => return Close::Eof,
                    Ok(_) => {}
                    Err(e) => return Close::Io(e),
                },
                Some((corr_id, r, trace)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.reply_append(corr_id, r, trace);
                }
                Some((corr_id, opcode, r)) = self.jobs.next(), if !self.jobs.is_empty() => {
                    self.answer(corr_id, opcode, r);
                }
                () = self.out.wait_drained(), if full => {}
                () = self.out.wait_broken() => {
                    return Close::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped reading its replies",
                    ));
                }
                () = sleep_until_opt(frame_deadline), if frame_deadline.is_some() => {
                    return self.connection_error(ErrorReply::new(ErrorCode::BadRequest, "frame not completed within the frame timeout"));
                }
                () = sleep_until_opt(idle_deadline), if idle_deadline.is_some() => {
                    // Nothing can have started while this task slept, since
                    // only this task starts things. A client still reading
                    // replies is not idle (one that stopped reading is the
                    // write timeout's).
                    if self.out.pending() > 0 {
                        last_request = tokio::time::Instant::now();
                        continue;
                    }
                    return self.connection_error(ErrorReply::new(
                        ErrorCode::IdleTimeout,
                        format!(
                            "no request for {} s with nothing going on",
                            idle_timeout.unwrap_or_default().as_secs()
                        ),
                    ));
                }
                Ok(()) = self.auth_changes.changed(), if self.handshaken => {
                    if let Err(why) = self.rights_changed() {
                        return why;
                    }
                }
                () = &mut handshake_deadline, if !self.handshaken => {
                    return self.connection_error(ErrorReply::new(ErrorCode::BadRequest, "no Hello within the handshake timeout"));
                }
                _ = shutdown.changed() => return Close::Shutdown,
            }
        }
    }

    /// Whether the connection has nothing going on: no subscription still
    /// open, no append in flight, no scavenge or erase running, no backup
    /// session (unsent replies are checked when the idle deadline comes).
    fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
            && self.jobs.is_empty()
            && self.backups.is_empty()
            && self.subs.values().all(|s| s.is_ended())
            && self.memberships.values().all(|(g, _)| g.is_ended())
    }

    /// Room on the outbox budget for a reply of up to `want` bytes (less
    /// if the server is short of room; waits if there is none). `None` if
    /// the connection broke or the server is shutting down meanwhile: the
    /// request then goes unanswered, as the connection is closing.
    pub(super) async fn reply_room(&self, want: usize) -> Option<Room> {
        if let Some(room) = self.out.try_room(want, SMALL_ROOM) {
            return Some(room);
        }
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            room = self.out.room(want, SMALL_ROOM) => room,
            _ = shutdown.wait_for(|s| *s) => None,
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
                    return Err(self.connection_error(ErrorReply::new(
                        ErrorCode::ServerBusy,
                        "too many large frames in progress; try again later",
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reports a connection-level error (PROTOCOL.md §2.4: corr_id 0,
    /// opcode Hello, so that a client of any version can read it) and
    /// returns the reason to close the connection, which the caller does.
    pub(super) fn connection_error(&self, reply: ErrorReply) -> Close {
        let why = reply.message.clone();
        self.send_error(Opcode::Hello, 0, reply);
        Close::Violation(why)
    }

    pub(super) fn send_error(&self, opcode: Opcode, corr_id: u32, reply: ErrorReply) {
        let max = self.shared.config.max_frame_bytes;
        if let Err(e) = self.out.push(|b| reply.encode(b, opcode, corr_id, max)) {
            tracing::warn!(peer = %self.peer, error = %e, "could not encode an error reply");
        }
    }

    /// Answers a request with its result: its success reply, or its error
    /// (a job's, a scavenge's or an erase's, or a handler's).
    /// Runs `work` as a job of this connection (answered when it ends,
    /// while the connection serves on), with its audit line, if any,
    /// written when it ends (`ok` and the user added).
    pub(super) fn spawn_job(
        &mut self,
        opcode: Opcode,
        corr_id: u32,
        audit: Option<(&'static str, serde_json::Value)>,
        work: impl std::future::Future<Output = JobResult> + Send + 'static,
    ) {
        let (shared, peer, user) = (
            Arc::clone(&self.shared),
            self.peer,
            self.access.user().to_owned(),
        );
        let task = tokio::spawn(async move {
            let r = work.await;
            if let Some((event, fields)) = audit {
                let mut fields = with_ok(fields, r.is_ok());
                if let Some(map) = fields.as_object_mut() {
                    map.insert("user".into(), user.into());
                }
                shared.audit.record(event, peer, fields);
            }
            r
        });
        self.jobs.push(Job {
            corr_id,
            opcode,
            task,
        });
    }

    pub(super) fn answer(&self, corr_id: u32, opcode: Opcode, r: JobResult) {
        match r {
            Ok(resp) => self.send(corr_id, opcode, &resp),
            Err(e) => self.send_error(opcode, corr_id, *e),
        }
    }

    pub(super) fn send(&self, corr_id: u32, opcode: Opcode, resp: &Response) {
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

    /// Handles one frame: checks and decodes it, then hands the request to
    /// its handler in `cmd` (`cmd/<family>.rs`). `Err` closes the
    /// connection.
    async fn dispatch(&mut self, frame: Frame) -> Result<(), Close> {
        let corr_id = frame.header.corr_id;
        let opcode = frame.header.opcode;
        // Both rules are about the connection, not one request: a frame
        // that is no request has no request to answer, and corr_id 0 is
        // where the server reports connection-level errors, so a reply to
        // it could not be told from one (PROTOCOL.md §2.2, §2.4).
        if frame.header.kind != Kind::Request {
            return Err(self.connection_error(ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "clients send only requests, not {:?} frames",
                    frame.header.kind
                ),
            )));
        }
        if corr_id == 0 {
            return Err(self.connection_error(ErrorReply::new(
                ErrorCode::BadRequest,
                format!("{opcode:?} request with corr_id 0, which is reserved"),
            )));
        }
        let req = match Request::decode(&frame) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    opcode,
                    Opcode::Credit | Opcode::GroupAck | Opcode::GroupNack | Opcode::GroupExtend
                ) =>
            {
                // A Credit has no reply to carry the error, and its
                // subscription is unknown: the flow control of the
                // connection is broken (PROTOCOL.md §2.3).
                return Err(
                    self.connection_error(ErrorReply::new(ErrorCode::BadRequest, e.to_string()))
                );
            }
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
            return self.handshake(corr_id, req).await;
        }
        // A change of users or roles answered before this request arrived
        // applies to it (the wake-up of the change may not have been
        // taken yet).
        if self.auth_changes.has_changed().unwrap_or(false) {
            self.auth_changes.borrow_and_update();
            self.rights_changed()?;
        }
        if let Err(denied) = self.authorize(&req) {
            self.deny(opcode, corr_id, *denied);
            return Ok(());
        }
        // Consumer groups run on a cluster's leader.
        if is_group_request(&req)
            && let Err(refused) = self.shared.groups.serving()
        {
            self.send_error(opcode, corr_id, *refused);
            return Ok(());
        }
        // A node outside the membership (joining, not added yet; or
        // removed) holds a log that does not follow the cluster's, and one
        // that knows no leader may be cut off from it: its reads could be
        // stale for ever. The client goes to the leader, or another node.
        // A backup is refused only outside the membership: a node cut off
        // (the last one standing, say) still lets its copy be saved.
        if let Some(node) = &self.shared.config.cluster
            && let Some(stale) = node.stale()
            && (reads_log(&req)
                || (stale == logbook_consensus::node::Stale::Outside
                    && matches!(req, Request::BackupBegin(_))))
        {
            let mut reply = ErrorReply::new(ErrorCode::NotLeader, stale.reason());
            if let Some(leader) = node.status().leader_member() {
                reply = reply.with_leader(leader.client.clone());
            }
            self.send_error(opcode, corr_id, reply);
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
            Request::Ping(p) => self.ping(corr_id, p),
            Request::Append(a) => self.append(corr_id, a).await,
            Request::ReadStream(r) => self.read_stream(corr_id, r).await,
            Request::ReadAll(r) => self.read_all(corr_id, r).await,
            Request::Subscribe(s) => self.subscribe(corr_id, s),
            Request::Unsubscribe(u) => self.unsubscribe(corr_id, u),
            Request::Credit(c) => self.credit(c),
            Request::Stats(_) => self.stats(corr_id),
            Request::BackupBegin(_) => self.backup_begin(corr_id).await,
            Request::BackupRead(r) => self.backup_read(corr_id, r).await,
            Request::BackupEnd(e) => self.backup_end(corr_id, e),
            Request::SetMetadata(m) => self.set_metadata(corr_id, m).await,
            Request::GetMetadata(g) => self.get_metadata(corr_id, g),
            Request::Truncate(t) => self.truncate(corr_id, t).await,
            Request::DeleteStream(d) => self.delete_stream(corr_id, d).await,
            Request::Scavenge(s) => self.scavenge(corr_id, s),
            Request::Erase(e) => self.erase(corr_id, e).await,
            Request::ListStreams(l) => self.list_streams(corr_id, l).await,
            Request::CreateGroup(g) => self.create_group(corr_id, g).await,
            Request::UpdateGroup(g) => self.update_group(corr_id, g).await,
            Request::DeleteGroup(g) => self.delete_group(corr_id, g).await,
            Request::ListGroups(_) => self.list_groups(corr_id),
            Request::JoinGroup(j) => self.join_group(corr_id, j),
            Request::GroupAck(a) => self.group_ack(a),
            Request::GroupNack(n) => self.group_nack(n),
            Request::GroupExtend(e) => self.group_extend(e),
            Request::ListParked(l) => self.list_parked(corr_id, l).await,
            Request::ReplayParked(r) => self.replay_parked(corr_id, r),
            Request::DeleteParked(d) => self.delete_parked(corr_id, d).await,
            Request::PutUser(u) => self.put_user(corr_id, u).await,
            Request::DeleteUser(u) => self.delete_user(corr_id, u).await,
            Request::ListUsers => self.list_users(corr_id),
            Request::PutRole(r) => self.put_role(corr_id, r).await,
            Request::DeleteRole(r) => self.delete_role(corr_id, r).await,
            Request::ListRoles => self.list_roles(corr_id),
            Request::CreateToken(t) => self.create_token(corr_id, t).await,
            Request::RevokeToken(t) => self.revoke_token(corr_id, t).await,
            Request::WhoAmI => self.who_am_i(corr_id),
            Request::AddNode(a) => self.add_node(corr_id, a),
            Request::RemoveNode(r) => self.remove_node(corr_id, r),
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
}

/// Requests that read the log (refused by a node outside the cluster's
/// membership).
fn reads_log(req: &Request) -> bool {
    matches!(
        req,
        Request::ReadStream(_)
            | Request::ReadAll(_)
            | Request::Subscribe(_)
            | Request::ListStreams(_)
            | Request::GetMetadata(_)
    )
}

/// Whether `req` is served by the node that runs the consumer groups (a
/// cluster's leader). Acks, nacks and extensions go to a membership the
/// connection holds, wherever it is.
fn is_group_request(req: &Request) -> bool {
    matches!(
        req,
        Request::CreateGroup(_)
            | Request::UpdateGroup(_)
            | Request::DeleteGroup(_)
            | Request::ListGroups(_)
            | Request::JoinGroup(_)
            | Request::ListParked(_)
            | Request::ReplayParked(_)
            | Request::DeleteParked(_)
    )
}
