//! Client configuration: [`ClientOptions`] and [`RetryPolicy`]. Every field
//! states its default and unit.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use logbook_protocol::DEFAULT_MAX_FRAME_BYTES;
use tokio::io::{AsyncRead, AsyncWrite};

/// How a [`Client`](crate::Client) connects and how its calls behave.
///
/// Build it from [`ClientOptions::default`] with the builder methods:
///
/// ```
/// use std::time::Duration;
/// use logbook_client::{ClientOptions, RetryPolicy};
///
/// let options = ClientOptions::default()
///     .client_name("billing-projector")
///     .auth_token("s3cret")
///     .request_timeout(Some(Duration::from_secs(5)))
///     .retry(RetryPolicy::default().max_attempts(5));
/// assert_eq!(options.retry.max_attempts, 5);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Bound on opening one connection: TCP connect plus the Hello
    /// handshake. Default 5 s. `None` waits as long as the OS does.
    pub connect_timeout: Option<Duration>,
    /// Bound on one call, from its start to its reply, reconnects and
    /// retries included; past it the call fails with
    /// [`Error::Timeout`](crate::Error::Timeout). Default 30 s. `None`: no
    /// bound. For paging streams it bounds each page. It does not bound
    /// [`Client::scavenge`](crate::Client::scavenge) and
    /// [`Client::erase`](crate::Client::erase), which may take minutes.
    pub request_timeout: Option<Duration>,
    /// Name sent in `Hello`, for the server's logs. Default
    /// `logbook-client/<crate version>`.
    pub client_name: String,
    /// Token sent in `Hello` when the server requires one: an API token
    /// (`lbk_...`) or the server's `--auth-token`, or with `user` that
    /// user's password. Default `None`.
    pub auth_token: Option<String>,
    /// The user logging in with a password ([`ClientOptions::credentials`]).
    /// Default `None`.
    pub user: Option<String>,
    /// TLS to the server ([`TlsOptions`](crate::TlsOptions)). Default
    /// `None`: clear text, which a server started with `--tls-cert`
    /// refuses.
    pub tls: Option<crate::TlsOptions>,
    /// When and how often calls are retried. Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// How a [`Subscription`](crate::Subscription) whose connection broke
    /// (or whose server shut down) tries to subscribe again, resuming where
    /// it stopped. Default [`RetryPolicy::forever`]: a subscription outlives
    /// server restarts; it fails only when this policy gives up or the
    /// server refuses it outright. Each attempt is bounded by
    /// `request_timeout`. (The first subscribe of
    /// [`Client::subscribe_all`](crate::Client::subscribe_all) and
    /// [`Client::subscribe_stream`](crate::Client::subscribe_stream) is a
    /// call like any other: it follows `retry` and `request_timeout`.)
    pub resubscribe: RetryPolicy,
    /// Largest frame this client accepts from the server, length prefix
    /// included, in bytes; larger frames break the connection before
    /// anything is allocated for them. Outgoing frames are bounded by the
    /// smaller of this and the server's announced `max_frame_bytes`.
    /// Default 16 MiB (the protocol's default).
    pub max_frame_bytes: u32,
    /// Opens each connection's byte stream in place of TCP (and TLS):
    /// for a server in the same process ([`Client::connect_via`](crate::Client::connect_via)).
    /// Default `None`.
    pub connector: Option<Connector>,
}

/// A connection's byte stream opened by a [`Connector`].
pub type BoxIo = Box<dyn Io>;

/// A byte stream a [`Connector`] may return.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

type Open = dyn Fn() -> Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send>> + Send + Sync;

/// Opens a connection's byte stream: called for the first connection and
/// for every reconnect. The Hello handshake runs over it as over TCP;
/// [`ClientOptions::tls`] does not apply.
#[derive(Clone)]
pub struct Connector(Arc<Open>);

impl Connector {
    /// A connector calling `open` for every connection.
    pub fn new<F, Fut>(open: F) -> Connector
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<BoxIo>> + Send + 'static,
    {
        Connector(Arc::new(move || Box::pin(open())))
    }

    pub(crate) fn open(&self) -> Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send>> {
        (self.0)()
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// Never shows the token or password.
impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("client_name", &self.client_name)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("user", &self.user)
            .field("tls", &self.tls)
            .field("retry", &self.retry)
            .field("resubscribe", &self.resubscribe)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("connector", &self.connector)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Some(Duration::from_secs(5)),
            request_timeout: Some(Duration::from_secs(30)),
            client_name: concat!("logbook-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            auth_token: None,
            user: None,
            tls: None,
            retry: RetryPolicy::default(),
            resubscribe: RetryPolicy::forever(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connector: None,
        }
    }
}

impl ClientOptions {
    /// Sets [`ClientOptions::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`ClientOptions::request_timeout`].
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`ClientOptions::client_name`].
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = name.into();
        self
    }

    /// Sets [`ClientOptions::auth_token`].
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Logs in as `user` with `password` (sets [`ClientOptions::user`] and
    /// [`ClientOptions::auth_token`]).
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.auth_token = Some(password.into());
        self
    }

    /// Sets [`ClientOptions::tls`].
    pub fn tls(mut self, tls: crate::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets [`ClientOptions::retry`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets [`ClientOptions::resubscribe`].
    pub fn resubscribe(mut self, policy: RetryPolicy) -> Self {
        self.resubscribe = policy;
        self
    }

    /// Sets [`ClientOptions::max_frame_bytes`].
    pub fn max_frame_bytes(mut self, bytes: u32) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Sets [`ClientOptions::connector`].
    pub fn connector(mut self, connector: Connector) -> Self {
        self.connector = Some(connector);
        self
    }
}

/// Bounded retries with exponential backoff.
///
/// A call is retried when it fails with an error for which
/// [`Error::is_retryable`](crate::Error::is_retryable) holds: the connection
/// broke before the reply arrived or could not be (re)opened, or the server
/// answered `ServerBusy` or `ShuttingDown`. Before attempt `n + 1` the call
/// waits `min(initial_backoff * 2^(n-1), max_backoff)`.
///
/// Every call it applies to is safe to retry: reads and pings change
/// nothing, an erase of an erased stream finishes the work and answers
/// as the first did, and the server answers a re-sent append whose event
/// ids equal the stream's last committed batch with the original result.
/// ([`Client::scavenge`](crate::Client::scavenge) is never retried: one
/// whose reply was lost is still running on the server.) (A retried append could be
/// applied twice only if another writer appended to the same stream, with
/// [`ExpectedVersion::Any`](crate::ExpectedVersion::Any), between the lost
/// reply and the retry; an exact expected version turns that case into
/// [`Error::WrongExpectedVersion`](crate::Error::WrongExpectedVersion).)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Most attempts per call, the first included; 1 disables retries.
    /// Default 3.
    pub max_attempts: u32,
    /// Wait before the first retry. Default 20 ms.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts. Default 1 s.
    pub max_backoff: Duration,
    /// How long a client of several servers (a cluster) goes on retrying,
    /// past `max_attempts`, while the connection breaks or the node it
    /// reaches is not the leader: a failover's election (about 2 s) fits
    /// in it. Default 10 s. Unused when `max_attempts` is 1.
    pub failover: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            failover: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries (one attempt per call).
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// A policy that never gives up (`u32::MAX` attempts), waiting 50 ms
    /// before the first retry and at most 5 s between two: the default of
    /// [`ClientOptions::resubscribe`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use logbook_client::RetryPolicy;
    ///
    /// let patient = RetryPolicy::forever().backoff(Duration::from_millis(100), Duration::from_secs(30));
    /// assert_eq!(patient.max_attempts, u32::MAX);
    /// ```
    pub fn forever() -> Self {
        RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            failover: Duration::from_secs(10),
        }
    }

    /// Sets [`RetryPolicy::max_attempts`] (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets [`RetryPolicy::failover`].
    pub fn failover(mut self, window: Duration) -> Self {
        self.failover = window;
        self
    }

    /// Sets [`RetryPolicy::initial_backoff`] and [`RetryPolicy::max_backoff`].
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// The wait before attempt `failed + 1`, after `failed` failed attempts
    /// (`failed >= 1`).
    pub(crate) fn delay(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p =
            RetryPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(50));
        assert_eq!(p.delay(1), Duration::from_millis(10));
        assert_eq!(p.delay(2), Duration::from_millis(20));
        assert_eq!(p.delay(3), Duration::from_millis(40));
        assert_eq!(p.delay(4), Duration::from_millis(50));
        assert_eq!(p.delay(100), Duration::from_millis(50));
        assert_eq!(RetryPolicy::none().max_attempts, 1);
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
    }
}
