//! The handlers of requests, one file per request family (the shape of
//! mini-redis's `cmd`). `Connection::dispatch` (in `connection`) turns a
//! decoded `Request` into a call to its handler here; the handler does the
//! work against the engine (or the subscription hub) and encodes its reply
//! into the connection's outbox. Each handler is a method of `Connection`,
//! in an `impl` block of its family's file.
//!
//! - `hello`: `Hello` (the handshake: protocol version and token) and
//!   `Ping`.
//! - `append`: `Append`, queued to the engine's writer, and its reply once
//!   the batch is durable.
//! - `read`: `ReadStream` and `ReadAll`.
//! - `lifecycle`: `SetMetadata`, `GetMetadata`, `Truncate` and
//!   `DeleteStream`, a stream's metadata and deletion, written through the
//!   engine's writer like appends.
//! - `scavenge`: `Scavenge` and `Erase`, segment rewrites on blocking
//!   threads, answered when done while the connection serves on (their
//!   replies are awaited in the connection's `jobs`).
//! - `subscribe`: `Subscribe`, `Unsubscribe` and `Credit` (what a
//!   subscription does once started is `subscription`'s).
//! - `stats`: `Stats` (the snapshot is `net::stats`').
//! - `catalog`: `ListStreams`, a page of the stream catalog.
//! - `auth`: what each request needs (`authorize`), refusals, changed
//!   rights, and the user, role and token requests.
//! - `backup`: `BackupBegin`, `BackupRead` and `BackupEnd`, with the limits
//!   on backup sessions per connection and per server.
//! - `cluster`: `AddNode` and `RemoveNode`, a cluster's membership.

mod append;
pub(super) use append::AppendTrace;
mod auth;
mod backup;
mod catalog;
mod cluster;
mod groups;
mod hello;
mod lifecycle;
mod read;
mod scavenge;
mod stats;
mod subscribe;

pub(super) use backup::MAX_BACKUPS;
pub(super) use scavenge::scheduled_scavenges;
