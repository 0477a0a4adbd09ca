//! The Raft log on disk: openraft's [`RaftLogStorage`] over one file of
//! ordered records (`raft.wal`, framed by [`crate::frame`]).
//!
//! Every change is a record: `Vote`, `Append` (entries), `TruncateAfter`,
//! `Purge`, `Committed`. One writer thread writes them in the order they
//! were made and covers as many as are waiting with one `fdatasync` (group
//! commit), then tells openraft in that order: an append is reported
//! flushed only once its bytes are durable, a vote is on disk before
//! [`RaftLogStorage::save_vote`] returns, and a truncation or purge is never
//! durable before the appends that preceded it. Recovery replays the
//! records.
//!
//! Each write batch starts with a `Batch` marker naming the offset it
//! starts at, and a batch is written only after the previous one is
//! synced. So at a crash only the last batch can be torn: when reading
//! stops at a bad frame, a valid batch marker further on means that synced
//! data went bad, and the log is refused (a node that lost entries it
//! acknowledged must not vote; it rejoins empty), while no such marker
//! means a torn tail, which is cut.
//!
//! The entries not yet purged are also held in memory (openraft purges
//! what snapshots cover, so this is bounded by the snapshot policy); the
//! file is rewritten without the purged prefix once that prefix is most of
//! it (`COMPACT_BYTES`), through a new file renamed over the old one.

use std::collections::BTreeMap;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use logbook_storage::fs::{OpenMode, VFile, Vfs};
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::frame;

/// The log's file name in its directory.
pub const FILE: &str = "raft.wal";
const TMP: &str = "raft.wal.tmp";
/// The file is rewritten without its purged records once it is larger
/// than this and more than twice what is live.
pub const COMPACT_BYTES: u64 = 64 << 20;
/// Most bytes one write batch takes from the queue.
const MAX_BATCH: usize = 16 << 20;

type C = crate::TypeConfig;
type LogId = openraft::alias::LogIdOf<C>;
type Vote = openraft::alias::VoteOf<C>;
type Entry = openraft::alias::EntryOf<C>;

/// One record of the file.
#[derive(Serialize, Deserialize)]
enum Record {
    /// The start of a write batch, at this file offset.
    Batch(u64),
    Vote(Vote),
    Append(Vec<Entry>),
    TruncateAfter(Option<LogId>),
    Purge(LogId),
    Committed(Option<LogId>),
}

/// The log's state, as recovery and every change leave it.
struct State {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
    /// Bytes of the records that still matter (the entries not purged),
    /// about: what a rewrite would keep.
    live_bytes: u64,
    /// Sizes of the entries' records, by index, to keep `live_bytes`.
    sizes: BTreeMap<u64, u64>,
}

impl State {
    fn new() -> State {
        State {
            vote: None,
            committed: None,
            purged: None,
            entries: BTreeMap::new(),
            live_bytes: 0,
            sizes: BTreeMap::new(),
        }
    }

    fn apply(&mut self, record: Record, bytes: u64) {
        match record {
            Record::Batch(_) => {}
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::Append(entries) => {
                let per = bytes / entries.len().max(1) as u64;
                for e in entries {
                    let index = e.index();
                    self.entries.insert(index, e);
                    if let Some(old) = self.sizes.insert(index, per) {
                        self.live_bytes -= old;
                    }
                    self.live_bytes += per;
                }
            }
            Record::TruncateAfter(last) => {
                let from = last.map_or(0, |l| l.index() + 1);
                self.entries.split_off(&from);
                for (_, size) in self.sizes.split_off(&from) {
                    self.live_bytes -= size;
                }
            }
            Record::Purge(upto) => {
                let keep = self.entries.split_off(&(upto.index() + 1));
                self.entries = keep;
                let keep = self.sizes.split_off(&(upto.index() + 1));
                for size in std::mem::replace(&mut self.sizes, keep).values() {
                    self.live_bytes -= size;
                }
                if self
                    .purged
                    .as_ref()
                    .is_none_or(|p| p.index() < upto.index())
                {
                    self.purged = Some(upto);
                }
            }
        }
    }

    fn last_log_id(&self) -> Option<LogId> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id())
            .or(self.purged)
    }

    /// The records that rebuild this state in a new file.
    fn rewrite(&self) -> Vec<Record> {
        let mut out = Vec::new();
        if let Some(v) = &self.vote {
            out.push(Record::Vote(*v));
        }
        if let Some(p) = &self.purged {
            out.push(Record::Purge(*p));
        }
        if self.committed.is_some() {
            out.push(Record::Committed(self.committed));
        }
        // Appends of 1,024 entries (cut further by `encode_appends` when
        // that is too many bytes).
        let entries: Vec<Entry> = self.entries.values().cloned().collect();
        for chunk in entries.chunks(1024) {
            out.push(Record::Append(chunk.to_vec()));
        }
        out
    }
}

/// Largest payload of a batch marker (a variant tag and a u64, in
/// MessagePack: at most about 20 bytes).
const MARKER_BYTES: usize = 64;

/// Largest record written: half what a reader accepts
/// ([`frame::MAX_PAYLOAD`]), so that whatever is written reads back. An
/// append of more is written as several records.
const MAX_RECORD_BYTES: usize = frame::MAX_PAYLOAD / 2;

fn encode(record: &Record, out: &mut Vec<u8>) -> io::Result<()> {
    let payload = rmp_serde::to_vec(record).map_err(io::Error::other)?;
    frame::encode(&payload, out);
    Ok(())
}

/// `entries` as append records of at most [`MAX_RECORD_BYTES`] each,
/// framed into `out`; each record with its framed size. One entry past the
/// limit is refused (the engine's batches are far smaller).
fn encode_appends(entries: Vec<Entry>, out: &mut Vec<u8>) -> io::Result<Vec<(Record, u64)>> {
    let record = Record::Append(entries);
    let payload = rmp_serde::to_vec(&record).map_err(io::Error::other)?;
    if payload.len() <= MAX_RECORD_BYTES {
        frame::encode(&payload, out);
        return Ok(vec![(record, (payload.len() + frame::HEADER) as u64)]);
    }
    let Record::Append(mut entries) = record else {
        unreachable!("built as an append above")
    };
    if entries.len() == 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a Raft entry of {} bytes is past the record limit of {MAX_RECORD_BYTES}",
                payload.len()
            ),
        ));
    }
    let second = entries.split_off(entries.len() / 2);
    let mut records = encode_appends(entries, out)?;
    records.extend(encode_appends(second, out)?);
    Ok(records)
}

/// `record` framed into `out`: an append as [`encode_appends`] cuts it,
/// anything else as one frame; each record written with its framed size.
fn encode_record(record: Record, out: &mut Vec<u8>) -> io::Result<Vec<(Record, u64)>> {
    match record {
        Record::Append(entries) => encode_appends(entries, out),
        record => {
            let before = out.len();
            encode(&record, out)?;
            let n = (out.len() - before) as u64;
            Ok(vec![(record, n)])
        }
    }
}

fn decode(payload: &[u8]) -> io::Result<Record> {
    rmp_serde::from_slice(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What the writer thread does when a job's bytes are durable.
enum Done {
    Nothing,
    Flushed(IOFlushed<C>),
    Synced(tokio::sync::oneshot::Sender<io::Result<()>>),
}

enum Job {
    /// Records, framed, and who to tell.
    Write(Vec<u8>, Done),
    /// Rewrite the file as these records (the state when it was asked).
    Compact(Vec<u8>),
}

/// The writer thread's side.
struct Writer {
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    file: Arc<dyn VFile>,
    len: u64,
    /// Set once a write or sync failed: nothing after it is durable.
    failed: Option<String>,
}

impl Writer {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            let mut bytes = 0;
            while bytes < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => {
                        if let Job::Write(b, _) = &job {
                            bytes += b.len();
                        }
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.serve(batch);
        }
    }

    fn serve(&mut self, batch: Vec<Job>) {
        let mut dones = Vec::new();
        let mut buf = Vec::new();
        for job in batch {
            match job {
                Job::Write(bytes, done) => {
                    buf.extend_from_slice(&bytes);
                    dones.push(done);
                }
                Job::Compact(records) => {
                    // What came before is written first, in the old file.
                    let result = self.write(&buf).and_then(|()| self.compact(&records));
                    buf.clear();
                    tell(std::mem::take(&mut dones), &result);
                }
            }
        }
        if !dones.is_empty() {
            let result = self.write(&buf);
            tell(dones, &result);
        }
    }

    /// Writes `records` as one batch and syncs it.
    fn write(&mut self, records: &[u8]) -> io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(format!(
                "an earlier write of the Raft log failed: {why}"
            )));
        }
        if records.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(records.len() + 32);
        encode(&Record::Batch(self.len), &mut out)?;
        out.extend_from_slice(records);
        let result = self
            .file
            .write_all_at(&out, self.len)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += out.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Replaces the file by one holding `records`, through a renamed new
    /// file (a crash leaves the old file or the new one, both whole). A
    /// failure fails every later write: after a rename that may have
    /// happened, the old handle's file may no longer be the log.
    fn compact(&mut self, records: &[u8]) -> io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(io::Error::other(format!(
                "an earlier write of the Raft log failed: {why}"
            )));
        }
        let result = self.rewrite(records);
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    fn rewrite(&mut self, records: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(TMP);
        if self.vfs.exists(&tmp) {
            self.vfs.remove_file(&tmp)?;
        }
        let file = self.vfs.open(&tmp, OpenMode::CreateNew)?;
        let mut out = Vec::with_capacity(records.len() + 32);
        encode(&Record::Batch(0), &mut out)?;
        out.extend_from_slice(records);
        file.write_all_at(&out, 0)?;
        file.sync_data()?;
        self.vfs.rename(&tmp, &self.dir.join(FILE))?;
        self.vfs.sync_dir(&self.dir)?;
        self.file = file;
        self.len = out.len() as u64;
        Ok(())
    }
}

fn tell(dones: Vec<Done>, result: &io::Result<()>) {
    for done in dones {
        let r = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match done {
            Done::Nothing => {}
            Done::Flushed(cb) => cb.io_completed(r),
            Done::Synced(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// Creates `dir` and any missing parents, durably: each new directory's
/// name is synced into its parent (a first start's vote must not vanish
/// with a directory a power cut forgot).
pub(crate) fn create_dirs(vfs: &dyn Vfs, dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !vfs.exists(d)).collect();
    vfs.create_dir_all(dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            vfs.sync_dir(parent)?;
        }
    }
    Ok(())
}

/// The Raft log of one node.
pub struct Wal {
    state: Arc<Mutex<State>>,
    jobs: mpsc::Sender<Job>,
    /// Bytes in the file, about (to decide a rewrite).
    file_bytes: Arc<Mutex<u64>>,
    /// The file is rewritten past this size (and twice what is live).
    compact_bytes: u64,
    /// The file is rewritten at once when a purge reaches this index
    /// ([`Wal::compact_once_purged`]; `u64::MAX`: none asked).
    compact_at: Arc<AtomicU64>,
}

/// Asks the log to rewrite its file without the purged entries as soon as
/// a purge reaches an index, whatever its size (an erase: the purged
/// entries may hold the erased events' bytes).
#[derive(Clone, Debug)]
pub struct CompactOncePurged(Arc<AtomicU64>);

impl CompactOncePurged {
    /// Once the entries up to `index` are purged.
    pub fn at(&self, index: u64) {
        self.0.fetch_min(index, Ordering::AcqRel);
    }
}

/// Reads the log (openraft's replication and apply tasks hold these).
pub struct WalReader {
    state: Arc<Mutex<State>>,
}

impl Clone for WalReader {
    fn clone(&self) -> Self {
        WalReader {
            state: Arc::clone(&self.state),
        }
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`: replays its records, cuts a
    /// torn tail, refuses damaged synced data.
    pub fn open(vfs: Arc<dyn Vfs>, dir: &Path) -> io::Result<Wal> {
        Wal::open_compacting_at(vfs, dir, COMPACT_BYTES)
    }

    /// [`Wal::open`], rewriting the file once it is past `compact_bytes`
    /// and twice what is live (instead of [`COMPACT_BYTES`]): for tests.
    pub fn open_compacting_at(
        vfs: Arc<dyn Vfs>,
        dir: &Path,
        compact_bytes: u64,
    ) -> io::Result<Wal> {
        create_dirs(vfs.as_ref(), dir)?;
        let path = dir.join(FILE);
        // A rewrite that did not reach its rename left a partial new file.
        if vfs.exists(&dir.join(TMP)) {
            vfs.remove_file(&dir.join(TMP))?;
        }
        let file = if vfs.exists(&path) {
            vfs.open(&path, OpenMode::ReadWrite)?
        } else {
            // A new file's name is durable only once its directory is
            // synced: a vote saved into it must not vanish with the name.
            let file = vfs.open(&path, OpenMode::CreateNew)?;
            vfs.sync_dir(dir)?;
            file
        };
        let len = file.len()?;
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0)?;
        let read = frame::read_all(&bytes);
        if read.valid_len < bytes.len() {
            // Batch markers are tiny: only frames that small are candidates,
            // which keeps the scan linear in the tail.
            if let Some((at, _)) = frame::scan(&bytes, read.valid_len + 1, MARKER_BYTES).find(
                |(at, p)| matches!(decode(p), Ok(Record::Batch(start)) if start == *at as u64),
            ) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: damaged record at byte {}, before a later write batch at byte {at}: synced Raft log entries went bad; this node must rejoin with an empty log",
                        path.display(),
                        read.valid_len
                    ),
                ));
            }
            tracing::warn!(
                file = %path.display(),
                cut = bytes.len() - read.valid_len,
                at = read.valid_len,
                "Raft log: cutting a torn tail (an unsynced write cut short by a crash)"
            );
            file.set_len(read.valid_len as u64)?;
            file.sync_data()?;
        }
        let mut state = State::new();
        for (_, payload) in &read.frames {
            state.apply(decode(payload)?, payload.len() as u64);
        }
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            vfs,
            dir: dir.to_owned(),
            file,
            len: read.valid_len as u64,
            failed: None,
        };
        std::thread::Builder::new()
            .name("raft-wal".into())
            .spawn(move || writer.run(rx))?;
        Ok(Wal {
            state: Arc::new(Mutex::new(state)),
            jobs: tx,
            file_bytes: Arc::new(Mutex::new(read.valid_len as u64)),
            compact_bytes,
            compact_at: Arc::new(AtomicU64::new(u64::MAX)),
        })
    }

    /// A handle that makes the file be rewritten once a purge reaches an
    /// index.
    pub fn compact_once_purged(&self) -> CompactOncePurged {
        CompactOncePurged(Arc::clone(&self.compact_at))
    }

    /// Applies `record` to the state and queues it for the writer, both
    /// under the state lock, so the file's order is the state's.
    fn change(&self, record: Record, done: Done) -> io::Result<()> {
        // A purge that reaches the index asked for rewrites the file now.
        let asked = match &record {
            Record::Purge(upto) => {
                let at = self.compact_at.load(Ordering::Acquire);
                let reached = upto.index() >= at;
                if reached {
                    let _ = self.compact_at.compare_exchange(
                        at,
                        u64::MAX,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                reached
            }
            _ => false,
        };
        let mut bytes = Vec::new();
        let records = encode_record(record, &mut bytes)?;
        let mut state = self.state.lock();
        for (record, n) in records {
            state.apply(record, n);
        }
        let mut file_bytes = self.file_bytes.lock();
        *file_bytes += bytes.len() as u64;
        self.jobs
            .send(Job::Write(bytes, done))
            .map_err(|_| io::Error::other("the Raft log's writer has stopped"))?;
        if asked || (*file_bytes > self.compact_bytes && *file_bytes > 2 * state.live_bytes) {
            let mut records = Vec::new();
            for r in state.rewrite() {
                encode_record(r, &mut records)?;
            }
            *file_bytes = records.len() as u64;
            self.jobs
                .send(Job::Compact(records))
                .map_err(|_| io::Error::other("the Raft log's writer has stopped"))?;
        }
        Ok(())
    }

    /// Waits until everything queued so far is durable.
    async fn sync(&self, record: Record) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.change(record, Done::Synced(tx))?;
        rx.await
            .map_err(|_| io::Error::other("the Raft log's writer has stopped"))?
    }
}

fn range_of(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<C> for WalReader {
    async fn try_get_log_entries<
        RB: RangeBounds<u64> + Clone + std::fmt::Debug + openraft::OptionalSend,
    >(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let state = self.state.lock();
        Ok(state
            .entries
            .range(range_of(&range))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.state.lock().vote)
    }
}

impl RaftLogReader<C> for Wal {
    async fn try_get_log_entries<
        RB: RangeBounds<u64> + Clone + std::fmt::Debug + openraft::OptionalSend,
    >(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.reader().try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.state.lock().vote)
    }
}

impl Wal {
    fn reader(&self) -> WalReader {
        WalReader {
            state: Arc::clone(&self.state),
        }
    }
}

impl RaftLogStorage<C> for Wal {
    type LogReader = WalReader;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let state = self.state.lock();
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: state.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.sync(Record::Vote(*vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.change(Record::Committed(committed), Done::Nothing)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.state.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        self.change(Record::Append(entries), Done::Flushed(callback))
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        // Durable before it returns: openraft may next install a snapshot
        // in the state machine (durable on its own path), and entries that
        // conflict with it must not come back after a crash.
        self.sync(Record::TruncateAfter(last)).await
    }

    async fn purge(&mut self, upto: LogId) -> Result<(), io::Error> {
        self.change(Record::Purge(upto), Done::Nothing)
    }
}
