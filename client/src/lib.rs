//! # logbook-client
//!
//! Async client for the Logbook event store. One [`Client`] holds one TCP
//! connection, speaks the wire protocol (`protocol/PROTOCOL.md`) over it and
//! multiplexes every caller onto it: clone the client into as many tasks as
//! you like.
//!
//! ```no_run
//! use futures::TryStreamExt;
//! use logbook_client::{Client, EventId, ExpectedVersion, NewEvent, ReadStreamOptions};
//!
//! # async fn demo() -> logbook_client::Result<()> {
//! let client = Client::connect("127.0.0.1:7117").await?;
//! let event = NewEvent::new(EventId::from_u128(7), "MoneyDeposited", r#"{"amount":10}"#);
//! let appended = client.append("account-42", ExpectedVersion::Any, vec![event]).await?;
//! println!("stored at position {}", appended.first_position);
//!
//! let events: Vec<_> = client
//!     .read_stream("account-42", ReadStreamOptions::default())
//!     .try_collect()
//!     .await?;
//! println!("account-42 has {} events", events.len());
//! # Ok(())
//! # }
//! ```
//!
//! Subscriptions follow the global log or one stream, history first, then
//! live, exactly once and in order across reconnects; a [`Checkpoint`] in
//! a [`CheckpointStore`] lets a consumer resume after a restart:
//!
//! ```no_run
//! use futures::TryStreamExt;
//! use logbook_client::{
//!     CheckpointStore, Client, FileCheckpointStore, SubscribeAllOptions, SubscriptionMessage,
//! };
//!
//! # async fn demo(client: Client) -> Result<(), Box<dyn std::error::Error>> {
//! let store = FileCheckpointStore::new("projector.checkpoint");
//! let options = SubscribeAllOptions::default().from_checkpoint(store.load().await?);
//! let mut subscription = client.subscribe_all(options).await?;
//! while let Some(message) = subscription.try_next().await? {
//!     if let SubscriptionMessage::Event(event) = &message {
//!         println!("{} {}", event.position, event.event_type);
//!     }
//!     store.save(&subscription.resume_point()).await?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! - `client.rs`: [`Client`]: the public calls, validation before
//!   sending, the retry loop with its timeout, and lazy reconnection.
//! - `conn.rs`: one connection: the Hello handshake, the writer task (owns
//!   the socket's write half, flushes the shared outbox), the reader task
//!   (owns the read half, cuts frames and routes them by `corr_id`) and the
//!   table of requests awaiting a reply or pushes.
//! - `read.rs`: read options, single pages
//!   ([`StreamPage`], [`AllPage`]) and [`EventStream`], which pages through
//!   large results and prefetches the next page.
//! - `subscription.rs`: [`Subscription`], a `Stream` of
//!   [`SubscriptionMessage`]s driven by the consumer's polls: decoding
//!   pushes, checking their order, granting credit as the consumer takes
//!   events, and subscribing again after a broken connection.
//! - `checkpoint.rs`: [`Checkpoint`], the [`CheckpointStore`] trait and
//!   [`FileCheckpointStore`] (atomic replace), with the exactly-once
//!   recipe.
//! - `backup.rs`: [`Client::backup`]: an online backup through the
//!   protocol into a local directory ([`BackupProgress`], [`BackupReport`]).
//!   [`Client::stats`] (in `client.rs`) returns the server's figures as
//!   [`ServerStats`].
//! - Stream lifecycle (in `client.rs`): [`Client::set_stream_metadata`]
//!   (retention, custom keys), [`Client::get_stream_metadata`],
//!   [`Client::truncate_stream`] and [`Client::delete_stream`] (soft or
//!   hard), each answered with a [`LifecycleWritten`].
//! - `scavenge.rs`: [`Client::scavenge`] ([`ScavengeOptions`],
//!   [`ScavengeReport`]) and [`Client::erase`] ([`EraseReceipt`]): disk
//!   given back, long calls outside the request timeout.
//! - `options.rs`: [`ClientOptions`] and [`RetryPolicy`].
//! - `error.rs`: [`Error`], and how server error replies map onto it.
//!
//! ## The path of a request
//! 1. A call (`Client::append`, ...) validates its arguments with the
//!    protocol crate's validators and the server's announced limits.
//! 2. `Client::call` bounds the whole call by the request timeout and runs
//!    the retry loop; each attempt takes the live connection (or opens a
//!    new one, one caller at a time).
//! 3. `Connection::send` registers a oneshot under a fresh `corr_id` (never
//!    0), encodes the frame with `Request::encode` straight into the shared
//!    outbox, and wakes the writer, which sends everything queued in one
//!    write: concurrent requests share syscalls.
//! 4. The reader task cuts incoming bytes into frames (`decode_frame`, crc
//!    checked, bodies not copied) and hands each reply to the oneshot of its
//!    `corr_id`, whatever order replies come in. A subscription's
//!    `SubscribeOk` and pushes go to its own channel (`Pending::Pushes`),
//!    read by its [`Subscription`].
//! 5. Back in the caller's task, `ServerMessage::decode` turns the frame
//!    into a response (event payloads share the read buffer) or an
//!    [`Error`]. A broken connection fails every request in flight with
//!    [`Error::Disconnected`], which the retry policy may retry on a new
//!    connection.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod backup;
mod checkpoint;
mod client;
mod cluster;
mod conn;
mod error;
pub mod es;
mod groups;
pub mod json;
mod options;
mod read;
mod scavenge;
mod subscription;
mod tls;
mod users;

pub use backup::{BackupProgress, BackupReport};
pub use checkpoint::{Checkpoint, CheckpointStore, FileCheckpointStore};
pub use client::Client;
pub use error::{Error, Result};
pub use groups::{GroupConsumer, GroupDelivery};
pub use options::{BoxIo, ClientOptions, Connector, Io, RetryPolicy};
pub use read::{
    AllPage, DEFAULT_PAGE_SIZE, EventStream, ReadAllOptions, ReadStreamOptions, StreamPage,
};
pub use scavenge::{EraseReceipt, ScavengeOptions, ScavengeReport};
pub use tls::TlsOptions;

pub use subscription::{
    DEFAULT_WINDOW, SubscribeAllOptions, SubscribeStreamOptions, Subscription, SubscriptionMessage,
};

/// What a lifecycle operation wrote ([`Client::set_stream_metadata`],
/// [`Client::truncate_stream`], [`Client::delete_stream`]), or the latest
/// one ([`Client::get_stream_metadata`]).
pub use logbook_protocol::LifecycleOk as LifecycleWritten;
/// A page of the stream catalog, as [`Client::list_streams`] returns it.
pub use logbook_protocol::ListStreamsOk as CatalogPage;
/// The server's figures, as [`Client::stats`] returns them.
pub use logbook_protocol::StatsOk as ServerStats;
pub use logbook_protocol::lifecycle::{
    Deletion, META_STREAM_PREFIX, StreamLifecycle, StreamMetadata,
};
pub use logbook_protocol::types::*;
pub use logbook_protocol::{
    AddNodeOk, CreateTokenOk, Grant, PutUser, Role, TokenInfo, UserInfo, WhoAmIOk,
};
pub use logbook_protocol::{Filter, HelloOk, RecoveryStats, StreamInfo, SubscribeFrom};
pub use logbook_protocol::{
    GroupInfo, GroupSettings, GroupSource, GroupStart, GroupStrategy, ListParkedOk, NackAction,
    ParkedEntry, ReplayParkedOk,
};
