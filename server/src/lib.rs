//! # logbook-server
//!
//! The Logbook event store: the storage engine, and (with the protocol
//! issue) the network server that the `logbookd` binary runs.
//!
//! ## Layout
//! - [`storage`]: the engine: segmented log, stream index, group commit,
//!   recovery, verification. Its module docs trace the path of an append and
//!   of a read.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod storage;
