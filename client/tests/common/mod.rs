//! A fake Logbook server for the client's tests: it speaks the wire
//! protocol through `logbook-protocol`'s codec, and each test scripts it.
//!
//! - [`FakeServer`] listens on `127.0.0.1:0`, does the Hello handshake the
//!   way the test asked ([`Handshake`]) and hands each accepted connection
//!   to the test as a [`FakeConn`].
//! - [`FakeConn`] receives requests and sends replies, errors or raw bytes
//!   in whatever order the test wants; dropping it closes the connection.
//! - [`MemStore`] and [`serve`] answer requests from an in-memory event
//!   store, with a page cap, for tests that need real data.
//!
//! Synchronisation is by channels and awaiting frames, never by sleeping.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use logbook_client::{Client, ClientOptions, RetryPolicy};
use logbook_protocol::frame::decode_frame;
use logbook_protocol::{
    AppendResult, ErrorCode, ErrorReply, EventId, Hello, HelloOk, LogPosition, Opcode, Push,
    ReadAllOk, ReadStreamOk, RecordedEvent, Request, Response, StreamVersion, Text,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Frame limit of the fake server.
pub const MAX_FRAME: u32 = 1 << 20;

/// The `HelloOk` a fake server sends unless told otherwise.
pub fn hello_ok(server_version: &str) -> HelloOk {
    HelloOk {
        protocol_version: 1,
        server_version: server_version.to_owned(),
        max_frame_bytes: MAX_FRAME,
        max_append_bytes: 512 * 1024,
        max_event_bytes: 256 * 1024,
        max_events_per_append: 100,
        max_in_flight: 1024,
        user: None,
        members: Vec::new(),
        leader: None,
    }
}

/// How the fake server answers a Hello.
#[derive(Clone)]
pub enum Handshake {
    /// With this `HelloOk`; the connection is handed to the test.
    Accept(HelloOk),
    /// With this error, on this `corr_id`; then the connection closes.
    Reject(ErrorReply, u32),
    /// Not at all: the connection stays open, silent.
    Silent,
}

/// A listening fake server.
pub struct FakeServer {
    pub addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<FakeConn>,
    accept_task: JoinHandle<()>,
}

impl FakeServer {
    /// A server on a fresh port that accepts every Hello.
    pub async fn start() -> FakeServer {
        FakeServer::start_with(Handshake::Accept(hello_ok("fake-1"))).await
    }

    /// A server on a fresh port with the given handshake behaviour.
    pub async fn start_with(handshake: Handshake) -> FakeServer {
        FakeServer::start_on("127.0.0.1:0".parse().unwrap(), handshake).await
    }

    /// A server on `addr` (to restart one on the same port).
    pub async fn start_on(addr: SocketAddr, handshake: Handshake) -> FakeServer {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        let accept_task = tokio::spawn(async move {
            // Silent connections are kept open here until the server stops.
            let mut silent = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut conn = FakeConn::new(stream);
                let Some(frame) = conn.next_frame().await else {
                    continue;
                };
                assert_eq!(frame.header.opcode, Opcode::Hello, "Hello must come first");
                assert_ne!(frame.header.corr_id, 0, "corr_id 0 is reserved");
                let Request::Hello(hello) = Request::decode(&frame).unwrap() else {
                    panic!("not a Hello");
                };
                assert_eq!(hello.protocol_version, 1);
                match &handshake {
                    Handshake::Accept(ok) => {
                        conn.hello = Some(hello);
                        conn.reply(frame.header.corr_id, Response::HelloOk(ok.clone()))
                            .await;
                        if tx.send(conn).is_err() {
                            return;
                        }
                    }
                    Handshake::Reject(reply, corr_id) => {
                        conn.error(*corr_id, Opcode::Hello, reply.clone()).await;
                    }
                    Handshake::Silent => silent.push(conn),
                }
            }
        });
        FakeServer {
            addr,
            conns,
            accept_task,
        }
    }

    /// The next connection that completed the handshake.
    pub async fn accept(&mut self) -> FakeConn {
        self.conns.recv().await.expect("accept task ended")
    }

    /// Stops listening (and closes silent connections); connections
    /// already handed out stay with their owners.
    pub async fn stop(self) {
        self.accept_task.abort();
        let _ = self.accept_task.await;
    }
}

/// One server-side connection.
pub struct FakeConn {
    stream: TcpStream,
    buf: BytesMut,
    /// The client's Hello.
    pub hello: Option<Hello>,
}

impl FakeConn {
    fn new(stream: TcpStream) -> FakeConn {
        FakeConn {
            stream,
            buf: BytesMut::new(),
            hello: None,
        }
    }

    async fn next_frame(&mut self) -> Option<logbook_protocol::Frame> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, MAX_FRAME).unwrap() {
                return Some(frame);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next request and its `corr_id`, or `None` once the client closed.
    pub async fn recv(&mut self) -> Option<(u32, Request)> {
        let frame = self.next_frame().await?;
        assert_ne!(frame.header.corr_id, 0, "corr_id 0 is reserved");
        Some((frame.header.corr_id, Request::decode(&frame).unwrap()))
    }

    /// The next request, which must exist.
    pub async fn expect(&mut self) -> (u32, Request) {
        self.recv().await.expect("client closed the connection")
    }

    /// Sends a success reply.
    pub async fn reply(&mut self, corr_id: u32, response: Response) {
        let mut out = BytesMut::new();
        response.encode(&mut out, corr_id, MAX_FRAME).unwrap();
        self.send_raw(&out).await;
    }

    /// Sends an error reply.
    pub async fn error(&mut self, corr_id: u32, opcode: Opcode, reply: ErrorReply) {
        let mut out = BytesMut::new();
        reply.encode(&mut out, opcode, corr_id, MAX_FRAME).unwrap();
        self.send_raw(&out).await;
    }

    /// Sends a subscription push for the Subscribe `subscription`.
    pub async fn push(&mut self, subscription: u32, push: Push) {
        let mut out = BytesMut::new();
        push.encode(&mut out, subscription, MAX_FRAME).unwrap();
        self.send_raw(&out).await;
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The client may have gone; tests that care check the client side.
        let _ = self.stream.write_all(bytes).await;
    }
}

/// Options for tests: quick retries, generous timeouts.
pub fn options() -> ClientOptions {
    ClientOptions::default()
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .backoff(Duration::from_millis(1), Duration::from_millis(5)),
        )
        .request_timeout(Some(Duration::from_secs(20)))
}

/// Starts a server, connects a client with `opts`, and returns both with
/// the server side of the connection.
pub async fn setup(opts: ClientOptions) -> (FakeServer, Client, FakeConn) {
    let mut server = FakeServer::start().await;
    let client = Client::connect_with(server.addr, opts).await.unwrap();
    let conn = server.accept().await;
    (server, client, conn)
}

/// A recorded event for replies.
pub fn recorded(stream: &str, version: u64, position: u64) -> RecordedEvent {
    RecordedEvent {
        stream: Text::from(stream),
        version: StreamVersion(version),
        position: LogPosition(position),
        id: EventId::from_u128(u128::from(position) + 1),
        event_type: Text::from("Happened"),
        metadata: Bytes::new(),
        data: Bytes::from(format!("{stream}/{version}")),
        timestamp_us: 1_700_000_000_000_000,
    }
}

/// An in-memory event store with the server's semantics (expected
/// versions, idempotent re-sends of the last batch, paging capped at
/// `page_cap` events).
#[derive(Default)]
pub struct MemStore {
    pub log: Vec<RecordedEvent>,
    streams: HashMap<String, Vec<usize>>,
    last_batch: HashMap<String, (Vec<EventId>, AppendResult)>,
    pub page_cap: u32,
    /// Requests served, by opcode.
    pub served: HashMap<Opcode, usize>,
}

impl MemStore {
    pub fn new(page_cap: u32) -> MemStore {
        MemStore {
            page_cap,
            ..MemStore::default()
        }
    }

    fn last_version(&self, stream: &str) -> Option<u64> {
        self.streams
            .get(stream)
            .and_then(|v| v.len().checked_sub(1))
            .map(|n| n as u64)
    }

    // A test double's return type: its size costs nothing here.
    #[allow(clippy::result_large_err)]
    pub fn handle(&mut self, request: Request) -> Result<Response, (Opcode, ErrorReply)> {
        *self.served.entry(request.opcode()).or_default() += 1;
        match request {
            Request::Ping(p) => Ok(Response::Pong(logbook_protocol::Pong { nonce: p.nonce })),
            Request::Append(a) => {
                let ids: Vec<EventId> = a.events.iter().map(|e| e.id).collect();
                if let Some((last_ids, result)) = self.last_batch.get(a.stream.as_str())
                    && *last_ids == ids
                {
                    return Ok(Response::AppendOk(*result));
                }
                let actual = self.last_version(&a.stream).map(StreamVersion);
                if !a.expected.admits(actual) {
                    return Err((
                        Opcode::Append,
                        ErrorReply::new(ErrorCode::WrongExpectedVersion, "conflict")
                            .with_stream(a.stream.clone())
                            .with_versions(a.expected, actual),
                    ));
                }
                let first_version = actual.map_or(0, |v| v.0 + 1);
                let first_position = self.log.len() as u64;
                for (i, e) in a.events.iter().enumerate() {
                    let position = self.log.len();
                    self.log.push(RecordedEvent {
                        stream: a.stream.clone(),
                        version: StreamVersion(first_version + i as u64),
                        position: LogPosition(position as u64),
                        id: e.id,
                        event_type: e.event_type.clone(),
                        metadata: e.metadata.clone(),
                        data: e.data.clone(),
                        timestamp_us: 1,
                    });
                    self.streams
                        .entry(a.stream.to_string())
                        .or_default()
                        .push(position);
                }
                let n = a.events.len() as u64;
                let result = AppendResult {
                    first_version: StreamVersion(first_version),
                    last_version: StreamVersion(first_version + n - 1),
                    first_position: LogPosition(first_position),
                    last_position: LogPosition(first_position + n - 1),
                };
                self.last_batch.insert(a.stream.to_string(), (ids, result));
                Ok(Response::AppendOk(result))
            }
            Request::ReadStream(r) => {
                let positions = self
                    .streams
                    .get(r.stream.as_str())
                    .cloned()
                    .unwrap_or_default();
                let versions: Vec<u64> = (0..positions.len() as u64).collect();
                let (picked, next) = page(
                    &versions,
                    r.from.map(|v| v.0),
                    r.direction,
                    r.max_count.min(self.page_cap),
                );
                Ok(Response::ReadStreamOk(ReadStreamOk {
                    events: picked
                        .iter()
                        .map(|&v| self.log[positions[v as usize]].clone())
                        .collect(),
                    last_version: self.last_version(&r.stream).map(StreamVersion),
                    next: next.map(StreamVersion),
                }))
            }
            Request::ReadAll(r) => {
                let positions: Vec<u64> = (0..self.log.len() as u64).collect();
                let (picked, next) = page(
                    &positions,
                    r.from.map(|p| p.0),
                    r.direction,
                    r.max_count.min(self.page_cap),
                );
                Ok(Response::ReadAllOk(ReadAllOk {
                    events: picked
                        .iter()
                        .map(|&p| self.log[p as usize].clone())
                        .collect(),
                    head: LogPosition(self.log.len() as u64),
                    next: next.map(LogPosition),
                }))
            }
            other => panic!("MemStore cannot serve {other:?}"),
        }
    }
}

/// One page of the dense sequence `0..keys.len()`: the keys picked and
/// where the next page starts.
fn page(
    keys: &[u64],
    from: Option<u64>,
    direction: logbook_protocol::Direction,
    max_count: u32,
) -> (Vec<u64>, Option<u64>) {
    let len = keys.len() as u64;
    let n = u64::from(max_count.max(1));
    match direction {
        logbook_protocol::Direction::Forward => {
            let start = from.unwrap_or(0);
            let end = (start.saturating_add(n)).min(len);
            let picked: Vec<u64> = (start..end.max(start)).collect();
            (picked, (end < len).then_some(end))
        }
        logbook_protocol::Direction::Backward => {
            if len == 0 {
                return (Vec::new(), None);
            }
            let start = from.unwrap_or(len - 1).min(len - 1);
            let picked: Vec<u64> = (0..n).map_while(|i| start.checked_sub(i)).collect();
            let last = *picked.last().unwrap();
            (picked, last.checked_sub(1))
        }
    }
}

/// Answers every request on `conn` from `store` until the client closes.
pub async fn serve(mut conn: FakeConn, store: Arc<Mutex<MemStore>>) {
    while let Some((corr_id, request)) = conn.recv().await {
        let answer = store.lock().unwrap().handle(request);
        match answer {
            Ok(response) => conn.reply(corr_id, response).await,
            Err((opcode, reply)) => conn.error(corr_id, opcode, reply).await,
        }
    }
}

/// Starts a server whose every connection is served from `store`.
pub async fn start_store_server(store: Arc<Mutex<MemStore>>) -> (SocketAddr, JoinHandle<()>) {
    let mut server = FakeServer::start().await;
    let addr = server.addr;
    let task = tokio::spawn(async move {
        loop {
            let conn = server.accept().await;
            tokio::spawn(serve(conn, Arc::clone(&store)));
        }
    });
    (addr, task)
}
