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
//! Why not hyper: three fixed GET resources need none of its features
//! (keep-alive, bodies, chunking, HTTP/2), and it would add a dozen crates to
//! every cold CI build. The request line is all that is parsed; headers are
//! skipped.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{CONTENT_TYPE, Metrics, Phase};

/// Largest request head read: request line and headers. Prometheus sends a
/// few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
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
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let socket = match listener.accept().await {
            Ok((s, _)) => s,
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
        let tls = tls.as_ref().map(crate::tls::ServerTls::acceptor);
        tokio::spawn(async move {
            match tls {
                None => handle(socket, &metrics).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => handle(stream, &metrics).await,
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

/// What reading a request head found.
#[derive(Debug, PartialEq, Eq)]
enum Head<'a> {
    /// Not complete yet.
    Incomplete,
    /// A request line (method, path without the query string).
    Request { method: &'a str, path: &'a str },
    /// Not an HTTP/1.x request head.
    Bad,
}

/// Parses a request head from the bytes received so far.
fn parse_head(buf: &[u8]) -> Head<'_> {
    // Control bytes never appear in a head: fail fast on binary input
    // instead of waiting for a terminator or the timeout.
    if buf
        .iter()
        .any(|&b| (b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t') || b == 0x7f)
    {
        return Head::Bad;
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n"));
    let Some(end) = end else {
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
    let path = target.split('?').next().unwrap_or(target);
    Head::Request { method, path }
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
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: bool,
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            allow: false,
        }
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if self.allow {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
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
        return Reply::text(404, "not found: try /metrics, /health or /ready\n");
    }
    if method != "GET" && method != "HEAD" {
        return Reply {
            allow: true,
            ..Reply::text(405, "method not allowed: GET or HEAD\n")
        };
    }
    match path {
        "/metrics" => match metrics.render() {
            Ok(text) => Reply {
                status: 200,
                content_type: CONTENT_TYPE,
                body: text.into_bytes(),
                allow: false,
            },
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

/// Serves one connection: one request, one response, close.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, metrics: &Metrics) {
    let mut buf = Vec::with_capacity(1024);
    let (reply, head_only) =
        match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut io, &mut buf)).await {
            Err(_) => (
                Reply::text(408, "request head not received in time\n"),
                false,
            ),
            // The peer left, or the socket failed: nobody to answer.
            Ok(Err(_) | Ok(None)) => return,
            Ok(Ok(Some(Err(status)))) => (Reply::text(status, "bad request\n"), false),
            Ok(Ok(Some(Ok(())))) => match parse_head(&buf) {
                Head::Request { method, path } => (route(method, path, metrics), method == "HEAD"),
                _ => (Reply::text(400, "bad request\n"), false),
            },
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
        let serve = handle(server, m);
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
                path: "/metrics"
            }
        );
        assert_eq!(
            parse_head(b"HEAD /ready HTTP/1.0\n\n"),
            Head::Request {
                method: "HEAD",
                path: "/ready"
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
        let server = tokio::spawn(serve(listener, Arc::new(metrics()), None));
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
