//! One HTTP/1.1 request per connection, for the metrics listener, the web
//! console and ChromeDriver: no client library, so the tests see exactly
//! what crosses the wire.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the server answered.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The head: status line and headers.
    pub head: String,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (the first one), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics, naming the body, if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }
}

/// Sends `method path` with `headers` and `body` (with its
/// `Content-Length`), reads the answer: its head and its body (none for
/// `HEAD`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    // A server that never answers fails the test instead of hanging it.
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        exchange(addr, method, path, headers, body),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path} to {addr}: no answer within 120 s"))
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut out = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        out.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.expect("send the request");
    // Read to the end of the body: its Content-Length when given (some
    // servers, ChromeDriver among them, keep the connection open after
    // answering `Connection: close`), else the end of the connection.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (head, body) = loop {
        if let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..split]).into_owned();
            if method == "HEAD" {
                break (head, Vec::new());
            }
            let length = head.lines().skip(1).find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if let Some(length) = length {
                while raw.len() < split + 4 + length {
                    let n = s.read(&mut chunk).await.expect("read the response");
                    assert!(n > 0, "the connection ended inside the body");
                    raw.extend_from_slice(&chunk[..n]);
                }
                break (head, raw[split + 4..split + 4 + length].to_vec());
            }
            s.read_to_end(&mut raw).await.expect("read the response");
            let mut body = raw[split + 4..].to_vec();
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked")
            {
                body = dechunk(&body);
            }
            break (head, body);
        }
        let n = s.read(&mut chunk).await.expect("read the response");
        assert!(
            n > 0,
            "no response head in {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&chunk[..n]);
    };
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Response { status, head, body }
}

/// A chunked body's bytes.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = raw.get(eol + 2 + size + 2..).unwrap_or_default();
    }
}
