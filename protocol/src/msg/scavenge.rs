//! `Scavenge` (opcode 17): give back the disk that removed events
//! (deleted, truncated, expired, superseded metadata) still take.
//!
//! ```text
//! Scavenge   { max_bytes_per_sec?: uint64 }
//! ScavengeOk { segments_considered: uint64, segments_rewritten: uint64,
//!              segments_merged?: uint64, events_removed: uint64,
//!              bytes_before: uint64, bytes_after: uint64, duration_us: uint64 }
//! ```
//!
//! The server seals its active segment, then rewrites the sealed segments
//! that hold removed events, one at a time, without them (extra disk: one
//! segment at most). Positions and versions never change; reads go on
//! meanwhile. It writes a `$scavenge-started` event to the `$scavenges`
//! stream as it starts and a `$scavenged` event (its report, as JSON) as it
//! ends. A rewritten segment is merged with its small sealed neighbours
//! while the result fits in one segment: `segments_merged` of the
//! `segments_rewritten` are gone as files, their events in the one before.
//! The reply says what it did: `bytes_before` and `bytes_after` are the
//! sizes of the segments it rewrote, before and after.
//!
//! `max_bytes_per_sec` paces its disk traffic (absent: as fast as the disk
//! goes); `0` is out of range, so the message is malformed. One scavenge
//! runs at a time: a second, or one while an `Erase` runs, is refused with
//! `ServerBusy`.

use serde::{Deserialize, Serialize};

use super::wire::malformed;
use crate::error::Error;
use crate::frame::Opcode;

/// Asks the server to scavenge its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scavenge {
    /// Most bytes per second the scavenge reads and writes (`None`: as fast
    /// as the disk goes). At least 1 when given.
    pub max_bytes_per_sec: Option<u64>,
}

/// What a scavenge did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScavengeOk {
    /// Sealed segments that held a removed event, by the index.
    pub segments_considered: u64,
    /// Segments rewritten without their removed events (merged ones
    /// included).
    pub segments_rewritten: u64,
    /// Of those, segments merged into a neighbour (gone as files).
    #[serde(default)]
    pub segments_merged: u64,
    /// Events removed from disk.
    pub events_removed: u64,
    /// Bytes of the rewritten segments before.
    pub bytes_before: u64,
    /// Bytes of the rewritten segments after.
    pub bytes_after: u64,
    /// How long the scavenge took, in microseconds.
    pub duration_us: u64,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ScavengeWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_bytes_per_sec: Option<u64>,
}

impl Scavenge {
    pub(crate) fn to_wire(self) -> ScavengeWire {
        ScavengeWire {
            max_bytes_per_sec: self.max_bytes_per_sec,
        }
    }

    pub(crate) fn from_wire(w: ScavengeWire) -> Result<Scavenge, Error> {
        if w.max_bytes_per_sec == Some(0) {
            return Err(malformed(
                Opcode::Scavenge,
                "field \"max_bytes_per_sec\": 0 is out of range (leave it out for no limit)",
            ));
        }
        Ok(Scavenge {
            max_bytes_per_sec: w.max_bytes_per_sec,
        })
    }
}
