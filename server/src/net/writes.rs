//! Writes through a cluster's replicated log: proposing a command (on the
//! leader; a follower refuses with `NotLeader` and the leader's address)
//! and reading its outcome as the engine's own answer, for the connections'
//! appends and lifecycle changes; and [`SystemLog`], the writes of the
//! server's own system streams (the users document), which go straight to
//! the engine on a single server and through the replicated log on a
//! cluster, so that every node holds them and answers logins alike.

use std::sync::Arc;

use logbook_consensus::node::{Node, ProposeError};
use logbook_consensus::{Command, EventData, LifecycleChange, Outcome};
use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
use logbook_protocol::{
    AppendResult, ErrorCode, ErrorReply, EventId, ExpectedVersion, LogPosition, NewEvent,
    StreamName, StreamVersion,
};
use logbook_storage::{AppendError, Store};

use crate::net::errors::append_error;

/// Writes of system streams: to the engine, or through the cluster's log
/// when the server is a cluster node.
pub(crate) struct SystemLog {
    store: Store,
    cluster: Option<Arc<Node>>,
}

impl SystemLog {
    pub(crate) fn new(store: Store, cluster: Option<Arc<Node>>) -> SystemLog {
        SystemLog { store, cluster }
    }

    /// The node's store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The cluster node, if the server is one.
    pub(crate) fn cluster(&self) -> Option<&Arc<Node>> {
        self.cluster.as_ref()
    }

    /// Appends `events` to `stream` if it is at `expected`; on a cluster,
    /// answered once a quorum holds them and this node applied them.
    pub(crate) async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, Box<ErrorReply>> {
        let Some(node) = &self.cluster else {
            return self
                .store
                .append(stream, expected, events)
                .await
                .map_err(|e| Box::new(append_error(&e)));
        };
        let command = Command::Append {
            stream: stream.as_str().to_owned(),
            expected,
            events: events.into_iter().map(EventData::from).collect(),
            timestamp_us: self.store.now_us(),
        };
        result_of(
            stream.as_str(),
            expected,
            propose(node, command)
                .await
                .map_err(Box::new)?
                .await
                .map_err(Box::new)?,
        )
    }

    /// Sets `stream`'s metadata if its metadata stream is at `expected`.
    pub(crate) async fn set_metadata(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<(), Box<ErrorReply>> {
        let change = LifecycleChange::SetMetadata {
            metadata: metadata.to_json(),
        };
        self.lifecycle(stream, expected, Lifecycle::SetMetadata(metadata), change)
            .await
    }

    /// Stops serving `stream`'s versions below `before`.
    pub(crate) async fn truncate(
        &self,
        stream: &StreamName,
        before: StreamVersion,
    ) -> Result<(), Box<ErrorReply>> {
        let change = LifecycleChange::Truncate { before: before.0 };
        self.lifecycle(
            stream,
            ExpectedVersion::Any,
            Lifecycle::Truncate(before),
            change,
        )
        .await
    }

    /// Deletes `stream` softly (a later append starts it again).
    pub(crate) async fn delete_softly(&self, stream: &StreamName) -> Result<(), Box<ErrorReply>> {
        let change = LifecycleChange::Delete {
            hard: false,
            expected: ExpectedVersion::Any,
        };
        self.lifecycle(
            stream,
            ExpectedVersion::Any,
            Lifecycle::DeleteSoftly,
            change,
        )
        .await
    }

    /// A lifecycle write: `local` to the engine, or `replicated` through
    /// the cluster's log (under an event id and a time this node chooses
    /// as the leader), if the metadata stream is at `expected`.
    async fn lifecycle(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        local: Lifecycle,
        replicated: LifecycleChange,
    ) -> Result<(), Box<ErrorReply>> {
        let wrote = |e: AppendError| Box::new(append_error(&e));
        let Some(node) = &self.cluster else {
            let store = &self.store;
            return match local {
                Lifecycle::SetMetadata(m) => store.set_metadata(stream, expected, m).await,
                Lifecycle::Truncate(before) => store.truncate(stream, before).await,
                Lifecycle::DeleteSoftly => {
                    store.delete_stream(stream, expected, Deletion::Soft).await
                }
            }
            .map(drop)
            .map_err(wrote);
        };
        let command = Command::Lifecycle {
            stream: stream.as_str().to_owned(),
            meta_expected: expected,
            change: replicated,
            id: EventId::new_v7().0,
            timestamp_us: self.store.now_us(),
        };
        let meta = Store::metadata_stream(stream).map_err(wrote)?;
        result_of(
            meta.as_str(),
            expected,
            propose(node, command)
                .await
                .map_err(Box::new)?
                .await
                .map_err(Box::new)?,
        )
        .map(drop)
    }
}

/// A lifecycle write as the engine takes it.
enum Lifecycle {
    SetMetadata(StreamMetadata),
    Truncate(StreamVersion),
    DeleteSoftly,
}

/// How long a replicated append waits for a quorum.
const REPLICATION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The error reply for a proposal that was not answered by the log.
fn refusal(e: ProposeError) -> ErrorReply {
    let message = e.to_string();
    match e {
        ProposeError::NotLeader { leader: Some(m) } => {
            ErrorReply::new(ErrorCode::NotLeader, message).with_leader(m.client)
        }
        ProposeError::NotLeader { leader: None } => ErrorReply::new(ErrorCode::NotLeader, message),
        ProposeError::Unknown(_) => ErrorReply::new(
            ErrorCode::ShuttingDown,
            format!("{message}: resend it (the same event ids) to the leader"),
        ),
        ProposeError::Stopped(_) => ErrorReply::new(ErrorCode::ShuttingDown, message),
    }
}

/// Proposes `command` to a cluster's log (on its leader) and returns its
/// outcome to come, once a quorum holds it and this node applied it; a
/// refusal (not the leader, stopped) or an outcome unknown (no quorum
/// within [`REPLICATION_WAIT`], leadership lost) as the error reply.
pub(in crate::net) async fn propose(
    node: &Node,
    command: Command,
) -> Result<impl std::future::Future<Output = Result<Outcome, ErrorReply>> + use<>, ErrorReply> {
    let pending = node.propose(command).await.map_err(refusal)?;
    Ok(async move {
        // Without a quorum a proposal would wait for ever (and hold its
        // connection's drain at shutdown): past the bound its outcome is
        // unknown, and the client resends it.
        let outcome = tokio::time::timeout(REPLICATION_WAIT, pending)
            .await
            .unwrap_or_else(|_| {
                Err(ProposeError::Unknown(format!(
                    "no quorum took it within {REPLICATION_WAIT:?}"
                )))
            });
        outcome.map_err(refusal)
    })
}

/// A replicated write's outcome as the engine's own answer would be
/// reported: what it wrote, or the refusal (a `WrongExpectedVersion`
/// naming `stream` and `expected`).
pub(in crate::net) fn result_of(
    stream: &str,
    expected: ExpectedVersion,
    outcome: Outcome,
) -> Result<AppendResult, Box<ErrorReply>> {
    let e = match outcome {
        Outcome::Appended {
            first_position,
            first_version,
            last_position,
            last_version,
        } => {
            return Ok(AppendResult {
                first_position: LogPosition(first_position),
                first_version: StreamVersion(first_version),
                last_position: LogPosition(last_position),
                last_version: StreamVersion(last_version),
            });
        }
        Outcome::WrongExpectedVersion { actual } => AppendError::WrongExpectedVersion {
            stream: stream.to_owned(),
            expected,
            actual: actual.map(StreamVersion),
        },
        Outcome::DuplicateEventId {
            id,
            stream,
            position,
        } => AppendError::DuplicateEventId {
            id: EventId(id),
            stream,
            position: position.map(LogPosition),
        },
        Outcome::StreamDeleted => AppendError::StreamDeleted {
            stream: stream.to_owned(),
        },
        Outcome::Refused(why) => return Err(Box::new(ErrorReply::new(ErrorCode::BadRequest, why))),
        Outcome::None => {
            return Err(Box::new(ErrorReply::new(
                ErrorCode::Internal,
                "an append applied as no append",
            )));
        }
    };
    Err(Box::new(append_error(&e)))
}
