//! `index/MANIFEST`: which index tables are live and how far they cover the
//! log. Replaced atomically: write `MANIFEST.tmp`, fsync it, rename it over
//! `MANIFEST`, fsync the directory. A crash at any point leaves either the
//! old or the new manifest, never a mix.
//!
//! ```text
//! 0   [8]  magic            "LGBKMANI"
//! 8   u32  format_version   3
//! 12  u32  table_count
//! 16  u64  indexed_through  every event below this position is in a table
//! 24  u64  next_table_id
//! 32  u64  streams          streams whose first event is below indexed_through
//! 40  u64  hash_seed        seed of the stream hash the tables are sorted by
//! 48  table_count x u64     table ids, oldest (lowest positions) first
//! ..  u32  crc32c           over everything before it
//! ```
//!
//! Older versions are still read: version 2 had no `hash_seed` (the table
//! ids start at 40; its tables hashed with seed 0, plain xxh3), version 1
//! neither `streams` (ids at 32; opening counts the streams from the tables
//! once).

use std::path::Path;

use logbook_protocol::layout;

use crate::error::StorageError;
use crate::fs::{OpenMode, Vfs};
use logbook_protocol::le;

/// Magic number opening a manifest.
pub const MAGIC: [u8; 8] = *b"LGBKMANI";
/// Manifest format version written by this build.
pub const FORMAT_VERSION: u32 = 3;
/// File name.
pub const FILE_NAME: &str = layout::MANIFEST;
const TMP_NAME: &str = layout::MANIFEST_TMP;

/// The manifest's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every event below this position is indexed by a table.
    pub indexed_through: u64,
    /// Id for the next table written.
    pub next_table_id: u64,
    /// Live tables, oldest first.
    pub tables: Vec<u64>,
    /// Streams whose first event is below `indexed_through`; `None` when
    /// read from a version 1 manifest, which did not count them.
    pub streams: Option<u64>,
    /// Seed of the stream hash that the tables' entries are keyed by (0 in
    /// manifests from before the seed existed: plain xxh3).
    pub hash_seed: u64,
}

impl Manifest {
    /// Encodes the manifest.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(52 + self.tables.len() * 8);
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        v.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.indexed_through.to_le_bytes());
        v.extend_from_slice(&self.next_table_id.to_le_bytes());
        v.extend_from_slice(&self.streams.unwrap_or(0).to_le_bytes());
        v.extend_from_slice(&self.hash_seed.to_le_bytes());
        for t in &self.tables {
            v.extend_from_slice(&t.to_le_bytes());
        }
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    /// Decodes and checks a manifest.
    pub fn decode(path: &Path, b: &[u8]) -> Result<Manifest, StorageError> {
        let u32_at = |at: usize| le::try_u32(b, at);
        let u64_at = |at: usize| le::try_u64(b, at);
        if b.get(0..8) != Some(&MAGIC[..]) {
            return Err(StorageError::corrupt(
                path,
                0,
                "not a Logbook manifest (bad magic)",
            ));
        }
        let short = || StorageError::corrupt(path, 0, "manifest is truncated");
        let version = u32_at(8).ok_or_else(short)?;
        if !(1..=FORMAT_VERSION).contains(&version) {
            return Err(StorageError::UnsupportedFormat {
                file: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let tables_at = match version {
            1 => 32,
            2 => 40,
            _ => 48,
        };
        let count = u32_at(12).ok_or_else(short)? as usize;
        let len = tables_at + count * 8 + 4;
        if b.len() != len {
            return Err(StorageError::corrupt(
                path,
                0,
                "manifest length does not match its table count",
            ));
        }
        let expected = u32_at(len - 4).ok_or_else(short)?;
        let got = crc32c::crc32c(b.get(..len - 4).unwrap_or_default());
        if got != expected {
            return Err(StorageError::ChecksumMismatch {
                file: path.to_path_buf(),
                offset: 0,
                got,
                expected,
            });
        }
        Ok(Manifest {
            indexed_through: u64_at(16).ok_or_else(short)?,
            next_table_id: u64_at(24).ok_or_else(short)?,
            tables: (0..count)
                .map(|i| u64_at(tables_at + i * 8).unwrap_or(0))
                .collect(),
            streams: if version == 1 {
                None
            } else {
                Some(u64_at(32).ok_or_else(short)?)
            },
            hash_seed: if version >= 3 {
                u64_at(40).ok_or_else(short)?
            } else {
                0
            },
        })
    }

    /// Reads `dir/MANIFEST`; `Ok(None)` if there is none yet.
    pub fn load(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Manifest>, StorageError> {
        let path = dir.join(FILE_NAME);
        if !vfs.exists(&path) {
            return Ok(None);
        }
        let f = vfs
            .open(&path, OpenMode::Read)
            .map_err(|e| StorageError::io("open", &path, e))?;
        let len = f.len().map_err(|e| StorageError::io("stat", &path, e))?;
        if len > 64 << 20 {
            return Err(StorageError::corrupt(
                &path,
                0,
                "manifest is implausibly large",
            ));
        }
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, 0)
            .map_err(|e| StorageError::io("read", &path, e))?;
        Manifest::decode(&path, &b).map(Some)
    }

    /// Atomically replaces `dir/MANIFEST` with this manifest.
    pub fn store(&self, vfs: &dyn Vfs, dir: &Path) -> Result<(), StorageError> {
        crate::fs::replace_file(vfs, dir, FILE_NAME, TMP_NAME, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{CrashMode, MemFs};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(it in any::<u64>(), next in any::<u64>(), streams in any::<u64>(), seed in any::<u64>(), tables in proptest::collection::vec(any::<u64>(), 0..20)) {
            let m = Manifest { indexed_through: it, next_table_id: next, tables, streams: Some(streams), hash_seed: seed };
            let b = m.encode();
            prop_assert_eq!(Manifest::decode(Path::new("M"), &b).unwrap(), m);
            for cut in 0..b.len() {
                prop_assert!(Manifest::decode(Path::new("M"), &b[..cut]).is_err());
            }
        }

        #[test]
        fn bit_flips_are_detected(tables in proptest::collection::vec(any::<u64>(), 0..5), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let m = Manifest { indexed_through: 5, next_table_id: 9, tables, streams: Some(3), hash_seed: 11 };
            let mut b = m.encode();
            let at = at.index(b.len());
            b[at] ^= 1 << bit;
            prop_assert!(Manifest::decode(Path::new("M"), &b).is_err());
        }
    }

    /// A version 1 manifest (no stream count) still opens.
    #[test]
    fn version_1_is_read_without_a_stream_count() {
        let mut v = Vec::new();
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(&10u64.to_le_bytes());
        v.extend_from_slice(&7u64.to_le_bytes());
        v.extend_from_slice(&5u64.to_le_bytes());
        v.extend_from_slice(&6u64.to_le_bytes());
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        let m = Manifest::decode(Path::new("M"), &v).unwrap();
        assert_eq!(
            m,
            Manifest {
                indexed_through: 10,
                next_table_id: 7,
                tables: vec![5, 6],
                streams: None,
                hash_seed: 0,
            }
        );
        v[8] = 4;
        assert!(matches!(
            Manifest::decode(Path::new("M"), &v),
            Err(StorageError::UnsupportedFormat { found: 4, .. })
        ));
    }

    /// A version 2 manifest (no hash seed) still opens, with seed 0: its
    /// tables were keyed by plain xxh3.
    #[test]
    fn version_2_is_read_with_seed_zero() {
        let mut v = Vec::new();
        v.extend_from_slice(&MAGIC);
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&10u64.to_le_bytes());
        v.extend_from_slice(&7u64.to_le_bytes());
        v.extend_from_slice(&4u64.to_le_bytes());
        v.extend_from_slice(&6u64.to_le_bytes());
        let crc = crc32c::crc32c(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        let m = Manifest::decode(Path::new("M"), &v).unwrap();
        assert_eq!(
            m,
            Manifest {
                indexed_through: 10,
                next_table_id: 7,
                tables: vec![6],
                streams: Some(4),
                hash_seed: 0,
            }
        );
    }

    #[test]
    fn store_survives_crash_as_old_or_new() {
        let fs = MemFs::new();
        let dir = Path::new("/i");
        fs.create_dir_all(dir).unwrap();
        let a = Manifest {
            indexed_through: 1,
            next_table_id: 2,
            tables: vec![1],
            streams: Some(1),
            hash_seed: 5,
        };
        a.store(&fs, dir).unwrap();
        let b = Manifest {
            indexed_through: 7,
            next_table_id: 3,
            tables: vec![1, 2],
            streams: Some(4),
            hash_seed: 5,
        };
        b.store(&fs, dir).unwrap();
        let after = fs.crash(CrashMode::DropUnsynced);
        assert_eq!(Manifest::load(&after, dir).unwrap(), Some(b));
    }
}
