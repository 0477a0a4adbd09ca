//! `Subscribe`, `Unsubscribe` and `Credit`: a connection's subscriptions,
//! by their Subscribe's corr_id. What a subscription does once started is
//! the `subscription` module's.

use std::sync::Arc;

use logbook_protocol::{Credit, ErrorCode, ErrorReply, Opcode, Response, Unsubscribe};

use crate::net::connection::Connection;
use crate::net::errors::start_error;
use crate::net::subscription::{self, CompiledFilter, SUBSCRIPTION_BASE_BYTES};

impl Connection {
    /// Checks the request, answers `SubscribeOk` with the head and starts
    /// the subscription.
    pub(in crate::net) fn subscribe(&mut self, corr_id: u32, mut s: logbook_protocol::Subscribe) {
        let opcode = Opcode::Subscribe;
        self.forget_ended(corr_id);
        if self.subs.contains_key(&corr_id) {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::BadRequest,
                    "a subscription with this corr_id is open",
                ),
            );
            return;
        }
        // Subscriptions and group memberships share the limit.
        self.memberships.retain(|_, (g, _)| !g.is_ended());
        if self.subs.len() + self.memberships.len()
            >= self.shared.config.max_subscriptions_per_connection
        {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    "too many subscriptions on this connection",
                )
                .with_limit(self.shared.config.max_subscriptions_per_connection as u64),
            );
            return;
        }
        if let logbook_protocol::SubscriptionTarget::Stream { stream, .. } = &s.target
            && let Err(e) = logbook_protocol::validate_stream_name(stream)
        {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
            );
            return;
        }
        let restricted = !self.access.reads_everything();
        let filter = match &mut s.target {
            // A user who may not read every stream gets a filtered
            // subscription, whose checkpoints still say how far it scanned.
            logbook_protocol::SubscriptionTarget::All { filter, .. } if restricted => {
                CompiledFilter::new(filter.take().unwrap_or_default())
                    .map(|f| Some(f.restricted_to(self.access.clone())))
            }
            logbook_protocol::SubscriptionTarget::All { filter, .. } => {
                filter.take().map(CompiledFilter::new).transpose()
            }
            logbook_protocol::SubscriptionTarget::Stream { .. } => Ok(None),
        };
        let filter = match filter {
            Ok(f) => f,
            Err(e) => {
                self.send_error(opcode, corr_id, ErrorReply::new(ErrorCode::BadRequest, e));
                return;
            }
        };
        // Its memory, charged on the server's subscription budget for as
        // long as it lives.
        let bytes = SUBSCRIPTION_BASE_BYTES + filter.as_ref().map_or(0, |f| f.memory_bytes());
        let kib = bytes.div_ceil(1024).min(u32::MAX as usize) as u32;
        let Ok(charge) = Arc::clone(&self.shared.subscription_budget).try_acquire_many_owned(kib)
        else {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    format!(
                        "the server's subscriptions hold their memory budget; this one needs {bytes} bytes"
                    ),
                )
                .with_limit(self.shared.config.max_subscription_bytes as u64),
            );
            return;
        };
        // The head first: SubscribeOk reports it, and a subscription from
        // `end` starts exactly there (see `subscription::start`).
        let head = self.shared.store.head();
        let start = match subscription::resolve(&self.shared.store, &s.target, head.0) {
            Ok(start) => start,
            Err(e) => {
                self.send_error(opcode, corr_id, start_error(&e));
                return;
            }
        };
        // Before the subscription's task can push anything.
        self.send(
            corr_id,
            opcode,
            &Response::SubscribeOk(logbook_protocol::SubscribeOk { head }),
        );
        let sub = self
            .shared
            .hub
            .start(corr_id, s, filter, start, Arc::clone(&self.out), charge);
        self.subs.insert(corr_id, sub);
    }

    /// Forgets subscriptions the server ended on its own (with an `ended`
    /// push, after a read error): they are over, so their corr_ids are free
    /// and they no longer count toward the connection's limit. Checked
    /// lazily, when a Subscribe needs the corr_id or a place, rather than
    /// told by the subscription, which has no way to the connection's map.
    fn forget_ended(&mut self, corr_id: u32) {
        if self.subs.get(&corr_id).is_some_and(|s| s.is_ended()) {
            self.subs.remove(&corr_id);
        }
        if self.subs.len() >= self.shared.config.max_subscriptions_per_connection {
            self.subs.retain(|_, s| !s.is_ended());
        }
    }

    /// Ends a subscription of this connection.
    pub(in crate::net) fn unsubscribe(&mut self, corr_id: u32, u: Unsubscribe) {
        let opcode = Opcode::Unsubscribe;
        // Idempotent: ending an unknown subscription is not an error.
        if let Some(sub) = self.subs.remove(&u.subscription) {
            self.shared.hub.end(&sub, None);
        } else {
            self.leave_group(u.subscription);
        }
        self.send(corr_id, opcode, &Response::UnsubscribeOk);
    }

    /// Adds credit to a subscription of this connection; no reply.
    pub(in crate::net) fn credit(&self, c: Credit) {
        if let Some(sub) = self.subs.get(&c.subscription) {
            sub.grant(c.events);
        }
    }
}
