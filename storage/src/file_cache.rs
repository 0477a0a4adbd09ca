//! A budget of open file descriptors: [`FileCache`], a [`Vfs`] over
//! another that keeps at most `cap` files open for reading and reopens
//! the others when they are next read.
//!
//! A store holds one file per segment and two per index table. Keeping them
//! all open for the life of the process made a store of a few thousand
//! files fail to open under the common soft limit of 1,024 descriptors,
//! and a roll-over that met the limit fail the writer. Here:
//!
//! - A file opened for writing (the active segment, a table being written)
//!   is *pinned*: always open, never counted, until [`VFile::release`]
//!   says it will not be written again (a segment once sealed). A file
//!   opened read-only is evictable at once.
//! - An evictable file is closed when `cap` others are open and a closed
//!   one is needed: the least recently used goes (LRU approximated by a
//!   clock that ticks at each open, so a hit costs one relaxed load and
//!   at most one store, never a lock shared by all files). Readers holding
//!   it keep their descriptor until they are done with it; it reopens
//!   read-only on its next use.
//! - A file that is removed or renamed over while someone still holds it
//!   (an index table a merge replaced, still read by an older snapshot) is
//!   opened and pinned first, so those readers keep reading what they
//!   opened, as they would with a descriptor kept open.
//! - `EMFILE`/`ENFILE` on an open (connections took the descriptors)
//!   closes half of the evictable files and tries once more, instead of
//!   failing the writer at a roll-over.
//!
//! Lock order: the registry, then a file's slot. A hit takes only its
//! slot.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::fs::{LockGuard, OpenMode, VFile, Vfs};

/// A file system whose read-only files share a budget of open descriptors.
#[derive(Debug)]
pub struct FileCache {
    core: Arc<Core>,
}

#[derive(Debug)]
struct Core {
    inner: Arc<dyn Vfs>,
    /// Most evictable files open at once.
    cap: usize,
    /// Ticks at each open and reopen (each miss); a file's `used` is the
    /// tick of its last use, so the files used since the last miss are the
    /// most recent, and eviction (which happens at a miss) tells apart
    /// everything that matters to it.
    clock: AtomicU64,
    next_id: AtomicU64,
    registry: Mutex<Registry>,
    /// Files reopened after being closed (for figures and tests).
    reopens: AtomicU64,
    /// Evictable files open now, as `registry.open.len()` (readable without
    /// the lock).
    open_now: AtomicUsize,
}

#[derive(Debug, Default)]
struct Registry {
    /// Every file handed out and not dropped yet.
    live: HashMap<u64, Entry>,
    /// Those open and evictable.
    open: HashSet<u64>,
}

/// What the registry knows of a file without a strong reference to it: an
/// `Arc<Lazy>` upgraded under the registry lock and dropped there would run
/// `Lazy::drop`, which takes that lock.
#[derive(Debug)]
struct Entry {
    path: PathBuf,
    used: Arc<AtomicU64>,
    lazy: Weak<Lazy>,
}

/// A file of a [`FileCache`].
struct Lazy {
    id: u64,
    path: PathBuf,
    core: Arc<Core>,
    slot: Mutex<Slot>,
    /// The clock's value when last used.
    used: Arc<AtomicU64>,
}

struct Slot {
    file: Option<Arc<dyn VFile>>,
    /// Opened for writing and not released yet: never closed by the cache.
    writing: bool,
    /// Removed or renamed over while held: kept open for good (it could
    /// not be reopened).
    kept: bool,
}

impl Slot {
    /// Whether the cache may close it.
    fn pinned(&self) -> bool {
        self.writing || self.kept
    }
}

impl FileCache {
    /// `inner`, with at most `cap` (at least 1) read-only files open at
    /// once.
    pub fn new(inner: Arc<dyn Vfs>, cap: usize) -> FileCache {
        FileCache {
            core: Arc::new(Core {
                inner,
                cap: cap.max(1),
                clock: AtomicU64::new(0),
                next_id: AtomicU64::new(0),
                registry: Mutex::new(Registry::default()),
                reopens: AtomicU64::new(0),
                open_now: AtomicUsize::new(0),
            }),
        }
    }

    /// Evictable files open now (pinned ones are not counted).
    pub fn open_files(&self) -> usize {
        self.core.open_now.load(Ordering::Relaxed)
    }

    /// Files reopened after the cache had closed them.
    pub fn reopens(&self) -> u64 {
        self.core.reopens.load(Ordering::Relaxed)
    }

    /// Opens and keeps open every file still held at `path`, before it is
    /// removed or replaced.
    fn hold_open(&self, path: &Path) -> io::Result<()> {
        // Only the entries at `path` are upgraded, and the lock is released
        // before any of them can be dropped: the last reference to a file
        // may be one of these, and dropping it takes the registry lock.
        let held: Vec<Arc<Lazy>> = {
            let reg = self.core.registry.lock();
            reg.live
                .values()
                .filter(|e| e.path == path)
                .filter_map(|e| e.lazy.upgrade())
                .collect()
        };
        held.iter().try_for_each(|lazy| lazy.keep_open())
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (this process) or ENFILE (the system).
    matches!(e.raw_os_error(), Some(24 | 23))
}

impl Core {
    /// Counts `id` among the open evictable files (under the registry
    /// lock; `open_now` mirrors `open.len()` for reads without it).
    fn mark_open(&self, reg: &mut Registry, id: u64) {
        if reg.open.insert(id) {
            self.open_now.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// No longer counts `id` among them.
    fn mark_closed(&self, reg: &mut Registry, id: u64) {
        if reg.open.remove(&id) {
            self.open_now.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Opens `path`, closing evictable files first if the budget is spent,
    /// and half of them if the process is out of descriptors anyway.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>> {
        if self.open_now.load(Ordering::Relaxed) >= self.cap {
            self.evict(1);
        }
        self.making_room(path, || self.inner.open(path, mode))
    }

    /// `op` (which opens a descriptor on `path`), tried again after closing
    /// half of the cached files if the process is out of descriptors.
    fn making_room<T>(&self, path: &Path, op: impl Fn() -> io::Result<T>) -> io::Result<T> {
        match op() {
            Err(e) if out_of_descriptors(&e) => {
                let n = (self.open_now.load(Ordering::Relaxed) / 2).max(1);
                tracing::warn!(path = %path.display(), error = %e, closing = n, "out of file descriptors; closing cached files");
                self.evict(n);
                op()
            }
            r => r,
        }
    }

    /// Closes the `n` least recently used evictable files.
    fn evict(&self, n: usize) {
        let mut closed = Vec::new();
        {
            let mut reg = self.registry.lock();
            for _ in 0..n {
                let oldest = reg
                    .open
                    .iter()
                    .filter_map(|id| Some((*id, reg.live.get(id)?)))
                    .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
                    .map(|(id, e)| (id, e.lazy.upgrade()));
                let Some((id, victim)) = oldest else { break };
                self.mark_closed(&mut reg, id);
                // None: being dropped, which closes it anyway.
                if let Some(victim) = victim {
                    let mut slot = victim.slot.lock();
                    if !slot.pinned()
                        && let Some(f) = slot.file.take()
                    {
                        closed.push(f);
                    }
                    drop(slot);
                    // Dropped outside the lock too (see `Entry`).
                    closed.push(victim);
                }
            }
        }
        // Closed outside the lock.
        drop(closed);
    }
}

impl Lazy {
    /// The open file, reopened read-only if the cache closed it.
    fn get(&self) -> io::Result<Arc<dyn VFile>> {
        if let Some(f) = &self.slot.lock().file {
            self.touch();
            return Ok(Arc::clone(f));
        }
        if crate::fs::would_wait() {
            // An open may wait for the disk (directory lookup, inode).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.core.clock.fetch_add(1, Ordering::Relaxed);
        let file = match self.core.open(&self.path, OpenMode::Read) {
            Ok(file) => file,
            Err(e) => {
                // Removed since the slot was found empty: the removal
                // opened and pinned this file first (`hold_open`).
                return match &self.slot.lock().file {
                    Some(f) => Ok(Arc::clone(f)),
                    None => Err(e),
                };
            }
        };
        let mut reg = self.core.registry.lock();
        let mut slot = self.slot.lock();
        let file = match &slot.file {
            // Reopened by another reader meanwhile: use theirs.
            Some(theirs) => Arc::clone(theirs),
            None => {
                slot.file = Some(Arc::clone(&file));
                if !slot.pinned() {
                    self.core.mark_open(&mut reg, self.id);
                }
                self.core.reopens.fetch_add(1, Ordering::Relaxed);
                file
            }
        };
        drop(slot);
        drop(reg);
        self.touch();
        Ok(file)
    }

    /// Opens the file if it is closed and keeps it open for good (it is
    /// about to be removed or replaced while still held). The open happens
    /// outside the locks.
    fn keep_open(&self) -> io::Result<()> {
        loop {
            {
                let mut reg = self.core.registry.lock();
                let mut slot = self.slot.lock();
                if slot.file.is_some() {
                    self.core.mark_closed(&mut reg, self.id);
                    slot.kept = true;
                    return Ok(());
                }
            }
            let file = self.core.making_room(&self.path, || {
                self.core.inner.open(&self.path, OpenMode::Read)
            })?;
            let _reg = self.core.registry.lock();
            let mut slot = self.slot.lock();
            if slot.file.is_none() {
                slot.file = Some(file);
                slot.kept = true;
                return Ok(());
            }
            // Reopened by a reader meanwhile: keep that one (next turn).
        }
    }

    fn touch(&self) {
        let now = self.core.clock.load(Ordering::Relaxed);
        if self.used.load(Ordering::Relaxed) != now {
            self.used.store(now, Ordering::Relaxed);
        }
    }
}

impl Drop for Lazy {
    fn drop(&mut self) {
        let mut reg = self.core.registry.lock();
        reg.live.remove(&self.id);
        self.core.mark_closed(&mut reg, self.id);
    }
}

impl fmt::Debug for Lazy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedFile")
            .field("path", &self.path)
            .field("open", &self.slot.lock().file.is_some())
            .finish()
    }
}

impl VFile for Lazy {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.get()?.read_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.get()?.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.get()?.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.get()?.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.get()?.set_len(len)
    }

    fn reopen(&self) -> io::Result<Arc<dyn VFile>> {
        // Sync lanes' own descriptions of the active (pinned) segment:
        // written to, so never closed behind their back.
        self.get()?.reopen()
    }

    fn drop_cache(&self) -> io::Result<()> {
        self.get()?.drop_cache()
    }

    fn release(&self) {
        let mut reg = self.core.registry.lock();
        let mut slot = self.slot.lock();
        if !slot.writing {
            return;
        }
        slot.writing = false;
        if !slot.pinned() && slot.file.is_some() {
            self.core.mark_open(&mut reg, self.id);
        }
    }
}

impl Vfs for FileCache {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.core.inner.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.core
            .making_room(path, || self.core.inner.list_dir(path))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VFile>> {
        let file = self.core.open(path, mode)?;
        let writing = mode != OpenMode::Read;
        let id = self.core.next_id.fetch_add(1, Ordering::Relaxed);
        let used = Arc::new(AtomicU64::new(
            self.core.clock.fetch_add(1, Ordering::Relaxed) + 1,
        ));
        let lazy = Arc::new(Lazy {
            id,
            path: path.to_path_buf(),
            core: Arc::clone(&self.core),
            slot: Mutex::new(Slot {
                file: Some(file),
                writing,
                kept: false,
            }),
            used: Arc::clone(&used),
        });
        let mut reg = self.core.registry.lock();
        reg.live.insert(
            id,
            Entry {
                path: path.to_path_buf(),
                used,
                lazy: Arc::downgrade(&lazy),
            },
        );
        if !writing {
            self.core.mark_open(&mut reg, id);
        }
        Ok(lazy)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.hold_open(path)?;
        self.core.inner.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.hold_open(from)?;
        self.hold_open(to)?;
        self.core.inner.rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.core
            .making_room(path, || self.core.inner.sync_dir(path))
    }

    fn exists(&self, path: &Path) -> bool {
        self.core.inner.exists(path)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.core
            .making_room(path, || self.core.inner.try_lock(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::MemFs;

    fn contents(i: usize) -> Vec<u8> {
        format!("file {i}").into_bytes()
    }

    fn files(n: usize) -> Arc<MemFs> {
        let fs = Arc::new(MemFs::new());
        fs.create_dir_all(Path::new("/d")).unwrap();
        for i in 0..n {
            let f = fs.open(&path(i), OpenMode::CreateNew).unwrap();
            f.write_all_at(&contents(i), 0).unwrap();
        }
        fs
    }

    /// `n` files `/d/<i>` holding `contents(i)`, behind a cache of `cap`.
    fn setup(n: usize, cap: usize) -> (FileCache, Vec<Arc<dyn VFile>>) {
        let fs = files(n);
        let cache = FileCache::new(fs, cap);
        let files = (0..n)
            .map(|i| cache.open(&path(i), OpenMode::Read).unwrap())
            .collect();
        (cache, files)
    }

    fn path(i: usize) -> PathBuf {
        PathBuf::from(format!("/d/{i}"))
    }

    fn read(f: &dyn VFile, i: usize) {
        let want = contents(i);
        let mut buf = vec![0u8; want.len()];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, want, "file {i}");
    }

    #[test]
    fn at_most_cap_files_stay_open_and_every_read_is_right() {
        let (cache, files) = setup(100, 8);
        assert!(cache.open_files() <= 8);
        for round in 0..3 {
            for (i, f) in files.iter().enumerate() {
                read(&**f, i);
                assert!(cache.open_files() <= 8, "round {round}, file {i}");
            }
        }
        // Cycling over 100 files through 8 slots reopens nearly every time.
        assert!(cache.reopens() >= 200, "{}", cache.reopens());
    }

    #[test]
    fn the_least_recently_used_file_is_closed_first() {
        let (cache, files) = setup(4, 3);
        // 0 opened first; 1-3 pushed it out. Keep 1 hot while 0 comes back:
        // the coldest of the others (2) goes, and 1 is still open.
        read(&*files[1], 1);
        read(&*files[0], 0);
        let reopens = cache.reopens();
        read(&*files[1], 1);
        read(&*files[0], 0);
        assert_eq!(cache.reopens(), reopens, "1 and 0 stayed open");
        read(&*files[2], 2);
        assert_eq!(cache.reopens(), reopens + 1, "2 was closed");
    }

    #[test]
    fn files_being_written_are_never_closed_until_released() {
        let cache = FileCache::new(files(10), 1);
        let active = cache
            .open(Path::new("/d/active"), OpenMode::CreateNew)
            .unwrap();
        active.write_all_at(b"first", 0).unwrap();
        for i in 0..10 {
            read(&*cache.open(&path(i), OpenMode::Read).unwrap(), i);
        }
        // Still the descriptor it was created with: writable.
        active.write_all_at(b" second", 5).unwrap();
        assert_eq!(cache.open_files(), 0, "the others were dropped");
        active.release();
        assert_eq!(cache.open_files(), 1);
        let other = cache.open(&path(0), OpenMode::Read).unwrap();
        read(&*other, 0);
        // Released, closed for `other`, reopened read-only when read.
        let mut buf = [0u8; 12];
        active.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"first second");
        assert!(active.write_all_at(b"x", 0).is_err(), "read-only now");
    }

    #[test]
    fn a_removed_or_replaced_file_stays_readable_by_its_holders() {
        let (cache, files) = setup(6, 2);
        // Files 0-3 are closed by now (only the last two opened stay).
        cache.remove_file(&path(0)).unwrap();
        assert!(!cache.exists(&path(0)));
        cache.rename(&path(5), &path(1)).unwrap();
        // Push everything else through the two slots.
        for i in [2, 3, 4, 2, 3, 4] {
            read(&*files[i], i);
        }
        read(&*files[0], 0);
        read(&*files[1], 1);
        // The rename moved 5's file: its holder reads it still.
        read(&*files[5], 5);
        // A new open of the replaced name finds the new file.
        read(&*cache.open(&path(1), OpenMode::Read).unwrap(), 5);
    }

    #[test]
    fn a_file_removed_while_being_written_stays_open_after_release() {
        let cache = FileCache::new(files(4), 1);
        let f = cache
            .open(Path::new("/d/new"), OpenMode::CreateNew)
            .unwrap();
        f.write_all_at(b"kept", 0).unwrap();
        cache.remove_file(Path::new("/d/new")).unwrap();
        f.release();
        for i in 0..4 {
            read(&*cache.open(&path(i), OpenMode::Read).unwrap(), i);
        }
        // Not closed by the reads above: it could not be reopened.
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"kept");
    }

    #[test]
    fn concurrent_readers_through_a_tiny_cache() {
        let (cache, files) = setup(64, 4);
        let files = Arc::new(files);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let files = Arc::clone(&files);
                s.spawn(move || {
                    let mut x = t as u64 + 1;
                    for _ in 0..2_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let i = (x % 64) as usize;
                        read(&*files[i], i);
                    }
                });
            }
        });
        // Readers racing past the cap may overshoot it by one each.
        assert!(cache.open_files() <= 4 + 4, "{}", cache.open_files());
        drop(files);
        assert_eq!(cache.open_files(), 0);
        assert!(cache.core.registry.lock().live.is_empty());
    }
}
