//! Storage errors, split by operation (after `cberner/redb:src/error.rs`):
//! [`StorageError`] is what the disk or the store's state did wrong,
//! [`AppendError`] and [`ReadError`] add the domain failures of each call.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use logbook_protocol::{EventId, ExpectedVersion, LogPosition, NameError, StreamVersion};

/// A failure of the storage layer itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What we were doing: "open", "write", "fdatasync", ...
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bytes on disk do not form a valid structure. Never served.
    #[error("corrupt data in {} at offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset of the bad structure within the file.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A checksum did not match: the bytes changed after they were written.
    #[error("checksum mismatch in {} at offset {offset}: stored {expected:#010x}, computed {got:#010x}", file.display())]
    ChecksumMismatch {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset of the structure whose checksum failed.
        offset: u64,
        /// Checksum computed over the bytes read.
        got: u32,
        /// Checksum stored beside them.
        expected: u32,
    },
    /// Another process holds the data directory's lock.
    #[error("data directory {} is locked by another process (is another logbookd running on it?)", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// A file was written by a newer (or unknown) format version.
    #[error("{} has format version {found}, this build reads version {supported}", file.display())]
    UnsupportedFormat {
        /// The file.
        file: PathBuf,
        /// Version found in the file header.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
    /// A write or fdatasync failed earlier. What reached the disk is unknown,
    /// so the store refuses all further writes until it is restarted and
    /// recovery has re-read the log (see the README's durability section).
    #[error("writes are disabled until restart: an earlier write failed ({cause})")]
    WriterFailed {
        /// The original failure: typically [`StorageError::Io`], whose
        /// source tells ENOSPC (`StorageFull`) from EIO.
        #[source]
        cause: Arc<StorageError>,
    },
    /// The store is shutting down and accepts no more writes.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An internal invariant does not hold: a bug in Logbook, not a problem
    /// with the data or the request. Never used for bytes read from disk
    /// (those are [`StorageError::Corrupt`]).
    #[error("internal error (a bug in Logbook): {0}")]
    Internal(String),
    /// The store is too busy to do this now; try again.
    #[error("busy: {0}")]
    Busy(String),
    /// The data directory is a backup that was interrupted before it
    /// completed: its files may not form a consistent store.
    #[error("{} is an unfinished backup (remove the marker only if you know better); run the backup again to complete it", path.display())]
    UnfinishedBackup {
        /// The marker file.
        path: PathBuf,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        StorageError::Corrupt {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// The failure that disabled writes, as the error every later write
    /// gets. A failure that is already `WriterFailed` is not wrapped again.
    pub(crate) fn writer_failed(cause: &Arc<StorageError>) -> Self {
        match &**cause {
            StorageError::WriterFailed { cause } => StorageError::WriterFailed {
                cause: Arc::clone(cause),
            },
            _ => StorageError::WriterFailed {
                cause: Arc::clone(cause),
            },
        }
    }

    /// The kind of the I/O error at the root of this one, if there is one:
    /// e.g. `StorageFull` (ENOSPC) for a write refused because the disk is
    /// full, whether it failed now or disabled writes earlier.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StorageError::Io { source, .. } => Some(source.kind()),
            StorageError::WriterFailed { cause } => cause.io_kind(),
            _ => None,
        }
    }

    /// Whether this error means stored bytes are damaged.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StorageError::Corrupt { .. } | StorageError::ChecksumMismatch { .. }
        )
    }
}

/// Which limit an append exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Bytes of one event (type + metadata + data).
    EventBytes,
    /// Bytes of a whole batch.
    BatchBytes,
    /// Number of events in a batch.
    BatchEvents,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::EventBytes => "event size in bytes",
            Limit::BatchBytes => "batch size in bytes",
            Limit::BatchEvents => "events per batch",
        })
    }
}

/// Why an append was refused. Nothing was written in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The stream was not at the version the writer expected.
    #[error("wrong expected version for stream {stream}: expected {expected}, actual {}", match .actual { Some(v) => v.to_string(), None => "no stream".to_string() })]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's last version at commit time (None: no events).
        actual: Option<StreamVersion>,
    },
    /// The batch holds no events.
    #[error("an append needs at least one event")]
    EmptyBatch,
    /// An event id of the batch is already stored and the batch is not a
    /// resend of the batch that stored it (the same ids in the same order,
    /// to the same stream, with the same types, metadata and data), or the
    /// id appears twice in the batch. Event ids are unique in the store
    /// for ever; nothing was written.
    #[error("event id {id} is already stored{}", match .position { Some(p) => format!(" in stream {stream} at position {p}, by a batch this one does not repeat exactly"), None => format!(" earlier in this batch to {stream}") })]
    DuplicateEventId {
        /// The id.
        id: EventId,
        /// The stream the id is stored in (the batch's own, when the id
        /// repeats within the batch).
        stream: String,
        /// The position of the stored event; `None` when the id repeats
        /// within the batch.
        position: Option<LogPosition>,
    },
    /// An event type is not acceptable.
    #[error("event {index}: {source}")]
    InvalidEventType {
        /// Index of the event in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: NameError,
    },
    /// A limit was exceeded.
    #[error("{limit} is {actual}, the limit is {max}")]
    TooLarge {
        /// Which limit.
        limit: Limit,
        /// The size or count found.
        actual: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The stream was hard-deleted: it takes no more events, metadata or
    /// deletes, for ever.
    #[error("stream {stream} is deleted")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// The stream name is reserved: `$$S` is the metadata stream of `S`,
    /// written only by lifecycle operations (set metadata, truncate,
    /// delete).
    #[error("stream {stream} is reserved for stream metadata: use the lifecycle operations")]
    ReservedStream {
        /// The stream.
        stream: String,
    },
    /// Lifecycle settings out of range.
    #[error("invalid stream metadata: {0}")]
    InvalidMetadata(String),
    /// [`crate::Store::resend`]: the batch is not stored (none of its ids
    /// is), and a resend only answers a stored one.
    #[error("the batch to {stream} is not stored")]
    NotStored {
        /// The stream.
        stream: String,
    },
    /// The storage layer failed. If the failure hit this batch's own write or
    /// fdatasync, the batch may or may not be on disk; after a restart,
    /// retrying the same batch (same event ids) is answered idempotently as
    /// long as no other batch was appended to the stream in between.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream was hard-deleted.
    #[error("stream {stream} is deleted")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// The storage layer failed (I/O error or corruption).
    #[error(transparent)]
    Storage(#[from] StorageError),
}
