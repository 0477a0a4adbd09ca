//! `AddNode` and `RemoveNode`: a cluster's membership (PROTOCOL.md §5.15).
//!
//! Only the leader changes it (a follower answers `NotLeader` with the
//! leader's address), and only admins may. Adding a node is done in
//! steps, each answered at once: the first `AddNode` makes it a learner
//! that the leader sends the log to, and the one sent once it is close
//! behind makes it a voter (`logbook cluster add` asks until then). A
//! change waits for its commit, at most 30 s; past that its outcome is
//! unknown and asking again is safe.

use logbook_consensus::Member;
use logbook_consensus::node::{Joining, MembershipError};
use logbook_protocol::{AddNode, AddNodeOk, ErrorCode, ErrorReply, Opcode, RemoveNode, Response};

use crate::net::connection::{Connection, JobResult};

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
    pub(in crate::net) async fn add_node(&self, corr_id: u32, a: AddNode) {
        let opcode = Opcode::AddNode;
        let r: JobResult = match &self.shared.config.cluster {
            None => Err(not_a_cluster(opcode)),
            Some(_) if !host_port(&a.raft_addr) || !host_port(&a.client_addr) => {
                Err(Box::new(ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!(
                        "{:?} and {:?} must both be HOST:PORT",
                        a.raft_addr, a.client_addr
                    ),
                )))
            }
            Some(node) => {
                let member = Member {
                    raft: a.raft_addr.clone(),
                    client: a.client_addr.clone(),
                };
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
            }
        };
        self.audit(
            "cluster_node_added",
            serde_json::json!({
                "node_id": a.node_id,
                "raft_addr": a.raft_addr,
                "client_addr": a.client_addr,
                "ok": r.is_ok(),
            }),
        );
        self.answer(corr_id, opcode, r);
    }

    pub(in crate::net) async fn remove_node(&self, corr_id: u32, m: RemoveNode) {
        let opcode = Opcode::RemoveNode;
        let r: JobResult = match &self.shared.config.cluster {
            None => Err(not_a_cluster(opcode)),
            Some(node) => node
                .remove_member(m.node_id)
                .await
                .map(|()| Response::RemoveNodeOk)
                .map_err(refusal),
        };
        self.audit(
            "cluster_node_removed",
            serde_json::json!({ "node_id": m.node_id, "ok": r.is_ok() }),
        );
        self.answer(corr_id, opcode, r);
    }
}
