//! The data directory's layout: every file and directory name a Logbook
//! store uses, in one place.
//!
//! ```text
//! <data>/LOCK                               flock: one process per directory
//! <data>/BACKUP-INCOMPLETE                  a backup is being written: refuse to open
//! <data>/BACKUP                             what the last completed backup copied
//! <data>/log/00000000000000000000.seg       segments, named by their first position
//! <data>/index/00000000000000000007.sidx    index tables, named by their id
//! <data>/index/00000000000000000007.eids    each table's event ids
//! <data>/index/MANIFEST                     the live tables (MANIFEST.tmp while replaced)
//! ```
//!
//! The engine (`logbook-storage`) creates and opens these files, its
//! backup image names them, and the client's backup writes them: the
//! backup protocol carries the names (`log/<name>.seg`, `index/<name>.sidx`,
//! `index/<name>.eids`),
//! so they are part of the wire contract as well as of the disk format.
//! Numbers in names are 20 zero-padded decimal digits, so that listing a
//! directory sorts files in log order.

use std::path::{Path, PathBuf};

/// Subdirectory holding the log's segments.
pub const LOG_DIR: &str = "log";
/// Subdirectory holding the stream index: tables and the MANIFEST.
pub const INDEX_DIR: &str = "index";
/// The lock file: a process holding its `flock` owns the directory.
pub const LOCK: &str = "LOCK";
/// The index's manifest, in [`INDEX_DIR`].
pub const MANIFEST: &str = "MANIFEST";
/// A manifest being written, renamed over [`MANIFEST`] once durable.
pub const MANIFEST_TMP: &str = "MANIFEST.tmp";
/// Marks a data directory holding a backup that has not completed: the
/// daemon refuses to open it.
pub const BACKUP_INCOMPLETE: &str = "BACKUP-INCOMPLETE";
/// Written by a completed backup: the length of every file it copied, so
/// that the next backup into the directory copies only what is new.
pub const BACKUP_RECORD: &str = "BACKUP";
/// Extension of segment files.
pub const SEGMENT_EXT: &str = ".seg";
/// Extension of index table files.
pub const TABLE_EXT: &str = ".sidx";
/// Extension of the event-id files that go with index tables.
pub const IDS_EXT: &str = ".eids";

/// Digits of the number in a segment or table file name.
const NAME_DIGITS: usize = 20;

/// File name of the segment whose first event has `first_position`.
pub fn segment_file(first_position: u64) -> String {
    format!("{first_position:020}{SEGMENT_EXT}")
}

/// File name of index table `id`.
pub fn table_file(id: u64) -> String {
    format!("{id:020}{TABLE_EXT}")
}

/// File name of the event ids of index table `id`.
pub fn ids_file(id: u64) -> String {
    format!("{id:020}{IDS_EXT}")
}

/// The number in a file name made by [`segment_file`] or [`table_file`]
/// (with extension `ext`), if `name` is one.
fn parse_numbered(name: &str, ext: &str) -> Option<u64> {
    let digits = name.strip_suffix(ext)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The first position a segment file name encodes, if it is one.
pub fn parse_segment_file(name: &str) -> Option<u64> {
    parse_numbered(name, SEGMENT_EXT)
}

/// The table id a table file name encodes, if it is one.
pub fn parse_table_file(name: &str) -> Option<u64> {
    parse_numbered(name, TABLE_EXT)
}

/// The table id an event-id file name encodes, if it is one.
pub fn parse_ids_file(name: &str) -> Option<u64> {
    parse_numbered(name, IDS_EXT)
}

/// A store file as the backup protocol names it: relative to the data
/// directory, `log/<segment>`, `index/<table>` or `index/<table's ids>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreFile {
    /// The segment starting at this position.
    Segment(u64),
    /// The index table with this id.
    Table(u64),
    /// The event ids of the index table with this id.
    Ids(u64),
}

impl StoreFile {
    /// The name the backup protocol uses: `log/<file>` or `index/<file>`.
    pub fn wire_name(self) -> String {
        match self {
            StoreFile::Segment(p) => format!("{LOG_DIR}/{}", segment_file(p)),
            StoreFile::Table(id) => format!("{INDEX_DIR}/{}", table_file(id)),
            StoreFile::Ids(id) => format!("{INDEX_DIR}/{}", ids_file(id)),
        }
    }

    /// Parses a name from [`StoreFile::wire_name`]; `None` for anything
    /// else, in particular for any name that could leave the directory.
    pub fn parse_wire_name(name: &str) -> Option<StoreFile> {
        let (dir, file) = name.split_once('/')?;
        match dir {
            LOG_DIR => parse_segment_file(file).map(StoreFile::Segment),
            INDEX_DIR => parse_table_file(file)
                .map(StoreFile::Table)
                .or_else(|| parse_ids_file(file).map(StoreFile::Ids)),
            _ => None,
        }
    }

    /// The subdirectory holding the file.
    pub fn dir(self) -> &'static str {
        match self {
            StoreFile::Segment(_) => LOG_DIR,
            StoreFile::Table(_) | StoreFile::Ids(_) => INDEX_DIR,
        }
    }

    /// The file's name within its subdirectory.
    pub fn file_name(self) -> String {
        match self {
            StoreFile::Segment(p) => segment_file(p),
            StoreFile::Table(id) => table_file(id),
            StoreFile::Ids(id) => ids_file(id),
        }
    }
}

/// The paths of one data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The layout rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<data>/log`.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join(LOG_DIR)
    }

    /// `<data>/index`.
    pub fn index_dir(&self) -> PathBuf {
        self.root.join(INDEX_DIR)
    }

    /// `<data>/LOCK`.
    pub fn lock(&self) -> PathBuf {
        self.root.join(LOCK)
    }

    /// `<data>/index/MANIFEST`.
    pub fn manifest(&self) -> PathBuf {
        self.index_dir().join(MANIFEST)
    }

    /// `<data>/BACKUP-INCOMPLETE`.
    pub fn backup_incomplete(&self) -> PathBuf {
        self.root.join(BACKUP_INCOMPLETE)
    }

    /// `<data>/BACKUP`.
    pub fn backup_record(&self) -> PathBuf {
        self.root.join(BACKUP_RECORD)
    }

    /// `<data>/log/<segment starting at first_position>`.
    pub fn segment(&self, first_position: u64) -> PathBuf {
        self.log_dir().join(segment_file(first_position))
    }

    /// `<data>/index/<table id>`.
    pub fn table(&self, id: u64) -> PathBuf {
        self.index_dir().join(table_file(id))
    }

    /// `<data>/index/<table id's event ids>`.
    pub fn ids(&self, id: u64) -> PathBuf {
        self.index_dir().join(ids_file(id))
    }

    /// Where `file` lives in this directory.
    pub fn path_of(&self, file: StoreFile) -> PathBuf {
        self.root.join(file.dir()).join(file.file_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_round_trip() {
        assert_eq!(segment_file(42), "00000000000000000042.seg");
        assert_eq!(table_file(7), "00000000000000000007.sidx");
        assert!(segment_file(9) < segment_file(10));
        assert_eq!(parse_segment_file(&segment_file(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_table_file(&table_file(3)), Some(3));
        for bad in [
            "42.seg",
            "0000000000000000004x.seg",
            "00000000000000000042.sidx",
            "+0000000000000000042.seg",
            "99999999999999999999.seg",
        ] {
            assert_eq!(parse_segment_file(bad), None, "{bad}");
        }
    }

    #[test]
    fn wire_names_cannot_leave_the_directory() {
        for f in [
            StoreFile::Segment(0),
            StoreFile::Table(12),
            StoreFile::Ids(12),
        ] {
            assert_eq!(StoreFile::parse_wire_name(&f.wire_name()), Some(f));
        }
        assert_eq!(
            StoreFile::Segment(5).wire_name(),
            "log/00000000000000000005.seg"
        );
        for bad in [
            "LOCK",
            "log/../x.seg",
            "../log/00000000000000000000.seg",
            "log/00000000000000000000.sidx",
            "index/00000000000000000000.seg",
            "log/sub/00000000000000000000.seg",
            "/log/00000000000000000000.seg",
            "index/MANIFEST",
        ] {
            assert_eq!(StoreFile::parse_wire_name(bad), None, "{bad}");
        }
        let d = DataDir::new("/data");
        assert_eq!(
            d.path_of(StoreFile::Table(1)),
            Path::new("/data/index/00000000000000000001.sidx")
        );
        assert_eq!(d.manifest(), Path::new("/data/index/MANIFEST"));
    }
}
