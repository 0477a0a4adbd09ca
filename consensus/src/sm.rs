//! The state machine: openraft's [`RaftStateMachine`] over an
//! [`EventLog`], with its bookkeeping on disk.
//!
//! Applying a batch of committed entries hands each normal entry to the
//! event log (which decides its outcome deterministically: the same
//! entries give the same events at the same positions on every replica),
//! makes the event log durable, then records in `sm.meta` (written to a new
//! file and renamed over the old) the last applied entry and the latest
//! membership and the event log's head. A crash between the two re-applies,
//! after the restart, the entries past the recorded one: until the head
//! the event log had at the restart is reached, each is a resend answered
//! with its first outcome, and one whose events are not there was refused
//! the first time and stays refused (deciding it again, with later
//! entries' events in the log, could accept it on this replica alone).
//!
//! A snapshot is the event log's state as bytes plus the metadata, kept in
//! `snapshot.bin` so that it survives restarts; installing one replaces the
//! event log's state.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use logbook_storage::fs::{OpenMode, Vfs};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
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

/// What the state machine applies committed commands to: the event log.
pub trait EventLog: Send + Sync + 'static {
    /// Queues the committed `command` of Raft index `index` and returns
    /// its outcome to come: commands queued one after another are applied
    /// in that order (so a batch of entries shares the event log's group
    /// commits). Must be deterministic: the same commands give the same
    /// events at the same positions on every replica. An error (the disk
    /// failed) stops the node: it cannot apply the log any more.
    fn submit(
        &mut self,
        index: u64,
        command: &Command,
    ) -> impl std::future::Future<Output = io::Result<Pending>> + Send;
    /// A command applied before a restart, whose effect the event log may
    /// hold: its first outcome if it wrote events (nothing is written
    /// again), `None` if the event log does not hold them.
    fn reapply(
        &mut self,
        index: u64,
        command: &Command,
    ) -> impl std::future::Future<Output = io::Result<Option<Outcome>>> + Send;
    /// How many events the event log durably holds (where the next one
    /// goes).
    fn head(&self) -> u64;
    /// Makes everything applied so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// The whole state, for a snapshot.
    fn snapshot(&mut self) -> io::Result<Vec<u8>>;
    /// Replaces the whole state by a snapshot's.
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
}

/// A snapshot as kept in `snapshot.bin`.
#[derive(Serialize, Deserialize)]
struct Stored {
    meta: SnapshotMeta,
    state: Vec<u8>,
}

/// The state machine of one node.
pub struct StateMachine<L: EventLog> {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    log: L,
    meta: Meta,
    current: Option<Arc<Stored>>,
    /// The event log's head when the node started: while the entries
    /// re-applied have not reached it, the event log holds the effects of
    /// entries past the recorded `applied` (see [`StateMachine::apply`]).
    replay_until: u64,
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

impl<L: EventLog> StateMachine<L> {
    /// Opens the state machine's files in `dir` over `log`.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path, mut log: L) -> io::Result<StateMachine<L>> {
        vfs.create_dir_all(dir)?;
        let meta: Meta = match read_one(vfs.as_ref(), &dir.join(META))? {
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
            meta.head = log.head();
            meta.applied = s.meta.last_log_id;
            meta.membership = s.meta.last_membership.clone();
        }
        let replay_until = log.head();
        Ok(StateMachine {
            vfs,
            dir: dir.to_owned(),
            log,
            meta,
            current,
            replay_until,
        })
    }

    /// The event log it applies to.
    pub fn log(&self) -> &L {
        &self.log
    }

    fn save_meta(&self) -> io::Result<()> {
        let payload = rmp_serde::to_vec(&self.meta).map_err(io::Error::other)?;
        write_one(self.vfs.as_ref(), &self.dir, META, &payload)
    }

    fn keep(&mut self, stored: Stored) -> io::Result<Arc<Stored>> {
        let payload = rmp_serde::to_vec(&stored).map_err(io::Error::other)?;
        write_one(self.vfs.as_ref(), &self.dir, SNAPSHOT, &payload)?;
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
        // Each normal entry is queued on the event log as it comes and its
        // outcome awaited after the last, so a batch shares group commits.
        let mut answers: Vec<(Option<_>, Result<Outcome, Pending>)> = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let outcome = match &entry.payload {
                EntryPayload::Blank => Ok(Outcome::None),
                EntryPayload::Normal(command) if self.meta.head < self.replay_until => {
                    // The event log holds effects of entries past the
                    // recorded `applied` (a crash came between its sync
                    // and `save_meta`): those entries are re-applied in
                    // order, each a resend answered with its first outcome,
                    // until the head is reached. An entry whose events are
                    // not there was refused the first time (a wrong
                    // expected version, say): deciding it again now, with
                    // later entries' events in the log, could accept it on
                    // this replica only. It is skipped.
                    // (In cluster mode the state machine is the event log's
                    // only writer, so the head is reached.)
                    match self.log.reapply(log_id.index(), command).await? {
                        Some(o) => {
                            if let Outcome::Appended { last_position, .. } = o {
                                self.meta.head = self.meta.head.max(last_position + 1);
                            }
                            Ok(o)
                        }
                        None => {
                            tracing::info!(
                                index = log_id.index(),
                                "an entry refused before the restart stays refused"
                            );
                            Ok(Outcome::Refused(
                                "refused before this node restarted".to_owned(),
                            ))
                        }
                    }
                }
                EntryPayload::Normal(command) => {
                    Err(self.log.submit(log_id.index(), command).await?)
                }
                EntryPayload::Membership(m) => {
                    self.meta.membership = StoredMembership::new(Some(log_id), m.clone());
                    Ok(Outcome::None)
                }
            };
            self.meta.applied = Some(log_id);
            answers.push((responder, outcome));
        }
        let mut done = Vec::with_capacity(answers.len());
        for (responder, outcome) in answers {
            let outcome = match outcome {
                Ok(o) => o,
                Err(pending) => pending.await?,
            };
            done.push((responder, outcome));
        }
        // Durable before anyone hears of it.
        self.log.sync()?;
        self.meta.head = self.meta.head.max(self.log.head());
        self.save_meta()?;
        for (responder, outcome) in done {
            if let Some(r) = responder {
                r.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // The state is taken here, under openraft's exclusive access, so
        // the snapshot is the state as of `applied`.
        let stored = (|| {
            self.log.sync()?;
            let state = self.log.snapshot()?;
            self.meta.snapshots += 1;
            let last = self.meta.applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: self.meta.membership.clone(),
            };
            self.save_meta()?;
            self.keep(Stored { meta, state })
        })();
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
        // Kept first: a crash after this installs it at the next start.
        let stored = self.keep(stored)?;
        self.log.install(&stored.state)?;
        self.log.sync()?;
        self.meta.head = self.log.head();
        self.replay_until = 0;
        self.meta.applied = meta.last_log_id;
        self.meta.membership = meta.last_membership.clone();
        self.save_meta()
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
