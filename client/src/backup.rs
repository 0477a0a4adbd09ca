//! Online backup through the protocol: [`Client::backup`].
//!
//! The server pins a consistent image (`BackupBegin`: a position, the files
//! that hold exactly the events below it, and the index MANIFEST); the
//! client copies each file with pipelined `BackupRead`s, makes every file
//! durable, and writes the MANIFEST last (temporary file, fsync, rename,
//! directory fsync), so that the directory opens as a store with the
//! image's events.
//!
//! A second backup into the same directory copies only what is new: a
//! file already there is kept if its last bytes match the server's (sealed
//! segments and index tables never change; the active segment only grows,
//! so its copy is extended from where it ends). Anything else is copied
//! again, and files the image no longer lists (index tables merged away)
//! are removed after the new MANIFEST is in place.
//!
//! The directory's `LOCK` is held throughout, so a backup never writes into
//! a directory a running daemon uses, and a daemon cannot open a backup
//! that is half written.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
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

/// Bytes asked for per read.
const CHUNK: u32 = MAX_BACKUP_READ;
/// Reads in flight at once per file.
const READ_AHEAD: usize = 4;
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
/// `index/<digits>.sidx`, nothing that could leave the directory.
fn checked_name(name: &str) -> Result<(&'static str, &str)> {
    let bad = || {
        Error::Protocol(logbook_protocol::Error::Malformed {
            opcode: logbook_protocol::Opcode::BackupBegin,
            reason: format!("backup image names an unexpected file {name:?}"),
        })
    };
    let (dir, file) = name.split_once('/').ok_or_else(bad)?;
    let (dir, ext) = match dir {
        "log" => ("log", ".seg"),
        "index" => ("index", ".sidx"),
        _ => return Err(bad()),
    };
    let stem = file.strip_suffix(ext).ok_or_else(bad)?;
    if stem.is_empty() || stem.len() > 32 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((dir, file))
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
        let lock = {
            let dir = dir.clone();
            blocking(move || lock_dir(&dir)).await?
        };
        let conn = self.connection().await?;
        let begin = Self::exchange(&conn, &Request::BackupBegin(BackupBegin), &|r| match r {
            Response::BackupBeginOk(ok) => Some(ok),
            _ => None,
        })
        .await?;
        let result = copy_image(&conn, &dir, &begin, &mut progress).await;
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

/// Creates `dir` and takes its `LOCK`, as the daemon does.
fn lock_dir(dir: &Path) -> Result<File> {
    for sub in ["log", "index"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(local("create directory", &d))?;
    }
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(local("open", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::LocalIo {
            context: "lock",
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the directory is in use (a running daemon or another backup)",
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::LocalIo {
            context: "lock",
            path,
            source: e,
        }),
    }
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
    Client::exchange(conn, &req, &|r| match r {
        Response::BackupReadOk(data) => Some(data),
        _ => None,
    })
    .await
}

/// Where copying a file starts: its current length if the local copy is a
/// prefix of the server's (its last bytes match), else 0.
async fn resume_point(
    conn: &Connection,
    begin: &BackupBeginOk,
    index: u32,
    file: &BackupFile,
    path: &Path,
) -> Result<u64> {
    let have = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(_) => return Ok(0),
    };
    if have == 0 || have > file.len {
        return Ok(0);
    }
    let from = have - have.min(TAIL_CHECK);
    let theirs = read_range(conn, begin.backup, index, from, (have - from) as u32).await?;
    let ours = {
        let path = path.to_path_buf();
        blocking(move || {
            let mut f = File::open(&path).map_err(local("open", &path))?;
            f.seek(SeekFrom::Start(from))
                .map_err(local("seek", &path))?;
            let mut b = Vec::new();
            f.take(have - from)
                .read_to_end(&mut b)
                .map_err(local("read", &path))?;
            Ok(b)
        })
        .await?
    };
    Ok(if theirs.as_ref() == ours.as_slice() {
        have
    } else {
        0
    })
}

async fn copy_image(
    conn: &Connection,
    dir: &Path,
    begin: &BackupBeginOk,
    progress: &mut (impl FnMut(&BackupProgress) + Send),
) -> Result<BackupReport> {
    let total: u64 = begin.files.iter().map(|f| f.len).sum();
    let mut done = 0u64;
    let mut report = BackupReport {
        position: begin.position,
        files: begin.files.len(),
        files_copied: 0,
        bytes_copied: 0,
        bytes_total: total,
    };
    let mut keep: HashSet<PathBuf> = HashSet::new();
    progress(&BackupProgress {
        copied_bytes: 0,
        total_bytes: total,
    });
    for (i, f) in begin.files.iter().enumerate() {
        let (sub, name) = checked_name(&f.name)?;
        let path = dir.join(sub).join(name);
        keep.insert(path.clone());
        let index = i as u32;
        let start = resume_point(conn, begin, index, f, &path).await?;
        done += start;
        if start == f.len {
            progress(&BackupProgress {
                copied_bytes: done,
                total_bytes: total,
            });
            continue;
        }
        report.files_copied += 1;
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
        // Keep READ_AHEAD reads in flight; write them in order.
        let mut next = start;
        let mut in_flight = VecDeque::new();
        loop {
            while in_flight.len() < READ_AHEAD && next < f.len {
                let len = (f.len - next).min(u64::from(CHUNK)) as u32;
                let req = Request::BackupRead(BackupRead {
                    backup: begin.backup,
                    file: index,
                    offset: next,
                    len,
                });
                in_flight.push_back((conn.send(&req)?, u64::from(len)));
                next += u64::from(len);
            }
            let Some((reply, want)) = in_flight.pop_front() else {
                break;
            };
            let frame = reply.await?;
            let data = match logbook_protocol::ServerMessage::decode(&frame) {
                Ok(logbook_protocol::ServerMessage::Response(Response::BackupReadOk(d))) => d,
                Ok(logbook_protocol::ServerMessage::Error(e)) => {
                    return Err(Error::from_reply(
                        e,
                        &Request::BackupRead(BackupRead {
                            backup: begin.backup,
                            file: index,
                            offset: 0,
                            len: 0,
                        }),
                    ));
                }
                Ok(_) => {
                    return Err(Error::Protocol(logbook_protocol::Error::Malformed {
                        opcode: logbook_protocol::Opcode::BackupRead,
                        reason: "reply of the wrong type".into(),
                    }));
                }
                Err(e) => return Err(Error::Protocol(e)),
            };
            if data.len() as u64 != want {
                return Err(Error::Protocol(logbook_protocol::Error::Malformed {
                    opcode: logbook_protocol::Opcode::BackupRead,
                    reason: format!("asked for {want} bytes of {}, got {}", f.name, data.len()),
                }));
            }
            let path = path.clone();
            out = blocking(move || {
                out.write_all(&data).map_err(local("write", &path))?;
                Ok(out)
            })
            .await?;
            done += want;
            report.bytes_copied += want;
            progress(&BackupProgress {
                copied_bytes: done,
                total_bytes: total,
            });
        }
        let path = path.clone();
        blocking(move || out.sync_all().map_err(local("fsync", &path))).await?;
    }
    // The files are durable: now the directories, then the MANIFEST.
    let dir = dir.to_path_buf();
    let manifest = begin.manifest.clone();
    blocking(move || finish(&dir, &manifest, &keep)).await?;
    Ok(report)
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(local("fsync directory", path))
}

/// Syncs the directories, installs the MANIFEST atomically, and removes
/// files the image does not list.
fn finish(dir: &Path, manifest: &[u8], keep: &HashSet<PathBuf>) -> Result<()> {
    let (log, index) = (dir.join("log"), dir.join("index"));
    sync_dir(&log)?;
    sync_dir(&index)?;
    let tmp = index.join("MANIFEST.tmp");
    let path = index.join("MANIFEST");
    {
        let mut f = File::create(&tmp).map_err(local("create", &tmp))?;
        f.write_all(manifest).map_err(local("write", &tmp))?;
        f.sync_all().map_err(local("fsync", &tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(local("rename", &path))?;
    sync_dir(&index)?;
    for d in [&log, &index] {
        for entry in std::fs::read_dir(d).map_err(local("list", d))? {
            let p = entry.map_err(local("list", d))?.path();
            if p != path && !keep.contains(&p) {
                std::fs::remove_file(&p).map_err(local("remove", &p))?;
            }
        }
        sync_dir(d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_segment_and_table_names_are_accepted() {
        assert_eq!(
            checked_name("log/00000000000000000000.seg").unwrap(),
            ("log", "00000000000000000000.seg")
        );
        assert_eq!(
            checked_name("index/00000000000000000007.sidx").unwrap(),
            ("index", "00000000000000000007.sidx")
        );
        for bad in [
            "",
            "LOCK",
            "log/../x.seg",
            "/etc/passwd",
            "log/0.sidx",
            "index/0.seg",
            "log/.seg",
            "log/a/0.seg",
            "other/0.seg",
            "log/0.seg/",
            "log/00000000000000000000000000000000000.seg",
        ] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
    }
}
