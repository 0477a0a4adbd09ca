//! Online backup: a consistent image of the store, pinned while it is
//! copied.
//!
//! An image is `position` events: every segment holding a position below
//! it, each to the length that holds exactly those events (a sealed
//! segment whole, the active one up to its durable end), the index tables
//! of the MANIFEST as it stood, and that MANIFEST's bytes. The image holds
//! the files open, so a merge that deletes a table, or a roll-over that
//! seals the active segment, does not disturb a copy in progress: sealed
//! segments and tables are immutable, and the active segment only grows
//! past the image's length.
//!
//! Written at their relative paths, the files form a data directory that
//! opens with exactly `position` events: recovery sees the copied active
//! segment end where its records end (a clean end, not a torn write), and
//! the index covers at most `position` (it was taken before the head).

use std::io;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::Store;
use crate::error::StorageError;
use crate::fs::VFile;
use crate::segment::{self, HEADER_LEN};
use logbook_protocol::layout::StoreFile;

/// One file of an image.
#[derive(Debug)]
pub struct ImageFile {
    /// Path relative to the data directory, `/`-separated.
    pub name: String,
    /// Bytes that belong to the image.
    pub len: u64,
    file: Arc<dyn VFile>,
}

impl ImageFile {
    /// Reads up to `max` bytes from `offset`, never past the image's
    /// length; empty at or past it.
    pub fn read(&self, offset: u64, max: usize) -> io::Result<Bytes> {
        let n = self.len.saturating_sub(offset).min(max as u64) as usize;
        let mut buf = BytesMut::zeroed(n);
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf.freeze())
    }
}

/// A consistent image of the store.
#[derive(Debug)]
pub struct BackupImage {
    /// Events in the image.
    pub position: u64,
    /// Segments in log order, then index tables.
    pub files: Vec<ImageFile>,
    /// The bytes of `index/MANIFEST` for the image.
    pub manifest: Vec<u8>,
}

impl BackupImage {
    /// Bytes in all the files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }
}

/// Publishes racing with the snapshot make it retry. Each attempt is a
/// few atomic loads per segment, so even at tens of thousands of publishes
/// a second one succeeds within a few tries; this bounds the loop.
const MAX_ATTEMPTS: usize = 1_000;

impl Store {
    /// Pins a consistent image of the store for an online backup. Fails
    /// with [`StorageError::Busy`] if appends kept racing with it.
    pub fn backup_image(&self) -> Result<BackupImage, StorageError> {
        let shared = self.shared();
        // The index first: it covers at most the head loaded below (its
        // entries were published before that head). The MANIFEST kept with
        // the tables lists exactly them.
        let (manifest, tables) = {
            let g = shared.index.read();
            (Arc::clone(&g.manifest), Arc::clone(&g.tables))
        };
        let mut pinned: Vec<(Arc<segment::Segment>, u64)> = Vec::new();
        let mut position = None;
        for _ in 0..MAX_ATTEMPTS {
            pinned.clear();
            let head = shared.head();
            let segs = Arc::clone(&shared.segments.read());
            let mut consistent = true;
            let mut last_end = 0;
            for (i, s) in segs.iter().enumerate() {
                if s.first_position >= head && i > 0 {
                    break;
                }
                // `publish` stores end_position, then data_end, then marks
                // a seal, then (later) the head. Loading in the opposite
                // order, a newer value of any of them implies a newer
                // end_position, which the check against the head catches.
                let sealed = s.is_sealed();
                let data_end = s.data_end();
                let end = s.end_position();
                if end > head {
                    consistent = false;
                    break;
                }
                let len = if sealed {
                    s.sealed_len()
                        .map_err(|e| StorageError::io("stat", &s.path, e))?
                } else {
                    data_end.max(HEADER_LEN)
                };
                last_end = end;
                pinned.push((Arc::clone(s), len));
            }
            if consistent && last_end == head && shared.head() == head {
                position = Some(head);
                break;
            }
            std::thread::yield_now();
        }
        let position = position.ok_or_else(|| {
            StorageError::Busy("appends kept racing with the backup snapshot".into())
        })?;
        if manifest.indexed_through > position {
            // Cannot happen (the index is taken before the head); refuse
            // rather than produce an image whose index outruns its log.
            return Err(StorageError::Internal(format!(
                "index covers {} but the image ends at {position}",
                manifest.indexed_through
            )));
        }
        let mut files: Vec<ImageFile> = pinned
            .into_iter()
            .map(|(s, len)| ImageFile {
                name: StoreFile::Segment(s.first_position).wire_name(),
                len,
                file: Arc::clone(&s.file),
            })
            .collect();
        for t in tables.iter() {
            for (name, file, path) in [
                (StoreFile::Table(t.id), t.file(), &t.path),
                (StoreFile::Ids(t.id), t.ids.file(), &t.ids.path),
            ] {
                let len = file.len().map_err(|e| StorageError::io("stat", path, e))?;
                files.push(ImageFile {
                    name: name.wire_name(),
                    len,
                    file: Arc::clone(file),
                });
            }
        }
        Ok(BackupImage {
            position,
            files,
            manifest: manifest.encode(),
        })
    }
}
