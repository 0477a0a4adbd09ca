//! Messages: typed requests, responses, pushes and errors, and their
//! MessagePack bodies.
//!
//! One file per operation holds its types and body shape; this module
//! dispatches on kind and opcode. A frame's kind and opcode decide the body:
//!
//! | kind     | opcode      | body                                   |
//! |----------|-------------|----------------------------------------|
//! | Request  | any         | the request ([`Request`])              |
//! | Response | same        | its success reply ([`Response`])       |
//! | Error    | same        | [`ErrorReply`]                         |
//! | Push     | Subscribe   | [`Push`]                               |
//!
//! Bodies are maps with named fields (receivers ignore fields they do not
//! know and default optional ones that are missing), except events, which
//! are positional arrays ([`event`]).
//!
//! Encoding writes straight into the output buffer; decoding borrows from
//! the frame body, so event payloads, stream names and types are shared
//! with the read buffer rather than copied.

use bytes::BytesMut;

use crate::error::Error;
use crate::frame::{Frame, FrameHeader, Kind, Opcode};
use crate::types::{AppendResult, RecordedEvent};

pub mod append;
pub mod auth;
pub mod backup;
pub mod cluster;
pub mod credit;
pub mod delete_stream;
pub mod erase;
pub mod error_reply;
pub mod event;
pub mod get_metadata;
pub mod groups;
pub mod hello;
pub mod list_streams;
mod mp;
pub mod ping;
pub mod push;
pub mod read_all;
pub mod read_stream;
pub mod scavenge;
pub mod set_metadata;
pub mod stats;
pub mod subscribe;
pub mod truncate;
pub mod unsubscribe;
mod wire;

#[cfg(test)]
mod tests;

pub use append::Append;
pub use auth::{
    CreateToken, CreateTokenOk, Grant, ListRolesOk, ListUsersOk, NameOnly, PutUser, RevokeToken,
    Role, TokenInfo, UserInfo, WhoAmIOk,
};
pub use backup::{BackupBegin, BackupBeginOk, BackupEnd, BackupFile, BackupRead, MAX_BACKUP_READ};
pub use cluster::{AddNode, AddNodeOk, RemoveNode};
pub use credit::Credit;
pub use delete_stream::DeleteStream;
pub use erase::{Erase, EraseOk};
pub use error_reply::{ErrorCode, ErrorReply};
pub use event::{new_event_wire_len, recorded_event_wire_len};
pub use get_metadata::GetMetadata;
pub use groups::{
    CreateGroup, DeleteGroup, GroupAck, GroupExtend, GroupInfo, GroupNack, GroupPush,
    GroupSettings, GroupSource, GroupStart, GroupStrategy, JoinGroup, ListGroups, NackAction,
    UpdateGroup,
};
pub use groups::{
    DeleteParked, DeleteParkedOk, ListParked, ListParkedOk, ParkedEntry, ReplayParked,
    ReplayParkedOk,
};
pub use hello::{Hello, HelloOk};
pub use list_streams::{ListStreams, ListStreamsOk, MAX_LIST_STREAMS, StreamInfo};
pub use ping::{Ping, Pong};
pub use push::Push;
pub use read_all::{ReadAll, ReadAllOk};
pub use read_stream::{ReadStream, ReadStreamOk};
pub use scavenge::{Scavenge, ScavengeOk};
pub use set_metadata::{LifecycleOk, SetMetadata};
pub use stats::{ClusterStats, MemberStats, RecoveryStats, Stats, StatsOk};
pub use subscribe::{
    Filter, MAX_FILTER_PREFIXES, Subscribe, SubscribeFrom, SubscribeOk, SubscriptionTarget,
};
pub use truncate::Truncate;
pub use unsubscribe::Unsubscribe;
pub use wire::MAX_BODY_DEPTH;

use wire::{decode_body, encode_message, encode_raw};

/// Upper bound on the bytes of a frame that carries events (`ReadStreamOk`,
/// `ReadAllOk`, an events [`Push`]) besides the events themselves: header,
/// map, field names, other fields and the array header. A frame whose events
/// sum (by [`recorded_event_wire_len`]) to at most
/// `max_frame_bytes - EVENTS_MESSAGE_OVERHEAD` always fits.
pub const EVENTS_MESSAGE_OVERHEAD: usize = 96;

/// A request, client to server.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Request {
    /// Handshake (must come first).
    Hello(Hello),
    /// Liveness check.
    Ping(Ping),
    /// Append a batch to a stream.
    Append(Append),
    /// Read a page of a stream.
    ReadStream(ReadStream),
    /// Read a page of the global log.
    ReadAll(ReadAll),
    /// Start a subscription.
    Subscribe(Subscribe),
    /// Stop a subscription.
    Unsubscribe(Unsubscribe),
    /// Grant a subscription credit (no reply).
    Credit(Credit),
    /// The server's figures.
    Stats(Stats),
    /// Start an online backup session.
    BackupBegin(BackupBegin),
    /// Read part of a backup image.
    BackupRead(BackupRead),
    /// End a backup session.
    BackupEnd(BackupEnd),
    /// Set a stream's metadata.
    SetMetadata(SetMetadata),
    /// Read a stream's lifecycle state.
    GetMetadata(GetMetadata),
    /// Remove a stream's events below a version.
    Truncate(Truncate),
    /// Delete a stream, softly or for ever.
    DeleteStream(DeleteStream),
    /// Give back the disk that removed events take.
    Scavenge(Scavenge),
    /// Erase a stream's events from disk for good.
    Erase(Erase),
    /// A page of the stream catalog.
    ListStreams(ListStreams),
    /// Create a consumer group.
    CreateGroup(CreateGroup),
    /// Change a group's settings.
    UpdateGroup(UpdateGroup),
    /// Delete a group.
    DeleteGroup(DeleteGroup),
    /// List the groups.
    ListGroups(ListGroups),
    /// Join a group as a consumer; pushes follow.
    JoinGroup(JoinGroup),
    /// Acknowledge group events (no reply).
    GroupAck(GroupAck),
    /// Refuse group events (no reply).
    GroupNack(GroupNack),
    /// Extend group events' ack wait (no reply).
    GroupExtend(GroupExtend),
    /// A page of a group's parked events.
    ListParked(ListParked),
    /// Deliver a group's parked events again.
    ReplayParked(ReplayParked),
    /// Drop a group's parked events.
    DeleteParked(DeleteParked),
    /// Create or replace a user.
    PutUser(PutUser),
    /// Delete a user.
    DeleteUser(NameOnly),
    /// List the users.
    ListUsers,
    /// Create or replace a role.
    PutRole(Role),
    /// Delete a role.
    DeleteRole(NameOnly),
    /// List the roles.
    ListRoles,
    /// Create an API token for a user.
    CreateToken(CreateToken),
    /// Revoke a user's API token.
    RevokeToken(RevokeToken),
    /// The connection's identity and rights.
    WhoAmI,
    /// Add a node to the cluster (sent again until it votes).
    AddNode(AddNode),
    /// Remove a node from the cluster.
    RemoveNode(RemoveNode),
}

impl Request {
    /// The opcode this request travels under.
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Hello(_) => Opcode::Hello,
            Request::Ping(_) => Opcode::Ping,
            Request::Append(_) => Opcode::Append,
            Request::ReadStream(_) => Opcode::ReadStream,
            Request::ReadAll(_) => Opcode::ReadAll,
            Request::Subscribe(_) => Opcode::Subscribe,
            Request::Unsubscribe(_) => Opcode::Unsubscribe,
            Request::Credit(_) => Opcode::Credit,
            Request::Stats(_) => Opcode::Stats,
            Request::BackupBegin(_) => Opcode::BackupBegin,
            Request::BackupRead(_) => Opcode::BackupRead,
            Request::BackupEnd(_) => Opcode::BackupEnd,
            Request::SetMetadata(_) => Opcode::SetMetadata,
            Request::GetMetadata(_) => Opcode::GetMetadata,
            Request::Truncate(_) => Opcode::Truncate,
            Request::DeleteStream(_) => Opcode::DeleteStream,
            Request::Scavenge(_) => Opcode::Scavenge,
            Request::Erase(_) => Opcode::Erase,
            Request::ListStreams(_) => Opcode::ListStreams,
            Request::CreateGroup(_) => Opcode::CreateGroup,
            Request::UpdateGroup(_) => Opcode::UpdateGroup,
            Request::DeleteGroup(_) => Opcode::DeleteGroup,
            Request::ListGroups(_) => Opcode::ListGroups,
            Request::JoinGroup(_) => Opcode::JoinGroup,
            Request::GroupAck(_) => Opcode::GroupAck,
            Request::GroupNack(_) => Opcode::GroupNack,
            Request::GroupExtend(_) => Opcode::GroupExtend,
            Request::ListParked(_) => Opcode::ListParked,
            Request::ReplayParked(_) => Opcode::ReplayParked,
            Request::DeleteParked(_) => Opcode::DeleteParked,
            Request::PutUser(_) => Opcode::PutUser,
            Request::DeleteUser(_) => Opcode::DeleteUser,
            Request::ListUsers => Opcode::ListUsers,
            Request::PutRole(_) => Opcode::PutRole,
            Request::DeleteRole(_) => Opcode::DeleteRole,
            Request::ListRoles => Opcode::ListRoles,
            Request::CreateToken(_) => Opcode::CreateToken,
            Request::RevokeToken(_) => Opcode::RevokeToken,
            Request::WhoAmI => Opcode::WhoAmI,
            Request::AddNode(_) => Opcode::AddNode,
            Request::RemoveNode(_) => Opcode::RemoveNode,
        }
    }

    /// Appends this request as one frame to `dst`. On error `dst` is left as
    /// it was.
    pub fn encode(
        &self,
        dst: &mut BytesMut,
        corr_id: u32,
        max_frame_bytes: u32,
    ) -> Result<(), Error> {
        let header = FrameHeader::new(Kind::Request, self.opcode(), corr_id);
        macro_rules! enc {
            ($hint:expr, $body:expr $(,)?) => {
                encode_message(dst, &header, max_frame_bytes, $hint, &$body)
            };
        }
        match self {
            Request::Hello(m) => enc!(64 + m.client_name.len(), m.to_wire()),
            Request::Ping(m) => enc!(16, ping::NonceWire { nonce: m.nonce }),
            Request::Append(m) => {
                let (min, slack) = m.body_len();
                encode_raw(dst, &header, max_frame_bytes, min, slack, |b| m.put_body(b))
            }
            Request::ReadStream(m) => enc!(64 + m.stream.len(), m.to_wire()),
            Request::ReadAll(m) => enc!(48, m.to_wire()),
            Request::Subscribe(m) => enc!(128, m.to_wire()),
            Request::Unsubscribe(m) => enc!(
                24,
                unsubscribe::UnsubscribeWire {
                    subscription: m.subscription,
                },
            ),
            Request::Credit(m) => enc!(
                32,
                credit::CreditWire {
                    subscription: m.subscription,
                    events: m.events,
                },
            ),
            Request::Stats(_) => enc!(1, stats::StatsWire {}),
            Request::BackupBegin(_) => enc!(1, unsubscribe::EmptyWire {}),
            Request::BackupRead(m) => enc!(
                40,
                backup::BackupReadWire {
                    backup: m.backup,
                    file: m.file,
                    offset: m.offset,
                    len: m.len,
                },
            ),
            Request::BackupEnd(m) => enc!(16, backup::BackupEndWire { backup: m.backup }),
            Request::SetMetadata(m) => {
                let json = m.metadata_json();
                enc!(64 + m.stream.len() + json.len(), m.to_wire(&json))
            }
            Request::GetMetadata(m) => enc!(16 + m.stream.len(), m.to_wire()),
            Request::Truncate(m) => enc!(32 + m.stream.len(), m.to_wire()),
            Request::DeleteStream(m) => enc!(48 + m.stream.len(), m.to_wire()),
            Request::Scavenge(m) => enc!(32, m.to_wire()),
            Request::Erase(m) => enc!(16 + m.stream.len(), m.to_wire()),
            Request::ListStreams(m) => enc!(
                32 + m.prefix.len() + m.after.as_ref().map_or(0, |a| a.len()),
                m.to_wire(),
            ),
            Request::CreateGroup(m) => enc!(256 + m.group.len(), m.to_wire()),
            Request::UpdateGroup(m) => enc!(128 + m.group.len(), m.to_wire()),
            Request::DeleteGroup(m) => enc!(
                16 + m.group.len(),
                groups::GroupNameWire {
                    group: m.group.clone()
                },
            ),
            Request::ListGroups(_) => enc!(1, unsubscribe::EmptyWire {}),
            Request::JoinGroup(m) => enc!(
                32 + m.group.len(),
                groups::JoinGroupWire {
                    group: m.group.clone(),
                    window: m.window,
                },
            ),
            Request::GroupAck(m) => enc!(
                32 + m.ids.len() * 9,
                groups::ids_out(m.subscription, &m.ids)
            ),
            Request::GroupExtend(m) => enc!(
                32 + m.ids.len() * 9,
                groups::ids_out(m.subscription, &m.ids)
            ),
            Request::GroupNack(m) => enc!(96 + m.ids.len() * 9, m.to_wire()),
            Request::ListParked(m) => enc!(
                48 + m.group.len(),
                groups::ListParkedWire {
                    group: m.group.clone(),
                    after: m.after,
                    limit: m.limit,
                },
            ),
            Request::ReplayParked(m) => enc!(32 + m.group.len(), m),
            Request::DeleteParked(m) => enc!(16 + m.group.len(), m),
            Request::PutUser(m) => enc!(auth::size_hint(m), m),
            Request::DeleteUser(m) => enc!(auth::size_hint(m), m),
            Request::ListUsers => enc!(1, unsubscribe::EmptyWire {}),
            Request::PutRole(m) => enc!(auth::size_hint(m), m),
            Request::DeleteRole(m) => enc!(auth::size_hint(m), m),
            Request::ListRoles => enc!(1, unsubscribe::EmptyWire {}),
            Request::CreateToken(m) => enc!(auth::size_hint(m), m),
            Request::RevokeToken(m) => enc!(auth::size_hint(m), m),
            Request::WhoAmI => enc!(1, unsubscribe::EmptyWire {}),
            Request::AddNode(m) => enc!(cluster::size_hint(m), m),
            Request::RemoveNode(m) => enc!(16, m),
        }
    }

    /// Decodes a Request frame. Event payloads, stream names and types share
    /// `frame.body`'s memory.
    pub fn decode(frame: &Frame) -> Result<Request, Error> {
        let (op, body) = (frame.header.opcode, &frame.body);
        expect_kind(frame, Kind::Request)?;
        Ok(match op {
            Opcode::Hello => Request::Hello(Hello::from_wire(decode_body(body, op)?)),
            Opcode::Ping => Request::Ping(Ping {
                nonce: decode_body::<ping::NonceWire>(body, op)?.nonce,
            }),
            Opcode::Append => Request::Append(Append::read_body(body)?),
            Opcode::ReadStream => {
                Request::ReadStream(ReadStream::from_wire(decode_body(body, op)?, body))
            }
            Opcode::ReadAll => Request::ReadAll(ReadAll::from_wire(decode_body(body, op)?)),
            Opcode::Subscribe => {
                Request::Subscribe(Subscribe::from_wire(decode_body(body, op)?, body)?)
            }
            Opcode::Unsubscribe => Request::Unsubscribe(Unsubscribe {
                subscription: decode_body::<unsubscribe::UnsubscribeWire>(body, op)?.subscription,
            }),
            Opcode::Credit => {
                let w: credit::CreditWire = decode_body(body, op)?;
                Request::Credit(Credit {
                    subscription: w.subscription,
                    events: w.events,
                })
            }
            Opcode::Stats => {
                decode_body::<stats::StatsWire>(body, op)?;
                Request::Stats(Stats)
            }
            Opcode::BackupBegin => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Request::BackupBegin(BackupBegin)
            }
            Opcode::BackupRead => {
                let w: backup::BackupReadWire = decode_body(body, op)?;
                Request::BackupRead(BackupRead {
                    backup: w.backup,
                    file: w.file,
                    offset: w.offset,
                    len: w.len,
                })
            }
            Opcode::BackupEnd => Request::BackupEnd(BackupEnd {
                backup: decode_body::<backup::BackupEndWire>(body, op)?.backup,
            }),
            Opcode::SetMetadata => {
                Request::SetMetadata(SetMetadata::from_wire(decode_body(body, op)?, body)?)
            }
            Opcode::GetMetadata => {
                Request::GetMetadata(GetMetadata::from_wire(decode_body(body, op)?, body))
            }
            Opcode::Truncate => {
                Request::Truncate(Truncate::from_wire(decode_body(body, op)?, body))
            }
            Opcode::DeleteStream => {
                Request::DeleteStream(DeleteStream::from_wire(decode_body(body, op)?, body))
            }
            Opcode::Scavenge => Request::Scavenge(Scavenge::from_wire(decode_body(body, op)?)?),
            Opcode::Erase => Request::Erase(Erase::from_wire(decode_body(body, op)?, body)),
            Opcode::ListStreams => {
                Request::ListStreams(ListStreams::from_wire(decode_body(body, op)?, body))
            }
            Opcode::CreateGroup => {
                Request::CreateGroup(CreateGroup::from_wire(decode_body(body, op)?)?)
            }
            Opcode::UpdateGroup => {
                Request::UpdateGroup(UpdateGroup::from_wire(decode_body(body, op)?)?)
            }
            Opcode::DeleteGroup => Request::DeleteGroup(DeleteGroup {
                group: decode_body::<groups::GroupNameWire>(body, op)?.group,
            }),
            Opcode::ListGroups => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Request::ListGroups(ListGroups)
            }
            Opcode::JoinGroup => {
                let w: groups::JoinGroupWire = decode_body(body, op)?;
                Request::JoinGroup(JoinGroup {
                    group: w.group,
                    window: w.window,
                })
            }
            Opcode::GroupAck => {
                let w = groups::read_ids(body, op)?;
                Request::GroupAck(GroupAck {
                    subscription: w.subscription,
                    ids: w.ids,
                })
            }
            Opcode::GroupExtend => {
                let w = groups::read_ids(body, op)?;
                Request::GroupExtend(GroupExtend {
                    subscription: w.subscription,
                    ids: w.ids,
                })
            }
            Opcode::GroupNack => Request::GroupNack(groups::read_ids(body, op)?.into_nack()?),
            Opcode::ListParked => {
                let w: groups::ListParkedWire = decode_body(body, op)?;
                Request::ListParked(ListParked {
                    group: w.group,
                    after: w.after,
                    limit: w.limit,
                })
            }
            Opcode::ReplayParked => Request::ReplayParked(decode_body(body, op)?),
            Opcode::DeleteParked => Request::DeleteParked(decode_body(body, op)?),
            Opcode::PutUser => Request::PutUser(decode_body(body, op)?),
            Opcode::DeleteUser => Request::DeleteUser(decode_body(body, op)?),
            Opcode::ListUsers => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Request::ListUsers
            }
            Opcode::PutRole => Request::PutRole(decode_body(body, op)?),
            Opcode::DeleteRole => Request::DeleteRole(decode_body(body, op)?),
            Opcode::ListRoles => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Request::ListRoles
            }
            Opcode::CreateToken => Request::CreateToken(decode_body(body, op)?),
            Opcode::RevokeToken => Request::RevokeToken(decode_body(body, op)?),
            Opcode::WhoAmI => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Request::WhoAmI
            }
            Opcode::AddNode => Request::AddNode(decode_body(body, op)?),
            Opcode::RemoveNode => Request::RemoveNode(decode_body(body, op)?),
        })
    }
}

/// A successful reply, server to client; it carries its request's opcode and
/// `corr_id`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Response {
    /// Reply to `Hello`.
    HelloOk(HelloOk),
    /// Reply to `Ping`.
    Pong(Pong),
    /// Reply to `Append`.
    AppendOk(AppendResult),
    /// Reply to `ReadStream`.
    ReadStreamOk(ReadStreamOk),
    /// Reply to `ReadAll`.
    ReadAllOk(ReadAllOk),
    /// Reply to `Subscribe`; pushes follow.
    SubscribeOk(SubscribeOk),
    /// Reply to `Unsubscribe`; no push follows.
    UnsubscribeOk,
    /// Reply to `Stats`.
    StatsOk(Box<StatsOk>),
    /// Reply to `BackupBegin`.
    BackupBeginOk(BackupBeginOk),
    /// Reply to `BackupRead`: the bytes.
    BackupReadOk(bytes::Bytes),
    /// Reply to `BackupEnd`.
    BackupEndOk,
    /// Reply to `SetMetadata`.
    SetMetadataOk(LifecycleOk),
    /// Reply to `GetMetadata`: the latest lifecycle operation, `None` if
    /// the stream never had one.
    GetMetadataOk(Option<LifecycleOk>),
    /// Reply to `Truncate`.
    TruncateOk(LifecycleOk),
    /// Reply to `DeleteStream`.
    DeleteStreamOk(LifecycleOk),
    /// Reply to `Scavenge`.
    ScavengeOk(ScavengeOk),
    /// Reply to `Erase`.
    EraseOk(EraseOk),
    /// Reply to `ListStreams`.
    ListStreamsOk(ListStreamsOk),
    /// Reply to `CreateGroup`.
    CreateGroupOk(Box<GroupInfo>),
    /// Reply to `UpdateGroup`.
    UpdateGroupOk(Box<GroupInfo>),
    /// Reply to `DeleteGroup`.
    DeleteGroupOk,
    /// Reply to `ListGroups`.
    ListGroupsOk(Vec<GroupInfo>),
    /// Reply to `JoinGroup`; pushes follow.
    JoinGroupOk(Box<GroupInfo>),
    /// Reply to `ListParked`.
    ListParkedOk(ListParkedOk),
    /// Reply to `ReplayParked`.
    ReplayParkedOk(ReplayParkedOk),
    /// Reply to `DeleteParked`.
    DeleteParkedOk(DeleteParkedOk),
    /// Reply to `PutUser`.
    PutUserOk(Box<UserInfo>),
    /// Reply to `DeleteUser`.
    DeleteUserOk,
    /// Reply to `ListUsers`.
    ListUsersOk(ListUsersOk),
    /// Reply to `PutRole`.
    PutRoleOk(Box<Role>),
    /// Reply to `DeleteRole`.
    DeleteRoleOk,
    /// Reply to `ListRoles`.
    ListRolesOk(ListRolesOk),
    /// Reply to `CreateToken`.
    CreateTokenOk(CreateTokenOk),
    /// Reply to `RevokeToken`.
    RevokeTokenOk,
    /// Reply to `WhoAmI`.
    WhoAmIOk(Box<WhoAmIOk>),
    /// Reply to `AddNode`.
    AddNodeOk(AddNodeOk),
    /// Reply to `RemoveNode`.
    RemoveNodeOk,
}

impl Response {
    /// The opcode this response travels under (its request's).
    pub fn opcode(&self) -> Opcode {
        match self {
            Response::HelloOk(_) => Opcode::Hello,
            Response::Pong(_) => Opcode::Ping,
            Response::AppendOk(_) => Opcode::Append,
            Response::ReadStreamOk(_) => Opcode::ReadStream,
            Response::ReadAllOk(_) => Opcode::ReadAll,
            Response::SubscribeOk(_) => Opcode::Subscribe,
            Response::UnsubscribeOk => Opcode::Unsubscribe,
            Response::StatsOk(_) => Opcode::Stats,
            Response::BackupBeginOk(_) => Opcode::BackupBegin,
            Response::BackupReadOk(_) => Opcode::BackupRead,
            Response::BackupEndOk => Opcode::BackupEnd,
            Response::SetMetadataOk(_) => Opcode::SetMetadata,
            Response::GetMetadataOk(_) => Opcode::GetMetadata,
            Response::TruncateOk(_) => Opcode::Truncate,
            Response::DeleteStreamOk(_) => Opcode::DeleteStream,
            Response::ScavengeOk(_) => Opcode::Scavenge,
            Response::EraseOk(_) => Opcode::Erase,
            Response::ListStreamsOk(_) => Opcode::ListStreams,
            Response::CreateGroupOk(_) => Opcode::CreateGroup,
            Response::UpdateGroupOk(_) => Opcode::UpdateGroup,
            Response::DeleteGroupOk => Opcode::DeleteGroup,
            Response::ListGroupsOk(_) => Opcode::ListGroups,
            Response::JoinGroupOk(_) => Opcode::JoinGroup,
            Response::ListParkedOk(_) => Opcode::ListParked,
            Response::ReplayParkedOk(_) => Opcode::ReplayParked,
            Response::DeleteParkedOk(_) => Opcode::DeleteParked,
            Response::PutUserOk(_) => Opcode::PutUser,
            Response::DeleteUserOk => Opcode::DeleteUser,
            Response::ListUsersOk(_) => Opcode::ListUsers,
            Response::PutRoleOk(_) => Opcode::PutRole,
            Response::DeleteRoleOk => Opcode::DeleteRole,
            Response::ListRolesOk(_) => Opcode::ListRoles,
            Response::CreateTokenOk(_) => Opcode::CreateToken,
            Response::RevokeTokenOk => Opcode::RevokeToken,
            Response::WhoAmIOk(_) => Opcode::WhoAmI,
            Response::AddNodeOk(_) => Opcode::AddNode,
            Response::RemoveNodeOk => Opcode::RemoveNode,
        }
    }

    /// Appends this response as one frame (with [`crate::Flags::END`]) to
    /// `dst`, answering the request `corr_id`. On error `dst` is left as it
    /// was.
    pub fn encode(
        &self,
        dst: &mut BytesMut,
        corr_id: u32,
        max_frame_bytes: u32,
    ) -> Result<(), Error> {
        let header = FrameHeader::new(Kind::Response, self.opcode(), corr_id);
        macro_rules! enc {
            ($hint:expr, $body:expr $(,)?) => {
                encode_message(dst, &header, max_frame_bytes, $hint, &$body)
            };
        }
        match self {
            Response::HelloOk(m) => enc!(160 + m.server_version.len(), m.to_wire()),
            Response::Pong(m) => enc!(16, ping::NonceWire { nonce: m.nonce }),
            Response::AppendOk(m) => enc!(96, append::AppendOkWire::from(m)),
            Response::ReadStreamOk(m) => {
                let (min, slack) = m.body_len();
                encode_raw(dst, &header, max_frame_bytes, min, slack, |b| m.put_body(b))
            }
            Response::ReadAllOk(m) => {
                let (min, slack) = m.body_len();
                encode_raw(dst, &header, max_frame_bytes, min, slack, |b| m.put_body(b))
            }
            Response::SubscribeOk(m) => enc!(16, m.to_wire()),
            Response::UnsubscribeOk => enc!(1, unsubscribe::EmptyWire {}),
            Response::StatsOk(m) => enc!(1024, m),
            Response::BackupBeginOk(m) => enc!(
                64 + m.manifest.len() + m.files.iter().map(|f| 48 + f.name.len()).sum::<usize>(),
                m.to_wire(),
            ),
            Response::BackupReadOk(data) => enc!(
                16 + data.len(),
                backup::BackupReadOkWire { data: data.clone() },
            ),
            Response::BackupEndOk => enc!(1, unsubscribe::EmptyWire {}),
            Response::SetMetadataOk(m) | Response::TruncateOk(m) | Response::DeleteStreamOk(m) => {
                let state = m.state_json();
                enc!(48 + state.len(), m.to_wire(&state))
            }
            Response::GetMetadataOk(m) => {
                let state = m.as_ref().map(LifecycleOk::state_json);
                enc!(
                    48 + state.as_ref().map_or(0, String::len),
                    get_metadata::get_metadata_ok_wire(m.as_ref(), state.as_deref()),
                )
            }
            Response::ScavengeOk(m) => enc!(160, m),
            Response::EraseOk(m) => enc!(128, m.to_wire()),
            Response::ListStreamsOk(m) => enc!(m.size_hint(), m.to_wire()),
            Response::CreateGroupOk(m) | Response::UpdateGroupOk(m) | Response::JoinGroupOk(m) => {
                enc!(m.size_hint(), m.to_wire())
            }
            Response::DeleteGroupOk => enc!(1, unsubscribe::EmptyWire {}),
            Response::ListParkedOk(m) => enc!(
                32 + m
                    .entries
                    .iter()
                    .map(|e| 128 + e.stream.len() + e.reason.len())
                    .sum::<usize>(),
                m,
            ),
            Response::ReplayParkedOk(m) => enc!(32, m),
            Response::DeleteParkedOk(m) => enc!(24, m),
            Response::PutUserOk(m) => enc!(auth::size_hint(&**m), m),
            Response::DeleteUserOk => enc!(1, unsubscribe::EmptyWire {}),
            Response::ListUsersOk(m) => enc!(auth::size_hint(m), m),
            Response::PutRoleOk(m) => enc!(auth::size_hint(&**m), m),
            Response::DeleteRoleOk => enc!(1, unsubscribe::EmptyWire {}),
            Response::ListRolesOk(m) => enc!(auth::size_hint(m), m),
            Response::CreateTokenOk(m) => enc!(auth::size_hint(m), m),
            Response::RevokeTokenOk => enc!(1, unsubscribe::EmptyWire {}),
            Response::WhoAmIOk(m) => enc!(auth::size_hint(&**m), m),
            Response::AddNodeOk(m) => enc!(24, m),
            Response::RemoveNodeOk => enc!(1, unsubscribe::EmptyWire {}),
            Response::ListGroupsOk(m) => enc!(
                16 + m.iter().map(GroupInfo::size_hint).sum::<usize>(),
                groups::ListGroupsOkOut {
                    groups: m.iter().map(GroupInfo::to_wire).collect(),
                },
            ),
        }
    }

    /// Decodes a Response frame (see [`Request::decode`] on sharing).
    pub fn decode(frame: &Frame) -> Result<Response, Error> {
        let (op, body) = (frame.header.opcode, &frame.body);
        expect_kind(frame, Kind::Response)?;
        Ok(match op {
            Opcode::Hello => Response::HelloOk(HelloOk::from_wire(decode_body(body, op)?)),
            Opcode::Ping => Response::Pong(Pong {
                nonce: decode_body::<ping::NonceWire>(body, op)?.nonce,
            }),
            Opcode::Append => {
                Response::AppendOk(decode_body::<append::AppendOkWire>(body, op)?.into())
            }
            Opcode::ReadStream => Response::ReadStreamOk(ReadStreamOk::read_body(body)?),
            Opcode::ReadAll => Response::ReadAllOk(ReadAllOk::read_body(body)?),
            Opcode::Subscribe => {
                Response::SubscribeOk(SubscribeOk::from_wire(decode_body(body, op)?))
            }
            Opcode::Unsubscribe => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Response::UnsubscribeOk
            }
            Opcode::Stats => Response::StatsOk(Box::new(decode_body(body, op)?)),
            Opcode::BackupBegin => {
                Response::BackupBeginOk(BackupBeginOk::from_wire(decode_body(body, op)?))
            }
            Opcode::BackupRead => {
                Response::BackupReadOk(decode_body::<backup::BackupReadOkWire>(body, op)?.data)
            }
            Opcode::BackupEnd => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Response::BackupEndOk
            }
            Opcode::SetMetadata => {
                Response::SetMetadataOk(LifecycleOk::from_wire(decode_body(body, op)?, op)?)
            }
            Opcode::GetMetadata => Response::GetMetadataOk(
                get_metadata::get_metadata_ok_from_wire(decode_body(body, op)?)?,
            ),
            Opcode::Truncate => {
                Response::TruncateOk(LifecycleOk::from_wire(decode_body(body, op)?, op)?)
            }
            Opcode::DeleteStream => {
                Response::DeleteStreamOk(LifecycleOk::from_wire(decode_body(body, op)?, op)?)
            }
            Opcode::Scavenge => Response::ScavengeOk(decode_body(body, op)?),
            Opcode::Erase => Response::EraseOk(EraseOk::from_wire(decode_body(body, op)?)),
            Opcode::ListStreams => {
                Response::ListStreamsOk(ListStreamsOk::from_wire(decode_body(body, op)?)?)
            }
            Opcode::CreateGroup => {
                Response::CreateGroupOk(Box::new(GroupInfo::from_wire(decode_body(body, op)?, op)?))
            }
            Opcode::UpdateGroup => {
                Response::UpdateGroupOk(Box::new(GroupInfo::from_wire(decode_body(body, op)?, op)?))
            }
            Opcode::JoinGroup => {
                Response::JoinGroupOk(Box::new(GroupInfo::from_wire(decode_body(body, op)?, op)?))
            }
            Opcode::DeleteGroup => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Response::DeleteGroupOk
            }
            Opcode::ListGroups => {
                let w: groups::ListGroupsOkIn = decode_body(body, op)?;
                Response::ListGroupsOk(
                    w.groups
                        .into_iter()
                        .map(|g| GroupInfo::from_wire(g, op))
                        .collect::<Result<_, _>>()?,
                )
            }
            Opcode::ListParked => Response::ListParkedOk(decode_body(body, op)?),
            Opcode::ReplayParked => Response::ReplayParkedOk(decode_body(body, op)?),
            Opcode::DeleteParked => Response::DeleteParkedOk(decode_body(body, op)?),
            Opcode::PutUser => Response::PutUserOk(Box::new(decode_body(body, op)?)),
            Opcode::DeleteUser => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Response::DeleteUserOk
            }
            Opcode::ListUsers => Response::ListUsersOk(decode_body(body, op)?),
            Opcode::PutRole => Response::PutRoleOk(Box::new(decode_body(body, op)?)),
            Opcode::DeleteRole => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Response::DeleteRoleOk
            }
            Opcode::ListRoles => Response::ListRolesOk(decode_body(body, op)?),
            Opcode::CreateToken => Response::CreateTokenOk(decode_body(body, op)?),
            Opcode::RevokeToken => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Response::RevokeTokenOk
            }
            Opcode::WhoAmI => Response::WhoAmIOk(Box::new(decode_body(body, op)?)),
            Opcode::AddNode => Response::AddNodeOk(decode_body(body, op)?),
            Opcode::RemoveNode => {
                decode_body::<unsubscribe::EmptyWire>(body, op)?;
                Response::RemoveNodeOk
            }
            Opcode::Credit | Opcode::GroupAck | Opcode::GroupNack | Opcode::GroupExtend => {
                return Err(unexpected(frame, Kind::Response));
            }
        })
    }
}

impl Push {
    /// Appends this push as one frame to `dst`, for the subscription started
    /// by the Subscribe request `subscription`. On error `dst` is left as it
    /// was.
    pub fn encode(
        &self,
        dst: &mut BytesMut,
        subscription: u32,
        max_frame_bytes: u32,
    ) -> Result<(), Error> {
        let header = FrameHeader::new(Kind::Push, Opcode::Subscribe, subscription);
        let (min, slack) = self.body_len();
        encode_raw(dst, &header, max_frame_bytes, min, slack, |b| {
            self.put_body(b)
        })
    }

    /// Appends an events push over borrowed events: the subscription loop's
    /// fast path, which needs no `Push` (and no owned `Vec`). Fails with
    /// [`Error::TooLarge`] before writing anything if the events cannot fit;
    /// size batches with [`recorded_event_wire_len`] and
    /// [`EVENTS_MESSAGE_OVERHEAD`].
    /// `from` is the push's [`Push::Events`] `from`.
    pub fn encode_events(
        dst: &mut BytesMut,
        subscription: u32,
        events: &[RecordedEvent],
        from: Option<u64>,
        max_frame_bytes: u32,
    ) -> Result<(), Error> {
        let header = FrameHeader::new(Kind::Push, Opcode::Subscribe, subscription);
        let (min, slack) = push::events_body_len(events);
        encode_raw(dst, &header, max_frame_bytes, min, slack, |b| {
            push::put_events_body(b, events, from)
        })
    }

    /// Decodes a Push frame (see [`Request::decode`] on sharing). A push
    /// with an unknown `t` fails with [`Error::UnknownPushType`], which a
    /// client may log and skip.
    pub fn decode(frame: &Frame) -> Result<Push, Error> {
        expect_kind(frame, Kind::Push)?;
        if frame.header.opcode != Opcode::Subscribe {
            return Err(unexpected(frame, Kind::Push));
        }
        Push::read_body(&frame.body)
    }
}

impl GroupPush {
    /// Appends this push as one frame to `dst`, for the consumer that
    /// joined with the request `subscription`. On error `dst` is left as it
    /// was.
    pub fn encode(
        &self,
        dst: &mut BytesMut,
        subscription: u32,
        max_frame_bytes: u32,
    ) -> Result<(), Error> {
        let header = FrameHeader::new(Kind::Push, Opcode::JoinGroup, subscription);
        let (min, slack) = self.body_len();
        encode_raw(dst, &header, max_frame_bytes, min, slack, |b| {
            self.put_body(b)
        })
    }

    /// Decodes a group's Push frame.
    pub fn decode(frame: &Frame) -> Result<GroupPush, Error> {
        expect_kind(frame, Kind::Push)?;
        if frame.header.opcode != Opcode::JoinGroup {
            return Err(unexpected(frame, Kind::Push));
        }
        GroupPush::read_body(&frame.body)
    }
}

impl ErrorReply {
    /// Appends this error as one frame (with [`crate::Flags::END`]) to
    /// `dst`, answering the request `corr_id` made with `opcode`. On error
    /// `dst` is left as it was.
    pub fn encode(
        &self,
        dst: &mut BytesMut,
        opcode: Opcode,
        corr_id: u32,
        max_frame_bytes: u32,
    ) -> Result<(), Error> {
        let header = FrameHeader::new(Kind::Error, opcode, corr_id);
        encode_message(
            dst,
            &header,
            max_frame_bytes,
            self.size_hint(),
            &self.to_wire(),
        )
    }

    /// Decodes an Error frame, whatever its opcode.
    pub fn decode(frame: &Frame) -> Result<ErrorReply, Error> {
        expect_kind(frame, Kind::Error)?;
        let w = decode_body(&frame.body, frame.header.opcode)?;
        Ok(ErrorReply::from_wire(w, &frame.body))
    }
}

/// Anything a server sends: what a client's read loop decodes.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerMessage {
    /// A successful reply.
    Response(Response),
    /// A subscription push.
    Push(Push),
    /// A consumer group's push.
    GroupPush(GroupPush),
    /// A failed reply.
    Error(ErrorReply),
}

impl ServerMessage {
    /// Decodes a Response, Push or Error frame; a Request frame is
    /// [`Error::UnexpectedFrame`].
    pub fn decode(frame: &Frame) -> Result<ServerMessage, Error> {
        match frame.header.kind {
            Kind::Response => Response::decode(frame).map(ServerMessage::Response),
            Kind::Push if frame.header.opcode == Opcode::JoinGroup => {
                GroupPush::decode(frame).map(ServerMessage::GroupPush)
            }
            Kind::Push => Push::decode(frame).map(ServerMessage::Push),
            Kind::Error => ErrorReply::decode(frame).map(ServerMessage::Error),
            Kind::Request => Err(unexpected(frame, Kind::Response)),
        }
    }
}

fn expect_kind(frame: &Frame, expected: Kind) -> Result<(), Error> {
    if frame.header.kind == expected {
        Ok(())
    } else {
        Err(unexpected(frame, expected))
    }
}

fn unexpected(frame: &Frame, expected: Kind) -> Error {
    Error::UnexpectedFrame {
        expected,
        kind: frame.header.kind,
        opcode: frame.header.opcode,
    }
}
