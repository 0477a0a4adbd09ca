//! The state machine: openraft's [`RaftStateMachine`] over an
//! [`EventLog`], with its bookkeeping on disk.
//!
//! Applying a batch of committed entries hands each normal entry to the
//! event log (which decides its outcome deterministically: the same
//! entries give the same events at the same positions on every replica)
//! and returns; a completion task awaits each outcome in order (the event
//! log's group commit), answers its client, and records in `sm.meta`
//! (written to a new file and renamed over the old, at most every
//! [`RECORD_EVERY`]) the last entry the event log holds durably, the
//! latest membership and the event log's head after it. After a crash the
//! entries past the recorded one are applied again: until the head the
//! event log had at the restart is reached, each is a resend answered with
//! its first outcome, and one whose events are not there was refused the
//! first time and stays refused (deciding it again, with later entries'
//! events in the log, could accept it on this replica alone).
//!
//! A snapshot is the event log's state as [`EventLog::snapshot`] gives it
//! (the engine's: its head; see `catchup.rs`) plus the metadata and the
//! head, kept in `snapshot.bin` so that it survives restarts; installing
//! one gets what the event log lacks from the members ([`EventLog::fetch`])
//! before it is kept and recorded.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use logbook_storage::fs::{OpenMode, Vfs};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{Command, Outcome, TypeConfig, frame};

type C = TypeConfig;
type LogId = openraft::alias::LogIdOf<C>;
type StoredMembership = openraft::alias::StoredMembershipOf<C>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<C>;
type Snapshot = openraft::alias::SnapshotOf<C, Cursor<Vec<u8>>>;

const META: &str = "sm.meta";
const SNAPSHOT: &str = "snapshot.bin";

/// The outcome of a command queued with [`EventLog::submit`], once applied.
pub type Pending = futures::future::BoxFuture<'static, io::Result<Outcome>>;

/// An outcome known at once, as a [`Pending`].
pub fn ready(outcome: Outcome) -> Pending {
    Box::pin(std::future::ready(Ok(outcome)))
}

/// What the state machine applies committed commands to: the event log.
pub trait EventLog: Send + Sync + 'static {
    /// Queues the committed `command` of Raft index `index` and returns
    /// its outcome to come: commands queued one after another are applied
    /// in that order (so a batch of entries shares the event log's group
    /// commits). Must be deterministic: the same commands give the same
    /// events at the same positions on every replica. `at` is the entry's
    /// commit time, which its writes record: the leader's clock reading,
    /// raised past the previous entry's time, so every entry (written or
    /// refused) has a time of its own, the same on every replica. An
    /// error (the disk failed) stops the node: it cannot apply the log any
    /// more. A failure known before the command is queued must be that
    /// error, not its outcome: the state machine then queues no later
    /// entry, whose write would outlive this one's absence and make the
    /// replay after a restart take this entry for a refused one. (One
    /// that comes with the outcome must stop the event log, so that no
    /// later command is written.)
    fn submit(
        &mut self,
        index: u64,
        at: i64,
        command: &Command,
    ) -> impl std::future::Future<Output = io::Result<Pending>> + Send;
    /// A command applied before a restart, whose effect the event log may
    /// hold: its first outcome if it wrote events (nothing is written
    /// again), `None` if the event log does not hold them. Events that
    /// the command's ids name but that were written at a time other than
    /// `at` are a later entry's (a resend of a refused one's ids): `None`.
    fn reapply(
        &mut self,
        index: u64,
        at: i64,
        command: &Command,
    ) -> impl std::future::Future<Output = io::Result<Option<Outcome>>> + Send;
    /// How many events the event log durably holds (where the next one
    /// goes).
    fn head(&self) -> u64;
    /// The commit time (`at`) of the last command whose events it held
    /// when it was opened (0 if none; `i64::MAX` if it does not know):
    /// an entry past it cannot have been applied before the restart.
    fn opened_at(&self) -> i64;
    /// Makes everything applied so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// The state, for a snapshot, taken when everything applied is
    /// durable: what another replica needs to get to it (the engine's: its
    /// head, the events being the state), or the whole state. `head` is the
    /// event log's head after the last entry applied: it may hold more
    /// (after a restart, the effects of entries being re-applied), which
    /// the snapshot must not claim.
    fn snapshot(&mut self, head: u64) -> io::Result<Vec<u8>>;
    /// Gets what a snapshot's `state` holds that this event log lacks,
    /// from `members` (the snapshot's membership), and makes it durable;
    /// the state machine then records the snapshot as installed (the
    /// default: nothing to get).
    fn fetch(
        &mut self,
        state: &[u8],
        members: &[(u64, crate::Member)],
    ) -> impl std::future::Future<Output = io::Result<()>> + Send {
        let _ = (state, members);
        async { Ok(()) }
    }
    /// Makes the state a snapshot's `state`, after [`EventLog::fetch`]
    /// (also when a snapshot recorded but not yet noted as applied is
    /// found at a restart).
    fn install(&mut self, state: &[u8]) -> io::Result<()>;
}

/// The bookkeeping in `sm.meta`.
#[derive(Clone, Default, Serialize, Deserialize)]
struct Meta {
    applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: u64,
    /// The event log's head when `applied` was recorded.
    #[serde(default)]
    head: u64,
    /// The commit time of the last normal entry up to `applied` (each
    /// entry's is past it: see [`EventLog::submit`]).
    #[serde(default)]
    last_at: i64,
    /// The events the event log held before the first Raft entry: 0, but
    /// on a node seeded from a backup ([`StateMachine::seed`]).
    #[serde(default)]
    base: u64,
}

/// A snapshot as kept in `snapshot.bin`.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta,
    state: Vec<u8>,
    /// The commit time of the last normal entry it holds.
    #[serde(default)]
    last_at: i64,
    /// The event log's head after the last entry it holds.
    #[serde(default)]
    head: u64,
}

/// The state machine of one node.
pub struct StateMachine<L: EventLog> {
    log: L,
    /// What openraft has handed to the event log (applied, membership),
    /// and the head the replay rule compares (see [`StateMachine::apply`]).
    meta: Meta,
    /// What the event log holds durably, and its record in `sm.meta`.
    record: Arc<Mutex<Record>>,
    /// Appends handed to the event log, in order, for the completion task
    /// to await, answer and record.
    completions: Option<tokio::sync::mpsc::UnboundedSender<Completion>>,
    /// Why the completion task stopped recording (a disk failure): the
    /// node must stop.
    failed: Arc<Mutex<Option<String>>>,
    current: Option<Arc<Stored>>,
    /// The event log's head when the node started: while the entries
    /// re-applied have not reached it, the event log holds the effects of
    /// entries past the recorded `applied` (see [`StateMachine::apply`]).
    replay_until: u64,
    /// The commit time of the last write the event log held when the node
    /// started ([`EventLog::opened_at`]): an entry past it while the replay
    /// has not reached `replay_until` means the replay cannot account for
    /// what the event log holds.
    replay_until_at: i64,
}

/// How often, at most, `sm.meta` is rewritten while entries are applied
/// (and how long after the last one it is rewritten when the node goes
/// idle). Recording less often costs only a longer replay after a crash.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The durable side: what the event log holds for certain (every entry up
/// to `meta.applied` has its effects in it, and its head after them is
/// `meta.head`), and its file.
struct Record {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    meta: Meta,
    /// `meta` changed since it was last written.
    dirty: bool,
    saved: std::time::Instant,
    /// The index of the last entry whose effects are durable.
    durable: tokio::sync::watch::Sender<u64>,
}

impl Record {
    fn save(&mut self) -> io::Result<()> {
        let payload = rmp_serde::to_vec(&self.meta).map_err(io::Error::other)?;
        write_one(self.vfs.as_ref(), &self.dir, META, &payload)?;
        self.dirty = false;
        self.saved = std::time::Instant::now();
        Ok(())
    }

    fn save_if_dirty(&mut self) -> io::Result<()> {
        if self.dirty { self.save() } else { Ok(()) }
    }

    /// Entries up to `applied` are durable in the event log.
    fn set_applied(&mut self, applied: Option<LogId>) {
        self.meta.applied = applied;
        self.durable.send_replace(applied.map_or(0, |l| l.index()));
    }
}

/// An entry on its way to the record.
enum Completion {
    Entry {
        log_id: LogId,
        /// The commit time of the last normal entry up to this one.
        last_at: i64,
        membership: Option<Box<StoredMembership>>,
        outcome: Pending,
        responder: Option<openraft::storage::ApplyResponder<C>>,
    },
    /// Answered once everything before it is recorded and written.
    Flush(tokio::sync::oneshot::Sender<io::Result<()>>),
}

/// Awaits each entry's outcome in order (the event log's durability),
/// answers its client, records it, and rewrites `sm.meta` at most every
/// [`RECORD_EVERY`]. A failure stops the recording for good; the next
/// apply reports it.
async fn complete(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Completion>,
    record: Arc<Mutex<Record>>,
    failed: Arc<Mutex<Option<String>>>,
) {
    let fail = |e: &io::Error| {
        failed.lock().get_or_insert_with(|| e.to_string());
    };
    loop {
        let job = match tokio::time::timeout(RECORD_EVERY, rx.recv()).await {
            Ok(job) => job,
            // Idle: what is recorded goes to disk.
            Err(_) => {
                if failed.lock().is_none()
                    && let Err(e) = record.lock().save_if_dirty()
                {
                    fail(&e);
                }
                continue;
            }
        };
        let Some(job) = job else {
            if failed.lock().is_none() {
                let _ = record.lock().save_if_dirty();
            }
            return;
        };
        match job {
            Completion::Entry {
                log_id,
                last_at,
                membership,
                outcome,
                responder,
            } => {
                let outcome = outcome.await;
                if failed.lock().is_some() {
                    continue;
                }
                let outcome = match outcome {
                    Ok(o) => o,
                    Err(e) => {
                        fail(&e);
                        continue;
                    }
                };
                {
                    let mut r = record.lock();
                    r.set_applied(Some(log_id));
                    r.meta.last_at = last_at;
                    if let Some(m) = membership {
                        r.meta.membership = *m;
                    }
                    if let Outcome::Appended { last_position, .. } = outcome {
                        r.meta.head = r.meta.head.max(last_position + 1);
                    }
                    r.dirty = true;
                    if r.saved.elapsed() >= RECORD_EVERY
                        && let Err(e) = r.save()
                    {
                        fail(&e);
                    }
                }
                if let Some(responder) = responder {
                    responder.send(outcome);
                }
            }
            Completion::Flush(tx) => {
                let result = match failed.lock().clone() {
                    Some(why) => Err(io::Error::other(why)),
                    None => record.lock().save_if_dirty(),
                };
                let _ = tx.send(result);
            }
        }
    }
}

/// Builds snapshots (openraft runs it in a task of its own): the state was
/// taken when it was made, or taking it failed.
pub struct SnapshotBuilder {
    snapshot: Result<Arc<Stored>, String>,
}

fn read_one(vfs: &dyn Vfs, path: &Path) -> io::Result<Option<Vec<u8>>> {
    if !vfs.exists(path) {
        return Ok(None);
    }
    let file = vfs.open(path, OpenMode::Read)?;
    let mut bytes = vec![0u8; file.len()? as usize];
    file.read_exact_at(&mut bytes, 0)?;
    match frame::at(&bytes) {
        Some((payload, _)) => Ok(Some(payload.to_vec())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a valid frame", path.display()),
        )),
    }
}

/// Writes `payload` framed to `path` through a new file renamed over it.
fn write_one(vfs: &dyn Vfs, dir: &Path, name: &str, payload: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    if vfs.exists(&tmp) {
        vfs.remove_file(&tmp)?;
    }
    let file = vfs.open(&tmp, OpenMode::CreateNew)?;
    let mut out = Vec::with_capacity(payload.len() + frame::HEADER);
    frame::encode(payload, &mut out);
    file.write_all_at(&out, 0)?;
    file.sync_data()?;
    vfs.rename(&tmp, &dir.join(name))?;
    vfs.sync_dir(dir)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Whether `dir` holds a state machine's record: a node that has started
/// once (see [`StateMachine::open`]).
pub fn recorded(vfs: &dyn Vfs, dir: &Path) -> bool {
    vfs.exists(&dir.join(META))
}

impl<L: EventLog> StateMachine<L> {
    /// Records, on a first start, that the event log's `head` events
    /// (the last committed at `last_at`) came before the first Raft entry:
    /// the state machine then starts from there, as if entries had
    /// written them. For a node seeded from a backup, which alone holds
    /// those events: the others get them with a snapshot, so its Raft log
    /// must be purged past its first entries before any joins
    /// ([`StateMachine::base`]). Refused where a record exists.
    pub fn seed(vfs: &dyn Vfs, dir: &Path, head: u64, last_at: i64) -> io::Result<()> {
        crate::wal::create_dirs(vfs, dir)?;
        if recorded(vfs, dir) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this node has started before: only a first start is seeded",
            ));
        }
        let meta = Meta {
            head,
            last_at,
            base: head,
            ..Meta::default()
        };
        write_one(
            vfs,
            dir,
            META,
            &rmp_serde::to_vec(&meta).map_err(io::Error::other)?,
        )
    }

    /// The events the event log held before the first Raft entry (0 but on
    /// a node seeded from a backup, [`StateMachine::seed`]).
    pub fn base(&self) -> u64 {
        self.meta.base
    }

    /// Opens the state machine's files in `dir` over `log`.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path, mut log: L) -> io::Result<StateMachine<L>> {
        crate::wal::create_dirs(vfs.as_ref(), dir)?;
        let recorded = read_one(vfs.as_ref(), &dir.join(META))?;
        let fresh = recorded.is_none();
        let meta: Meta = match recorded {
            Some(p) => rmp_serde::from_slice(&p).map_err(invalid)?,
            None => Meta::default(),
        };
        let current = match read_one(vfs.as_ref(), &dir.join(SNAPSHOT))? {
            Some(p) => Some(Arc::new(
                rmp_serde::from_slice::<Stored>(&p).map_err(invalid)?,
            )),
            None => None,
        };
        // A snapshot installed but not yet recorded in the meta (a crash
        // between the two writes) is the state.
        let mut meta = meta;
        if let Some(s) = &current
            && s.meta.last_log_id > meta.applied
        {
            log.install(&s.state)?;
            meta.head = s.head;
            meta.applied = s.meta.last_log_id;
            meta.membership = s.meta.last_membership.clone();
            meta.last_at = s.last_at;
        }
        // The record only ever names what the event log held durably: an
        // event log holding less lost acknowledged events (its disk, or a
        // recovery that cut damage), and this replica would diverge.
        if meta.head > log.head() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the event log holds {} events, fewer than the {} recorded as applied: it lost acknowledged events; this node must rejoin empty",
                    log.head(),
                    meta.head
                ),
            ));
        }
        let replay_until = log.head();
        let replay_until_at = log.opened_at();
        let mut record = Record {
            vfs,
            dir: dir.to_owned(),
            meta: meta.clone(),
            dirty: false,
            saved: std::time::Instant::now(),
            durable: tokio::sync::watch::channel(meta.applied.map_or(0, |l| l.index())).0,
        };
        // Written before anything is applied: a node whose first entries
        // reach its event log is never taken for a store written outside
        // the cluster (`Node::start`) after a crash.
        if fresh {
            record.save()?;
        }
        Ok(StateMachine {
            log,
            record: Arc::new(Mutex::new(record)),
            meta,
            completions: None,
            failed: Arc::new(Mutex::new(None)),
            current,
            replay_until,
            replay_until_at,
        })
    }

    /// The commit time of the next normal entry, whose command was
    /// proposed at `command.time()`: past the previous entry's, so that no
    /// two entries share one (see [`EventLog::submit`]).
    fn time_of(&mut self, command: &Command) -> i64 {
        let at = command.time().max(self.meta.last_at.saturating_add(1));
        self.meta.last_at = at;
        at
    }

    /// The event log it applies to.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// A watch of the last Raft index whose effects the event log holds
    /// durably (openraft's applied index may run ahead of it: entries are
    /// handed over before their group commit).
    pub fn durable(&self) -> tokio::sync::watch::Receiver<u64> {
        self.record.lock().durable.subscribe()
    }

    /// Waits until every entry handed to the event log is durable,
    /// answered and recorded in `sm.meta` (snapshots start from there;
    /// tests call it to see what was applied).
    pub async fn flush(&mut self) -> io::Result<()> {
        match &self.completions {
            Some(tx) => {
                let (done, wait) = tokio::sync::oneshot::channel();
                tx.send(Completion::Flush(done))
                    .map_err(|_| io::Error::other("the state machine's recorder stopped"))?;
                wait.await
                    .map_err(|_| io::Error::other("the state machine's recorder stopped"))?
            }
            None => self.record.lock().save_if_dirty(),
        }
    }

    /// Sets the durable record to this state and writes it (everything
    /// before is flushed).
    fn record_now(&self, meta: &Meta) -> io::Result<()> {
        let mut r = self.record.lock();
        r.meta = meta.clone();
        r.set_applied(meta.applied);
        r.save()
    }

    fn keep(&mut self, stored: Stored) -> io::Result<Arc<Stored>> {
        let payload = rmp_serde::to_vec(&stored).map_err(io::Error::other)?;
        let (vfs, dir) = {
            let r = self.record.lock();
            (Arc::clone(&r.vfs), r.dir.clone())
        };
        write_one(vfs.as_ref(), &dir, SNAPSHOT, &payload)?;
        let stored = Arc::new(stored);
        self.current = Some(Arc::clone(&stored));
        Ok(stored)
    }
}

impl RaftSnapshotBuilder<C> for SnapshotBuilder {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let stored = self
            .snapshot
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))?;
        Ok(Snapshot {
            meta: stored.meta.clone(),
            snapshot: Cursor::new(rmp_serde::to_vec(stored.as_ref()).map_err(io::Error::other)?),
        })
    }
}

impl<L: EventLog> RaftStateMachine<C> for StateMachine<L> {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<C>, io::Error>>
            + Unpin
            + openraft::OptionalSend,
    {
        if let Some(why) = self.failed.lock().clone() {
            return Err(io::Error::other(format!(
                "the event log failed to apply an entry: {why}"
            )));
        }
        // Each normal entry is queued on the event log as it comes; the
        // completion task awaits its outcome (the event log's group
        // commit), answers the client and records it. So entries of this
        // batch and of the next ones share group commits.
        let mut completions = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let mut membership = None;
            let outcome: Pending = match &entry.payload {
                EntryPayload::Blank => ready(Outcome::None),
                EntryPayload::Normal(command) if self.meta.head < self.replay_until => {
                    let at = self.time_of(command);
                    // Every entry the event log holds was applied at or
                    // before its last write's time: one past it, with the
                    // head not reached, means the replay took a write for
                    // another's (or a limit changed across the restart).
                    // Going on would refuse every later entry on this
                    // replica alone.
                    if at > self.replay_until_at {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "entry {} comes after everything the event log held at the restart, but the entries re-applied before it account for {} of its {} events: this replica cannot tell what it applied; it must rejoin empty (under a new node id)",
                                log_id.index(),
                                self.meta.head,
                                self.replay_until
                            ),
                        ));
                    }
                    // The event log holds effects of entries past the
                    // recorded `applied` (a crash came before they were
                    // recorded): those entries are re-applied in order,
                    // each a resend answered with its first outcome, until
                    // the head is reached. An entry whose events are not
                    // there was refused the first time (a wrong expected
                    // version, say): deciding it again now, with later
                    // entries' events in the log, could accept it on this
                    // replica only. It is skipped. (In cluster mode the
                    // state machine is the event log's only writer, so the
                    // head is reached.)
                    // The state machine writes in order: this entry's own
                    // events start exactly at the head replayed so far. A
                    // batch found further on was written by a later entry
                    // (a resend of this one's ids): this one was refused.
                    // One found before is a resend of an earlier write.
                    let found = self.log.reapply(log_id.index(), at, command).await?;
                    match found {
                        Some(Outcome::Appended { first_position, .. })
                            if first_position > self.meta.head =>
                        {
                            ready(Outcome::Refused(
                                "refused before this node restarted".to_owned(),
                            ))
                        }
                        Some(o) => {
                            if let Outcome::Appended {
                                first_position,
                                last_position,
                                ..
                            } = o
                                && first_position == self.meta.head
                            {
                                self.meta.head = last_position + 1;
                            }
                            ready(o)
                        }
                        None => {
                            tracing::info!(
                                index = log_id.index(),
                                "an entry refused before the restart stays refused"
                            );
                            ready(Outcome::Refused(
                                "refused before this node restarted".to_owned(),
                            ))
                        }
                    }
                }
                EntryPayload::Normal(command) => {
                    let at = self.time_of(command);
                    self.log.submit(log_id.index(), at, command).await?
                }
                EntryPayload::Membership(m) => {
                    let m = StoredMembership::new(Some(log_id), m.clone());
                    self.meta.membership = m.clone();
                    membership = Some(Box::new(m));
                    ready(Outcome::None)
                }
            };
            self.meta.applied = Some(log_id);
            completions.push(Completion::Entry {
                log_id,
                last_at: self.meta.last_at,
                membership,
                outcome,
                responder,
            });
        }
        // An event log whose durability is a sync (not its outcomes) makes
        // this batch durable here, before the recorder hears of it.
        self.log.sync()?;
        let tx = self.completions.get_or_insert_with(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(complete(
                rx,
                Arc::clone(&self.record),
                Arc::clone(&self.failed),
            ));
            tx
        });
        for c in completions {
            tx.send(c)
                .map_err(|_| io::Error::other("the state machine's recorder stopped"))?;
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The state is taken here, under openraft's exclusive access, so
        // the snapshot is the state as of `applied`.
        let flushed = self.flush().await;
        // The head after `applied` is the record's (the apply side only
        // keeps it while replaying).
        self.meta.head = self.meta.head.max(self.record.lock().meta.head);
        let stored = flushed.and_then(|()| {
            self.log.sync()?;
            let head = self.meta.head;
            let state = self.log.snapshot(head)?;
            self.meta.snapshots += 1;
            let last = self.meta.applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: self.meta.membership.clone(),
            };
            self.record_now(&self.meta)?;
            let last_at = self.meta.last_at;
            self.keep(Stored {
                meta,
                state,
                last_at,
                head,
            })
        });
        SnapshotBuilder {
            snapshot: stored
                .map_err(|e| format!("cannot take a snapshot of the state machine: {e}")),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let stored: Stored = rmp_serde::from_slice(snapshot.get_ref()).map_err(invalid)?;
        if &stored.meta != meta {
            return Err(invalid(format!(
                "snapshot data is of {:?}, not of {:?}",
                stored.meta.last_log_id, meta.last_log_id
            )));
        }
        self.flush().await?;
        // What the event log lacks first (durable when it returns; a crash
        // in the middle leaves part of it, and the snapshot is sent
        // again), then the snapshot is kept: a crash after that installs
        // it at the next start.
        let members: Vec<(u64, crate::Member)> = meta
            .last_membership
            .membership()
            .nodes()
            .map(|(id, m)| (*id, m.clone()))
            .collect();
        self.log.fetch(&stored.state, &members).await?;
        let stored = self.keep(stored)?;
        self.log.install(&stored.state)?;
        self.log.sync()?;
        self.meta.head = stored.head;
        // An event log holding more than the snapshot (a crash came before
        // the entries after it were recorded) goes on replaying them; the
        // bound on their times stays the one taken at the start.
        if self.log.head() <= stored.head {
            self.replay_until = 0;
            self.replay_until_at = 0;
        } else {
            self.replay_until = self.log.head();
        }
        self.meta.applied = meta.last_log_id;
        self.meta.membership = meta.last_membership.clone();
        self.meta.last_at = stored.last_at;
        self.record_now(&self.meta)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        match &self.current {
            None => Ok(None),
            Some(s) => Ok(Some(Snapshot {
                meta: s.meta.clone(),
                snapshot: Cursor::new(rmp_serde::to_vec(s.as_ref()).map_err(io::Error::other)?),
            })),
        }
    }
}
