//! # logbook-storage
//!
//! The Logbook storage engine: a segmented append-only log of crc32c
//! records, a per-stream index, exact expected-version checks, group
//! commit with `fdatasync`, crash recovery, verification and consistent
//! backup images. `logbookd` serves it over TCP; it also runs in-process,
//! with no daemon, for tests, tools and single-process applications (see
//! `examples/embedded.rs`):
//!
//! ```no_run
//! use logbook_protocol::{Direction, EventId, ExpectedVersion, NewEvent, StreamName};
//! use logbook_storage::{Store, StoreConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(StoreConfig::new("/tmp/my-store"))?;
//! let stream = StreamName::new("account-42")?;
//! let opened = NewEvent::new(EventId::new_v7(), "Opened", r#"{"owner":"ada"}"#);
//! store.append(&stream, ExpectedVersion::NoStream, vec![opened]).await?;
//! let slice = store.read_stream("account-42", None, Direction::Forward, 100)?;
//! assert_eq!(slice.events.len(), 1);
//! store.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//! The public API:
//! - [`Store`] (`store.rs`): open, append (async, or blocking), read a
//!   stream, read the global log, watch the durable head, stats, close.
//! - [`config`]: [`StoreConfig`] and its defaults; [`error`]: the errors,
//!   split by operation.
//! - [`fs`]: the file-system trait all I/O goes through; the real one and a
//!   fault-injecting in-memory one for tests.
//! - [`histogram`]: the engine's lock-free latency and group-size
//!   histograms, which a server exports as it likes.
//! - [`verify`](mod@verify): the offline consistency check; [`backup`]: consistent
//!   images of a running store.
//!
//! Inside (private):
//! - `record`: the log record (one per appended batch), byte layout.
//! - `segment/`: segment files: `format` (bytes), the live `Segment`,
//!   `reader` (the record reader and the one record walk), `recovery`
//!   (scans of a segment whose end is unknown).
//! - `index/`: the stream index, an LSM: `memtable`, `table` (the `.sidx`
//!   format), `ids` (the event-id index and its `.eids` format), `manifest`,
//!   `flusher` (the thread writing and merging tables).
//! - `stream_map`: the collision-safe map keyed by stream name, and the
//!   store's seeded stream hash.
//! - `shared`: state shared by the threads; `read`: the read paths over it.
//! - `writer`: the writer thread: gathers, checks, encodes and writes
//!   groups; `heads`: the stream heads it checks expected versions against;
//!   `dedup`: event-id uniqueness and resends.
//! - `commit`: the commit pipeline: fdatasync on sync lanes, then publish
//!   and reply in group order.
//! - `lifecycle`: the published metadata, truncations and deletes every
//!   read path filters by, and their snapshot file.
//! - [`scavenge`]: rewriting sealed segments without removed events, and
//!   erase.
//! - `open`: recovery.
//! - `file_cache`: the budget of open file descriptors, a `Vfs` over the
//!   configured one that closes idle read-only files and reopens them.
//! - `fuzzing`, `internals`: entry points for the fuzz targets and the
//!   component benches (hidden; no compatibility promise).
//!
//! File names and the data directory's layout come from
//! `logbook_protocol::layout`, which the client's backup shares.
//!
//! ## The path of an append
//! [`Store::append`] validates the batch, sends it to the writer over a
//! bounded channel and awaits the reply. The writer gathers whatever is
//! queued into a group, checks expected versions against the stream heads,
//! encodes one record per batch into one buffer and writes it with one
//! `write`. A sync lane makes the group durable with one `fdatasync` (a few
//! groups may sync at once), then, in group order, the pipeline publishes
//! it (segment end, index entries, and the durable head that readers and
//! subscribers follow) and replies.
//!
//! ## The path of a read
//! Readers load the durable head, snapshot the segments and the index, and
//! read records with `pread` through a small window buffer. Stream reads go
//! through the index (memtable, then tables, bloom filters skipping most);
//! global reads find the record holding a position with the segment's
//! sparse position index and walk forward or backward.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod backup;
mod catalog;
mod commit;
pub mod config;
mod dedup;
mod erasures;
pub mod error;
mod file_cache;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
mod heads;
pub mod histogram;
mod index;
mod ingest;
#[doc(hidden)]
pub mod internals;
mod lifecycle;
mod open;
mod read;
mod record;
pub mod scavenge;
mod segment;
mod shared;
mod store;
mod stream_map;
pub mod verify;
mod writer;

pub use catalog::StreamPage;
pub use config::{Durability, RecoveryMode, ScavengeHook, StoreConfig, TestKnobs};
pub use error::{AppendError, Limit, ReadError, StorageError};
pub use ingest::LogBatch;
pub use open::{RecoveryReport, Truncation};
pub use read::ReadLimit;
pub use store::{
    AllSlice, EraseReceipt, IdsChecked, LifecycleChange, LifecycleWritten, PendingAppend,
    SCAVENGE_STARTED, SCAVENGED, SCAVENGES, Store, StoreStats, StreamSlice, lifecycle_placeholder,
};
pub use verify::{VerifyReport, verify};
