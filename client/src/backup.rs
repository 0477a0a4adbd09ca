//! Online backup through the protocol: [`Client::backup`].
//!
//! The server pins a consistent image (`BackupBegin`: a position, the files
//! that hold exactly the events below it, and the index MANIFEST); the
//! client copies each file with pipelined `BackupRead`s, makes every file
//! durable, and writes the MANIFEST last (temporary file, fsync, rename,
//! directory fsync), so that the directory opens as a store with the
//! image's events.
//!
//! The directory says what state it is in. `BACKUP-INCOMPLETE` is written
//! (and made durable) before anything is changed and removed last: the
//! daemon refuses to open a directory that has it. `BACKUP` records, after
//! each completed run, the position and every file with its length; all of
//! those bytes were fsynced before it was written.
//!
//! A second backup into the same directory copies only what is new: a
//! file's bytes are trusted up to the length `BACKUP` records for it (never
//! bytes an interrupted run left unsynced) if its first and last bytes
//! there match the server's (index tables never change; the active segment
//! only grows, so its copy is extended from where it ended; a segment a
//! scavenge rewrote keeps its name but not its header, whose random nonce
//! is new, so it is copied again).
//! Anything else is copied again, and files the image no longer lists
//! (index tables merged away) are removed after the new MANIFEST is in
//! place. A directory that is neither empty nor a backup is refused, so a
//! mistyped `--to` cannot overwrite another store.
//!
//! The directory's `LOCK` is held throughout, so a backup never writes into
//! a directory a running daemon uses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use logbook_protocol::layout::{self, StoreFile};
use logbook_protocol::msg::MAX_BACKUP_READ;
use logbook_protocol::{
    BackupBegin, BackupBeginOk, BackupEnd, BackupFile, BackupRead, LogPosition, Request, Response,
};

use crate::client::Client;
use crate::conn::Connection;
use crate::error::{Error, Result};

/// How far a backup has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackupProgress {
    /// Bytes of the image done: copied, or found already present.
    pub copied_bytes: u64,
    /// Bytes of the whole image.
    pub total_bytes: u64,
}

/// What a backup did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupReport {
    /// Events in the backup: every position below this one.
    pub position: LogPosition,
    /// Files in the image.
    pub files: usize,
    /// Files copied (wholly or in part) by this run.
    pub files_copied: usize,
    /// Bytes transferred by this run.
    pub bytes_copied: u64,
    /// Bytes of the whole image.
    pub bytes_total: u64,
}

/// Most bytes asked for per read.
const CHUNK: u32 = MAX_BACKUP_READ;
/// Marks a directory whose backup has not completed (the daemon refuses
/// it).
const INCOMPLETE: &str = layout::BACKUP_INCOMPLETE;
/// What the last completed backup wrote.
const RECORD: &str = layout::BACKUP_RECORD;
/// First line of `BACKUP`.
const RECORD_MAGIC: &str = "logbook-backup 1";
/// Reads in flight at once per file.
const READ_AHEAD: usize = 4;
/// A file being copied is synced after each this many bytes.
const SYNC_EVERY: u64 = 64 << 20;
/// Bytes at the start of a file compared before a resume (a segment's
/// header, with its random nonce).
const HEAD_CHECK: u64 = 32;
/// Bytes compared at the end of a file already present.
const TAIL_CHECK: u64 = 4096;

fn local<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::LocalIo {
        context,
        path: path.to_path_buf(),
        source,
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("backup file task failed: {e}"))))
}

/// Checks a file name from the server: `log/<digits>.seg` or
/// `index/<digits>.sidx` (`layout::StoreFile`), nothing that could leave
/// the directory. Returns the subdirectory and the file name.
fn checked_name(name: &str) -> Result<(&'static str, String)> {
    let file = StoreFile::parse_wire_name(name).ok_or_else(|| {
        Error::Protocol(logbook_protocol::Error::Malformed {
            opcode: logbook_protocol::Opcode::BackupBegin,
            reason: format!("backup image names an unexpected file {name:?}"),
        })
    })?;
    Ok((file.dir(), file.file_name()))
}

impl Client {
    /// Copies a consistent image of the store into `dir` while the server
    /// goes on serving, and returns what was copied. `dir` is then a data
    /// directory that `logbookd --data-dir DIR` opens, holding every event
    /// below [`BackupReport::position`] and none after it. Backing up into
    /// the same directory again copies only what is new. `progress` is
    /// called after each chunk.
    ///
    /// All requests of a backup travel on one connection; if it breaks the
    /// backup fails, and running it again resumes cheaply.
    ///
    /// ```no_run
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// let report = client.backup("/backups/logbook", |p| {
    ///     eprintln!("{} / {} bytes", p.copied_bytes, p.total_bytes)
    /// }).await?;
    /// println!("backed up {} events", report.position);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn backup(
        &self,
        dir: impl AsRef<Path>,
        mut progress: impl FnMut(&BackupProgress) + Send,
    ) -> Result<BackupReport> {
        let dir = dir.as_ref().to_path_buf();
        let (lock, record) = {
            let dir = dir.clone();
            blocking(move || prepare_dir(&dir)).await?
        };
        let conn = self.connection().await?;
        let begin = Self::exchange(&conn, &Request::BackupBegin(BackupBegin), &|r| match r {
            Response::BackupBeginOk(ok) => Some(ok),
            _ => None,
        })
        .await?;
        let result = copy_image(&conn, &dir, &begin, &record, &mut progress).await;
        // Release the server's pins whatever happened (the connection's
        // end would too).
        let end = Request::BackupEnd(BackupEnd {
            backup: begin.backup,
        });
        let _ = Self::exchange(&conn, &end, &|r| {
            matches!(r, Response::BackupEndOk).then_some(())
        })
        .await;
        drop(lock);
        result
    }
}

/// Creates `dir` and takes its `LOCK`, as the daemon does; refuses a
/// directory that is neither empty nor a backup; returns the lock and what
/// the last completed backup recorded (file name -> durable length).
fn prepare_dir(dir: &Path) -> Result<(File, HashMap<String, u64>)> {
    for sub in [layout::LOG_DIR, layout::INDEX_DIR] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(local("create directory", &d))?;
    }
    sync_dir(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    let path = dir.join(layout::LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(local("open", &path))?;
    file.try_lock()
        .map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the directory is in use (a running daemon or another backup)",
            ),
            std::fs::TryLockError::Error(e) => e,
        })
        .map_err(local("lock", &path))?;
    let record = read_record(dir)?;
    let is_backup = record.is_some() || dir.join(INCOMPLETE).exists();
    if !is_backup {
        for sub in [layout::LOG_DIR, layout::INDEX_DIR] {
            let d = dir.join(sub);
            if std::fs::read_dir(&d)
                .map_err(local("list", &d))?
                .next()
                .is_some()
            {
                return Err(local("back up into", dir)(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the directory holds data but is not a Logbook backup; choose an empty directory",
                )));
            }
        }
    }
    Ok((file, record.unwrap_or_default()))
}

/// Marks the directory as an unfinished backup, once, before the first
/// change: from then on it is not a consistent store until `finish`. A
/// run that fails before changing anything leaves a previous backup usable.
async fn mark_unfinished(dir: &Path, marked: &mut bool) -> Result<()> {
    if !*marked {
        let dir = dir.to_path_buf();
        blocking(move || {
            write_durably(
                &dir,
                INCOMPLETE,
                b"a backup is being written; run it again to complete it\n",
            )
        })
        .await?;
        *marked = true;
    }
    Ok(())
}

/// Reads `BACKUP`: file name -> length. `None` if there is none.
fn read_record(dir: &Path) -> Result<Option<HashMap<String, u64>>> {
    let path = dir.join(RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(local("read", &path)(e)),
    };
    let mut lines = text.lines();
    if lines.next() != Some(RECORD_MAGIC) {
        return Err(local("read", &path)(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a Logbook backup record",
        )));
    }
    // Lines: "position N", then "<len> <name>"; anything unparsable is
    // simply not trusted (its file is copied again).
    let files = lines
        .filter_map(|l| {
            let (len, name) = l.split_once(' ')?;
            Some((name.to_owned(), len.parse().ok()?))
        })
        .collect();
    Ok(Some(files))
}

/// Writes `dir/name` atomically and durably (temporary file, fsync,
/// rename, directory fsync).
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    {
        let mut f = File::create(&tmp).map_err(local("create", &tmp))?;
        f.write_all(bytes).map_err(local("write", &tmp))?;
        f.sync_all().map_err(local("fsync", &tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(local("rename", &path))?;
    sync_dir(dir)
}

async fn read_range(
    conn: &Connection,
    backup: u32,
    file: u32,
    offset: u64,
    len: u32,
) -> Result<Bytes> {
    let req = Request::BackupRead(BackupRead {
        backup,
        file,
        offset,
        len,
    });
    Client::exchange(conn, &req, &read_bytes).await
}

/// Where copying a file starts: the length the last completed backup
/// recorded for it (bytes known durable), if the server's last bytes up to
/// there match ours; else 0. Also returns the local file's length.
async fn resume_point(
    conn: &Connection,
    begin: &BackupBeginOk,
    index: u32,
    file: &BackupFile,
    path: &Path,
    recorded: u64,
) -> Result<(u64, u64)> {
    let local_len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(_) => return Ok((0, 0)),
    };
    let have = local_len.min(recorded);
    if have == 0 || have > file.len {
        return Ok((0, local_len));
    }
    // The tail before `have` must match, and so must the head: a segment
    // a scavenge rewrote keeps its name and may have grown past `have`
    // again, but its header (a new random nonce) differs.
    let from = have - have.min(TAIL_CHECK);
    let head = have.min(HEAD_CHECK);
    for (at, len) in [(from, have - from), (0, head)] {
        let theirs = read_range(conn, begin.backup, index, at, len as u32).await?;
        let ours = {
            let path = path.to_path_buf();
            blocking(move || {
                let mut f = File::open(&path).map_err(local("open", &path))?;
                f.seek(SeekFrom::Start(at)).map_err(local("seek", &path))?;
                let mut b = Vec::new();
                f.take(len)
                    .read_to_end(&mut b)
                    .map_err(local("read", &path))?;
                Ok(b)
            })
            .await?
        };
        if theirs.as_ref() != ours.as_slice() {
            return Ok((0, local_len));
        }
    }
    Ok((have, local_len))
}

fn malformed(reason: String) -> Error {
    Error::Protocol(logbook_protocol::Error::Malformed {
        opcode: logbook_protocol::Opcode::BackupRead,
        reason,
    })
}

/// Takes the bytes out of a `BackupRead` reply.
fn read_bytes(r: Response) -> Option<Bytes> {
    match r {
        Response::BackupReadOk(data) => Some(data),
        _ => None,
    }
}

async fn copy_image(
    conn: &Connection,
    dir: &Path,
    begin: &BackupBeginOk,
    record: &HashMap<String, u64>,
    progress: &mut (impl FnMut(&BackupProgress) + Send),
) -> Result<BackupReport> {
    let mut names = HashSet::new();
    let mut total = 0u64;
    for f in &begin.files {
        checked_name(&f.name)?;
        if !names.insert(f.name.as_str()) {
            return Err(malformed(format!("backup image lists {} twice", f.name)));
        }
        total = total
            .checked_add(f.len)
            .ok_or_else(|| malformed("backup image sizes overflow".into()))?;
    }
    let chunk = CHUNK.min(begin.max_read);
    if chunk == 0 {
        return Err(malformed("the server allows reads of 0 bytes".into()));
    }
    let mut done = 0u64;
    let mut report = BackupReport {
        position: begin.position,
        files: begin.files.len(),
        files_copied: 0,
        bytes_copied: 0,
        bytes_total: total,
    };
    let mut keep: HashSet<PathBuf> = HashSet::new();
    let mut marked = false;
    progress(&BackupProgress {
        copied_bytes: 0,
        total_bytes: total,
    });
    for (i, f) in begin.files.iter().enumerate() {
        let (sub, name) = checked_name(&f.name)?;
        let path = dir.join(sub).join(name);
        keep.insert(path.clone());
        let index = i as u32;
        let recorded = record.get(&f.name).copied().unwrap_or(0);
        let (start, local_len) = resume_point(conn, begin, index, f, &path, recorded).await?;
        done += start;
        if start == f.len && local_len == f.len {
            // Whole, and durable since the run that recorded it.
            progress(&BackupProgress {
                copied_bytes: done,
                total_bytes: total,
            });
            continue;
        }
        report.files_copied += 1;
        mark_unfinished(dir, &mut marked).await?;
        let mut out = {
            let path = path.clone();
            blocking(move || {
                let mut out = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(local("create", &path))?;
                out.set_len(start).map_err(local("truncate", &path))?;
                out.seek(SeekFrom::Start(start))
                    .map_err(local("seek", &path))?;
                Ok(out)
            })
            .await?
        };
        // Keep READ_AHEAD reads in flight; write them in order. A short
        // reply (a server with smaller reads than it said) is written and
        // the reads after it are asked again from where it ended.
        let mut written = start;
        let mut next = start;
        let mut in_flight = VecDeque::new();
        while written < f.len {
            while in_flight.len() < READ_AHEAD && next < f.len {
                let len = (f.len - next).min(u64::from(chunk)) as u32;
                let req = Request::BackupRead(BackupRead {
                    backup: begin.backup,
                    file: index,
                    offset: next,
                    len,
                });
                in_flight.push_back((conn.send(&req)?, req, u64::from(len)));
                next += u64::from(len);
            }
            let Some((reply, req, want)) = in_flight.pop_front() else {
                break;
            };
            let data = Client::decode_reply(conn, &reply.await?, &req, &read_bytes)?;
            let got = data.len() as u64;
            if got == 0 || got > want {
                return Err(malformed(format!(
                    "asked for {want} bytes of {} at {written}, got {got}",
                    f.name
                )));
            }
            let path = path.clone();
            // Flush every SYNC_EVERY bytes rather than leaving a whole
            // segment dirty: the kernel throttles writers that pile up
            // dirty pages, and the final fsync then has less to do.
            let sync = (written - start) / SYNC_EVERY != (written + got - start) / SYNC_EVERY;
            out = blocking(move || {
                out.write_all(&data).map_err(local("write", &path))?;
                if sync {
                    out.sync_data().map_err(local("fsync", &path))?;
                }
                Ok(out)
            })
            .await?;
            written += got;
            done += got;
            report.bytes_copied += got;
            if got < want {
                // Dropping the replies forgets them; ask again from here.
                in_flight.clear();
                next = written;
            }
            progress(&BackupProgress {
                copied_bytes: done,
                total_bytes: total,
            });
        }
        let path = path.clone();
        blocking(move || out.sync_all().map_err(local("fsync", &path))).await?;
    }
    // The files are durable: now the directories, the MANIFEST, the
    // record, and last the marker goes.
    mark_unfinished(dir, &mut marked).await?;
    let dir = dir.to_path_buf();
    let manifest = begin.manifest.clone();
    let mut text = format!("{RECORD_MAGIC}\nposition {}\n", begin.position.0);
    for f in &begin.files {
        text.push_str(&format!("{} {}\n", f.len, f.name));
    }
    blocking(move || finish(&dir, &manifest, &keep, &text)).await?;
    Ok(report)
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(local("fsync directory", path))
}

/// Syncs the directories, installs the MANIFEST atomically, removes files
/// the image does not list, writes the record and removes the marker.
fn finish(dir: &Path, manifest: &[u8], keep: &HashSet<PathBuf>, record: &str) -> Result<()> {
    let (log, index) = (dir.join(layout::LOG_DIR), dir.join(layout::INDEX_DIR));
    sync_dir(&log)?;
    write_durably(&index, layout::MANIFEST, manifest)?;
    let manifest_path = index.join(layout::MANIFEST);
    for d in [&log, &index] {
        for entry in std::fs::read_dir(d).map_err(local("list", d))? {
            let p = entry.map_err(local("list", d))?.path();
            if p != manifest_path && !keep.contains(&p) {
                std::fs::remove_file(&p).map_err(local("remove", &p))?;
            }
        }
        sync_dir(d)?;
    }
    write_durably(dir, RECORD, record.as_bytes())?;
    let marker = dir.join(INCOMPLETE);
    std::fs::remove_file(&marker).map_err(local("remove", &marker))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_segment_and_table_names_are_accepted() {
        assert_eq!(
            checked_name("log/00000000000000000000.seg").unwrap(),
            ("log", "00000000000000000000.seg".to_string())
        );
        assert_eq!(
            checked_name("index/00000000000000000007.sidx").unwrap(),
            ("index", "00000000000000000007.sidx".to_string())
        );
        for bad in [
            "",
            "LOCK",
            "log/../x.seg",
            "/etc/passwd",
            "log/00000000000000000000.sidx",
            "index/00000000000000000000.seg",
            "log/.seg",
            "log/a/0.seg",
            "other/0.seg",
            "log/0.seg/",
            "log/00000000000000000000000000000000000.seg",
            "log/0.seg",
            "index/7.sidx",
        ] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
    }
}
