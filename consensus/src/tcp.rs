//! The network between the nodes of a cluster: Raft's messages over TCP.
//!
//! A node serves its peers on its replication address ([`serve`]); to
//! reach a peer it keeps one connection per link ([`TcpNetwork`]), made
//! when first needed and made again after any failure. On a connection
//! each message is a frame (`frame.rs`: length, crc32c, MessagePack), and
//! requests are answered in order, one at a time: openraft sends on a link
//! one request after another.
//!
//! A connection starts with a hello naming the cluster, the sender and the
//! cluster's shared secret (`--cluster-secret`, if set): a node only takes
//! Raft messages from a member of its own cluster. With [`PeerTls`]
//! (`--cluster-tls-*`) every connection is mutual TLS first: each node
//! presents a certificate signed by the cluster's CA and checks its
//! peer's (the connecting node checks the name of the address it dialled),
//! so the hello, the secret and the log travel encrypted and a stranger
//! without such a certificate is refused before it sends a byte of Raft.
//! Without it they travel in clear text, and the replication port belongs
//! on a private network.
//!
//! A message is at most 64 MiB ([`frame::MAX_PAYLOAD`]): an append of
//! entries that would be larger sends the first ones only and reports a
//! partial success, and openraft sends the rest next.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::catchup::{FETCH_BYTES, Fetch, Records};
use crate::sm::{EventLog, StateMachine};
use crate::{Batch, Command, Member, TypeConfig, frame};

type C = TypeConfig;
type Raft<L> = openraft::Raft<C, StateMachine<L>>;
type Vote = openraft::alias::VoteOf<C>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<C>;
type Snapshot = openraft::alias::SnapshotOf<C, Cursor<Vec<u8>>>;

/// Bytes of entries one append message carries at most (the frame limit,
/// less room for the encoding around them).
const MAX_ENTRY_BYTES: usize = frame::MAX_PAYLOAD - (1 << 20);

/// Who a node is, as its peers check it.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The cluster's name: nodes of another cluster are refused.
    pub cluster: String,
    /// This node's id.
    pub node: u64,
    /// The secret every member knows, if one was set.
    pub secret: Option<String>,
    /// Mutual TLS between the nodes, if set.
    pub tls: Option<PeerTls>,
    /// This node's size limits: a peer with others is refused.
    pub limits: Limits,
}

/// The size limits that decide whether an append is taken (the engine's
/// `max_event_bytes`, `max_batch_bytes`, `max_batch_events`). Every member
/// applies every committed append: with other limits, one node would
/// refuse what another wrote, and their logs would differ. So the nodes of
/// a cluster must have the same, and a node refuses a peer that has
/// others (changing them means restarting every node with the new ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of one event (type, metadata and data).
    pub max_event_bytes: u64,
    /// Bytes of one append's record.
    pub max_batch_bytes: u64,
    /// Events of one append.
    pub max_batch_events: u32,
}

impl Limits {
    /// The limits of an engine configured so.
    pub fn of(config: &logbook_storage::StoreConfig) -> Limits {
        Limits {
            max_event_bytes: config.max_event_bytes,
            max_batch_bytes: config.max_batch_bytes,
            max_batch_events: config.max_batch_events,
        }
    }
}

/// Mutual TLS between the nodes of a cluster: this node's certificate, and
/// the CA that signs every node's.
#[derive(Clone)]
pub struct PeerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// TLS with `chain` (this node's certificate, leaf first) and `key`,
    /// taking only peers whose certificates `roots` sign. The certificate
    /// serves both ways (a node accepts and connects), so it must name the
    /// host of this node's replication address and allow both server and
    /// client authentication.
    pub fn new(
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
        roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    ) -> Result<PeerTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut store = rustls::RootCertStore::empty();
        for cert in roots {
            store
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
        let store = Arc::new(store);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&store),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| format!("the cluster's CA: {e}"))?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("this node's certificate and key: {e}"))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(store)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("this node's certificate and key: {e}"))?;
        Ok(PeerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        })
    }
}

/// A connection between nodes: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}
type Stream = Box<dyn Io>;

/// How long a TLS handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

// (Debug for the tests only: a hello carries the secret.)
#[cfg_attr(test, derive(Debug))]
#[derive(Serialize, Deserialize)]
enum Request {
    Hello {
        cluster: String,
        from: u64,
        secret: Option<String>,
        limits: Limits,
    },
    AppendEntries(AppendEntriesRequest<C>),
    Vote(VoteRequest<C>),
    PreVote(VoteRequest<C>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// Records of the event log ([`crate::catchup`]).
    Fetch {
        from: u64,
        to: u64,
        max_bytes: u64,
    },
}

#[cfg_attr(test, derive(Debug))]
#[derive(Serialize, Deserialize)]
enum Response {
    Hello(Result<(), String>),
    AppendEntries(Result<AppendEntriesResponse<C>, String>),
    Vote(Result<VoteResponse<C>, String>),
    Snapshot(Result<SnapshotResponse<C>, String>),
    Fetch(Result<Vec<Batch>, String>),
}

/// Most connections the replication port holds at once once they said a
/// hello it accepted (a node's peers open a few each).
const MAX_PEER_CONNECTIONS: usize = 64;

/// Most connections it holds at once before their hello (a TLS handshake
/// and a hello take up to 20 s): strangers wait in these, so they never
/// take the peers' slots.
const MAX_UNPROVEN: usize = 16;

/// Most of those from one address: a stranger on one host cannot take
/// them all.
const MAX_UNPROVEN_PER_ADDRESS: usize = 4;

/// The connections not proven yet, by address.
#[derive(Default)]
struct Unproven {
    by_address: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place among the unproven ones, given back when it is
/// dropped (the hello accepted, or the connection closed).
struct UnprovenSlot {
    unproven: Arc<Unproven>,
    address: std::net::IpAddr,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Unproven {
    /// A place for a connection from `address`, if it has fewer than
    /// [`MAX_UNPROVEN_PER_ADDRESS`] unproven already.
    fn admit(
        self: &Arc<Self>,
        address: std::net::IpAddr,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> Option<UnprovenSlot> {
        let mut by = self.by_address.lock();
        let n = by.entry(address).or_default();
        if *n >= MAX_UNPROVEN_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(UnprovenSlot {
            unproven: Arc::clone(self),
            address,
            _slot: slot,
        })
    }
}

impl Drop for UnprovenSlot {
    fn drop(&mut self) {
        let mut by = self.unproven.by_address.lock();
        if let Some(n) = by.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                by.remove(&self.address);
            }
        }
    }
}

/// Largest hello (a peer that is not one yet gets no more memory).
const MAX_HELLO: usize = 4096;

/// Reads one frame's payload of at most `max` bytes; `None` at a clean
/// end of the stream.
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin + ?Sized),
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut header = [0u8; frame::HEADER];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let Some((len, crc)) = frame::header(&header, max) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame header declaring an empty payload or one past {max} bytes"),
        ));
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    if crc32c::crc32c(&payload) != crc {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a frame's checksum does not match",
        ));
    }
    Ok(Some(payload))
}

async fn write_message<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin + ?Sized),
    message: &T,
) -> std::io::Result<()> {
    let payload = rmp_serde::to_vec(message).map_err(std::io::Error::other)?;
    if payload.len() > frame::MAX_PAYLOAD {
        return Err(std::io::Error::other(format!(
            "a message of {} bytes is past the limit",
            payload.len()
        )));
    }
    let mut out = Vec::with_capacity(payload.len() + frame::HEADER);
    frame::encode(&payload, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Equal strings, compared in a time that does not depend on where they
/// differ.
fn same_secret(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.bytes()
                    .zip(b.bytes())
                    .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                    == 0
        }
        _ => false,
    }
}

/// When this node last heard from a leader: the last AppendEntries
/// (heartbeats included) or snapshot it took from one. A follower cut off
/// from the others may not notice otherwise: openraft's pre-vote keeps it a
/// follower of the leader it knew while no election of its succeeds (as a
/// node removed while unreachable, which the leader no longer contacts).
#[derive(Debug)]
pub struct Contact {
    base: std::time::Instant,
    /// Milliseconds from `base` to the last contact.
    at_ms: std::sync::atomic::AtomicU64,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            base: std::time::Instant::now(),
            at_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Contact {
    fn touch(&self) {
        let now = self.base.elapsed().as_millis() as u64;
        self.at_ms.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the last contact (since start if none yet).
    pub fn since(&self) -> Duration {
        let at = Duration::from_millis(self.at_ms.load(std::sync::atomic::Ordering::Relaxed));
        self.base.elapsed().saturating_sub(at)
    }
}

/// Serves the peers that connect to `listener` with `raft`, and with the
/// event log's `records` for those that fetch them, until the task is
/// dropped; `contact` is touched when a leader's entries or snapshot are
/// taken.
pub async fn serve<L: EventLog>(
    listener: TcpListener,
    raft: Raft<L>,
    identity: Arc<Identity>,
    records: Records,
    contact: Arc<Contact>,
) {
    // Peers hold a few connections each; strangers must not take the
    // daemon's file descriptors, nor the peers' slots: a connection waits
    // for its hello in a small budget of its own (a few per address), and
    // takes a peer's slot once its hello is accepted.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PEER_CONNECTIONS));
    let unproven_slots = Arc::new(tokio::sync::Semaphore::new(MAX_UNPROVEN));
    let unproven = Arc::new(Unproven::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "replication port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admitted = Arc::clone(&unproven_slots)
            .try_acquire_owned()
            .ok()
            .and_then(|slot| unproven.admit(peer.ip(), slot));
        let Some(admitted) = admitted else {
            tracing::warn!(%peer, "replication port: too many connections waiting for their hello ({MAX_UNPROVEN}, {MAX_UNPROVEN_PER_ADDRESS} per address), refusing another");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let raft = raft.clone();
        let identity = Arc::clone(&identity);
        let records = Arc::clone(&records);
        let contact = Arc::clone(&contact);
        let slots = Arc::clone(&slots);
        tokio::spawn(async move {
            let proven = Proven {
                unproven: Some(admitted),
                slots,
                slot: None,
            };
            if let Err(e) = serve_peer(stream, raft, &identity, records, &contact, proven).await {
                tracing::debug!(%peer, error = %e, "replication connection closed");
            }
        });
    }
}

/// A connection's slots: its unproven one until its hello is accepted,
/// then a peer's.
struct Proven {
    unproven: Option<UnprovenSlot>,
    slots: Arc<tokio::sync::Semaphore>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Proven {
    /// Trades the unproven slot for a peer's; false if all are taken.
    fn prove(&mut self) -> bool {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => {
                self.slot = Some(slot);
                self.unproven = None;
                true
            }
            Err(_) => false,
        }
    }
}

async fn serve_peer<L: EventLog>(
    tcp: TcpStream,
    raft: Raft<L>,
    identity: &Identity,
    records: Records,
    contact: &Contact,
    mut proven: Proven,
) -> std::io::Result<()> {
    let invalid = |e: &dyn std::fmt::Display| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    let mut stream: Stream = match &identity.tls {
        None => Box::new(tcp),
        Some(tls) => match tokio::time::timeout(HANDSHAKE, tls.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Box::new(s),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replication port: refused a TLS handshake");
                return Err(e);
            }
            Err(_) => return Err(invalid(&"no TLS handshake")),
        },
    };
    // The hello first, within a few seconds.
    let hello = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream, MAX_HELLO))
        .await
        .map_err(|_| invalid(&"no hello"))??;
    let Some(hello) = hello else { return Ok(()) };
    let refusal = match rmp_serde::from_slice::<Request>(&hello) {
        Ok(Request::Hello {
            cluster,
            from,
            secret,
            limits,
        }) => {
            if cluster != identity.cluster {
                Some(format!(
                    "node {from} is of cluster {cluster:?}, this is {:?}",
                    identity.cluster
                ))
            } else if !same_secret(secret.as_deref(), identity.secret.as_deref()) {
                Some(format!("node {from} does not know the cluster's secret"))
            } else if limits != identity.limits {
                Some(format!(
                    "node {from} has other size limits ({limits:?}) than this node ({:?}): every member must have the same --max-event-bytes, --max-append-bytes and --max-events-per-append",
                    identity.limits
                ))
            } else {
                None
            }
        }
        _ => Some("the first message must be a hello".to_owned()),
    };
    let refusal = refusal.or_else(|| {
        (!proven.prove()).then(|| {
            format!("this node holds {MAX_PEER_CONNECTIONS} replication connections already")
        })
    });
    if let Some(why) = refusal {
        tracing::warn!("replication port: refused a connection: {why}");
        write_message(&mut stream, &Response::Hello(Err(why.clone()))).await?;
        return Err(invalid(&why));
    }
    write_message(&mut stream, &Response::Hello(Ok(()))).await?;
    while let Some(payload) = read_frame(&mut stream, frame::MAX_PAYLOAD).await? {
        let request: Request = rmp_serde::from_slice(&payload).map_err(|e| invalid(&e))?;
        let response = match request {
            Request::Hello { .. } => return Err(invalid(&"a second hello")),
            Request::AppendEntries(rpc) => {
                let r = raft.append_entries(rpc).await;
                // Taken (whole, in part, or to be sent again from an
                // earlier entry): the sender leads this node's term.
                if matches!(&r, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    contact.touch();
                }
                Response::AppendEntries(r.map_err(|e| e.to_string()))
            }
            Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await.map_err(|e| e.to_string())),
            Request::PreVote(rpc) => {
                Response::Vote(raft.pre_vote(rpc).await.map_err(|e| e.to_string()))
            }
            Request::Snapshot { vote, meta, data } => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: Cursor::new(data),
                };
                let r = raft.install_full_snapshot(vote, snapshot).await;
                if r.is_ok() {
                    contact.touch();
                }
                Response::Snapshot(r.map_err(|e| e.to_string()))
            }
            Request::Fetch {
                from,
                to,
                max_bytes,
            } => {
                // At most what a fetch asks for: the reply must fit in a
                // frame.
                let max = (max_bytes as usize).min(FETCH_BYTES);
                let records = Arc::clone(&records);
                let read = tokio::task::spawn_blocking(move || records(from, to, max)).await;
                Response::Fetch(match read {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                })
            }
        };
        write_message(&mut stream, &response).await?;
    }
    Ok(())
}

/// A node's view of the network: connections to its peers at their
/// replication addresses.
#[derive(Clone)]
pub struct TcpNetwork {
    identity: Arc<Identity>,
}

impl TcpNetwork {
    /// The network as the node of `identity` sees it.
    pub fn new(identity: Arc<Identity>) -> TcpNetwork {
        TcpNetwork { identity }
    }
}

/// The link to one peer.
pub struct TcpLink {
    identity: Arc<Identity>,
    target: u64,
    addr: String,
    stream: Option<Stream>,
}

impl RaftNetworkFactory<C> for TcpNetwork {
    type Network = TcpLink;

    async fn new_client(&mut self, target: u64, node: &Member) -> TcpLink {
        TcpLink::new(&self.identity, target, node)
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<C> {
    Unreachable::new(&AnyError::error(e.to_string()))
}

/// Why a call failed: the peer could not be reached (openraft backs off),
/// or the exchange broke.
enum CallError {
    Unreachable(Unreachable<C>),
    Network(NetworkError<C>),
    Remote(String),
}

impl From<CallError> for RPCError<C> {
    fn from(e: CallError) -> RPCError<C> {
        match e {
            CallError::Unreachable(u) => RPCError::Unreachable(u),
            CallError::Network(n) => RPCError::Network(n),
            CallError::Remote(why) => RPCError::Network(NetworkError::new(&AnyError::error(why))),
        }
    }
}

impl From<CallError> for StreamingError<C> {
    fn from(e: CallError) -> StreamingError<C> {
        match e {
            CallError::Unreachable(u) => StreamingError::Unreachable(u),
            CallError::Network(n) => StreamingError::Network(n),
            CallError::Remote(why) => {
                StreamingError::Network(NetworkError::new(&AnyError::error(why)))
            }
        }
    }
}

impl TcpLink {
    /// A link to node `target` at `member`'s replication address, connected
    /// when first used.
    fn new(identity: &Arc<Identity>, target: u64, member: &Member) -> TcpLink {
        TcpLink {
            identity: Arc::clone(identity),
            target,
            addr: member.raft.clone(),
            stream: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut Stream, CallError> {
        if self.stream.is_none() {
            let failed = |e: &dyn std::fmt::Display| {
                CallError::Unreachable(unreachable(format!(
                    "node {} at {}: {e}",
                    self.target, self.addr
                )))
            };
            let tcp = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| failed(&e))?;
            let _ = tcp.set_nodelay(true);
            let mut stream: Stream = match &self.identity.tls {
                None => Box::new(tcp),
                Some(tls) => {
                    // The name checked in the peer's certificate: the host
                    // of the address dialled.
                    let host = self
                        .addr
                        .rsplit_once(':')
                        .map_or(self.addr.as_str(), |(h, _)| h)
                        .trim_start_matches('[')
                        .trim_end_matches(']');
                    let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                        .map_err(|e| failed(&e))?;
                    let handshake = tls.connector.connect(name, tcp);
                    match tokio::time::timeout(HANDSHAKE, handshake).await {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => return Err(failed(&format!("TLS: {e}"))),
                        Err(_) => return Err(failed(&"no TLS handshake")),
                    }
                }
            };
            let hello = Request::Hello {
                cluster: self.identity.cluster.clone(),
                from: self.identity.node,
                secret: self.identity.secret.clone(),
                limits: self.identity.limits,
            };
            let answer = async {
                write_message(&mut stream, &hello).await?;
                read_frame(&mut stream, MAX_HELLO).await
            }
            .await
            .map_err(|e| CallError::Unreachable(unreachable(e)))?;
            match answer.map(|p| rmp_serde::from_slice::<Response>(&p)) {
                Some(Ok(Response::Hello(Ok(())))) => {}
                Some(Ok(Response::Hello(Err(why)))) => {
                    return Err(CallError::Unreachable(unreachable(format!(
                        "node {} refused this node: {why}",
                        self.target
                    ))));
                }
                _ => {
                    return Err(CallError::Unreachable(unreachable(format!(
                        "node {} at {} does not answer as a Logbook node",
                        self.target, self.addr
                    ))));
                }
            }
            self.stream = Some(stream);
        }
        Ok(self.stream.as_mut().expect("connected above"))
    }

    /// Sends `request` and reads its answer within `ttl`; any failure
    /// drops the connection (the next call makes a new one).
    async fn call(&mut self, request: &Request, ttl: Duration) -> Result<Response, CallError> {
        let exchange = async {
            let stream = self.connect().await?;
            let network = |e: std::io::Error| {
                CallError::Network(NetworkError::new(&AnyError::error(e.to_string())))
            };
            write_message(stream, request).await.map_err(network)?;
            let payload = read_frame(stream, frame::MAX_PAYLOAD)
                .await
                .map_err(network)?
                .ok_or_else(|| network(std::io::ErrorKind::UnexpectedEof.into()))?;
            rmp_serde::from_slice::<Response>(&payload)
                .map_err(|e| network(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
        };
        let r = match tokio::time::timeout(ttl, exchange).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Network(NetworkError::new(&AnyError::error(
                format!("node {} did not answer within {ttl:?}", self.target),
            )))),
        };
        if r.is_err() {
            self.stream = None;
        }
        r
    }

    /// A vote or pre-vote request, answered alike.
    async fn ask_vote(
        &mut self,
        request: Request,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        match self.call(&request, option.hard_ttl()).await? {
            Response::Vote(Ok(r)) => Ok(r),
            Response::Vote(Err(why)) => Err(CallError::Remote(why).into()),
            _ => Err(self.mismatch().into()),
        }
    }

    /// An answer of another kind than the request's: the connection is out
    /// of step, and is dropped.
    fn mismatch(&mut self) -> CallError {
        self.stream = None;
        CallError::Remote("an answer of another kind".into())
    }
}

/// [`Fetch`] over the replication port: one link per member, made when
/// first needed (as Raft's, with the hello and TLS).
pub struct TcpFetch {
    identity: Arc<Identity>,
    links: tokio::sync::Mutex<std::collections::HashMap<u64, TcpLink>>,
    stopped: std::sync::atomic::AtomicBool,
}

/// How long a fetch of [`FETCH_BYTES`] may take.
const FETCH_WAIT: Duration = Duration::from_secs(60);

impl TcpFetch {
    /// Fetches as the node of `identity`.
    pub fn new(identity: Arc<Identity>) -> TcpFetch {
        TcpFetch {
            identity,
            links: Default::default(),
            stopped: Default::default(),
        }
    }

    /// The node is shutting down ([`Fetch::stopped`]).
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Fetch for TcpFetch {
    fn fetch<'a>(
        &'a self,
        id: u64,
        member: &'a Member,
        from: u64,
        to: u64,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<Batch>>> {
        Box::pin(async move {
            if id == self.identity.node {
                return Ok(Vec::new());
            }
            let mut links = self.links.lock().await;
            let link = links
                .entry(id)
                .or_insert_with(|| TcpLink::new(&self.identity, id, member));
            if link.addr != member.raft {
                link.addr = member.raft.clone();
                link.stream = None;
            }
            let request = Request::Fetch {
                from,
                to,
                max_bytes: FETCH_BYTES as u64,
            };
            let failed = |why: String| std::io::Error::other(format!("node {id}: {why}"));
            match link.call(&request, FETCH_WAIT).await {
                Ok(Response::Fetch(Ok(batches))) => Ok(batches),
                Ok(Response::Fetch(Err(why))) => Err(failed(why)),
                Ok(_) => {
                    link.stream = None;
                    Err(failed("an answer of another kind".into()))
                }
                Err(CallError::Remote(why)) => Err(failed(why)),
                Err(CallError::Network(e)) => Err(failed(e.to_string())),
                Err(CallError::Unreachable(e)) => Err(failed(e.to_string())),
            }
        })
    }

    fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// About how many bytes an entry takes in a message.
fn entry_bytes(entry: &openraft::alias::EntryOf<C>) -> usize {
    match &entry.payload {
        EntryPayload::Normal(Command::Append { stream, events, .. }) => {
            64 + stream.len()
                + events
                    .iter()
                    .map(|e| 48 + e.event_type.len() + e.metadata.len() + e.data.len())
                    .sum::<usize>()
        }
        EntryPayload::Normal(Command::Lifecycle { stream, change, .. }) => {
            128 + stream.len()
                + match change {
                    crate::LifecycleChange::SetMetadata { metadata } => metadata.len(),
                    _ => 0,
                }
        }
        _ => 1024,
    }
}

impl RaftNetworkV2<C> for TcpLink {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        // Only as many entries as fit in a message (at least one).
        let mut bytes = 0;
        let fit = rpc
            .entries
            .iter()
            .position(|e| {
                bytes += entry_bytes(e);
                bytes > MAX_ENTRY_BYTES
            })
            .map(|n| n.max(1));
        let partial = match fit {
            Some(n) if n < rpc.entries.len() => {
                rpc.entries.truncate(n);
                rpc.entries.last().map(|e| e.log_id)
            }
            _ => None,
        };
        match self
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await?
        {
            Response::AppendEntries(Ok(AppendEntriesResponse::Success)) if partial.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(partial))
            }
            Response::AppendEntries(Ok(r)) => Ok(r),
            Response::AppendEntries(Err(why)) => Err(CallError::Remote(why).into()),
            _ => Err(self.mismatch().into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.ask_vote(Request::Vote(rpc), option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.ask_vote(Request::PreVote(rpc), option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let request = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        // A snapshot may take long to send and install: no deadline but
        // the cancellation.
        let answer = tokio::select! {
            r = self.call(&request, Duration::from_secs(3600)) => r?,
            closed = cancel => {
                self.stream = None;
                return Err(StreamingError::Closed(closed));
            }
        };
        match answer {
            Response::Snapshot(Ok(r)) => Ok(r),
            Response::Snapshot(Err(why)) => Err(CallError::Remote(why).into()),
            _ => Err(self.mismatch().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExpectedVersion;
    use openraft::entry::RaftEntry;

    type Entry = openraft::alias::EntryOf<C>;
    type LogId = openraft::alias::LogIdOf<C>;

    fn log_id(index: u64) -> LogId {
        LogId::new(
            openraft::impls::leader_id_adv::LeaderId {
                term: 3,
                node_id: 2,
            },
            index,
        )
    }

    /// Every message kind survives its encoding: what a peer decodes is
    /// what was sent (compared by their full Debug forms).
    #[test]
    fn messages_round_trip() {
        let command = Command::Append {
            stream: "acct-1".into(),
            expected: ExpectedVersion::Exact(logbook_protocol::StreamVersion(4)),
            events: vec![crate::EventData {
                id: [7; 16],
                event_type: "Deposited".into(),
                metadata: bytes::Bytes::from_static(b"{\"k\":1}"),
                data: bytes::Bytes::from(vec![0u8, 255, 1]),
            }],
            timestamp_us: 1_700_000_000_000_001,
        };
        let vote = Vote::new(3, 2);
        let requests = [
            Request::Hello {
                cluster: "logbook".into(),
                from: 2,
                secret: Some("s".into()),
                limits: Limits {
                    max_event_bytes: 1,
                    max_batch_bytes: 2,
                    max_batch_events: 3,
                },
            },
            Request::AppendEntries(AppendEntriesRequest {
                vote,
                prev_log_id: Some(log_id(9)),
                entries: vec![
                    Entry::new_blank(log_id(10)),
                    Entry::new_normal(log_id(11), command),
                ],
                leader_commit: Some(log_id(9)),
            }),
            Request::Vote(VoteRequest::new(vote, Some(log_id(11)))),
            Request::PreVote(VoteRequest::new(vote, None)),
            Request::Fetch {
                from: 7,
                to: u64::MAX,
                max_bytes: 4 << 20,
            },
        ];
        for r in requests {
            let bytes = rmp_serde::to_vec(&r).unwrap();
            let back: Request = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
        }
        let responses = [
            Response::Hello(Err("no".into())),
            Response::AppendEntries(Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(4))))),
            Response::AppendEntries(Ok(AppendEntriesResponse::HigherVote(vote))),
            Response::Vote(Err("stopped".into())),
            Response::Fetch(Ok(vec![Batch {
                stream: "acct-1".into(),
                first_position: 7,
                first_version: 2,
                timestamp_us: 1_700_000_000_000_001,
                events: vec![crate::EventData {
                    id: [3; 16],
                    event_type: "Deposited".into(),
                    metadata: bytes::Bytes::new(),
                    data: bytes::Bytes::from_static(b"{}"),
                }],
                removed: true,
            }])),
            Response::Fetch(Err("not where a record starts".into())),
        ];
        for r in responses {
            let bytes = rmp_serde::to_vec(&r).unwrap();
            let back: Response = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
        }
    }
}
