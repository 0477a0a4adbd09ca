//! # logbook-client
//!
//! Async client for the Logbook event store. The network protocol and the
//! client itself arrive with the protocol issue; until then this crate only
//! re-exports the shared domain types so that application code can be
//! written against them.

pub use logbook_protocol::types::*;
