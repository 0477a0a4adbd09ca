//! The engine as the state machine's event log: a committed append is
//! applied with [`Store::append_at`], at the time the leader chose, so
//! every replica writes the same events at the same positions with the
//! same versions and timestamps (the engine assigns positions in apply
//! order, and apply order is the Raft log's). A lifecycle change is
//! applied with [`Store::submit_lifecycle_at`], under the event id and at
//! the time the leader chose.
//!
//! Appends are queued one after another as they are applied and awaited
//! by the state machine's completion task, so they share the engine's group
//! commits. Re-applying an append after a crash (the state machine's record
//! of what the engine holds lags it by up to 100 ms of entries) writes
//! nothing: [`Store::resend`] answers a stored batch with its original
//! result and tells one that is not stored (a lifecycle change is resent
//! as its placeholder event to the metadata stream).
//!
//! A snapshot of the engine is its head: the events are the state. A
//! replica installing one fetches the records from its own head to the
//! snapshot's from another member and ingests them ([`crate::catchup`]).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook_protocol::{AppendResult, EventId, ExpectedVersion, NewEvent, StreamName};
use logbook_storage::{AppendError, LogBatch, Store};
use serde::{Deserialize, Serialize};

use crate::catchup::Fetch;
use crate::sm::{EventLog, Pending, ready};
use crate::{Batch, Command, LifecycleChange, Member, Outcome};

/// A [`Store`] applying committed appends.
pub struct StoreLog {
    store: Store,
    /// Where a snapshot's events come from, if it can install one.
    fetch: Option<Arc<dyn Fetch>>,
    /// Bumped once a write of a system stream (a name starting with `$`:
    /// the users document, say) is durable here, and once a snapshot's
    /// events are installed, for those who keep a copy of such a stream
    /// in memory ([`StoreLog::system_writes`]).
    system_writes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Rewrites the segments of the streams this replica erased.
    eraser: Eraser,
}

/// Erases from this replica's files the events of the streams it owes an
/// erasure of ([`Store::finish_erasures`]), on a blocking thread, in one
/// task at a time, started when an erase is applied or copied, and at
/// start if one is owed. A stream whose tombstone is not applied yet (the
/// entry comes again after a crash), or whose rewrite failed, is tried
/// again after a pause that doubles up to 30 s, or at the next erase.
#[derive(Clone)]
struct Eraser {
    store: Store,
    running: Arc<std::sync::atomic::AtomicBool>,
    /// Wakes the task from its pause (a new erase to do).
    wake: Arc<tokio::sync::Notify>,
    /// Bumped each time streams were erased from the store's files.
    erased: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Eraser {
    /// Starts the task, unless it runs or nothing is owed.
    fn kick(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if self.store.erasures_owed() == 0 {
            return;
        }
        if self.running.swap(true, SeqCst) {
            // Running: cut its pause short.
            self.wake.notify_one();
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.running.store(false, SeqCst);
            return;
        };
        runtime.spawn(self.clone().run());
    }

    async fn run(self) {
        use std::sync::atomic::Ordering::SeqCst;
        let mut pause = Duration::from_millis(100);
        loop {
            if self.store.erasures_owed() == 0 {
                // Off, then on again if an erase came in between.
                self.running.store(false, SeqCst);
                if self.store.erasures_owed() == 0 || self.running.swap(true, SeqCst) {
                    return;
                }
                continue;
            }
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.finish_erasures()).await {
                Ok(Ok(n)) if n > 0 => {
                    self.erased.send_modify(|e| *e += 1);
                    pause = Duration::from_millis(100);
                    continue;
                }
                Ok(Ok(_)) => {}
                Ok(Err(logbook_storage::StorageError::ShuttingDown)) => {
                    self.running.store(false, SeqCst);
                    return;
                }
                // Logged by the engine.
                Ok(Err(_)) => {}
                Err(e) => tracing::warn!(error = %e, "the erasure task failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }
}

/// A snapshot of the engine: its head.
#[derive(Serialize, Deserialize)]
struct Image {
    head: u64,
}

/// The longest pause between two rounds of asking the members for records
/// when none had them (also how long a shutdown may wait for the install
/// to give up).
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl StoreLog {
    /// Applies to `store`; cannot install a snapshot that holds events it
    /// lacks.
    pub fn new(store: Store) -> StoreLog {
        let eraser = Eraser {
            store: store.clone(),
            running: Arc::default(),
            wake: Arc::default(),
            erased: Arc::new(tokio::sync::watch::channel(0).0),
        };
        // Erasures a crash cut short.
        eraser.kick();
        StoreLog {
            store,
            fetch: None,
            system_writes: Arc::new(tokio::sync::watch::channel(0).0),
            eraser,
        }
    }

    /// Applies to `store`, and installs snapshots with the events `fetch`
    /// gets from the members.
    pub fn with_fetch(store: Store, fetch: Arc<dyn Fetch>) -> StoreLog {
        StoreLog {
            fetch: Some(fetch),
            ..StoreLog::new(store)
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A watch that changes after an entry writing a system stream is
    /// durable in the store (applied, or applied again after a crash),
    /// and after a snapshot's events are installed: a copy of a system
    /// stream kept in memory is then read again.
    pub fn system_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.system_writes.subscribe()
    }

    /// A watch that changes each time streams were erased from the
    /// store's files (the Raft log may still hold their events: see
    /// `node`).
    pub fn erasures_done(&self) -> tokio::sync::watch::Receiver<u64> {
        self.eraser.erased.subscribe()
    }

    /// Tells the watchers of [`StoreLog::system_writes`].
    fn system_written(&self) {
        self.system_writes.send_modify(|n| *n += 1);
    }
}

/// A command as the engine takes it.
enum Request {
    Append(StreamName, ExpectedVersion, Vec<NewEvent>),
    Lifecycle(
        StreamName,
        ExpectedVersion,
        logbook_storage::LifecycleChange,
        EventId,
    ),
}

/// A command as the engine takes it, or why it cannot be one (refusals
/// that depend only on the command: the same on every replica).
fn request_of(command: &Command) -> Result<Request, Outcome> {
    let name = |stream: &String| {
        StreamName::new(stream.clone())
            .map_err(|_| Outcome::Refused(format!("invalid stream name {stream:?}")))
    };
    match command {
        Command::Append {
            stream,
            expected,
            events,
            ..
        } => {
            let events = events.iter().cloned().map(NewEvent::from).collect();
            Ok(Request::Append(name(stream)?, *expected, events))
        }
        Command::Lifecycle {
            stream,
            meta_expected,
            change,
            id,
            ..
        } => {
            use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
            use logbook_storage::LifecycleChange as Change;
            let change = match change {
                LifecycleChange::SetMetadata { metadata } => Change::SetMetadata(
                    StreamMetadata::from_json(metadata.as_bytes()).map_err(Outcome::Refused)?,
                ),
                LifecycleChange::Truncate { before } => {
                    Change::Truncate(logbook_protocol::StreamVersion(*before))
                }
                LifecycleChange::Delete { hard, expected } => Change::Delete {
                    mode: if *hard {
                        Deletion::Hard
                    } else {
                        Deletion::Soft
                    },
                    expected: *expected,
                },
                LifecycleChange::Erase => Change::Erase,
            };
            Ok(Request::Lifecycle(
                name(stream)?,
                *meta_expected,
                change,
                EventId(*id),
            ))
        }
    }
}

/// The outcome of an append, or the error that stops the node.
fn outcome(r: Result<AppendResult, AppendError>) -> io::Result<Outcome> {
    Ok(match r {
        Ok(r) => Outcome::Appended {
            first_position: r.first_position.0,
            first_version: r.first_version.0,
            last_position: r.last_position.0,
            last_version: r.last_version.0,
        },
        Err(AppendError::WrongExpectedVersion { actual, .. }) => Outcome::WrongExpectedVersion {
            actual: actual.map(|v| v.0),
        },
        Err(AppendError::DuplicateEventId {
            id,
            stream,
            position,
        }) => Outcome::DuplicateEventId {
            id: id.0,
            stream,
            position: position.map(|p| p.0),
        },
        Err(AppendError::StreamDeleted { .. }) => Outcome::StreamDeleted,
        // Refusals that depend only on the log (the same on every
        // replica): the command is answered, nothing was written.
        Err(
            e @ (AppendError::EmptyBatch
            | AppendError::InvalidEventType { .. }
            | AppendError::ReservedStream { .. }
            | AppendError::InvalidMetadata(_)
            | AppendError::TooLarge { .. }),
        ) => Outcome::Refused(e.to_string()),
        // A disk failure: this replica cannot go on applying; stopping
        // (openraft stops the node on a state machine error) is the only
        // answer that does not diverge.
        Err(e) => {
            return Err(io::Error::other(format!(
                "the event log cannot apply a committed append: {e}"
            )));
        }
    })
}

impl EventLog for StoreLog {
    async fn submit(&mut self, _index: u64, at: i64, command: &Command) -> io::Result<Pending> {
        let system = command.stream().starts_with('$');
        let submitted = match request_of(command) {
            Err(refused) => return Ok(ready(refused)),
            Ok(Request::Append(name, expected, events)) => {
                self.store.submit_at(&name, expected, events, at).await
            }
            Ok(Request::Lifecycle(name, meta_expected, change, id)) => {
                self.store
                    .submit_lifecycle_at(&name, meta_expected, change, id, at)
                    .await
            }
        };
        // Once durable: those who copy system streams read them again,
        // and an erase's rewrite of this replica's segments starts.
        let erase = matches!(
            command,
            Command::Lifecycle {
                change: LifecycleChange::Erase,
                ..
            }
        );
        match submitted {
            Ok(pending) if system || erase => {
                let written = system.then(|| Arc::clone(&self.system_writes));
                let eraser = erase.then(|| self.eraser.clone());
                Ok(Box::pin(async move {
                    let r = outcome(pending.await);
                    if let Some(w) = written {
                        w.send_modify(|n| *n += 1);
                    }
                    if let Some(e) = eraser {
                        e.kick();
                    }
                    r
                }))
            }
            Ok(pending) => Ok(Box::pin(async move { outcome(pending.await) })),
            // Refused before the writer: a refusal every replica makes
            // alike is this entry's outcome; a storage error (an id table
            // unreadable) is returned here, so that the state machine
            // stops before it queues a later entry.
            Err(e) => outcome(Err(e)).map(ready),
        }
    }

    async fn reapply(
        &mut self,
        _index: u64,
        at: i64,
        command: &Command,
    ) -> io::Result<Option<Outcome>> {
        // What the command wrote, if it did: its events (a lifecycle
        // change's is its id in the metadata stream).
        let (name, events) = match request_of(command) {
            Err(refused) => return Ok(Some(refused)),
            Ok(Request::Append(name, _, events)) => (name, events),
            Ok(Request::Lifecycle(name, _, _, id)) => match Store::metadata_stream(&name) {
                Ok(meta) => (meta, vec![logbook_storage::lifecycle_placeholder(id)]),
                Err(e) => return outcome(Err(e)).map(Some),
            },
        };
        match self.store.resend(&name, events, Some(at)).await {
            Err(AppendError::NotStored { .. }) => Ok(None),
            r => outcome(r).map(Some),
        }
    }

    fn head(&self) -> u64 {
        self.store.head().0
    }

    fn opened_at(&self) -> i64 {
        self.store.recovery_report().last_timestamp_us
    }

    fn sync(&mut self) -> io::Result<()> {
        // Every append the engine answered is durable already.
        Ok(())
    }

    fn snapshot(&mut self, head: u64) -> io::Result<Vec<u8>> {
        rmp_serde::to_vec(&Image { head }).map_err(io::Error::other)
    }

    async fn fetch(&mut self, state: &[u8], members: &[(u64, Member)]) -> io::Result<()> {
        let want = image(state)?.head;
        let start = self.store.head().0;
        if start >= want {
            return Ok(());
        }
        let Some(fetch) = self.fetch.clone() else {
            return Err(io::Error::other(format!(
                "a snapshot holds events up to {want}, this event log only {start}, and it has no way to fetch them"
            )));
        };
        tracing::info!(
            from = start,
            to = want,
            "installing a snapshot: fetching the events this node lacks"
        );
        let began = Instant::now();
        let mut bytes = 0u64;
        let mut pause = Duration::from_millis(100);
        // Every member in turn, each as long as it has records; rounds
        // again (after a pause) while none had any: a member may be down
        // or behind for a while, and the snapshot cannot be installed
        // without them.
        loop {
            let mut progressed = false;
            for (id, member) in members {
                // The next chunk, fetched while the last one is written.
                let mut prefetched: Option<(u64, io::Result<Vec<Batch>>)> = None;
                loop {
                    if fetch.stopped() {
                        return Err(io::Error::other(
                            "the node is shutting down: the snapshot is not installed",
                        ));
                    }
                    let from = self.store.head().0;
                    if from >= want {
                        let secs = began.elapsed().as_secs_f64();
                        tracing::info!(
                            events = want - start,
                            mib = bytes as f64 / (1 << 20) as f64,
                            secs,
                            "installed a snapshot's events"
                        );
                        self.system_written();
                        // Erases among the records copied.
                        self.eraser.kick();
                        return Ok(());
                    }
                    let fetched = match prefetched.take() {
                        Some((at, f)) if at == from => f,
                        _ => fetch.fetch(*id, member, from, want).await,
                    };
                    let batches = match fetched {
                        Ok(b) if b.is_empty() => break,
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(node = id, error = %e, "fetching events failed");
                            break;
                        }
                    };
                    bytes += batches
                        .iter()
                        .flat_map(|b| &b.events)
                        .map(|e| (e.data.len() + e.metadata.len() + e.event_type.len()) as u64)
                        .sum::<u64>();
                    let end = batches.last().map_or(from, Batch::end_position);
                    let batches: Vec<LogBatch> = batches.into_iter().map(Into::into).collect();
                    let next = async {
                        if end < want {
                            Some((end, fetch.fetch(*id, member, end, want).await))
                        } else {
                            None
                        }
                    };
                    let (ingested, next) = futures::join!(self.store.ingest(batches), next);
                    // A record that does not fit is a divergence: the node
                    // stops rather than hold another log.
                    ingested.map_err(|e| io::Error::other(e.to_string()))?;
                    prefetched = next;
                    progressed = true;
                }
            }
            if !progressed {
                tracing::warn!(
                    at = self.store.head().0,
                    want,
                    "no member had the events a snapshot holds; asking again"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }

    fn install(&mut self, state: &[u8]) -> io::Result<()> {
        let want = image(state)?.head;
        let head = self.store.head().0;
        if head < want {
            return Err(io::Error::other(format!(
                "a snapshot holds events up to {want}, but the event log only {head}"
            )));
        }
        Ok(())
    }
}

fn image(state: &[u8]) -> io::Result<Image> {
    rmp_serde::from_slice(state).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The records holding `from..to`, as many as fit in `max_bytes` (at
/// least one), as members fetch them ([`crate::catchup::Records`]).
pub fn read_batches(store: &Store, from: u64, to: u64, max_bytes: usize) -> io::Result<Vec<Batch>> {
    let batches = store
        .read_batches(from, to, max_bytes)
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(batches.into_iter().map(Batch::from).collect())
}
