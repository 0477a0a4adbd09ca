//! Event sourcing on top of the client: typed events, schema evolution by
//! upcasting, an aggregate repository, and correlation metadata.
//!
//! # A short guide
//!
//! **Events are a serde enum.** One variant per event type; the stored
//! event type is the variant name and the data its content, as JSON (or
//! MessagePack: [`Format`]). Implement [`SerdeEvent`] (nothing to write for
//! an externally tagged enum), or [`Event`] for another representation:
//!
//! ```
//! use logbook_client::es::{SerdeEvent, EventMeta, Format, encode};
//! use logbook_client::EventId;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum AccountEvent {
//!     Opened { owner: String },
//!     Deposited { cents: i64 },
//! }
//! impl SerdeEvent for AccountEvent {}
//!
//! let new = encode(&AccountEvent::Deposited { cents: 250 }, EventId::new_v7(), &EventMeta::default(), Format::Json).unwrap();
//! assert_eq!(&*new.event_type, "Deposited");
//! assert_eq!(&new.data[..], br#"{"cents":250}"#);
//! ```
//!
//! Append with [`encode`] (or let a [`Repository`] do it); read with
//! [`Client::read_typed`](crate::Client::read_typed), or [`decode`] any
//! [`RecordedEvent`](crate::RecordedEvent) (from `read_all`, a
//! subscription).
//!
//! **Schema versions.** Each event's metadata says which schema version of
//! its type the data was written in (`"$schema"`, from
//! [`Event::schema_version`], 1 by default). When a type's data changes
//! shape, raise its version and register an upcaster from the old one
//! ([`Upcasters::register`]: data of version `v` to data of `v + 1`, or to
//! another type with [`Upcasters::register_renaming`]). Reads take old
//! events through the chain (v1 -> v2 -> v3) to the current version; the
//! stored events are never rewritten. An event whose chain does not reach
//! the current version is an error ([`EventError::NoUpcaster`]), never a
//! silent misread. Keep the upcasters for as long as old events exist.
//!
//! **Aggregates.** An [`Aggregate`] is state rebuilt from its stream's
//! events (`apply`, which never fails). A [`Repository`] runs a command: it
//! loads the aggregate (its latest snapshot from `<stream>-snapshots`, then
//! the events after it), calls your decision with the state, appends the
//! events it returns with the exact expected version, and if another
//! writer got there first, loads and decides again: two handlers racing on
//! one aggregate never lose an update, and each decision is made against
//! the state it will be appended to. Every
//! [`RepositoryOptions::snapshot_every`] events it writes a snapshot (a
//! cache: an unreadable one is ignored).
//!
//! **Commands apply once.** Each command has a [`CommandId`] (fresh, or
//! your idempotency key). Its events' ids derive from it, and their
//! metadata names it (`"$commandId"`), so a command sent again after a
//! lost reply or a crash is found and answered
//! [`Executed::AlreadyApplied`]: among the latest applied (the last 256 of
//! the loaded events and the snapshot's memory), or, older, recognised by
//! the server from its event ids (an exact resend is answered with the
//! original result, a different decision refused as a duplicate). Sent
//! again after the state moved on, a command older than the remembered
//! ones is decided again first: if that decision now refuses it, the
//! refusal is what you get, though it was applied. A command id is one
//! aggregate's: the same id on another stream is an error.
//!
//! **Deleting and truncating aggregates.** A soft-deleted aggregate starts
//! over from its next event (its snapshot is dropped; its versions go on).
//! Truncate an aggregate's stream only at or below its latest snapshot:
//! loading starts from the snapshot and checks that the events follow it,
//! and a stream without a usable snapshot is folded from its live events
//! only.
//!
//! **Correlation and causation.** [`EventMeta`] is the metadata convention:
//! `"$correlationId"` (the first event of a chain; an event without one is
//! its own), `"$causationId"` (the event this one answers) and
//! `"$traceparent"` (the W3C trace context), plus your own keys. A handler
//! that reacts to an event appends with [`EventMeta::caused_by`] and the
//! chain can be followed event by event (`logbook read --json` shows the
//! metadata). [`Repository::execute`] gives each command a trace context
//! if it has none and runs in a `tracing` span carrying it.
//!
//! **Subscriptions.** [`Subscription::typed`](crate::Subscription::typed)
//! decodes a subscription's events the same way: each message is an
//! upcast [`TypedMessage::Event`], a [`TypedMessage::System`] event
//! (metadata set, truncation, deletion: drop the projection's state), an
//! [`TypedMessage::Undecodable`] one (another type on `$all`: skip it or
//! stop, the subscription goes on), or progress; every one can be
//! checkpointed past.
//!
//! **Tracing.** Every client call runs in a `tracing` span
//! (`logbook.request`, with the opcode and the stream), and
//! [`Repository::execute`] and [`Repository::load`] in spans of their own
//! (`logbook.execute` with the stream, the command id and the trace
//! context). The trace context travels in the events' metadata, so
//! consumers continue the trace ([`EventMeta::caused_by`]: same trace, a
//! new span id), and the server joins it: started with
//! `--otlp-endpoint http://collector:4318`, `logbookd` exports a
//! `logbook.append` span for each append whose first event carries a
//! sampled `"$traceparent"`, a child of the caller's span, to an
//! OpenTelemetry collector (OTLP/HTTP JSON; off by default). Its debug log
//! names each append's `traceparent` too. On the client side, any
//! `tracing` subscriber sees the spans (one with an OpenTelemetry layer,
//! e.g. `tracing-opentelemetry`, exports them); to put your current
//! span's context in the events, give it to
//! [`EventMeta::with_traceparent`].
//!
//! The bank demo (`examples/bank`, `src/commands.rs`) is the worked
//! example: `BankAccount` is an [`Aggregate`], its `AccountEvent` an
//! [`Event`] with its own encoding, and its command side a [`Repository`]
//! (conflict retries, command ids, snapshots every 100 events).

mod repository;
mod subscribe;
mod typed;
mod upcast;
mod variant;

pub use repository::{
    Aggregate, CommandId, ExecuteError, Executed, Loaded, Ran, Repository, RepositoryOptions,
    SNAPSHOT_TYPE, new_traceparent,
};
pub use subscribe::{TypedMessage, TypedSubscription};
pub use typed::{
    CAUSATION_KEY, COMMAND_KEY, CORRELATION_KEY, Event, EventError, EventMeta, FORMAT_KEY, Format,
    SCHEMA_KEY, SerdeEvent, TRACEPARENT_KEY, Typed, decode, encode,
};
pub use upcast::Upcasters;

use std::sync::Arc;

use futures::{Stream, StreamExt};

use crate::{Client, ReadStreamOptions};

/// Why a typed read failed.
#[derive(Debug, thiserror::Error)]
pub enum TypedError {
    /// The server or the connection failed.
    #[error(transparent)]
    Client(#[from] crate::Error),
    /// An event could not be read as the application's type.
    #[error(transparent)]
    Event(#[from] EventError),
}

impl Client {
    /// Reads `stream` as events of type `E`, each upcast to its current
    /// schema version through `upcasters` (see [`crate::es`]).
    pub fn read_typed<E: Event>(
        &self,
        stream: impl Into<crate::Text>,
        options: ReadStreamOptions,
        upcasters: Arc<Upcasters>,
    ) -> impl Stream<Item = Result<Typed<E>, TypedError>> + Send + 'static {
        self.read_stream(stream, options).map(move |r| match r {
            Ok(event) => decode(event, &upcasters).map_err(TypedError::from),
            Err(e) => Err(TypedError::from(e)),
        })
    }
}
