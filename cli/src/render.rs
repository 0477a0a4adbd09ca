//! Pure formatting for people: payloads as JSON or a hex preview, stats as
//! aligned lines, byte counts. The `--json` forms of events, streams and
//! groups are the client's ([`logbook_client::json`]), shared with the
//! daemon's web console. Nothing here does I/O.

pub(crate) use logbook_client::json::{EventJson, json_text, rfc3339};
use serde::Serialize;

/// Bytes of a non-JSON payload shown in a hex preview.
const HEX_PREVIEW_BYTES: usize = 16;

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
