//! The network server: accepts TCP connections and serves the Logbook
//! protocol (`protocol/PROTOCOL.md`) over the storage engine.
//!
//! - `mod.rs`: [`ServerConfig`], the accept loop and shutdown ([`run`]).
//! - `connection.rs`: one task per connection: the read loop and its
//!   framing limits, the in-flight appends, replies into the outbox, the
//!   close, and the dispatch of each decoded request to its handler.
//! - `cmd/`: the request handlers, one file per request family:
//!   `hello.rs` (Hello and its auth, Ping), `append.rs`, `read.rs`
//!   (ReadStream, ReadAll), `lifecycle.rs` (SetMetadata, GetMetadata,
//!   Truncate, DeleteStream), `scavenge.rs` (Scavenge, Erase: on blocking
//!   threads, one at a time), `subscribe.rs` (Subscribe, Unsubscribe,
//!   Credit), `stats.rs` (Stats), `backup.rs` (BackupBegin, BackupRead,
//!   BackupEnd, and the limits on backup sessions).
//! - `subscription/`: catch-up subscriptions: `start.rs` (where one
//!   starts, checked against the log), `filter.rs` (filters and
//!   their regex limits), `catchup.rs` (one subscription, its delivery
//!   within credit and its catch-up task), `fanout.rs` (a live batch
//!   encoded once for every subscriber), `hub.rs` (the registry, the live
//!   dispatcher and the handover from history to live).
//! - `outbox.rs`: a connection's outgoing buffer and its writer task.
//! - `errors.rs`: engine and subscription errors as protocol error codes.
//! - [`limits`]: an append's size in the protocol's terms (type, metadata
//!   and data bytes) against the engine's record limit.
//! - [`stats`]: the figures of the `Stats` reply and its rate sampler.
//!
//! The path of a request: socket -> framing (`decode_frame`, the decoder
//! of `FrameCodec`, in the connection's read loop) -> `Request::decode` ->
//! `Connection::dispatch` -> the handler in `cmd/<family>.rs` -> the engine
//! (appends through the group-commit writer, awaited in the connection's
//! in-flight set; reads directly) -> the reply encoded into the
//! connection's outbox -> its writer task, one write for many replies.

pub mod audit;
pub(crate) mod auth;
mod cmd;
mod connection;
mod errors;
pub(crate) mod groups;
pub mod limits;
mod outbox;
mod reads;
pub mod stats;
mod subscription;
pub(crate) mod writes;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use logbook_protocol::{
    DEFAULT_MAX_FRAME_BYTES, ErrorCode, ErrorReply, Opcode, RecordedEvent,
    msg::recorded_event_wire_len,
};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use logbook_storage::{ReadLimit, Store};

/// Network server configuration. Every field states its default.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Most open client connections. Default 1,024. Connections past it are
    /// answered with a `ServerBusy` error frame and closed.
    pub max_connections: usize,
    /// Most requests a connection may have awaiting a reply. Default 1,024.
    /// Past it the server stops reading that connection until replies drain.
    pub max_in_flight: u32,
    /// Largest frame accepted or sent, length prefix included. Default
    /// 16 MiB; must exceed the engine's largest batch by 64 KiB.
    pub max_frame_bytes: u32,
    /// Most events one read request returns (larger `max_count`s are cut to
    /// it; the reply's `next` continues). Default 10,000.
    pub max_read_count: u32,
    /// A connection that has not said Hello within this time is closed.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// A token that logs in as an admin (`admin-token`), besides the
    /// users of the store (see [`crate::auth`]); `None` (the default):
    /// users only, and with no users, clients of a server listening on
    /// loopback only need no login.
    pub auth_token: Option<String>,
    /// TLS on the client port (see [`crate::tls`]); `None` (the default):
    /// clear text.
    pub tls: Option<crate::tls::ServerTls>,
    /// Most subscriptions one connection may hold. Default 10,000.
    pub max_subscriptions_per_connection: usize,
    /// A frame must arrive completely within this time once its first
    /// bytes have. Default 30 s. Stops clients that declare a frame and
    /// then trickle it.
    pub frame_timeout: Duration,
    /// Bytes that all connections together may hold in frames still
    /// arriving, counting only frames above 64 KiB. Default 256 MiB. A
    /// large frame that does not fit is refused with `ServerBusy`.
    pub max_incomplete_frame_bytes: usize,
    /// Replies and pushes all connections together may hold unsent before
    /// the connections that hold some stop reading requests (and live
    /// subscriptions on them fall back to the log). Default 256 MiB. Each
    /// connection also stops at 4 MiB of its own. Large replies and pushes
    /// take their room from it before they read (see `outbox.rs`).
    pub max_outbox_bytes: usize,
    /// A connection that sends no request for this long while it has
    /// nothing going on (no subscription, no append in flight, no scavenge
    /// or erase running, no backup session, no unsent reply) is closed with
    /// `IdleTimeout`; `None` never closes one. Default 1 hour: idle
    /// connections only hold a slot of `max_connections`, and clients
    /// reconnect on their own.
    pub idle_timeout: Option<Duration>,
    /// A connection whose client reads none of its pending replies for
    /// this long is closed, giving its share of `max_outbox_bytes` back.
    /// Default 60 s.
    pub write_timeout: Duration,
    /// Most reads of the log (requests and subscriptions) running at once,
    /// each on a blocking thread, never on the async runtime's. Default 8.
    pub read_threads: usize,
    /// Memory all subscriptions together may hold: each is charged 4 KiB
    /// plus its filter (its prefixes, and about 768 KiB per regular
    /// expression). Default 256 MiB. A Subscribe past it is refused with
    /// `ServerBusy`.
    pub max_subscription_bytes: usize,
    /// Run a scavenge this often, the first one an interval after start (one
    /// already running, asked for by a client, skips a turn); `None` (the
    /// default): only when a client asks.
    pub scavenge_interval: Option<Duration>,
    /// Pace of the scheduled scavenges, bytes of disk traffic per second;
    /// `None`: as fast as the disk goes.
    pub scavenge_max_bytes_per_sec: Option<u64>,
    /// Where to export the spans of traced appends (see [`crate::otlp`]);
    /// `None` (the default): nowhere.
    pub otlp_endpoint: Option<crate::otlp::Endpoint>,
    /// The `service.name` of exported spans. Default `logbookd`.
    pub otlp_service_name: String,
    /// Most consumer groups (each may hold 8 MiB of read-ahead while
    /// consumers are joined). Default 128.
    pub max_groups: usize,
    /// Where the audit log goes (see [`audit`]); `None` (the default):
    /// nowhere.
    pub audit_log: Option<audit::AuditTarget>,
    /// This server's node of a cluster (see `logbook_consensus::node`); `None` (the
    /// default): a single server. On a cluster node appends go through
    /// the replicated log (to the leader; followers answer `NotLeader`),
    /// and the other requests that change the log are refused
    /// (`Unsupported`) until they are replicated too.
    pub cluster: Option<Arc<logbook_consensus::node::Node>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 1024,
            max_in_flight: 1024,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_read_count: 10_000,
            handshake_timeout: Duration::from_secs(10),
            auth_token: None,
            tls: None,
            max_subscriptions_per_connection: 10_000,
            frame_timeout: Duration::from_secs(30),
            max_incomplete_frame_bytes: 256 << 20,
            max_outbox_bytes: 256 << 20,
            idle_timeout: Some(Duration::from_secs(3600)),
            write_timeout: Duration::from_secs(60),
            read_threads: 8,
            max_subscription_bytes: 256 << 20,
            scavenge_interval: None,
            scavenge_max_bytes_per_sec: None,
            otlp_endpoint: None,
            otlp_service_name: "logbookd".to_owned(),
            max_groups: 128,
            audit_log: None,
            cluster: None,
        }
    }
}

/// What every connection task shares.
#[derive(Debug)]
struct Shared {
    store: Store,
    config: ServerConfig,
    hub: Arc<subscription::Hub>,
    stats: Arc<NetStats>,
    /// KiB of incomplete large frames all connections may hold.
    frame_budget: Arc<Semaphore>,
    /// Recent counter samples, for the rates in `Stats`.
    meter: Arc<stats::RateMeter>,
    /// Backup sessions the server may hold (each pins files).
    backup_slots: Arc<Semaphore>,
    /// KiB of subscription memory the server may hold.
    subscription_budget: Arc<Semaphore>,
    /// Where reads of the log run (shared with the hub's subscriptions).
    reads: Arc<reads::ReadPool>,
    /// One scavenge or erase at a time, server-wide (each rewrites
    /// segments on a blocking thread; the engine runs one at a time too).
    maintenance: Arc<Semaphore>,
    /// Where spans of traced appends go, if anywhere.
    tracer: Option<Arc<crate::otlp::Exporter>>,
    /// The consumer groups.
    groups: Arc<groups::Groups>,
    /// The audit log and the failed-login table.
    audit: audit::Audit,
    /// Users, roles and logins.
    auth: auth::Auth,
}

impl Shared {
    /// Most bytes one `BackupRead` reply carries: 1 MiB, or less to fit
    /// the frame.
    fn max_backup_read(&self) -> u32 {
        logbook_protocol::msg::MAX_BACKUP_READ.min(self.config.max_frame_bytes.saturating_sub(1024))
    }

    /// The most bytes one read page may take: half a frame (an event past
    /// the budget may still be taken, and `fit_in_frame` trims what would
    /// overflow).
    fn read_page_bytes(&self) -> usize {
        (self.config.max_frame_bytes / 2) as usize
    }

    /// The limit of one read reply: the client's count (0 reads nothing),
    /// at most the server's, and `bytes`, the outbox room taken for it
    /// (at most [`Shared::read_page_bytes`]).
    fn read_limit(&self, max_count: u32, bytes: usize) -> ReadLimit {
        ReadLimit {
            events: max_count.min(self.config.max_read_count) as usize,
            bytes: bytes.min(self.read_page_bytes()).max(1),
        }
    }

    /// Counts events served by a read reply.
    fn count_read(&self, events: usize) {
        self.stats
            .events_read
            .fetch_add(events as u64, Ordering::Relaxed);
    }

    /// Trims a read reply to the frame, unless the byte budget already
    /// guarantees it fits: at most half a frame, plus one event past it
    /// (the engine charges each event more than its wire overhead).
    fn fit(&self, events: &mut Vec<RecordedEvent>) -> Option<RecordedEvent> {
        let max_frame = u64::from(self.config.max_frame_bytes);
        if self.store.config().max_event_bytes + 1024 <= max_frame / 2 {
            return None;
        }
        fit_in_frame(events, self.config.max_frame_bytes)
    }
}

/// Cuts `events` so that a reply carrying them fits in `max_frame` bytes.
/// Returns the first event left out, if any.
pub(crate) fn fit_in_frame(
    events: &mut Vec<RecordedEvent>,
    max_frame: u32,
) -> Option<RecordedEvent> {
    let budget = (max_frame as usize).saturating_sub(
        logbook_protocol::msg::EVENTS_MESSAGE_OVERHEAD + logbook_protocol::HEADER_LEN,
    );
    let mut used = 0usize;
    let cut = events.iter().position(|e| {
        used += recorded_event_wire_len(e);
        used > budget
    })?;
    let rest = events.split_off(cut);
    rest.into_iter().next()
}

/// Live figures of the network server.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Open client connections.
    pub connections: AtomicU64,
    /// Open subscriptions.
    pub subscriptions: AtomicU64,
    /// Bytes waiting in connection outboxes, all connections together.
    pub outbox_bytes: AtomicU64,
    /// The most bytes any one connection's outbox has held: the server's
    /// memory for a slow client is bounded by this.
    pub outbox_peak: AtomicU64,
    /// Connections refused at the connection limit.
    pub refused: AtomicU64,
    /// Events returned by ReadStream and ReadAll replies.
    pub events_read: AtomicU64,
    /// Events pushed to subscribers (history and live).
    pub events_pushed: AtomicU64,
    /// Each open subscription's cursor, by subscription id.
    cursors: Mutex<HashMap<u64, Arc<AtomicU64>>>,
    /// Wakes producers waiting for outbox room: bytes were written or a
    /// reservation given back, on any connection.
    pub(crate) freed: tokio::sync::Notify,
    /// The consumer groups, once the server runs (for the metrics).
    groups: std::sync::OnceLock<Arc<groups::Groups>>,
}

impl NetStats {
    /// Each consumer group's definition and figures, by name (empty before
    /// the server runs).
    pub fn group_figures(&self) -> Vec<logbook_protocol::GroupInfo> {
        self.groups.get().map(|g| g.list()).unwrap_or_default()
    }

    /// How far open subscriptions are behind `head` (the durable head):
    /// `(max, sum)` over them of the events they have yet to be sent or
    /// scanned past. Both are 0 with no subscription. Costs one short lock
    /// and one atomic load per subscription: for scrapes and stats
    /// requests, not for hot paths.
    pub fn subscription_lag(&self, head: u64) -> (u64, u64) {
        self.cursors
            .lock()
            .values()
            .map(|c| head.saturating_sub(c.load(Ordering::Relaxed)))
            .fold((0, 0), |(max, sum), lag| {
                (max.max(lag), sum.saturating_add(lag))
            })
    }

    /// Tracks a new subscription whose cursor starts at `cursor`; the
    /// subscription stores its cursor into the returned cell as it advances.
    pub(crate) fn track_subscription(&self, id: u64, cursor: u64) -> Arc<AtomicU64> {
        let cell = Arc::new(AtomicU64::new(cursor));
        self.cursors.lock().insert(id, Arc::clone(&cell));
        cell
    }

    /// Stops tracking an ended subscription.
    pub(crate) fn untrack_subscription(&self, id: u64) {
        self.cursors.lock().remove(&id);
    }
}

/// The file, in the data directory, that holds the password of the `admin`
/// user created at the first start of a server listening beyond loopback.
pub const INITIAL_ADMIN_PASSWORD: &str = "initial-admin-password";

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets
/// every connection finish what it accepted (appends already queued commit
/// and are answered), tells clients the server is shutting down, and
/// returns. The caller then closes the store.
pub async fn run(
    listener: TcpListener,
    store: Store,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with_stats(listener, store, config, Arc::default(), shutdown).await
}

/// [`run`], publishing live figures into `stats`.
pub async fn run_with_stats(
    listener: TcpListener,
    store: Store,
    config: ServerConfig,
    stats: Arc<NetStats>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    run_with_local(listener, store, config, stats, None, shutdown).await
}

/// A connection opened inside the process by a [`LocalConnector`].
struct LocalConn {
    stream: tokio::io::DuplexStream,
    peer: SocketAddr,
}

/// Opens connections to the server from inside the process (the web
/// console's sessions, `crate::console`): each is served like a TCP
/// connection (Hello, logins, rights, limits and the connection count), but
/// without TLS, which guards bytes on a network, not inside the process.
#[derive(Clone)]
pub struct LocalConnector(tokio::sync::mpsc::Sender<LocalConn>);

/// The server's end of a [`LocalConnector`], given to [`run_with_local`].
pub struct LocalListener(tokio::sync::mpsc::Receiver<LocalConn>);

/// A connector and the listener it connects to.
pub fn local_channel() -> (LocalConnector, LocalListener) {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    (LocalConnector(tx), LocalListener(rx))
}

/// Bytes a local connection buffers each way.
const LOCAL_BUFFER: usize = 256 * 1024;

impl LocalConnector {
    /// Opens a connection on behalf of `peer` (the address its logins are
    /// throttled by and audit lines name). It is served once the server's
    /// accept loop runs; fails once the server has stopped.
    pub async fn connect(&self, peer: SocketAddr) -> std::io::Result<tokio::io::DuplexStream> {
        let (ours, theirs) = tokio::io::duplex(LOCAL_BUFFER);
        self.0
            .send(LocalConn {
                stream: theirs,
                peer,
            })
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::NotConnected, "the server has stopped")
            })?;
        Ok(ours)
    }
}

/// [`run_with_stats`], also serving connections opened through `local`.
pub async fn run_with_local(
    listener: TcpListener,
    store: Store,
    config: ServerConfig,
    stats: Arc<NetStats>,
    mut inside: Option<LocalListener>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // Every event the engine takes must fit in an append the server takes:
    // the announced max_append_bytes leaves room for the record overhead
    // of the most events a batch may hold.
    let append_room = limits::max_append_bytes(store.config());
    if append_room < store.config().max_event_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "max batch bytes ({}) must hold one event of max event bytes ({}) plus the record overhead of {} events ({} bytes)",
                store.config().max_batch_bytes,
                store.config().max_event_bytes,
                store.config().max_batch_events,
                limits::record_overhead(store.config().max_batch_events)
            ),
        ));
    }
    let min_frame = store.config().max_batch_bytes + 64 * 1024;
    if u64::from(config.max_frame_bytes) < min_frame {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "max frame bytes ({}) must exceed the largest batch ({}) by 64 KiB",
                config.max_frame_bytes,
                store.config().max_batch_bytes
            ),
        ));
    }
    let reads = Arc::new(reads::ReadPool::new(config.read_threads));
    let hub = subscription::Hub::new(
        store.clone(),
        Arc::clone(&stats),
        config.max_frame_bytes,
        Arc::clone(&reads),
    );
    let frame_budget = Arc::new(Semaphore::new(config.max_incomplete_frame_bytes / 1024));
    let meter = Arc::new(stats::RateMeter::new());
    let subscription_budget = Arc::new(Semaphore::new(
        (config.max_subscription_bytes / 1024).min(Semaphore::MAX_PERMITS),
    ));
    let tracer = config.otlp_endpoint.clone().map(|endpoint| {
        tracing::info!(endpoint = %format!("http://{}{}", endpoint.authority, endpoint.path), "exporting spans of traced appends (OTLP/HTTP JSON)");
        crate::otlp::Exporter::start(endpoint, config.otlp_service_name.clone())
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // The groups stop after the connections: acks still in the
    // connections' buffers count, and the final checkpoints follow them.
    let (groups_stop_tx, groups_stop_rx) = watch::channel(false);
    let groups = groups::Groups::load(
        writes::SystemLog::new(store.clone(), config.cluster.clone()),
        Arc::clone(&reads),
        config.max_frame_bytes,
        config.max_groups,
        groups_stop_rx.clone(),
    )
    .await
    .map_err(|e| std::io::Error::other(format!("loading the consumer groups: {e}")))?;
    let _ = stats.groups.set(Arc::clone(&groups));
    let audit = audit::Audit::open(config.audit_log.as_ref())
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening the audit log: {e}")))?;
    let local = listener.local_addr()?;
    let auth = auth::Auth::load(
        writes::SystemLog::new(store.clone(), config.cluster.clone()),
        config.auth_token.clone(),
        local.ip().is_loopback(),
    )
    .map_err(|e| std::io::Error::other(format!("loading the users: {e}")))?;
    if config.cluster.is_some() {
        // A replica's scavenges keep the ids of what they remove, so that
        // the replicas keep the same positions and refuse the same ids
        // (`logbook_storage::record::FLAG_REMOVED`).
        if !store.config().keep_removed_ids {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a cluster node's engine must keep the ids of removed events (StoreConfig::keep_removed_ids)",
            ));
        }
        // Users are replicated, but who would create the first? A node
        // that joins a running cluster gets the cluster's users with its
        // log (nobody can log in to it until then).
        if let Some(node) = &config.cluster
            && !node.joins()
            && !local.ip().is_loopback()
            && config.auth_token.is_none()
            && !auth.doc().has_users()
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a cluster node listening beyond loopback needs --auth-token until its log holds a user (create users with the token; they are replicated to every node)",
            ));
        }
    } else if !local.ip().is_loopback() {
        let path = store.config().data_dir.join(INITIAL_ADMIN_PASSWORD);
        if auth
            .bootstrap(&path)
            .await
            .map_err(|e| std::io::Error::other(format!("creating the first admin: {e}")))?
        {
            tracing::warn!(
                file = %path.display(),
                "no users yet and listening beyond loopback: created user `admin`; its password is in the file (change it: logbook user passwd admin)"
            );
        }
    }
    if config.auth_token.is_some() && auth.doc().has_users() && !auth.doc().has_admin() {
        tracing::warn!(
            "no enabled admin user can log in: only --auth-token administers this server (make a user admin before starting without it)"
        );
    }
    if auth.required() {
        tracing::info!("clients must log in (users, API tokens or --auth-token)");
    } else {
        tracing::info!(
            "authentication is off: no users, no --auth-token, and listening on loopback only (logbook user add creates the first user)"
        );
    }
    let shared = Arc::new(Shared {
        store,
        config,
        hub: Arc::clone(&hub),
        stats,
        frame_budget,
        meter,
        backup_slots: Arc::new(Semaphore::new(cmd::MAX_BACKUPS)),
        subscription_budget,
        reads,
        maintenance: Arc::new(Semaphore::new(1)),
        tracer,
        groups,
        audit,
        auth,
    });
    if shared.config.cluster.is_some() {
        // Users and roles changed through another node, or brought by a
        // snapshot, are published here once this node holds them.
        let (following, stop) = (Arc::clone(&shared), stop_rx.clone());
        tokio::spawn(async move { following.auth.follow(stop).await });
        // The consumer groups run on the leader.
        tokio::spawn(Arc::clone(&shared.groups).follow_leadership(groups_stop_rx));
    }
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    let dispatcher = tokio::spawn(hub.dispatch(stop_rx.clone()));
    let sampler =
        tokio::spawn(Arc::clone(&shared.meter).run(shared.store.clone(), stop_rx.clone()));
    if let Some(every) = shared.config.scavenge_interval {
        // Not awaited at shutdown: a scavenge running then stops between
        // two segments when the store closes.
        tokio::spawn(cmd::scheduled_scavenges(
            Arc::clone(&shared),
            every,
            stop_rx.clone(),
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    tracing::info!(listen = %local, tls = shared.config.tls.is_some(), "accepting clients");
    tokio::pin!(shutdown);
    loop {
        let next_local = async {
            match inside.as_mut() {
                Some(l) => l.0.recv().await,
                None => std::future::pending().await,
            }
        };
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, peer)) => (Accepted::Tcp(s), peer),
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment
                    // rather than spin; existing connections go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            c = next_local => match c {
                Some(c) => (Accepted::Local(c.stream), c.peer),
                // Every connector is gone: no more local connections.
                None => {
                    inside = None;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            match socket {
                Accepted::Tcp(socket) => {
                    // A TLS client could not read a clear-text answer: it
                    // is closed.
                    let answer = shared.config.tls.is_none();
                    tasks.spawn(refuse(socket, peer, shared.config.max_frame_bytes, answer));
                }
                // Its Hello finds the stream closed.
                Accepted::Local(stream) => drop(stream),
            }
            continue;
        };
        tracing::debug!(%peer, "connection opened");
        let (shared, stop) = (Arc::clone(&shared), stop_rx.clone());
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            match socket {
                Accepted::Tcp(socket) => {
                    connection::Connection::run(Arc::clone(&shared), socket, peer, stop).await
                }
                Accepted::Local(stream) => {
                    connection::Connection::run_local(Arc::clone(&shared), stream, peer, stop).await
                }
            }
            shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    drop(listener);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // The groups' last checkpoints, before the store closes.
    let _ = groups_stop_tx.send(true);
    shared.groups.stopped().await;
    let _ = dispatcher.await;
    let _ = sampler.await;
    Ok(())
}

/// A connection the accept loop took.
enum Accepted {
    Tcp(tokio::net::TcpStream),
    Local(tokio::io::DuplexStream),
}

/// Answers a connection past the limit with `ServerBusy` (in clear text
/// only: `answer`) and closes it.
async fn refuse(mut socket: tokio::net::TcpStream, peer: SocketAddr, max_frame: u32, answer: bool) {
    tracing::warn!(%peer, "refusing connection: too many connections");
    if !answer {
        let _ = socket.shutdown().await;
        return;
    }
    let mut buf = bytes::BytesMut::new();
    let reply = ErrorReply::new(
        ErrorCode::ServerBusy,
        "too many connections; try again later",
    );
    if reply.encode(&mut buf, Opcode::Hello, 0, max_frame).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&buf)).await;
    }
    let _ = socket.shutdown().await;
}
