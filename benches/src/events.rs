//! Event and stream-name generation.
//!
//! Events look like a bank's: type `MoneyDeposited`, a JSON-ish payload of a
//! chosen size (200 bytes by default), no metadata, and a unique 16-byte id.
//! The payload is built once and shared (`Bytes` clones are reference
//! counts), so generating events costs next to nothing next to the engine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use logbook_protocol::{EventId, NewEvent, StreamName, Text};

/// Event type of generated events.
pub const EVENT_TYPE: &str = "MoneyDeposited";
/// Default payload size, in bytes.
pub const DEFAULT_DATA_BYTES: usize = 200;

/// A JSON-ish payload of exactly `len` bytes (padded with a `memo` field).
pub fn payload(len: usize) -> Bytes {
    let head = r#"{"account":"acc-000042","amount":12345,"currency":"EUR","memo":""#;
    let mut s = String::with_capacity(len.max(head.len() + 2));
    s.push_str(head);
    let pad = len.saturating_sub(head.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    let mut b = s.into_bytes();
    b.truncate(len);
    Bytes::from(b)
}

/// A valid stream name `"{prefix}-{i}"`.
pub fn stream_name(prefix: &str, i: u64) -> StreamName {
    StreamName::new(format!("{prefix}-{i}")).expect("generated stream names are valid")
}

/// Makes events with unique ids: the high 64 bits are drawn once per factory
/// (from the clock and process id), the low 64 bits count up.
#[derive(Debug)]
pub struct EventFactory {
    prefix: u64,
    next: AtomicU64,
    event_type: Text,
    data: Bytes,
}

impl Default for EventFactory {
    fn default() -> Self {
        EventFactory::new(DEFAULT_DATA_BYTES)
    }
}

impl EventFactory {
    /// A factory of `MoneyDeposited` events with `data_bytes` of payload.
    pub fn new(data_bytes: usize) -> EventFactory {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        EventFactory {
            prefix: nanos ^ (u64::from(std::process::id()) << 32),
            next: AtomicU64::new(0),
            event_type: Text::from_static(EVENT_TYPE),
            data: payload(data_bytes),
        }
    }

    /// Payload bytes per event.
    pub fn data_bytes(&self) -> usize {
        self.data.len()
    }

    /// One new event.
    pub fn event(&self) -> NewEvent {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.make(n)
    }

    /// `n` new events (one batch).
    pub fn batch(&self, n: usize) -> Vec<NewEvent> {
        let first = self.next.fetch_add(n as u64, Ordering::Relaxed);
        (first..first + n as u64).map(|i| self.make(i)).collect()
    }

    fn make(&self, n: u64) -> NewEvent {
        NewEvent {
            id: EventId::from_u128((u128::from(self.prefix) << 64) | u128::from(n)),
            event_type: self.event_type.clone(),
            metadata: Bytes::new(),
            data: self.data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_requested_size() {
        for len in [0, 10, 67, 200, 1000] {
            assert_eq!(payload(len).len(), len);
        }
        assert!(payload(200).starts_with(b"{\"account\""));
        assert!(payload(200).ends_with(b"\"}"));
    }

    #[test]
    fn ids_are_unique() {
        let f = EventFactory::default();
        let mut ids: Vec<_> = f.batch(100).into_iter().map(|e| e.id).collect();
        ids.push(f.event().id);
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 101);
        assert_eq!(f.data_bytes(), DEFAULT_DATA_BYTES);
    }

    #[test]
    fn stream_names_are_valid() {
        assert_eq!(stream_name("account", 42).as_str(), "account-42");
    }
}
