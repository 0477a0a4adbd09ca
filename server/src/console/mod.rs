//! The web console, served under `/console` on the metrics port
//! (`--metrics-listen`; `--no-console` turns it off).
//!
//! A small static page (`index.html`, `app.js`, `style.css`, built in, no
//! front-end build step) over JSON endpoints:
//!
//! | path | answer |
//! |---|---|
//! | `GET /console` | the page |
//! | `GET /console/api/session` | who is logged in, their roles and rights |
//! | `POST /console/api/login` | `{"user","password"}` or `{"token"}`: a session cookie |
//! | `POST /console/api/logout` | ends the session |
//! | `GET /console/api/streams?prefix=&after=&limit=` | a page of the stream catalog |
//! | `GET /console/api/stream?name=&from=&dir=&limit=` | a page of a stream's events, and its catalog entry |
//! | `GET /console/api/log?from=&dir=&limit=` | a page of the global log (the live tail polls it) |
//! | `GET /console/api/groups` | consumer groups and their figures |
//! | `POST /console/api/groups/replay?group=` | replays a group's parked events |
//! | `GET /console/api/stats` | the `Stats` figures and their history (2 s samples, 15 minutes) |
//!
//! **Every request goes through the protocol, as the user.** A session is a
//! [`Client`] connected to this daemon inside the process (a
//! [`LocalConnector`]: no socket, no TLS) that logged in with the user's
//! credentials, on behalf of the browser's address (logins are throttled
//! per address as on the client port, audit lines name it). So the console
//! sees exactly what the user may see: the same rights, the same filtered
//! catalog and global log, the same refusals, changes of rights applied at
//! once, and a session ends when its user is deleted, disabled or changes
//! password (its reconnect is refused). The console adds no rule of its own
//! but these:
//! - Without a login (authentication off: no users, client port on
//!   loopback), only browsers on loopback are served, and only when the
//!   `Host` they asked for is `localhost` or an IP address (a page on
//!   another site cannot rebind its name to 127.0.0.1 and read the store).
//! - Requests that change something (`POST`) must carry the header
//!   `X-Logbook-Console: 1` and, when the browser sends `Origin`, come from
//!   the console's own origin; the session cookie is `HttpOnly` and
//!   `SameSite=Strict` (and `Secure` with `--metrics-tls`). Together these
//!   stop other sites from acting through a logged-in browser.
//! - Sessions expire after 30 minutes unused or 12 hours; at most 64 are
//!   kept (then logins wait for sessions to end), 8 per user (a user's new
//!   login ends its least recently used one). Each holds one client
//!   connection (counted in `--max-connections`), opened once: when the
//!   server closes it (the user was deleted, disabled, changed password or
//!   lost rights while subscribed) the session ends without trying the
//!   stored password again, so no stale tab counts as a failed login of its
//!   address.
//! - With authentication off there is nothing to log in to: logins are
//!   refused (else any browser that reaches the port could become the
//!   anonymous admin).
//! - Requests are bounded: 32 at once, 30 s each; at most 200 streams or
//!   events a page, a stream's page at most 4 MiB of payloads, the global
//!   log's events cut to a 2 KiB preview.
//!
//! The page itself builds every element with `textContent` (event data and
//! stream names are never parsed as HTML) and is served with a
//! `Content-Security-Policy` allowing only its own script and style.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use logbook_client::json::{EventJson, StreamJson, group_json, group_source};
use logbook_client::{
    Client, ClientOptions, Connector, Direction, Error as ClientError, LogPosition, ReadAllOptions,
    ReadStreamOptions, StreamVersion,
};
use logbook_storage::Store;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};

use crate::metrics::http::Reply;
use crate::net::stats::{RateMeter, snapshot};
use crate::net::{LocalConnector, NetStats};

/// The session cookie's name.
pub const COOKIE: &str = "lbk_console";
/// Sessions kept at most (each holds a client connection); past it logins
/// are refused until sessions end.
pub const MAX_SESSIONS: usize = 64;
/// Sessions one user keeps at most; a new login ends the user's least
/// recently used one past it.
pub const MAX_SESSIONS_PER_USER: usize = 8;
/// Console requests served at once (the metrics listener's other slots stay
/// free for `/health`, `/ready` and `/metrics`).
pub const MAX_REQUESTS: usize = 32;
/// Time one console request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Payload bytes of each event the global log's pages carry (the page
/// shows a preview; a stream's page carries events whole).
pub const LOG_PREVIEW_BYTES: usize = 2048;
/// Payload bytes a stream's page carries at most (at least one event).
pub const STREAM_PAGE_BYTES: usize = 4 << 20;
/// A session unused for this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after its login, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Most streams or events a page holds.
pub const MAX_PAGE: u32 = 200;
/// Time between two samples of the figures' history.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: 15 minutes.
pub const HISTORY: usize = 450;
/// Most pages of the global log one request reads to fill a page.
const MAX_LOG_READS: u32 = 16;
/// Longest stream name, prefix or group name taken from a query.
const MAX_NAME: usize = 4096;
/// How long an anonymous refusal is believed before asking again.
const AUTH_RECHECK: Duration = Duration::from_secs(10);

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

/// One HTTP request for the console, parsed by the metrics listener.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: &'a str,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Cookie` header.
    pub cookie: Option<&'a str>,
    /// Whether `X-Logbook-Console: 1` was sent.
    pub marked: bool,
    /// The body (for `POST`).
    pub body: &'a [u8],
    /// The browser's address.
    pub peer: SocketAddr,
}

/// A logged-in browser.
struct Session {
    client: Client,
    user: String,
    login: Instant,
    used: Instant,
}

/// The console's state: sessions and the figures' history.
pub struct Console {
    connector: LocalConnector,
    /// Mark cookies `Secure` (the metrics port speaks TLS).
    secure: bool,
    sessions: Mutex<HashMap<String, Session>>,
    /// The one client of browsers that need no login (authentication off).
    anonymous: tokio::sync::Mutex<Option<Client>>,
    /// When an anonymous connection was last refused for want of a login.
    refused_at: Mutex<Option<Instant>>,
    history: Mutex<VecDeque<Value>>,
    /// Console requests being served.
    slots: Arc<tokio::sync::Semaphore>,
}

impl Console {
    /// A console whose sessions connect through `connector`; `secure`:
    /// the metrics port speaks TLS.
    pub fn new(connector: LocalConnector, secure: bool) -> Arc<Console> {
        Arc::new(Console {
            connector,
            secure,
            sessions: Mutex::new(HashMap::new()),
            anonymous: tokio::sync::Mutex::new(None),
            refused_at: Mutex::new(None),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS)),
        })
    }

    /// Samples the figures every [`SAMPLE_EVERY`] for the charts, until
    /// the console is dropped.
    pub fn start_sampling(self: &Arc<Console>, store: Store, net: Arc<NetStats>) {
        let console: Weak<Console> = Arc::downgrade(self);
        tokio::spawn(async move {
            let meter = RateMeter::new();
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(console) = console.upgrade() else {
                    return;
                };
                meter.sample(&store.stats());
                let s = snapshot(&store, &net, &meter);
                let sample = json!({
                    "t": unix_ms(),
                    "events_per_sec": s.events_per_sec,
                    "appends_per_sec": s.appends_per_sec,
                    "fsyncs_per_sec": s.fsyncs_per_sec,
                    "connections": s.connections,
                    "subscriptions": s.subscriptions,
                    "subscription_lag_max": s.subscription_lag_max,
                    "events": s.events,
                    "log_bytes": s.log_bytes,
                });
                {
                    let mut h = console.history.lock();
                    if h.len() == HISTORY {
                        h.pop_front();
                    }
                    h.push_back(sample);
                }
                // Sessions nobody uses any more give their connections back.
                let now = Instant::now();
                console.sessions.lock().retain(|_, s| live(s, now));
            }
        });
    }

    /// Answers one request under `/console`, within the console's limits.
    pub async fn serve(&self, req: &Request<'_>) -> Reply {
        let Ok(_slot) = self.slots.try_acquire() else {
            return error(503, "the console is busy: try again")
                .with_header("Retry-After", "1".into());
        };
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, self.handle(req)).await {
            Ok(reply) => reply,
            Err(_) => error(503, "the request took too long"),
        };
        reply.with_header("X-Content-Type-Options", "nosniff".into())
    }

    /// Answers one request under `/console`.
    async fn handle(&self, req: &Request<'_>) -> Reply {
        match (req.method, req.path) {
            ("GET" | "HEAD", "/console" | "/console/") => asset(INDEX_HTML, "text/html"),
            ("GET" | "HEAD", "/console/app.js") => asset(APP_JS, "text/javascript"),
            ("GET" | "HEAD", "/console/style.css") => asset(STYLE_CSS, "text/css"),
            ("POST", "/console/api/login") => self.login(req).await,
            ("POST", "/console/api/logout") => self.logout(req),
            ("POST", "/console/api/groups/replay") => self.api(req).await,
            (_, "/console/api/login" | "/console/api/logout" | "/console/api/groups/replay") => {
                method_not_allowed("POST")
            }
            ("GET", p) if p.starts_with("/console/api/") => self.api(req).await,
            (_, p) if p.starts_with("/console/api/") => method_not_allowed("GET"),
            (_, "/console" | "/console/" | "/console/app.js" | "/console/style.css") => {
                method_not_allowed("GET, HEAD")
            }
            _ => error(404, "no such console page"),
        }
    }

    /// `POST /console/api/login`.
    async fn login(&self, req: &Request<'_>) -> Reply {
        if let Err(refused) = same_origin(req) {
            return refused;
        }
        #[derive(serde::Deserialize)]
        struct Login {
            user: Option<String>,
            password: Option<String>,
            token: Option<String>,
        }
        let Ok(login) = serde_json::from_slice::<Login>(req.body) else {
            return error(
                400,
                "expected JSON: {\"user\": ..., \"password\": ...} or {\"token\": ...}",
            );
        };
        let options = match (login.user, login.password, login.token) {
            (Some(user), Some(password), None) if !user.is_empty() => {
                self.options(req.peer, true).credentials(user, password)
            }
            (None, None, Some(token)) if !token.is_empty() => {
                self.options(req.peer, true).auth_token(token)
            }
            _ => return error(400, "give a user and a password, or an API token"),
        };
        // The first connect is attempted once: a wrong password is never
        // tried twice.
        let client = match Client::connect_via(options).await {
            Ok(c) => c,
            Err(ClientError::NotAuthenticated) => {
                return error(401, "wrong user name, password or token");
            }
            Err(e) => return client_failure(&e),
        };
        let who = match client.who_am_i().await {
            Ok(w) => w,
            Err(e) => return client_failure(&e),
        };
        if who.user == crate::auth::ANONYMOUS_USER {
            // Authentication is off: the server let any credentials in as
            // the anonymous admin. A login must not hand that to a browser
            // the anonymous rules (loopback, local name) would refuse.
            return error(
                409,
                "authentication is off (no users): there is nothing to log in to; the console answers browsers on this machine at localhost without a login",
            );
        }
        let Ok(id) = crate::auth::random_hex(32) else {
            return error(500, "no randomness for a session id");
        };
        let now = Instant::now();
        {
            let mut sessions = self.sessions.lock();
            sessions.retain(|_, s| live(s, now));
            // Logging in again ends the session the browser had.
            if let Ok(Some(old)) = session_id(req.cookie) {
                sessions.remove(old);
            }
            let mine: Vec<(Instant, String)> = sessions
                .iter()
                .filter(|(_, s)| s.user == who.user)
                .map(|(k, s)| (s.used, k.clone()))
                .collect();
            if mine.len() >= MAX_SESSIONS_PER_USER
                && let Some((_, oldest)) = mine.iter().min()
            {
                sessions.remove(oldest);
            }
            if sessions.len() >= MAX_SESSIONS {
                return error(
                    503,
                    "too many console sessions: try again when some have ended",
                )
                .with_header("Retry-After", "60".into());
            }
            sessions.insert(
                id.clone(),
                Session {
                    client,
                    user: who.user.clone(),
                    login: now,
                    used: now,
                },
            );
        }
        let secure = if self.secure { "; Secure" } else { "" };
        Reply::json(200, &json!({ "user": who.user })).with_header(
            "Set-Cookie",
            format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
        )
    }

    /// `POST /console/api/logout`.
    fn logout(&self, req: &Request<'_>) -> Reply {
        if let Err(refused) = same_origin(req) {
            return refused;
        }
        if let Ok(Some(id)) = session_id(req.cookie) {
            self.sessions.lock().remove(id);
        }
        Reply::json(200, &json!({ "ok": true })).with_header(
            "Set-Cookie",
            format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
        )
    }

    /// Options of a client connecting on behalf of `peer`; `once`: it
    /// connects only once (a session's: its credentials are never tried
    /// again after the server closed its connection).
    fn options(&self, peer: SocketAddr, once: bool) -> ClientOptions {
        let connector = self.connector.clone();
        let used = Arc::new(std::sync::atomic::AtomicBool::new(false));
        ClientOptions::default()
            .client_name(concat!("logbook-console/", env!("CARGO_PKG_VERSION")))
            .request_timeout(Some(Duration::from_secs(10)))
            .connector(Connector::new(move || {
                let connector = connector.clone();
                let again = used.swap(true, std::sync::atomic::Ordering::AcqRel);
                async move {
                    if once && again {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            SESSION_ENDED,
                        ));
                    }
                    let stream = connector.connect(peer).await?;
                    Ok(Box::new(stream) as logbook_client::BoxIo)
                }
            }))
    }

    /// The client serving `req`: its session's, or (authentication off,
    /// a loopback browser at a local name) the anonymous one.
    async fn client_for(&self, req: &Request<'_>) -> Result<(Client, Option<String>), Reply> {
        let id = match session_id(req.cookie) {
            Ok(id) => id,
            Err(()) => return Err(error(400, "more than one console session cookie")),
        };
        if let Some(id) = id {
            let now = Instant::now();
            let mut sessions = self.sessions.lock();
            match sessions.get_mut(id) {
                Some(s) if live(s, now) => {
                    s.used = now;
                    return Ok((s.client.clone(), Some(id.to_owned())));
                }
                Some(_) => {
                    sessions.remove(id);
                }
                None => {}
            }
        }
        if !req.peer.ip().to_canonical().is_loopback() {
            return Err(login_required("log in"));
        }
        if !host_is_local(req.host) {
            return Err(error(
                403,
                "without a login the console answers only at localhost or an IP address",
            ));
        }
        if self
            .refused_at
            .lock()
            .is_some_and(|t| t.elapsed() < AUTH_RECHECK)
        {
            return Err(login_required("log in"));
        }
        let mut anonymous = self.anonymous.lock().await;
        if let Some(c) = anonymous.as_ref() {
            return Ok((c.clone(), None));
        }
        match Client::connect_via(self.options(req.peer, false)).await {
            Ok(c) => {
                *anonymous = Some(c.clone());
                Ok((c, None))
            }
            Err(ClientError::NotAuthenticated) => {
                *self.refused_at.lock() = Some(Instant::now());
                Err(login_required("log in"))
            }
            Err(e) => Err(client_failure(&e)),
        }
    }

    /// Every endpoint that works through the user's client.
    async fn api(&self, req: &Request<'_>) -> Reply {
        if req.method == "POST"
            && let Err(refused) = same_origin(req)
        {
            return refused;
        }
        let (client, session) = match self.client_for(req).await {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let q = Query(req.query);
        let answer = match req.path {
            "/console/api/session" => session_json(&client, session.is_some()).await,
            "/console/api/streams" => streams_json(&client, &q).await,
            "/console/api/stream" => stream_json(&client, &q).await,
            "/console/api/log" => log_json(&client, &q).await,
            "/console/api/groups" => groups_json(&client).await,
            "/console/api/groups/replay" => replay_json(&client, &q).await,
            "/console/api/stats" => match client.stats().await {
                Ok(now) => Ok(Reply::json(
                    200,
                    &json!({
                        "now": now,
                        "history": self.history.lock().iter().collect::<Vec<_>>(),
                        "every_ms": SAMPLE_EVERY.as_millis() as u64,
                    }),
                )),
                Err(e) => Err(Failure::Client(e)),
            },
            _ => Err(Failure::Reply(error(404, "no such console endpoint"))),
        };
        match answer {
            Ok(reply) => reply,
            Err(Failure::Reply(r)) => r,
            Err(Failure::Client(e)) => {
                // A session whose connection the server closed (the user
                // was removed, disabled, changed password, or its rights
                // changed under a subscription) cannot reconnect: it ends.
                let ended = matches!(e, ClientError::NotAuthenticated)
                    || (session.is_some()
                        && matches!(&e, ClientError::Connect(io) if io.to_string().contains(SESSION_ENDED)));
                if ended {
                    // The user was removed, disabled, or changed password:
                    // the session's reconnect was refused.
                    match &session {
                        Some(id) => {
                            self.sessions.lock().remove(id);
                        }
                        None => *self.anonymous.lock().await = None,
                    }
                    return login_required("your session ended: log in again");
                }
                client_failure(&e)
            }
        }
    }
}

/// Why an endpoint failed.
enum Failure {
    Client(ClientError),
    Reply(Reply),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::Client(e)
    }
}

async fn session_json(client: &Client, logged_in: bool) -> Result<Reply, Failure> {
    let who = client.who_am_i().await?;
    Ok(Reply::json(
        200,
        &json!({
            "user": who.user,
            "roles": who.roles,
            "tenant": who.tenant,
            "admin": who.admin,
            "ops": who.ops,
            "grants": who.grants.iter().map(|g| json!({"prefix": g.prefix, "rights": g.rights})).collect::<Vec<_>>(),
            "logged_in": logged_in,
            "server_version": client.server_info().server_version,
        }),
    ))
}

async fn streams_json(client: &Client, q: &Query<'_>) -> Result<Reply, Failure> {
    let prefix = q.text("prefix")?.unwrap_or_default();
    let after = q.text("after")?;
    let limit = q.limit(50)?;
    let page = client.list_streams(prefix, after.as_deref(), limit).await?;
    Ok(Reply::json(
        200,
        &json!({
            "streams": page.streams.iter().map(StreamJson::new).collect::<Vec<_>>(),
            "next": page.next,
        }),
    ))
}

async fn stream_json(client: &Client, q: &Query<'_>) -> Result<Reply, Failure> {
    let Some(name) = q.text("name")?.filter(|n| !n.is_empty()) else {
        return Err(Failure::Reply(error(400, "which stream? (name=...)")));
    };
    let limit = q.limit(20)?;
    let direction = q.direction()?;
    let mut options = ReadStreamOptions::default()
        .direction(direction)
        .max_count(u64::from(limit))
        .page_size(limit);
    if let Some(from) = q.number("from")? {
        options = options.from(StreamVersion(from));
    }
    let mut page = client.read_stream_page(name.as_str(), options).await?;
    // Payloads are shown whole here: the page stops at a byte budget (one
    // event at least), and `next` goes on from the first event left out.
    let mut bytes = 0;
    if let Some(cut) = page.events.iter().position(|e| {
        bytes += e.data.len() + e.metadata.len();
        bytes > STREAM_PAGE_BYTES
    }) {
        let cut = cut.max(1);
        if cut < page.events.len() {
            page.next = page.events.get(cut).map(|e| e.version);
            page.events.truncate(cut);
        }
    }
    // The catalog entry (metadata, deletion, counts) needs the catalog
    // right; a user who may read the stream but not list streams still
    // sees its events.
    let info = match client.list_streams(name.as_str(), None, 1).await {
        Ok(p) => p
            .streams
            .iter()
            .find(|s| s.stream == name)
            .map(|s| serde_json::to_value(StreamJson::new(s)).unwrap_or(Value::Null)),
        Err(ClientError::AccessDenied { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    // Serialized as a struct, not through `serde_json::Value`, which would
    // round payload numbers to f64.
    #[derive(Serialize)]
    struct Page<'a> {
        stream: &'a str,
        info: Option<Value>,
        events: Vec<EventJson<'a>>,
        last_version: Option<StreamVersion>,
        next: Option<StreamVersion>,
    }
    Ok(Reply::json(
        200,
        &Page {
            stream: &name,
            info,
            events: page.events.iter().map(EventJson::new).collect(),
            last_version: page.last_version,
            next: page.next,
        },
    ))
}

async fn log_json(client: &Client, q: &Query<'_>) -> Result<Reply, Failure> {
    let limit = q.limit(50)?;
    let direction = q.direction()?;
    let mut from = q.number("from")?.map(LogPosition);
    // A user who may read part of the log gets pages with its events only:
    // a page may come back short, or empty, with `next` past what the
    // server scanned. Read on until the page is full, the log ends, or a
    // few pages were read (the browser asks again from `next`).
    let mut events = Vec::new();
    let mut page;
    let mut reads = 0;
    loop {
        let want = limit - events.len() as u32;
        let mut options = ReadAllOptions::default()
            .direction(direction)
            .max_count(u64::from(want))
            .page_size(want);
        if let Some(from) = from {
            options = options.from(from);
        }
        page = client.read_all_page(options).await?;
        // The log shows a preview of each payload: only its first bytes
        // are kept, so a page holds no more than that, whatever the
        // events' sizes.
        events.extend(page.events.drain(..).map(|mut e| {
            e.data.truncate(LOG_PREVIEW_BYTES);
            e.metadata.truncate(LOG_PREVIEW_BYTES);
            e
        }));
        reads += 1;
        from = page.next;
        if events.len() as u32 >= limit || page.next.is_none() || reads == MAX_LOG_READS {
            break;
        }
    }
    #[derive(Serialize)]
    struct Page<'a> {
        events: Vec<EventJson<'a>>,
        head: LogPosition,
        next: Option<LogPosition>,
        /// Payloads longer than this are cut to it (and then shown as
        /// base64, no longer being whole JSON).
        preview_bytes: usize,
    }
    Ok(Reply::json(
        200,
        &Page {
            events: events.iter().map(EventJson::new).collect(),
            head: page.head,
            next: page.next,
            preview_bytes: LOG_PREVIEW_BYTES,
        },
    ))
}

async fn groups_json(client: &Client) -> Result<Reply, Failure> {
    let groups = client.list_groups().await?;
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            let mut v = group_json(g);
            if let Some(o) = v.as_object_mut() {
                o.insert("source".into(), Value::String(group_source(g)));
            }
            v
        })
        .collect();
    Ok(Reply::json(200, &json!({ "groups": groups })))
}

async fn replay_json(client: &Client, q: &Query<'_>) -> Result<Reply, Failure> {
    let Some(group) = q.text("group")?.filter(|g| !g.is_empty()) else {
        return Err(Failure::Reply(error(400, "which group? (group=...)")));
    };
    let ok = client.replay_parked(&group, None).await?;
    Ok(Reply::json(
        200,
        &json!({ "group": group, "until": ok.until, "entries": ok.entries }),
    ))
}

/// A query string's parameters.
struct Query<'a>(&'a str);

impl Query<'_> {
    /// The decoded value of `key` (the first one), if present.
    fn text(&self, key: &str) -> Result<Option<String>, Failure> {
        for pair in self.0.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == key {
                return match percent_decode(v) {
                    Some(v) if v.len() <= MAX_NAME => Ok(Some(v)),
                    Some(_) => Err(Failure::Reply(error(400, &format!("{key} is too long")))),
                    None => Err(Failure::Reply(error(
                        400,
                        &format!("{key} is not percent-encoded UTF-8"),
                    ))),
                };
            }
        }
        Ok(None)
    }

    fn number(&self, key: &str) -> Result<Option<u64>, Failure> {
        match self.text(key)?.filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Failure::Reply(error(400, &format!("{key} must be a whole number")))),
        }
    }

    /// `limit` (default `default`), capped at [`MAX_PAGE`].
    fn limit(&self, default: u32) -> Result<u32, Failure> {
        Ok(self
            .number("limit")?
            .map_or(default, |n| n.clamp(1, u64::from(MAX_PAGE)) as u32))
    }

    /// `dir=back` (newest first) or `dir=fwd` (the default).
    fn direction(&self) -> Result<Direction, Failure> {
        match self.text("dir")?.as_deref() {
            None | Some("" | "fwd") => Ok(Direction::Forward),
            Some("back") => Ok(Direction::Backward),
            Some(_) => Err(Failure::Reply(error(400, "dir must be fwd or back"))),
        }
    }
}

/// `%XX` escapes and `+` (a space) decoded; `None` if an escape is broken
/// or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Why a session's client does not reconnect.
const SESSION_ENDED: &str = "the console session's connection was closed";

/// The session id in a `Cookie` header; `Err` if it names several (a
/// cookie set by another site of the same domain could otherwise pin the
/// browser to that site's session).
fn session_id(cookie: Option<&str>) -> Result<Option<&str>, ()> {
    let Some(cookie) = cookie else {
        return Ok(None);
    };
    let mut ids = cookie
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v);
    let id = ids.next();
    if ids.next().is_some() {
        return Err(());
    }
    Ok(id.filter(|v| !v.is_empty()))
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.used) < IDLE && now.duration_since(s.login) < LIFETIME
}

/// Whether the `Host` a browser asked for is `localhost` or an IP address
/// (a DNS name could be an attacker's, rebound to 127.0.0.1).
fn host_is_local(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    // Strip the port: `[::1]:9117`, `127.0.0.1:9117`, `localhost:9117`.
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

/// A `POST` must be marked by the console's script and, when the browser
/// names its origin, come from the host it asked for.
fn same_origin(req: &Request<'_>) -> Result<(), Reply> {
    if !req.marked {
        return Err(error(
            403,
            "a console request must carry X-Logbook-Console: 1",
        ));
    }
    if let Some(origin) = req.origin {
        let host = origin.split_once("://").map(|(_, h)| h);
        if host.is_none() || host != req.host {
            return Err(error(403, "request from another origin refused"));
        }
    }
    Ok(())
}

fn asset(body: &'static str, kind: &'static str) -> Reply {
    Reply::new(200, kind, body.as_bytes().to_vec())
        .with_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'".into(),
        )
        .with_header("X-Frame-Options", "DENY".into())
        .with_header("Referrer-Policy", "no-referrer".into())
}

fn error(status: u16, message: &str) -> Reply {
    Reply::json(status, &json!({ "error": message }))
}

fn login_required(message: &str) -> Reply {
    Reply::json(401, &json!({ "error": message, "login": true }))
}

fn method_not_allowed(allow: &'static str) -> Reply {
    error(405, &format!("method not allowed: {allow}")).with_header("Allow", allow.into())
}

/// A client error as an HTTP answer.
fn client_failure(e: &ClientError) -> Reply {
    let status = match e {
        ClientError::NotAuthenticated => 401,
        ClientError::AccessDenied { .. } => 403,
        ClientError::StreamNotFound { .. } | ClientError::GroupNotFound { .. } => 404,
        ClientError::StreamDeleted { .. } => 410,
        ClientError::BadRequest(_) | ClientError::TooLarge { .. } => 400,
        e if e.is_retryable() => 503,
        ClientError::Timeout | ClientError::Connect(_) => 503,
        _ => 500,
    };
    error(status, &e.to_string())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = Query("name=account%2D42&prefix=a+b&n=7&bad=%zz&dir=back&limit=100000");
        assert_eq!(q.text("name").ok().flatten().as_deref(), Some("account-42"));
        assert_eq!(q.text("prefix").ok().flatten().as_deref(), Some("a b"));
        assert_eq!(q.number("n").ok().flatten(), Some(7));
        assert!(q.text("bad").is_err());
        assert!(q.text("missing").is_ok_and(|v| v.is_none()));
        assert!(matches!(q.direction(), Ok(Direction::Backward)));
        assert_eq!(q.limit(5).ok(), Some(MAX_PAGE));
        assert_eq!(Query("").limit(5).ok(), Some(5));
        assert!(Query("from=x").number("from").is_err());
        assert_eq!(percent_decode("%E2%82%AC").as_deref(), Some("€"));
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn session_ids_come_from_the_cookie_header() {
        assert_eq!(
            session_id(Some("a=b; lbk_console=abc; c=d")),
            Ok(Some("abc"))
        );
        assert_eq!(session_id(Some("lbk_console=")), Ok(None));
        assert_eq!(session_id(Some("xlbk_console=abc")), Ok(None));
        assert_eq!(session_id(None), Ok(None));
        assert_eq!(session_id(Some("lbk_console=a; lbk_console=b")), Err(()));
    }

    #[test]
    fn only_local_names_are_served_without_a_login() {
        for ok in [
            "localhost",
            "localhost:9117",
            "127.0.0.1:9117",
            "[::1]:9117",
            "[::1]",
            "10.0.0.1",
        ] {
            assert!(host_is_local(Some(ok)), "{ok}");
        }
        for bad in ["evil.example:9117", "evil.example", "127.0.0.1.nip.io:80"] {
            assert!(!host_is_local(Some(bad)), "{bad}");
        }
        assert!(!host_is_local(None));
    }

    #[test]
    fn posts_need_the_mark_and_the_same_origin() {
        let peer: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let mut req = Request {
            method: "POST",
            path: "/console/api/logout",
            query: "",
            host: Some("127.0.0.1:9117"),
            origin: Some("http://127.0.0.1:9117"),
            cookie: None,
            marked: true,
            body: b"",
            peer,
        };
        assert!(same_origin(&req).is_ok());
        req.origin = None;
        assert!(same_origin(&req).is_ok());
        req.origin = Some("http://evil.example");
        assert!(same_origin(&req).is_err());
        req.origin = Some("null");
        assert!(same_origin(&req).is_err());
        req.origin = Some("http://127.0.0.1:9117");
        req.marked = false;
        assert!(same_origin(&req).is_err());
    }
}
