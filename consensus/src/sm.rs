//! The state machine: openraft's [`RaftStateMachine`] over an
//! [`EventLog`], with its bookkeeping on disk.
//!
//! Applying a batch of committed entries hands each normal entry to the
//! event log (which decides its outcome deterministically: the same
//! entries give the same events at the same positions on every replica),
//! makes the event log durable, then records in `sm.meta` (written to a new
//! file and renamed over the old) the last applied entry and the latest
//! membership. A crash between the two re-applies, after the restart, the
//! entries past the recorded one: the event log must recognise them as
//! applied (the engine's integration records the Raft index with the
//! events, so it can).
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

/// What the state machine applies committed commands to: the event log.
pub trait EventLog: Send + Sync + 'static {
    /// Applies the committed `command` of Raft index `index`. Must be
    /// deterministic, and must answer a command it already applied (after
    /// a crash) with its first outcome, writing nothing again. An error
    /// (the disk failed) stops the node: it cannot apply the log any more.
    fn apply(
        &mut self,
        index: u64,
        command: &Command,
    ) -> impl std::future::Future<Output = io::Result<Outcome>> + Send;
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
            meta.applied = s.meta.last_log_id;
            meta.membership = s.meta.last_membership.clone();
        }
        Ok(StateMachine {
            vfs,
            dir: dir.to_owned(),
            log,
            meta,
            current,
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
        let mut answers = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let outcome = match &entry.payload {
                EntryPayload::Blank => Outcome::None,
                EntryPayload::Normal(command) => self.log.apply(log_id.index(), command).await?,
                EntryPayload::Membership(m) => {
                    self.meta.membership = StoredMembership::new(Some(log_id), m.clone());
                    Outcome::None
                }
            };
            self.meta.applied = Some(log_id);
            answers.push((responder, outcome));
        }
        // Durable before anyone hears of it.
        self.log.sync()?;
        self.save_meta()?;
        for (responder, outcome) in answers {
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
