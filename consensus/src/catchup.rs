//! Catching up from a snapshot: a replica gets the events it lacks from
//! another member, as records.
//!
//! A snapshot of the event log is small: the Raft index and membership it
//! stands for, and the event log's head there (`sm.rs`). The event log
//! itself is the snapshot's state, and every replica holds a prefix of the
//! same log, so a replica that installs a snapshot lacks only the records
//! from its own head to the snapshot's. It asks a member for them, a few
//! MiB at a time ([`Fetch`]; the next chunk is fetched while the last one
//! is written), and writes each through its own engine
//! (`Store::ingest`: same positions, versions, timestamps and bytes, each
//! checked, made durable by group commit), so a crash in the middle leaves
//! a prefix to go on from. Only then is the snapshot recorded as installed.
//!
//! Records rather than segment files: each replica's segments carry its own
//! checksum seed and roll over at its own records, so files do not match
//! between replicas, and a replica that is merely behind fetches only what
//! it lacks, not a whole image; the copy is checked record by record as it
//! is written. (KurrentDB's followers also catch up from the leader's log
//! bytes from their own position.)

use std::io;

use crate::{Batch, Member};

/// Bytes of records one fetch asks for (a reply holds at least one record,
/// so a record larger than this comes alone).
pub const FETCH_BYTES: usize = 4 << 20;

/// Gets records of the event log from another member.
pub trait Fetch: Send + Sync + 'static {
    /// The records of member `id` (at `member`'s addresses) holding
    /// positions from `from` (where a record starts) up to `to`, about
    /// [`FETCH_BYTES`] of them; none if it holds nothing past `from`
    /// (or `id` is this node).
    fn fetch<'a>(
        &'a self,
        id: u64,
        member: &'a Member,
        from: u64,
        to: u64,
    ) -> futures::future::BoxFuture<'a, io::Result<Vec<Batch>>>;

    /// The node is shutting down: an install waiting for records gives up.
    fn stopped(&self) -> bool {
        false
    }
}

/// How a node reads its records for the members that fetch them:
/// `(from, to, max_bytes)` as [`Fetch::fetch`]. It reads the disk.
pub type Records = std::sync::Arc<dyn Fn(u64, u64, usize) -> io::Result<Vec<Batch>> + Send + Sync>;
