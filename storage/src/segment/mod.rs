//! Segment files: the log is a sequence of them, each named by the global
//! position of its first event (`00000000000000000000.seg`, see
//! `logbook_protocol::layout`), so listing the directory sorts them in log
//! order.
//!
//! - [`format`]: the bytes of a segment (header, seal: pidx and footer).
//! - this file: [`Segment`], an open segment shared by the writer and
//!   readers: its durable end, its seal state and its sparse position index.
//! - [`reader`]: reading records: the windowed [`RecordReader`] and
//!   [`RecordWalk`], the one loop that walks a segment's records.
//! - [`recovery`]: the scans recovery and `verify` make of a segment whose
//!   end is unknown: [`scan`] up to the first bad record, and
//!   [`search_tail`] to tell a torn tail from damage.
//!
//! A sealed segment is never written again. The sparse position index
//! (pidx) finds the record holding any position with one binary search and
//! a scan of at most `PIDX_INTERVAL` bytes, as Kafka's offset index does; it
//! is persisted on seal and rebuilt by scanning for the active segment.

pub(crate) mod format;
pub(crate) mod reader;
pub(crate) mod recovery;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::{Mutex, RwLock};

use crate::error::StorageError;
use crate::fs::VFile;

pub(crate) use format::{
    FOOTER_LEN, FORMAT_VERSION_GAPS, Footer, HEADER_LEN, Header, PIDX_ENTRY_LEN, PIDX_INTERVAL,
    PidxEntry, decode_footer, decode_header, decode_pidx, encode_header, encode_header_version,
    encode_seal, pidx_crc,
};
pub(crate) use reader::{RecordReader, RecordWalk};
pub(crate) use recovery::{ScanEnd, scan, search_tail};

#[derive(Debug)]
enum Pidx {
    /// Sealed segment whose pidx is still on disk: loaded on first use so
    /// that start-up does not read every segment's index.
    OnDisk {
        count: u32,
        crc: u32,
    },
    Loaded(Vec<PidxEntry>),
}

/// An open segment, shared by the writer and readers.
#[derive(Debug)]
pub struct Segment {
    /// Path of the file.
    pub path: PathBuf,
    /// The file.
    pub file: Arc<dyn VFile>,
    /// Position of the segment's first event.
    pub first_position: u64,
    /// The crc32c seed of the segment's records (from its header's nonce).
    pub crc_seed: u32,
    /// Whether its records may skip positions (rewritten by a scavenge):
    /// index entries' offsets into it are stale, and positions are found
    /// through the pidx.
    pub gaps: bool,
    /// Records in `[HEADER_LEN, data_end)` are durable and readable. Only the
    /// writer advances it, after the fdatasync that covers them.
    data_end: AtomicU64,
    /// Position after the segment's last durable event.
    end_position: AtomicU64,
    sealed: AtomicBool,
    /// A sealed segment's file length, once asked for (0: not yet known).
    sealed_len: AtomicU64,
    pidx: RwLock<Pidx>,
    /// A sealed segment's pidx on disk: (entries, crc32c), so that a loaded
    /// one can be dropped and read again.
    on_disk: OnceLock<(u32, u32)>,
    /// Counts loads of the pidx (which of them the budget may drop).
    loads: AtomicU64,
    /// The store's budget of loaded pidx entries, and this segment, for it.
    budget: OnceLock<(Weak<Segment>, Arc<PidxBudget>)>,
    /// Open file descriptions of the file, one per sync lane, while the
    /// segment takes writes (empty otherwise). A failed writeback is
    /// reported once per description, to whichever fdatasync on it checks
    /// first: if the lanes shared one, a lane could see success for pages
    /// whose failure another lane consumed, and acknowledge a group that is
    /// not on disk. With one each, every lane's next fdatasync reports
    /// every failure. The writer's own syncs (alone groups, roll-over) use
    /// `file`, which only the writer syncs.
    lane_files: RwLock<Vec<Arc<dyn VFile>>>,
}

impl Segment {
    /// A segment whose durable records end at `data_end`.
    pub fn new(
        path: PathBuf,
        file: Arc<dyn VFile>,
        header: Header,
        data_end: u64,
        end_position: u64,
        pidx: Vec<PidxEntry>,
        sealed: bool,
    ) -> Segment {
        Segment {
            path,
            file,
            first_position: header.first_position,
            crc_seed: header.crc_seed(),
            gaps: header.gaps,
            data_end: AtomicU64::new(data_end),
            end_position: AtomicU64::new(end_position),
            sealed: AtomicBool::new(sealed),
            sealed_len: AtomicU64::new(0),
            on_disk: if sealed {
                OnceLock::from((pidx.len() as u32, format::pidx_crc(&pidx)))
            } else {
                OnceLock::new()
            },
            pidx: RwLock::new(Pidx::Loaded(pidx)),
            loads: AtomicU64::new(0),
            budget: OnceLock::new(),
            lane_files: RwLock::new(Vec::new()),
        }
    }

    /// A sealed segment described by its footer; the pidx stays on disk
    /// until first needed.
    pub fn sealed_from_footer(
        path: PathBuf,
        file: Arc<dyn VFile>,
        header: Header,
        footer: &Footer,
    ) -> Segment {
        Segment {
            path,
            file,
            first_position: footer.first_position,
            crc_seed: header.crc_seed(),
            gaps: header.gaps,
            data_end: AtomicU64::new(footer.data_end),
            end_position: AtomicU64::new(footer.end_position),
            sealed: AtomicBool::new(true),
            sealed_len: AtomicU64::new(0),
            pidx: RwLock::new(Pidx::OnDisk {
                count: footer.pidx_count,
                crc: footer.pidx_crc,
            }),
            on_disk: OnceLock::from((footer.pidx_count, footer.pidx_crc)),
            loads: AtomicU64::new(0),
            budget: OnceLock::new(),
            lane_files: RwLock::new(Vec::new()),
        }
    }

    /// Offset just past the last durable record.
    pub fn data_end(&self) -> u64 {
        self.data_end.load(Ordering::Acquire)
    }

    /// Position after the last durable event.
    pub fn end_position(&self) -> u64 {
        self.end_position.load(Ordering::Acquire)
    }

    /// Whether the segment is sealed.
    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// The file's length once sealed (records, pidx and footer). A sealed
    /// file never changes, so the length is read from the file system
    /// once and remembered. Only meaningful when [`Segment::is_sealed`].
    pub fn sealed_len(&self) -> std::io::Result<u64> {
        match self.sealed_len.load(Ordering::Relaxed) {
            0 => {
                let len = self.file.len()?;
                self.sealed_len.store(len, Ordering::Relaxed);
                Ok(len)
            }
            len => Ok(len),
        }
    }

    /// Bytes of the segment that hold data: a sealed file whole, else the
    /// durable records (and the header).
    pub fn durable_len(&self) -> u64 {
        if self.is_sealed() {
            self.sealed_len().unwrap_or(0)
        } else {
            self.data_end().max(HEADER_LEN)
        }
    }

    /// Publishes newly durable records (writer only, after fdatasync).
    pub(crate) fn publish(&self, data_end: u64, end_position: u64, new_pidx: &[PidxEntry]) {
        if !new_pidx.is_empty() {
            let mut p = self.pidx.write();
            if let Pidx::Loaded(v) = &mut *p {
                v.extend_from_slice(new_pidx);
            }
        }
        self.end_position.store(end_position, Ordering::Release);
        self.data_end.store(data_end, Ordering::Release);
    }

    /// Marks the segment sealed; `on_disk` is its pidx as the seal wrote
    /// it (entries, crc32c).
    pub(crate) fn mark_sealed(&self, on_disk: (u32, u32)) {
        self.sealed.store(true, Ordering::Release);
        // Every group written to it has been synced and answered.
        self.lane_files.write().clear();
        // Never written again: its descriptor may be closed while idle.
        self.file.release();
        // Its pidx, built while it took writes, is now also on disk: the
        // budget may drop it.
        let _ = self.on_disk.set(on_disk);
        let n = match &*self.pidx.read() {
            Pidx::Loaded(v) => v.len(),
            Pidx::OnDisk { .. } => return,
        };
        self.note_loaded(n);
    }

    /// Entries of its pidx in memory, if it is sealed (what the budget
    /// bounds).
    pub(crate) fn sealed_pidx_in_memory(&self) -> usize {
        match &*self.pidx.read() {
            Pidx::Loaded(v) if self.is_sealed() => v.len(),
            _ => 0,
        }
    }

    /// Puts the segment under `budget` (the store's segments; verification
    /// reads without one).
    pub(crate) fn track(self: &Arc<Self>, budget: &Arc<PidxBudget>) {
        let _ = self.budget.set((Arc::downgrade(self), Arc::clone(budget)));
        let n = match &*self.pidx.read() {
            Pidx::Loaded(v) if self.is_sealed() => v.len(),
            _ => 0,
        };
        // (The pidx lock released first: the budget may drop this pidx.)
        if n > 0 {
            budget.loaded(Arc::downgrade(self), self.loads.load(Ordering::Relaxed), n);
        }
    }

    /// Tells the budget a pidx of `n` entries was loaded (or sealed).
    fn note_loaded(&self, n: usize) {
        if let Some((me, budget)) = self.budget.get() {
            budget.loaded(me.clone(), self.loads.load(Ordering::Relaxed), n);
        }
    }

    /// Drops the loaded pidx of load `load` (the budget's choice), if it is
    /// still that one; it is read again when next needed.
    fn drop_pidx(&self, load: u64) {
        let Some(&(count, crc)) = self.on_disk.get() else {
            return;
        };
        let mut p = self.pidx.write();
        if matches!(&*p, Pidx::Loaded(_)) && self.loads.load(Ordering::Relaxed) == load {
            *p = Pidx::OnDisk { count, crc };
        }
    }

    /// Opens one file description per sync lane (see `lane_files`), for a
    /// segment about to take writes.
    pub(crate) fn open_lane_files(&self, lanes: usize) -> Result<(), StorageError> {
        let files = (0..lanes)
            .map(|_| self.file.reopen())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| StorageError::io("open for a sync lane", &self.path, e))?;
        *self.lane_files.write() = files;
        Ok(())
    }

    /// The description sync lane `lane` syncs through (`None`: the writer
    /// thread's, which is `file`).
    pub(crate) fn sync_file(&self, lane: Option<usize>) -> Arc<dyn VFile> {
        lane.and_then(|i| self.lane_files.read().get(i).cloned())
            .unwrap_or_else(|| Arc::clone(&self.file))
    }

    /// Runs `f` over the pidx, loading it from disk first if needed.
    fn with_pidx<T>(&self, f: impl FnOnce(&[PidxEntry]) -> T) -> Result<T, StorageError> {
        let (count, crc) = match &*self.pidx.read() {
            Pidx::Loaded(v) => return Ok(f(v)),
            Pidx::OnDisk { count, crc } => (*count, *crc),
        };
        // Read outside the lock: a disk read under it would make every
        // reader of this segment (and the writer's publish) wait for it.
        let offset = self.data_end();
        let mut buf = vec![0u8; count as usize * PIDX_ENTRY_LEN as usize];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| StorageError::io("read pidx", &self.path, e))?;
        let loaded = decode_pidx(&self.path, offset, &buf, crc)?;
        let n = loaded.len();
        let (out, fresh) = {
            let mut p = self.pidx.write();
            let fresh = matches!(&*p, Pidx::OnDisk { .. });
            if fresh {
                *p = Pidx::Loaded(loaded);
                self.loads.fetch_add(1, Ordering::Relaxed);
            }
            let out = match &*p {
                Pidx::Loaded(v) => f(v),
                Pidx::OnDisk { .. } => f(&[]),
            };
            (out, fresh)
        };
        if fresh {
            // Outside the lock: the budget may drop this very pidx.
            self.note_loaded(n);
        }
        Ok(out)
    }

    /// A copy of the pidx (verification).
    pub fn pidx(&self) -> Result<Vec<PidxEntry>, StorageError> {
        self.with_pidx(<[PidxEntry]>::to_vec)
    }

    /// Offset of a record at or before the one holding `position`.
    pub fn seek_offset(&self, position: u64) -> Result<u64, StorageError> {
        self.with_pidx(|pidx| {
            let i = pidx.partition_point(|e| e.position <= position);
            match i.checked_sub(1).and_then(|i| pidx.get(i)) {
                Some(e) => e.offset,
                None => HEADER_LEN,
            }
        })
    }
}

/// The store's budget of loaded sparse position indexes of sealed
/// segments: past `cap` entries (16 bytes each), the least recently loaded
/// are dropped and read again when a read next needs them, so a read of
/// the whole log does not leave 1 KiB per MiB of log in memory for ever.
#[derive(Debug)]
pub(crate) struct PidxBudget {
    cap: usize,
    /// Loads, oldest first, and the sum of their entries.
    lru: Mutex<(VecDeque<Load>, usize)>,
}

/// A pidx load: the segment, which of its loads, entries.
type Load = (Weak<Segment>, u64, usize);

/// Default [`PidxBudget`]: 4M entries, 64 MiB, the pidx of 64 GiB of log.
pub(crate) const PIDX_BUDGET_ENTRIES: usize = 4 << 20;

impl PidxBudget {
    pub(crate) fn new(cap: usize) -> Arc<PidxBudget> {
        Arc::new(PidxBudget {
            cap: cap.max(1),
            lru: Mutex::new((VecDeque::new(), 0)),
        })
    }

    fn loaded(&self, seg: Weak<Segment>, load: u64, n: usize) {
        let mut over = Vec::new();
        {
            let mut g = self.lru.lock();
            g.0.push_back((seg, load, n));
            g.1 += n;
            // The one just loaded stays, whatever its size.
            while g.1 > self.cap && g.0.len() > 1 {
                let Some((w, load, n)) = g.0.pop_front() else {
                    break;
                };
                g.1 -= n;
                over.push((w, load));
            }
        }
        // Outside the lock (a segment dropped here takes no lock of ours,
        // but its pidx lock is taken below).
        for (w, load) in over {
            if let Some(s) = w.upgrade() {
                s.drop_pidx(load);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use logbook_protocol::{EventId, ExpectedVersion, NewEvent, StreamName};

    use crate::config::{Durability, StoreConfig, TestKnobs};
    use crate::fs::MemFs;
    use crate::segment::format::decode_pidx;
    use crate::store::Store;

    /// Segments of 256 KiB (pidx entries every 16 KiB, the last ones added
    /// by the group that sealed it), a budget of one entry: every pidx is
    /// dropped and read again, and must come back exactly as it was, for
    /// segments sealed at run time (pidx built in memory) and at open.
    #[test]
    fn a_dropped_pidx_reads_back_exactly_and_reads_stay_right() {
        let fs = MemFs::new();
        let config = || StoreConfig {
            segment_bytes: 256 << 10,
            max_batch_bytes: 64 << 10,
            max_event_bytes: 8 << 10,
            durability: Durability::Os,
            vfs: Arc::new(fs.clone()),
            testing: TestKnobs {
                pidx_budget_entries: Some(1),
                ..TestKnobs::default()
            },
            ..StoreConfig::new("/data")
        };
        let store = Store::open(config()).unwrap();
        let stream = StreamName::new("s").unwrap();
        let mut n = 0u128;
        for i in 0..600u64 {
            let events = (0..1 + i % 7)
                .map(|_| {
                    n += 1;
                    NewEvent::new(EventId::from_u128(n), "E", vec![(n % 251) as u8; 700])
                })
                .collect();
            store
                .append_blocking(&stream, ExpectedVersion::Any, events)
                .unwrap();
        }
        for reopen in [false, true] {
            let store = if reopen {
                store.close().unwrap();
                Store::open(config()).unwrap()
            } else {
                store.clone()
            };
            let segments = Arc::clone(&store.shared().segments.read());
            let sealed: Vec<_> = segments.iter().filter(|s| s.is_sealed()).collect();
            assert!(sealed.len() >= 5, "{} sealed", sealed.len());
            for seg in &sealed {
                let (count, crc) = *seg.on_disk.get().unwrap();
                let mut buf = vec![0u8; count as usize * 16];
                seg.file.read_exact_at(&mut buf, seg.data_end()).unwrap();
                let on_disk = decode_pidx(&seg.path, 0, &buf, crc).unwrap();
                assert!(on_disk.len() > 4, "{} entries", on_disk.len());
                // Loaded (or still the one built in memory), then dropped by
                // loading the others, then read back.
                assert_eq!(seg.pidx().unwrap(), on_disk);
                for other in &sealed {
                    other.pidx().unwrap();
                }
                assert_eq!(seg.pidx().unwrap(), on_disk, "{}", seg.path.display());
            }
            // Reads from every position, both ways, through drops.
            let all = store
                .read_all(None, logbook_protocol::Direction::Forward, 100_000)
                .unwrap()
                .events;
            assert_eq!(all.len() as u128, n);
            for p in (0..n as u64).step_by(37) {
                let page = store
                    .read_all(
                        Some(logbook_protocol::LogPosition(p)),
                        logbook_protocol::Direction::Forward,
                        3,
                    )
                    .unwrap()
                    .events;
                assert_eq!(page.first().map(|e| e.position.0), Some(p));
                let page = store
                    .read_all(
                        Some(logbook_protocol::LogPosition(p)),
                        logbook_protocol::Direction::Backward,
                        3,
                    )
                    .unwrap()
                    .events;
                assert_eq!(page.first().map(|e| e.position.0), Some(p));
            }
        }
    }
}
