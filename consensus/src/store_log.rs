//! The engine as the state machine's event log: a committed append is
//! applied with [`Store::append_at`], at the time the leader chose, so
//! every replica writes the same events at the same positions with the
//! same versions and timestamps (the engine assigns positions in apply
//! order, and apply order is the Raft log's). A lifecycle change is
//! applied with [`Store::submit_lifecycle_at`], under the event id and at
//! the time the leader chose.
//!
//! Appends are queued one after another as they are applied and awaited
//! by the state machine's completion task, so they share the engine's group
//! commits. Re-applying an append after a crash (the state machine's record
//! of what the engine holds lags it by up to 100 ms of entries) writes
//! nothing: [`Store::resend`] answers a stored batch with its original
//! result and tells one that is not stored (a lifecycle change is resent
//! as its placeholder event to the metadata stream). Not yet here:
//! snapshots made of sealed segments (the engine's files are the state; shipping them is the next
//! increment), so [`EventLog::snapshot`] refuses and a cluster keeps its
//! whole Raft log until then.

use std::io;

use logbook_protocol::{AppendResult, EventId, ExpectedVersion, NewEvent, StreamName};
use logbook_storage::{AppendError, Store};

use crate::sm::{EventLog, Pending, ready};
use crate::{Command, LifecycleChange, Outcome};

/// A [`Store`] applying committed appends.
pub struct StoreLog {
    store: Store,
}

impl StoreLog {
    /// Applies to `store`.
    pub fn new(store: Store) -> StoreLog {
        StoreLog { store }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// A command as the engine takes it.
enum Request {
    Append(StreamName, ExpectedVersion, Vec<NewEvent>),
    Lifecycle(
        StreamName,
        ExpectedVersion,
        logbook_storage::LifecycleChange,
        EventId,
    ),
}

/// A command as the engine takes it, or why it cannot be one (refusals
/// that depend only on the command: the same on every replica).
fn request_of(command: &Command) -> Result<Request, Outcome> {
    let name = |stream: &String| {
        StreamName::new(stream.clone())
            .map_err(|_| Outcome::Refused(format!("invalid stream name {stream:?}")))
    };
    match command {
        Command::Append {
            stream,
            expected,
            events,
            ..
        } => {
            let events = events
                .iter()
                .map(|e| NewEvent {
                    id: EventId(e.id),
                    event_type: e.event_type.as_str().into(),
                    metadata: e.metadata.clone(),
                    data: e.data.clone(),
                })
                .collect();
            Ok(Request::Append(name(stream)?, *expected, events))
        }
        Command::Lifecycle {
            stream,
            meta_expected,
            change,
            id,
            ..
        } => {
            use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
            use logbook_storage::LifecycleChange as Change;
            let change = match change {
                LifecycleChange::SetMetadata { metadata } => Change::SetMetadata(
                    StreamMetadata::from_json(metadata.as_bytes()).map_err(Outcome::Refused)?,
                ),
                LifecycleChange::Truncate { before } => {
                    Change::Truncate(logbook_protocol::StreamVersion(*before))
                }
                LifecycleChange::Delete { hard, expected } => Change::Delete {
                    mode: if *hard {
                        Deletion::Hard
                    } else {
                        Deletion::Soft
                    },
                    expected: *expected,
                },
            };
            Ok(Request::Lifecycle(
                name(stream)?,
                *meta_expected,
                change,
                EventId(*id),
            ))
        }
    }
}

/// The outcome of an append, or the error that stops the node.
fn outcome(r: Result<AppendResult, AppendError>) -> io::Result<Outcome> {
    Ok(match r {
        Ok(r) => Outcome::Appended {
            first_position: r.first_position.0,
            first_version: r.first_version.0,
            last_position: r.last_position.0,
            last_version: r.last_version.0,
        },
        Err(AppendError::WrongExpectedVersion { actual, .. }) => Outcome::WrongExpectedVersion {
            actual: actual.map(|v| v.0),
        },
        Err(AppendError::DuplicateEventId {
            id,
            stream,
            position,
        }) => Outcome::DuplicateEventId {
            id: id.0,
            stream,
            position: position.map(|p| p.0),
        },
        Err(AppendError::StreamDeleted { .. }) => Outcome::StreamDeleted,
        // Refusals that depend only on the log (the same on every
        // replica): the command is answered, nothing was written.
        Err(
            e @ (AppendError::EmptyBatch
            | AppendError::InvalidEventType { .. }
            | AppendError::ReservedStream { .. }
            | AppendError::InvalidMetadata(_)
            | AppendError::TooLarge { .. }),
        ) => Outcome::Refused(e.to_string()),
        // A disk failure: this replica cannot go on applying; stopping
        // (openraft stops the node on a state machine error) is the only
        // answer that does not diverge.
        Err(e) => {
            return Err(io::Error::other(format!(
                "the event log cannot apply a committed append: {e}"
            )));
        }
    })
}

impl EventLog for StoreLog {
    async fn submit(&mut self, _index: u64, at: i64, command: &Command) -> io::Result<Pending> {
        let submitted = match request_of(command) {
            Err(refused) => return Ok(ready(refused)),
            Ok(Request::Append(name, expected, events)) => {
                self.store.submit_at(&name, expected, events, at).await
            }
            Ok(Request::Lifecycle(name, meta_expected, change, id)) => {
                self.store
                    .submit_lifecycle_at(&name, meta_expected, change, id, at)
                    .await
            }
        };
        match submitted {
            Ok(pending) => Ok(Box::pin(async move { outcome(pending.await) })),
            // Refused before the writer: a refusal every replica makes
            // alike is this entry's outcome; a storage error (an id table
            // unreadable) is returned here, so that the state machine
            // stops before it queues a later entry.
            Err(e) => outcome(Err(e)).map(ready),
        }
    }

    async fn reapply(
        &mut self,
        _index: u64,
        at: i64,
        command: &Command,
    ) -> io::Result<Option<Outcome>> {
        // What the command wrote, if it did: its events (a lifecycle
        // change's is its id in the metadata stream).
        let (name, events) = match request_of(command) {
            Err(refused) => return Ok(Some(refused)),
            Ok(Request::Append(name, _, events)) => (name, events),
            Ok(Request::Lifecycle(name, _, _, id)) => match Store::metadata_stream(&name) {
                Ok(meta) => (meta, vec![logbook_storage::lifecycle_placeholder(id)]),
                Err(e) => return outcome(Err(e)).map(Some),
            },
        };
        match self.store.resend(&name, events, Some(at)).await {
            Err(AppendError::NotStored { .. }) => Ok(None),
            r => outcome(r).map(Some),
        }
    }

    fn head(&self) -> u64 {
        self.store.head().0
    }

    fn opened_at(&self) -> i64 {
        self.store.recovery_report().last_timestamp_us
    }

    fn sync(&mut self) -> io::Result<()> {
        // Every append the engine answered is durable already.
        Ok(())
    }

    fn snapshot(&mut self) -> io::Result<Vec<u8>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "snapshots of the engine (sealed segments) are not built yet",
        ))
    }

    fn install(&mut self, _state: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "snapshots of the engine (sealed segments) are not built yet",
        ))
    }
}
