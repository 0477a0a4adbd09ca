//! `Credit` (opcode 8): let a subscription send more events.
//!
//! ```text
//! Credit { subscription: uint32, events: uint32 }   (no reply)
//! ```
//!
//! Fire-and-forget: the server sends no response, not even for an unknown
//! subscription (it may have ended while the credit was in flight). The
//! frame carries the subscription's `corr_id` (never 0). A malformed body
//! cannot be answered or attributed, so the server treats it as a
//! connection-level error (`corr_id` 0) and closes the connection.
//! Credits add up: the window is `initial_credit` plus every grant, minus
//! the events pushed so far.

use serde::{Deserialize, Serialize};

/// Grants `events` more events to the subscription whose `corr_id` is
/// `subscription`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Credit {
    /// The subscription's `corr_id`.
    pub subscription: u32,
    /// Events added to the window.
    pub events: u32,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CreditWire {
    pub(crate) subscription: u32,
    pub(crate) events: u32,
}
