//! Consumer groups (PROTOCOL.md §5.13): definitions through the registry
//! (`crate::net::groups`), and a connection's memberships: pushes go to
//! its outbox, acks, nacks and extensions to its groups.

use logbook_protocol::{
    CreateGroup, DeleteGroup, DeleteParked, ErrorCode, ErrorReply, GroupAck, GroupExtend,
    GroupNack, JoinGroup, ListParked, Opcode, ReplayParked, Response, UpdateGroup,
};

use crate::net::connection::Connection;

impl Connection {
    pub(in crate::net) async fn create_group(&self, corr_id: u32, req: CreateGroup) {
        let opcode = Opcode::CreateGroup;
        self.audit("group_create", serde_json::json!({ "group": req.group }));
        match self.shared.groups.create(req).await {
            Ok(info) => self.send(corr_id, opcode, &Response::CreateGroupOk(Box::new(info))),
            Err(e) => self.send_error(opcode, corr_id, *e),
        }
    }

    pub(in crate::net) async fn update_group(&self, corr_id: u32, req: UpdateGroup) {
        let opcode = Opcode::UpdateGroup;
        match self.shared.groups.update(&req.group, req.settings).await {
            Ok(info) => self.send(corr_id, opcode, &Response::UpdateGroupOk(Box::new(info))),
            Err(e) => self.send_error(opcode, corr_id, *e),
        }
    }

    pub(in crate::net) async fn delete_group(&self, corr_id: u32, req: DeleteGroup) {
        let opcode = Opcode::DeleteGroup;
        self.audit("group_delete", serde_json::json!({ "group": req.group }));
        match self.shared.groups.delete(&req.group).await {
            Ok(()) => self.send(corr_id, opcode, &Response::DeleteGroupOk),
            Err(e) => self.send_error(opcode, corr_id, *e),
        }
    }

    pub(in crate::net) async fn list_parked(&self, corr_id: u32, req: ListParked) {
        let opcode = Opcode::ListParked;
        match self
            .shared
            .groups
            .list_parked(&req.group, req.after, req.limit)
            .await
        {
            Ok(page) => self.send(corr_id, opcode, &Response::ListParkedOk(page)),
            Err(e) => self.send_error(opcode, corr_id, *e),
        }
    }

    pub(in crate::net) fn replay_parked(&self, corr_id: u32, req: ReplayParked) {
        let opcode = Opcode::ReplayParked;
        match self.shared.groups.replay_parked(&req.group, req.max) {
            Ok(ok) => self.send(corr_id, opcode, &Response::ReplayParkedOk(ok)),
            Err(e) => self.send_error(opcode, corr_id, *e),
        }
    }

    pub(in crate::net) async fn delete_parked(&self, corr_id: u32, req: DeleteParked) {
        let opcode = Opcode::DeleteParked;
        match self.shared.groups.delete_parked(&req.group).await {
            Ok(ok) => self.send(corr_id, opcode, &Response::DeleteParkedOk(ok)),
            Err(e) => self.send_error(opcode, corr_id, *e),
        }
    }

    pub(in crate::net) fn list_groups(&self, corr_id: u32) {
        let groups = self.shared.groups.list();
        self.send(corr_id, Opcode::ListGroups, &Response::ListGroupsOk(groups));
    }

    /// Joins a group: the reply, then pushes under this `corr_id`.
    pub(in crate::net) fn join_group(&mut self, corr_id: u32, req: JoinGroup) {
        let opcode = Opcode::JoinGroup;
        // Memberships of deleted groups hold nothing any more.
        self.memberships.retain(|_, (g, _)| !g.is_ended());
        if self.subs.contains_key(&corr_id) || self.memberships.contains_key(&corr_id) {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::BadRequest,
                    format!("corr_id {corr_id} names an open subscription or membership"),
                ),
            );
            return;
        }
        if self.subs.len() + self.memberships.len()
            >= self.shared.config.max_subscriptions_per_connection
        {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    "too many subscriptions and memberships on this connection",
                ),
            );
            return;
        }
        // The reply goes out before the group's task can push: the join
        // is registered under the group's lock after the reply is queued.
        match self.shared.groups.get(&req.group) {
            Err(e) => self.send_error(opcode, corr_id, *e),
            Ok(g) => {
                let info = g.info();
                if let Err(denied) = self.may_consume(&info.source) {
                    self.deny(opcode, corr_id, *denied);
                    return;
                }
                self.send(corr_id, opcode, &Response::JoinGroupOk(Box::new(info)));
                match self.shared.groups.join(
                    &req.group,
                    req.window,
                    std::sync::Arc::clone(&self.out),
                    corr_id,
                ) {
                    Ok((g, consumer)) => {
                        self.memberships.insert(corr_id, (g, consumer));
                    }
                    Err(e) => {
                        // Deleted in between, or a bad window: the pushes
                        // end at once.
                        let push = logbook_protocol::GroupPush::Ended {
                            code: e.code,
                            message: e.message,
                        };
                        let max = self.shared.config.max_frame_bytes;
                        let _ = self.out.push(|b| push.encode(b, corr_id, max));
                    }
                }
            }
        }
    }

    pub(in crate::net) fn group_ack(&self, req: GroupAck) {
        if let Some((g, _)) = self.memberships.get(&req.subscription) {
            g.ack(&req.ids);
        }
    }

    pub(in crate::net) fn group_nack(&self, req: GroupNack) {
        if let Some((g, consumer)) = self.memberships.get(&req.subscription) {
            g.nack(*consumer, &req.ids, &req.action);
        }
    }

    pub(in crate::net) fn group_extend(&self, req: GroupExtend) {
        if let Some((g, consumer)) = self.memberships.get(&req.subscription) {
            g.extend(*consumer, &req.ids);
        }
    }

    /// Leaves a group (an `Unsubscribe` naming a membership). True if it
    /// was one.
    pub(in crate::net) fn leave_group(&mut self, subscription: u32) -> bool {
        match self.memberships.remove(&subscription) {
            Some((g, consumer)) => {
                g.leave(consumer);
                true
            }
            None => false,
        }
    }
}
