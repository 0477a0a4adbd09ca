//! The engine as the state machine's event log: a committed append is
//! applied with [`Store::append_at`], at the time the leader chose, so
//! every replica writes the same events at the same positions with the
//! same versions and timestamps (the engine assigns positions in apply
//! order, and apply order is the Raft log's).
//!
//! Re-applying an append after a crash (the state machine's record of what
//! it applied lags the engine by at most one batch) writes nothing: the
//! engine answers a resend of any stored batch (same ids, same content)
//! with its original result. Not yet here: snapshots made of sealed
//! segments (the engine's files are the state; shipping them is the next
//! increment), so [`EventLog::snapshot`] refuses and a cluster keeps its
//! whole Raft log until then.

use std::io;

use logbook_protocol::{EventId, NewEvent, StreamName};
use logbook_storage::{AppendError, Store};

use crate::sm::EventLog;
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

impl EventLog for StoreLog {
    async fn apply(&mut self, _index: u64, command: &Command) -> io::Result<Outcome> {
        let Command::Append {
            stream,
            expected,
            events,
            timestamp_us,
        } = command;
        let Ok(name) = StreamName::new(stream.clone()) else {
            return Ok(Outcome::Refused(format!("invalid stream name {stream:?}")));
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
        Ok(
            match self
                .store
                .append_at(&name, *expected, events, *timestamp_us)
                .await
            {
                Ok(r) => Outcome::Appended {
                    first_position: r.first_position.0,
                    first_version: r.first_version.0,
                    last_position: r.last_position.0,
                    last_version: r.last_version.0,
                },
                Err(AppendError::WrongExpectedVersion { actual, .. }) => {
                    Outcome::WrongExpectedVersion {
                        actual: actual.map(|v| v.0),
                    }
                }
                // Refusals that depend only on the log (the same on every
                // replica): the command is answered, nothing was written.
                Err(
                    e @ (AppendError::DuplicateEventId { .. }
                    | AppendError::EmptyBatch
                    | AppendError::ReservedStream { .. }
                    | AppendError::StreamDeleted { .. }
                    | AppendError::TooLarge { .. }),
                ) => Outcome::Refused(e.to_string()),
                // A disk failure: this replica cannot go on applying; stopping
                // (openraft stops the node on a state machine error) is the
                // only answer that does not diverge.
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "the event log cannot apply a committed append: {e}"
                    )));
                }
            },
        )
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
