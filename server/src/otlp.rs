//! The server's side of a caller's trace: a span for each append that
//! carries a W3C trace context, exported to an OpenTelemetry collector over
//! OTLP/HTTP with JSON bodies (`--otlp-endpoint`; off by default).
//!
//! The client's event layer writes the caller's `traceparent` into the
//! metadata of the events it appends (`"$traceparent"`, see the client's
//! `es` module). An append whose first event carries a sampled one becomes a
//! `logbook.append` span of kind SERVER, child of the caller's span, from
//! the request's arrival to its durable (or refused) reply, with the
//! stream, the number of events, and the positions or the error. Appends
//! without a trace context cost nothing: the metadata is only looked at when
//! an exporter is configured (or debug logging is on).
//!
//! Built in rather than the OpenTelemetry SDK: one span kind, one encoding,
//! no gRPC stack compiled into every build. Export is best effort and never
//! slows an append: spans wait in a bounded queue (full: dropped and
//! counted), are sent in batches by one task, and a collector that fails or
//! does not answer within 5 s loses that batch (logged, rate-limited). Plain
//! HTTP only: run the collector (or its agent) beside the daemon.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Spans waiting to be sent; past it new ones are dropped.
const QUEUE: usize = 8192;
/// Most spans in one request to the collector.
const BATCH: usize = 512;
/// How long a batch waits for more spans once it has one.
const LINGER: Duration = Duration::from_millis(200);
/// A collector must answer within this.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where spans go: `http://host:port/path` (the path defaults to
/// `/v1/traces`, OTLP/HTTP's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port`, as connected to and sent in `Host`.
    pub authority: String,
    /// The request path.
    pub path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Endpoint, String> {
        let rest = s.strip_prefix("http://").ok_or_else(|| {
            if s.starts_with("https://") {
                "https is not supported for OTLP export: send to a collector (or its agent) on this host over http".to_owned()
            } else {
                format!("{s:?} is not an http:// URL")
            }
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/v1/traces"),
        };
        let path = if path == "/" { "/v1/traces" } else { path };
        if authority.is_empty()
            || !authority.is_ascii()
            || authority.contains(['@', ' ', '?', '#'])
            || authority.ends_with(':')
        {
            return Err(format!("{s:?} has no usable host"));
        }
        // The OTLP/HTTP port unless one is given (an IPv6 literal is in
        // brackets, its colons are not a port).
        let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
        });
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:4318")
        };
        if !path.is_ascii()
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'#')
        {
            return Err(format!("{s:?} has an unusable path"));
        }
        Ok(Endpoint {
            authority,
            path: path.to_owned(),
        })
    }
}

/// A W3C trace context (`00-<trace id>-<parent span id>-<flags>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace's id.
    pub trace_id: [u8; 16],
    /// The caller's span: the parent of the server's.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` (W3C Trace Context): version 00 is exactly
    /// 55 characters of lower-case hex and dashes; a later version is read
    /// from its first 55 characters (more may follow after a `-`);
    /// version `ff` and all-zero ids are invalid.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let version = s.get(..2)?;
        let mut version_byte = [0u8; 1];
        hex_into(version, &mut version_byte)?;
        let fits = match version_byte[0] {
            0 => s.len() == 55,
            0xff => false,
            _ => s.len() == 55 || (s.len() > 55 && s.as_bytes().get(55) == Some(&b'-')),
        };
        if !fits || !s.is_ascii() || s.as_bytes().get(2) != Some(&b'-') {
            return None;
        }
        let dash = |i: usize| s.as_bytes().get(i) == Some(&b'-');
        if !dash(35) || !dash(52) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flags = [0u8; 1];
        hex_into(s.get(3..35)?, &mut trace_id)?;
        hex_into(s.get(36..52)?, &mut span_id)?;
        hex_into(s.get(53..55)?, &mut flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags: flags[0],
        })
    }

    /// Whether the caller records this trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Lower-case hex only (W3C's HEXDIGLC), digit by digit: no sign, no
/// upper case.
fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let b = s.as_bytes();
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(*b.get(2 * i)?)? << 4) | nibble(*b.get(2 * i + 1)?)?;
    }
    Some(())
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
}

/// One finished span.
#[derive(Clone, Debug)]
pub struct Span {
    /// The caller's trace and span (this span's parent).
    pub parent: TraceParent,
    /// This span's id.
    pub span_id: [u8; 8],
    /// Its name.
    pub name: &'static str,
    /// When it started and ended.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Its attributes.
    pub attributes: Vec<(&'static str, Attr)>,
    /// `Some(message)` if the operation failed.
    pub error: Option<String>,
}

/// A span being timed: started when a traced request arrives.
#[derive(Debug)]
pub struct Started {
    parent: TraceParent,
    start: SystemTime,
    /// For the duration: the wall clock may step meanwhile.
    began: std::time::Instant,
}

impl Started {
    /// Starts a span under `parent`, now.
    pub fn now(parent: TraceParent) -> Started {
        Started {
            parent,
            start: SystemTime::now(),
            began: std::time::Instant::now(),
        }
    }

    /// The finished span, ending now.
    pub fn finish(
        self,
        name: &'static str,
        attributes: Vec<(&'static str, Attr)>,
        error: Option<String>,
    ) -> Span {
        Span {
            parent: self.parent,
            span_id: new_span_id(),
            name,
            start: self.start,
            end: self.start + self.began.elapsed(),
            attributes,
            error,
        }
    }
}

/// A fresh, non-zero span id: unique, not secret (a counter through
/// splitmix64, seeded by the clock and the process id).
fn new_span_id() -> [u8; 8] {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    let mut z = seed.wrapping_add(
        NEXT.fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z.max(1)).to_be_bytes()
}

/// Counters of the export, for the log and tests.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans sent to the collector and accepted.
    pub exported: AtomicU64,
    /// Spans dropped: queue full, or the collector failed.
    pub dropped: AtomicU64,
}

/// The handle appends record spans through.
#[derive(Debug)]
pub struct Exporter {
    tx: mpsc::Sender<Span>,
    stats: Arc<ExportStats>,
}

impl Exporter {
    /// Starts the export task on the current runtime. It ends when the
    /// last handle is dropped, after sending what was queued.
    pub fn start(endpoint: Endpoint, service_name: String) -> Arc<Exporter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(ExportStats::default());
        tokio::spawn(export(endpoint, service_name, rx, Arc::clone(&stats)));
        Arc::new(Exporter { tx, stats })
    }

    /// Queues a finished span; never waits (a full queue drops it).
    pub fn record(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The export's counters.
    pub fn stats(&self) -> &ExportStats {
        &self.stats
    }
}

async fn export(
    endpoint: Endpoint,
    service_name: String,
    mut rx: mpsc::Receiver<Span>,
    stats: Arc<ExportStats>,
) {
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut dropped_seen = 0;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        // Spans dropped because the queue was full (the collector is
        // slower than the appends): said at most once a minute.
        let dropped = stats.dropped.load(Ordering::Relaxed);
        let now = tokio::time::Instant::now();
        if dropped > dropped_seen && last_warning.is_none_or(|t| now - t >= Duration::from_secs(60))
        {
            last_warning = Some(now);
            tracing::warn!(
                dropped_total = dropped,
                "OTLP export queue full: spans dropped"
            );
            dropped_seen = dropped;
        }
        batch.push(first);
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        let body = encode(&service_name, &batch).to_string();
        let n = batch.len() as u64;
        batch.clear();
        match tokio::time::timeout(TIMEOUT, post(&endpoint, body.as_bytes())).await {
            Ok(Ok(())) => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            failed => {
                stats.dropped.fetch_add(n, Ordering::Relaxed);
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 5 s".to_owned(),
                };
                let now = tokio::time::Instant::now();
                if last_warning.is_none_or(|t| now - t >= Duration::from_secs(60)) {
                    last_warning = Some(now);
                    tracing::warn!(
                        endpoint = %format!("http://{}{}", endpoint.authority, endpoint.path),
                        error = %why,
                        spans = n,
                        dropped_total = stats.dropped.load(Ordering::Relaxed),
                        "OTLP export failed; spans dropped (next warning in a minute at the soonest)"
                    );
                }
            }
        }
    }
}

/// The OTLP/HTTP JSON body for `spans` (ids in hex, 64-bit integers as
/// strings, as the OTLP JSON mapping says).
pub fn encode(service_name: &str, spans: &[Span]) -> Value {
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .to_string()
    };
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let attributes: Vec<Value> = s
                .attributes
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Attr::Str(s) => json!({ "stringValue": s }),
                        Attr::Int(i) => json!({ "intValue": i.to_string() }),
                    };
                    json!({ "key": k, "value": value })
                })
                .collect();
            // Success leaves the status unset (0), as OpenTelemetry asks of
            // instrumentation; a failure is an error (2).
            let status = match &s.error {
                None => json!({ "code": 0 }),
                Some(m) => json!({ "code": 2, "message": m }),
            };
            json!({
                "traceId": hex(&s.parent.trace_id),
                "spanId": hex(&s.span_id),
                "parentSpanId": hex(&s.parent.span_id),
                "flags": u32::from(s.parent.flags),
                "name": s.name,
                "kind": 2,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": attributes,
                "status": status,
            })
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": service_name } },
                { "key": "telemetry.sdk.name", "value": { "stringValue": "logbookd" } },
                { "key": "telemetry.sdk.language", "value": { "stringValue": "rust" } },
                { "key": "telemetry.sdk.version", "value": { "stringValue": env!("CARGO_PKG_VERSION") } },
            ]},
            "scopeSpans": [{
                "scope": { "name": "logbook", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }]
    })
}

/// One POST, `Connection: close`; any 2xx status is success.
async fn post(endpoint: &Endpoint, body: &[u8]) -> std::io::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(&endpoint.authority).await?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.authority,
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await?;
    // The status line is all that matters; read up to its end (bounded).
    let mut answer = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the collector answered {:?}",
            line.trim_end()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_parse_and_refuse_garbage() {
        let t =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&t.span_id), "00f067aa0ba902b7");
        assert!(t.sampled());
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled());
        // A later version is read from its first 55 characters.
        let later =
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
                .unwrap();
        assert_eq!(later.trace_id, t.trace_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736+00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn endpoints_parse() {
        let e: Endpoint = "http://collector:4318/v1/traces".parse().unwrap();
        assert_eq!(e.authority, "collector:4318");
        assert_eq!(e.path, "/v1/traces");
        let e: Endpoint = "http://127.0.0.1".parse().unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        let e: Endpoint = "http://[::1]:9000/".parse().unwrap();
        assert_eq!(
            (e.authority.as_str(), e.path.as_str()),
            ("[::1]:9000", "/v1/traces")
        );
        let e: Endpoint = "http://[::1]".parse().unwrap();
        assert_eq!(e.authority, "[::1]:4318");
        assert!("https://collector".parse::<Endpoint>().is_err());
        assert!("collector:4318".parse::<Endpoint>().is_err());
        assert!("http:///v1/traces".parse::<Endpoint>().is_err());
        assert!("http://a/b c".parse::<Endpoint>().is_err());
        assert!("http://host:4318?x".parse::<Endpoint>().is_err());
        assert!("http://host:".parse::<Endpoint>().is_err());
        assert!("http://host/é".parse::<Endpoint>().is_err());
    }

    #[test]
    fn span_ids_are_fresh_and_non_zero() {
        let ids: std::collections::HashSet<[u8; 8]> = (0..10_000).map(|_| new_span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&[0; 8]));
    }

    #[test]
    fn the_body_follows_the_otlp_json_mapping() {
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = Started::now(parent).finish(
            "logbook.append",
            vec![
                ("logbook.stream", Attr::Str("a-1".into())),
                ("logbook.events", Attr::Int(3)),
            ],
            Some("WrongExpectedVersion".into()),
        );
        let body = encode("logbookd", std::slice::from_ref(&span));
        let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(s["spanId"], hex(&span.span_id));
        assert_eq!(s["kind"], 2);
        assert_eq!(s["name"], "logbook.append");
        assert_eq!(s["attributes"][1]["value"]["intValue"], "3");
        assert_eq!(s["status"]["code"], 2);
        let ok = Started::now(parent).finish("logbook.append", Vec::new(), None);
        let ok_body = encode("logbookd", std::slice::from_ref(&ok));
        assert_eq!(
            ok_body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["status"]["code"],
            0
        );
        let start: u128 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u128 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(start > 0 && start <= end);
        assert_eq!(
            body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            "logbookd"
        );
    }
}
