//! Erasures a replica of a cluster still owes: the streams whose erase it
//! applied (or copied from another replica) but whose events may still be
//! in its segment files.
//!
//! On one server an erase is one call that writes the tombstone and
//! rewrites the segments ([`crate::Store::erase`]); a client that lost the
//! reply erases again. On a cluster the tombstone is an entry of the
//! replicated log, which every replica applies whether or not anybody
//! waits for it, and its rewrite must happen on every replica, also one
//! that crashed right after applying it. So the stream is first recorded
//! here, durably, before its tombstone is queued (after a crash the record
//! is there even if the tombstone is not, and the entry is applied again);
//! [`crate::Store::finish_erasures`] rewrites the segments of each
//! recorded stream whose tombstone is in a sealed segment and takes it off
//! the record. A start reads the record and owes the same.
//!
//! ```text
//! <data>/ERASING
//! 0   [8]  magic    "LGBKERAS"
//! 8   u32  version  1
//! 12  u32  count
//! 16  count x { u16 len | len bytes of the stream name (UTF-8) }
//! end u32  crc32c over every byte before it
//! ```
//! Replaced whole (written aside, synced, renamed over, directory synced).
//! A damaged file is not trusted: every erased stream the lifecycle states
//! know is owed again (a rewrite with nothing left to remove reads its
//! segments and writes nothing).

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;

use logbook_protocol::le;
use parking_lot::{Condvar, Mutex};

use crate::error::StorageError;
use crate::fs::Vfs;
use crate::store::EraseReceipt;

/// The record's file name, in the data directory.
pub const FILE: &str = "ERASING";
const TMP: &str = "ERASING.tmp";
const MAGIC: [u8; 8] = *b"LGBKERAS";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
/// Receipts kept for those who wait for an erasure (the newest).
const RECEIPTS: usize = 1024;

/// What is owed, and what was done.
#[derive(Debug, Default)]
pub(crate) struct Erasures {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    owed: BTreeSet<String>,
    /// The latest erasures' outcomes, newest last.
    done: VecDeque<(String, Result<EraseReceipt, String>)>,
}

impl Erasures {
    /// Starts over with `owed` (at open).
    pub fn reset(&self, owed: BTreeSet<String>) {
        self.state.lock().owed = owed;
    }

    /// Records `stream` as owed, durably (before its tombstone is queued).
    pub fn owe(&self, vfs: &dyn Vfs, dir: &Path, stream: &str) -> Result<(), StorageError> {
        self.owe_all(vfs, dir, [stream])
    }

    /// Records every one of `streams` as owed, durably, in one write.
    pub fn owe_all<'a>(
        &self,
        vfs: &dyn Vfs,
        dir: &Path,
        streams: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), StorageError> {
        let mut g = self.state.lock();
        let mut owed = g.owed.clone();
        for stream in streams {
            owed.insert(stream.to_owned());
        }
        if owed.len() == g.owed.len() {
            return Ok(());
        }
        crate::fs::replace_file(vfs, dir, FILE, TMP, &encode(&owed))?;
        g.owed = owed;
        Ok(())
    }

    /// What is owed now.
    pub fn owed(&self) -> Vec<String> {
        self.state.lock().owed.iter().cloned().collect()
    }

    /// How many are owed.
    pub fn len(&self) -> usize {
        self.state.lock().owed.len()
    }

    /// `stream`'s erasure ended with `outcome`: taken off the record if it
    /// was done (durably), kept on it otherwise.
    pub fn ended(
        &self,
        vfs: &dyn Vfs,
        dir: &Path,
        stream: &str,
        outcome: Result<EraseReceipt, String>,
    ) -> Result<(), StorageError> {
        let mut g = self.state.lock();
        let mut result = Ok(());
        if outcome.is_ok() && g.owed.contains(stream) {
            let mut owed = g.owed.clone();
            owed.remove(stream);
            match crate::fs::replace_file(vfs, dir, FILE, TMP, &encode(&owed)) {
                Ok(()) => g.owed = owed,
                Err(e) => result = Err(e),
            }
        }
        g.done.retain(|(s, _)| s != stream);
        if g.done.len() >= RECEIPTS {
            g.done.pop_front();
        }
        g.done.push_back((stream.to_owned(), outcome));
        drop(g);
        self.changed.notify_all();
        result
    }

    /// Waits until `stream` is no longer owed, or an attempt at it failed,
    /// or `stop` says to give up (checked every 100 ms), or `timeout`
    /// passed: its last outcome.
    pub fn wait(
        &self,
        stream: &str,
        timeout: Option<std::time::Duration>,
        stop: impl Fn() -> bool,
    ) -> Result<EraseReceipt, StorageError> {
        let started = std::time::Instant::now();
        let mut g = self.state.lock();
        // A failure before this call is not this wait's answer.
        g.done.retain(|(s, o)| s != stream || o.is_ok());
        loop {
            let last = g.done.iter().rev().find(|(s, _)| s == stream);
            match last {
                Some((_, Err(e))) => {
                    return Err(StorageError::Internal(format!(
                        "erasing the stream's events from this node's segments failed (it is retried): {e}"
                    )));
                }
                Some((_, Ok(r))) if !g.owed.contains(stream) => return Ok(*r),
                None if !g.owed.contains(stream) => {
                    return Err(StorageError::Internal(
                        "no erasure of this stream is owed or known on this node".into(),
                    ));
                }
                _ => {}
            }
            if stop() {
                return Err(StorageError::ShuttingDown);
            }
            if timeout.is_some_and(|t| started.elapsed() >= t) {
                return Err(StorageError::Busy(
                    "this node has not finished erasing the stream's events from its segments yet (it goes on)".into(),
                ));
            }
            self.changed
                .wait_for(&mut g, std::time::Duration::from_millis(100));
        }
    }
}

/// The record's bytes.
pub(crate) fn encode(owed: &BTreeSet<String>) -> Vec<u8> {
    let mut b =
        Vec::with_capacity(HEADER_LEN + owed.iter().map(|s| s.len() + 2).sum::<usize>() + 4);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&(owed.len() as u32).to_le_bytes());
    for s in owed {
        // Stream names are at most a few hundred bytes.
        b.extend_from_slice(&(s.len() as u16).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// The streams a record's bytes hold, or why they are not one.
pub(crate) fn decode(b: &[u8]) -> Result<BTreeSet<String>, &'static str> {
    let body = crate::fs::checked_file(b, &MAGIC, VERSION, HEADER_LEN)?;
    let count = le::try_u32(body, 12).ok_or("short header")?;
    let mut at = HEADER_LEN;
    let mut out = BTreeSet::new();
    for _ in 0..count {
        let len = usize::from(le::try_u16(body, at).ok_or("entry overruns")?);
        let name = body.get(at + 2..at + 2 + len).ok_or("entry overruns")?;
        let name = std::str::from_utf8(name).map_err(|_| "name is not UTF-8")?;
        out.insert(name.to_owned());
        at += 2 + len;
    }
    if at != body.len() {
        return Err("trailing bytes");
    }
    Ok(out)
}

/// The record in `dir`: `Ok(None)` if there is none, `Err` if it cannot
/// be read or trusted.
pub(crate) fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Option<BTreeSet<String>>, String> {
    let path = dir.join(FILE);
    if !vfs.exists(&path) {
        return Ok(None);
    }
    let bytes = crate::fs::read_whole(vfs, &path).map_err(|e| e.to_string())?;
    decode(&bytes).map(Some).map_err(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_record_round_trips(owed in proptest::collection::btree_set("\\PC{1,40}", 0..20)) {
            prop_assert_eq!(decode(&encode(&owed)), Ok(owed));
        }

        /// Truncated, bit-flipped or garbage bytes are an error, never a
        /// panic or another record.
        #[test]
        fn damage_is_an_error(
            owed in proptest::collection::btree_set("[a-z-]{1,12}", 1..6),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let b = encode(&owed);
            let short = &b[..cut.index(b.len())];
            prop_assert!(decode(short).is_err());
            let mut flipped = b.clone();
            let i = flip.index(flipped.len());
            flipped[i] ^= 1 << bit;
            prop_assert!(decode(&flipped).is_err());
            let _ = decode(&garbage);
        }
    }

    #[test]
    fn an_oversized_count_is_an_error() {
        let mut b = encode(&BTreeSet::from(["a".to_owned()]));
        b.truncate(b.len() - 4);
        b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&b), Err("entry overruns"));
    }
}
