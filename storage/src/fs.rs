//! All file I/O of the engine goes through [`Vfs`] and [`VFile`].
//!
//! Two implementations:
//! - [`OsFs`]: the real file system (`pread`/`pwrite`/`fdatasync`, `flock`).
//! - [`MemFs`]: an in-memory file system for crash and disk-fault tests. It
//!   remembers which bytes and which directory entries an `fdatasync` or a
//!   directory sync made durable, and [`MemFs::crash`] returns the state a
//!   power cut would leave: everything durable, plus (optionally) a random,
//!   possibly torn, part of what was not. It can also fail the Nth write or
//!   sync with `EIO` or `ENOSPC`, and model a failed writeback as Linux
//!   reports it: the pages are lost to the disk but stay readable in the
//!   page cache, and the error is reported once per open file description,
//!   to whichever `fdatasync` on that description checks first
//!   ([`MemFs::fail_writeback_after`]).
//!
//! The trait is object-safe and used as `Arc<dyn Vfs>`: a virtual call costs
//! nothing next to a system call, and it keeps generics out of every type.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::StorageError;

thread_local! {
    /// Set inside [`without_waiting`]: reads of real files on this thread
    /// take only what the page cache holds.
    static NO_WAIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set when such a read found something missing from the cache.
    static WOULD_WAIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with every read of a file on this thread served from the page
/// cache only: a read that would wait for the disk fails at once instead
/// (`preadv2(RWF_NOWAIT)` on Linux), and then this returns `None`, whatever
/// `f` made of the failure. Reads have no side effects, so the caller runs
/// `f` again where waiting is fine.
///
/// For async servers: a read whose data is cached (most are: recent
/// events, hot streams) is answered on the network thread at the cost of
/// a memory copy, and only the rest pays a hop to a blocking thread (which
/// halved cached read throughput when every read paid it). Writes and
/// in-memory file systems are not affected.
pub fn without_waiting<T>(f: impl FnOnce() -> T) -> Option<T> {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_WAIT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(NO_WAIT.with(|c| c.replace(true)));
    // A call inside another keeps what the outer one found.
    let outer = WOULD_WAIT.with(|c| c.replace(false));
    let out = f();
    let waited = WOULD_WAIT.with(|c| c.replace(outer));
    if waited {
        WOULD_WAIT.with(|c| c.set(true));
        None
    } else {
        Some(out)
    }
}

/// Atomically replaces `dir/name` with `bytes`: written to `dir/tmp`,
/// fsynced, renamed over it, and the directory synced. After a crash the
/// file is the old one or the new one, never a mix (a stale `tmp` is
/// removed first).
pub(crate) fn replace_file(
    vfs: &dyn Vfs,
    dir: &Path,
    name: &str,
    tmp: &str,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let tmp = dir.join(tmp);
    let path = dir.join(name);
    if vfs.exists(&tmp) {
        vfs.remove_file(&tmp)
            .map_err(|e| StorageError::io("remove", &tmp, e))?;
    }
    let f = vfs
        .open(&tmp, OpenMode::CreateNew)
        .map_err(|e| StorageError::io("create", &tmp, e))?;
    f.write_all_at(bytes, 0)
        .map_err(|e| StorageError::io("write", &tmp, e))?;
    // The rename below must never expose a file whose bytes are not on
    // disk yet.
    f.sync_data()
        .map_err(|e| StorageError::io("fdatasync", &tmp, e))?;
    drop(f);
    vfs.rename(&tmp, &path)
        .map_err(|e| StorageError::io("rename", &path, e))?;
    // Until the directory is synced the rename itself may be lost.
    vfs.sync_dir(dir)
        .map_err(|e| StorageError::io("sync dir", dir, e))
}

/// The whole of the small file at `path`.
pub(crate) fn read_whole(vfs: &dyn Vfs, path: &Path) -> io::Result<Vec<u8>> {
    let f = vfs.open(path, OpenMode::Read)?;
    let mut b = vec![0u8; f.len()? as usize];
    f.read_exact_at(&mut b, 0)?;
    Ok(b)
}

/// The bytes of a small file written whole (`magic`, a `u32` version,
/// the rest of a `header_len`-byte header, a body, and a crc32c of every
/// byte before it at the end), without that checksum, once they check:
/// or why they are not such a file.
pub(crate) fn checked_file<'a>(
    b: &'a [u8],
    magic: &[u8; 8],
    version: u32,
    header_len: usize,
) -> Result<&'a [u8], &'static str> {
    if b.len() < header_len + 4 {
        return Err("short file");
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if logbook_protocol::le::try_u32(crc, 0) != Some(crc32c::crc32c(body)) {
        return Err("checksum mismatch");
    }
    if body.get(..8) != Some(&magic[..]) {
        return Err("bad magic");
    }
    if logbook_protocol::le::try_u32(body, 8) != Some(version) {
        return Err("unknown version");
    }
    Ok(body)
}

/// Inside [`without_waiting`]: marks the thread as having met something
/// that would wait for the disk and returns true. Outside: false.
pub(crate) fn would_wait() -> bool {
    let no_wait = NO_WAIT.with(|c| c.get());
    if no_wait {
        WOULD_WAIT.with(|c| c.set(true));
    }
    no_wait
}

/// Reads at `offset` from what the page cache holds only, for
/// [`without_waiting`]; `WouldBlock` (and the thread marked) if the first
/// byte is not cached or the kernel cannot tell.
#[cfg(target_os = "linux")]
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    match preadv2(
        file,
        &mut [io::IoSliceMut::new(buf)],
        offset,
        ReadWriteFlags::NOWAIT,
    ) {
        // Nothing read: the end of the file, or the kernel could not say
        // without waiting. Let a read that may wait tell.
        Ok(0) if !buf.is_empty() => {
            WOULD_WAIT.with(|c| c.set(true));
            Err(io::ErrorKind::WouldBlock.into())
        }
        Ok(n) => Ok(n),
        Err(Errno::INTR) => Err(io::ErrorKind::Interrupted.into()),
        Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL) => {
            WOULD_WAIT.with(|c| c.set(true));
            Err(io::ErrorKind::WouldBlock.into())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn read_cached(_file: &File, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
    WOULD_WAIT.with(|c| c.set(true));
    Err(io::ErrorKind::WouldBlock.into())
}

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet.
    CreateNew,
}

/// A file system: the directory operations the engine needs.
pub trait Vfs: Send + Sync + fmt::Debug {
    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &Path) -> bool;
    /// Takes an exclusive advisory lock on `path` (created if missing) for as
    /// long as the returned guard lives. `Ok(None)`: someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;
}

/// Proof that a lock is held; dropping it releases the lock.
pub trait LockGuard: Send + Sync + fmt::Debug {}

/// An open file, addressed by offset (no shared cursor, so readers and the
/// writer never contend on a seek position).
pub trait VFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (fewer only at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// `fdatasync`: makes written data (and the file size) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Opens the same file again: a new open file description, with its own
    /// record of which writeback errors it has reported. Linux reports a
    /// failed writeback once per description, to the first `fdatasync` that
    /// checks: two threads syncing through one description can see one fail
    /// and the other succeed for the same lost pages. Each sync lane syncs
    /// through a description of its own.
    fn reopen(&self) -> io::Result<Arc<dyn VFile>>;
    /// Drops the file's clean cached pages, so that the next reads come from
    /// the disk. After a failed writeback Linux keeps the lost pages in the
    /// cache, marked clean: reading through the cache would show data the
    /// disk does not hold. (`posix_fadvise(DONTNEED)`; dirty pages are kept.)
    fn drop_cache(&self) -> io::Result<()> {
        Ok(())
    }
    /// Says the file will not be written again (a segment once sealed): the
    /// store's budget of open files may then close it while idle and reopen
    /// it read-only. Files opened read-only are so from the start.
    fn release(&self) {}

    /// Reads exactly `buf.len()` bytes at `offset`, failing with
    /// `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = buf.get_mut(n..).unwrap_or_default();
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The real file system.

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

#[derive(Debug)]
struct OsFile {
    file: File,
    path: PathBuf,
    writable: bool,
}

#[derive(Debug)]
struct OsLock(#[allow(dead_code)] File);

impl LockGuard for OsLock {}

impl Vfs for OsFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
        };
        Ok(Arc::new(OsFile {
            file: o.open(path)?,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // A new or renamed file's directory entry is durable only once the
        // directory itself is synced; without this a crash can lose a segment
        // or a MANIFEST that was fully fsynced.
        File::open(path)?.sync_all()
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(OsLock(file)))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl VFile for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if NO_WAIT.with(|c| c.get()) {
            return read_cached(&self.file, buf, offset);
        }
        self.file.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn reopen(&self) -> io::Result<Arc<dyn VFile>> {
        // A new open(2), not a dup(2): a dup shares the description, and
        // with it the writeback-error state this exists to separate.
        let file = OpenOptions::new()
            .read(true)
            .write(self.writable)
            .open(&self.path)?;
        Ok(Arc::new(OsFile {
            file,
            path: self.path.clone(),
            writable: self.writable,
        }))
    }

    fn drop_cache(&self) -> io::Result<()> {
        rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed)
            .map_err(io::Error::from)
    }
}

// ---------------------------------------------------------------------------
// The in-memory, fault-injecting file system.

/// Which error an injected fault raises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: the disk is full.
    NoSpace,
}

impl Fault {
    fn error(self) -> io::Error {
        match self {
            Fault::Eio => io::Error::from_raw_os_error(5),
            Fault::NoSpace => io::Error::from_raw_os_error(28),
        }
    }
}

/// What a simulated power cut keeps of the writes no fsync covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: only synced bytes survive.
    DropUnsynced,
    /// A random subset of the unsynced writes, each possibly cut short at a
    /// 512-byte sector boundary, as a disk that reorders and tears writes.
    TornUnsynced {
        /// Seed of the choice, so a failing case can be replayed.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct MemFileState {
    /// What readers see (the page cache).
    live: Vec<u8>,
    /// What a power cut keeps.
    durable: Vec<u8>,
    /// Writes since the last sync, in order, for torn crashes.
    pending: Vec<PendingWrite>,
    /// Writeback errors so far (Linux's `errseq_t` of the file's mapping):
    /// a description whose `seen` is below this has an error to report.
    wb_err: u64,
    /// Syncs in progress, per description (by its id), to decide which one
    /// a failed writeback is reported to.
    syncing: BTreeMap<u64, u32>,
}

#[derive(Debug, Clone)]
enum PendingWrite {
    Data { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct MemFileInner {
    state: Mutex<MemFileState>,
}

#[derive(Debug, Default)]
struct MemFsState {
    /// The namespace readers see.
    live: BTreeMap<PathBuf, Arc<MemFileInner>>,
    /// The namespace as of each directory's last sync.
    durable: BTreeMap<PathBuf, Arc<MemFileInner>>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    /// Fail the write that brings `writes` to this count, and every later one.
    fail_writes_at: Option<(u64, Fault)>,
    fail_syncs_at: Option<(u64, Fault)>,
    /// The sync with this number fails its writeback (once).
    fail_writeback_at: Option<u64>,
    /// Descriptions opened so far (their ids).
    descriptions: u64,
    /// How long a failing writeback waits for another sync on its
    /// description (see `fail_writeback_after`).
    partner_wait: std::time::Duration,
    writes: u64,
    syncs: u64,
}

/// In-memory file system that can lose unsynced data and inject faults.
/// Clones share the same files.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    state: Arc<Mutex<MemFsState>>,
}

#[derive(Debug)]
struct MemFile {
    inner: Arc<MemFileInner>,
    fs: MemFs,
    writable: bool,
    /// This description's id (for `MemFileState::syncing`).
    id: u64,
    /// Writeback errors this description has reported.
    seen: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct MemLock {
    fs: MemFs,
    path: PathBuf,
}

impl LockGuard for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.fs.state.lock().locks.remove(&self.path);
    }
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// From the next write on, the write numbered `n` (0: the very next one)
    /// and every later write fail with `fault`, until [`MemFs::clear_faults`].
    pub fn fail_writes_after(&self, n: u64, fault: Fault) {
        let mut s = self.state.lock();
        s.fail_writes_at = Some((s.writes + n, fault));
    }

    /// Like [`MemFs::fail_writes_after`], for `fdatasync` and directory syncs.
    pub fn fail_syncs_after(&self, n: u64, fault: Fault) {
        let mut s = self.state.lock();
        s.fail_syncs_at = Some((s.syncs + n, fault));
    }

    /// The sync numbered `n` from now (0: the very next one; file syncs
    /// and directory syncs count alike) fails its writeback, as a disk
    /// error under `fdatasync` does on Linux: the file's unsynced writes
    /// never reach the disk but stay readable in the page cache (clean, so
    /// nothing writes them again), and the error is reported once per open
    /// file description, to the first sync on it that checks. If another
    /// sync on the same description is in progress (two threads syncing
    /// through one description), that other one reports it and this one
    /// returns success; to make that overlap likely, the failing sync waits
    /// up to `partner_wait` for another sync on its description to start.
    pub fn fail_writeback_after(&self, n: u64, partner_wait: std::time::Duration) {
        let mut s = self.state.lock();
        s.fail_writeback_at = Some(s.syncs + n);
        s.partner_wait = partner_wait;
    }

    /// Stops injecting faults.
    pub fn clear_faults(&self) {
        let mut s = self.state.lock();
        s.fail_writes_at = None;
        s.fail_syncs_at = None;
        s.fail_writeback_at = None;
    }

    /// Opens a description of `inner`.
    fn description(&self, inner: Arc<MemFileInner>, writable: bool) -> MemFile {
        let id = {
            let mut s = self.state.lock();
            s.descriptions += 1;
            s.descriptions
        };
        // A new description starts with every earlier error seen (Linux
        // reports an error no one has seen to a new opener too; assuming
        // it was seen is the harsher case).
        let seen = inner.state.lock().wb_err;
        MemFile {
            inner,
            fs: self.clone(),
            writable,
            id,
            seen: std::sync::atomic::AtomicU64::new(seen),
        }
    }

    /// Number of writes and syncs seen so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.writes, s.syncs)
    }

    /// What a power cut right now would leave on disk, as a new, independent
    /// file system. Handles open on `self` do not affect the result.
    pub fn crash(&self, mode: CrashMode) -> MemFs {
        let s = self.state.lock();
        let mut rng = match mode {
            CrashMode::DropUnsynced => None,
            CrashMode::TornUnsynced { seed } => Some(SplitMix(seed)),
        };
        let mut out = MemFsState {
            dirs: s.dirs.clone(),
            ..MemFsState::default()
        };
        // A file whose directory entry is durable keeps its durable bytes. A
        // torn crash may also keep some unsynced writes, in any order.
        let mut seen: Vec<(*const MemFileInner, Arc<MemFileInner>)> = Vec::new();
        for (path, file) in &s.durable {
            let key = Arc::as_ptr(file);
            let copy = if let Some((_, c)) = seen.iter().find(|(k, _)| *k == key) {
                Arc::clone(c)
            } else {
                let fs = file.state.lock();
                let mut bytes = fs.durable.clone();
                if let Some(rng) = rng.as_mut() {
                    for w in &fs.pending {
                        if rng.next() % 2 == 0 {
                            continue;
                        }
                        match w {
                            PendingWrite::SetLen(len) => {
                                bytes.resize(*len as usize, 0);
                            }
                            PendingWrite::Data {
                                offset,
                                bytes: data,
                            } => {
                                // Keep a prefix cut at a sector boundary.
                                let sectors = data.len().div_ceil(512) as u64;
                                let keep =
                                    ((rng.next() % (sectors + 1)) as usize * 512).min(data.len());
                                let start = *offset as usize;
                                let end = start + keep;
                                if bytes.len() < end {
                                    bytes.resize(end, 0);
                                }
                                if let (Some(dst), Some(src)) =
                                    (bytes.get_mut(start..end), data.get(..keep))
                                {
                                    dst.copy_from_slice(src);
                                }
                            }
                        }
                    }
                }
                let c = Arc::new(MemFileInner {
                    state: Mutex::new(MemFileState {
                        live: bytes.clone(),
                        durable: bytes,
                        ..MemFileState::default()
                    }),
                });
                seen.push((key, Arc::clone(&c)));
                c
            };
            out.live.insert(path.clone(), Arc::clone(&copy));
            out.durable.insert(path.clone(), copy);
        }
        MemFs {
            state: Arc::new(Mutex::new(out)),
        }
    }

    /// The live bytes of a file (for tests that corrupt or inspect files).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.live.get(path).map(|f| f.state.lock().live.clone())
    }

    /// Overwrites a file's bytes, live and durable alike (a test's way of
    /// corrupting what is on disk).
    pub fn write_file(&self, path: &Path, bytes: Vec<u8>) {
        let s = self.state.lock();
        if let Some(f) = s.live.get(path) {
            let mut fs = f.state.lock();
            fs.live = bytes.clone();
            fs.durable = bytes;
            fs.pending.clear();
        }
    }

    fn before_write(&self) -> io::Result<()> {
        let mut s = self.state.lock();
        let n = s.writes;
        s.writes += 1;
        match s.fail_writes_at {
            Some((at, fault)) if n >= at => Err(fault.error()),
            _ => Ok(()),
        }
    }

    fn before_sync(&self) -> io::Result<()> {
        // A directory whose writeback fails reports it at once.
        match self.next_sync()? {
            true => Err(Fault::Eio.error()),
            false => Ok(()),
        }
    }

    /// Counts a sync; `Ok(true)` if it is the one whose writeback fails.
    fn next_sync(&self) -> io::Result<bool> {
        let mut s = self.state.lock();
        let n = s.syncs;
        s.syncs += 1;
        match s.fail_syncs_at {
            Some((at, fault)) if n >= at => return Err(fault.error()),
            _ => {}
        }
        if s.fail_writeback_at == Some(n) {
            s.fail_writeback_at = None;
            return Ok(true);
        }
        Ok(false)
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl Vfs for MemFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let mut p = Some(path);
        while let Some(dir) = p {
            if dir.as_os_str().is_empty() {
                break;
            }
            s.dirs.insert(dir.to_path_buf());
            p = dir.parent();
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        if !s.dirs.contains(path) {
            return Err(not_found(path));
        }
        let mut names: Vec<String> = s
            .live
            .keys()
            .chain(s.dirs.iter())
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>> {
        let mut s = self.state.lock();
        let inner = match (s.live.get(path), mode) {
            (Some(_), OpenMode::CreateNew) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    path.display().to_string(),
                ));
            }
            (Some(f), _) => Arc::clone(f),
            (None, OpenMode::CreateNew) => {
                let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if !s.dirs.contains(&parent) {
                    return Err(not_found(&parent));
                }
                let f = Arc::new(MemFileInner::default());
                s.live.insert(path.to_path_buf(), Arc::clone(&f));
                f
            }
            (None, _) => return Err(not_found(path)),
        };
        drop(s);
        Ok(Arc::new(self.description(inner, mode != OpenMode::Read)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let f = s.live.remove(from).ok_or_else(|| not_found(from))?;
        s.live.insert(to.to_path_buf(), f);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.before_sync()?;
        let mut s = self.state.lock();
        let s = &mut *s;
        s.durable.retain(|p, _| p.parent() != Some(path));
        for (p, f) in &s.live {
            if p.parent() == Some(path) {
                s.durable.insert(p.clone(), Arc::clone(f));
            }
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.live.contains_key(path) || s.dirs.contains(path)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let mut s = self.state.lock();
        if !s.live.contains_key(path) {
            s.live
                .insert(path.to_path_buf(), Arc::new(MemFileInner::default()));
        }
        if !s.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemLock {
            fs: self.clone(),
            path: path.to_path_buf(),
        })))
    }
}

impl VFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let s = self.inner.state.lock();
        let start = (offset as usize).min(s.live.len());
        let n = buf.len().min(s.live.len() - start);
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), s.live.get(start..start + n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ));
        }
        self.fs.before_write()?;
        let mut s = self.inner.state.lock();
        let start = offset as usize;
        let end = start + buf.len();
        if s.live.len() < end {
            s.live.resize(end, 0);
        }
        if let Some(dst) = s.live.get_mut(start..end) {
            dst.copy_from_slice(buf);
        }
        s.pending.push(PendingWrite::Data {
            offset,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let fails = self.fs.next_sync()?;
        let mut s = self.inner.state.lock();
        *s.syncing.entry(self.id).or_default() += 1;
        if fails {
            // The writeback fails: the pages never reach the disk, and are
            // marked clean in the cache (nothing will write them again).
            s.pending.clear();
            s.wb_err += 1;
            let wait = self.fs.state.lock().partner_wait;
            drop(s);
            let deadline = std::time::Instant::now() + wait;
            loop {
                let s = self.inner.state.lock();
                if s.syncing.get(&self.id).copied().unwrap_or(0) > 1
                    || std::time::Instant::now() >= deadline
                {
                    break;
                }
                drop(s);
                std::thread::yield_now();
            }
            s = self.inner.state.lock();
        } else {
            // Only what is dirty reaches the disk: pages lost to an earlier
            // failed writeback are clean, and stay lost.
            let durable = with_writes(&s.durable, &s.pending);
            s.durable = durable;
            s.pending.clear();
        }
        let others = s.syncing.get(&self.id).copied().unwrap_or(1) > 1;
        if let Some(n) = s.syncing.get_mut(&self.id) {
            *n -= 1;
        }
        let err = s.wb_err;
        // The first sync on this description to check reports the error;
        // when another one is in progress, it takes the report instead.
        if fails && others {
            return Ok(());
        }
        if self.seen.load(Ordering::Acquire) < err {
            self.seen.store(err, Ordering::Release);
            return Err(Fault::Eio.error());
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.inner.state.lock().live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ));
        }
        self.fs.before_write()?;
        let mut s = self.inner.state.lock();
        s.live.resize(len as usize, 0);
        s.pending.push(PendingWrite::SetLen(len));
        Ok(())
    }

    fn reopen(&self) -> io::Result<Arc<dyn VFile>> {
        Ok(Arc::new(
            self.fs.description(Arc::clone(&self.inner), self.writable),
        ))
    }

    fn drop_cache(&self) -> io::Result<()> {
        // Clean pages are read again from the disk; dirty ones (writes not
        // yet synced) stay.
        let mut s = self.inner.state.lock();
        s.live = with_writes(&s.durable, &s.pending);
        Ok(())
    }
}

/// `base` with `writes` applied in order.
fn with_writes(base: &[u8], writes: &[PendingWrite]) -> Vec<u8> {
    let mut out = base.to_vec();
    for w in writes {
        match w {
            PendingWrite::SetLen(len) => out.resize(*len as usize, 0),
            PendingWrite::Data { offset, bytes } => {
                let start = *offset as usize;
                let end = start + bytes.len();
                if out.len() < end {
                    out.resize(end, 0);
                }
                if let Some(dst) = out.get_mut(start..end) {
                    dst.copy_from_slice(bytes);
                }
            }
        }
    }
    out
}

/// A tiny deterministic generator for crash choices (tests replay seeds).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads of a file whose pages are cached are served inside
    /// `without_waiting` (what a network thread tries first), and the
    /// thread's reads wait normally again afterwards, even after a panic.
    #[test]
    fn cached_reads_are_served_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = OsFs.open(&path, OpenMode::CreateNew).unwrap();
        f.write_all_at(b"hello, cache", 0).unwrap();
        let read = || {
            let mut b = [0u8; 5];
            f.read_exact_at(&mut b, 7).map(|()| b)
        };
        // Just written: in the cache. (A kernel without RWF_NOWAIT for this
        // file system answers None: every read then goes to the pool, which
        // is correct, only slower.)
        if let Some(r) = without_waiting(read) {
            assert_eq!(&r.unwrap(), b"cache");
        }
        let caught = std::panic::catch_unwind(|| without_waiting(|| panic!("inside")));
        assert!(caught.is_err());
        assert!(!NO_WAIT.with(|c| c.get()), "restored after a panic");
        assert_eq!(&read().unwrap(), b"cache");
        assert_eq!(
            without_waiting(|| 7),
            Some(7),
            "no file read: nothing to wait for"
        );
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn crash_keeps_only_synced_bytes_and_entries() {
        let fs = MemFs::new();
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        // Data synced but the directory entry not: the file is lost.
        f.sync_data().unwrap();
        let after = fs.crash(CrashMode::DropUnsynced);
        assert!(!after.exists(&p("/d/a")));

        fs.sync_dir(&p("/d")).unwrap();
        f.write_all_at(b" world", 5).unwrap();
        let after = fs.crash(CrashMode::DropUnsynced);
        assert_eq!(after.read_file(&p("/d/a")).unwrap(), b"hello");
        f.sync_data().unwrap();
        let after = fs.crash(CrashMode::DropUnsynced);
        assert_eq!(after.read_file(&p("/d/a")).unwrap(), b"hello world");
    }

    #[test]
    fn torn_crash_keeps_durable_prefix() {
        let fs = MemFs::new();
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        f.write_all_at(&[1u8; 1000], 0).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&p("/d")).unwrap();
        f.write_all_at(&[2u8; 3000], 1000).unwrap();
        for seed in 0..50 {
            let after = fs.crash(CrashMode::TornUnsynced { seed });
            let bytes = after.read_file(&p("/d/a")).unwrap();
            assert_eq!(&bytes[..1000], &[1u8; 1000][..]);
            assert!(bytes[1000..].iter().all(|&b| b == 2));
        }
    }

    #[test]
    fn faults_fire_and_clear() {
        let fs = MemFs::new();
        fs.create_dir_all(&p("/d")).unwrap();
        let f = fs.open(&p("/d/a"), OpenMode::CreateNew).unwrap();
        fs.fail_writes_after(1, Fault::NoSpace);
        f.write_all_at(b"a", 0).unwrap();
        assert_eq!(
            f.write_all_at(b"b", 1).unwrap_err().raw_os_error(),
            Some(28)
        );
        fs.fail_syncs_after(0, Fault::Eio);
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(5));
        fs.clear_faults();
        f.write_all_at(b"b", 1).unwrap();
        f.sync_data().unwrap();
    }

    #[test]
    fn locks_are_exclusive() {
        let fs = MemFs::new();
        fs.create_dir_all(&p("/d")).unwrap();
        let g = fs.try_lock(&p("/d/LOCK")).unwrap();
        assert!(g.is_some());
        assert!(fs.try_lock(&p("/d/LOCK")).unwrap().is_none());
        drop(g);
        assert!(fs.try_lock(&p("/d/LOCK")).unwrap().is_some());
    }

    #[test]
    fn os_lock_is_exclusive_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let g = OsFs.try_lock(&path).unwrap();
        assert!(g.is_some());
        assert!(OsFs.try_lock(&path).unwrap().is_none());
        drop(g);
        assert!(OsFs.try_lock(&path).unwrap().is_some());
    }

    #[test]
    fn os_reopen_is_a_new_description_of_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let a = OsFs.open(&path, OpenMode::CreateNew).unwrap();
        a.write_all_at(b"hello", 0).unwrap();
        let b = a.reopen().unwrap();
        b.write_all_at(b"J", 0).unwrap();
        b.sync_data().unwrap();
        a.drop_cache().unwrap();
        let mut buf = [0u8; 5];
        a.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"Jello");
    }

    /// The failed writeback's model: lost to the disk, kept in the cache
    /// until dropped, reported once per description.
    #[test]
    fn a_failed_writeback_is_reported_once_per_description() {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("/d")).unwrap();
        let a = fs.open(Path::new("/d/f"), OpenMode::CreateNew).unwrap();
        let b = a.reopen().unwrap();
        a.write_all_at(b"durable", 0).unwrap();
        a.sync_data().unwrap();
        a.write_all_at(b"LOST", 0).unwrap();
        fs.fail_writeback_after(0, std::time::Duration::ZERO);
        assert!(a.sync_data().is_err(), "the failing sync reports");
        assert!(a.sync_data().is_ok(), "once");
        assert!(b.sync_data().is_err(), "and once on the other description");
        assert!(b.sync_data().is_ok());
        let mut buf = [0u8; 7];
        a.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"LOSTble", "still in the cache");
        a.drop_cache().unwrap();
        a.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"durable", "the disk never had it");
    }
}
