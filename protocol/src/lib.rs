//! # logbook-protocol
//!
//! The Logbook wire protocol: domain types, frames, messages and the codec.
//! This crate does no I/O of its own; the server and the client wrap its
//! codec around their sockets. `PROTOCOL.md` (beside this crate's
//! `Cargo.toml`) specifies the bytes for implementers in other languages.
//!
//! ## Layout
//! - [`types`]: domain types shared by every crate (`StreamVersion`,
//!   `LogPosition`, `ExpectedVersion`, `NewEvent`, `RecordedEvent`, ...).
//! - [`frame`]: the 20-byte frame header, its crc32c, and [`FrameCodec`], the
//!   `tokio_util` codec that cuts a byte stream into [`Frame`]s without
//!   copying bodies.
//! - [`msg`]: typed messages ([`Request`], [`Response`], [`Push`],
//!   [`ErrorReply`]) and their MessagePack bodies, one file per operation
//!   (the stream lifecycle's in `set_metadata`, `get_metadata`, `truncate`
//!   and `delete_stream`, their JSON parsed while decoding; giving disk
//!   back in `scavenge` and `erase`); events travel as compact positional
//!   arrays (`msg::event`).
//! - `fuzzing`: entry points shared by the fuzz targets and the bounded
//!   property tests that stand in for them in `cargo test`.
//! - [`error`]: [`Error`], split into fatal frame errors and per-message
//!   errors ([`Error::is_fatal`]).
//! - [`layout`]: the data directory's file and directory names, shared by
//!   the engine, its backup image and the client's backup (the backup
//!   protocol carries these names).
//! - [`lifecycle`]: stream metadata, truncation and deletion: the
//!   `$$stream` convention and which events are live (the types the
//!   lifecycle messages carry).
//! - [`le`]: panic-free little-endian field reads, shared by the frame
//!   codec and the engine's on-disk formats.
//!
//! ## The path of a message
//! Client: `Request::encode` writes a whole frame into the output buffer.
//! Server: `FrameCodec` decodes a [`Frame`] once it is fully buffered and its
//! crc checks out; `Request::decode` turns the body into a [`Request`] whose
//! payloads share the read buffer. Replies and pushes take the same path
//! back, decoded by [`ServerMessage::decode`].

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod layout;
pub mod le;
pub mod lifecycle;
pub mod msg;
pub mod types;

pub use error::Error;
pub use frame::{
    DEFAULT_MAX_FRAME_BYTES, Flags, Frame, FrameCodec, FrameHeader, HEADER_LEN, Kind, Opcode,
    PROTOCOL_VERSION, SharedFrame,
};
pub use msg::auth;
pub use msg::{AddNode, AddNodeOk, RemoveNode};
pub use msg::{
    Append, BackupBegin, BackupBeginOk, BackupEnd, BackupFile, BackupRead, ClusterStats, Credit,
    DeleteStream, Erase, EraseOk, ErrorCode, ErrorReply, Filter, GetMetadata, Hello, HelloOk,
    LifecycleOk, ListStreams, ListStreamsOk, MAX_FILTER_PREFIXES, MAX_LIST_STREAMS, MemberStats,
    Ping, Pong, Push, ReadAll, ReadAllOk, ReadStream, ReadStreamOk, RecoveryStats, Request,
    Response, Scavenge, ScavengeOk, ServerMessage, SetMetadata, Stats, StatsOk, StreamInfo,
    Subscribe, SubscribeFrom, SubscribeOk, SubscriptionTarget, Truncate, Unsubscribe,
};
pub use msg::{
    CreateGroup, DeleteGroup, GroupAck, GroupExtend, GroupInfo, GroupNack, GroupPush,
    GroupSettings, GroupSource, GroupStart, GroupStrategy, JoinGroup, ListGroups, NackAction,
    UpdateGroup,
};
pub use msg::{
    CreateToken, CreateTokenOk, Grant, ListRolesOk, ListUsersOk, NameOnly, PutUser, RevokeToken,
    Role, TokenInfo, UserInfo, WhoAmIOk,
};
pub use msg::{
    DeleteParked, DeleteParkedOk, ListParked, ListParkedOk, ParkedEntry, ReplayParked,
    ReplayParkedOk,
};
pub use types::*;
