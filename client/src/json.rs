//! The JSON forms of events, catalog entries and consumer groups, one per
//! kind, as `logbook ... --json` prints them and the daemon's web console
//! serves them: payloads that are JSON are embedded as JSON (minified,
//! every digit kept), others as base64, with an `*_encoding` field saying
//! which; timestamps are RFC 3339 in UTC.

use base64::Engine;
use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
use logbook_protocol::{GroupInfo, GroupSource, GroupStart, RecordedEvent, StreamInfo};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;

/// An event payload (data or metadata) ready for a JSON line: the JSON it
/// holds, or its bytes in base64 when they are not JSON.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Payload {
    /// The payload parses as JSON: embedded as it was written, minified,
    /// so numbers keep every digit.
    Json(Box<RawValue>),
    /// Anything else (binary, text that is not JSON, empty): standard
    /// base64 with padding.
    Base64(String),
}

impl Payload {
    /// Reads `bytes` as JSON if they are JSON, else as base64.
    pub fn of(bytes: &[u8]) -> Payload {
        match json_text(bytes) {
            Some(raw) => Payload::Json(raw),
            None => Payload::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// `"json"` or `"base64"`: the `*_encoding` field beside the payload,
    /// because a JSON string payload and a base64 payload both print as a
    /// JSON string.
    pub fn encoding(&self) -> &'static str {
        match self {
            Payload::Json(_) => "json",
            Payload::Base64(_) => "base64",
        }
    }
}

/// The JSON in `bytes`, minified, or `None` if they are not one JSON value
/// (surrounding whitespace allowed).
pub fn json_text(bytes: &[u8]) -> Option<Box<RawValue>> {
    // Validate the original first: minifying text that is not JSON can make
    // it JSON ("1 2" would become "12").
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).ok()?;
    let text = std::str::from_utf8(bytes).ok()?;
    RawValue::from_string(minify_json(text)).ok()
}

/// Drops the whitespace between the tokens of valid JSON `text` (inside
/// strings it is kept), so a pretty-printed payload fits on one line.
pub fn minify_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC, with `digits`
/// fractional digits (0 to 6): `2025-03-01T12:34:56.789012Z`.
pub fn rfc3339(timestamp_us: i64, digits: u32) -> String {
    let seconds = timestamp_us.div_euclid(1_000_000);
    let micros = timestamp_us.rem_euclid(1_000_000);
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    let digits = digits.min(6);
    if digits > 0 {
        let fraction = micros / 10_i64.pow(6 - digits);
        out.push_str(&format!(".{fraction:0width$}", width = digits as usize));
    }
    out.push('Z');
    out
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One event: payloads as JSON when they are ([`Payload`]), timestamp
/// as RFC 3339.
#[derive(Debug, Serialize)]
pub struct EventJson<'a> {
    stream: &'a str,
    version: u64,
    position: u64,
    id: String,
    #[serde(rename = "type")]
    event_type: &'a str,
    /// RFC 3339, UTC, microseconds.
    timestamp: String,
    data: Payload,
    data_encoding: &'static str,
    metadata: Payload,
    metadata_encoding: &'static str,
}

impl<'a> EventJson<'a> {
    /// The JSON form of `event`.
    pub fn new(event: &'a RecordedEvent) -> EventJson<'a> {
        let data = Payload::of(&event.data);
        let metadata = Payload::of(&event.metadata);
        EventJson {
            stream: event.stream.as_str(),
            version: event.version.0,
            position: event.position.0,
            id: event.id.to_string(),
            event_type: event.event_type.as_str(),
            timestamp: rfc3339(event.timestamp_us, 6),
            data_encoding: data.encoding(),
            data,
            metadata_encoding: metadata.encoding(),
            metadata,
        }
    }
}

/// One stream of the catalog.
#[derive(Serialize)]
pub struct StreamJson<'a> {
    stream: &'a str,
    /// Its last version, removed events included (`null`: it never had an
    /// event).
    last_version: Option<u64>,
    /// Its first live event's version (`null`: none live).
    first_version: Option<u64>,
    /// Live events: what a read of the whole stream returns now.
    event_count: u64,
    /// `"soft"`, `"hard"`, or `null`.
    deleted: Option<Deletion>,
    /// Its metadata (`{}`: none set).
    metadata: &'a StreamMetadata,
    /// Version of its latest lifecycle event in `$$stream` (`null`: none).
    meta_version: Option<u64>,
}

impl<'a> StreamJson<'a> {
    /// The JSON form of `s`.
    pub fn new(s: &'a StreamInfo) -> StreamJson<'a> {
        StreamJson {
            stream: &s.stream,
            last_version: s.last_version.map(|v| v.0),
            first_version: s.first_version.map(|v| v.0),
            event_count: s.event_count,
            deleted: s.deleted,
            metadata: &s.metadata,
            meta_version: s.meta_version.map(|v| v.0),
        }
    }
}

/// What a group reads, for people: a stream, `$all`, `$all p1* p2*`.
pub fn group_source(g: &GroupInfo) -> String {
    match &g.source {
        GroupSource::Stream { stream } => stream.clone(),
        GroupSource::All { filter: None } => "$all".into(),
        GroupSource::All { filter: Some(f) } if f.stream_prefixes.is_empty() => {
            "$all (filtered)".into()
        }
        GroupSource::All { filter: Some(f) } => format!("$all {}*", f.stream_prefixes.join("* ")),
    }
}

/// A group: its definition and figures (`lag`: events from its floor to
/// the head).
pub fn group_json(g: &GroupInfo) -> serde_json::Value {
    let (stream, prefixes) = match &g.source {
        GroupSource::Stream { stream } => (Some(stream.clone()), Vec::new()),
        GroupSource::All { filter } => (
            None,
            filter
                .as_ref()
                .map(|f| f.stream_prefixes.clone())
                .unwrap_or_default(),
        ),
    };
    json!({
        "group": g.group,
        "stream": stream,
        "prefixes": prefixes,
        "start": match g.start {
            GroupStart::Start => json!("start"),
            GroupStart::End => json!("end"),
            GroupStart::At(at) => json!(at),
        },
        "ack_wait_ms": g.settings.ack_wait_ms,
        "max_deliveries": g.settings.max_deliveries,
        "max_in_flight": g.settings.max_in_flight,
        "strategy": g.settings.strategy.as_str(),
        "floor": g.floor,
        "cursor": g.cursor,
        "head": g.head,
        "lag": g.head.saturating_sub(g.floor),
        "outstanding": g.outstanding,
        "in_flight": g.in_flight,
        "waiting": g.waiting,
        "consumers": g.consumers,
        "oldest_in_flight_ms": g.oldest_in_flight_ms,
        "parked": g.parked,
        "delivered": g.delivered,
        "acked": g.acked,
        "skipped": g.skipped,
        "failures": g.failures,
        "parked_total": g.parked_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(bytes: &[u8]) -> String {
        serde_json::to_string(&Payload::of(bytes)).unwrap()
    }

    #[test]
    fn json_payloads_are_embedded_minified() {
        assert_eq!(json_of(br#"{"a": 1}"#), r#"{"a":1}"#);
        assert_eq!(
            json_of(b"{\n  \"a\" : [1, 2],\n  \"s\": \"x y\\\" z\"\n}\n"),
            r#"{"a":[1,2],"s":"x y\" z"}"#
        );
        assert_eq!(json_of(b" 42 "), "42");
        assert_eq!(json_of(b"\"hi there\""), r#""hi there""#);
        assert_eq!(json_of(b"null"), "null");
        assert_eq!(Payload::of(b"[]").encoding(), "json");
    }

    #[test]
    fn big_numbers_keep_every_digit() {
        let big = br#"{"n":123456789012345678901234567890.000000000001}"#;
        assert_eq!(json_of(big).as_bytes(), big);
    }

    #[test]
    fn other_payloads_are_base64() {
        assert_eq!(json_of(b"hello"), r#""aGVsbG8=""#);
        assert_eq!(json_of(&[0, 159, 146, 150]), r#""AJ+Slg==""#);
        assert_eq!(json_of(b""), r#""""#);
        assert_eq!(Payload::of(b"").encoding(), "base64");
        // Not JSON, even though minifying would make it so.
        assert_eq!(json_of(b"1 2"), r#""MSAy""#);
        assert_eq!(json_of(b"{\"a\":1} x"), r#""eyJhIjoxfSB4""#);
        // Invalid UTF-8 inside a string.
        assert_eq!(Payload::of(b"\"\xff\"").encoding(), "base64");
    }

    #[test]
    fn minify_keeps_strings_intact() {
        assert_eq!(
            minify_json(r#" { "a b" : "c\\" , "d" : " " } "#),
            r#"{"a b":"c\\","d":" "}"#
        );
        assert_eq!(minify_json("[\"\\\"\", \"\\n x\"]"), "[\"\\\"\",\"\\n x\"]");
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0, 6), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        // 2000-02-29T12:34:56.789012Z
        assert_eq!(
            rfc3339(951_827_696_789_012, 6),
            "2000-02-29T12:34:56.789012Z"
        );
        assert_eq!(rfc3339(951_827_696_789_012, 3), "2000-02-29T12:34:56.789Z");
        // 2024-12-31T23:59:59.999999Z
        assert_eq!(
            rfc3339(1_735_689_599_999_999, 6),
            "2024-12-31T23:59:59.999999Z"
        );
        assert_eq!(rfc3339(-1, 6), "1969-12-31T23:59:59.999999Z");
    }
}
