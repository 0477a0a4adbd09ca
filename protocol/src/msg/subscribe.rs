//! `Subscribe` (opcode 6): follow one stream or the global log, history
//! first, then live.
//!
//! ```text
//! Subscribe   { target: "stream"|"all", stream?: str (target "stream" only),
//!               from: "start"|"end"|uint64, filter?: Filter (target "all" only),
//!               initial_credit: uint32 }
//! Filter      { stream_prefixes?: [str], type_prefixes?: [str],
//!               stream_regex?: str, type_regex?: str,
//!               checkpoint_interval?: uint32 }
//! SubscribeOk { head: uint64 }
//! ```
//!
//! After `SubscribeOk` the server sends pushes (see [`crate::msg::push`])
//! with the Subscribe's `corr_id`, never more events than the credit granted
//! by `initial_credit` plus later `Credit` requests.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::wire::{FromWire, malformed};
use crate::error::Error;
use crate::frame::Opcode;
use crate::types::{LogPosition, MAX_EVENT_TYPE_BYTES, MAX_STREAM_NAME_BYTES, StreamVersion, Text};

/// Where a subscription starts. `P` is a [`StreamVersion`] for a stream
/// subscription and a [`LogPosition`] for the global log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscribeFrom<P> {
    /// From the first event.
    Start,
    /// From the event after this one (exclusive, so a consumer resumes with
    /// the last version or position it processed).
    After(P),
    /// Live only: events committed after the subscription starts.
    End,
}

impl<P> SubscribeFrom<P> {
    fn into_wire(self, raw: impl FnOnce(P) -> u64) -> FromWire {
        match self {
            SubscribeFrom::Start => FromWire::Start,
            SubscribeFrom::After(p) => FromWire::After(raw(p)),
            SubscribeFrom::End => FromWire::End,
        }
    }

    fn from_wire(w: FromWire, typed: impl FnOnce(u64) -> P) -> SubscribeFrom<P> {
        match w {
            FromWire::Start => SubscribeFrom::Start,
            FromWire::After(v) => SubscribeFrom::After(typed(v)),
            FromWire::End => SubscribeFrom::End,
        }
    }
}

/// Most prefixes a [`Filter`] may list, in each of its two lists: a filter
/// is matched against every event the subscription scans, so its size is
/// bounded (a decoder refuses a longer list as malformed).
pub const MAX_FILTER_PREFIXES: usize = 1_000;

/// Server-side filter of a global-log subscription. An event passes when its
/// stream starts with one of `stream_prefixes` (or the list is empty), its
/// type starts with one of `type_prefixes` (or the list is empty), and the
/// regular expressions given match its stream and type (unanchored: use
/// `^...$` to match the whole name; syntax of Rust's `regex` crate, linear
/// time, no look-around or back-references).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Filter {
    /// Accepted stream name prefixes; empty accepts every stream.
    pub stream_prefixes: Vec<String>,
    /// Accepted event type prefixes; empty accepts every type.
    pub type_prefixes: Vec<String>,
    /// A regular expression the stream name must match.
    pub stream_regex: Option<String>,
    /// A regular expression the event type must match.
    pub type_regex: Option<String>,
    /// Send a `Checkpoint` push after this many events were scanned without
    /// one passing the filter, so a consumer can persist its progress through
    /// long filtered-out stretches. 0 lets the server choose.
    pub checkpoint_interval: u32,
}

/// What a subscription follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionTarget {
    /// One stream, in version order.
    Stream {
        /// The stream.
        stream: Text,
        /// Where to start.
        from: SubscribeFrom<StreamVersion>,
    },
    /// The global log, in position order.
    All {
        /// Where to start.
        from: SubscribeFrom<LogPosition>,
        /// Optional server-side filter.
        filter: Option<Filter>,
    },
}

/// Starts a subscription; its pushes carry this request's `corr_id`, which
/// also names it in `Credit` and `Unsubscribe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// What to follow.
    pub target: SubscriptionTarget,
    /// Events the server may send before the first `Credit`.
    pub initial_credit: u32,
}

/// The subscription is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscribeOk {
    /// Number of committed events when the subscription started.
    pub head: LogPosition,
}

/// Body of `Filter` as encoded (decoded by [`FilterIn`]).
#[derive(Serialize)]
pub(crate) struct FilterWire<S, R> {
    #[serde(default)]
    stream_prefixes: S,
    #[serde(default)]
    type_prefixes: S,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    stream_regex: Option<R>,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    type_regex: Option<R>,
    #[serde(default)]
    checkpoint_interval: u32,
}

/// A decoded `Filter`. Written by hand rather than derived, because
/// serde's derive would also take an array (fields by position) or integer
/// keys (fields by index) for a struct, where PROTOCOL.md §3 wants a map
/// with str keys; and every field may be nil, which means "not given"
/// there, where a derived `Vec` or `u32` would refuse it.
#[derive(Default)]
pub(crate) struct FilterIn {
    stream_prefixes: Vec<String>,
    type_prefixes: Vec<String>,
    stream_regex: Option<String>,
    type_regex: Option<String>,
    checkpoint_interval: u32,
}

impl<'de> Deserialize<'de> for FilterIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FilterIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Filter map with str keys")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FilterIn, A::Error> {
                let mut f = FilterIn::default();
                while let Some(StrKey(key)) = map.next_key()? {
                    match key.as_str() {
                        "stream_prefixes" => {
                            f.stream_prefixes = map
                                .next_value::<Option<Prefixes<MAX_STREAM_NAME_BYTES>>>()?
                                .map(|p| p.0)
                                .unwrap_or_default()
                        }
                        "type_prefixes" => {
                            f.type_prefixes = map
                                .next_value::<Option<Prefixes<MAX_EVENT_TYPE_BYTES>>>()?
                                .map(|p| p.0)
                                .unwrap_or_default()
                        }
                        "stream_regex" => f.stream_regex = map.next_value()?,
                        "type_regex" => f.type_regex = map.next_value()?,
                        "checkpoint_interval" => {
                            f.checkpoint_interval =
                                map.next_value::<Option<_>>()?.unwrap_or_default()
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(f)
            }
        }
        d.deserialize_map(V)
    }
}

/// A list of at most [`MAX_FILTER_PREFIXES`] prefixes of at most `MAX`
/// bytes each, refused as soon as it is found longer (before the rest of
/// it is decoded: a 16 MiB frame could otherwise hold millions).
struct Prefixes<const MAX: usize>(Vec<String>);

impl<'de, const MAX: usize> Deserialize<'de> for Prefixes<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const MAX: usize>;
        impl<'de, const MAX: usize> Visitor<'de> for V<MAX> {
            type Value = Prefixes<MAX>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "an array of at most {MAX_FILTER_PREFIXES} str prefixes of at most {MAX} bytes"
                )
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Prefixes<MAX>, A::Error> {
                if seq.size_hint().is_some_and(|n| n > MAX_FILTER_PREFIXES) {
                    return Err(de::Error::custom(format!(
                        "a filter lists at most {MAX_FILTER_PREFIXES} prefixes"
                    )));
                }
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(p) = seq.next_element::<String>()? {
                    if v.len() == MAX_FILTER_PREFIXES {
                        return Err(de::Error::custom(format!(
                            "a filter lists at most {MAX_FILTER_PREFIXES} prefixes"
                        )));
                    }
                    if p.len() > MAX {
                        return Err(de::Error::custom(format!(
                            "a filter prefix is {} bytes; at most {MAX}",
                            p.len()
                        )));
                    }
                    v.push(p);
                }
                Ok(Prefixes(v))
            }
        }
        d.deserialize_seq(V::<MAX>)
    }
}

/// A map key that must be a str.
struct StrKey(String);

impl<'de> Deserialize<'de> for StrKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a str key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrKey, E> {
                Ok(StrKey(v.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SubscribeWire<'a, F> {
    target: &'a str,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
    from: FromWire,
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    filter: Option<F>,
    initial_credit: u32,
}

/// `Option::default` without requiring `F: Default` of the derive.
fn none<T>() -> Option<T> {
    None
}

impl FilterIn {
    /// The filter decoded.
    pub(crate) fn into_filter(self) -> Filter {
        Filter {
            stream_prefixes: self.stream_prefixes,
            type_prefixes: self.type_prefixes,
            stream_regex: self.stream_regex,
            type_regex: self.type_regex,
            checkpoint_interval: self.checkpoint_interval,
        }
    }
}

impl<'a> FilterWire<&'a [String], &'a str> {
    /// `f` as written on the wire.
    pub(crate) fn of(f: &'a Filter) -> Self {
        FilterWire {
            stream_prefixes: f.stream_prefixes.as_slice(),
            type_prefixes: f.type_prefixes.as_slice(),
            stream_regex: f.stream_regex.as_deref(),
            type_regex: f.type_regex.as_deref(),
            checkpoint_interval: f.checkpoint_interval,
        }
    }
}

impl Subscribe {
    pub(crate) fn to_wire(&self) -> SubscribeWire<'_, FilterWire<&[String], &str>> {
        let (target, stream, from, filter) = match &self.target {
            SubscriptionTarget::Stream { stream, from } => (
                "stream",
                Some(stream.as_str()),
                from.into_wire(|v| v.0),
                None,
            ),
            SubscriptionTarget::All { from, filter } => (
                "all",
                None,
                from.into_wire(|p| p.0),
                filter.as_ref().map(|f| FilterWire {
                    stream_prefixes: f.stream_prefixes.as_slice(),
                    type_prefixes: f.type_prefixes.as_slice(),
                    stream_regex: f.stream_regex.as_deref(),
                    type_regex: f.type_regex.as_deref(),
                    checkpoint_interval: f.checkpoint_interval,
                }),
            ),
        };
        SubscribeWire {
            target,
            stream,
            from,
            filter,
            initial_credit: self.initial_credit,
        }
    }

    pub(crate) fn from_wire(
        w: SubscribeWire<'_, FilterIn>,
        body: &Bytes,
    ) -> Result<Subscribe, Error> {
        let target = match (w.target, w.stream, w.filter) {
            ("stream", Some(stream), None) => SubscriptionTarget::Stream {
                stream: Text::share_from(body, stream),
                from: SubscribeFrom::from_wire(w.from, StreamVersion),
            },
            ("stream", None, _) => {
                return Err(malformed(
                    Opcode::Subscribe,
                    "target \"stream\" without a stream",
                ));
            }
            ("stream", Some(_), Some(_)) => {
                return Err(malformed(
                    Opcode::Subscribe,
                    "a filter needs target \"all\"",
                ));
            }
            ("all", None, filter) => SubscriptionTarget::All {
                from: SubscribeFrom::from_wire(w.from, LogPosition),
                filter: filter.map(|f| Filter {
                    stream_prefixes: f.stream_prefixes,
                    type_prefixes: f.type_prefixes,
                    stream_regex: f.stream_regex,
                    type_regex: f.type_regex,
                    checkpoint_interval: f.checkpoint_interval,
                }),
            },
            ("all", Some(_), _) => {
                return Err(malformed(Opcode::Subscribe, "target \"all\" with a stream"));
            }
            (other, _, _) => {
                return Err(malformed(
                    Opcode::Subscribe,
                    format_args!("unknown target {other:?}, expected \"stream\" or \"all\""),
                ));
            }
        };
        Ok(Subscribe {
            target,
            initial_credit: w.initial_credit,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct SubscribeOkWire {
    head: u64,
}

impl SubscribeOk {
    pub(crate) fn to_wire(self) -> SubscribeOkWire {
        SubscribeOkWire { head: self.head.0 }
    }

    pub(crate) fn from_wire(w: SubscribeOkWire) -> SubscribeOk {
        SubscribeOk {
            head: LogPosition(w.head),
        }
    }
}
