//! The engine as the state machine's event log: a committed append is
//! applied with [`Store::append_at`], at the time the leader chose, so
//! every replica writes the same events at the same positions with the
//! same versions and timestamps (the engine assigns positions in apply
//! order, and apply order is the Raft log's).
//!
//! Appends are queued one after another as they are applied and awaited
//! by the state machine's completion task, so they share the engine's group
//! commits. Re-applying an append after a crash (the state machine's record
//! of what the engine holds lags it by up to 100 ms of entries) writes
//! nothing: [`Store::resend`] answers a stored batch with its original
//! result and tells one that is not stored. Not yet here: snapshots made of sealed
//! segments (the engine's files are the state; shipping them is the next
//! increment), so [`EventLog::snapshot`] refuses and a cluster keeps its
//! whole Raft log until then.

use std::io;

use logbook_protocol::{AppendResult, EventId, ExpectedVersion, NewEvent, StreamName};
use logbook_storage::{AppendError, Store};

use crate::sm::{EventLog, Pending, ready};
use crate::{Command, Outcome};

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

/// An append command as the engine takes it, or why it cannot be one.
fn append_of(command: &Command) -> Result<(StreamName, ExpectedVersion, Vec<NewEvent>), Outcome> {
    let Command::Append {
        stream,
        expected,
        events,
        ..
    } = command;
    let Ok(name) = StreamName::new(stream.clone()) else {
        return Err(Outcome::Refused(format!("invalid stream name {stream:?}")));
    };
    let events = events
        .iter()
        .map(|e| NewEvent {
            id: EventId(e.id),
            event_type: e.event_type.as_str().into(),
            metadata: e.metadata.clone(),
            data: e.data.clone(),
        })
        .collect();
    Ok((name, *expected, events))
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
        let (name, expected, events) = match append_of(command) {
            Ok(a) => a,
            Err(refused) => return Ok(ready(refused)),
        };
        match self.store.submit_at(&name, expected, events, at).await {
            Ok(pending) => Ok(Box::pin(async move { outcome(pending.await) })),
            Err(e) => Ok(Box::pin(std::future::ready(outcome(Err(e))))),
        }
    }

    async fn reapply(
        &mut self,
        _index: u64,
        at: i64,
        command: &Command,
    ) -> io::Result<Option<Outcome>> {
        let (name, _, events) = match append_of(command) {
            Ok(a) => a,
            Err(refused) => return Ok(Some(refused)),
        };
        match self.store.resend(&name, events, Some(at)).await {
            Err(AppendError::NotStored { .. }) => Ok(None),
            r => outcome(r).map(Some),
        }
    }

    fn head(&self) -> u64 {
        self.store.head().0
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
