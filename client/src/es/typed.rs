//! Typed events: an application's event enum in, [`NewEvent`]s out, and
//! back, with the schema version and the correlation metadata carried in
//! each event's metadata (see the module docs of [`crate::es`]).

use logbook_protocol::{EventId, NewEvent, RecordedEvent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::upcast::Upcasters;

/// Metadata key of the schema version an event's data was written in.
pub const SCHEMA_KEY: &str = "$schema";
/// Metadata key of the data's format (`"json"`, the default, or
/// `"msgpack"`).
pub const FORMAT_KEY: &str = "$format";
/// Metadata key of the id of the first event of the chain this one belongs
/// to (KurrentDB's name for it).
pub const CORRELATION_KEY: &str = "$correlationId";
/// Metadata key of the id of the event this one was appended in response
/// to.
pub const CAUSATION_KEY: &str = "$causationId";
/// Metadata key of the W3C trace context of the call that appended it.
pub const TRACEPARENT_KEY: &str = "$traceparent";
/// Metadata key of the command that decided it (see
/// [`crate::es::Repository`]).
pub const COMMAND_KEY: &str = "$commandId";

/// What goes wrong turning events into bytes and back.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The value does not serialize as an event (an externally tagged
    /// enum variant, unless [`Event::encode`] is overridden).
    #[error("cannot encode event: {0}")]
    Encode(String),
    /// The stored data does not decode as the event type.
    #[error("cannot decode event {event_type} (schema {version}): {reason}")]
    Decode {
        /// The stored event type.
        event_type: String,
        /// The schema version it was written in.
        version: u32,
        /// Why.
        reason: String,
    },
    /// No upcaster leads from the stored schema version to the current one.
    #[error("no upcaster from schema {from} of {event_type} (current: {current})")]
    NoUpcaster {
        /// The event type.
        event_type: String,
        /// The version reached.
        from: u32,
        /// The version the application reads.
        current: u32,
    },
    /// An upcaster failed.
    #[error("upcasting {event_type} from schema {from}: {reason}")]
    Upcast {
        /// The event type.
        event_type: String,
        /// The version it failed from.
        from: u32,
        /// Why.
        reason: String,
    },
}

/// The format of an event's data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// JSON (readable by every tool, `logbook read` shows it as is).
    #[default]
    Json,
    /// MessagePack: smaller and faster, opaque to people.
    MessagePack,
}

/// An application event type: the stored event type and data of each
/// value, and back.
///
/// A serde enum gets it from [`SerdeEvent`]; implement it directly for
/// other representations.
pub trait Event: Sized + Send + Sync + 'static {
    /// The schema version the application writes (and reads, after
    /// upcasting) for `event_type`.
    fn schema_version(event_type: &str) -> u32;

    /// The stored event type and the data as a JSON value.
    fn encode(&self) -> Result<(String, Value), EventError>;

    /// The event of type `event_type` whose data is `data` (already
    /// upcast to the current schema version).
    fn decode(event_type: &str, data: Value) -> Result<Self, EventError>;
}

/// An event type that is an externally tagged serde enum (serde's default
/// representation), one variant per event type: the variant name is the
/// stored event type and its content the data. `#[derive(Serialize,
/// Deserialize)] enum AccountEvent { Opened { owner: String }, Deposited {
/// amount: i64 } }` stores `Deposited` with data `{"amount":250}`.
/// Override [`SerdeEvent::schema_version`] when a type's data changes
/// shape (registering [`Upcasters`] from the old versions).
pub trait SerdeEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema version the application writes (and reads, after
    /// upcasting) for `event_type`. Default 1.
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }
}

impl<T: SerdeEvent> Event for T {
    fn schema_version(event_type: &str) -> u32 {
        <T as SerdeEvent>::schema_version(event_type)
    }

    fn encode(&self) -> Result<(String, Value), EventError> {
        // The variant's name from serde itself (not guessed from the JSON's
        // shape: a struct with one field would pass for a variant).
        let name =
            super::variant::variant_name(self).map_err(|e| EventError::Encode(e.to_string()))?;
        let data =
            match serde_json::to_value(self).map_err(|e| EventError::Encode(e.to_string()))? {
                // A unit variant.
                Value::String(_) => Value::Null,
                Value::Object(mut map) => map.remove(name).ok_or_else(|| {
                    EventError::Encode(format!("variant {name} is not externally tagged"))
                })?,
                _ => {
                    return Err(EventError::Encode(format!(
                        "variant {name} is not externally tagged"
                    )));
                }
            };
        Ok((name.to_owned(), data))
    }

    fn decode(event_type: &str, data: Value) -> Result<Self, EventError> {
        // `{"Variant": null}` reads as a unit variant and as a newtype
        // variant whose content is null (`Cleared(None)`) alike.
        let tagged = Value::Object(Map::from_iter([(event_type.to_owned(), data)]));
        serde_json::from_value(tagged).map_err(|e| EventError::Decode {
            event_type: event_type.to_owned(),
            version: <T as SerdeEvent>::schema_version(event_type),
            reason: e.to_string(),
        })
    }
}

/// The metadata convention: what travels with an event besides its data.
/// Stored as one JSON object in the event's metadata, with the keys of this
/// module's constants and the application's own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventMeta {
    /// The first event of the chain (`None` when writing: the event is the
    /// first, and its own id is stored).
    pub correlation_id: Option<EventId>,
    /// The event this one answers.
    pub causation_id: Option<EventId>,
    /// The W3C trace context (`00-<trace id>-<span id>-<flags>`) of the
    /// call that appended it.
    pub traceparent: Option<String>,
    /// The command that decided it.
    pub command_id: Option<uuid::Uuid>,
    /// The application's own keys.
    pub extra: Map<String, Value>,
}

impl EventMeta {
    /// Metadata for events appended in response to `cause`: same
    /// correlation id (the cause's own id if it had none), the cause as
    /// causation, and its trace continued (same trace id, a new span id,
    /// as W3C trace context asks of each hop).
    pub fn caused_by(cause: &RecordedEvent) -> EventMeta {
        let theirs = EventMeta::of(cause);
        EventMeta {
            correlation_id: Some(theirs.correlation_id.unwrap_or(cause.id)),
            causation_id: Some(cause.id),
            traceparent: theirs.traceparent.as_deref().map(next_span),
            ..EventMeta::default()
        }
    }

    /// Sets the trace context.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> EventMeta {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Adds an application key (keys starting with `$` are the
    /// convention's: they are not written).
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> EventMeta {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// What a stored event's metadata says (empty where it is not a JSON
    /// object of this convention).
    pub fn of(event: &RecordedEvent) -> EventMeta {
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&event.metadata) else {
            return EventMeta::default();
        };
        let id = |v: Option<Value>| {
            v.and_then(|v| v.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()))
        };
        let correlation_id = id(map.remove(CORRELATION_KEY)).map(EventId::from);
        let causation_id = id(map.remove(CAUSATION_KEY)).map(EventId::from);
        let command_id = id(map.remove(COMMAND_KEY));
        let traceparent = map
            .remove(TRACEPARENT_KEY)
            .and_then(|v| v.as_str().map(str::to_owned));
        map.remove(SCHEMA_KEY);
        map.remove(FORMAT_KEY);
        EventMeta {
            correlation_id,
            causation_id,
            traceparent,
            command_id,
            extra: map,
        }
    }

    fn to_json(&self, id: EventId, schema: u32, format: Format) -> Vec<u8> {
        // The convention's own keys are this type's fields: an application
        // key starting with `$` could be taken for one, so none is kept.
        let mut map: Map<String, Value> = self
            .extra
            .iter()
            .filter(|(k, _)| !k.starts_with('$'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let uuid = |e: EventId| Value::String(uuid::Uuid::from_bytes(e.0).hyphenated().to_string());
        map.insert(SCHEMA_KEY.into(), schema.into());
        map.insert(
            FORMAT_KEY.into(),
            match format {
                Format::Json => "json",
                Format::MessagePack => "msgpack",
            }
            .into(),
        );
        map.insert(
            CORRELATION_KEY.into(),
            uuid(self.correlation_id.unwrap_or(id)),
        );
        if let Some(c) = self.causation_id {
            map.insert(CAUSATION_KEY.into(), uuid(c));
        }
        if let Some(t) = &self.traceparent {
            map.insert(TRACEPARENT_KEY.into(), t.clone().into());
        }
        if let Some(c) = self.command_id {
            map.insert(COMMAND_KEY.into(), c.hyphenated().to_string().into());
        }
        serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
    }
}

/// `traceparent` with a new span id (the same trace); one that is not a
/// version-00 trace context is kept as it is.
fn next_span(traceparent: &str) -> String {
    let parts: Vec<&str> = traceparent.split('-').collect();
    match parts.as_slice() {
        ["00", trace, span, flags] if trace.len() == 32 && span.len() == 16 => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("00-{trace}-{}-{flags}", &id[..16])
        }
        _ => traceparent.to_owned(),
    }
}

/// Encodes `event` as a [`NewEvent`] with id `id`, in `format`, its schema
/// version and `meta` in its metadata.
pub fn encode<E: Event>(
    event: &E,
    id: EventId,
    meta: &EventMeta,
    format: Format,
) -> Result<NewEvent, EventError> {
    let (event_type, data) = event.encode()?;
    let bytes = match format {
        Format::Json => serde_json::to_vec(&data).map_err(|e| EventError::Encode(e.to_string()))?,
        Format::MessagePack => {
            rmp_serde::to_vec_named(&data).map_err(|e| EventError::Encode(e.to_string()))?
        }
    };
    let schema = E::schema_version(&event_type);
    let metadata = meta.to_json(id, schema, format);
    Ok(NewEvent::new(id, event_type, bytes).with_metadata(metadata))
}

/// A stored event decoded as the application's type.
#[derive(Clone, Debug)]
pub struct Typed<E> {
    /// The event, at the current schema version.
    pub event: E,
    /// Its metadata.
    pub meta: EventMeta,
    /// The event as stored (stream, version, position, id, timestamp).
    pub recorded: RecordedEvent,
}

/// Decodes `event` as `E`, upcasting its data from the schema version it
/// was written in to the current one with `upcasters`.
pub fn decode<E: Event>(
    event: RecordedEvent,
    upcasters: &Upcasters,
) -> Result<Typed<E>, EventError> {
    let raw: Value = serde_json::from_slice(&event.metadata).unwrap_or(Value::Null);
    let stored_type = event.event_type.to_string();
    // No `$schema`: written before the application versioned it, 1. One
    // that is not a version is an error, never a guess.
    let version = match raw.get(SCHEMA_KEY) {
        None => 1,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| EventError::Decode {
                event_type: stored_type.clone(),
                version: 0,
                reason: format!("{SCHEMA_KEY} is not a schema version: {v}"),
            })?,
    };
    let msgpack = raw.get(FORMAT_KEY).and_then(Value::as_str) == Some("msgpack");
    let bad = |reason: String| EventError::Decode {
        event_type: stored_type.clone(),
        version,
        reason,
    };
    let data: Value = if event.data.is_empty() {
        Value::Null
    } else if msgpack {
        rmp_serde::from_slice(&event.data).map_err(|e| bad(e.to_string()))?
    } else {
        serde_json::from_slice(&event.data).map_err(|e| bad(e.to_string()))?
    };
    let (event_type, version, data) = upcasters.upcast(stored_type.clone(), version, data)?;
    let current = E::schema_version(&event_type);
    if version != current {
        return Err(EventError::NoUpcaster {
            event_type,
            from: version,
            current,
        });
    }
    let value = E::decode(&event_type, data)?;
    Ok(Typed {
        event: value,
        meta: EventMeta::of(&event),
        recorded: event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum E {
        Unit,
        Tuple(u32),
        Named { a: String },
        Cleared(Option<u32>),
    }
    impl SerdeEvent for E {}

    #[derive(Serialize, Deserialize)]
    struct NotAnEnum {
        a: u32,
        b: u32,
    }
    impl SerdeEvent for NotAnEnum {}

    /// A struct of one field looks like a variant in JSON; it is refused.
    #[derive(Serialize, Deserialize)]
    struct OneField {
        cents: i64,
    }
    impl SerdeEvent for OneField {}

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type")]
    enum Internally {
        A { x: u32 },
    }
    impl SerdeEvent for Internally {}

    fn recorded(new: NewEvent) -> RecordedEvent {
        RecordedEvent {
            stream: "s".into(),
            version: logbook_protocol::StreamVersion(0),
            position: logbook_protocol::LogPosition(0),
            id: new.id,
            event_type: new.event_type,
            metadata: new.metadata,
            data: new.data,
            timestamp_us: 0,
        }
    }

    #[test]
    fn every_variant_shape_round_trips_in_both_formats() {
        for format in [Format::Json, Format::MessagePack] {
            for e in [
                E::Unit,
                E::Tuple(7),
                E::Named { a: "x".into() },
                E::Cleared(None),
                E::Cleared(Some(3)),
            ] {
                let new = encode(&e, EventId::new_v7(), &EventMeta::default(), format).unwrap();
                let back = decode::<E>(recorded(new), &Upcasters::new()).unwrap();
                assert_eq!(back.event, e);
            }
        }
    }

    /// Garbage in the data or the metadata is a typed error (or, for
    /// metadata, no metadata), never a panic or a wrong event.
    #[test]
    fn garbage_is_an_error() {
        let new = encode(
            &E::Tuple(7),
            EventId::new_v7(),
            &EventMeta::default(),
            Format::Json,
        )
        .unwrap();
        let mut bad = recorded(new.clone());
        bad.data = bytes::Bytes::from_static(b"{not json");
        assert!(matches!(
            decode::<E>(bad, &Upcasters::new()),
            Err(EventError::Decode { .. })
        ));
        let mut wrong = recorded(new.clone());
        wrong.event_type = "Named".into();
        assert!(decode::<E>(wrong, &Upcasters::new()).is_err());
        let mut meta = recorded(new);
        meta.metadata = bytes::Bytes::from_static(b"\xff\x00");
        let got = decode::<E>(meta, &Upcasters::new()).unwrap();
        assert_eq!(got.event, E::Tuple(7));
        assert_eq!(got.meta, EventMeta::default());
        assert!(matches!(
            encode(
                &NotAnEnum { a: 1, b: 2 },
                EventId::new_v7(),
                &EventMeta::default(),
                Format::Json
            ),
            Err(EventError::Encode(_))
        ));
        for refused in [
            encode(
                &OneField { cents: 1 },
                EventId::new_v7(),
                &EventMeta::default(),
                Format::Json,
            )
            .map(|_| ()),
            encode(
                &Internally::A { x: 1 },
                EventId::new_v7(),
                &EventMeta::default(),
                Format::Json,
            )
            .map(|_| ()),
        ] {
            assert!(matches!(refused, Err(EventError::Encode(_))), "{refused:?}");
        }
        // A `$schema` that is not a version is an error, not version 1.
        let new = encode(
            &E::Tuple(7),
            EventId::new_v7(),
            &EventMeta::default(),
            Format::Json,
        )
        .unwrap();
        let mut odd = recorded(new);
        odd.metadata = bytes::Bytes::from_static(br#"{"$schema":"2"}"#);
        assert!(matches!(
            decode::<E>(odd, &Upcasters::new()),
            Err(EventError::Decode { .. })
        ));
        // Application keys cannot pass for the convention's.
        let sneaky = EventMeta::default().with("$format", "msgpack").with("k", 1);
        let new = encode(&E::Tuple(7), EventId::new_v7(), &sneaky, Format::Json).unwrap();
        let back = decode::<E>(recorded(new), &Upcasters::new()).unwrap();
        assert_eq!(back.event, E::Tuple(7));
        assert_eq!(back.meta.extra.get("k"), Some(&serde_json::json!(1)));
    }
}
