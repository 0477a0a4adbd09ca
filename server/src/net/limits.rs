//! How big one append may be, in the protocol's terms and the engine's.
//!
//! PROTOCOL.md §5.1 measures an append by what a client can add up: the
//! type, metadata and data bytes of its events (`max_append_bytes`, and
//! `max_event_bytes` for one event). The engine limits the log record a
//! batch becomes (`StoreConfig::max_batch_bytes`), which adds a header,
//! the stream name and per-event fields around those bytes. The server
//! announces and enforces the protocol's limit and derives it from the
//! engine's, leaving room for the largest overhead a batch can have, so an
//! append within the announced limit is never refused by the engine for
//! its size. `logbookd` configures the engine the other way round
//! ([`engine_batch_bytes`]), so that its `--max-append-bytes` is exactly
//! what clients are told.
//!
//! The overhead follows the record layout of `storage/src/record.rs`
//! (checked against the engine's encoder in the tests below):
//!
//! ```text
//! record  = header (38) | stream name | events | length suffix (4)
//! event   = id (16) | type len (2) | type | metadata len (4) | metadata
//!           | data len (4) | data
//! ```

use logbook_protocol::{MAX_STREAM_NAME_BYTES, NewEvent};
use logbook_storage::StoreConfig;

/// Record bytes besides the stream name and the events: header and suffix.
const RECORD_FIXED_BYTES: u64 = 38 + 4;
/// Record bytes per event besides its type, metadata and data.
const RECORD_EVENT_BYTES: u64 = 16 + 2 + 4 + 4;

/// The most bytes a record of `events` events adds to their type, metadata
/// and data (with the longest stream name allowed).
pub fn record_overhead(events: u32) -> u64 {
    RECORD_FIXED_BYTES + MAX_STREAM_NAME_BYTES as u64 + RECORD_EVENT_BYTES * u64::from(events)
}

/// The engine's `max_batch_bytes` that accepts every append of up to
/// `max_append_bytes` (type, metadata and data) in up to `max_events`
/// events.
pub fn engine_batch_bytes(max_append_bytes: u64, max_events: u32) -> u64 {
    max_append_bytes.saturating_add(record_overhead(max_events))
}

/// The `max_append_bytes` an engine configured with `store` accepts
/// whatever the stream and the number of events: what `HelloOk` announces.
pub fn max_append_bytes(store: &StoreConfig) -> u64 {
    store
        .max_batch_bytes
        .saturating_sub(record_overhead(store.max_batch_events))
}

/// What an append counts toward `max_append_bytes`.
pub fn append_bytes(events: &[NewEvent]) -> u64 {
    events
        .iter()
        .map(|e| (e.event_type.len() + e.metadata.len() + e.data.len()) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_protocol::{EventId, Text};

    /// The overhead is exactly what the engine's encoder adds, for the
    /// longest stream name.
    #[test]
    fn the_overhead_matches_the_engine_record() {
        let stream = "s".repeat(MAX_STREAM_NAME_BYTES);
        for (count, size) in [(1u32, 0usize), (3, 100), (50, 7)] {
            let events: Vec<NewEvent> = (0..count)
                .map(|i| {
                    NewEvent::new(EventId::from_u128(u128::from(i)), "Type", vec![7u8; size])
                        .with_metadata(vec![1u8; size / 2])
                })
                .collect();
            let mut record = Vec::new();
            logbook_storage::internals::encode_record(&mut record, 0, &stream, 0, 0, 0, &events);
            assert_eq!(
                record.len() as u64,
                append_bytes(&events) + record_overhead(count),
                "{count} events of {size} bytes"
            );
        }
        assert_eq!(
            append_bytes(&[NewEvent::new(
                EventId::from_u128(1),
                Text::from("ab"),
                "xyz"
            )]),
            5
        );
    }

    #[test]
    fn the_engine_limit_and_the_announced_limit_agree() {
        let store = StoreConfig {
            max_batch_bytes: engine_batch_bytes(15 << 20, 10_000),
            max_batch_events: 10_000,
            ..StoreConfig::default()
        };
        assert_eq!(max_append_bytes(&store), 15 << 20);
    }
}
