//! Pure formatting: event payloads as JSON or base64 (for `--json`) or as
//! JSON or a hex preview (for people), timestamps as RFC 3339, and the JSON
//! objects the commands print. Nothing here does I/O.

use base64::Engine;
use logbook_client::RecordedEvent;
use serde::Serialize;
use serde_json::value::RawValue;

/// Bytes of a non-JSON payload shown in a hex preview.
const HEX_PREVIEW_BYTES: usize = 16;

/// An event payload (data or metadata) ready for a JSON line: the JSON it
/// holds, or its bytes in base64 when they are not JSON.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Payload {
    /// The payload parses as JSON: embedded as it was written, minified,
    /// so numbers keep every digit.
    Json(Box<RawValue>),
    /// Anything else (binary, text that is not JSON, empty): standard
    /// base64 with padding.
    Base64(String),
}

impl Payload {
    /// Reads `bytes` as JSON if they are JSON, else as base64.
    pub(crate) fn of(bytes: &[u8]) -> Payload {
        match json_text(bytes) {
            Some(raw) => Payload::Json(raw),
            None => Payload::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// `"json"` or `"base64"`: the `*_encoding` field beside the payload,
    /// because a JSON string payload and a base64 payload both print as a
    /// JSON string.
    pub(crate) fn encoding(&self) -> &'static str {
        match self {
            Payload::Json(_) => "json",
            Payload::Base64(_) => "base64",
        }
    }
}

/// The JSON in `bytes`, minified, or `None` if they are not one JSON value
/// (surrounding whitespace allowed).
pub(crate) fn json_text(bytes: &[u8]) -> Option<Box<RawValue>> {
    // Validate the original first: minifying text that is not JSON can make
    // it JSON ("1 2" would become "12").
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes).ok()?;
    let text = std::str::from_utf8(bytes).ok()?;
    RawValue::from_string(minify_json(text)).ok()
}

/// Drops the whitespace between the tokens of valid JSON `text` (inside
/// strings it is kept), so a pretty-printed payload fits on one line.
pub(crate) fn minify_json(text: &str) -> String {
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

/// A payload for people: its JSON, minified, when it is JSON; otherwise a
/// hex preview.
pub(crate) fn human_payload(bytes: &[u8]) -> String {
    match json_text(bytes) {
        Some(raw) => raw.get().to_owned(),
        None => hex_preview(bytes),
    }
}

/// The first bytes of `bytes` in hex, and their length: `0x48656c6c6f (5
/// bytes)`, `0x000102...0f... (300 bytes)`; `(empty)` for no bytes.
pub(crate) fn hex_preview(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".to_owned();
    }
    let shown = bytes.get(..HEX_PREVIEW_BYTES).unwrap_or(bytes);
    let mut out = String::with_capacity(2 + 2 * shown.len() + 24);
    out.push_str("0x");
    for b in shown {
        out.push_str(&format!("{b:02x}"));
    }
    if shown.len() < bytes.len() {
        out.push_str("...");
    }
    let unit = if bytes.len() == 1 { "byte" } else { "bytes" };
    out.push_str(&format!(" ({} {unit})", bytes.len()));
    out
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC, with `digits`
/// fractional digits (0 to 6): `2025-03-01T12:34:56.789012Z`.
pub(crate) fn rfc3339(timestamp_us: i64, digits: u32) -> String {
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

/// One event as a `--json` line.
#[derive(Debug, Serialize)]
pub(crate) struct EventJson<'a> {
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
    pub(crate) fn new(event: &'a RecordedEvent) -> EventJson<'a> {
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

/// A subscription's position notice as a `--json` line:
/// `{"caught_up":{"position":N}}`.
#[derive(Debug, Serialize)]
pub(crate) struct Notice {
    pub(crate) position: u64,
}

/// A JSON document that keeps its objects' keys in order (a
/// `serde_json::Value` sorts them), for the human form of `stats`: the
/// fields print in the order the struct declares them.
#[derive(Debug)]
pub(crate) enum Node {
    /// An object, keys in document order.
    Map(Vec<(String, Node)>),
    /// An array.
    Seq(Vec<Node>),
    /// Anything else, as people read it (strings without quotes).
    Leaf(String),
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Leaf(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Leaf(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Leaf(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Leaf(human_float(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Leaf(v.to_owned()))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Node, E> {
                Ok(Node::Leaf("-".to_owned()))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Node, E> {
                self.visit_unit()
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                <Node as serde::Deserialize>::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

impl Node {
    /// Any serialisable value as a `Node`, through its JSON form.
    pub(crate) fn of<T: Serialize>(value: &T) -> serde_json::Result<Node> {
        serde_json::from_str(&serde_json::to_string(value)?)
    }

    /// Flattens into `key value` pairs: nested objects join their keys
    /// with `.`, arrays index them (`segments.0`); an empty object or array
    /// is one pair with value `{}` or `[]`.
    pub(crate) fn flatten(&self, prefix: &str, out: &mut Vec<(String, String)>) {
        let key = |k: &str| {
            if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match self {
            Node::Map(entries) if entries.is_empty() => out.push((prefix.to_owned(), "{}".into())),
            Node::Seq(items) if items.is_empty() => out.push((prefix.to_owned(), "[]".into())),
            Node::Map(entries) => {
                for (k, v) in entries {
                    v.flatten(&key(k), out);
                }
            }
            Node::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    v.flatten(&key(&i.to_string()), out);
                }
            }
            Node::Leaf(s) => out.push((prefix.to_owned(), s.clone())),
        }
    }
}

/// A float for people: at most three decimals, without trailing zeros.
fn human_float(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// `key  value` lines with the values aligned.
pub(crate) fn key_values(pairs: &[(String, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    out
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
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
    fn hex_preview_shows_the_start_and_the_length() {
        assert_eq!(hex_preview(b""), "(empty)");
        assert_eq!(hex_preview(b"\x01"), "0x01 (1 byte)");
        assert_eq!(hex_preview(b"Hello"), "0x48656c6c6f (5 bytes)");
        let long: Vec<u8> = (0..=255).collect();
        assert_eq!(
            hex_preview(&long),
            "0x000102030405060708090a0b0c0d0e0f... (256 bytes)"
        );
        let exact: Vec<u8> = (0..16).collect();
        assert_eq!(
            hex_preview(&exact),
            "0x000102030405060708090a0b0c0d0e0f (16 bytes)"
        );
        assert_eq!(human_payload(b"{ \"a\": 1 }"), r#"{"a":1}"#);
        assert_eq!(human_payload(b"hi"), "0x6869 (2 bytes)");
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

    #[test]
    fn stats_flatten_into_aligned_lines() {
        let v = serde_json::json!({"events": 3, "store": {"dir": "/d", "segments": [1, 2]}, "empty": {}});
        let mut pairs = Vec::new();
        Node::of(&v).unwrap().flatten("", &mut pairs);
        assert_eq!(
            key_values(&pairs),
            "empty             {}\nevents            3\nstore.dir         /d\nstore.segments.0  1\nstore.segments.1  2\n"
        );
        // Struct fields keep their declared order.
        #[derive(Serialize)]
        struct S {
            zeta: u32,
            alpha: Option<u32>,
            name: &'static str,
        }
        let mut pairs = Vec::new();
        let s = S {
            zeta: 1,
            alpha: None,
            name: "x",
        };
        Node::of(&s).unwrap().flatten("", &mut pairs);
        assert_eq!(key_values(&pairs), "zeta   1\nalpha  -\nname   x\n");
    }

    #[test]
    fn floats_for_people() {
        assert_eq!(human_float(0.0), "0");
        assert_eq!(human_float(12.5), "12.5");
        assert_eq!(human_float(2.0 / 3.0), "0.667");
        assert_eq!(human_float(100.0), "100");
        assert_eq!(human_float(-0.0001), "0");
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
