//! `AddNode` and `RemoveNode`: a cluster's membership (PROTOCOL.md §5.15).
//!
//! Only the leader changes it (a follower answers `NotLeader` with the
//! leader's address), and only admins may. Adding a node is done in
//! steps, each answered at once: the first `AddNode` makes it a learner
//! that the leader sends the log to, and the one sent once it is close
//! behind makes it a voter (`logbook cluster add` asks until then). A
//! change waits for its commit, at most 30 s; past that its outcome is
//! unknown and asking again is safe. The wait is a job of the
//! connection, which serves on meanwhile.

use logbook_consensus::Member;
use logbook_consensus::node::{Joining, MembershipError};
use logbook_protocol::{AddNode, AddNodeOk, ErrorCode, ErrorReply, Opcode, RemoveNode, Response};

use crate::net::connection::Connection;

/// The error reply for a membership change not made.
fn refusal(e: MembershipError) -> Box<ErrorReply> {
    let message = e.to_string();
    Box::new(match e {
        MembershipError::NotLeader { leader: Some(m) } => {
            ErrorReply::new(ErrorCode::NotLeader, message).with_leader(m.client)
        }
        MembershipError::NotLeader { leader: None } => {
            ErrorReply::new(ErrorCode::NotLeader, message)
        }
        MembershipError::Invalid(_) => ErrorReply::new(ErrorCode::BadRequest, message),
        MembershipError::Unknown(_) => ErrorReply::new(ErrorCode::ServerBusy, message),
    })
}

fn not_a_cluster(opcode: Opcode) -> Box<ErrorReply> {
    Box::new(ErrorReply::new(
        ErrorCode::Unsupported,
        format!("{opcode:?}: this server is not a cluster node (start it with --cluster)"),
    ))
}

/// Whether `addr` is `host:port`.
fn host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

impl Connection {
    pub(in crate::net) fn add_node(&mut self, corr_id: u32, a: AddNode) {
        let opcode = Opcode::AddNode;
        let Some(node) = self.shared.config.cluster.clone() else {
            return self.answer(corr_id, opcode, Err(not_a_cluster(opcode)));
        };
        if !host_port(&a.raft_addr) || !host_port(&a.client_addr) {
            let reply = ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "{:?} and {:?} must both be HOST:PORT",
                    a.raft_addr, a.client_addr
                ),
            );
            return self.send_error(opcode, corr_id, reply);
        }
        let audit = serde_json::json!({
            "node_id": a.node_id,
            "raft_addr": a.raft_addr,
            "client_addr": a.client_addr,
        });
        let member = Member {
            raft: a.raft_addr,
            client: a.client_addr,
        };
        // Awaited as a job: a change waits up to 30 s for its commit.
        let work = async move {
            node.add_member(a.node_id, member)
                .await
                .map(|j| {
                    Response::AddNodeOk(match j {
                        Joining::CatchingUp { lag } => AddNodeOk { voter: false, lag },
                        Joining::Voter => AddNodeOk {
                            voter: true,
                            lag: 0,
                        },
                    })
                })
                .map_err(refusal)
        };
        self.spawn_job(opcode, corr_id, Some(("cluster_node_added", audit)), work);
    }

    pub(in crate::net) fn remove_node(&mut self, corr_id: u32, m: RemoveNode) {
        let opcode = Opcode::RemoveNode;
        let Some(node) = self.shared.config.cluster.clone() else {
            return self.answer(corr_id, opcode, Err(not_a_cluster(opcode)));
        };
        let audit = serde_json::json!({ "node_id": m.node_id });
        let work = async move {
            node.remove_member(m.node_id)
                .await
                .map(|()| Response::RemoveNodeOk)
                .map_err(refusal)
        };
        self.spawn_job(opcode, corr_id, Some(("cluster_node_removed", audit)), work);
    }
}
