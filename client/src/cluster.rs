//! A cluster's membership ([`Client::add_node`], [`Client::remove_node`]).
//!
//! Both go to the leader (the client follows `NotLeader`) and need an
//! admin. Both are safe to send again: a node already added or already
//! gone is answered as such.

use std::time::Duration;

use logbook_protocol::{AddNode, AddNodeOk, RemoveNode, Request, Response};

use crate::client::Client;
use crate::error::Result;

/// How long a membership change may take: the server waits up to 30 s for
/// its commit.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(45);

impl Client {
    /// One step of adding node `node_id`, reached by its peers at
    /// `raft_addr` and by clients at `client_addr`: the first call makes it
    /// a learner, which the leader sends the log to; a call once it is
    /// close behind makes it a voter. Call until the answer says `voter`
    /// (`lag` tells how far it has yet to go); `logbook cluster add` does.
    pub async fn add_node(
        &self,
        node_id: u64,
        raft_addr: &str,
        client_addr: &str,
    ) -> Result<AddNodeOk> {
        let request = Request::AddNode(AddNode {
            node_id,
            raft_addr: raft_addr.to_owned(),
            client_addr: client_addr.to_owned(),
        });
        self.call_with(
            &request,
            |r| match r {
                Response::AddNodeOk(ok) => Some(ok),
                _ => None,
            },
            Some(CHANGE_TIMEOUT),
            self.options().retry,
        )
        .await
    }

    /// Removes node `node_id` from the cluster (the leader itself steps
    /// down once the change is committed). Stop its daemon afterwards: it
    /// no longer receives the log.
    pub async fn remove_node(&self, node_id: u64) -> Result<()> {
        let request = Request::RemoveNode(RemoveNode { node_id });
        self.call_with(
            &request,
            |r| match r {
                Response::RemoveNodeOk => Some(()),
                _ => None,
            },
            Some(CHANGE_TIMEOUT),
            self.options().retry,
        )
        .await
    }
}
