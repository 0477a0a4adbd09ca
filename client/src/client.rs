//! [`Client`]: the public calls, the retry loop and lazy reconnection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
use logbook_protocol::{
    Append, AppendResult, DeleteStream, Direction, ExpectedVersion, Frame, GetMetadata, HelloOk,
    ListStreams, LogPosition, MAX_LIST_STREAMS, NewEvent, Opcode, Ping, ReadAll, ReadStream,
    Request, Response, ServerMessage, SetMetadata, StreamInfo, StreamVersion, SubscribeFrom, Text,
    Truncate, validate_event_type, validate_stream_name,
};
use parking_lot::Mutex;
use tokio::net::ToSocketAddrs;
use tracing::debug;

use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::options::{ClientOptions, RetryPolicy};
use crate::read::{
    AllPage, EventStream, ReadAllOptions, ReadStreamOptions, StreamPage, Target, first_page_count,
};
use crate::subscription::{
    SubscribeAllOptions, SubscribeStreamOptions, Subscription, Target as SubTarget,
};
use crate::{CatalogPage, LifecycleWritten};

/// A connection to a Logbook server, shared by every clone.
///
/// `Client` is cheap to clone (one reference count) and `Send + Sync`: clone
/// it into as many tasks as you like. All of them share one TCP connection,
/// with many requests in flight at once; replies are matched to their
/// callers whatever order they come back in.
///
/// If the connection breaks, the next call opens a new one. A call whose
/// connection broke before its reply arrived is retried under the
/// [`RetryPolicy`](crate::RetryPolicy); errors about the request itself
/// (such as [`Error::WrongExpectedVersion`]) are never retried.
///
/// The connection closes when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// The server's addresses, resolved once by `connect`, and, for a
    /// cluster, its members' (learned from each Hello).
    addrs: Mutex<Vec<SocketAddr>>,
    /// A cluster's leader, as the latest Hello or `NotLeader` told: tried
    /// first.
    leader: Mutex<Option<SocketAddr>>,
    /// Talking to a cluster: given several servers, or told of members by
    /// a Hello (a host name with several addresses is not one).
    cluster: std::sync::atomic::AtomicBool,
    options: ClientOptions,
    /// The current connection. A `parking_lot` mutex: each call only clones
    /// the `Arc` out of it.
    current: Mutex<Option<Arc<Connection>>>,
    /// The `HelloOk` of the latest connection.
    hello: Mutex<Arc<HelloOk>>,
    /// One connection attempt at a time: callers that find the connection
    /// broken queue here instead of each opening their own. Held across the
    /// attempt's `.await`s, hence an async mutex.
    connecting: tokio::sync::Mutex<()>,
    /// Connection attempts finished so far.
    attempts: AtomicU64,
    /// How the latest attempt failed to connect, if it did: callers queued
    /// behind a failed attempt fail with it rather than each waiting out a
    /// connect timeout of their own.
    last_failure: Mutex<Option<(io::ErrorKind, String)>>,
    /// Ping nonces.
    nonce: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &*self.inner.addrs.lock())
            .field("client_name", &self.inner.options.client_name)
            .finish_non_exhaustive()
    }
}

/// The longest wait between two attempts while a cluster fails over.
const FAILOVER_POLL: Duration = Duration::from_millis(100);

/// Client-side check of a stream name (the server's rule).
pub(crate) fn check_stream(stream: &str) -> Result<()> {
    validate_stream_name(stream).map_err(|e| Error::BadRequest(e.to_string()))
}

/// How many `NotLeader` answers a request outside the retry loop follows
/// (one never retried, a group join): a leader changing meanwhile
/// redirects again.
pub(crate) const MAX_REDIRECTS: u32 = 3;

impl Client {
    /// Connects to a server with default [`ClientOptions`].
    ///
    /// Resolves `addr`, opens a TCP connection and completes the Hello
    /// handshake before returning. Later reconnects use the addresses
    /// resolved here.
    ///
    /// ```no_run
    /// # async fn demo() -> logbook_client::Result<()> {
    /// let client = logbook_client::Client::connect("127.0.0.1:7117").await?;
    /// println!("connected to logbookd {}", client.server_info().server_version);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(addr: impl ToSocketAddrs) -> Result<Client> {
        Client::connect_with(addr, ClientOptions::default()).await
    }

    /// Connects to a server with the given options.
    ///
    /// The first connection is attempted once (bounded by
    /// [`ClientOptions::connect_timeout`]); the retry policy applies to
    /// calls, not to this first connect.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use logbook_client::{Client, ClientOptions};
    ///
    /// # async fn demo() -> logbook_client::Result<()> {
    /// let options = ClientOptions::default()
    ///     .client_name("inventory-service")
    ///     .request_timeout(Some(Duration::from_secs(2)));
    /// let client = Client::connect_with("127.0.0.1:7117", options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_with(addr: impl ToSocketAddrs, options: ClientOptions) -> Result<Client> {
        Client::connect_any([addr], options).await
    }

    /// Connects to the first of `servers` that answers: the nodes of a
    /// cluster, say (`["10.0.0.1:7117", "10.0.0.2:7117", "10.0.0.3:7117"]`).
    /// The client learns the cluster's members and its leader from each
    /// Hello, sends its requests to the leader, follows `NotLeader`
    /// answers to the new one after a failover, and resends an append
    /// whose answer was lost (with the same event ids, so that it is
    /// stored once: the server answers a resend of a stored batch with
    /// its first result).
    pub async fn connect_any<A: ToSocketAddrs>(
        servers: impl IntoIterator<Item = A>,
        options: ClientOptions,
    ) -> Result<Client> {
        let mut addrs = Vec::new();
        let mut failure = None;
        let mut given = 0;
        for server in servers {
            given += 1;
            match tokio::net::lookup_host(server).await {
                Ok(found) => addrs.extend(found),
                Err(e) => failure = Some(e),
            }
        }
        if addrs.is_empty() {
            return Err(Error::Connect(failure.unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the address resolved to nothing",
                )
            })));
        }
        let client = Client::open(addrs, options).await?;
        if given > 1 {
            client.inner.cluster.store(true, Ordering::Release);
        }
        Ok(client)
    }

    /// Opens the first connection to `addrs` (or through the connector).
    async fn open(addrs: Vec<SocketAddr>, options: ClientOptions) -> Result<Client> {
        let conn = Arc::new(Connection::open(&addrs, &options).await?);
        let hello = Arc::clone(conn.hello());
        let client = Client {
            inner: Arc::new(Inner {
                addrs: Mutex::new(addrs),
                leader: Mutex::new(None),
                cluster: std::sync::atomic::AtomicBool::new(false),
                options,
                current: Mutex::new(Some(conn)),
                hello: Mutex::new(Arc::clone(&hello)),
                connecting: tokio::sync::Mutex::new(()),
                attempts: AtomicU64::new(1),
                last_failure: Mutex::new(None),
                nonce: AtomicU64::new(1),
            }),
        };
        client.learn_members(&hello).await;
        Ok(client)
    }

    /// Adds a cluster's members (from a Hello) to the addresses tried, and
    /// notes its leader.
    async fn learn_members(&self, hello: &HelloOk) {
        if self.inner.options.connector.is_some() {
            return;
        }
        if !hello.members.is_empty() {
            self.inner.cluster.store(true, Ordering::Release);
        }
        for member in &hello.members {
            let Ok(found) = tokio::net::lookup_host(member.as_str()).await else {
                continue;
            };
            let mut addrs = self.inner.addrs.lock();
            for a in found {
                if !addrs.contains(&a) {
                    addrs.push(a);
                }
            }
        }
        if let Some(leader) = &hello.leader {
            self.follow_leader(leader).await;
        }
    }

    /// Whether `e` is what a failover looks like to a client of several
    /// servers: the connection broke or could not be opened, or the node
    /// is not (or no longer) the leader.
    fn fails_over(&self, e: &Error) -> bool {
        matches!(
            e,
            Error::NotLeader { .. } | Error::Disconnected | Error::Connect(_) | Error::ShuttingDown
        ) && self.inner.cluster.load(Ordering::Acquire)
    }

    /// After a `NotLeader` answer from a cluster node, on a new connection:
    /// to the leader it named; or, when it named none (it knows none: an
    /// election, or it is cut off from the others, or outside the
    /// membership), to the other nodes first, this one last. Returns
    /// whether the client moved.
    pub(crate) async fn redirected(&self, e: &Error) -> bool {
        match e {
            Error::NotLeader {
                leader: Some(leader),
            } => self.follow_leader(leader).await,
            Error::NotLeader { leader: None } if self.inner.cluster.load(Ordering::Acquire) => {
                *self.inner.leader.lock() = None;
                let peer = self.live_connection().and_then(|c| c.peer());
                let mut addrs = self.inner.addrs.lock();
                if let Some(at) = peer.and_then(|p| addrs.iter().position(|a| *a == p)) {
                    let this = addrs.remove(at);
                    addrs.push(this);
                }
            }
            _ => return false,
        }
        self.reset_connection();
        true
    }

    /// Tries `leader` (a client address) first from now on.
    async fn follow_leader(&self, leader: &str) {
        let found = tokio::net::lookup_host(leader)
            .await
            .ok()
            .and_then(|mut a| a.next());
        if let Some(addr) = found {
            *self.inner.leader.lock() = Some(addr);
        }
    }

    /// Connects through `options.connector` (see
    /// [`ClientOptions::connector`]) instead of TCP: a server in the same
    /// process, or a stream of the caller's making. Fails with
    /// [`Error::Connect`] when `options` has no connector.
    pub async fn connect_via(options: ClientOptions) -> Result<Client> {
        if options.connector.is_none() {
            return Err(Error::Connect(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ClientOptions::connector is not set",
            )));
        }
        Client::open(Vec::new(), options).await
    }

    /// The server's `HelloOk` from the latest handshake: its version and
    /// limits (largest frame, largest append, most requests in flight).
    ///
    /// ```no_run
    /// # async fn demo(client: logbook_client::Client) {
    /// let info = client.server_info();
    /// println!(
    ///     "logbookd {}: at most {} events per append",
    ///     info.server_version, info.max_events_per_append
    /// );
    /// # }
    /// ```
    pub fn server_info(&self) -> HelloOk {
        HelloOk::clone(&self.inner.hello.lock())
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// Appends `events` to `stream`, all or nothing, if `expected` holds at
    /// commit time. Returns once the events are durable.
    ///
    /// Fails early with [`Error::BadRequest`] for an invalid stream name or
    /// event type or an empty batch, and with [`Error::TooLarge`] for a
    /// batch over the server's announced limits. A failed expectation is
    /// [`Error::WrongExpectedVersion`], carrying the stream's actual version.
    /// Retries re-send the same event ids, which the server recognises.
    ///
    /// ```no_run
    /// use logbook_client::{Client, EventId, ExpectedVersion, NewEvent};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let opened = NewEvent::new(EventId::from_u128(1), "AccountOpened", r#"{"owner":"ada"}"#);
    /// let result = client
    ///     .append("account-42", ExpectedVersion::NoStream, vec![opened])
    ///     .await?;
    /// // The next append expects the version this one ended at.
    /// let deposit = NewEvent::new(EventId::from_u128(2), "MoneyDeposited", r#"{"amount":10}"#);
    /// client
    ///     .append("account-42", ExpectedVersion::Exact(result.last_version), vec![deposit])
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn append(
        &self,
        stream: impl Into<Text>,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let stream = stream.into();
        check_stream(&stream)?;
        self.check_batch(&events)?;
        let request = Request::Append(Append {
            stream,
            expected,
            events,
        });
        self.call(&request, |r| match r {
            Response::AppendOk(ok) => Some(ok),
            _ => None,
        })
        .await
    }

    /// Reads `stream` as an async [`Stream`](futures::Stream) of events,
    /// fetching pages of [`ReadStreamOptions::page_size`] events as they are
    /// consumed, up to [`ReadStreamOptions::max_count`] events in total.
    /// Reading a stream that has no events yields
    /// [`Error::StreamNotFound`](crate::Error::StreamNotFound) (as KurrentDB
    /// does: a mistyped name is not an empty history); reading past the end
    /// of one that exists yields nothing.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use logbook_client::{Client, ReadStreamOptions};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let mut events = client.read_stream("account-42", ReadStreamOptions::default());
    /// while let Some(event) = events.try_next().await? {
    ///     println!("{} {} {}", event.version, event.event_type, event.data.len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_stream(&self, stream: impl Into<Text>, options: ReadStreamOptions) -> EventStream {
        EventStream::new(
            self.clone(),
            Target::Stream(stream.into()),
            options.from.map(|v| v.0),
            options.direction,
            options.max_count,
            options.page_size,
            options.min_position,
        )
    }

    /// Reads one page of `stream`: at most `min(page_size, max_count)`
    /// events starting at [`ReadStreamOptions::from`], with the stream's
    /// last version and where the next page starts. For callers that keep
    /// their own cursor; [`Client::read_stream`] pages for you.
    ///
    /// ```no_run
    /// use logbook_client::{Client, ReadStreamOptions};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let mut options = ReadStreamOptions::default().page_size(100);
    /// loop {
    ///     let page = client.read_stream_page("account-42", options).await?;
    ///     for event in &page.events {
    ///         println!("{}: {}", event.version, event.event_type);
    ///     }
    ///     match page.next {
    ///         Some(next) => options = options.from(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_stream_page(
        &self,
        stream: impl Into<Text>,
        options: ReadStreamOptions,
    ) -> Result<StreamPage> {
        let stream = stream.into();
        check_stream(&stream)?;
        let count = first_page_count(options.page_size, options.max_count)?;
        self.fetch_stream_page(
            stream,
            options.from,
            options.direction,
            count,
            options.min_position,
        )
        .await
    }

    /// Reads the global log as an async [`Stream`](futures::Stream) of
    /// events in position order (or reverse), paging like
    /// [`Client::read_stream`]. Reading forward ends at the events committed
    /// when the last page was read.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use logbook_client::{Client, LogPosition, ReadAllOptions};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let events = client.read_all(ReadAllOptions::default().from(LogPosition(0)));
    /// let count = events.try_fold(0u64, |n, _event| async move { Ok(n + 1) }).await?;
    /// println!("{count} events");
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_all(&self, options: ReadAllOptions) -> EventStream {
        EventStream::new(
            self.clone(),
            Target::All,
            options.from.map(|p| p.0),
            options.direction,
            options.max_count,
            options.page_size,
            options.min_position,
        )
    }

    /// Reads one page of the global log: at most `min(page_size,
    /// max_count)` events starting at [`ReadAllOptions::from`], with the
    /// log's head and where the next page starts.
    ///
    /// ```no_run
    /// use logbook_client::{Client, ReadAllOptions};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// // The 10 most recent events.
    /// let page = client
    ///     .read_all_page(ReadAllOptions::default().backward().max_count(10))
    ///     .await?;
    /// println!("{} events committed, newest first: {:?}", page.head, page.events.first());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_all_page(&self, options: ReadAllOptions) -> Result<AllPage> {
        let count = first_page_count(options.page_size, options.max_count)?;
        self.fetch_all_page(options.from, options.direction, count, options.min_position)
            .await
    }

    /// Asks the server to answer at once; returns the round-trip time.
    ///
    /// ```no_run
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// let rtt = client.ping().await?;
    /// println!("round trip: {rtt:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ping(&self) -> Result<Duration> {
        let nonce = self.inner.nonce.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let pong = self
            .call(&Request::Ping(Ping { nonce }), |r| match r {
                Response::Pong(pong) => Some(pong),
                _ => None,
            })
            .await?;
        if pong.nonce != nonce {
            return Err(Error::Protocol(logbook_protocol::Error::Malformed {
                opcode: Opcode::Ping,
                reason: format!("pong nonce {} answers ping nonce {nonce}", pong.nonce),
            }));
        }
        Ok(start.elapsed())
    }

    /// The server's figures: counts of events, streams, segments and bytes,
    /// connections, subscriptions and their lag, recent rates, and what
    /// the last start-up's recovery did.
    ///
    /// ```no_run
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// let stats = client.stats().await?;
    /// println!("{} events in {} streams", stats.events, stats.streams);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stats(&self) -> Result<crate::ServerStats> {
        self.call(&Request::Stats(logbook_protocol::Stats), |r| match r {
            Response::StatsOk(stats) => Some(*stats),
            _ => None,
        })
        .await
    }

    /// Sets `stream`'s metadata: retention (`max_count`, `max_age_secs`),
    /// `truncate_before` and `custom` keys. Replaces the previous metadata
    /// whole, except that `truncate_before` only rises. Returns once
    /// durable; from then on every read path (stream reads, the global
    /// log, subscriptions) serves only the events the metadata keeps.
    ///
    /// `expected` is checked against the metadata stream `$$stream`, not
    /// the stream itself: pass the `meta_version` of the last
    /// [`LifecycleWritten`](crate::LifecycleWritten) (from this call or
    /// [`Client::get_stream_metadata`]), [`ExpectedVersion::NoStream`]
    /// before the first lifecycle operation, or [`ExpectedVersion::Any`].
    /// A failed check is [`Error::WrongExpectedVersion`] naming `$$stream`;
    /// a hard-deleted stream is [`Error::StreamDeleted`]. Out-of-range
    /// settings fail early with [`Error::BadRequest`].
    ///
    /// A call retried after a lost reply may report a wrong expected
    /// version although the first attempt took effect: read the metadata
    /// back to tell.
    ///
    /// ```no_run
    /// use logbook_client::{Client, ExpectedVersion, StreamMetadata};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let keep_last_100 = StreamMetadata {
    ///     max_count: Some(100),
    ///     ..StreamMetadata::default()
    /// };
    /// let written = client
    ///     .set_stream_metadata("sensor-7", ExpectedVersion::Any, keep_last_100)
    ///     .await?;
    /// println!("metadata version {}", written.meta_version);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_stream_metadata(
        &self,
        stream: impl Into<Text>,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<LifecycleWritten> {
        let stream = stream.into();
        check_stream(&stream)?;
        metadata
            .validate()
            .map_err(|e| Error::BadRequest(format!("invalid stream metadata: {e}")))?;
        let request = Request::SetMetadata(SetMetadata {
            stream,
            expected,
            metadata,
        });
        self.call(&request, |r| match r {
            Response::SetMetadataOk(ok) => Some(ok),
            _ => None,
        })
        .await
    }

    /// `stream`'s lifecycle state: its metadata, how far it is truncated,
    /// whether it is deleted, with the `meta_version` to expect in the next
    /// [`Client::set_stream_metadata`]. `None` if the stream never had a
    /// lifecycle operation (whether or not it has events).
    ///
    /// ```no_run
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// match client.get_stream_metadata("sensor-7").await? {
    ///     Some(lc) => println!("{:?} (deleted: {:?})", lc.state.metadata, lc.state.deleted),
    ///     None => println!("no metadata"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_stream_metadata(
        &self,
        stream: impl Into<Text>,
    ) -> Result<Option<LifecycleWritten>> {
        let stream = stream.into();
        check_stream(&stream)?;
        let request = Request::GetMetadata(GetMetadata { stream });
        self.call(&request, |r| match r {
            Response::GetMetadataOk(ok) => Some(ok),
            _ => None,
        })
        .await
    }

    /// A page of the stream catalog: up to `limit` streams whose name
    /// starts with `prefix` (empty: all), after the name `after`
    /// (exclusive; `None`: from the first), in the byte order of their
    /// names, each with its last version, live events, deletion and
    /// metadata. The server caps `limit` at 10,000 and a page at about
    /// 1 MiB; the page's `next` is the `after` of the next one. Metadata
    /// streams (`$$S`) are not listed. Safe to retry.
    ///
    /// ```no_run
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// let mut after = None;
    /// loop {
    ///     let page = client.list_streams("account-", after.as_deref(), 1000).await?;
    ///     for s in &page.streams {
    ///         println!("{} v{:?} {} live", s.stream, s.last_version, s.event_count);
    ///     }
    ///     match page.next {
    ///         Some(n) => after = Some(n),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_streams(
        &self,
        prefix: impl Into<Text>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<CatalogPage> {
        let request = Request::ListStreams(ListStreams {
            prefix: prefix.into(),
            after: after.map(Text::from),
            limit: limit.max(1),
        });
        self.call(&request, |r| match r {
            Response::ListStreamsOk(ok) => Some(ok),
            _ => None,
        })
        .await
    }

    /// Every stream whose name starts with `prefix`, following the pages
    /// of [`Client::list_streams`] to the end (all of them in memory: for
    /// large stores, page instead).
    pub async fn list_all_streams(&self, prefix: impl Into<Text>) -> Result<Vec<StreamInfo>> {
        let prefix = prefix.into();
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .list_streams(prefix.clone(), after.as_deref(), MAX_LIST_STREAMS)
                .await?;
            out.extend(page.streams);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Removes `stream`'s events below version `before` from every read
    /// path; the rest keep their versions and positions. Only rises: a
    /// `before` at or below the current truncation changes nothing. Safe to
    /// retry. A hard-deleted stream is [`Error::StreamDeleted`].
    ///
    /// ```no_run
    /// use logbook_client::StreamVersion;
    ///
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// // Keep versions 1000 and later (a snapshot was written at 1000).
    /// client.truncate_stream("account-42", StreamVersion(1000)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn truncate_stream(
        &self,
        stream: impl Into<Text>,
        before: StreamVersion,
    ) -> Result<LifecycleWritten> {
        let stream = stream.into();
        check_stream(&stream)?;
        let request = Request::Truncate(Truncate { stream, before });
        self.call(&request, |r| match r {
            Response::TruncateOk(ok) => Some(ok),
            _ => None,
        })
        .await
    }

    /// Deletes `stream` if it is at `expected` (checked as an append's
    /// is). [`Deletion::Soft`]: reads say [`Error::StreamNotFound`], and a
    /// later append expecting [`ExpectedVersion::NoStream`] or `Any`
    /// continues the versions where they stopped, serving only the new
    /// events. [`Deletion::Hard`]: reads, appends and lifecycle operations
    /// of the stream fail with [`Error::StreamDeleted`], for ever. Either
    /// way, every read path stops serving the stream's events once this
    /// returns.
    ///
    /// A call retried after a lost reply may report a wrong expected
    /// version (soft) or a deleted stream (hard) although the first attempt
    /// took effect.
    ///
    /// ```no_run
    /// use logbook_client::{Deletion, ExpectedVersion};
    ///
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// client
    ///     .delete_stream("cart-17", ExpectedVersion::Any, Deletion::Soft)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_stream(
        &self,
        stream: impl Into<Text>,
        expected: ExpectedVersion,
        mode: Deletion,
    ) -> Result<LifecycleWritten> {
        let stream = stream.into();
        check_stream(&stream)?;
        let request = Request::DeleteStream(DeleteStream {
            stream,
            expected,
            mode,
        });
        self.call(&request, |r| match r {
            Response::DeleteStreamOk(ok) => Some(ok),
            _ => None,
        })
        .await
    }

    /// Subscribes to the global log: every event (or those passing the
    /// options' filter) from [`SubscribeAllOptions::from`], history first,
    /// then live, as a [`Subscription`] stream. Returns once the server has
    /// accepted the subscription.
    ///
    /// [`SubscribeFrom::End`] is resolved here, with one read of the log's
    /// head: the subscription delivers the events committed after that
    /// read.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use logbook_client::{Client, Filter, SubscribeAllOptions, SubscriptionMessage};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let accounts = Filter {
    ///     stream_prefixes: vec!["account-".to_owned()],
    ///     ..Filter::default()
    /// };
    /// let mut subscription = client
    ///     .subscribe_all(SubscribeAllOptions::default().filter(accounts))
    ///     .await?;
    /// while let Some(message) = subscription.try_next().await? {
    ///     if let SubscriptionMessage::Event(event) = message {
    ///         println!("{} {} {}", event.position, event.stream, event.event_type);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe_all(&self, options: SubscribeAllOptions) -> Result<Subscription> {
        if let Some(wrong) = options.wrong_checkpoint() {
            return Err(Error::BadRequest(format!(
                "a stream subscription's checkpoint ({wrong:?}) cannot start a global-log subscription"
            )));
        }
        let next = match options.from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::After(p) => p.0.saturating_add(1),
            SubscribeFrom::End => {
                // An empty page from past the end carries the head.
                self.fetch_all_page(Some(LogPosition(u64::MAX)), Direction::Forward, 1, None)
                    .await?
                    .head
                    .0
            }
        };
        let target = SubTarget::All {
            filter: options.filter,
        };
        Subscription::open(self.clone(), target, next, options.window).await
    }

    /// Subscribes to one stream: its events in version order from
    /// [`SubscribeStreamOptions::from`], history first, then live, as a
    /// [`Subscription`] stream. The stream need not exist yet: its first
    /// events are delivered when they are appended.
    ///
    /// [`SubscribeFrom::End`] is resolved here, with one read of the
    /// stream's last version: the subscription delivers the events appended
    /// after that read.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use logbook_client::{Client, StreamVersion, SubscribeFrom, SubscribeStreamOptions};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let options = SubscribeStreamOptions::default().from(SubscribeFrom::After(StreamVersion(9)));
    /// let mut subscription = client.subscribe_stream("account-42", options).await?;
    /// while let Some(message) = subscription.try_next().await? {
    ///     println!("{message:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe_stream(
        &self,
        stream: impl Into<Text>,
        options: SubscribeStreamOptions,
    ) -> Result<Subscription> {
        let stream = stream.into();
        check_stream(&stream)?;
        if let Some(wrong) = options.wrong_checkpoint() {
            return Err(Error::BadRequest(format!(
                "a global-log subscription's checkpoint ({wrong:?}) cannot start a stream subscription"
            )));
        }
        let next = match options.from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::After(v) => v.0.saturating_add(1),
            SubscribeFrom::End => {
                // An empty page from past the end carries the last version.
                let page = self
                    .fetch_stream_page(
                        stream.clone(),
                        Some(StreamVersion(u64::MAX)),
                        Direction::Forward,
                        1,
                        None,
                    )
                    .await;
                match page {
                    Ok(page) => page.last_version.map_or(0, |v| v.0.saturating_add(1)),
                    Err(Error::StreamNotFound { .. }) => 0,
                    Err(e) => return Err(e),
                }
            }
        };
        let target = SubTarget::Stream { name: stream };
        Subscription::open(self.clone(), target, next, options.window).await
    }

    /// Closes the current connection as if the network had failed: requests
    /// in flight fail over to a new connection under the retry policy, and
    /// subscriptions subscribe again, resuming where they were. The next
    /// call opens a new connection. For tests of failure handling, and to
    /// shed a connection that looks unhealthy.
    ///
    /// ```no_run
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// client.reset_connection();
    /// client.ping().await?; // on a new connection
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset_connection(&self) {
        let current = self.inner.current.lock().take();
        if let Some(conn) = current {
            conn.close("reset by the client");
        }
    }

    /// One `ReadStream` request.
    pub(crate) async fn fetch_stream_page(
        &self,
        stream: Text,
        from: Option<StreamVersion>,
        direction: Direction,
        max_count: u32,
        min_position: Option<LogPosition>,
    ) -> Result<StreamPage> {
        let request = Request::ReadStream(ReadStream {
            stream,
            from,
            direction,
            max_count,
            min_position,
        });
        self.call(&request, |r| match r {
            Response::ReadStreamOk(ok) => Some(StreamPage::from(ok)),
            _ => None,
        })
        .await
    }

    /// One `ReadAll` request.
    pub(crate) async fn fetch_all_page(
        &self,
        from: Option<LogPosition>,
        direction: Direction,
        max_count: u32,
        min_position: Option<LogPosition>,
    ) -> Result<AllPage> {
        let request = Request::ReadAll(ReadAll {
            from,
            direction,
            max_count,
            min_position,
        });
        self.call(&request, |r| match r {
            Response::ReadAllOk(ok) => Some(AllPage::from(ok)),
            _ => None,
        })
        .await
    }

    /// Checks a batch against the protocol's rules and the server's
    /// announced limits, so that hopeless appends fail without a round trip.
    fn check_batch(&self, events: &[NewEvent]) -> Result<()> {
        if events.is_empty() {
            return Err(Error::BadRequest(
                "an append needs at least one event".to_owned(),
            ));
        }
        for (index, event) in events.iter().enumerate() {
            validate_event_type(&event.event_type)
                .map_err(|e| Error::BadRequest(format!("event {index}: {e}")))?;
        }
        let hello = Arc::clone(&self.inner.hello.lock());
        // A limit of 0 is read as "not announced".
        let max_events = u64::from(hello.max_events_per_append);
        if max_events > 0 && events.len() as u64 > max_events {
            return Err(Error::TooLarge {
                limit: Some(max_events),
                message: format!(
                    "{} events in one append; the server takes at most {max_events}",
                    events.len()
                ),
            });
        }
        let max_event = u64::from(hello.max_event_bytes);
        for (index, e) in events.iter().enumerate() {
            let bytes = (e.event_type.len() + e.metadata.len() + e.data.len()) as u64;
            if max_event > 0 && bytes > max_event {
                return Err(Error::TooLarge {
                    limit: Some(max_event),
                    message: format!(
                        "event {index} holds {bytes} bytes of type, metadata and data; the server takes at most {max_event}"
                    ),
                });
            }
        }
        let max_bytes = u64::from(hello.max_append_bytes);
        if max_bytes > 0 {
            let bytes: u64 = events
                .iter()
                .map(|e| (e.event_type.len() + e.metadata.len() + e.data.len()) as u64)
                .sum();
            if bytes > max_bytes {
                return Err(Error::TooLarge {
                    limit: Some(max_bytes),
                    message: format!(
                        "{bytes} event bytes in one append; the server takes at most {max_bytes}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Sends `request` until it gets an answer the retry policy accepts,
    /// within the request timeout. `pick` takes the expected response out of
    /// a success reply (`None`: a reply of the wrong type).
    pub(crate) async fn call<T>(
        &self,
        request: &Request,
        pick: impl Fn(Response) -> Option<T>,
    ) -> Result<T> {
        let options = &self.inner.options;
        self.call_with(request, pick, options.request_timeout, options.retry)
            .await
    }

    /// [`Client::call`] with its own bound and retry policy, for calls that
    /// may take much longer than the request timeout (a scavenge) or must
    /// not be retried.
    pub(crate) async fn call_with<T>(
        &self,
        request: &Request,
        pick: impl Fn(Response) -> Option<T>,
        timeout: Option<Duration>,
        policy: RetryPolicy,
    ) -> Result<T> {
        // One span per call, retries included (`logbook.request`, with the
        // opcode and the stream when there is one): a subscriber that
        // exports spans sees each call the application makes.
        let stream = match request {
            Request::Append(a) => Some(&*a.stream),
            Request::ReadStream(r) => Some(&*r.stream),
            _ => None,
        };
        let span = tracing::debug_span!(
            "logbook.request",
            opcode = ?request.opcode(),
            stream = stream.unwrap_or(""),
        );
        let attempts = self.attempts(request, &pick, policy);
        tracing::Instrument::instrument(
            async move {
                match timeout {
                    Some(limit) => tokio::time::timeout(limit, attempts)
                        .await
                        .unwrap_or(Err(Error::Timeout)),
                    None => attempts.await,
                }
            },
            span,
        )
        .await
    }

    /// The retry loop.
    async fn attempts<T>(
        &self,
        request: &Request,
        pick: &impl Fn(Response) -> Option<T>,
        policy: RetryPolicy,
    ) -> Result<T> {
        let mut failed = 0u32;
        let started = std::time::Instant::now();
        loop {
            match self.attempt(request, pick).await {
                Err(e)
                    if e.is_retryable()
                        && (failed.saturating_add(1) < policy.max_attempts
                            || (policy.max_attempts > 1
                                && self.fails_over(&e)
                                && started.elapsed() < policy.failover)) =>
                {
                    failed += 1;
                    let delay = match &e {
                        // Redirected: go to the leader at once.
                        Error::NotLeader { leader: Some(_) } => {
                            self.redirected(&e).await;
                            Duration::ZERO
                        }
                        Error::NotLeader { leader: None } => {
                            self.redirected(&e).await;
                            policy.delay(failed)
                        }
                        Error::Disconnected | Error::Connect(_) | Error::ShuttingDown => {
                            // The leader may be what went away.
                            *self.inner.leader.lock() = None;
                            policy.delay(failed)
                        }
                        _ => policy.delay(failed),
                    };
                    // A cluster elects a new leader in about 2 s: ask
                    // often enough to find it soon after.
                    let delay = if self.fails_over(&e) {
                        delay.min(FAILOVER_POLL)
                    } else {
                        delay
                    };
                    debug!(error = %e, failed, ?delay, opcode = ?request.opcode(), "retrying");
                    tokio::time::sleep(delay).await;
                }
                result => return result,
            }
        }
    }

    /// One attempt: (re)connect if needed, send, await and decode the reply.
    async fn attempt<T>(
        &self,
        request: &Request,
        pick: &impl Fn(Response) -> Option<T>,
    ) -> Result<T> {
        let conn = self.connection().await?;
        Self::exchange(&conn, request, pick).await
    }

    /// Sends `request` on `conn` and decodes its reply.
    pub(crate) async fn exchange<T>(
        conn: &Connection,
        request: &Request,
        pick: &impl Fn(Response) -> Option<T>,
    ) -> Result<T> {
        let frame = conn.send(request)?.await?;
        Self::decode_reply(conn, &frame, request, pick)
    }

    /// Decodes `frame`, the reply to `request` on `conn` (callers that
    /// pipeline send first and decode each reply as it comes).
    pub(crate) fn decode_reply<T>(
        conn: &Connection,
        frame: &Frame,
        request: &Request,
        pick: &impl Fn(Response) -> Option<T>,
    ) -> Result<T> {
        let opcode = request.opcode();
        // A reply that does not fit its request means the connection can no
        // longer be trusted (PROTOCOL.md §3: a bad reply is a broken
        // connection).
        let mismatch = |reason: String| {
            conn.close(&reason);
            Error::Protocol(logbook_protocol::Error::Malformed { opcode, reason })
        };
        if frame.header.opcode != opcode {
            return Err(mismatch(format!(
                "reply carries opcode {:?}",
                frame.header.opcode
            )));
        }
        match ServerMessage::decode(frame) {
            Ok(ServerMessage::Response(response)) => {
                pick(response).ok_or_else(|| mismatch("reply of the wrong type".to_owned()))
            }
            Ok(ServerMessage::Error(reply)) => {
                let error = Error::from_reply(reply, request);
                if matches!(error, Error::ShuttingDown) {
                    // This server is going away: retry on a new connection.
                    conn.close("server is shutting down");
                }
                Err(error)
            }
            Ok(ServerMessage::Push(_) | ServerMessage::GroupPush(_)) => {
                Err(mismatch("a push answered a request".to_owned()))
            }
            Err(e) => {
                conn.close(&format!("undecodable reply: {e}"));
                Err(Error::Protocol(e))
            }
        }
    }

    /// The open connection, or a new one if it broke.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        if let Some(conn) = self.live_connection() {
            return Ok(conn);
        }
        let seen = self.inner.attempts.load(Ordering::Acquire);
        let _turn = self.inner.connecting.lock().await;
        if let Some(conn) = self.live_connection() {
            return Ok(conn);
        }
        if self.inner.attempts.load(Ordering::Acquire) != seen
            && let Some((kind, message)) = &*self.inner.last_failure.lock()
        {
            return Err(Error::replay_connect(*kind, message));
        }
        // The leader first, then the other addresses in order.
        let addrs: Vec<SocketAddr> = {
            let leader = *self.inner.leader.lock();
            let known = self.inner.addrs.lock();
            leader
                .into_iter()
                .chain(known.iter().copied().filter(|a| Some(*a) != leader))
                .collect()
        };
        let opened = Connection::open(&addrs, &self.inner.options).await;
        let failure = match &opened {
            Err(Error::Connect(e)) => Some((e.kind(), e.to_string())),
            _ => None,
        };
        *self.inner.last_failure.lock() = failure;
        self.inner.attempts.fetch_add(1, Ordering::Release);
        let conn = Arc::new(opened?);
        *self.inner.hello.lock() = Arc::clone(conn.hello());
        self.learn_members(conn.hello()).await;
        *self.inner.current.lock() = Some(Arc::clone(&conn));
        debug!("reconnected");
        Ok(conn)
    }

    fn live_connection(&self) -> Option<Arc<Connection>> {
        self.inner
            .current
            .lock()
            .as_ref()
            .filter(|c| c.is_open())
            .cloned()
    }
}
