//! The metrics listener: a deliberately tiny HTTP/1.1 server.
//!
//! It serves three read-only resources to Prometheus and to orchestrators'
//! probes, one request per connection:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | 200, OpenMetrics text ([`Metrics::render`]) |
//! | `GET /health` | 200 `ok` while the process is up |
//! | `GET /ready` | 200 once recovery finished and writes are accepted; 503 before, while shutting down, or after a failed write |
//!
//! Other paths get 404, other methods 405 (`HEAD` is answered like `GET`
//! without a body). A connection is: read the request head (at most
//! [`MAX_HEAD_BYTES`], within [`HEAD_TIMEOUT`]), answer with
//! `Connection: close`, close. Bytes that cannot be an HTTP request head get
//! 400 at once; a head past the limit gets 431; a client too slow to send
//! its head gets 408. At most [`MAX_CONNECTIONS`] are served at once; more
//! are closed unanswered, so a flood of idle sockets costs a bounded amount
//! of memory and never touches the client port or the engine.
//!
//! Under `/console` it serves the web console ([`crate::console`]), which
//! also takes `POST` requests with a small JSON body (at most
//! [`MAX_BODY_BYTES`], within [`HEAD_TIMEOUT`]; larger bodies get 413).
//!
//! Why not hyper: a few fixed resources need none of its features
//! (keep-alive, chunking, HTTP/2), and it would add a dozen crates to every
//! cold CI build. The request line, the few headers the console reads
//! (`Host`, `Origin`, `Cookie`, `Content-Length`, `X-Logbook-Console`) and a
//! sized body are all that is parsed.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{CONTENT_TYPE, Metrics, Phase};
use crate::console::{self, Console};

/// Largest request head read: request line and headers. Prometheus sends a
/// few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest request body read (console logins and actions).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Time a client has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// After answering, unread input is drained for at most this long (and
/// [`LINGER_BYTES`]) before closing: closing a socket with unread input
/// sends a reset, which can destroy the response before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Serves `listener` until the task is dropped (with the runtime), over
/// TLS if `tls` is given (the handshake is bounded by [`HEAD_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    tls: Option<crate::tls::ServerTls>,
    console: Option<Arc<Console>>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("metrics listener: too many connections; closing one");
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let console = console.clone();
        let tls = tls.as_ref().map(crate::tls::ServerTls::acceptor);
        tokio::spawn(async move {
            let site = Site {
                metrics: &metrics,
                console: console.as_deref(),
                peer,
            };
            match tls {
                None => handle(socket, &site).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => handle(stream, &site).await,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "metrics listener: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!("metrics listener: TLS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
}

/// What one connection is served from.
pub(crate) struct Site<'a> {
    pub(crate) metrics: &'a Metrics,
    pub(crate) console: Option<&'a Console>,
    pub(crate) peer: std::net::SocketAddr,
}

/// What reading a request head found.
#[derive(Debug, PartialEq, Eq)]
enum Head<'a> {
    /// Not complete yet.
    Incomplete,
    /// A request line (method, path and query string), and the head's
    /// length in bytes, blank line included.
    Request {
        method: &'a str,
        path: &'a str,
        query: &'a str,
        len: usize,
    },
    /// Not an HTTP/1.x request head.
    Bad,
}

/// Parses a request head from the bytes received so far.
fn parse_head(buf: &[u8]) -> Head<'_> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|e| (e, e + 4))
        .or_else(|| {
            buf.windows(2)
                .position(|w| w == b"\n\n")
                .map(|e| (e, e + 2))
        });
    // Control bytes never appear in a head: fail fast on binary input
    // instead of waiting for a terminator or the timeout (bytes of a body
    // after the head are not looked at).
    let head = end.map_or(buf, |(_, len)| buf.get(..len).unwrap_or(buf));
    if head
        .iter()
        .any(|&b| (b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t') || b == 0x7f)
    {
        return Head::Bad;
    }
    let Some((end, len)) = end else {
        return Head::Incomplete;
    };
    let Ok(head) = std::str::from_utf8(buf.get(..end).unwrap_or_default()) else {
        return Head::Bad;
    };
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Head::Bad;
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    if !method_ok || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Head::Bad;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Head::Request {
        method,
        path,
        query,
        len,
    }
}

/// The value of header `name` (the first), trimmed.
fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let head = std::str::from_utf8(head).ok()?;
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads until a complete head, bad input, a full buffer or the end.
/// Returns the outcome as a status to answer (`None`: the peer left).
async fn read_head<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), u16>>> {
    let mut chunk = [0u8; 1024];
    loop {
        match parse_head(buf) {
            Head::Request { .. } => return Ok(Some(Ok(()))),
            Head::Bad => return Ok(Some(Err(400))),
            Head::Incomplete if buf.len() >= MAX_HEAD_BYTES => return Ok(Some(Err(431))),
            Head::Incomplete => {}
        }
        let room = MAX_HEAD_BYTES.saturating_sub(buf.len()).min(chunk.len());
        let n = io.read(chunk.get_mut(..room).unwrap_or_default()).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// A response, ready to write.
pub struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// A response with `body` of type `content_type` (`; charset=utf-8`
    /// is added to text types).
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, "text/plain", body.as_bytes().to_vec())
    }

    /// A JSON response.
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Reply {
        Reply::new(
            status,
            "application/json",
            serde_json::to_vec(value).unwrap_or_default(),
        )
    }

    /// Adds a header (`name` must be a valid header name; `value` is
    /// written as given, without CR or LF).
    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value.replace(['\r', '\n'], " ")));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            410 => "Gone",
            413 => "Content Too Large",
            501 => "Not Implemented",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let charset = if self.content_type.starts_with("text/") {
            "; charset=utf-8"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}{charset}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn route(method: &str, path: &str, metrics: &Metrics) -> Reply {
    let known = matches!(path, "/metrics" | "/health" | "/ready");
    if !known {
        return Reply::text(
            404,
            "not found: try /metrics, /health, /ready or /console\n",
        );
    }
    if method != "GET" && method != "HEAD" {
        return Reply::text(405, "method not allowed: GET or HEAD\n")
            .with_header("Allow", "GET, HEAD".into());
    }
    match path {
        "/metrics" => match metrics.render() {
            Ok(text) => Reply::new(200, CONTENT_TYPE, text.into_bytes()),
            Err(_) => Reply::text(500, "could not encode the metrics\n"),
        },
        "/health" => Reply::text(200, "ok\n"),
        _ if metrics.is_ready() => Reply::text(200, "ready\n"),
        _ => Reply::text(
            503,
            match metrics.phase() {
                Phase::Starting => "starting: recovery has not finished\n",
                Phase::Stopping => "shutting down\n",
                Phase::Serving => "not accepting writes: a write failed; restart the daemon\n",
            },
        ),
    }
}

/// Reads the rest of a body of `length` bytes after the head's `head_len`
/// bytes in `buf`.
async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    head_len: usize,
    length: usize,
) -> std::io::Result<bool> {
    let want = head_len + length;
    let mut chunk = [0u8; 1024];
    while buf.len() < want {
        let room = (want - buf.len()).min(chunk.len());
        let n = io.read(chunk.get_mut(..room).unwrap_or_default()).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    buf.truncate(want);
    Ok(true)
}

/// Reads one request and answers it (`None`: nobody to answer).
async fn respond<S: AsyncRead + Unpin>(io: &mut S, site: &Site<'_>) -> Option<(Reply, bool)> {
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    let head = match tokio::time::timeout_at(deadline, read_head(io, &mut buf)).await {
        Err(_) => {
            return Some((
                Reply::text(408, "request head not received in time\n"),
                false,
            ));
        }
        // The peer left, or the socket failed: nobody to answer.
        Ok(Err(_) | Ok(None)) => return None,
        Ok(Ok(Some(Err(status)))) => return Some((Reply::text(status, "bad request\n"), false)),
        Ok(Ok(Some(Ok(())))) => parse_head(&buf),
    };
    let Head::Request {
        method,
        path,
        query,
        len,
    } = head
    else {
        return Some((Reply::text(400, "bad request\n"), false));
    };
    let (method, path, query) = (method.to_owned(), path.to_owned(), query.to_owned());
    let is_console = path == "/console" || path.starts_with("/console/");
    let Some(console) = site.console.filter(|_| is_console) else {
        return Some((route(&method, &path, site.metrics), method == "HEAD"));
    };
    if header(buf.get(..len).unwrap_or_default(), "transfer-encoding").is_some() {
        return Some((
            Reply::text(501, "send the body with a Content-Length\n"),
            false,
        ));
    }
    let length = match header(buf.get(..len).unwrap_or_default(), "content-length") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY_BYTES => n,
            Ok(_) => return Some((Reply::text(413, "request body too large\n"), false)),
            Err(_) => return Some((Reply::text(400, "bad Content-Length\n"), false)),
        },
    };
    match tokio::time::timeout_at(deadline, read_body(io, &mut buf, len, length)).await {
        Err(_) => {
            return Some((
                Reply::text(408, "request body not received in time\n"),
                false,
            ));
        }
        Ok(Err(_) | Ok(false)) => return None,
        Ok(Ok(true)) => {}
    }
    let (head, body) = buf.split_at(len.min(buf.len()));
    let req = console::Request {
        method: &method,
        path: &path,
        query: &query,
        host: header(head, "host"),
        origin: header(head, "origin"),
        cookie: header(head, "cookie"),
        marked: header(head, "x-logbook-console") == Some("1"),
        body,
        peer: site.peer,
    };
    Some((console.serve(&req).await, method == "HEAD"))
}

/// Serves one connection: one request, one response, close.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, site: &Site<'_>) {
    let Some((reply, head_only)) = respond(&mut io, site).await else {
        return;
    };
    let bytes = reply.encode(head_only);
    let wrote = tokio::time::timeout(WRITE_TIMEOUT, async {
        io.write_all(&bytes).await?;
        io.shutdown().await
    })
    .await;
    if matches!(wrote, Ok(Ok(()))) {
        // Lingering close: take what the client still sends (up to a
        // bound) so that closing does not reset the connection under the
        // response.
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            let mut drained = 0;
            while drained < LINGER_BYTES {
                match io.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn metrics() -> Metrics {
        Metrics::new(Arc::default())
    }

    /// Sends `input` (then closes the write side if `close`), returns what
    /// the server answered.
    async fn exchange(m: &Metrics, input: &[u8], close: bool) -> String {
        let (mut client, server) = duplex(64 * 1024);
        let site = Site {
            metrics: m,
            console: None,
            peer: "127.0.0.1:1".parse().unwrap(),
        };
        let serve = handle(server, &site);
        // Owns the client, so that it closes once it has the answer (the
        // server lingers until then).
        let talk = async move {
            client.write_all(input).await.unwrap();
            if close {
                client.shutdown().await.unwrap();
            }
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            String::from_utf8(out).unwrap()
        };
        let ((), out) = tokio::join!(serve, talk);
        out
    }

    #[test]
    fn heads_parse() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Head::Incomplete
        );
        assert_eq!(
            parse_head(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Request {
                method: "GET",
                path: "/metrics",
                query: "x=1",
                len: 38,
            }
        );
        let head = b"POST /console/api/login HTTP/1.1\r\nhost: a:1\r\nContent-Length:  12 \r\n\r\n";
        assert_eq!(header(head, "Content-Length"), Some("12"));
        assert_eq!(header(head, "HOST"), Some("a:1"));
        assert_eq!(header(head, "cookie"), None);
        assert_eq!(
            parse_head(b"HEAD /ready HTTP/1.0\n\n"),
            Head::Request {
                method: "HEAD",
                path: "/ready",
                query: "",
                len: 22,
            }
        );
        assert_eq!(parse_head(b"GET /metrics\r\n\r\n"), Head::Bad);
        assert_eq!(parse_head(b"GET metrics HTTP/1.1\r\n\r\n"), Head::Bad);
        assert_eq!(parse_head(b"get / HTTP/1.1\r\n\r\n"), Head::Bad);
        assert_eq!(parse_head(b"GET / SPDY/3\r\n\r\n"), Head::Bad);
        assert_eq!(parse_head(b"\x00\x00\x00\x14LBK"), Head::Bad);
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nX: \xff\xfe\r\n\r\n"),
            Head::Bad
        );
    }

    #[tokio::test]
    async fn serves_health_ready_metrics_and_refuses_the_rest() {
        let m = metrics();
        let out = exchange(&m, b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n", false).await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Length: 3\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nok\n"), "{out}");

        let out = exchange(&m, b"GET /ready HTTP/1.1\r\n\r\n", false).await;
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.contains("starting"), "{out}");

        let out = exchange(&m, b"GET /metrics HTTP/1.1\r\n\r\n", false).await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains(CONTENT_TYPE), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");

        let out = exchange(&m, b"HEAD /metrics HTTP/1.1\r\n\r\n", false).await;
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "HEAD has no body: {out}");

        let out = exchange(&m, b"GET /nope HTTP/1.1\r\n\r\n", false).await;
        assert!(out.starts_with("HTTP/1.1 404 "), "{out}");

        let out = exchange(&m, b"POST /metrics HTTP/1.1\r\n\r\n", false).await;
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("Allow: GET, HEAD\r\n"), "{out}");

        m.set_phase(Phase::Stopping);
        let out = exchange(&m, b"GET /ready HTTP/1.1\r\n\r\n", false).await;
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.contains("shutting down"), "{out}");
    }

    #[tokio::test]
    async fn garbage_gets_400_at_once() {
        tokio::time::pause();
        let m = metrics();
        let start = tokio::time::Instant::now();
        // A Logbook protocol frame is not an HTTP request.
        let out = exchange(&m, b"\x00\x00\x00\x14\x01\x02\x00\x00", false).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(start.elapsed() < HEAD_TIMEOUT, "answered without waiting");
        let out = exchange(&m, b"hello there\r\n\r\n", false).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }

    #[tokio::test]
    async fn oversized_head_gets_431() {
        tokio::time::pause();
        let m = metrics();
        let mut big = b"GET /metrics HTTP/1.1\r\nX-Junk: ".to_vec();
        big.resize(MAX_HEAD_BYTES * 4, b'a');
        let out = exchange(&m, &big, false).await;
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }

    #[tokio::test]
    async fn a_client_that_leaves_early_is_not_answered() {
        let m = metrics();
        let out = exchange(&m, b"GET /metr", true).await;
        assert_eq!(out, "");
    }

    #[tokio::test]
    async fn a_slow_client_times_out() {
        tokio::time::pause();
        let m = metrics();
        let start = tokio::time::Instant::now();
        // Half a head, then silence (the write side stays open).
        let out = exchange(&m, b"GET /metrics HTTP/1.1\r\nHost:", false).await;
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        assert!(start.elapsed() >= HEAD_TIMEOUT);
    }

    #[tokio::test]
    async fn serves_over_tcp_and_caps_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(metrics()), None, None));
        // Idle sockets take every slot...
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET").await.unwrap();
            idle.push(s);
        }
        // ...and one more is closed unanswered, without harming them.
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = extra.write_all(b"GET /health HTTP/1.1\r\n\r\n").await;
        let mut out = Vec::new();
        let _ = extra.read_to_end(&mut out).await;
        assert!(out.is_empty());
        let mut s = idle.pop().unwrap();
        s.write_all(b" /health HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        server.abort();
    }
}
