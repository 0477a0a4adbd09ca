//! Persistent subscriptions: server-side consumer groups (competing
//! consumers with acks, retries, parking, and per-stream order).
//!
//! - `state`: [`state::GroupState`], one group's delivery state machine.

pub mod state;
