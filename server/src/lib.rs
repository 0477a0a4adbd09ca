//! # logbook-server
//!
//! The Logbook daemon: the network server that the `logbookd` binary runs,
//! its configuration and its metrics, built on the public API of the
//! storage engine ([`logbook_storage`], whose crate docs trace the path of
//! an append and of a read).
//!
//! ## Layout
//! - [`net`]: the TCP server: the accept loop (`net/mod.rs`), one task per
//!   connection (`net/connection.rs`), the request handlers, one file per
//!   request family (`net/cmd/`: `hello.rs`, `append.rs`, `read.rs`,
//!   `lifecycle.rs`, `scavenge.rs`, `subscribe.rs`, `stats.rs`,
//!   `backup.rs`), subscriptions
//!   (`net/subscription/`: `start.rs`, `filter.rs`, `catchup.rs`,
//!   `fanout.rs`, `hub.rs`), the outgoing buffer (`net/outbox.rs`), error
//!   codes (`net/errors.rs`), append sizes in the protocol's and the
//!   engine's terms (`net/limits.rs`) and the `Stats` figures
//!   (`net/stats.rs`). A request
//!   travels: socket -> `FrameCodec` framing -> `Request::decode` -> the
//!   connection's dispatch (`net/connection.rs`) -> its handler in
//!   `net/cmd/<family>.rs` -> the engine (appends through the group-commit
//!   writer, reads directly) -> the reply encoded into the connection's
//!   outbox -> one write for many replies.
//! - [`metrics`]: operator metrics: the Prometheus exposition of the
//!   engine's and the server's live figures, and the small HTTP listener
//!   (`--metrics-listen`) serving `/metrics`, `/health`, `/ready` and the
//!   console.
//! - [`console`]: the web console on the metrics port (`/console`): a
//!   static page over JSON endpoints that work through the protocol as the
//!   logged-in user (`net::LocalConnector`: in-process connections).
//! - [`config`]: the daemon's command line (`logbookd --help`).
//! - [`tls`]: TLS for the client and metrics ports (rustls).

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod auth;
pub mod config;
pub mod console;
pub mod groups;
pub mod metrics;
pub mod net;
pub mod otlp;
pub mod tls;
