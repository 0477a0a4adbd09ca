//! # logbook-protocol
//!
//! The Logbook wire protocol: domain types, frames, messages and the codec.
//! This crate does no I/O of its own; the server and the client wrap its
//! codec around their sockets.
//!
//! ## Layout
//! - [`types`]: domain types shared by every crate (`StreamVersion`,
//!   `LogPosition`, `ExpectedVersion`, `NewEvent`, `RecordedEvent`, ...).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

pub mod types;

pub use types::*;
