//! `Ping` (opcode 2): liveness and round-trip time.
//!
//! ```text
//! Ping { nonce: uint64 }  ->  Pong { nonce: uint64 }
//! ```

use serde::{Deserialize, Serialize};

/// Asks the server to answer at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ping {
    /// Any value; echoed in the [`Pong`].
    pub nonce: u64,
}

/// The answer to a [`Ping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

/// Body of both `Ping` and `Pong`.
#[derive(Serialize, Deserialize)]
pub(crate) struct NonceWire {
    pub(crate) nonce: u64,
}
