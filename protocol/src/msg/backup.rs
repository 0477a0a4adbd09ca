//! Online backup (opcodes 10-12): copy a consistent image of the store
//! through the protocol while it serves traffic.
//!
//! ```text
//! BackupBegin   {}  ->  BackupBeginOk { backup: uint32, position: uint64,
//!                                       files: [{ name: str, len: uint64 }],
//!                                       manifest: bin, max_read: uint32 }
//! BackupRead    { backup: uint32, file: uint32, offset: uint64, len: uint32 }
//!               ->  BackupReadOk { data: bin }
//! BackupEnd     { backup: uint32 }  ->  BackupEndOk {}
//! ```
//!
//! `BackupBegin` pins an image of the store: `position` events (every event
//! below it is in the image, none at or above it), the segment and index
//! files that hold them with the length of each to copy (paths relative to
//! the data directory, `/`-separated), and the bytes of `index/MANIFEST` as
//! of the image. The files stay readable for the session even if the store
//! later merges index tables away. `BackupRead` returns up to `len` bytes of
//! file number `file` (an index into `files`) from `offset`; fewer only at
//! the file's listed length or past `max_read` (at most 1 MiB, less if the
//! server's frames are smaller).
//! A session ends with `BackupEnd` or when its connection closes. Writing
//! the files at their paths plus the manifest gives a data directory that
//! opens as a store with exactly `position` events.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::types::LogPosition;

/// Most bytes one `BackupRead` returns.
pub const MAX_BACKUP_READ: u32 = 1 << 20;

/// Starts a backup session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BackupBegin;

/// A file of a backup image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupFile {
    /// Path relative to the data directory, `/`-separated
    /// (`log/00000000000000000000.seg`, `index/00000000000000000003.sidx`).
    pub name: String,
    /// Bytes of the file that belong to the image.
    pub len: u64,
}

/// The image a backup session pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupBeginOk {
    /// Session id, for `BackupRead` and `BackupEnd`.
    pub backup: u32,
    /// Events in the image: every position below it, none at or above it.
    pub position: LogPosition,
    /// The files to copy, segments in log order first.
    pub files: Vec<BackupFile>,
    /// The bytes of `index/MANIFEST` for the image.
    pub manifest: Bytes,
    /// Most bytes one `BackupRead` returns.
    pub max_read: u32,
}

/// Reads part of a file of a backup image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackupRead {
    /// Session id.
    pub backup: u32,
    /// Index into the session's `files`.
    pub file: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Most bytes wanted (the server caps it at [`MAX_BACKUP_READ`]).
    pub len: u32,
}

/// Ends a backup session, releasing its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackupEnd {
    /// Session id.
    pub backup: u32,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct BackupBeginOkWire {
    pub(crate) backup: u32,
    pub(crate) position: u64,
    pub(crate) files: Vec<BackupFile>,
    pub(crate) manifest: Bytes,
    #[serde(default = "default_max_read")]
    pub(crate) max_read: u32,
}

fn default_max_read() -> u32 {
    MAX_BACKUP_READ
}

impl BackupBeginOk {
    pub(crate) fn to_wire(&self) -> BackupBeginOkWire {
        BackupBeginOkWire {
            backup: self.backup,
            position: self.position.0,
            files: self.files.clone(),
            manifest: self.manifest.clone(),
            max_read: self.max_read,
        }
    }

    pub(crate) fn from_wire(w: BackupBeginOkWire) -> BackupBeginOk {
        BackupBeginOk {
            backup: w.backup,
            position: LogPosition(w.position),
            files: w.files,
            manifest: w.manifest,
            max_read: w.max_read,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct BackupReadWire {
    pub(crate) backup: u32,
    pub(crate) file: u32,
    pub(crate) offset: u64,
    pub(crate) len: u32,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct BackupReadOkWire {
    pub(crate) data: Bytes,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct BackupEndWire {
    pub(crate) backup: u32,
}
