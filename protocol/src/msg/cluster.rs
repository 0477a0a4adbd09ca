//! Cluster membership, opcodes 40 and 41 (PROTOCOL.md §5.15).
//!
//! ```text
//! AddNode    { node_id: u64, raft_addr: str, client_addr: str }
//! AddNodeOk  { voter: bool, lag: u64 }       a learner `lag` entries behind (ask
//!                                            again), or a voter
//! RemoveNode { node_id: u64 }                RemoveNodeOk { }
//! ```

use serde::{Deserialize, Serialize};

/// Adds a node to the cluster, in steps (sent again until `voter`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddNode {
    /// The node's id.
    pub node_id: u64,
    /// Where its peers reach it (`host:port`).
    pub raft_addr: String,
    /// Where its clients do (`host:port`).
    pub client_addr: String,
}

/// Reply to `AddNode`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddNodeOk {
    /// It votes: added. Otherwise it is a learner catching up.
    pub voter: bool,
    /// Raft entries it has yet to receive (0 for a voter).
    #[serde(default)]
    pub lag: u64,
}

/// Removes a node from the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveNode {
    /// The node's id.
    pub node_id: u64,
}

/// The bytes a message of this module takes, at most, besides strings.
pub(crate) fn size_hint(m: &AddNode) -> usize {
    32 + m.raft_addr.len() + m.client_addr.len()
}
