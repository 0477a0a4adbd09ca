//! Consumer groups (persistent subscriptions): competing consumers share a
//! group the server keeps; each event goes to one of them, is acknowledged,
//! retried, or parked after too many deliveries (PROTOCOL.md §5.13).
//!
//! ```no_run
//! use logbook_client::{Client, GroupSettings, GroupSource, GroupStart, GroupStrategy, NackAction};
//!
//! # async fn demo(client: Client) -> logbook_client::Result<()> {
//! let settings = GroupSettings {
//!     strategy: GroupStrategy::PerStream,
//!     ..GroupSettings::default()
//! };
//! client
//!     .create_group("billing", GroupSource::All { filter: None }, GroupStart::Start, settings)
//!     .await?;
//! let mut consumer = client.join_group("billing", 100).await?;
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     if delivery.event.event_type.as_str() == "Invoiced" {
//!         // ... work ...
//!         consumer.ack(&[delivery.id])?;
//!     } else {
//!         consumer.nack(&[delivery.id], NackAction::Skip)?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Delivery is at least once: an event whose ack is lost (the connection
//! broke, the consumer crashed) comes again, to this consumer or another,
//! after its ack wait or as soon as the server sees the consumer gone.

use std::collections::VecDeque;
use std::sync::Arc;

use logbook_protocol::msg::groups::validate_group_name;
use logbook_protocol::{
    CreateGroup, DeleteGroup, DeleteParked, ErrorCode, Frame, GroupAck, GroupExtend, GroupInfo,
    GroupNack, GroupPush, GroupSettings, GroupSource, GroupStart, JoinGroup, ListGroups,
    ListParked, ListParkedOk, NackAction, Opcode, RecordedEvent, ReplayParked, ReplayParkedOk,
    Request, Response, ServerMessage, Unsubscribe, UpdateGroup,
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::client::Client;
use crate::conn::Connection;
use crate::error::{Error, Result};

/// One event delivered by a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDelivery {
    /// The event.
    pub event: RecordedEvent,
    /// Its id in the group: ack, nack or extend it by this.
    pub id: u64,
    /// How often it has been delivered, this time included (above 1: it
    /// was delivered before and not acknowledged).
    pub deliveries: u32,
}

fn check_group(group: &str) -> Result<()> {
    validate_group_name(group).map_err(Error::BadRequest)
}

impl Client {
    /// Creates a consumer group reading `source` from `start`.
    pub async fn create_group(
        &self,
        group: &str,
        source: GroupSource,
        start: GroupStart,
        settings: GroupSettings,
    ) -> Result<GroupInfo> {
        check_group(group)?;
        let request = Request::CreateGroup(CreateGroup {
            group: group.to_owned(),
            source,
            start,
            settings,
        });
        self.call(&request, |r| match r {
            Response::CreateGroupOk(info) => Some(*info),
            _ => None,
        })
        .await
    }

    /// Changes a group's settings.
    pub async fn update_group(&self, group: &str, settings: GroupSettings) -> Result<GroupInfo> {
        check_group(group)?;
        let request = Request::UpdateGroup(UpdateGroup {
            group: group.to_owned(),
            settings,
        });
        self.call(&request, |r| match r {
            Response::UpdateGroupOk(info) => Some(*info),
            _ => None,
        })
        .await
    }

    /// Deletes a group: its consumers' deliveries end, its state and
    /// parked events are dropped.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        check_group(group)?;
        let request = Request::DeleteGroup(DeleteGroup {
            group: group.to_owned(),
        });
        self.call(&request, |r| match r {
            Response::DeleteGroupOk => Some(()),
            _ => None,
        })
        .await
    }

    /// Every group, with its figures.
    pub async fn list_groups(&self) -> Result<Vec<GroupInfo>> {
        self.call(&Request::ListGroups(ListGroups), |r| match r {
            Response::ListGroupsOk(groups) => Some(groups),
            _ => None,
        })
        .await
    }

    /// A page of `group`'s parked events, oldest first: those after the
    /// entry `after` (the `next` of the previous page), at most `limit`.
    pub async fn list_parked(
        &self,
        group: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<ListParkedOk> {
        check_group(group)?;
        let request = Request::ListParked(ListParked {
            group: group.to_owned(),
            after,
            limit,
        });
        self.call(&request, |r| match r {
            Response::ListParkedOk(page) => Some(page),
            _ => None,
        })
        .await
    }

    /// Delivers `group`'s parked events again (those parked now, at most
    /// `max`): the server reads them from the parked list as the group has
    /// room, so a replay of millions holds no more memory than the group's
    /// read-ahead. Each comes with a fresh delivery count; one that fails
    /// again is parked again (at the end of the list).
    pub async fn replay_parked(&self, group: &str, max: Option<u64>) -> Result<ReplayParkedOk> {
        check_group(group)?;
        let request = Request::ReplayParked(ReplayParked {
            group: group.to_owned(),
            max,
        });
        self.call(&request, |r| match r {
            Response::ReplayParkedOk(ok) => Some(ok),
            _ => None,
        })
        .await
    }

    /// Drops every parked event of `group`. Returns how many.
    pub async fn delete_parked(&self, group: &str) -> Result<u64> {
        check_group(group)?;
        let request = Request::DeleteParked(DeleteParked {
            group: group.to_owned(),
        });
        self.call(&request, |r| match r {
            Response::DeleteParkedOk(ok) => Some(ok.removed),
            _ => None,
        })
        .await
    }

    /// Joins `group` as a consumer holding at most `window` unsettled
    /// events. If the connection breaks, the consumer joins again on its
    /// own (under [`crate::ClientOptions::resubscribe`]); what it held is
    /// delivered again.
    pub async fn join_group(&self, group: &str, window: u32) -> Result<GroupConsumer> {
        check_group(group)?;
        // A cluster follower names the leader, which runs the groups.
        let mut redirects = 0;
        let member = loop {
            match join_once(self, group, window).await {
                Err(e) if redirects < crate::client::MAX_REDIRECTS && self.redirected(&e).await => {
                    redirects += 1;
                }
                r => break r?,
            }
        };
        Ok(GroupConsumer {
            client: self.clone(),
            group: group.to_owned(),
            window,
            member: Some(member),
            queue: VecDeque::new(),
            ended: false,
            failures: 0,
        })
    }
}

/// A membership on one connection.
struct Member {
    conn: Arc<Connection>,
    id: u32,
    frames: mpsc::UnboundedReceiver<Frame>,
    armed: bool,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.conn.forget(self.id);
        if self.armed {
            let request = Request::Unsubscribe(Unsubscribe {
                subscription: self.id,
            });
            drop(self.conn.send(&request));
        }
    }
}

async fn join_once(client: &Client, group: &str, window: u32) -> Result<Member> {
    let request = Request::JoinGroup(JoinGroup {
        group: group.to_owned(),
        window,
    });
    let conn = client.connection().await?;
    let (id, frames) = conn.subscribe(&request)?;
    let mut member = Member {
        conn,
        id,
        frames,
        armed: true,
    };
    let Some(frame) = member.frames.recv().await else {
        member.armed = false;
        return Err(Error::Disconnected);
    };
    match (frame.header.opcode, ServerMessage::decode(&frame)) {
        (Opcode::JoinGroup, Ok(ServerMessage::Response(Response::JoinGroupOk(_)))) => Ok(member),
        (_, Ok(ServerMessage::Error(reply))) => {
            member.armed = false;
            Err(Error::from_reply(reply, &request))
        }
        (_, Err(e)) => {
            member.conn.close(&format!("undecodable reply: {e}"));
            Err(Error::Protocol(e))
        }
        _ => Err(Error::Protocol(logbook_protocol::Error::Malformed {
            opcode: Opcode::JoinGroup,
            reason: "JoinGroup answered with something else".into(),
        })),
    }
}

/// A consumer of a group: [`GroupConsumer::next`] yields deliveries;
/// settle each with [`GroupConsumer::ack`], [`GroupConsumer::nack`], or
/// keep it with [`GroupConsumer::extend`]. Dropping it leaves the group
/// (what it held goes to the other consumers).
pub struct GroupConsumer {
    client: Client,
    group: String,
    window: u32,
    member: Option<Member>,
    queue: VecDeque<GroupDelivery>,
    ended: bool,
    /// Failed joins in a row (kept across cancelled `next` calls, so that
    /// a caller racing `next` against a timeout still backs off and gives
    /// up under the policy).
    failures: u32,
}

impl GroupConsumer {
    /// The next delivery; `None` once the membership is over (the group
    /// was deleted: the last item was its error). Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<GroupDelivery>> {
        loop {
            if let Some(member) = &mut self.member
                && !member.conn.is_open()
            {
                // Lost with its connection: see below.
                member.armed = false;
                self.member = None;
                self.queue.clear();
            }
            if let Some(d) = self.queue.pop_front() {
                return Some(Ok(d));
            }
            if self.ended {
                return None;
            }
            let Some(member) = &mut self.member else {
                // Join again, under the resubscribe policy.
                let policy = self.client.options().resubscribe;
                if self.failures > 0 {
                    tokio::time::sleep(policy.delay(self.failures)).await;
                }
                match join_once(&self.client, &self.group, self.window).await {
                    Ok(m) => {
                        debug!(group = %self.group, "joined the group again");
                        self.failures = 0;
                        self.member = Some(m);
                    }
                    Err(e) if e.is_retryable() && self.failures + 1 < policy.max_attempts => {
                        // A cluster follower names the leader, which runs
                        // the groups.
                        self.client.redirected(&e).await;
                        self.failures += 1;
                    }
                    Err(e) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                }
                continue;
            };
            let Some(frame) = member.frames.recv().await else {
                // The connection is gone, and the membership with it: what
                // it still queued is being given to other consumers (and
                // comes again to this one if it is next); handing it out
                // now could let two consumers work on one event of a
                // stream at once.
                member.armed = false;
                self.member = None;
                self.queue.clear();
                continue;
            };
            match ServerMessage::decode(&frame) {
                Ok(ServerMessage::GroupPush(GroupPush::Events {
                    events,
                    ids,
                    deliveries,
                })) => {
                    for ((event, id), deliveries) in events.into_iter().zip(ids).zip(deliveries) {
                        self.queue.push_back(GroupDelivery {
                            event,
                            id,
                            deliveries,
                        });
                    }
                }
                Ok(ServerMessage::GroupPush(GroupPush::Ended { code, message })) => {
                    member.armed = false;
                    if code == ErrorCode::ShuttingDown {
                        member.conn.close("server is shutting down");
                        self.member = None;
                        self.queue.clear();
                        continue;
                    }
                    if code == ErrorCode::NotLeader {
                        // The node no longer leads a cluster: join again,
                        // on the leader (the node names it when asked).
                        self.member = None;
                        self.queue.clear();
                        continue;
                    }
                    self.ended = true;
                    self.member = None;
                    let reply = logbook_protocol::ErrorReply::new(code, message);
                    return Some(Err(Error::from_reply(reply, &self.request())));
                }
                Ok(ServerMessage::Error(reply)) => {
                    member.armed = false;
                    self.member = None;
                    if reply.code == ErrorCode::ShuttingDown {
                        continue;
                    }
                    self.ended = true;
                    return Some(Err(Error::from_reply(reply, &self.request())));
                }
                Err(logbook_protocol::Error::UnknownPushType { tag }) => {
                    debug!(%tag, "group push of an unknown type ignored");
                }
                Ok(_) | Err(_) => {
                    member
                        .conn
                        .close("a group membership got an unexpected frame");
                    member.armed = false;
                    self.member = None;
                }
            }
        }
    }

    fn request(&self) -> Request {
        Request::JoinGroup(JoinGroup {
            group: self.group.clone(),
            window: self.window,
        })
    }

    fn send(&self, request: impl FnOnce(u32) -> Request) -> Result<()> {
        let member = self.member.as_ref().ok_or(Error::Disconnected)?;
        member.conn.send_oneway(&request(member.id), member.id)
    }

    /// Acknowledges deliveries: processed, never delivered again. Sent
    /// without waiting; lost with a broken connection, the events are then
    /// delivered again.
    pub fn ack(&self, ids: &[u64]) -> Result<()> {
        for chunk in ids.chunks(logbook_protocol::msg::groups::MAX_GROUP_IDS) {
            self.send(|subscription| {
                Request::GroupAck(GroupAck {
                    subscription,
                    ids: chunk.to_vec(),
                })
            })?;
        }
        Ok(())
    }

    /// Refuses deliveries: retry after a delay, park with a reason, or
    /// skip.
    pub fn nack(&self, ids: &[u64], action: NackAction) -> Result<()> {
        for chunk in ids.chunks(logbook_protocol::msg::groups::MAX_GROUP_IDS) {
            let action = action.clone();
            self.send(|subscription| {
                Request::GroupNack(GroupNack {
                    subscription,
                    ids: chunk.to_vec(),
                    action,
                })
            })?;
        }
        Ok(())
    }

    /// Still working on these deliveries: their ack wait starts again.
    pub fn extend(&self, ids: &[u64]) -> Result<()> {
        for chunk in ids.chunks(logbook_protocol::msg::groups::MAX_GROUP_IDS) {
            self.send(|subscription| {
                Request::GroupExtend(GroupExtend {
                    subscription,
                    ids: chunk.to_vec(),
                })
            })?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.group)
            .field("window", &self.window)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}
