//! [`Store`]: the engine's public handle. Appends go to the writer thread
//! over a bounded channel; reads run on the caller's thread against the
//! shared state (see `read.rs`); `close` drains the writer, flushes the
//! index and releases the directory lock.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use logbook_protocol::lifecycle::{self as lc, Deletion, StreamMetadata};
use logbook_protocol::{
    AppendResult, Direction, EventId, ExpectedVersion, LogPosition, NewEvent, RecordedEvent,
    StreamName, StreamVersion, validate_event_type,
};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::StoreConfig;
use crate::dedup::WriterIds;
use crate::error::{AppendError, Limit, ReadError, StorageError};
use crate::fs::LockGuard;
use crate::index::flusher;
use crate::index::ids::IdMap;
use crate::lifecycle::OpKind;
use crate::open::{self, RecoveryReport};
use crate::read::ReadLimit;
use crate::record;
use crate::shared::Shared;
use crate::writer::{AppendRequest, Resume, Writer};

/// The writer queue's byte budget in KiB, as semaphore permits.
fn queue_kib(bytes: u64) -> usize {
    (bytes / 1024).clamp(1, u64::from(u32::MAX >> 3)) as usize
}

/// A slice of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSlice {
    /// The events, in the requested direction.
    pub events: Vec<RecordedEvent>,
    /// Version to read from to continue in the same direction; `None` when
    /// nothing more is there now.
    pub next: Option<StreamVersion>,
    /// The stream's last version at the time of the read; `None` if the
    /// stream has no events.
    pub last_version: Option<StreamVersion>,
}

/// A slice of the global log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllSlice {
    /// The events, in the requested direction.
    pub events: Vec<RecordedEvent>,
    /// Position to read from to continue in the same direction; `None` when
    /// nothing more is there now.
    pub next: Option<LogPosition>,
    /// Number of durable events when the read started (the next position to
    /// be assigned).
    pub head: LogPosition,
    /// How far the read scanned: going forward, `events` are every live
    /// event in `[from, through)`; going backward, in `[through, from]`.
    /// Removed events (deleted, truncated, expired) leave holes in the
    /// positions; consecutive reads from `next` tile the log with no gap,
    /// so a reader can still prove it missed nothing. A read over a long
    /// removed range may return no events and a `through` past `from`.
    pub through: LogPosition,
}

/// A change to a stream's lifecycle ([`Store::submit_lifecycle_at`]).
#[derive(Clone, Debug, PartialEq)]
pub enum LifecycleChange {
    /// [`Store::set_metadata`].
    SetMetadata(StreamMetadata),
    /// [`Store::truncate`].
    Truncate(StreamVersion),
    /// [`Store::delete_stream`].
    Delete {
        /// Soft or hard.
        mode: Deletion,
        /// The stream's expected version.
        expected: ExpectedVersion,
    },
    /// An erase on a replica of a cluster: the tombstone of
    /// [`Store::erase`], its segment sealed after it, and the stream owed
    /// to [`Store::finish_erasures`], which rewrites its segments.
    Erase,
}

impl LifecycleChange {
    fn kind(self) -> OpKind {
        match self {
            LifecycleChange::SetMetadata(metadata) => OpKind::SetMetadata(metadata),
            LifecycleChange::Truncate(before) => OpKind::Truncate(before.0),
            LifecycleChange::Delete { mode, expected } => OpKind::Delete {
                mode,
                expected,
                erase: false,
            },
            LifecycleChange::Erase => OpKind::Delete {
                mode: Deletion::Hard,
                expected: ExpectedVersion::Any,
                erase: true,
            },
        }
    }
}

/// The event a lifecycle change is sent to the writer as, with the id its
/// resolved state is written under.
pub fn lifecycle_placeholder(id: EventId) -> NewEvent {
    NewEvent::new(id, lc::EVENT_METADATA, Vec::new())
}

/// What a lifecycle operation wrote (or, from
/// [`Store::stream_lifecycle`], the latest one).
#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleWritten {
    /// The position of its event in `$$stream`.
    pub position: LogPosition,
    /// Its version in `$$stream` (the metadata's version, for an expected
    /// version on the next change).
    pub meta_version: StreamVersion,
    /// The stream's lifecycle state after it.
    pub state: lc::StreamLifecycle,
}

/// The stream of scavenge reports.
pub const SCAVENGES: &str = "$scavenges";
/// Event type marking a scavenge's start (the point it scavenges up to).
pub const SCAVENGE_STARTED: &str = "$scavenge-started";
/// Event type of a scavenge's report.
pub const SCAVENGED: &str = "$scavenged";

/// What an erase did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EraseReceipt {
    /// The position of the tombstone it wrote.
    pub position: LogPosition,
    /// Segment files it rewrote.
    pub segments_rewritten: u64,
    /// Events it removed from disk (the stream's, and other removed ones
    /// in the same segments).
    pub events_removed: u64,
    /// Bytes of those segments before and after.
    pub bytes_before: u64,
    /// See `bytes_before`.
    pub bytes_after: u64,
    /// How long it took.
    pub duration: std::time::Duration,
}

/// A snapshot of the engine's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Durable events (the next position).
    pub head: u64,
    /// Appends acknowledged since start.
    pub appends: u64,
    /// Events written since start.
    pub events_written: u64,
    /// Group commits (one write each) since start.
    pub groups: u64,
    /// fdatasync calls on segments since start.
    pub fsyncs: u64,
    /// Bytes of records written since start.
    pub bytes_written: u64,
    /// Appends refused for a wrong expected version since start.
    pub conflicts: u64,
    /// Streams with at least one event.
    pub streams: u64,
    /// Segments in the log.
    pub segments: u64,
    /// Bytes of segment files (sealed segments' length, the active one's
    /// durable end).
    pub log_bytes: u64,
    /// Index tables on disk.
    pub index_tables: u64,
    /// Bytes of index tables.
    pub index_bytes: u64,
    /// Index entries in memory (active and frozen memtables).
    pub memtable_entries: u64,
    /// Index flushes and merges since start.
    pub index_flushes: u64,
    /// Index merges since start.
    pub index_merges: u64,
    /// Groups the writer delayed because index flushes or merges fell
    /// behind, since start.
    pub index_slowdowns: u64,
    /// Times the writer stopped until the index caught up, since start.
    pub index_stalls: u64,
    /// Index flushes and merges that failed since start (each is retried
    /// after a backoff; what it would have written stays readable).
    pub index_failures: u64,
    /// Entries of sealed segments' sparse position indexes in memory (16
    /// bytes each; at most 4M: the least recently loaded are dropped).
    pub position_index_entries: u64,
    /// Segment and index files open for reading now, within
    /// [`StoreConfig::max_open_files`](crate::StoreConfig::max_open_files)
    /// (the active segment and files being written are not counted).
    pub open_files: u64,
    /// Files reopened since start after being closed to stay within it.
    pub file_reopens: u64,
    /// Streams with a lifecycle state (metadata, a truncation or a
    /// delete), which reads filter by.
    pub lifecycle_streams: u64,
    /// Streams deleted now: soft (with nothing appended since) or hard.
    pub deleted_streams: u64,
    /// Streams erased whose events this replica of a cluster has yet to
    /// remove from its files ([`Store::finish_erasures`]).
    pub erasures_owed: u64,
    /// Scavenges completed since start.
    pub scavenges: u64,
    /// Segments rewritten by scavenges and erases since start.
    pub scavenge_segments: u64,
    /// Bytes they gave back since start.
    pub scavenge_bytes_reclaimed: u64,
    /// The running (or last) scavenge's progress: segments to rewrite,
    /// and done.
    pub scavenge_todo: u64,
    /// See `scavenge_todo`.
    pub scavenge_done: u64,
}

/// A validated append, its reply channel, and the writer's queue.
/// What a request to the writer is ([`Store::request`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// An append (a lifecycle change's, with its operation).
    Append,
    /// A resend only: refused with `NotStored` if it is new.
    ResendOnly,
    /// A record copied from another replica whose events were removed
    /// there: ids only ([`crate::record::FLAG_REMOVED`]).
    Removed,
}

type Prepared = (
    AppendRequest,
    oneshot::Receiver<Result<AppendResult, AppendError>>,
    mpsc::Sender<AppendRequest>,
);

/// What the index tables said of an append's event ids
/// ([`Store::check_ids`]), for [`Store::submit_checked`].
#[derive(Debug)]
pub struct IdsChecked {
    check: crate::dedup::IdCheck,
    /// The ids it is about, in order.
    ids: Vec<EventId>,
    /// The store that answered (its seeded hashes are in `check`).
    store: usize,
}

impl IdsChecked {
    /// Whether it answers for `events` in `store`.
    fn is_for(&self, store: &Store, events: &[NewEvent]) -> bool {
        self.store == Arc::as_ptr(&store.inner.shared) as usize
            && self.ids.len() == events.len()
            && self.ids.iter().zip(events).all(|(id, e)| *id == e.id)
    }
}

/// The result of an append queued by [`Store::submit`].
#[derive(Debug)]
pub struct PendingAppend {
    rx: oneshot::Receiver<Result<AppendResult, AppendError>>,
}

impl std::future::Future for PendingAppend {
    type Output = Result<AppendResult, AppendError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(AppendError::Storage(StorageError::ShuttingDown))))
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: RwLock<Option<mpsc::Sender<AppendRequest>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    merger: Mutex<Option<JoinHandle<()>>>,
    flush_tx: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    report: RecoveryReport,
    /// Released by `close`, so that the directory can be reopened at once.
    lock: Mutex<Option<Box<dyn LockGuard>>>,
    /// The writer queue's byte budget, in KiB (`writer_queue_bytes`).
    queue_kib: Arc<tokio::sync::Semaphore>,
}

/// An open event store. Cheap to clone; all clones share one engine.
/// The engine shuts down when [`Store::close`] is called or the last clone
/// is dropped.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.shared.config.data_dir)
            .field("head", &self.inner.shared.head())
            .finish()
    }
}

impl Store {
    /// Opens the store in `config.data_dir`, creating it if needed and
    /// recovering from a crash if there was one.
    pub fn open(config: StoreConfig) -> Result<Store, StorageError> {
        let opened = open::open(config)?;
        let shared = Arc::clone(&opened.shared);
        let (tx, rx) = mpsc::channel(shared.config.writer_queue);
        let (flush_tx, flush_rx) = std::sync::mpsc::channel();
        // The ids of the unindexed tail recovery replayed: the writer's
        // first generation, or (if recovery replayed more than a memtable's
        // worth) the frozen memtable's, with the writer starting afresh.
        let tail_start = shared.indexed_through.load(Ordering::Acquire);
        let head = shared.head();
        let full = shared.index.read().active.len() >= shared.config.index_flush_entries;
        // A generation holds a memtable's worth of ids (bounded: a huge
        // setting must not reserve gigabytes up front).
        let capacity = shared.config.index_flush_entries.min(4 << 20);
        let ids = if full {
            let frozen = Arc::new(opened.tail_ids);
            let froze = shared.freeze_active(Arc::clone(&frozen));
            let older = if froze {
                vec![(tail_start, head, frozen)]
            } else {
                Vec::new()
            };
            WriterIds::new(shared.hasher, IdMap::default(), head, older, capacity)
        } else {
            WriterIds::new(
                shared.hasher,
                opened.tail_ids,
                tail_start,
                Vec::new(),
                capacity,
            )
        };
        let writer = Writer::new(
            Arc::clone(&shared),
            rx,
            flush_tx.clone(),
            Resume {
                active: opened.active,
                pidx: opened.pidx,
                records_in_segment: opened.records_in_segment,
                last_timestamp: opened.last_timestamp,
                ids,
            },
        )?;
        let spawn_err = |e| StorageError::io("spawn thread", &shared.config.data_dir, e);
        let writer = std::thread::Builder::new()
            .name("logbook-writer".into())
            .spawn(move || writer.run())
            .map_err(spawn_err)?;
        let (merge_tx, merge_rx) = std::sync::mpsc::channel();
        let ms = Arc::clone(&shared);
        let merger = std::thread::Builder::new()
            .name("logbook-merge".into())
            .spawn(move || flusher::run_merger(ms, merge_rx))
            .map_err(spawn_err)?;
        // Tables left unmerged by the last run.
        let _ = merge_tx.send(());
        let fs = Arc::clone(&shared);
        let flusher = std::thread::Builder::new()
            .name("logbook-index".into())
            .spawn(move || flusher::run_flusher(fs, flush_rx, merge_tx))
            .map_err(spawn_err)?;
        if full {
            let _ = flush_tx.send(());
        }
        let shared_config_queue_bytes = shared.config.writer_queue_bytes;
        Ok(Store {
            inner: Arc::new(Inner {
                shared,
                tx: RwLock::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                flusher: Mutex::new(Some(flusher)),
                merger: Mutex::new(Some(merger)),
                flush_tx: Mutex::new(Some(flush_tx)),
                report: opened.report,
                lock: Mutex::new(Some(opened.lock)),
                queue_kib: Arc::new(tokio::sync::Semaphore::new(queue_kib(
                    shared_config_queue_bytes,
                ))),
            }),
        })
    }

    /// The engine's shared state (for the crate's own `impl Store` blocks).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// What recovery found and did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The configuration the store runs with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.shared.config
    }

    /// Checks a batch against the limits; returns its record length.
    fn validate(&self, stream: &StreamName, events: &[NewEvent]) -> Result<usize, AppendError> {
        let c = &self.inner.shared.config;
        if events.is_empty() {
            return Err(AppendError::EmptyBatch);
        }
        if events.len() as u64 > u64::from(c.max_batch_events) {
            return Err(AppendError::TooLarge {
                limit: Limit::BatchEvents,
                actual: events.len() as u64,
                max: u64::from(c.max_batch_events),
            });
        }
        for (index, e) in events.iter().enumerate() {
            validate_event_type(&e.event_type)
                .map_err(|source| AppendError::InvalidEventType { index, source })?;
            let size = (e.event_type.len() + e.metadata.len() + e.data.len()) as u64;
            if size > c.max_event_bytes {
                return Err(AppendError::TooLarge {
                    limit: Limit::EventBytes,
                    actual: size,
                    max: c.max_event_bytes,
                });
            }
        }
        let len = record::encoded_len(stream, events);
        if len as u64 > c.max_batch_bytes {
            return Err(AppendError::TooLarge {
                limit: Limit::BatchBytes,
                actual: len as u64,
                max: c.max_batch_bytes,
            });
        }
        Ok(len)
    }

    /// A request for the writer. Metadata streams are written only by
    /// lifecycle operations (`op`), and read by a resend (`resend_only`).
    pub(crate) fn request(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        checked: Option<IdsChecked>,
        op: Option<crate::lifecycle::Op>,
        kind: RequestKind,
    ) -> Result<Prepared, AppendError> {
        if op.is_none()
            && kind == RequestKind::Append
            && logbook_protocol::lifecycle::meta_target(stream.as_str()).is_some()
        {
            return Err(AppendError::ReservedStream {
                stream: stream.as_str().to_owned(),
            });
        }
        let encoded_len = match kind {
            // Ids only, copied as they are: no type to check.
            RequestKind::Removed => record::encoded_len(stream, &events),
            _ => self.validate(stream, &events)?,
        };
        // The tables' part of the id check, here on the caller's thread
        // rather than on the writer's (unless the caller did it already,
        // for these very events).
        let id_check = match checked {
            Some(c) if c.is_for(self, &events) => c.check,
            _ => crate::dedup::precheck(&self.inner.shared, &events)?,
        };
        let tx = self
            .inner
            .tx
            .read()
            .clone()
            .ok_or(AppendError::Storage(StorageError::ShuttingDown))?;
        let (reply, rx) = oneshot::channel();
        let req = AppendRequest {
            _queued: None,
            hash: self.inner.shared.hasher.hash(stream),
            stream: stream.clone(),
            expected,
            events,
            encoded_len,
            id_check,
            reply,
            submitted: std::time::Instant::now(),
            op,
            seal_after: false,
            at: None,
            resend_only: kind == RequestKind::ResendOnly,
            ingest: None,
            removed: kind == RequestKind::Removed,
        };
        Ok((req, rx, tx))
    }

    /// What `req` is charged on the writer queue's byte budget, in KiB:
    /// its record and its events' in-memory overhead, at most the whole
    /// budget (so that a batch larger than it waits for an empty queue
    /// instead of for ever).
    fn queue_charge(&self, req: &AppendRequest) -> u32 {
        let bytes = req.encoded_len as u64 + 128 * req.events.len() as u64;
        (bytes.div_ceil(1024) as u32).clamp(1, queue_kib(self.config().writer_queue_bytes) as u32)
    }

    /// Appends `events` to `stream` if the stream is at `expected`.
    ///
    /// Returns once the batch is durable (after the `fdatasync` that covers
    /// it, in the default durability mode). The batch is atomic: after any
    /// crash all of it is readable or none. Appending the very batch that was
    /// the stream's last (same event ids) returns the original result: a
    /// retry after a lost acknowledgement neither conflicts nor duplicates.
    pub async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        self.submit(stream, expected, events).await?.await
    }

    /// [`Store::append`] with the commit time `at_us` (microseconds since
    /// the epoch) instead of the clock's, raised to the previous record's
    /// if it is earlier (timestamps never go backwards). A replicated log
    /// applies its appends with the time the leader chose, so every replica
    /// writes the same bytes.
    pub async fn append_at(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        at_us: i64,
    ) -> Result<AppendResult, AppendError> {
        self.submit_at(stream, expected, events, at_us).await?.await
    }

    /// [`Store::submit`] with the commit time `at_us` ([`Store::append_at`]).
    pub async fn submit_at(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        at_us: i64,
    ) -> Result<PendingAppend, AppendError> {
        if stream.as_str() == SCAVENGES {
            return Err(AppendError::ReservedStream {
                stream: SCAVENGES.to_owned(),
            });
        }
        let (mut req, rx, tx) =
            self.request(stream, expected, events, None, None, RequestKind::Append)?;
        req.at = Some(at_us);
        self.enqueue((req, rx, tx)).await
    }

    /// Answers a batch stored earlier (the same ids, stream and content,
    /// as [`Store::append`] answers a resend) with its original result,
    /// writing nothing; a batch none of whose ids is stored is refused with
    /// [`AppendError::NotStored`], and one that meets stored ids otherwise
    /// as an append would be. With `at`, the stored batch counts only if
    /// it was committed at that time ([`Store::append_at`]): the same
    /// batch written at another time is also `NotStored`. A replica
    /// re-applying, after a restart, the commands its event log may
    /// already hold tells with it which ones wrote (each command has a
    /// time of its own, so a later command that wrote the same ids is not
    /// taken for an earlier, refused one).
    pub async fn resend(
        &self,
        stream: &StreamName,
        events: Vec<NewEvent>,
        at: Option<i64>,
    ) -> Result<AppendResult, AppendError> {
        // A metadata stream too: a lifecycle change is resent as the event
        // it was sent to the writer as (`lifecycle_placeholder`).
        let (mut req, rx, tx) = self.request(
            stream,
            ExpectedVersion::Any,
            events,
            None,
            None,
            RequestKind::ResendOnly,
        )?;
        req.at = at;
        self.enqueue((req, rx, tx)).await?.await
    }

    /// Queues an append for the writer and returns once it is queued, with
    /// a future of its result. Appends submitted one after another are
    /// committed in that order, which lets a connection pipeline many
    /// appends while keeping the order its client sent them in.
    pub async fn submit(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<PendingAppend, AppendError> {
        self.submit_inner(stream, expected, events, None, None)
            .await
    }

    /// Looks `events`' ids up in the index tables: the part of an append
    /// that may read the disk (an id file's summary the first time one is
    /// needed, a block when an id may be there). [`Store::submit`] does it
    /// itself, on the caller's thread; a server that must not wait for the
    /// disk on its network threads does it first where waiting is fine
    /// (or under [`crate::fs::without_waiting`]), then calls
    /// [`Store::submit_checked`] with the same events. The answer may be
    /// old by then: the writer looks up whatever the tables gained since.
    pub fn check_ids(&self, ids: &[EventId]) -> Result<IdsChecked, AppendError> {
        Ok(IdsChecked {
            check: crate::dedup::precheck_ids(&self.inner.shared, ids.iter(), ids.len())?,
            ids: ids.to_vec(),
            store: Arc::as_ptr(&self.inner.shared) as usize,
        })
    }

    /// [`Store::submit`] with the ids already looked up by
    /// [`Store::check_ids`] for these very `events`' ids, in this store (a
    /// check of other ids, or of another store, is ignored and done
    /// again).
    pub async fn submit_checked(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        checked: IdsChecked,
    ) -> Result<PendingAppend, AppendError> {
        self.submit_inner(stream, expected, events, Some(checked), None)
            .await
    }

    /// [`Store::submit_inner`] for an internal request, sealing the active
    /// segment after it if asked.
    async fn submit_sealing(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        op: Option<crate::lifecycle::Op>,
        seal_after: bool,
    ) -> Result<PendingAppend, AppendError> {
        let (mut req, rx, tx) =
            self.request(stream, expected, events, None, op, RequestKind::Append)?;
        req.seal_after = seal_after;
        self.enqueue((req, rx, tx)).await
    }

    async fn submit_inner(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        checked: Option<IdsChecked>,
        op: Option<crate::lifecycle::Op>,
    ) -> Result<PendingAppend, AppendError> {
        if stream.as_str() == SCAVENGES {
            return Err(AppendError::ReservedStream {
                stream: SCAVENGES.to_owned(),
            });
        }
        let prepared = self.request(stream, expected, events, checked, op, RequestKind::Append)?;
        self.enqueue(prepared).await
    }

    /// Takes the request's room on the writer queue's byte budget, then
    /// queues it for the writer.
    pub(crate) async fn enqueue(&self, prepared: Prepared) -> Result<PendingAppend, AppendError> {
        let (mut req, rx, tx) = prepared;
        let charge = self.queue_charge(&req);
        req._queued = Some(
            Arc::clone(&self.inner.queue_kib)
                .acquire_many_owned(charge)
                .await
                .map_err(|_| AppendError::Storage(StorageError::ShuttingDown))?,
        );
        tx.send(req)
            .await
            .map_err(|_| AppendError::Storage(StorageError::ShuttingDown))?;
        Ok(PendingAppend { rx })
    }

    /// Sets `stream`'s metadata (retention and custom keys) if its
    /// metadata stream `$$stream` is at `expected` (`Any` to skip the
    /// check). Replaces the previous metadata whole, except that
    /// `truncate_before` only rises. Returns once durable; takes effect on
    /// every read path at once.
    pub async fn set_metadata(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        metadata: StreamMetadata,
    ) -> Result<LifecycleWritten, AppendError> {
        self.lifecycle(stream, expected, OpKind::SetMetadata(metadata), false)
            .await
    }

    /// Removes `stream`'s events below version `before` from every read
    /// (the rest keep their versions and positions). Only rises: a lower
    /// `before` than the current one changes nothing.
    pub async fn truncate(
        &self,
        stream: &StreamName,
        before: StreamVersion,
    ) -> Result<LifecycleWritten, AppendError> {
        self.lifecycle(
            stream,
            ExpectedVersion::Any,
            OpKind::Truncate(before.0),
            false,
        )
        .await
    }

    /// Deletes `stream` if it is at `expected`. Soft: reads say it is not
    /// found, and a later append (expecting `NoStream` or `Any`) continues
    /// its versions where they stopped. Hard: reads and appends fail with
    /// `StreamDeleted` for ever. Every read path stops serving its events
    /// the moment this returns.
    pub async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        mode: Deletion,
    ) -> Result<LifecycleWritten, AppendError> {
        self.lifecycle(
            stream,
            ExpectedVersion::Any,
            OpKind::Delete {
                mode,
                expected,
                erase: false,
            },
            false,
        )
        .await
    }

    /// Queues a lifecycle change of `stream` written as the event `id` of
    /// its metadata stream (if that stream is at `meta_expected`), at the
    /// commit time `at_us` ([`Store::append_at`]), and returns its result
    /// to come ([`Store::lifecycle_written`] reads back the state it
    /// left). A replicated log applies the changes its leader proposed
    /// with it: the same id and time give the same event on every replica,
    /// and [`Store::resend`] of `[lifecycle_placeholder(id)]` to the
    /// metadata stream at `at_us` tells whether it was written.
    pub async fn submit_lifecycle_at(
        &self,
        stream: &StreamName,
        meta_expected: ExpectedVersion,
        change: LifecycleChange,
        id: EventId,
        at_us: i64,
    ) -> Result<PendingAppend, AppendError> {
        let erase = change == LifecycleChange::Erase;
        let (meta, op) = self.lifecycle_op(stream, change.kind())?;
        let (mut req, rx, tx) = self.request(
            &meta,
            meta_expected,
            vec![lifecycle_placeholder(id)],
            None,
            Some(op),
            RequestKind::Append,
        )?;
        req.at = Some(at_us);
        if erase {
            // Owed before the tombstone can be written: a crash in
            // between leaves a debt with nothing to erase yet, never a
            // tombstone whose events stay in the files.
            self.owe_erasure(stream.as_str())
                .map_err(AppendError::Storage)?;
            req.seal_after = true;
        }
        self.enqueue((req, rx, tx)).await
    }

    /// Records that the events of `stream` must be erased from this
    /// replica's files ([`Store::finish_erasures`]), durably.
    pub(crate) fn owe_erasure(&self, stream: &str) -> Result<(), StorageError> {
        let shared = &self.inner.shared;
        shared
            .erasures
            .owe(&*shared.config.vfs, &shared.config.data_dir, stream)
    }

    /// Owes, durably, the erasure of every stream whose state is erased
    /// ([`Store::finish_erasures`] then rewrites what still holds their
    /// events; where nothing does, it writes nothing). For a store that
    /// may hold an erased stream's bytes without owing it: a backup image,
    /// which carries the events but not the record of debts, seeding a
    /// cluster. Returns how many are owed.
    pub fn owe_erased_streams(&self) -> Result<usize, StorageError> {
        let erased: Vec<String> = self
            .inner
            .shared
            .lifecycle
            .all()
            .into_iter()
            .filter(|e| e.state.is_hard_deleted() && e.state.erased)
            .map(|e| e.state.stream.clone())
            .collect();
        let shared = &self.inner.shared;
        shared.erasures.owe_all(
            &*shared.config.vfs,
            &shared.config.data_dir,
            erased.iter().map(String::as_str),
        )?;
        Ok(erased.len())
    }

    /// How many streams this replica still owes an erasure of (their
    /// tombstones applied, or about to be; their events maybe still in
    /// its files).
    pub fn erasures_owed(&self) -> usize {
        self.inner.shared.erasures.len()
    }

    /// Rewrites, for each stream this replica owes an erasure of whose
    /// tombstone is in a sealed segment, the segments that hold its
    /// events, and takes it off the record ([`LifecycleChange::Erase`]).
    /// Returns how many it erased. Blocks (waits for a running scavenge).
    /// A stream whose rewrite fails stays owed, and the first error is
    /// returned after the others were tried.
    pub fn finish_erasures(&self) -> Result<usize, StorageError> {
        let shared = &self.inner.shared;
        let _one = shared.scavenging.lock();
        let mut done = 0;
        let mut first_error = None;
        for stream in shared.erasures.owed() {
            if shared.closing.load(Ordering::Relaxed) {
                return Err(StorageError::ShuttingDown);
            }
            // Not applied here yet (the entry comes again after a crash).
            let Some(w) = self
                .stream_lifecycle(&stream)
                .filter(|w| w.state.is_hard_deleted() && w.state.erased)
            else {
                continue;
            };
            let sealed = w.position.0 + 1;
            {
                let segs = Arc::clone(&shared.segments.read());
                let holding = Shared::segment_index_of(&segs, w.position.0)
                    .and_then(|i| segs.get(i))
                    .is_some_and(|s| s.is_sealed());
                if !holding {
                    continue;
                }
            }
            let started = std::time::Instant::now();
            let outcome = self
                .rewrite_stream(&stream, sealed)
                .map(|report| EraseReceipt {
                    position: w.position,
                    segments_rewritten: report.segments_rewritten,
                    events_removed: report.events_removed,
                    bytes_before: report.bytes_before,
                    bytes_after: report.bytes_after,
                    duration: started.elapsed(),
                });
            let recorded = shared.erasures.ended(
                &*shared.config.vfs,
                &shared.config.data_dir,
                &stream,
                outcome.as_ref().map(|r| *r).map_err(ToString::to_string),
            );
            match outcome.and(recorded) {
                Ok(()) => done += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "erasing a stream's events from this replica's segments failed; it is tried again");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Waits until this replica erased `stream`'s events from its files
    /// ([`Store::finish_erasures`]), or failed to, or `timeout` passed
    /// (`Busy`): what the rewrite did. Blocks.
    pub fn wait_erased(
        &self,
        stream: &StreamName,
        timeout: Option<std::time::Duration>,
    ) -> Result<EraseReceipt, StorageError> {
        let shared = &self.inner.shared;
        shared.erasures.wait(stream.as_str(), timeout, || {
            shared.closing.load(Ordering::Relaxed)
        })
    }

    /// The metadata stream of `stream` (`$$stream`), where its lifecycle
    /// events go.
    pub fn metadata_stream(stream: &StreamName) -> Result<StreamName, AppendError> {
        StreamName::new(lc::meta_stream(stream.as_str())).map_err(|_| {
            AppendError::InvalidMetadata(format!(
                "stream name too long to have metadata (at most {} bytes)",
                logbook_protocol::types::MAX_STREAM_NAME_BYTES - lc::META_STREAM_PREFIX.len()
            ))
        })
    }

    /// A lifecycle change checked (the stream may have one, the metadata
    /// is valid and fits), as the writer's operation on the metadata
    /// stream it returns.
    fn lifecycle_op(
        &self,
        stream: &StreamName,
        kind: OpKind,
    ) -> Result<(StreamName, crate::lifecycle::Op), AppendError> {
        if lc::meta_target(stream.as_str()).is_some() || stream.as_str() == SCAVENGES {
            return Err(AppendError::ReservedStream {
                stream: stream.as_str().to_owned(),
            });
        }
        let meta = Store::metadata_stream(stream)?;
        if let OpKind::SetMetadata(metadata) = &kind {
            metadata.validate().map_err(AppendError::InvalidMetadata)?;
            let json = metadata.to_json().len() as u64;
            let max = self.config().max_event_bytes / 2;
            if json > max {
                return Err(AppendError::TooLarge {
                    limit: Limit::EventBytes,
                    actual: json,
                    max,
                });
            }
        }
        let op = crate::lifecycle::Op {
            target: stream.clone(),
            target_hash: self.inner.shared.hasher.hash(stream.as_str()),
            kind,
        };
        Ok((meta, op))
    }

    async fn lifecycle(
        &self,
        stream: &StreamName,
        meta_expected: ExpectedVersion,
        kind: OpKind,
        seal_after: bool,
    ) -> Result<LifecycleWritten, AppendError> {
        let (meta, op) = self.lifecycle_op(stream, kind)?;
        let result = self
            .submit_sealing(
                &meta,
                meta_expected,
                vec![lifecycle_placeholder(EventId::new_v7())],
                Some(op),
                seal_after,
            )
            .await?
            .await?;
        self.lifecycle_written(stream, &result)
    }

    /// What a lifecycle change of `stream` that gave `result` left: its
    /// event read back from the metadata stream.
    pub fn lifecycle_written(
        &self,
        stream: &StreamName,
        result: &AppendResult,
    ) -> Result<LifecycleWritten, AppendError> {
        let meta = Store::metadata_stream(stream)?;
        let written = self
            .inner
            .shared
            .read_stream(
                meta.as_str(),
                result.first_version.0,
                Direction::Forward,
                1.into(),
            )
            .map_err(AppendError::Storage)?
            .0;
        let state = written
            .first()
            .filter(|e| e.position == result.first_position)
            .and_then(|e| lc::StreamLifecycle::from_json(&e.data).ok())
            .ok_or_else(|| {
                AppendError::Storage(StorageError::Internal(format!(
                    "the lifecycle event of {stream} at {} cannot be read back",
                    result.first_position
                )))
            })?;
        Ok(LifecycleWritten {
            position: result.first_position,
            meta_version: result.first_version,
            state,
        })
    }

    /// Gives back the disk that removed events take (see
    /// [`crate::scavenge`]): seals the active segment (not on a replica
    /// of a cluster, which writes nothing to the log), then rewrites the
    /// sealed segments holding events of streams whose lifecycle changed
    /// since the last scavenge, one at a time. Blocks until done (call it
    /// from a thread that may block, not from an async task). One runs at
    /// a time: a second is refused with [`StorageError::Busy`].
    pub fn scavenge(
        &self,
        options: crate::scavenge::ScavengeOptions,
    ) -> Result<crate::scavenge::ScavengeReport, StorageError> {
        let shared = &self.inner.shared;
        let _one = shared
            .scavenging
            .try_lock()
            .ok_or_else(|| StorageError::Busy("a scavenge or an erase is running".into()))?;
        let started = std::time::Instant::now();
        // The streams first: a state published from here on is the next
        // scavenge's (its events may be in the segment sealed below).
        let streams = shared.streams_to_scavenge();
        // A replica of a cluster writes nothing to the log, which is the
        // cluster's (the same on every replica), and so seals nothing: it
        // rewrites the segments sealed already.
        let replica = shared.config.keep_removed_ids;
        let run = || -> Result<crate::scavenge::ScavengeReport, StorageError> {
            let sealed = if replica {
                let segs = Arc::clone(&shared.segments.read());
                segs.iter()
                    .rev()
                    .find(|s| s.is_sealed())
                    .map_or(0, |s| s.end_position())
            } else {
                let mark = self.system_event(SCAVENGE_STARTED, b"{}".to_vec(), true)?;
                mark.last_position.0 + 1
            };
            self.ready_to_rewrite(sealed)?;
            let (firsts, later) = shared.segments_to_scavenge(&streams, sealed)?;
            // Removed events in the active segment: the next scavenge's
            // (a scavenge that seals has none).
            shared.lifecycle.mark_dirty(later);
            shared.rewrite_segments(&firsts, sealed, true, options)
        };
        let mut report = run().inspect_err(|_| shared.lifecycle.mark_all_dirty())?;
        report.duration = started.elapsed();
        // Counted once its report is in the log: Stats never shows a
        // scavenge whose `$scavenged` event cannot be read yet.
        if !replica {
            self.system_event(SCAVENGED, report.to_json().into_bytes(), false)?;
        }
        shared.counters.scavenges.fetch_add(1, Ordering::Relaxed);
        Ok(report)
    }

    /// Whether a scavenge may find anything to remove now (a stream's
    /// lifecycle changed since the last one, or since start, or a stream
    /// has `max_age` or `max_count`): a scheduled scavenge skips its turn
    /// when not, instead of sealing a segment for nothing.
    pub fn scavenge_due(&self) -> bool {
        self.inner.shared.lifecycle.scavenge_due()
    }

    /// Erases `stream` for good (the right to be forgotten): a hard delete
    /// (its name stays reserved, its metadata is forgotten), the
    /// active segment sealed right after it, then a rewrite of exactly the
    /// segments that hold its events and older metadata. Afterwards none
    /// of its events' bytes are in any file of the data directory (the
    /// index holds only hashes, positions and event ids). Backups taken
    /// before still hold them. Blocks, like [`Store::scavenge`] (and waits
    /// for a running one).
    pub fn erase(&self, stream: &StreamName) -> Result<EraseReceipt, AppendError> {
        let shared = &self.inner.shared;
        let _one = shared.scavenging.lock();
        let started = std::time::Instant::now();
        // Erased before (a retry after a lost reply, or a run a crash cut
        // short): the same tombstone, sealed again with a mark, and the
        // rewrite run again. A stream hard-deleted (not erased) gets an
        // erase's tombstone, which forgets its metadata.
        let erased = self
            .stream_lifecycle(stream.as_str())
            .filter(|w| w.state.is_hard_deleted() && w.state.erased);
        let (position, sealed) = match erased {
            Some(w) => {
                let mark = self.system_event(SCAVENGE_STARTED, b"{}".to_vec(), true)?;
                (w.position, mark.last_position.0 + 1)
            }
            None => {
                let w = futures::executor::block_on(self.lifecycle(
                    stream,
                    ExpectedVersion::Any,
                    OpKind::Delete {
                        mode: Deletion::Hard,
                        expected: ExpectedVersion::Any,
                        erase: true,
                    },
                    true,
                ))?;
                (w.position, w.position.0 + 1)
            }
        };
        let report = self.rewrite_stream(stream.as_str(), sealed)?;
        Ok(EraseReceipt {
            position,
            segments_rewritten: report.segments_rewritten,
            events_removed: report.events_removed,
            bytes_before: report.bytes_before,
            bytes_after: report.bytes_after,
            duration: started.elapsed(),
        })
    }

    /// The rewrite of an erase: exactly the segments, sealed up to
    /// `sealed` (past the tombstone), that hold events of `stream` or its
    /// older states, without them (no merging); then the lifecycle
    /// snapshot, which no longer holds the stream's metadata either. The
    /// caller holds `scavenging`.
    fn rewrite_stream(
        &self,
        stream: &str,
        sealed: u64,
    ) -> Result<crate::scavenge::ScavengeReport, StorageError> {
        let shared = &self.inner.shared;
        self.ready_to_rewrite(sealed)?;
        let (firsts, _) = shared.segments_to_scavenge(&[stream.to_owned()], sealed)?;
        let report = shared.rewrite_segments(
            &firsts,
            sealed,
            false,
            crate::scavenge::ScavengeOptions::default(),
        )?;
        let _one = shared.flushing.lock();
        crate::index::flusher::store_lifecycle(shared)?;
        Ok(report)
    }

    /// Waits until the index and the lifecycle snapshot cover the log up
    /// to `sealed` (the end of the segment just sealed) before segments
    /// are rewritten: what recovery rebuilds from the log past them (the
    /// ids of the unindexed tail, the streams' last versions) must not
    /// depend on events a rewrite removes.
    fn ready_to_rewrite(&self, sealed: u64) -> Result<(), StorageError> {
        let shared = &self.inner.shared;
        let failures = shared.counters.index_failures.load(Ordering::Relaxed);
        loop {
            if shared.closing.load(Ordering::Relaxed) {
                return Err(StorageError::ShuttingDown);
            }
            if shared.indexed_through.load(Ordering::Acquire) >= sealed {
                break;
            }
            if shared.counters.index_failures.load(Ordering::Relaxed) != failures {
                // The flusher retries on its own; the rewrite waits for
                // the next run.
                return Err(StorageError::Busy(
                    "the index could not be written (see the log); try the scavenge again later"
                        .into(),
                ));
            }
            if let Some(f) = shared.writer_failure.lock().clone() {
                return Err(StorageError::writer_failed(&f));
            }
            let mut g = shared.index_progress_lock.lock();
            if shared.indexed_through.load(Ordering::Acquire) < sealed {
                shared
                    .index_progress
                    .wait_for(&mut g, std::time::Duration::from_millis(50));
            }
        }
        let _one = shared.flushing.lock();
        crate::index::flusher::store_lifecycle(shared)
    }

    /// Appends a system event to `$scavenges` from a blocking thread.
    fn system_event(
        &self,
        event_type: &str,
        data: Vec<u8>,
        seal_after: bool,
    ) -> Result<AppendResult, StorageError> {
        let stream =
            StreamName::new(SCAVENGES).map_err(|e| StorageError::Internal(e.to_string()))?;
        let event = NewEvent::new(EventId::new_v7(), event_type, data);
        let pending = futures::executor::block_on(self.submit_sealing(
            &stream,
            ExpectedVersion::Any,
            vec![event],
            None,
            seal_after,
        ));
        let result = match pending {
            Ok(p) => futures::executor::block_on(p),
            Err(e) => Err(e),
        };
        result.map_err(|e| match e {
            AppendError::Storage(s) => s,
            other => StorageError::Internal(other.to_string()),
        })
    }

    /// Whether `event` is still live: not removed since it was read by a
    /// delete, a truncation or retention of its stream. The read path's own
    /// test (`window_of`, on the engine's clock): one map lookup, none when
    /// no stream has a lifecycle state.
    pub fn is_live(&self, event: &logbook_protocol::RecordedEvent) -> bool {
        let shared = &self.inner.shared;
        let v = event.version.0;
        shared
            .window_for(&event.stream, v, 1, event.timestamp_us, shared.now_us())
            .admits(v)
    }

    /// `stream`'s lifecycle state (metadata, truncation, deletion), if it
    /// has one, as published (every acknowledged operation is in it).
    pub fn stream_lifecycle(&self, stream: &str) -> Option<LifecycleWritten> {
        self.inner
            .shared
            .lifecycle_of(stream)
            .map(|e| LifecycleWritten {
                position: LogPosition(e.meta_position),
                meta_version: StreamVersion(e.meta_version),
                state: e.state.clone(),
            })
    }

    /// [`Store::append`] for threads outside an async runtime (tools,
    /// benches). Panics if called from within a runtime.
    pub fn append_blocking(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, AppendError> {
        if stream.as_str() == SCAVENGES {
            return Err(AppendError::ReservedStream {
                stream: SCAVENGES.to_owned(),
            });
        }
        let (mut req, rx, tx) =
            self.request(stream, expected, events, None, None, RequestKind::Append)?;
        let charge = self.queue_charge(&req);
        req._queued = Some(
            futures::executor::block_on(
                Arc::clone(&self.inner.queue_kib).acquire_many_owned(charge),
            )
            .map_err(|_| AppendError::Storage(StorageError::ShuttingDown))?,
        );
        tx.blocking_send(req)
            .map_err(|_| AppendError::Storage(StorageError::ShuttingDown))?;
        rx.blocking_recv()
            .map_err(|_| AppendError::Storage(StorageError::ShuttingDown))?
    }

    /// Reads events of `stream`, from version `from` (inclusive; `None`: the
    /// start going forward, the end going backward), within `limit` (a
    /// number of events, or a [`ReadLimit`] with a byte budget too).
    pub fn read_stream(
        &self,
        stream: &str,
        from: Option<StreamVersion>,
        direction: Direction,
        limit: impl Into<ReadLimit>,
    ) -> Result<StreamSlice, ReadError> {
        let shared = &self.inner.shared;
        let limit = limit.into();
        let max = limit.events;
        // Its lifecycle: a hard-deleted stream is gone; otherwise events
        // below its first live version, or too old, are not served.
        let entry = shared.lifecycle_of(stream);
        if entry.as_ref().is_some_and(|e| e.state.is_hard_deleted()) {
            return Err(ReadError::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        // A metadata stream serves its latest event only (each holds the
        // whole state).
        let meta_first = lc::meta_target(stream)
            .and_then(|t| shared.lifecycle_of(t))
            .map(|e| e.meta_version);
        let first_live = entry
            .as_ref()
            .map_or(0, |e| e.first_live())
            .max(meta_first.unwrap_or(0));
        let min_ts = entry
            .as_ref()
            .and_then(|e| e.state.min_timestamp(shared.now_us()));
        let start = from.map(|v| v.0).unwrap_or(match direction {
            Direction::Forward => 0,
            Direction::Backward => u64::MAX,
        });
        let start = match direction {
            Direction::Forward => start.max(first_live),
            Direction::Backward => start,
        };
        // One more than asked, to know whether there is a next page.
        let (mut events, cut) = if direction == Direction::Backward && start < first_live {
            (Vec::new(), false)
        } else {
            shared.read_stream(
                stream,
                start,
                direction,
                ReadLimit {
                    events: max.saturating_add(1),
                    bytes: limit.bytes,
                },
            )?
        };
        let removed = |e: &RecordedEvent| {
            e.version.0 < first_live || min_ts.is_some_and(|m| e.timestamp_us < m)
        };
        let mut next = if events.len() > max {
            events.truncate(max + 1);
            events.pop().map(|e| e.version)
        } else if cut {
            // The byte budget stopped the read: go on after the last one.
            match (direction, events.last()) {
                (Direction::Forward, Some(e)) => Some(StreamVersion(e.version.0 + 1)),
                (Direction::Backward, Some(e)) if e.version.0 > 0 => {
                    Some(StreamVersion(e.version.0 - 1))
                }
                _ => None,
            }
        } else {
            None
        };
        if entry.is_some() || meta_first.is_some() {
            if direction == Direction::Backward {
                // Below the first live version there is nothing more.
                let kept = events.partition_point(|e| e.version.0 >= first_live);
                if kept < events.len() || next.is_some_and(|v| v.0 < first_live) {
                    next = None;
                }
                events.truncate(kept);
            }
            // Too old (max_age): an oldest prefix going forward, a
            // suffix going backward.
            events.retain(|e| !removed(e));
        }
        let raw_last = match (direction, from, next, events.first(), events.last()) {
            (_, _, _, _, _) if entry.is_some() => shared.stream_last_version(stream)?,
            (Direction::Forward, _, None, _, Some(last)) => Some(last.version.0),
            (Direction::Backward, None, _, Some(first), _) => Some(first.version.0),
            _ => shared.stream_last_version(stream)?,
        };
        // A soft-deleted stream with no event since reads as not found.
        let last_version = match &entry {
            Some(e) => crate::lifecycle::effective_version(
                Some(&e.state),
                raw_last.max(e.state.last_version).max(e.last()),
            ),
            None => raw_last,
        };
        if last_version.is_none() {
            events.clear();
            next = None;
        }
        Ok(StreamSlice {
            events,
            next,
            last_version: last_version.map(StreamVersion),
        })
    }

    /// Reads events of the global log from position `from` (inclusive;
    /// `None`: the start going forward, the end going backward), within
    /// `limit` (a number of events, or a [`ReadLimit`]).
    pub fn read_all(
        &self,
        from: Option<LogPosition>,
        direction: Direction,
        limit: impl Into<ReadLimit>,
    ) -> Result<AllSlice, ReadError> {
        let shared = &self.inner.shared;
        let head = shared.head();
        let start = from.map(|p| p.0).unwrap_or(match direction {
            Direction::Forward => 0,
            Direction::Backward => u64::MAX,
        });
        let read = shared.read_all(start, direction, limit.into(), true)?;
        // The read loaded the head again: it may be newer.
        let head = head.max(read.through);
        let next = match direction {
            Direction::Forward => Some(read.through).filter(|&t| t < head),
            Direction::Backward => read.through.checked_sub(1),
        };
        Ok(AllSlice {
            events: read.events,
            next: next.map(LogPosition),
            head: LogPosition(head),
            through: LogPosition(read.through),
        })
    }

    /// A page of the stream catalog: up to `limit` streams whose name starts
    /// with `prefix`, after `after` (exclusive), in the byte order of their
    /// names, with their last version, live events, deletion and metadata
    /// (see `logbook_protocol::msg::list_streams` for what is listed). The
    /// page ends early once about `max_bytes` of names and metadata are in
    /// it; `next` says where the next one starts.
    pub fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<crate::catalog::StreamPage, ReadError> {
        self.inner
            .shared
            .list_streams(prefix, after, limit, max_bytes)
    }

    /// The stream's last version, if it has events (removed ones count:
    /// versions are never given twice).
    pub fn stream_version(&self, stream: &str) -> Result<Option<StreamVersion>, ReadError> {
        let shared = &self.inner.shared;
        let last = shared.stream_last_version(stream)?;
        let kept = shared
            .lifecycle_of(stream)
            .and_then(|e| e.last().max(e.state.last_version));
        Ok(last.max(kept).map(StreamVersion))
    }

    /// The engine's clock, microseconds since the epoch (the commit time
    /// of an append made now; a replicated append carries the leader's).
    pub fn now_us(&self) -> i64 {
        self.inner.shared.now_us()
    }

    /// The commit time of the last record written (at open, the last one
    /// recovered; 0 for an empty store), microseconds since the epoch.
    pub fn last_commit_us(&self) -> i64 {
        self.inner
            .shared
            .last_written_us
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Number of durable events: the position the next event will get.
    pub fn head(&self) -> LogPosition {
        LogPosition(self.inner.shared.head())
    }

    /// A watch of the durable head, for subscriptions: it changes after each
    /// group commit.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.shared.head_watch.subscribe()
    }

    /// Why writes are refused, if an earlier write failed.
    pub fn writer_failure(&self) -> Option<Arc<StorageError>> {
        self.inner.shared.writer_failure.lock().clone()
    }

    /// The engine's latency and group-size histograms (live, lock-free).
    pub fn histograms(&self) -> &crate::histogram::EngineHistograms {
        &self.inner.shared.counters.histograms
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StoreStats {
        let s = &self.inner.shared;
        let c = &s.counters;
        let (memtable_entries, tables, streams) = {
            let g = s.index.read();
            (
                (g.active.len() + g.frozen.iter().map(|m| m.len()).sum::<usize>()) as u64,
                Arc::clone(&g.tables),
                g.streams(),
            )
        };
        let segments = Arc::clone(&s.segments.read());
        let log_bytes = segments.iter().map(|seg| seg.durable_len()).sum();
        let index_bytes = tables.iter().map(|t| t.file_len() + t.ids.file_len()).sum();
        StoreStats {
            head: s.head(),
            appends: c.appends.load(Ordering::Relaxed),
            events_written: c.events.load(Ordering::Relaxed),
            groups: c.groups.load(Ordering::Relaxed),
            fsyncs: c.fsyncs.load(Ordering::Relaxed),
            bytes_written: c.bytes.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            streams,
            segments: segments.len() as u64,
            log_bytes,
            index_tables: tables.len() as u64,
            index_bytes,
            memtable_entries,
            index_flushes: c.flushes.load(Ordering::Relaxed),
            index_merges: c.merges.load(Ordering::Relaxed),
            index_slowdowns: c.index_slowdowns.load(Ordering::Relaxed),
            index_stalls: c.index_stalls.load(Ordering::Relaxed),
            index_failures: c.index_failures.load(Ordering::Relaxed),
            position_index_entries: segments
                .iter()
                .map(|seg| seg.sealed_pidx_in_memory() as u64)
                .sum(),
            open_files: s.files.open_files() as u64,
            file_reopens: s.files.reopens(),
            lifecycle_streams: s.lifecycle.len(),
            deleted_streams: s.lifecycle.deleted(),
            erasures_owed: s.erasures.len() as u64,
            scavenges: c.scavenges.load(Ordering::Relaxed),
            scavenge_segments: c.scavenge_segments.load(Ordering::Relaxed),
            scavenge_bytes_reclaimed: c.scavenge_bytes_reclaimed.load(Ordering::Relaxed),
            scavenge_todo: c.scavenge_todo.load(Ordering::Relaxed),
            scavenge_done: c.scavenge_done.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting appends, lets the writer finish what is queued,
    /// writes the whole index to disk (so the next start replays nothing),
    /// and stops the background threads. Blocks; idempotent. Appends after
    /// this fail with [`StorageError::ShuttingDown`]. The directory lock is
    /// released, so the store can be reopened at once; reads through this
    /// handle still work but no longer follow the directory.
    pub fn close(&self) -> Result<(), StorageError> {
        self.inner.close()
    }
}

impl Store {
    /// Stops the engine the way a crash would, as far as the disk is
    /// concerned: nothing queued is lost (appends already acknowledged are
    /// durable), but the index is not flushed and preallocated space is not
    /// trimmed, so the next open has recovery work to do. For benchmarks of
    /// start-up after a crash, and tests.
    #[doc(hidden)]
    pub fn abandon(&self) {
        self.inner.shared.abandoned.store(true, Ordering::Relaxed);
        let _ = self.inner.close();
    }
}

impl Inner {
    fn close(&self) -> Result<(), StorageError> {
        // Dropping the only sender ends the writer's loop once the queue is
        // drained (callers already waiting still get their replies); those
        // waiting for room in the queue are refused.
        // A merge in progress stops; the writer no longer waits for the
        // index (it is written whole below).
        self.shared.closing.store(true, Ordering::Relaxed);
        self.shared.index_progressed();
        // A scavenge or erase stops at its next segment: wait for it, so
        // that nothing renames files once the directory is released.
        drop(self.shared.scavenging.lock());
        drop(self.tx.write().take());
        self.queue_kib.close();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
        let clean = self.shared.writer_failure.lock().is_none()
            && !self.shared.abandoned.load(Ordering::Relaxed);
        let result = if clean {
            // The writer froze the last memtable, with its ids, as it
            // finished. Then the lifecycle snapshot, so that the next
            // start reads no log for it.
            flusher::flush_frozen(&self.shared, &|| {}).and_then(|()| {
                let _one = self.shared.flushing.lock();
                flusher::store_lifecycle(&self.shared)
            })
        } else {
            Ok(())
        };
        drop(self.flush_tx.lock().take());
        if let Some(f) = self.flusher.lock().take() {
            let _ = f.join();
        }
        // The flusher held the merger's only sender.
        if let Some(m) = self.merger.lock().take() {
            let _ = m.join();
        }
        drop(self.lock.lock().take());
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}
