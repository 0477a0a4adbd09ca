//! The disk's own limits, measured with plain file I/O on a given directory
//! (which must be on the file system the store uses): what the engine could
//! reach if it did nothing but write and sync.
//!
//! - [`OverwriteSyncer`]: `pwrite` 4 KiB into a file that was zero-filled and
//!   synced beforehand, then `fdatasync`. This is the engine's pattern: it
//!   extends active segments with zeros ahead of the writer, so a group
//!   commit's sync overwrites allocated blocks and commits no new file size.
//! - [`AppendSyncer`]: `pwrite` 4 KiB at the end of a growing file, then
//!   `fdatasync` (which must also commit the new size and allocation).
//! - [`SeqWriter`]: sequential 1 MiB `pwrite`s with an `fdatasync` every
//!   64 MiB: the write bandwidth a large-batch workload is bounded by.
//!
//! `File::sync_data` is `fdatasync(2)` on Linux.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::latency::{Recorder, Summary};

/// Bytes per small synced write (one page).
pub const SMALL_WRITE: usize = 4096;
/// Bytes per sequential write.
pub const SEQ_CHUNK: usize = 1 << 20;
/// Bytes written between syncs in the sequential test.
pub const SEQ_SYNC_EVERY: u64 = 64 << 20;

/// A page of non-zero bytes to write (so no layer can mistake it for a hole).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 + 1).collect()
}

fn create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Creates `path` holding `len` zero bytes, written (not sparse, not
/// `fallocate`d: written blocks, as the engine's preallocation leaves them)
/// and synced with `fsync`.
pub fn zero_filled_file(path: &Path, len: u64) -> io::Result<File> {
    let f = create(path)?;
    let zeros = vec![0u8; SEQ_CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(SEQ_CHUNK as u64) as usize;
        f.write_all_at(zeros.get(..n).unwrap_or_default(), at)?;
        at += n as u64;
    }
    f.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(f)
}

/// The timings of one write-and-sync step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// `pwrite` plus `fdatasync`.
    pub total: Duration,
    /// The `fdatasync` alone.
    pub sync: Duration,
}

/// 4 KiB `pwrite` + `fdatasync` over a zero-filled, synced file, cycling
/// through it page by page.
#[derive(Debug)]
pub struct OverwriteSyncer {
    file: File,
    len: u64,
    at: u64,
    page: Vec<u8>,
}

impl OverwriteSyncer {
    /// Creates `path`, `len` bytes of synced zeros (16 MiB is plenty: the
    /// pages are overwritten in a cycle).
    pub fn create(path: &Path, len: u64) -> io::Result<OverwriteSyncer> {
        let len = len.max(SMALL_WRITE as u64) / SMALL_WRITE as u64 * SMALL_WRITE as u64;
        Ok(OverwriteSyncer {
            file: zero_filled_file(path, len)?,
            len,
            at: 0,
            page: pattern(SMALL_WRITE),
        })
    }

    /// Overwrites the next page and syncs.
    pub fn step(&mut self) -> io::Result<Step> {
        let t = Instant::now();
        self.file.write_all_at(&self.page, self.at)?;
        let s = Instant::now();
        self.file.sync_data()?;
        let sync = s.elapsed();
        let total = t.elapsed();
        self.at = (self.at + SMALL_WRITE as u64) % self.len;
        Ok(Step { total, sync })
    }
}

/// 4 KiB `pwrite` at the end of a growing file + `fdatasync`. The file is
/// truncated to empty (outside the timed part) when it reaches `max_len`.
#[derive(Debug)]
pub struct AppendSyncer {
    file: File,
    max_len: u64,
    at: u64,
    page: Vec<u8>,
}

impl AppendSyncer {
    /// Creates `path`, empty and synced.
    pub fn create(path: &Path, max_len: u64) -> io::Result<AppendSyncer> {
        let file = create(path)?;
        file.sync_all()?;
        Ok(AppendSyncer {
            file,
            max_len: max_len.max(SMALL_WRITE as u64),
            at: 0,
            page: pattern(SMALL_WRITE),
        })
    }

    /// Appends one page and syncs.
    pub fn step(&mut self) -> io::Result<Step> {
        if self.at >= self.max_len {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.at = 0;
        }
        let t = Instant::now();
        self.file.write_all_at(&self.page, self.at)?;
        let s = Instant::now();
        self.file.sync_data()?;
        let sync = s.elapsed();
        let total = t.elapsed();
        self.at += SMALL_WRITE as u64;
        Ok(Step { total, sync })
    }
}

/// Sequential writes of [`SEQ_CHUNK`] bytes with an `fdatasync` every
/// [`SEQ_SYNC_EVERY`] bytes and at the end of each run.
#[derive(Debug)]
pub struct SeqWriter {
    file: File,
    path: PathBuf,
    chunk: Vec<u8>,
}

impl SeqWriter {
    /// Creates `path`, empty.
    pub fn create(path: &Path) -> io::Result<SeqWriter> {
        Ok(SeqWriter {
            file: create(path)?,
            path: path.to_path_buf(),
            chunk: pattern(SEQ_CHUNK),
        })
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Empties the file (untimed), then writes `bytes` (rounded up to whole
    /// chunks) from offset 0 and syncs; returns the time of the writes and
    /// syncs.
    pub fn run(&mut self, bytes: u64) -> io::Result<Duration> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        let t = Instant::now();
        let mut at = 0u64;
        let mut unsynced = 0u64;
        while at < bytes {
            self.file.write_all_at(&self.chunk, at)?;
            at += SEQ_CHUNK as u64;
            unsynced += SEQ_CHUNK as u64;
            if unsynced >= SEQ_SYNC_EVERY {
                self.file.sync_data()?;
                unsynced = 0;
            }
        }
        if unsynced > 0 {
            self.file.sync_data()?;
        }
        Ok(t.elapsed())
    }
}

/// Measures `samples` overwrite `fdatasync`s in `dir` (a quick stand-alone
/// version of the bench's `disk/fdatasync_4k_overwrite`).
pub fn measure_overwrite_fsync(dir: &Path, samples: usize) -> io::Result<Summary> {
    let path = dir.join("fsync-probe.dat");
    let mut s = OverwriteSyncer::create(&path, 16 << 20)?;
    let mut rec = Recorder::new();
    for _ in 0..samples {
        rec.record(s.step()?.sync);
    }
    drop(s);
    std::fs::remove_file(&path)?;
    Ok(rec.summary())
}

/// Measures sequential write bandwidth in `dir` over `bytes`, in bytes per
/// second.
pub fn measure_seq_write(dir: &Path, bytes: u64) -> io::Result<f64> {
    let path = dir.join("seq-probe.dat");
    let mut w = SeqWriter::create(&path)?;
    let d = w.run(bytes)?;
    drop(w);
    std::fs::remove_file(&path)?;
    Ok(bytes.div_ceil(SEQ_CHUNK as u64) as f64 * SEQ_CHUNK as f64 / d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncers_write_where_they_should() {
        let dir = crate::bench_dir("disk-unit").expect("tempdir");
        let mut o = OverwriteSyncer::create(&dir.path().join("o"), 3 * 4096).expect("create");
        for _ in 0..4 {
            let st = o.step().expect("step");
            assert!(st.total >= st.sync);
        }
        // Cycled: the file keeps its size.
        assert_eq!(
            std::fs::metadata(dir.path().join("o")).expect("stat").len(),
            3 * 4096
        );

        let mut a = AppendSyncer::create(&dir.path().join("a"), 2 * 4096).expect("create");
        for _ in 0..3 {
            a.step().expect("step");
        }
        // Wrapped after two pages: one page now.
        assert_eq!(
            std::fs::metadata(dir.path().join("a")).expect("stat").len(),
            4096
        );

        let mut w = SeqWriter::create(&dir.path().join("s")).expect("create");
        w.run(3 << 20).expect("run");
        assert_eq!(std::fs::metadata(w.path()).expect("stat").len(), 3 << 20);
        assert!(measure_overwrite_fsync(dir.path(), 3).expect("probe").count == 3);
        assert!(measure_seq_write(dir.path(), 2 << 20).expect("probe") > 0.0);
    }
}
