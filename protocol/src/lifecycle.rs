//! Stream lifecycle: metadata (retention and custom keys), truncation, and
//! soft and hard deletion.
//!
//! Every lifecycle operation on stream `S` is an event appended to its
//! metadata stream `$$S` (the name KurrentDB uses), at a log position like
//! any other event, so subscribers of the global log see it in order. The
//! event's data is the stream's whole lifecycle state after the operation
//! ([`StreamLifecycle`], JSON), never a delta: the latest event of `$$S`
//! says everything, and replaying any suffix of them is idempotent.
//!
//! Event types: `$metadata` (metadata set), `$truncated` (truncate before a
//! version), `$deleted` (soft delete), `$tombstone` (hard delete).
//!
//! Which events of `S` are live (served by every read path):
//! `version >= first_live` and, with `max_age`, `timestamp >= now -
//! max_age`, and never any once `S` is hard-deleted, where `first_live =
//! max(truncate_before, last_version + 1 - max_count)`.

use serde::{Deserialize, Serialize};

/// Prefix of metadata stream names: `$$S` holds the lifecycle of `S`.
/// Clients cannot append to such streams; the lifecycle operations do.
pub const META_STREAM_PREFIX: &str = "$$";

/// Event type of a metadata change.
pub const EVENT_METADATA: &str = "$metadata";
/// Event type of a truncation.
pub const EVENT_TRUNCATED: &str = "$truncated";
/// Event type of a soft delete.
pub const EVENT_DELETED: &str = "$deleted";
/// Event type of a hard delete.
pub const EVENT_TOMBSTONE: &str = "$tombstone";

/// The metadata stream of `stream`.
pub fn meta_stream(stream: &str) -> String {
    format!("{META_STREAM_PREFIX}{stream}")
}

/// The stream whose metadata stream is `name`, if it is one.
pub fn meta_target(name: &str) -> Option<&str> {
    name.strip_prefix(META_STREAM_PREFIX)
        .filter(|t| !t.is_empty())
}

/// Retention and custom settings of a stream, as a client sets them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMetadata {
    /// Keep only the last `max_count` events (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Keep only events younger than this many seconds (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u64>,
    /// Events below this version are removed. It only rises: setting a
    /// lower value keeps the higher one (removed events may already be
    /// gone from disk, so they cannot come back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<u64>,
    /// Application keys and values (a JSON object), kept as given.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

impl StreamMetadata {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_count == Some(0) {
            return Err("max_count must be at least 1".into());
        }
        if self.max_age_secs == Some(0) {
            return Err("max_age_secs must be at least 1".into());
        }
        if self
            .max_age_secs
            .is_some_and(|s| s > i64::MAX as u64 / 1_000_000)
        {
            return Err("max_age_secs is too large".into());
        }
        Ok(())
    }

    /// Parses metadata from JSON (an object with the fields above; unknown
    /// top-level keys are refused, custom ones go under `custom`).
    pub fn from_json(json: &[u8]) -> Result<StreamMetadata, String> {
        let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        if !v.is_object() {
            return Err("stream metadata must be a JSON object".into());
        }
        let m: StreamMetadataStrict = serde_json::from_value(v).map_err(|e| e.to_string())?;
        let m = StreamMetadata {
            max_count: m.max_count,
            max_age_secs: m.max_age_secs,
            truncate_before: m.truncate_before,
            custom: m.custom,
        };
        m.validate()?;
        Ok(m)
    }

    /// The metadata as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// [`StreamMetadata`] refusing unknown keys (a typo in `max_cuont` must not
/// be silently ignored).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamMetadataStrict {
    #[serde(default)]
    max_count: Option<u64>,
    #[serde(default)]
    max_age_secs: Option<u64>,
    #[serde(default)]
    truncate_before: Option<u64>,
    #[serde(default)]
    custom: serde_json::Map<String, serde_json::Value>,
}

/// How a stream was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deletion {
    /// Reads say `StreamNotFound`; a later append continues the versions
    /// where they stopped, and only the new events are visible.
    Soft,
    /// Reads and appends fail with `StreamDeleted`, for ever.
    Hard,
}

/// A stream's whole lifecycle state: the data of every `$$S` event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamLifecycle {
    /// The stream `S`.
    pub stream: String,
    /// Its settings; `truncate_before` includes a soft delete's.
    #[serde(default)]
    pub metadata: StreamMetadata,
    /// Set by a delete. A soft delete is undone by the next append (the
    /// stream has live events again), a hard one never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Deletion>,
    /// The stream's last version when this was recorded (`None`: it had
    /// no events). Versions continue after it even once the events are
    /// gone from disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_version: Option<u64>,
    /// A soft delete's: the stream's last version when it was deleted
    /// (`None`: it had none). The stream reads as not found until an event
    /// above it is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_last: Option<u64>,
    /// Events committed before this time (microseconds since the epoch)
    /// stay removed: the cut of a `max_age` that was raised or removed
    /// (what it removed may already be gone from disk, so it cannot come
    /// back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_before_us: Option<i64>,
    /// Set by an erase: a hard delete that forgets everything the stream's
    /// earlier states said (so its tombstone depends on none of them) and
    /// removes its events from disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
}

impl StreamLifecycle {
    /// The first live version of a stream whose last version is `last`:
    /// `max(truncate_before, last + 1 - max_count)` (hard-deleted streams
    /// have none: see [`StreamLifecycle::is_hard_deleted`]).
    pub fn first_live(&self, last: Option<u64>) -> u64 {
        let tb = self.metadata.truncate_before.unwrap_or(0);
        let by_count = match (self.metadata.max_count, last) {
            (Some(n), Some(l)) => (l + 1).saturating_sub(n),
            _ => 0,
        };
        tb.max(by_count)
    }

    /// Whether the stream is hard-deleted.
    pub fn is_hard_deleted(&self) -> bool {
        self.deleted == Some(Deletion::Hard)
    }

    /// The oldest commit time (microseconds since the epoch) an event may
    /// have to be live at `now_us`, under `max_age` (and the cut of an
    /// earlier one).
    pub fn min_timestamp(&self, now_us: i64) -> Option<i64> {
        let by_age = self
            .metadata
            .max_age_secs
            .map(|s| now_us.saturating_sub((s as i64).saturating_mul(1_000_000)));
        by_age.max(self.expired_before_us)
    }

    /// Whether a soft delete is in effect for a stream whose last version
    /// is `last`: nothing was appended since (it reads as not found).
    pub fn is_soft_deleted(&self, last: Option<u64>) -> bool {
        self.deleted == Some(Deletion::Soft) && last <= self.deleted_last
    }

    /// Whether event `version`, committed at `timestamp_us`, is live, for
    /// a stream whose last version is `last`, at `now_us`.
    pub fn is_live(&self, version: u64, timestamp_us: i64, last: Option<u64>, now_us: i64) -> bool {
        !self.is_hard_deleted()
            && version >= self.first_live(last)
            && self
                .min_timestamp(now_us)
                .is_none_or(|min| timestamp_us >= min)
    }

    /// The state as stored (JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a stored state.
    pub fn from_json(json: &[u8]) -> Result<StreamLifecycle, String> {
        serde_json::from_slice(json).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn metadata_json_refuses_unknown_keys_and_bad_ranges() {
        assert!(StreamMetadata::from_json(br#"{"max_cuont":3}"#).is_err());
        assert!(StreamMetadata::from_json(br#"{"max_count":0}"#).is_err());
        assert!(StreamMetadata::from_json(br#"{"max_age_secs":0}"#).is_err());
        assert!(StreamMetadata::from_json(b"[1]").is_err());
        let m = StreamMetadata::from_json(br#"{"max_count":3,"custom":{"owner":"ada"}}"#)
            .expect("valid");
        assert_eq!(m.max_count, Some(3));
        assert_eq!(m.custom.get("owner"), Some(&serde_json::json!("ada")));
        assert_eq!(StreamMetadata::from_json(m.to_json().as_bytes()), Ok(m));
    }

    #[test]
    fn liveness_follows_each_rule() {
        let mut s = StreamLifecycle {
            stream: "s".into(),
            ..Default::default()
        };
        assert!(s.is_live(0, 0, Some(9), 0));
        s.metadata.truncate_before = Some(3);
        assert!(!s.is_live(2, 0, Some(9), 0));
        assert!(s.is_live(3, 0, Some(9), 0));
        s.metadata.max_count = Some(2);
        assert_eq!(s.first_live(Some(9)), 8);
        assert!(!s.is_live(7, 0, Some(9), 0));
        s.metadata.max_count = None;
        s.metadata.max_age_secs = Some(10);
        assert!(!s.is_live(5, 0, Some(9), 11_000_000));
        assert!(s.is_live(5, 1_000_000, Some(9), 11_000_000));
        s.deleted = Some(Deletion::Hard);
        assert!(!s.is_live(5, 1_000_000, Some(9), 11_000_000));
    }

    #[test]
    fn meta_stream_names() {
        assert_eq!(meta_stream("a"), "$$a");
        assert_eq!(meta_target("$$a"), Some("a"));
        assert_eq!(meta_target("$$"), None);
        assert_eq!(meta_target("a"), None);
    }

    proptest! {
        #[test]
        fn state_round_trips(
            stream in "[a-z$-]{1,20}",
            mc in proptest::option::of(1u64..1000),
            age in proptest::option::of(1u64..100_000),
            tb in proptest::option::of(any::<u64>()),
            deleted in proptest::option::of(prop_oneof![Just(Deletion::Soft), Just(Deletion::Hard)]),
            last in proptest::option::of(any::<u64>()),
            key in "[a-z]{0,5}",
        ) {
            let mut custom = serde_json::Map::new();
            if !key.is_empty() {
                custom.insert(key, serde_json::json!([1, "x"]));
            }
            let s = StreamLifecycle {
                stream,
                metadata: StreamMetadata { max_count: mc, max_age_secs: age, truncate_before: tb, custom },
                deleted,
                last_version: last,
                deleted_last: last.filter(|_| deleted.is_some()),
                expired_before_us: age.map(|a| a as i64),
                erased: deleted == Some(Deletion::Hard) && mc.is_some(),
            };
            prop_assert_eq!(StreamLifecycle::from_json(&s.to_json()), Ok(s));
        }

        #[test]
        fn garbage_is_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = StreamLifecycle::from_json(&bytes);
            let _ = StreamMetadata::from_json(&bytes);
        }
    }
}
