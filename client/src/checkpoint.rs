//! Checkpoints: where a subscriber resumes after a restart.
//!
//! A [`Checkpoint`] says how far a consumer got; a [`CheckpointStore`]
//! keeps one; [`FileCheckpointStore`] keeps it in a file, replaced
//! atomically. On restart, `from_checkpoint` of
//! [`SubscribeAllOptions`](crate::SubscribeAllOptions) or
//! [`SubscribeStreamOptions`](crate::SubscribeStreamOptions) starts right
//! after it.
//!
//! The exactly-once recipe is on [`CheckpointStore`]; the file format is
//! drawn on [`FileCheckpointStore`] and encoded by `encode`/`decode` below.

use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbook_protocol::{LogPosition, RecordedEvent, StreamVersion, SubscribeFrom};

/// Where a subscriber resumes: everything before `next` has been processed.
///
/// Build one from what the consumer processed: [`Checkpoint::all_after`]
/// or [`Checkpoint::stream_after`] for an event,
/// [`Checkpoint::from_position_marker`] for the position of a
/// [`SubscriptionMessage`](crate::SubscriptionMessage) marker, or let the
/// subscription say ([`Subscription::resume_point`](crate::Subscription::resume_point),
/// [`Subscription::checkpoint_after`](crate::Subscription::checkpoint_after)).
///
/// ```
/// use logbook_client::{Checkpoint, LogPosition, StreamVersion};
///
/// // Processed everything up to and including log position 41.
/// let checkpoint = Checkpoint::All { next: LogPosition(42) };
/// assert_eq!(checkpoint, Checkpoint::from_position_marker(LogPosition(42)));
/// // Processed versions 0..=4 of a stream.
/// let checkpoint = Checkpoint::Stream { next: StreamVersion(5) };
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Checkpoint {
    /// A global-log subscription processed every event before `next`.
    All {
        /// The first log position not yet processed.
        next: LogPosition,
    },
    /// A stream subscription processed every event of its stream before
    /// version `next`.
    Stream {
        /// The first stream version not yet processed.
        next: StreamVersion,
    },
}

impl Checkpoint {
    /// The checkpoint of a global-log subscription that processed `event`
    /// (and everything before it).
    pub fn all_after(event: &RecordedEvent) -> Checkpoint {
        Checkpoint::All {
            next: LogPosition(event.position.0.saturating_add(1)),
        }
    }

    /// The checkpoint of a stream subscription that processed `event` (and
    /// everything of its stream before it).
    pub fn stream_after(event: &RecordedEvent) -> Checkpoint {
        Checkpoint::Stream {
            next: StreamVersion(event.version.0.saturating_add(1)),
        }
    }

    /// The checkpoint of a global-log subscription that processed
    /// everything up to a `CaughtUp`, `FellBehind` or `Checkpoint` message
    /// at `position` (whose meaning is "everything before `position`").
    pub fn from_position_marker(position: LogPosition) -> Checkpoint {
        Checkpoint::All { next: position }
    }

    /// A global-log checkpoint restored from storage: everything before
    /// `next` was processed.
    pub fn all(next: LogPosition) -> Checkpoint {
        Checkpoint::All { next }
    }

    /// A stream checkpoint restored from storage: every version before
    /// `next` was processed.
    pub fn stream(next: StreamVersion) -> Checkpoint {
        Checkpoint::Stream { next }
    }

    /// For a global-log checkpoint, the first position not yet processed
    /// (what to store).
    pub fn log_position(&self) -> Option<LogPosition> {
        match self {
            Checkpoint::All { next } => Some(*next),
            Checkpoint::Stream { .. } => None,
        }
    }

    /// For a stream checkpoint, the first version not yet processed (what
    /// to store).
    pub fn stream_version(&self) -> Option<StreamVersion> {
        match self {
            Checkpoint::Stream { next } => Some(*next),
            Checkpoint::All { .. } => None,
        }
    }

    /// The checkpoint of a global-log subscription after it processed
    /// `message` (an event or a position marker); the same as
    /// [`Subscription::checkpoint_after`](crate::Subscription::checkpoint_after)
    /// for a subscription to the global log, usable where the subscription
    /// itself is out of reach (inside stream adapters).
    pub fn all_after_message(message: &crate::SubscriptionMessage) -> Option<Checkpoint> {
        use crate::SubscriptionMessage as M;
        match message {
            M::Event(e) => Some(Checkpoint::all_after(e)),
            M::CaughtUp { position, .. }
            | M::FellBehind { position, .. }
            | M::Checkpoint { position } => Some(Checkpoint::from_position_marker(*position)),
        }
    }

    /// Where a global-log subscription resumes; `None` for a stream
    /// checkpoint.
    pub(crate) fn all_from(self) -> Option<SubscribeFrom<LogPosition>> {
        match self {
            Checkpoint::All { next } => Some(match next.0.checked_sub(1) {
                Some(last) => SubscribeFrom::After(LogPosition(last)),
                None => SubscribeFrom::Start,
            }),
            Checkpoint::Stream { .. } => None,
        }
    }

    /// Where a stream subscription resumes; `None` for a global-log
    /// checkpoint.
    pub(crate) fn stream_from(self) -> Option<SubscribeFrom<StreamVersion>> {
        match self {
            Checkpoint::Stream { next } => Some(match next.0.checked_sub(1) {
                Some(last) => SubscribeFrom::After(StreamVersion(last)),
                None => SubscribeFrom::Start,
            }),
            Checkpoint::All { .. } => None,
        }
    }
}

/// Keeps one subscriber's [`Checkpoint`]. [`FileCheckpointStore`] is the
/// file-based implementation.
///
/// **Exactly once.** A subscription delivers each event once while the
/// process lives; across a crash, what is processed again depends on when
/// the checkpoint is saved. Saving after the side effects gives
/// at-least-once (a crash between the two repeats the events since the last
/// save); saving before them gives at-most-once. For exactly-once, save the
/// checkpoint **in the same transaction as the side effects**: implement
/// this trait over the database that holds the consumer's results and write
/// both in one transaction (or store the [`Checkpoint`]'s fields yourself
/// and pass the loaded value to `from_checkpoint`).
///
/// ```no_run
/// use futures::TryStreamExt;
/// use logbook_client::{
///     CheckpointStore, Client, FileCheckpointStore, SubscribeAllOptions, SubscriptionMessage,
/// };
///
/// # async fn demo(client: Client) -> Result<(), Box<dyn std::error::Error>> {
/// let store = FileCheckpointStore::new("/var/lib/projector/checkpoint");
/// let options = SubscribeAllOptions::default().from_checkpoint(store.load().await?);
/// let mut subscription = client.subscribe_all(options).await?;
/// while let Some(message) = subscription.try_next().await? {
///     if let SubscriptionMessage::Event(event) = &message {
///         println!("apply {} at {}", event.event_type, event.position);
///     }
///     if let Some(checkpoint) = subscription.checkpoint_after(&message) {
///         store.save(&checkpoint).await?;
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub trait CheckpointStore {
    /// What loading or saving fails with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stored checkpoint; `None` if none was saved yet.
    fn load(&self) -> impl Future<Output = Result<Option<Checkpoint>, Self::Error>> + Send;

    /// Replaces the stored checkpoint. When the future completes the
    /// checkpoint must be durable: a later `load`, after any crash, returns
    /// it (or a later one).
    fn save(&self, checkpoint: &Checkpoint)
    -> impl Future<Output = Result<(), Self::Error>> + Send;
}

const MAGIC: [u8; 4] = *b"LBCP";
const FORMAT_VERSION: u8 = 1;
const KIND_ALL: u8 = 1;
const KIND_STREAM: u8 = 2;
const FILE_LEN: usize = 20;

/// A [`CheckpointStore`] that keeps the checkpoint in one file, replaced
/// atomically: the new checkpoint is written to `<path>.tmp`, synced,
/// renamed over `<path>`, and the directory is synced, so after a crash the
/// file holds either the old checkpoint or the new one, never a torn mix.
/// A damaged file fails `load` with [`io::ErrorKind::InvalidData`].
///
/// The file (20 bytes, integers little-endian):
///
/// ```text
/// offset size field
///  0     4    magic     "LBCP"
///  4     1    version   1
///  5     1    kind      1 = global log (next is a LogPosition),
///                       2 = stream (next is a StreamVersion)
///  6     2    reserved  0
///  8     8    next      u64: everything before it has been processed
/// 16     4    crc32c    of bytes 0..16
/// ```
///
/// Saves through one store (and its clones) are applied in order; do not
/// point two stores, or two processes, at the same file.
///
/// ```no_run
/// use logbook_client::{Checkpoint, CheckpointStore, FileCheckpointStore, LogPosition};
///
/// # async fn demo() -> std::io::Result<()> {
/// let store = FileCheckpointStore::new("projector.checkpoint");
/// store.save(&Checkpoint::All { next: LogPosition(1_000) }).await?;
/// assert_eq!(store.load().await?, Some(Checkpoint::All { next: LogPosition(1_000) }));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct FileCheckpointStore {
    path: Arc<PathBuf>,
    /// Serialises saves: they share the temporary file, and two racing
    /// renames could leave the older checkpoint in place. An async mutex,
    /// held across the blocking write.
    saving: Arc<tokio::sync::Mutex<()>>,
}

impl FileCheckpointStore {
    /// A store over the file at `path` (created by the first save; its
    /// directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> FileCheckpointStore {
        FileCheckpointStore {
            path: Arc::new(path.into()),
            saving: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The checkpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl CheckpointStore for FileCheckpointStore {
    type Error = io::Error;

    fn load(&self) -> impl Future<Output = io::Result<Option<Checkpoint>>> + Send {
        let path = Arc::clone(&self.path);
        async move { blocking(move || read_checkpoint(&path)).await }
    }

    fn save(&self, checkpoint: &Checkpoint) -> impl Future<Output = io::Result<()>> + Send {
        let (path, saving, checkpoint) = (
            Arc::clone(&self.path),
            Arc::clone(&self.saving),
            *checkpoint,
        );
        async move {
            let _turn = saving.lock().await;
            blocking(move || write_checkpoint(&path, &checkpoint)).await
        }
    }
}

/// Runs file I/O on the blocking pool, off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("checkpoint I/O task failed: {e}")))?
}

fn encode(checkpoint: &Checkpoint) -> Vec<u8> {
    let (kind, next) = match checkpoint {
        Checkpoint::All { next } => (KIND_ALL, next.0),
        Checkpoint::Stream { next } => (KIND_STREAM, next.0),
    };
    let mut buf = Vec::with_capacity(FILE_LEN);
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&[FORMAT_VERSION, kind, 0, 0]);
    buf.extend_from_slice(&next.to_le_bytes());
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let bytes: &[u8; FILE_LEN] = bytes
        .try_into()
        .map_err(|_| format!("{} bytes, expected {FILE_LEN}", bytes.len()))?;
    let (head, crc) = bytes.split_at(16);
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "short crc")?);
    let actual = crc32c::crc32c(head);
    if stored != actual {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    let [m0, m1, m2, m3, version, kind, r0, r1, n @ ..] = *bytes;
    if [m0, m1, m2, m3] != MAGIC {
        return Err("not a checkpoint file (bad magic)".to_owned());
    }
    if version != FORMAT_VERSION {
        return Err(format!("unknown format version {version}"));
    }
    if [r0, r1] != [0, 0] {
        return Err("reserved bytes are not zero".to_owned());
    }
    let next = u64::from_le_bytes(
        n.get(..8)
            .and_then(|n| n.try_into().ok())
            .ok_or("short position")?,
    );
    match kind {
        KIND_ALL => Ok(Checkpoint::All {
            next: LogPosition(next),
        }),
        KIND_STREAM => Ok(Checkpoint::Stream {
            next: StreamVersion(next),
        }),
        other => Err(format!("unknown checkpoint kind {other}")),
    }
}

fn read_checkpoint(path: &Path) -> io::Result<Option<Checkpoint>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    decode(&bytes).map(Some).map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("checkpoint file {}: {why}", path.display()),
        )
    })
}

fn write_checkpoint(path: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&encode(checkpoint))?;
        // Without this, the rename can reach the disk before the data
        // (delayed allocation): after a crash the name would point at an
        // empty file.
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // The rename lives in the directory: until the directory is synced, a
    // crash can bring the old checkpoint back, and events acknowledged as
    // processed would be processed again.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_format_round_trips_and_rejects_damage() {
        for cp in [
            Checkpoint::All {
                next: LogPosition(0),
            },
            Checkpoint::All {
                next: LogPosition(u64::MAX),
            },
            Checkpoint::Stream {
                next: StreamVersion(17),
            },
        ] {
            let bytes = encode(&cp);
            assert_eq!(decode(&bytes), Ok(cp));
            for i in 0..FILE_LEN {
                for bit in 0..8 {
                    let mut bad = bytes.clone();
                    bad[i] ^= 1 << bit;
                    assert!(decode(&bad).is_err(), "flip of bit {bit} in byte {i}");
                }
            }
            for n in 0..FILE_LEN {
                assert!(decode(&bytes[..n]).is_err());
            }
        }
    }

    #[test]
    fn resume_points_are_after_the_checkpoint() {
        let all = Checkpoint::All {
            next: LogPosition(10),
        };
        assert_eq!(all.all_from(), Some(SubscribeFrom::After(LogPosition(9))));
        assert_eq!(all.stream_from(), None);
        let zero = Checkpoint::Stream {
            next: StreamVersion(0),
        };
        assert_eq!(zero.stream_from(), Some(SubscribeFrom::Start));
        assert_eq!(zero.all_from(), None);
    }
}
