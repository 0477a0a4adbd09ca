//! Stream-index tables (`index/NNNNNNNNNNNNNNNNNNNN.sidx`): immutable, sorted
//! runs of index entries, as KurrentDB's PTables.
//!
//! ```text
//! header (32 bytes)
//! 0   [8]  magic           "LGBKSIDX"
//! 8   u32  format_version  3 (1 and 2 are still read)
//! 12  u32  header_len      32
//! 16  u64  entry_count
//! 24  u32  level           merge level (0: flushed from a memtable)
//! 28  u32  crc32c          over bytes 0..28
//!
//! blocks, from offset 32: entries sorted by (hash, version, position),
//! BLOCK_ENTRIES per block (the last block may be short)
//! entry (32 bytes): u64 stream_hash | u64 version | u64 position | u64 record_offset
//!
//! fences, one per block (32 bytes): u64 hash | u64 version | u64 position
//!        (the block's first key) | u32 block_crc32c | u32 entries_in_block
//! bloom: bloom_len bytes, a bloom filter over the stream hashes, sized for
//!        the table's distinct streams (format 1: for its entries)
//! names (format 3): the names of the streams whose version 0 is here,
//!        sorted, in blocks, then the name fences (see `names`)
//!
//! footer, format 3 (116 bytes, at the end of the file)
//! 0..68 as format 2, then
//! 68  u64  name_count
//! 76  u64  names_offset        fences_offset + fences and bloom
//! 84  u64  name_fences_offset
//! 92  u64  name_block_count
//! 100 u32  name_fences_crc32c
//! 104 u32  footer_crc32c       over footer bytes 0..104
//! 108 [8]  magic               "LGBKIEND"
//!
//! footer, format 2 (80 bytes, at the end of the file)
//! 0   u64  entry_count
//! 8   u64  start_position  the table indexes every event in [start, end)
//! 16  u64  end_position
//! 24  u64  fences_offset
//! 32  u64  block_count
//! 40  u64  bloom_len
//! 48  u64  stream_count    distinct stream hashes
//! 56  u32  bloom_k         hash functions
//! 60  u32  level
//! 64  u32  meta_crc32c     over fences and bloom
//! 68  u32  footer_crc32c   over footer bytes 0..68
//! 72  [8]  magic           "LGBKIEND"
//!
//! footer, format 1 (64 bytes): entry_count, start_position, end_position,
//! fences_offset (u64 each), then block_count, bloom_len, bloom_k, level,
//! meta_crc32c, footer_crc32c (u32 each, crc over bytes 0..52), magic. Its
//! u32 bloom_len overflowed past about 3.4 billion entries (a footer that
//! could not be read back), and its bloom grew with every event.
//! ```
//! Opening a table reads its footer, fences and bloom and checks them
//! against `meta_crc32c`, and keeps the bloom in memory (with format 2, 10
//! bits per stream, not per event). The fences (32 bytes per 128 entries)
//! are read again, checked and kept the first time a lookup gets past the
//! bloom, so the fences of tables whose streams are never read again are
//! never held: start-up memory does not grow with the events stored.
//! Blocks are read and checked on demand.
//! A lookup is a binary search over the fences, one block read, and a
//! binary search in the block.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbook_protocol::{Direction, layout};

use crate::error::StorageError;
use crate::fs::{OpenMode, VFile, Vfs};
use crate::index::blocks::BlockWriter;
use crate::index::ids::IdTable;
use crate::index::memtable::Entry;
use crate::index::names::{self, NameFence, NamesAt};
use logbook_protocol::le;

/// Magic number opening a table.
pub const MAGIC: [u8; 8] = *b"LGBKSIDX";
/// Magic number closing a table.
pub const FOOTER_MAGIC: [u8; 8] = *b"LGBKIEND";
/// Table format version written by this build.
pub const FORMAT_VERSION: u32 = 3;
/// The first format with stream names (an index of tables older than this
/// is rebuilt from the log at open).
pub const NAMES_FORMAT: u32 = 3;
const HEADER_LEN: u64 = 32;
/// Footer length of each format (index: version).
const FOOTER_LEN_V1: u64 = 64;
const FOOTER_LEN_V2: u64 = 80;
const FOOTER_LEN_V3: u64 = 116;
const ENTRY_LEN: usize = 32;
const FENCE_LEN: usize = 32;
/// Entries per block: 128 x 32 B = 4 KiB, one page per lookup.
pub const BLOCK_ENTRIES: usize = 128;
const BLOCK_BYTES: usize = BLOCK_ENTRIES * ENTRY_LEN;
const BLOOM_BITS_PER_KEY: u64 = 10;
const BLOOM_K: u32 = 7;

/// Sort key of an entry.
pub type Key = (u64, u64, u64);

fn decode_entry(b: &[u8]) -> (u64, Entry) {
    (
        le::u64(b, 0),
        Entry {
            version: le::u64(b, 8),
            position: le::u64(b, 16),
            offset: le::u64(b, 24),
        },
    )
}

#[derive(Clone, Copy, Debug)]
struct Fence {
    key: Key,
    crc: u32,
    entries: u32,
}

/// A bloom filter over 64-bit stream hashes (double hashing; the input is
/// already a good hash, so no further mixing is needed beyond deriving h2).
#[derive(Debug, Clone)]
pub struct Bloom {
    bits: Vec<u8>,
    k: u32,
}

impl Bloom {
    fn with_keys(keys: u64) -> Bloom {
        let bits = (keys * BLOOM_BITS_PER_KEY).max(64).div_ceil(8) as usize;
        Bloom {
            bits: vec![0; bits],
            k: BLOOM_K,
        }
    }

    fn probes(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let m = self.bits.len() as u64 * 8;
        let h1 = hash;
        let h2 = hash.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..u64::from(self.k))
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m.max(1)) as usize)
    }

    fn insert(&mut self, hash: u64) {
        let probes: Vec<usize> = self.probes(hash).collect();
        for bit in probes {
            if let Some(b) = self.bits.get_mut(bit / 8) {
                *b |= 1 << (bit % 8);
            }
        }
    }

    /// False: the hash is certainly absent. True: it may be present.
    pub fn may_contain(&self, hash: u64) -> bool {
        self.probes(hash).all(|bit| {
            self.bits
                .get(bit / 8)
                .is_some_and(|b| b & (1 << (bit % 8)) != 0)
        })
    }
}

/// Where a table's fences are, from its footer.
#[derive(Debug, Clone, Copy)]
struct FencesAt {
    offset: u64,
    count: u64,
    /// crc32c of the fences alone (the footer's covers them and the bloom;
    /// this one is computed when the open checks that, so that a lazy load
    /// reads the fences only).
    crc: u32,
}

/// An open table.
#[derive(Debug)]
pub struct Table {
    /// Table id (file name).
    pub id: u64,
    /// Path of the file.
    pub path: PathBuf,
    file: Arc<dyn VFile>,
    /// Entries in the table.
    pub entry_count: u64,
    /// First position indexed.
    pub start_position: u64,
    /// Position after the last one indexed.
    pub end_position: u64,
    /// Merge level.
    pub level: u32,
    /// Where the fences are, and the crc over them and the bloom.
    fences_at: FencesAt,
    /// The fences, once a lookup needed them (lock-free to read after).
    fences: std::sync::OnceLock<Vec<Fence>>,
    /// Set when a lookup first needed the fences (not a merge reading the
    /// table): whether a merge's output should keep its own.
    looked_up: std::sync::atomic::AtomicBool,
    bloom: Bloom,
    /// Its format version.
    pub format: u32,
    /// Where its stream names are (format 3 on).
    names_at: Option<NamesAt>,
    /// The name fences, once a listing needed them.
    name_fences: std::sync::OnceLock<Vec<NameFence>>,
    /// Bytes of the file.
    len: u64,
    /// The event ids of the same positions (`<id>.eids`).
    pub ids: Arc<IdTable>,
}

/// Writes a table from `entries`, which must be sorted by key, and `names`,
/// the names of the streams whose version 0 is among them, sorted, no
/// repeats; `ids` is the id file of the same positions, written first.
/// Returns the opened table.
/// The file is fsynced; the caller syncs the directory and records the
/// table in the MANIFEST.
#[allow(clippy::too_many_arguments)]
pub fn write(
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    level: u32,
    start_position: u64,
    end_position: u64,
    entry_count: u64,
    entries: impl Iterator<Item = Result<(u64, Entry), StorageError>>,
    names: impl Iterator<Item = Result<String, StorageError>>,
    ids: IdTable,
) -> Result<Table, StorageError> {
    write_format(
        FORMAT_VERSION,
        vfs,
        dir,
        id,
        level,
        (start_position, end_position),
        entry_count,
        entries,
        names,
        ids,
    )
}

/// [`write`] in format `format` (1 and 2, which have no names, only for the
/// tests that check that tables of earlier builds still open).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_format(
    format: u32,
    vfs: &dyn Vfs,
    dir: &Path,
    id: u64,
    level: u32,
    (start_position, end_position): (u64, u64),
    entry_count: u64,
    entries: impl Iterator<Item = Result<(u64, Entry), StorageError>>,
    names: impl Iterator<Item = Result<String, StorageError>>,
    ids: IdTable,
) -> Result<Table, StorageError> {
    let path = dir.join(layout::table_file(id));
    let file = vfs
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| StorageError::io("create", &path, e))?;
    let mut header = Vec::with_capacity(HEADER_LEN as usize);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&format.to_le_bytes());
    header.extend_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    header.extend_from_slice(&entry_count.to_le_bytes());
    header.extend_from_slice(&level.to_le_bytes());
    let crc = crc32c::crc32c(&header);
    header.extend_from_slice(&crc.to_le_bytes());

    let blocks = entry_count.div_ceil(BLOCK_ENTRIES as u64) as usize;
    let mut w = BlockWriter::new(&file, &path, &header, BLOCK_ENTRIES, blocks);
    let mut firsts: Vec<Key> = Vec::with_capacity(blocks);
    // The distinct stream hashes (entries come sorted by hash): the bloom
    // is sized for them once they are all known.
    let mut streams: Vec<u64> = Vec::new();
    let mut written = 0u64;
    let mut prev: Option<Key> = None;
    for item in entries {
        let (hash, e) = item?;
        let key = (hash, e.version, e.position);
        if prev.is_some_and(|p| p >= key) {
            return Err(StorageError::Internal(format!(
                "index entries out of order while writing {}",
                path.display()
            )));
        }
        prev = Some(key);
        let fields = [
            hash.to_le_bytes(),
            e.version.to_le_bytes(),
            e.position.to_le_bytes(),
            e.offset.to_le_bytes(),
        ];
        if w.entry(&fields.each_ref().map(|f| &f[..]))? {
            firsts.push(key);
        }
        if streams.last() != Some(&hash) {
            streams.push(hash);
        }
        written += 1;
    }
    if written != entry_count {
        return Err(StorageError::Internal(format!(
            "table {} expected {entry_count} entries, got {written}",
            path.display()
        )));
    }
    let (seals, fences_offset) = w.end_blocks();
    let fences: Vec<Fence> = firsts
        .into_iter()
        .zip(seals)
        .map(|(key, seal)| Fence {
            key,
            crc: seal.crc,
            entries: seal.entries,
        })
        .collect();
    let mut bloom = Bloom::with_keys(if format == 1 {
        entry_count
    } else {
        streams.len() as u64
    });
    for h in &streams {
        bloom.insert(*h);
    }
    let stream_count = streams.len() as u64;
    drop(streams);
    let buf = w.buf();
    let meta_start = buf.len();
    for f in &fences {
        buf.extend_from_slice(&f.key.0.to_le_bytes());
        buf.extend_from_slice(&f.key.1.to_le_bytes());
        buf.extend_from_slice(&f.key.2.to_le_bytes());
        buf.extend_from_slice(&f.crc.to_le_bytes());
        buf.extend_from_slice(&f.entries.to_le_bytes());
    }
    buf.extend_from_slice(&bloom.bits);
    let meta_crc = crc32c::crc32c(buf.get(meta_start..).unwrap_or_default());
    let fences_crc = crc32c::crc32c(
        buf.get(meta_start..meta_start + fences.len() * FENCE_LEN)
            .unwrap_or_default(),
    );
    let names_at = if format >= NAMES_FORMAT {
        Some(names::write(&mut w, &path, names)?)
    } else {
        drop(names);
        None
    };
    let buf = w.buf();
    let footer_start = buf.len();
    buf.extend_from_slice(&entry_count.to_le_bytes());
    buf.extend_from_slice(&start_position.to_le_bytes());
    buf.extend_from_slice(&end_position.to_le_bytes());
    buf.extend_from_slice(&fences_offset.to_le_bytes());
    if format == 1 {
        buf.extend_from_slice(&(fences.len() as u32).to_le_bytes());
        buf.extend_from_slice(&(bloom.bits.len() as u32).to_le_bytes());
    } else {
        buf.extend_from_slice(&(fences.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(bloom.bits.len() as u64).to_le_bytes());
        buf.extend_from_slice(&stream_count.to_le_bytes());
    }
    buf.extend_from_slice(&bloom.k.to_le_bytes());
    buf.extend_from_slice(&level.to_le_bytes());
    buf.extend_from_slice(&meta_crc.to_le_bytes());
    if let Some(n) = &names_at {
        buf.extend_from_slice(&n.count.to_le_bytes());
        buf.extend_from_slice(&n.offset.to_le_bytes());
        buf.extend_from_slice(&n.fences_offset.to_le_bytes());
        buf.extend_from_slice(&n.blocks.to_le_bytes());
        buf.extend_from_slice(&n.fences_crc.to_le_bytes());
    }
    let footer_crc = crc32c::crc32c(buf.get(footer_start..).unwrap_or_default());
    buf.extend_from_slice(&footer_crc.to_le_bytes());
    buf.extend_from_slice(&FOOTER_MAGIC);
    let len = w.position();
    w.finish()?;
    Ok(Table {
        id,
        path,
        file,
        entry_count,
        start_position,
        end_position,
        level,
        fences_at: FencesAt {
            offset: fences_offset,
            count: fences.len() as u64,
            crc: fences_crc,
        },
        // Just written: a flush's are the newest entries, the likeliest to
        // be read (a merge keeps them only if its inputs' were in use:
        // `Table::warm_if`).
        fences: std::sync::OnceLock::from(fences),
        looked_up: std::sync::atomic::AtomicBool::new(false),
        bloom,
        format,
        names_at,
        name_fences: std::sync::OnceLock::new(),
        len,
        ids: Arc::new(ids),
    })
}

impl Table {
    /// The open file (for backups, which copy it whole).
    pub fn file(&self) -> &Arc<dyn VFile> {
        &self.file
    }

    /// Opens and checks a table's footer, fences and bloom filter, and its
    /// id file's.
    pub fn open(vfs: &dyn Vfs, dir: &Path, id: u64) -> Result<Table, StorageError> {
        let ids = IdTable::open(vfs, dir, id)?;
        let path = dir.join(layout::table_file(id));
        let file = vfs
            .open(&path, OpenMode::Read)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let len = file.len().map_err(|e| StorageError::io("stat", &path, e))?;
        if len < HEADER_LEN + FOOTER_LEN_V1 {
            return Err(StorageError::corrupt(
                &path,
                0,
                "index table shorter than header and footer",
            ));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| StorageError::io("read", &path, e))?;
        if header.get(0..8) != Some(&MAGIC[..]) {
            return Err(StorageError::corrupt(
                &path,
                0,
                "not a Logbook index table (bad magic)",
            ));
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
        let footer_len = match version {
            1 => FOOTER_LEN_V1,
            2 => FOOTER_LEN_V2,
            3 => FOOTER_LEN_V3,
            _ => {
                return Err(StorageError::UnsupportedFormat {
                    file: path,
                    found: version,
                    supported: FORMAT_VERSION,
                });
            }
        };
        if len < HEADER_LEN + footer_len {
            return Err(StorageError::corrupt(
                &path,
                0,
                "index table shorter than header and footer",
            ));
        }
        let mut f = vec![0u8; footer_len as usize];
        let footer_at = len - footer_len;
        file.read_exact_at(&mut f, footer_at)
            .map_err(|e| StorageError::io("read", &path, e))?;
        let crc_at = footer_len as usize - 12;
        if f.get(crc_at + 4..) != Some(&FOOTER_MAGIC[..]) {
            return Err(StorageError::corrupt(
                &path,
                footer_at,
                "index table footer missing",
            ));
        }
        let expected = le::u32(&f, crc_at);
        let got = crc32c::crc32c(f.get(..crc_at).unwrap_or_default());
        if got != expected {
            return Err(StorageError::ChecksumMismatch {
                file: path,
                offset: footer_at,
                got,
                expected,
            });
        }
        let entry_count = le::u64(&f, 0);
        let start_position = le::u64(&f, 8);
        let end_position = le::u64(&f, 16);
        let fences_offset = le::u64(&f, 24);
        let (block_count, bloom_len, bloom_k, level, meta_crc) = if version == 1 {
            (
                u64::from(le::u32(&f, 32)),
                u64::from(le::u32(&f, 36)),
                le::u32(&f, 40),
                le::u32(&f, 44),
                le::u32(&f, 48),
            )
        } else {
            (
                le::u64(&f, 32),
                le::u64(&f, 40),
                le::u32(&f, 56),
                le::u32(&f, 60),
                le::u32(&f, 64),
            )
        };
        let meta_len = block_count
            .saturating_mul(FENCE_LEN as u64)
            .saturating_add(bloom_len);
        let names_at = (version >= NAMES_FORMAT).then(|| {
            let fences_offset = le::u64(&f, 84);
            NamesAt {
                count: le::u64(&f, 68),
                offset: le::u64(&f, 76),
                fences_offset,
                fences_len: footer_at.saturating_sub(fences_offset),
                blocks: le::u64(&f, 92),
                fences_crc: le::u32(&f, 100),
            }
        });
        // Where the fences and bloom end: the names, or the footer.
        let meta_end = names_at.map_or(footer_at, |n| n.offset);
        let names_ok = names_at.is_none_or(|n| {
            n.offset <= n.fences_offset
                && n.fences_offset <= footer_at
                && n.count <= entry_count
                && n.blocks <= n.count
                && (n.blocks == 0) == (n.count == 0)
                && (n.blocks == 0) == (n.fences_offset == n.offset)
                && (n.blocks == 0) == (n.fences_len == 0)
                && n.fences_len >= n.blocks.saturating_mul(22)
        });
        if !names_ok
            || entry_count.div_ceil(BLOCK_ENTRIES as u64) != block_count
            || Some(fences_offset)
                != entry_count
                    .checked_mul(ENTRY_LEN as u64)
                    .and_then(|n| n.checked_add(HEADER_LEN))
            || fences_offset.checked_add(meta_len) != Some(meta_end)
            || le::u64(&header, 16) != entry_count
            || bloom_k == 0
            || bloom_k > 32
        {
            return Err(StorageError::corrupt(
                &path,
                footer_at,
                "index table footer is inconsistent",
            ));
        }
        // The fences are checked a chunk at a time and not kept; the bloom
        // is.
        let fences_len = block_count * FENCE_LEN as u64;
        let fences_crc = crate::index::blocks::crc_of(&*file, &path, fences_offset, fences_len, 0)?;
        let mut bloom_bytes = vec![0u8; (meta_len - fences_len) as usize];
        file.read_exact_at(&mut bloom_bytes, fences_offset + fences_len)
            .map_err(|e| StorageError::io("read", &path, e))?;
        let got = crc32c::crc32c_append(fences_crc, &bloom_bytes);
        if got != meta_crc {
            return Err(StorageError::ChecksumMismatch {
                file: path,
                offset: fences_offset,
                got,
                expected: meta_crc,
            });
        }
        if let Some(n) = &names_at {
            let got =
                crate::index::blocks::crc_of(&*file, &path, n.fences_offset, n.fences_len, 0)?;
            if got != n.fences_crc {
                return Err(StorageError::ChecksumMismatch {
                    file: path,
                    offset: n.fences_offset,
                    got,
                    expected: n.fences_crc,
                });
            }
        }
        Ok(Table {
            id,
            path,
            file,
            entry_count,
            start_position,
            end_position,
            level,
            fences_at: FencesAt {
                offset: fences_offset,
                count: block_count,
                crc: fences_crc,
            },
            fences: std::sync::OnceLock::new(),
            looked_up: std::sync::atomic::AtomicBool::new(false),
            bloom: Bloom {
                bits: bloom_bytes,
                k: bloom_k,
            },
            format: version,
            names_at,
            name_fences: std::sync::OnceLock::new(),
            len,
            ids: Arc::new(ids),
        })
    }

    /// Whether the table may hold entries for `hash`.
    pub fn may_contain(&self, hash: u64) -> bool {
        self.bloom.may_contain(hash)
    }

    /// Bytes of the file.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// Whether the table has stream names (format 3 on).
    pub fn has_names(&self) -> bool {
        self.names_at.is_some()
    }

    /// Streams whose version 0 is here, as the footer counts them (format
    /// 3 on).
    pub fn name_count(&self) -> Option<u64> {
        self.names_at.map(|n| n.count)
    }

    /// The name fences: read, checked and kept at first use.
    fn name_fences(&self) -> Result<&[NameFence], StorageError> {
        if let Some(f) = self.name_fences.get() {
            return Ok(f);
        }
        let Some(at) = self.names_at else {
            return Err(StorageError::Internal(format!(
                "index table {} (format {}) has no stream names",
                self.path.display(),
                self.format
            )));
        };
        let bytes = crate::index::blocks::read_checked(
            &*self.file,
            &self.path,
            at.fences_offset,
            at.fences_len as usize,
            at.fences_crc,
        )?;
        let fences = names::parse_fences(&self.path, &at, &bytes)?;
        Ok(self.name_fences.get_or_init(|| fences))
    }

    /// The stream names here from `start` on (inclusive), in order, reading
    /// one name block at a time.
    pub fn names_from(
        self: &Arc<Self>,
        start: &str,
    ) -> impl Iterator<Item = Result<String, StorageError>> + use<> {
        let table = Arc::clone(self);
        let start = start.to_owned();
        let mut block_i: Option<usize> = None;
        let mut block: std::vec::IntoIter<String> = Vec::new().into_iter();
        let mut done = false;
        std::iter::from_fn(move || {
            loop {
                if done {
                    return None;
                }
                if let Some(n) = block.next() {
                    if n < start {
                        continue;
                    }
                    return Some(Ok(n));
                }
                let fences = match table.name_fences() {
                    Ok(f) => f,
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                };
                let i = block_i.map_or_else(|| names::first_block(fences, &start), |i| i + 1);
                block_i = Some(i);
                let Some(fence) = fences.get(i) else {
                    done = true;
                    return None;
                };
                match names::read_block(&table.file, &table.path, fence, fences.get(i + 1)) {
                    Ok(b) => block = b.into_iter(),
                    Err(e) => {
                        done = true;
                        return Some(Err(e));
                    }
                }
            }
        })
    }

    /// The table, keeping its fences in memory only if `warm` (a merge's
    /// output: kept if lookups were reading its inputs'; else a lookup
    /// reads them when it needs them).
    pub fn warm_if(mut self, warm: bool) -> Table {
        if !warm {
            self.fences = std::sync::OnceLock::new();
        }
        self
    }

    /// Whether lookups have needed its fences.
    pub fn is_warm(&self) -> bool {
        self.looked_up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fences: read, checked and kept at first use.
    fn fences(&self) -> Result<&[Fence], StorageError> {
        if let Some(f) = self.fences.get() {
            return Ok(f);
        }
        let at = self.fences_at;
        let bytes = crate::index::blocks::read_checked(
            &*self.file,
            &self.path,
            at.offset,
            at.count as usize * FENCE_LEN,
            at.crc,
        )?;
        let fences = bytes
            .chunks_exact(FENCE_LEN)
            .map(|c| Fence {
                key: (le::u64(c, 0), le::u64(c, 8), le::u64(c, 16)),
                crc: le::u32(c, 24),
                entries: le::u32(c, 28),
            })
            .collect();
        // Another reader may have loaded them meanwhile: either serves.
        Ok(self.fences.get_or_init(|| fences))
    }

    /// Reads and checks block `i`.
    fn block(&self, i: usize) -> Result<Vec<u8>, StorageError> {
        let fence = self
            .fences()?
            .get(i)
            .ok_or_else(|| StorageError::corrupt(&self.path, 0, "block index out of range"))?;
        crate::index::blocks::read_block(
            &self.file,
            &self.path,
            HEADER_LEN,
            BLOCK_BYTES,
            i,
            fence.entries as usize * ENTRY_LEN,
            fence.crc,
        )
    }

    /// Appends to `out` up to `limit` entries with `hash`, starting at key
    /// `(hash, from.0, from.1)` inclusive (version, position) and moving in
    /// `direction`.
    pub fn range(
        &self,
        hash: u64,
        from: (u64, u64),
        direction: Direction,
        limit: usize,
        out: &mut Vec<(u64, Entry)>,
    ) -> Result<(), StorageError> {
        if limit == 0 || !self.may_contain(hash) {
            return Ok(());
        }
        let key: Key = (hash, from.0, from.1);
        let fences = self.fences()?;
        if !self.looked_up.load(std::sync::atomic::Ordering::Relaxed) {
            self.looked_up
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut taken = 0;
        match direction {
            Direction::Forward => {
                // The first entry >= key is in the last block whose first key
                // is < key, or (if that block has none) in the next block.
                let b = fences.partition_point(|f| f.key < key);
                let mut i = b.saturating_sub(1);
                while i < fences.len() {
                    let block = self.block(i)?;
                    for c in block.chunks_exact(ENTRY_LEN) {
                        let (h, e) = decode_entry(c);
                        match (h, e.version, e.position).cmp(&key) {
                            Ordering::Less => continue,
                            _ if h != hash => return Ok(()),
                            _ => {}
                        }
                        out.push((h, e));
                        taken += 1;
                        if taken == limit {
                            return Ok(());
                        }
                    }
                    i += 1;
                }
            }
            Direction::Backward => {
                let b = fences.partition_point(|f| f.key <= key);
                let mut i = b;
                while i > 0 {
                    i -= 1;
                    let block = self.block(i)?;
                    for c in block.chunks_exact(ENTRY_LEN).rev() {
                        let (h, e) = decode_entry(c);
                        match (h, e.version, e.position).cmp(&key) {
                            Ordering::Greater => continue,
                            _ if h != hash => return Ok(()),
                            _ => {}
                        }
                        out.push((h, e));
                        taken += 1;
                        if taken == limit {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Every entry in key order, reading a few blocks at a time (merges and
    /// verification).
    pub fn iter(
        self: &Arc<Self>,
    ) -> impl Iterator<Item = Result<(u64, Entry), StorageError>> + use<> {
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
                if block_i as u64 >= table.fences_at.count {
                    return None;
                }
                match table.block(block_i) {
                    Ok(b) => {
                        block = b;
                        at = 0;
                        block_i += 1;
                    }
                    Err(e) => {
                        block_i = table.fences_at.count as usize;
                        block.clear();
                        return Some(Err(e));
                    }
                }
            }
        })
    }
}

/// Merges sorted entry streams into one sorted stream (k-way merge).
pub fn merge_iters<I>(iters: Vec<I>) -> impl Iterator<Item = Result<(u64, Entry), StorageError>>
where
    I: Iterator<Item = Result<(u64, Entry), StorageError>>,
{
    let mut iters: Vec<std::iter::Peekable<I>> =
        iters.into_iter().map(Iterator::peekable).collect();
    std::iter::from_fn(move || {
        let mut best: Option<(usize, Key)> = None;
        for (i, it) in iters.iter_mut().enumerate() {
            match it.peek() {
                Some(Ok((h, e))) => {
                    let k = (*h, e.version, e.position);
                    if best.is_none_or(|(_, b)| k < b) {
                        best = Some((i, k));
                    }
                }
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

    fn entries(n: u64, streams: u64) -> Vec<(u64, Entry)> {
        let mut v: Vec<(u64, Entry)> = (0..n)
            .map(|p| {
                let s = p % streams;
                (
                    s * 1000 + 17,
                    Entry {
                        version: p / streams,
                        position: p,
                        offset: p * 100,
                    },
                )
            })
            .collect();
        v.sort_by_key(|(h, e)| (*h, e.version, e.position));
        v
    }

    fn write_table(fs: &MemFs, v: &[(u64, Entry)]) -> Table {
        let dir = Path::new("/idx");
        fs.create_dir_all(dir).unwrap();
        let n = v.len() as u64;
        let ids = crate::index::ids::write(fs, dir, 1, 0, n, 0, std::iter::empty(), |_| 0).unwrap();
        write(
            fs,
            dir,
            1,
            0,
            0,
            n,
            n,
            v.iter().map(|x| Ok(*x)),
            std::iter::empty(),
            ids,
        )
        .unwrap()
    }

    /// Tables written by earlier builds (format 1, a bloom sized by
    /// entries and u32 footer fields) still open and answer the same; new
    /// ones size their bloom by distinct streams (here 10 bits for each of
    /// 7 streams, against 10 for each of 2,000 entries).
    #[test]
    fn format_1_tables_still_open_and_format_2_blooms_are_sized_by_streams() {
        let v = entries(2000, 7);
        let n = v.len() as u64;
        let mut answers = Vec::new();
        for format in [1, 2] {
            let fs = MemFs::new();
            let dir = Path::new("/idx");
            fs.create_dir_all(dir).unwrap();
            let ids =
                crate::index::ids::write(&fs, dir, 1, 0, n, 0, std::iter::empty(), |_| 0).unwrap();
            write_format(
                format,
                &fs,
                dir,
                1,
                0,
                (0, n),
                n,
                v.iter().map(|x| Ok(*x)),
                std::iter::empty(),
                ids,
            )
            .unwrap();
            let t = Table::open(&fs, dir, 1).unwrap();
            let want_bloom = if format == 1 {
                2000 * 10 / 8
            } else {
                64 / 8 + 1
            };
            assert!(
                t.bloom.bits.len() <= want_bloom,
                "format {format}: {} bloom bytes",
                t.bloom.bits.len()
            );
            let mut out = Vec::new();
            for s in 0..7u64 {
                t.range(s * 1000 + 17, (0, 0), Direction::Forward, 10_000, &mut out)
                    .unwrap();
            }
            answers.push(out);
        }
        assert_eq!(answers[0], answers[1]);
        assert_eq!(answers[0].len(), 2000);
    }

    /// A footer whose sizes do not add up (a crafted or damaged one,
    /// including counts that would overflow) is refused as corrupt, not
    /// trusted or panicked on.
    #[test]
    fn inconsistent_footers_are_refused() {
        let fs = MemFs::new();
        let v = entries(300, 3);
        write_table(&fs, &v);
        let path = Path::new("/idx").join(layout::table_file(1));
        let file = fs.open(&path, OpenMode::Read).unwrap();
        let len = file.len().unwrap();
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        let footer_at = (len - FOOTER_LEN_V3) as usize;
        for (field, value) in [
            (0usize, u64::MAX),
            (32, u64::MAX / 16),
            (40, u64::MAX - 3),
            (24, 7),
            // The names: more than the entries, offsets past the footer or
            // before the bloom's end, blocks without names.
            (68, 301),
            (76, 40),
            (84, u64::MAX - 5),
            (92, 1),
        ] {
            let mut b = bytes.clone();
            b[footer_at + field..footer_at + field + 8].copy_from_slice(&value.to_le_bytes());
            let crc = crc32c::crc32c(&b[footer_at..footer_at + 104]);
            b[footer_at + 104..footer_at + 108].copy_from_slice(&crc.to_le_bytes());
            let bad = MemFs::new();
            bad.create_dir_all(Path::new("/idx")).unwrap();
            let f = bad.open(&path, OpenMode::CreateNew).unwrap();
            f.write_all_at(&b, 0).unwrap();
            let ids_path = Path::new("/idx").join(layout::ids_file(1));
            let ids = fs.open(&ids_path, OpenMode::Read).unwrap();
            let mut ib = vec![0u8; ids.len().unwrap() as usize];
            ids.read_exact_at(&mut ib, 0).unwrap();
            bad.open(&ids_path, OpenMode::CreateNew)
                .unwrap()
                .write_all_at(&ib, 0)
                .unwrap();
            match Table::open(&bad, Path::new("/idx"), 1) {
                Err(StorageError::Corrupt { .. }) => {}
                other => panic!("field {field} = {value}: {other:?}"),
            }
        }
    }

    #[test]
    fn lookups_match_a_scan() {
        let fs = MemFs::new();
        let v = entries(2000, 7);
        let t = write_table(&fs, &v);
        let t2 = Table::open(&fs, Path::new("/idx"), 1).unwrap();
        for t in [&t, &t2] {
            for s in 0..7u64 {
                let h = s * 1000 + 17;
                assert!(t.may_contain(h));
                let all: Vec<_> = v.iter().filter(|(x, _)| *x == h).copied().collect();
                for from in [0u64, 1, 100, 285, 286, 400] {
                    for limit in [1usize, 5, 300] {
                        let mut out = Vec::new();
                        t.range(h, (from, 0), Direction::Forward, limit, &mut out)
                            .unwrap();
                        let want: Vec<_> = all
                            .iter()
                            .filter(|(_, e)| e.version >= from)
                            .take(limit)
                            .copied()
                            .collect();
                        assert_eq!(out, want, "fwd s={s} from={from} limit={limit}");
                        out.clear();
                        t.range(h, (from, u64::MAX), Direction::Backward, limit, &mut out)
                            .unwrap();
                        let want: Vec<_> = all
                            .iter()
                            .rev()
                            .filter(|(_, e)| e.version <= from)
                            .take(limit)
                            .copied()
                            .collect();
                        assert_eq!(out, want, "bwd s={s} from={from} limit={limit}");
                    }
                }
            }
            let mut out = Vec::new();
            t.range(999_999, (0, 0), Direction::Forward, 10, &mut out)
                .unwrap();
            assert!(out.is_empty());
        }
        let all: Vec<_> = Arc::new(t2).iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(all, v);
    }

    #[test]
    fn corrupt_blocks_and_footers_are_reported() {
        let fs = MemFs::new();
        let v = entries(1000, 3);
        write_table(&fs, &v);
        let path = Path::new("/idx").join(layout::table_file(1));
        let good = fs.read_file(&path).unwrap();
        // A flipped byte in a block: open succeeds, the lookup reports it.
        let mut bad = good.clone();
        bad[40] ^= 1;
        fs.write_file(&path, bad);
        let t = Table::open(&fs, Path::new("/idx"), 1).unwrap();
        let mut out = Vec::new();
        let h = bad_hash_of_first(&v);
        let err = t
            .range(h, (0, 0), Direction::Forward, 10, &mut out)
            .unwrap_err();
        assert!(err.is_corruption(), "{err}");
        // A flipped byte in the fences, bloom or footer: open fails.
        for at in [good.len() - 70, good.len() - 30, good.len() - 2] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            fs.write_file(&path, bad);
            assert!(
                Table::open(&fs, Path::new("/idx"), 1).is_err(),
                "flip at {at}"
            );
        }
        // Truncated.
        fs.write_file(&path, good[..good.len() - 1].to_vec());
        assert!(Table::open(&fs, Path::new("/idx"), 1).is_err());
        // Fences damaged after the open checked them (they are read again
        // at first use): that lookup fails, and so does the next; nothing
        // damaged is kept.
        fs.write_file(&path, good.clone());
        let t = Table::open(&fs, Path::new("/idx"), 1).unwrap();
        let fences_at = 32 + v.len() * ENTRY_LEN + 5;
        let mut bad = good.clone();
        bad[fences_at] ^= 1;
        fs.write_file(&path, bad);
        for _ in 0..2 {
            let err = t
                .range(h, (0, 0), Direction::Forward, 10, &mut out)
                .unwrap_err();
            assert!(
                matches!(err, StorageError::ChecksumMismatch { .. }),
                "{err}"
            );
        }
    }

    fn write_named(fs: &MemFs, v: &[(u64, Entry)], names: &[String]) -> Arc<Table> {
        let dir = Path::new("/idx");
        fs.create_dir_all(dir).unwrap();
        let n = v.len() as u64;
        let ids = crate::index::ids::write(fs, dir, 1, 0, n, 0, std::iter::empty(), |_| 0).unwrap();
        let t = write(
            fs,
            dir,
            1,
            0,
            0,
            n,
            n,
            v.iter().map(|x| Ok(*x)),
            names.iter().cloned().map(Ok),
            ids,
        )
        .unwrap();
        assert_eq!(t.file_len(), fs.read_file(&t.path).unwrap().len() as u64);
        Arc::new(t)
    }

    fn names_of(t: &Arc<Table>, start: &str) -> Result<Vec<String>, StorageError> {
        t.names_from(start).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Names written come back in order, whole or from any start, from
        /// the written table and from the file reopened.
        #[test]
        fn names_round_trip(
            set in proptest::collection::btree_set("[a-c]{0,3}[\\PC]{0,40}|x{900,1024}", 0..600),
            starts in proptest::collection::vec("[a-d\\PC]{0,6}", 4),
        ) {
            let names: Vec<String> = set.into_iter().filter(|n| !n.is_empty() && n.len() <= 1024).collect();
            let v = entries(names.len().max(1) as u64 * 2, 7);
            let fs = MemFs::new();
            let written = write_named(&fs, &v, &names);
            let reopened = Arc::new(Table::open(&fs, Path::new("/idx"), 1).unwrap());
            proptest::prop_assert_eq!(reopened.name_count(), Some(names.len() as u64));
            for t in [&written, &reopened] {
                proptest::prop_assert_eq!(&names_of(t, "").unwrap(), &names);
                for start in &starts {
                    let want: Vec<String> = names.iter().filter(|n| n.as_str() >= start.as_str()).cloned().collect();
                    proptest::prop_assert_eq!(names_of(t, start).unwrap(), want);
                }
            }
        }
    }

    /// A damaged byte anywhere in the names is found: the open refuses the
    /// table (fences, footer) or the listing fails (a block); no listing
    /// ever returns other names.
    #[test]
    fn damaged_names_are_refused() {
        let names: Vec<String> = (0..2_000).map(|i| format!("stream-{i:06}")).collect();
        let v = entries(4_000, 7);
        let fs = MemFs::new();
        let t = write_named(&fs, &v, &names);
        let at = t.names_at.unwrap();
        assert!(at.blocks > 5, "{at:?}");
        let good = fs.read_file(&t.path).unwrap();
        let path = t.path.clone();
        let mut caught = 0;
        for i in (at.offset as usize..good.len()).step_by(97) {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            fs.write_file(&path, bad);
            match Table::open(&fs, Path::new("/idx"), 1) {
                Err(_) => caught += 1,
                Ok(t) => match names_of(&Arc::new(t), "") {
                    Err(e) => {
                        assert!(e.is_corruption(), "{e}");
                        caught += 1;
                    }
                    Ok(got) => panic!("flip at {i} went unnoticed ({} names)", got.len()),
                },
            }
        }
        assert!(caught > 100);
        fs.write_file(&path, good);
        let t = Arc::new(Table::open(&fs, Path::new("/idx"), 1).unwrap());
        assert_eq!(names_of(&t, "stream-001999").unwrap(), ["stream-001999"]);
        assert!(names_of(&t, "stream-002").unwrap().is_empty());
        // Out of order names are refused at write time.
        let fs = MemFs::new();
        let dir = Path::new("/idx");
        fs.create_dir_all(dir).unwrap();
        let ids =
            crate::index::ids::write(&fs, dir, 1, 0, 1, 0, std::iter::empty(), |_| 0).unwrap();
        let err = write(
            &fs,
            dir,
            1,
            0,
            0,
            1,
            1,
            entries(1, 1).into_iter().map(Ok),
            ["b", "a"].into_iter().map(|n| Ok(n.to_owned())),
            ids,
        )
        .unwrap_err();
        assert!(matches!(err, StorageError::Internal(_)), "{err}");
    }

    fn bad_hash_of_first(v: &[(u64, Entry)]) -> u64 {
        v[0].0
    }

    #[test]
    fn merge_is_sorted() {
        let a = entries(100, 3);
        let b: Vec<_> = entries(100, 5)
            .into_iter()
            .map(|(h, mut e)| {
                e.position += 1000;
                (h, e)
            })
            .collect();
        let merged: Vec<_> = merge_iters(vec![
            a.clone().into_iter().map(Ok),
            b.clone().into_iter().map(Ok),
        ])
        .collect::<Result<_, _>>()
        .unwrap();
        let mut want = a;
        want.extend(b);
        want.sort_by_key(|(h, e)| (*h, e.version, e.position));
        assert_eq!(merged, want);
    }
}
