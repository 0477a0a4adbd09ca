//! The event-id index: which position holds each event id, so that ids are
//! unique in the store for ever and any earlier batch can be recognised
//! when it is sent again (see `writer.rs`, "Event ids").
//!
//! In memory, each memtable keeps an [`IdMap`] of the ids of its range; on
//! disk, each index table `N.sidx` has a companion `N.eids` covering the
//! same positions, written by the same flush or merge and listed by the
//! same MANIFEST entry:
//!
//! ```text
//! header (32 bytes)
//! 0   [8]  magic           "LGBKEIDS"
//! 8   u32  format_version  1
//! 12  u32  header_len      32
//! 16  u64  id_count
//! 24  u32  reserved        0
//! 28  u32  crc32c          over bytes 0..28
//!
//! blocks, from offset 32: entries sorted by id (bytewise), BLOCK_IDS per
//! block (the last may be short)
//! entry (24 bytes): [16] event_id | u64 position
//!
//! fences, one per block (24 bytes): [16] first id | u32 block_crc32c
//!        | u32 ids_in_block
//! bloom: bloom_blocks x 64 bytes, a blocked bloom filter over the ids'
//!        seeded hashes (every probe of a key in one 64-byte line)
//!
//! footer (96 bytes, at the end of the file)
//! 0   u64  id_count
//! 8   u64  start_position  the file holds the id of every event in [start, end)
//! 16  u64  end_position
//! 24  u64  fences_offset
//! 32  u32  block_count
//! 36  u32  bloom_blocks
//! 40  u32  bloom_k         bits set per key, all in one block
//! 44  u32  reserved        0
//! 48  [16] min_id          the smallest id (zeros when there is none)
//! 64  [16] max_id          the largest id
//! 80  u32  meta_crc32c     over fences and bloom
//! 84  u32  footer_crc32c   over footer bytes 0..84
//! 88  [8]  magic           "LGBKEEND"
//! ```
//! Opening reads the header and footer and checks the fences and bloom
//! against `meta_crc32c` a chunk at a time, keeping none of them. The
//! fences and bloom (about 1.5 bytes per id) are read again, checked and
//! kept in memory when first needed: by a lookup of an id within the file's id
//! range, a merge or a verification. A lookup of an absent id (the common
//! case: a new event) is one comparison with the id range (time-ordered
//! ids, UUIDv7, are newer than every stored one and stop there: the
//! summaries of old files are then never loaded, and start-up and memory
//! do not grow with the ids stored) and one bloom probe, one cache line; a
//! present one, or a false positive (about 1%), reads one 4 KiB block.
//! Damage at open fails the open (the index is then rebuilt from the
//! log); damage after it is found when they are loaded: that lookup fails
//! with a typed error, nothing is served from them.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbook_protocol::{EventId, layout, le};

use crate::error::StorageError;
use crate::fs::{OpenMode, VFile, Vfs};
use crate::index::blocks::BlockWriter;

/// Magic number opening an id file.
pub const MAGIC: [u8; 8] = *b"LGBKEIDS";
/// Magic number closing an id file.
pub const FOOTER_MAGIC: [u8; 8] = *b"LGBKEEND";
/// Id file format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 32;
const FOOTER_LEN: u64 = 96;
const ENTRY_LEN: usize = 24;
const FENCE_LEN: usize = 24;
/// Ids per block: 170 x 24 B = 4,080 B, one page per lookup.
pub const BLOCK_IDS: usize = 170;
const BLOCK_BYTES: usize = BLOCK_IDS * ENTRY_LEN;
const BLOOM_LINE: usize = 64;
/// About 1% false positives for a blocked filter.
const BLOOM_BITS_PER_KEY: u64 = 12;
const BLOOM_K: u32 = 8;

/// An id and the position of its event.
pub type IdEntry = (EventId, u64);

/// Ids of a range of positions: id -> position, keyed by the store's
/// seeded hash of the id (clients choose ids, so an unseeded hash would let
/// them make every lookup collide). The writer fills one per memtable
/// generation; the frozen memtable takes it, and the flusher writes it.
///
/// An open-addressing table with linear probing, at most half full, each
/// slot an id and its position in 24 bytes: a lookup or insert usually
/// touches one cache line (a general hash table touches two: its control
/// bytes and its slot), and [`IdMap::touch`] lets the writer start the
/// misses of a whole batch at once before it inserts. A table of a
/// memtable's worth of ids does not fit in the CPU caches, so these misses
/// are what the writer pays per event. The slots are allocated zeroed (a
/// slot whose position word is 0 is empty; positions are stored plus one),
/// so a fresh table costs no up-front writes.
#[derive(Default)]
pub struct IdMap {
    /// `[id high, id low, position + 1]`; empty when the last word is 0.
    slots: Vec<[u64; 3]>,
    len: usize,
}

impl std::fmt::Debug for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdMap")
            .field("len", &self.len)
            .field("slots", &self.slots.len())
            .finish()
    }
}

/// Asks the CPU to bring `value`'s cache line in, without waiting for it.
#[inline]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: a prefetch is only a hint: it reads nothing the program sees
    // and never faults, whatever the address (here a live reference); the
    // instruction (SSE) is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (value as *const T).cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

fn id_words(id: &EventId) -> (u64, u64) {
    let v = u128::from_be_bytes(id.0);
    ((v >> 64) as u64, v as u64)
}

fn words_id(hi: u64, lo: u64) -> EventId {
    EventId(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes())
}

impl IdMap {
    /// An empty map with room for `n` ids before it grows.
    pub fn with_capacity(n: usize) -> IdMap {
        let slots = n.saturating_mul(2).max(16).next_power_of_two();
        IdMap {
            slots: vec![[0u64; 3]; slots],
            len: 0,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The slot holding `id`, or the empty slot ending its probe sequence.
    fn probe(&self, hash: u64, hi: u64, lo: u64) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            match self.slots.get(i) {
                Some(s) if s[2] == 0 => return Err(i),
                Some(s) if s[0] == hi && s[1] == lo => return Ok(i),
                Some(_) => i = (i + 1) & mask,
                None => return Err(usize::MAX),
            }
        }
    }

    /// Starts loading the slot `hash` starts at into the cache, so that
    /// the miss of a later [`IdMap::get`] or [`IdMap::insert`] overlaps
    /// with others instead of following them: the writer touches a batch's
    /// ids before it claims them.
    #[inline]
    pub fn touch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(hash as usize & self.mask()) {
            prefetch(slot);
        }
    }

    /// The position of `id`, whose hash is `hash`.
    #[inline]
    pub fn get(&self, hash: u64, id: &EventId) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let (hi, lo) = id_words(id);
        let i = self.probe(hash, hi, lo).ok()?;
        self.slots.get(i).map(|s| s[2] - 1)
    }

    /// Records `id` at `position`, unless it is there already: then
    /// returns the position it has. One probe for both.
    pub fn insert(
        &mut self,
        hash: u64,
        id: EventId,
        position: u64,
        hasher: impl Fn(&EventId) -> u64,
    ) -> Option<u64> {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow(&hasher);
        }
        let (hi, lo) = id_words(&id);
        match self.probe(hash, hi, lo) {
            Ok(i) => self.slots.get(i).map(|s| s[2] - 1),
            Err(i) => {
                if let Some(s) = self.slots.get_mut(i) {
                    *s = [hi, lo, position + 1];
                    self.len += 1;
                }
                None
            }
        }
    }

    fn grow(&mut self, hasher: &impl Fn(&EventId) -> u64) {
        let mut bigger = IdMap::with_capacity((self.slots.len()).max(8));
        for s in self.slots.iter().filter(|s| s[2] != 0) {
            if let Err(i) = bigger.probe(hasher(&words_id(s[0], s[1])), s[0], s[1])
                && let Some(slot) = bigger.slots.get_mut(i)
            {
                *slot = *s;
                bigger.len += 1;
            }
        }
        *self = bigger;
    }

    /// Forgets `id` (moving back the entries after it in its probe run, so
    /// that no lookup stops early at the hole).
    pub fn remove(&mut self, hash: u64, id: &EventId, hasher: impl Fn(&EventId) -> u64) {
        let (hi, lo) = id_words(id);
        let Ok(mut hole) = self.probe(hash, hi, lo) else {
            return;
        };
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(&s) = self.slots.get(j) else { break };
            if s[2] == 0 {
                break;
            }
            let home = hasher(&words_id(s[0], s[1])) as usize & mask;
            // Move `s` into the hole unless its home lies cyclically in
            // (hole, j]: then it is already where a lookup finds it.
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = s;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = [0; 3];
        }
        self.len -= 1;
    }

    /// Makes room for `more` ids without growing on the way.
    pub fn reserve(&mut self, more: usize, hasher: impl Fn(&EventId) -> u64) {
        let want = (self.len + more).saturating_mul(2);
        if want > self.slots.len() {
            let mut bigger = IdMap::with_capacity(self.len + more);
            for s in self.slots.iter().filter(|s| s[2] != 0) {
                let _ = bigger.insert(
                    hasher(&words_id(s[0], s[1])),
                    words_id(s[0], s[1]),
                    s[2] - 1,
                    &hasher,
                );
            }
            *self = bigger;
        }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every id, sorted (the order of an id file).
    pub fn sorted(&self) -> Vec<IdEntry> {
        let mut v: Vec<(u64, u64, u64)> = self
            .slots
            .iter()
            .filter(|s| s[2] != 0)
            .map(|s| (s[0], s[1], s[2] - 1))
            .collect();
        // As big-endian integers: the bytewise order of the ids.
        v.sort_unstable_by_key(|&(hi, lo, _)| (hi, lo));
        v.into_iter()
            .map(|(hi, lo, p)| (words_id(hi, lo), p))
            .collect()
    }
}

/// A blocked bloom filter: each key sets `k` bits within one 64-byte line,
/// so a probe costs one cache miss however large the filter.
#[derive(Debug, Clone)]
struct BlockedBloom {
    bytes: Vec<u8>,
    k: u32,
}

impl BlockedBloom {
    fn with_keys(keys: u64) -> BlockedBloom {
        let lines = (keys * BLOOM_BITS_PER_KEY)
            .div_ceil(BLOOM_LINE as u64 * 8)
            .max(1);
        BlockedBloom {
            bytes: vec![0; lines as usize * BLOOM_LINE],
            k: BLOOM_K,
        }
    }

    fn lines(&self) -> u64 {
        (self.bytes.len() / BLOOM_LINE) as u64
    }

    /// The line and the `k` bit indexes (within the line's 512) of `hash`.
    fn probes(&self, hash: u64) -> (usize, impl Iterator<Item = usize> + use<>) {
        // Multiply-shift maps the high bits to a line; the low bits, mixed
        // again, pick the bits within it.
        let line = ((u128::from(hash) * u128::from(self.lines())) >> 64) as usize;
        let mut h = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (hash >> 29);
        let bits = (0..self.k).map(move |_| {
            let bit = (h >> 55) as usize; // 9 bits: 0..512
            h = h.rotate_left(9).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            bit
        });
        (line, bits)
    }

    fn insert(&mut self, hash: u64) {
        let (line, bits) = self.probes(hash);
        let base = line * BLOOM_LINE;
        for bit in bits {
            if let Some(b) = self.bytes.get_mut(base + bit / 8) {
                *b |= 1 << (bit % 8);
            }
        }
    }

    fn may_contain(&self, hash: u64) -> bool {
        let (line, mut bits) = self.probes(hash);
        let Some(l) = self.bytes.get(line * BLOOM_LINE..(line + 1) * BLOOM_LINE) else {
            return true;
        };
        bits.all(|bit| l.get(bit / 8).is_some_and(|b| b & (1 << (bit % 8)) != 0))
    }
}

#[derive(Debug, Clone, Copy)]
struct Fence {
    first: [u8; 16],
    crc: u32,
    ids: u32,
}

/// An open id file.
#[derive(Debug)]
pub struct IdTable {
    /// Path of the file.
    pub path: PathBuf,
    file: Arc<dyn VFile>,
    /// Ids in the file.
    pub count: u64,
    /// First position covered.
    pub start_position: u64,
    /// Position after the last one covered.
    pub end_position: u64,
    /// Where the fences and bloom are.
    meta: Meta,
    /// The fences and bloom, once loaded (lock-free to read after that).
    summary: std::sync::OnceLock<Summary>,
    /// Set when a lookup first needed the summary (not a merge reading the
    /// file): whether a merge's output should keep its own.
    looked_up: std::sync::atomic::AtomicBool,
    /// The smallest and largest id (both zero when there is none).
    min_id: [u8; 16],
    max_id: [u8; 16],
}

/// Where an id file's fences and bloom are, from its footer.
#[derive(Debug, Clone, Copy)]
struct Meta {
    offset: u64,
    block_count: u64,
    bloom_lines: u64,
    bloom_k: u32,
    crc: u32,
}

/// An id file's fences and bloom filter.
#[derive(Debug)]
struct Summary {
    fences: Vec<Fence>,
    bloom: BlockedBloom,
}

fn decode_entry(c: &[u8]) -> IdEntry {
    let mut id = [0u8; 16];
    if let Some(s) = c.get(..16) {
        id.copy_from_slice(s);
    }
    (EventId(id), le::u64(c, 16))
}

/// Writes the id file of table `id` from `entries` (sorted by id, unique),
/// covering `[start_position, end_position)`; `hash` is the store's id hash.
/// The file is fsynced; the caller syncs the directory.
#[allow(clippy::too_many_arguments)]
pub fn write(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    start_position: u64,
    end_position: u64,
    count: u64,
    entries: impl Iterator<Item = Result<IdEntry, StorageError>>,
    hash: impl Fn(&EventId) -> u64,
) -> Result<IdTable, StorageError> {
    let path = dir.join(layout::ids_file(id));
    let file = vfs
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| StorageError::io("create", &path, e))?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let crc = crc32c::crc32c(&header);
    header.extend_from_slice(&crc.to_le_bytes());

    let blocks = count.div_ceil(BLOCK_IDS as u64) as usize;
    let mut w = BlockWriter::new(&file, &path, &header, BLOCK_IDS, blocks);
    let mut firsts: Vec<[u8; 16]> = Vec::with_capacity(blocks);
    let mut bloom = BlockedBloom::with_keys(count);
    let mut written = 0u64;
    let mut prev: Option<[u8; 16]> = None;
    let mut min_id: Option<[u8; 16]> = None;
    for item in entries {
        let (event_id, position) = item?;
        if prev.is_some_and(|p| p >= event_id.0) {
            return Err(StorageError::Internal(format!(
                "event ids out of order or repeated while writing {}",
                path.display()
            )));
        }
        prev = Some(event_id.0);
        min_id.get_or_insert(event_id.0);
        if w.entry(&[&event_id.0, &position.to_le_bytes()])? {
            firsts.push(event_id.0);
        }
        bloom.insert(hash(&event_id));
        written += 1;
    }
    if written != count {
        return Err(StorageError::Internal(format!(
            "id file {} expected {count} ids, got {written}",
            path.display()
        )));
    }
    let (seals, fences_offset) = w.end_blocks();
    let fences: Vec<Fence> = firsts
        .into_iter()
        .zip(seals)
        .map(|(first, seal)| Fence {
            first,
            crc: seal.crc,
            ids: seal.entries,
        })
        .collect();
    let buf = w.buf();
    let meta_start = buf.len();
    for f in &fences {
        buf.extend_from_slice(&f.first);
        buf.extend_from_slice(&f.crc.to_le_bytes());
        buf.extend_from_slice(&f.ids.to_le_bytes());
    }
    buf.extend_from_slice(&bloom.bytes);
    let meta_crc = crc32c::crc32c(buf.get(meta_start..).unwrap_or_default());
    let footer_start = buf.len();
    buf.extend_from_slice(&count.to_le_bytes());
    buf.extend_from_slice(&start_position.to_le_bytes());
    buf.extend_from_slice(&end_position.to_le_bytes());
    buf.extend_from_slice(&fences_offset.to_le_bytes());
    buf.extend_from_slice(&(fences.len() as u32).to_le_bytes());
    buf.extend_from_slice(&(bloom.lines() as u32).to_le_bytes());
    buf.extend_from_slice(&bloom.k.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    let (min_id, max_id) = (min_id.unwrap_or_default(), prev.unwrap_or_default());
    buf.extend_from_slice(&min_id);
    buf.extend_from_slice(&max_id);
    buf.extend_from_slice(&meta_crc.to_le_bytes());
    let footer_crc = crc32c::crc32c(buf.get(footer_start..).unwrap_or_default());
    buf.extend_from_slice(&footer_crc.to_le_bytes());
    buf.extend_from_slice(&FOOTER_MAGIC);
    w.finish()?;
    let meta = Meta {
        offset: fences_offset,
        block_count: fences.len() as u64,
        bloom_lines: bloom.lines(),
        bloom_k: bloom.k,
        crc: meta_crc,
    };
    Ok(IdTable {
        path,
        file,
        count,
        start_position,
        end_position,
        meta,
        // Just written: a flush's are the newest ids, the likeliest to be
        // looked up (a merge keeps them only if its inputs' were in use:
        // `IdTable::warm_if`).
        summary: std::sync::OnceLock::from(Summary { fences, bloom }),
        looked_up: std::sync::atomic::AtomicBool::new(false),
        min_id,
        max_id,
    })
}

impl IdTable {
    /// The open file (for backups, which copy it whole).
    pub fn file(&self) -> &Arc<dyn VFile> {
        &self.file
    }

    /// Opens and checks the id file of table `id`: header and footer (the
    /// fences and bloom filter are read when first needed).
    pub fn open(vfs: &dyn Vfs, dir: &Path, id: u64) -> Result<IdTable, StorageError> {
        let path = dir.join(layout::ids_file(id));
        let file = vfs
            .open(&path, OpenMode::Read)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let len = file.len().map_err(|e| StorageError::io("stat", &path, e))?;
        let corrupt = |at: u64, what: &str| StorageError::corrupt(&path, at, what);
        if len < HEADER_LEN + FOOTER_LEN {
            return Err(corrupt(0, "id file shorter than header and footer"));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| StorageError::io("read", &path, e))?;
        if header.get(0..8) != Some(&MAGIC[..]) {
            return Err(corrupt(0, "not a Logbook id file (bad magic)"));
        }
        let expected = le::u32(&header, 28);
        let got = crc32c::crc32c(header.get(..28).unwrap_or_default());
        if got != expected {
            return Err(StorageError::ChecksumMismatch {
                file: path,
                offset: 0,
                got,
                expected,
            });
        }
        let version = le::u32(&header, 8);
        if version != FORMAT_VERSION {
            return Err(StorageError::UnsupportedFormat {
                file: path,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut f = [0u8; FOOTER_LEN as usize];
        let footer_at = len - FOOTER_LEN;
        file.read_exact_at(&mut f, footer_at)
            .map_err(|e| StorageError::io("read", &path, e))?;
        if f.get(88..96) != Some(&FOOTER_MAGIC[..]) {
            return Err(corrupt(footer_at, "id file footer missing"));
        }
        let expected = le::u32(&f, 84);
        let got = crc32c::crc32c(f.get(..84).unwrap_or_default());
        if got != expected {
            return Err(StorageError::ChecksumMismatch {
                file: path,
                offset: footer_at,
                got,
                expected,
            });
        }
        let count = le::u64(&f, 0);
        let start_position = le::u64(&f, 8);
        let end_position = le::u64(&f, 16);
        let fences_offset = le::u64(&f, 24);
        let block_count = u64::from(le::u32(&f, 32));
        let bloom_lines = u64::from(le::u32(&f, 36));
        let bloom_k = le::u32(&f, 40);
        let id_at = |at: usize| -> [u8; 16] {
            let mut id = [0u8; 16];
            if let Some(s) = f.get(at..at + 16) {
                id.copy_from_slice(s);
            }
            id
        };
        let (min_id, max_id) = (id_at(48), id_at(64));
        let meta_crc = le::u32(&f, 80);
        let meta_len = block_count * FENCE_LEN as u64 + bloom_lines * BLOOM_LINE as u64;
        if count.div_ceil(BLOCK_IDS as u64) != block_count
            || count
                .checked_mul(ENTRY_LEN as u64)
                .and_then(|b| b.checked_add(HEADER_LEN))
                != Some(fences_offset)
            || fences_offset.checked_add(meta_len) != Some(footer_at)
            || le::u64(&header, 16) != count
            || end_position < start_position
            || count > end_position - start_position
            || bloom_lines == 0
            || bloom_k == 0
            || bloom_k > 32
            || min_id > max_id
        {
            return Err(corrupt(footer_at, "id file footer is inconsistent"));
        }
        // The fences and bloom are checked now, a chunk at a time, and not
        // kept: damage fails the open (and the index is rebuilt from the
        // log) instead of every later append whose ids fall in range.
        let crc = crate::index::blocks::crc_of(&*file, &path, fences_offset, meta_len, 0)?;
        if crc != meta_crc {
            return Err(StorageError::ChecksumMismatch {
                file: path,
                offset: fences_offset,
                got: crc,
                expected: meta_crc,
            });
        }
        Ok(IdTable {
            path,
            file,
            count,
            start_position,
            end_position,
            meta: Meta {
                offset: fences_offset,
                block_count,
                bloom_lines,
                bloom_k,
                crc: meta_crc,
            },
            summary: std::sync::OnceLock::new(),
            looked_up: std::sync::atomic::AtomicBool::new(false),
            min_id,
            max_id,
        })
    }

    /// The file, keeping its summary in memory only if `warm` (a merge's
    /// output: kept if lookups were reading its inputs'; else a lookup in
    /// range reads it when it needs it).
    pub fn warm_if(mut self, warm: bool) -> IdTable {
        if !warm {
            self.summary = std::sync::OnceLock::new();
        }
        self
    }

    /// Whether lookups have needed its summary.
    pub fn is_warm(&self) -> bool {
        self.looked_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fences and bloom, read and checked at first use.
    fn summary(&self) -> Result<&Summary, StorageError> {
        if let Some(s) = self.summary.get() {
            return Ok(s);
        }
        let m = self.meta;
        let fences_len = m.block_count as usize * FENCE_LEN;
        let bytes = crate::index::blocks::read_checked(
            &*self.file,
            &self.path,
            m.offset,
            fences_len + m.bloom_lines as usize * BLOOM_LINE,
            m.crc,
        )?;
        let (fence_bytes, bloom_bytes) = bytes.split_at(fences_len);
        let fences = fence_bytes
            .chunks_exact(FENCE_LEN)
            .map(|c| {
                let mut first = [0u8; 16];
                if let Some(s) = c.get(..16) {
                    first.copy_from_slice(s);
                }
                Fence {
                    first,
                    crc: le::u32(c, 16),
                    ids: le::u32(c, 20),
                }
            })
            .collect();
        let loaded = Summary {
            fences,
            bloom: BlockedBloom {
                bytes: bloom_bytes.to_vec(),
                k: m.bloom_k,
            },
        };
        // Another thread may have loaded it meanwhile: either copy serves.
        Ok(self.summary.get_or_init(|| loaded))
    }

    /// Bytes of the file.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN
            + self.count * ENTRY_LEN as u64
            + self.meta.block_count * FENCE_LEN as u64
            + self.meta.bloom_lines * BLOOM_LINE as u64
            + FOOTER_LEN
    }

    /// Whether `id` is within the file's id range (no I/O).
    #[inline]
    fn in_range(&self, id: &EventId) -> bool {
        self.count > 0 && self.min_id <= id.0 && id.0 <= self.max_id
    }

    /// Whether `id` (whose hash is `hash`) may be here: false for certain,
    /// true for "read a block to know". Loads the summary if `id` is in
    /// range.
    pub fn may_contain(&self, hash: u64, id: &EventId) -> Result<bool, StorageError> {
        if !self.in_range(id) {
            return Ok(false);
        }
        let summary = self.summary()?;
        if !self.looked_up.load(std::sync::atomic::Ordering::Relaxed) {
            self.looked_up
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(summary.bloom.may_contain(hash))
    }

    /// Reads and checks block `i`.
    fn block(&self, i: usize) -> Result<Vec<u8>, StorageError> {
        let fence =
            self.summary()?.fences.get(i).ok_or_else(|| {
                StorageError::corrupt(&self.path, 0, "id block index out of range")
            })?;
        crate::index::blocks::read_block(
            &self.file,
            &self.path,
            HEADER_LEN,
            BLOCK_BYTES,
            i,
            fence.ids as usize * ENTRY_LEN,
            fence.crc,
        )
    }

    /// The position of `id` (whose hash is `hash`), if this file has it.
    pub fn get(&self, hash: u64, id: &EventId) -> Result<Option<u64>, StorageError> {
        if !self.may_contain(hash, id)? {
            return Ok(None);
        }
        // The block whose first id is the greatest at or below `id`.
        let Some(i) = self
            .summary()?
            .fences
            .partition_point(|f| f.first <= id.0)
            .checked_sub(1)
        else {
            return Ok(None);
        };
        let block = self.block(i)?;
        let entries: Vec<&[u8]> = block.chunks_exact(ENTRY_LEN).collect();
        let found = entries.binary_search_by(|c| match c.get(..16) {
            Some(k) => k.cmp(&id.0[..]),
            None => Ordering::Less,
        });
        Ok(found
            .ok()
            .and_then(|j| entries.get(j))
            .map(|c| decode_entry(c).1))
    }

    /// Every entry in id order, reading a block at a time (merges and
    /// verification).
    pub fn iter(self: &Arc<Self>) -> impl Iterator<Item = Result<IdEntry, StorageError>> + use<> {
        let table = Arc::clone(self);
        let mut block_i = 0usize;
        let mut block: Vec<u8> = Vec::new();
        let mut at = 0usize;
        std::iter::from_fn(move || {
            loop {
                if let Some(c) = block.get(at..at + ENTRY_LEN) {
                    at += ENTRY_LEN;
                    return Some(Ok(decode_entry(c)));
                }
                if block_i as u64 >= table.meta.block_count {
                    return None;
                }
                match table.block(block_i) {
                    Ok(b) => {
                        block = b;
                        at = 0;
                        block_i += 1;
                    }
                    Err(e) => {
                        block_i = table.meta.block_count as usize;
                        block.clear();
                        return Some(Err(e));
                    }
                }
            }
        })
    }
}

/// Merges id streams sorted by id into one sorted stream (k-way merge).
/// Equal ids are both kept (verification reports them; the writer never
/// writes one twice).
pub fn merge_iters<I>(iters: Vec<I>) -> impl Iterator<Item = Result<IdEntry, StorageError>>
where
    I: Iterator<Item = Result<IdEntry, StorageError>>,
{
    let mut iters: Vec<std::iter::Peekable<I>> =
        iters.into_iter().map(Iterator::peekable).collect();
    std::iter::from_fn(move || {
        let mut best: Option<(usize, [u8; 16])> = None;
        for (i, it) in iters.iter_mut().enumerate() {
            match it.peek() {
                Some(Ok((id, _))) if best.is_none_or(|(_, b)| id.0 < b) => {
                    best = Some((i, id.0));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => return it.next(),
                None => {}
            }
        }
        let (i, _) = best?;
        iters.get_mut(i)?.next()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::MemFs;
    use crate::stream_map::StreamHasher;
    use proptest::prelude::*;

    fn hasher() -> impl Fn(&EventId) -> u64 {
        let h = StreamHasher::new(77);
        move |id| h.hash_id(id)
    }

    proptest! {
        /// The map agrees with a model through any mix of inserts (new
        /// and repeated), removes and growth, with a good hash and with
        /// one so poor that every id lands in a few slots (long probe runs
        /// wrapping around the end of the table, where removal must move
        /// entries back).
        #[test]
        fn the_id_map_agrees_with_a_model(
            ops in proptest::collection::vec((0u8..3, 0u128..64), 1..400),
            poor in any::<bool>(),
            start in 0usize..40,
        ) {
            let good = hasher();
            let hash = |id: &EventId| if poor { (good(id) % 4).wrapping_add(u64::MAX - 2) } else { good(id) };
            let mut map = IdMap::with_capacity(start);
            let mut model = std::collections::HashMap::new();
            for (step, (op, n)) in ops.into_iter().enumerate() {
                let id = EventId::from_u128(n << 70 | n);
                let h = hash(&id);
                match op {
                    0 | 1 => {
                        let got = map.insert(h, id, step as u64, hash);
                        let want = model.get(&id).copied();
                        prop_assert_eq!(got, want);
                        model.entry(id).or_insert(step as u64);
                    }
                    _ => {
                        map.remove(h, &id, hash);
                        model.remove(&id);
                    }
                }
                prop_assert_eq!(map.len(), model.len());
            }
            for n in 0u128..64 {
                let id = EventId::from_u128(n << 70 | n);
                prop_assert_eq!(map.get(hash(&id), &id), model.get(&id).copied());
            }
            let mut want: Vec<IdEntry> = model.into_iter().collect();
            want.sort_by_key(|(id, _)| id.0);
            prop_assert_eq!(map.sorted(), want);
        }
    }

    fn sorted_ids(n: u64, salt: u64) -> Vec<IdEntry> {
        let mut v: Vec<IdEntry> = (0..n)
            .map(|p| {
                let x = (p.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt) as u128;
                (EventId::from_u128(x << 64 | u128::from(p)), p + 100)
            })
            .collect();
        v.sort_by_key(|(id, _)| id.0);
        v
    }

    fn write_ids(fs: &MemFs, table: u64, v: &[IdEntry]) -> IdTable {
        let dir = Path::new("/i");
        fs.create_dir_all(dir).unwrap();
        write(
            fs,
            dir,
            table,
            100,
            100 + v.len() as u64,
            v.len() as u64,
            v.iter().copied().map(Ok),
            hasher(),
        )
        .unwrap()
    }

    #[test]
    fn lookups_find_every_id_and_few_false_positives() {
        let fs = MemFs::new();
        let v = sorted_ids(5_000, 1);
        write_ids(&fs, 1, &v);
        let t = IdTable::open(&fs, Path::new("/i"), 1).unwrap();
        let h = hasher();
        for (id, p) in &v {
            assert_eq!(t.get(h(id), id).unwrap(), Some(*p));
        }
        let absent = sorted_ids(5_000, 2);
        let mut positives = 0;
        for (id, _) in &absent {
            assert_eq!(t.get(h(id), id).unwrap(), None);
            positives += usize::from(t.may_contain(h(id), id).unwrap());
        }
        assert!(positives < 150, "{positives} false positives in 5,000");
        let back: Vec<IdEntry> = Arc::new(t).iter().map(Result::unwrap).collect();
        assert_eq!(back, v);
    }

    #[test]
    fn an_empty_file_opens() {
        let fs = MemFs::new();
        write_ids(&fs, 3, &[]);
        let t = IdTable::open(&fs, Path::new("/i"), 3).unwrap();
        let id = EventId::from_u128(5);
        assert_eq!(t.get(hasher()(&id), &id).unwrap(), None);
    }

    #[test]
    fn damage_is_reported_never_served() {
        let fs = MemFs::new();
        let v = sorted_ids(1_000, 3);
        write_ids(&fs, 2, &v);
        let path = Path::new("/i").join(layout::ids_file(2));
        let good = fs.read_file(&path).unwrap();
        // A flipped bit in a block: the lookup that reads it fails.
        let mut bad = good.clone();
        bad[HEADER_LEN as usize + 5] ^= 1;
        fs.write_file(&path, bad);
        let t = IdTable::open(&fs, Path::new("/i"), 2).unwrap();
        let (id, _) = v[0];
        assert!(matches!(
            t.get(hasher()(&id), &id),
            Err(StorageError::ChecksumMismatch { .. })
        ));
        // A flipped bit in the footer, fences or bloom: the open fails (and
        // the store rebuilds its index from the log).
        for at in [good.len() - 20, good.len() - 70, good.len() - 110] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            fs.write_file(&path, bad);
            assert!(
                IdTable::open(&fs, Path::new("/i"), 2).is_err(),
                "flip at {at}"
            );
        }
        // Damaged after the open checked it (the summary is read again at
        // first use): the lookup fails, and so does the next; nothing
        // damaged is kept.
        fs.write_file(&path, good.clone());
        let t = IdTable::open(&fs, Path::new("/i"), 2).unwrap();
        let mut bad = good.clone();
        bad[good.len() - 110] ^= 1;
        fs.write_file(&path, bad);
        for _ in 0..2 {
            assert!(matches!(
                t.get(hasher()(&id), &id),
                Err(StorageError::ChecksumMismatch { .. })
            ));
        }
        for cut in [0, 10, good.len() / 2, good.len() - 1] {
            fs.write_file(&path, good[..cut].to_vec());
            assert!(
                IdTable::open(&fs, Path::new("/i"), 2).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn merge_keeps_id_order_and_ranges_skip_newer_ids() {
        let a = sorted_ids(300, 4);
        let b = sorted_ids(200, 5);
        let merged: Vec<IdEntry> = merge_iters(vec![
            a.clone().into_iter().map(Ok),
            b.clone().into_iter().map(Ok),
        ])
        .map(Result::unwrap)
        .collect();
        // A time-ordered id beyond every stored one is refused by the
        // range check alone, without touching the bloom filter.
        let fs = MemFs::new();
        let t = write_ids(&fs, 7, &a);
        let newer = EventId([0xff; 16]);
        assert!(!t.may_contain(0, &newer).unwrap());
        assert!(t.may_contain(hasher()(&a[0].0), &a[0].0).unwrap());
        let mut want = [a, b].concat();
        want.sort_by_key(|(id, _)| id.0);
        assert_eq!(merged, want);
    }

    proptest! {
        #[test]
        fn round_trip(ids in proptest::collection::btree_set(any::<u128>(), 0..600)) {
            let fs = MemFs::new();
            let v: Vec<IdEntry> = ids.iter().enumerate().map(|(i, x)| (EventId::from_u128(*x), i as u64 * 3)).collect();
            let mut v = v;
            v.sort_by_key(|(id, _)| id.0);
            let dir = Path::new("/i");
            fs.create_dir_all(dir).unwrap();
            write(&fs, dir, 9, 0, 3 * v.len() as u64 + 1, v.len() as u64, v.iter().copied().map(Ok), hasher()).unwrap();
            let t = Arc::new(IdTable::open(&fs, dir, 9).unwrap());
            let back: Vec<IdEntry> = t.iter().map(Result::unwrap).collect();
            prop_assert_eq!(&back, &v);
            let h = hasher();
            for (id, p) in &v {
                prop_assert_eq!(t.get(h(id), id).unwrap(), Some(*p));
            }
        }
    }
}
