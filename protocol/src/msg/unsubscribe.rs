//! `Unsubscribe` (opcode 7): stop a subscription.
//!
//! ```text
//! Unsubscribe   { subscription: uint32 }  ->  UnsubscribeOk {}
//! ```
//!
//! Pushes already in flight may still arrive before `UnsubscribeOk`; none
//! follow it.

use serde::{Deserialize, Serialize};

/// Stops the subscription started by the `Subscribe` whose `corr_id` is
/// `subscription`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Unsubscribe {
    /// The subscription's `corr_id`.
    pub subscription: u32,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct UnsubscribeWire {
    pub(crate) subscription: u32,
}

/// Body of `UnsubscribeOk`: an empty map, room for fields to come.
#[derive(Serialize, Deserialize)]
pub(crate) struct EmptyWire {}
