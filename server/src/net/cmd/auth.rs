//! Access control: what each request needs ([`Connection::authorize`],
//! asked before every request is handled), the refusal and its audit line,
//! the reaction to changed rights, and the user, role and token requests
//! (`PutUser` ... `WhoAmI`, PROTOCOL.md §5.14).

use logbook_protocol::{
    CreateToken, CreateTokenOk, ErrorCode, ErrorReply, GroupSource, ListRolesOk, ListUsersOk,
    NameOnly, Opcode, PutUser, Request, Response, RevokeToken, Role, SubscriptionTarget,
};

use crate::auth::{Op, Right, new_token};
use crate::net::connection::{Close, Connection};

fn denied(message: String) -> Box<ErrorReply> {
    Box::new(ErrorReply::new(ErrorCode::AccessDenied, message))
}

fn bad(message: String) -> Box<ErrorReply> {
    Box::new(ErrorReply::new(ErrorCode::BadRequest, message))
}

impl Connection {
    /// An audit line with the connection's user.
    pub(in crate::net) fn audit(&self, event: &str, mut fields: serde_json::Value) {
        if let Some(map) = fields.as_object_mut() {
            map.insert("user".into(), self.access.user().into());
        }
        self.shared.audit.record(event, self.peer, fields);
    }

    /// Whether the connection's user may make `req`. Reads of the global
    /// log and of the catalog are filtered by the handlers to the streams
    /// the user may read; a consumer group's source is checked when it is
    /// joined.
    pub(in crate::net) fn authorize(&self, req: &Request) -> Result<(), Box<ErrorReply>> {
        let a = &self.access;
        if a.is_admin() {
            return Ok(());
        }
        let stream = |right: Right, stream: &str| {
            if a.can(right, stream) {
                Ok(())
            } else {
                Err(Box::new(
                    ErrorReply::new(
                        ErrorCode::AccessDenied,
                        format!(
                            "user {:?} may not {} stream {stream:?}",
                            a.user(),
                            right.name()
                        ),
                    )
                    .with_stream(stream.to_owned()),
                ))
            }
        };
        let op = |op: Op| {
            if a.has(op) {
                Ok(())
            } else {
                Err(denied(format!(
                    "user {:?} lacks the store right {:?}",
                    a.user(),
                    op.name()
                )))
            }
        };
        let admins_only = |what: &str| {
            Err(denied(format!(
                "user {:?} is no admin: only admins {what}",
                a.user()
            )))
        };
        match req {
            // The connection's own state: nothing to protect.
            Request::Hello(_)
            | Request::Ping(_)
            | Request::Unsubscribe(_)
            | Request::Credit(_)
            | Request::GroupAck(_)
            | Request::GroupNack(_)
            | Request::GroupExtend(_)
            | Request::WhoAmI => Ok(()),
            Request::Append(m) => stream(Right::Write, &m.stream),
            Request::ReadStream(m) => stream(Right::Read, &m.stream),
            Request::GetMetadata(m) => stream(Right::Read, &m.stream),
            Request::SetMetadata(m) => {
                stream(Right::Metadata, &m.stream)?;
                // Retention removes events: it takes the right to remove.
                let md = &m.metadata;
                if md.max_count.is_some()
                    || md.max_age_secs.is_some()
                    || md.truncate_before.is_some()
                {
                    stream(Right::Delete, &m.stream)?;
                }
                Ok(())
            }
            Request::Truncate(m) => stream(Right::Delete, &m.stream),
            Request::DeleteStream(m) => stream(Right::Delete, &m.stream),
            Request::Erase(m) => stream(Right::Delete, &m.stream),
            Request::ReadAll(_) => op(Op::ReadAll),
            Request::Subscribe(s) => match &s.target {
                SubscriptionTarget::Stream { stream: name, .. } => stream(Right::Read, name),
                SubscriptionTarget::All { .. } => op(Op::ReadAll),
            },
            Request::Stats(_) => op(Op::Stats),
            // A backup is a copy of every stream, password hashes included.
            Request::BackupBegin(_) | Request::BackupRead(_) | Request::BackupEnd(_) => {
                admins_only("take backups")
            }
            Request::Scavenge(_) => op(Op::Scavenge),
            Request::ListStreams(_) => op(Op::Catalog),
            Request::CreateGroup(g) => {
                op(Op::Groups)?;
                self.may_consume(&g.source)
            }
            Request::UpdateGroup(_)
            | Request::DeleteGroup(_)
            | Request::ListGroups(_)
            | Request::ListParked(_)
            | Request::ReplayParked(_)
            | Request::DeleteParked(_) => op(Op::Groups),
            // Checked against the group's source when it is found.
            Request::JoinGroup(_) => Ok(()),
            Request::ListUsers | Request::ListRoles => op(Op::Users),
            // Whoever may change users, roles or others' tokens may make
            // itself an admin: that is the admins' alone.
            Request::PutUser(_)
            | Request::DeleteUser(_)
            | Request::PutRole(_)
            | Request::DeleteRole(_) => admins_only("change users and roles"),
            // Users manage their own tokens, new ones only from a session
            // opened with their password (a stolen token must not be able
            // to outlive its revocation by minting another).
            Request::CreateToken(t) if t.user == a.user() && a.token().is_none() => Ok(()),
            Request::RevokeToken(t) if t.user == a.user() => Ok(()),
            Request::CreateToken(_) | Request::RevokeToken(_) => {
                admins_only("create tokens for others, or from a token's session")
            }
            Request::AddNode(_) | Request::RemoveNode(_) => {
                admins_only("change the cluster's members")
            }
            // A request this version does not classify: refused to all but
            // admins.
            _ => Err(denied(format!(
                "user {:?} may not make {:?} requests",
                a.user(),
                req.opcode()
            ))),
        }
    }

    /// Whether the user may receive a consumer group's events: every event
    /// of its source, unfiltered, so all of a stream or all of the log.
    pub(in crate::net) fn may_consume(&self, source: &GroupSource) -> Result<(), Box<ErrorReply>> {
        let a = &self.access;
        let ok = match source {
            GroupSource::Stream { stream } => a.can(Right::Read, stream),
            GroupSource::All { .. } => a.reads_everything(),
        };
        if ok {
            Ok(())
        } else {
            Err(denied(format!(
                "user {:?} may not read every event of the group's source",
                a.user()
            )))
        }
    }

    /// Refuses a request: the error reply, and an audit line.
    pub(in crate::net) fn deny(&self, opcode: Opcode, corr_id: u32, reply: ErrorReply) {
        self.audit(
            "access_denied",
            serde_json::json!({
                "request": format!("{opcode:?}"),
                "stream": reply.stream,
                "reason": reply.message,
            }),
        );
        self.send_error(opcode, corr_id, reply);
    }

    /// Users or roles changed: the connection goes on with its user's new
    /// rights, unless the user is gone or disabled, or its rights changed
    /// while it holds subscriptions or group memberships (which were
    /// granted under the old ones): then it is closed, and its client logs
    /// in again.
    pub(in crate::net) fn rights_changed(&mut self) -> Result<(), Close> {
        let now = self.shared.auth.current(&self.access);
        match now {
            Some(access) if access == self.access => Ok(()),
            Some(access) if self.subs.is_empty() && self.memberships.is_empty() => {
                self.access = access;
                Ok(())
            }
            other => {
                let why = if other.is_some() {
                    "the user's rights changed: log in again"
                } else {
                    "the user was removed or disabled"
                };
                self.audit("session_closed", serde_json::json!({ "reason": why }));
                Err(self.connection_error(ErrorReply::new(ErrorCode::NotAuthenticated, why)))
            }
        }
    }

    pub(in crate::net) async fn put_user(&self, corr_id: u32, u: PutUser) {
        let opcode = Opcode::PutUser;
        let hash = match u.password.clone() {
            None => None,
            Some(p) => match self.shared.auth.hash(p).await {
                Ok(h) => Some(h),
                Err(e) => return self.answer(corr_id, opcode, Err(e)),
            },
        };
        let name = u.name.clone();
        let r = self
            .shared
            .auth
            .change(Some(&self.access), |doc| {
                doc.put_user(
                    &u.name,
                    hash.clone(),
                    u.roles.clone(),
                    u.tenant.clone(),
                    u.disabled,
                )
                .map_err(bad)?;
                doc.show_user(&u.name)
                    .ok_or_else(|| bad("the user vanished".into()))
            })
            .await;
        self.audit(
            "user_put",
            serde_json::json!({
                "name": name,
                "password_changed": u.password.is_some(),
                "ok": r.is_ok(),
            }),
        );
        self.answer(corr_id, opcode, r.map(|u| Response::PutUserOk(Box::new(u))));
    }

    pub(in crate::net) async fn delete_user(&self, corr_id: u32, u: NameOnly) {
        let opcode = Opcode::DeleteUser;
        let r = self
            .shared
            .auth
            .change(Some(&self.access), |doc| {
                if doc.delete_user(&u.name) {
                    Ok(())
                } else {
                    Err(bad(format!("no user named {:?}", u.name)))
                }
            })
            .await;
        self.audit(
            "user_deleted",
            serde_json::json!({ "name": u.name, "ok": r.is_ok() }),
        );
        self.answer(corr_id, opcode, r.map(|()| Response::DeleteUserOk));
    }

    pub(in crate::net) fn list_users(&self, corr_id: u32) {
        let doc = self.shared.auth.doc();
        let users = doc.users.keys().filter_map(|n| doc.show_user(n)).collect();
        self.send(
            corr_id,
            Opcode::ListUsers,
            &Response::ListUsersOk(ListUsersOk { users }),
        );
    }

    pub(in crate::net) async fn put_role(&self, corr_id: u32, role: Role) {
        let opcode = Opcode::PutRole;
        let name = role.name.clone();
        let r = self
            .shared
            .auth
            .change(Some(&self.access), |doc| {
                doc.put_role(&role).map_err(bad)?;
                doc.show_role(&role.name)
                    .ok_or_else(|| bad("the role vanished".into()))
            })
            .await;
        self.audit(
            "role_put",
            serde_json::json!({ "name": name, "ok": r.is_ok() }),
        );
        self.answer(corr_id, opcode, r.map(|r| Response::PutRoleOk(Box::new(r))));
    }

    pub(in crate::net) async fn delete_role(&self, corr_id: u32, r: NameOnly) {
        let opcode = Opcode::DeleteRole;
        let result = self
            .shared
            .auth
            .change(Some(&self.access), |doc| match doc.delete_role(&r.name) {
                Ok(true) => Ok(()),
                Ok(false) => Err(bad(format!("no role named {:?}", r.name))),
                Err(e) => Err(bad(e)),
            })
            .await;
        self.audit(
            "role_deleted",
            serde_json::json!({ "name": r.name, "ok": result.is_ok() }),
        );
        self.answer(corr_id, opcode, result.map(|()| Response::DeleteRoleOk));
    }

    pub(in crate::net) fn list_roles(&self, corr_id: u32) {
        let roles = self.shared.auth.doc().list_roles();
        self.send(
            corr_id,
            Opcode::ListRoles,
            &Response::ListRolesOk(ListRolesOk { roles }),
        );
    }

    pub(in crate::net) async fn create_token(&self, corr_id: u32, t: CreateToken) {
        let opcode = Opcode::CreateToken;
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let r = match new_token(&t.label, now_us) {
            Err(e) => Err(Box::new(ErrorReply::new(ErrorCode::Internal, e))),
            Ok((text, stored)) => {
                let id = stored.id.clone();
                self.shared
                    .auth
                    .change(Some(&self.access), |doc| {
                        doc.add_token(&t.user, stored.clone()).map_err(bad)
                    })
                    .await
                    .map(|()| CreateTokenOk { id, token: text })
            }
        };
        self.audit(
            "token_created",
            serde_json::json!({
                "for": t.user,
                "label": t.label,
                "id": r.as_ref().ok().map(|ok| ok.id.clone()),
            }),
        );
        self.answer(corr_id, opcode, r.map(Response::CreateTokenOk));
    }

    pub(in crate::net) async fn revoke_token(&self, corr_id: u32, t: RevokeToken) {
        let opcode = Opcode::RevokeToken;
        let r = self
            .shared
            .auth
            .change(Some(&self.access), |doc| {
                if doc.revoke_token(&t.user, &t.id) {
                    Ok(())
                } else {
                    Err(bad(format!("user {:?} has no token {:?}", t.user, t.id)))
                }
            })
            .await;
        self.audit(
            "token_revoked",
            serde_json::json!({ "for": t.user, "id": t.id, "ok": r.is_ok() }),
        );
        self.answer(corr_id, opcode, r.map(|()| Response::RevokeTokenOk));
    }

    pub(in crate::net) fn who_am_i(&self, corr_id: u32) {
        self.send(
            corr_id,
            Opcode::WhoAmI,
            &Response::WhoAmIOk(Box::new(self.access.who_am_i())),
        );
    }
}
