//! Where a subscription starts: its `from` checked against the log and
//! turned into the state its catch-up begins with, before `SubscribeOk` is
//! sent, so that a `from` past the end or a failed read is the Subscribe's
//! error reply rather than a subscription that waits for nothing or spins.
//!
//! The start must agree with `head`, the head `SubscribeOk` reports (read
//! first, by the handler): a subscription from `end` delivers exactly the
//! events at or after it. For a stream subscription the start is a pair,
//! and the pair keeps catch-up's invariant (`catchup` relies on it): every
//! event of the stream at a position before `cursor` has a version at or
//! below `last_version`. So a stream subscription from `end` starts after
//! the stream's last version *before `head`*, not after its last version
//! now: a commit may land between the two reads, and its events are at or
//! after `head`, so they are the subscription's to deliver.

use logbook_protocol::{Direction, StreamVersion, SubscribeFrom, SubscriptionTarget, Text};
use logbook_storage::{ReadError, ReadLimit, Store};

use super::READ_BYTES;

/// The state a subscription's catch-up begins with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StartPoint {
    /// The first log position to deliver or scan.
    pub(super) cursor: u64,
    /// Stream subscriptions: the last version already behind the client.
    pub(super) last_version: Option<u64>,
}

/// Why a subscription cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// `from` names a log position at or past the head.
    #[error("no event at log position {after} to subscribe after: the log holds {head} events")]
    PastLogEnd {
        /// The position asked for.
        after: u64,
        /// The number of committed events.
        head: u64,
    },
    /// `from` names a version past the end of the stream.
    #[error("no version {after} of stream {stream} to subscribe after: {}", match .last {
        Some(v) => format!("its last version is {v}"),
        None => "it has no events".to_owned(),
    })]
    PastStreamEnd {
        /// The stream.
        stream: Text,
        /// The version asked for.
        after: u64,
        /// The stream's last version, if it has events.
        last: Option<StreamVersion>,
    },
    /// Reading where the stream stands failed.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Resolves `target`'s `from` against the log whose head `SubscribeOk`
/// reports as `head`.
pub(crate) fn resolve(
    store: &Store,
    target: &SubscriptionTarget,
    head: u64,
) -> Result<StartPoint, StartError> {
    let (cursor, last_version) = match target {
        SubscriptionTarget::All { from, .. } => match *from {
            SubscribeFrom::Start => (0, None),
            SubscribeFrom::After(p) if p.0 < head => (p.0 + 1, None),
            SubscribeFrom::After(p) => return Err(StartError::PastLogEnd { after: p.0, head }),
            SubscribeFrom::End => (head, None),
        },
        SubscriptionTarget::Stream { stream, from } => match *from {
            SubscribeFrom::Start => (0, None),
            SubscribeFrom::After(v) => {
                let last = store.stream_version(stream)?;
                if last.is_none_or(|l| v.0 > l.0) {
                    return Err(StartError::PastStreamEnd {
                        stream: stream.clone(),
                        after: v.0,
                        last,
                    });
                }
                // No event is before cursor 0: the invariant holds.
                (0, Some(v.0))
            }
            SubscribeFrom::End => (head, last_version_before(store, stream, head)?),
        },
    };
    Ok(StartPoint {
        cursor,
        last_version,
    })
}

/// The version of `stream`'s last event before log position `head`.
fn last_version_before(store: &Store, stream: &str, head: u64) -> Result<Option<u64>, ReadError> {
    let Some(last) = store.stream_version(stream)? else {
        return Ok(None);
    };
    // Backward from the last version: the events at or after `head` are
    // those committed since it was read, rarely more than a page.
    let mut from = Some(last);
    loop {
        let page = store.read_stream(
            stream,
            from,
            Direction::Backward,
            ReadLimit {
                events: 16,
                bytes: READ_BYTES,
            },
        )?;
        if let Some(e) = page.events.iter().find(|e| e.position.0 < head) {
            return Ok(Some(e.version.0));
        }
        match page.next {
            Some(v) => from = Some(v),
            None => return Ok(None),
        }
    }
}
