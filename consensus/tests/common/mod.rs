//! Test support: an event log kept in a file, for state machines in tests,
//! and a seeded generator.
#![allow(dead_code)] // each test binary uses part of it

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use logbook_consensus::sm::{EventLog, Pending, ready};
use logbook_consensus::{Command, Outcome};
use logbook_storage::fs::{OpenMode, Vfs};

/// The commands applied, in order, by Raft index; a command's position is
/// its place in the list. `sync` rewrites the file (renamed over the old),
/// through the node's file system (so power cuts reach it too).
pub struct FileLog {
    file: Option<(Arc<dyn Vfs>, PathBuf)>,
    pub applied: Vec<(u64, Command)>,
}

impl FileLog {
    /// In memory only.
    pub fn memory() -> FileLog {
        FileLog {
            file: None,
            applied: Vec::new(),
        }
    }

    /// Kept in `path` on `vfs` (read back if it exists).
    pub fn open(vfs: Arc<dyn Vfs>, path: PathBuf) -> FileLog {
        let applied = FileLog::read(vfs.as_ref(), &path);
        FileLog {
            file: Some((vfs, path)),
            applied,
        }
    }

    /// What a file holds.
    pub fn read(vfs: &dyn Vfs, path: &Path) -> Vec<(u64, Command)> {
        if !vfs.exists(path) {
            return Vec::new();
        }
        let f = vfs.open(path, OpenMode::Read).unwrap();
        let mut bytes = vec![0; f.len().unwrap() as usize];
        f.read_exact_at(&mut bytes, 0).unwrap();
        rmp_serde::from_slice(&bytes).unwrap()
    }
}

fn appended(at: u64) -> Outcome {
    Outcome::Appended {
        first_position: at,
        first_version: 0,
        last_position: at,
        last_version: 0,
    }
}

impl EventLog for FileLog {
    async fn submit(&mut self, index: u64, _at: i64, command: &Command) -> io::Result<Pending> {
        // Applied before a crash: the first outcome, nothing written again.
        let at = match self.applied.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.applied.push((index, command.clone()));
                self.applied.len() - 1
            }
        } as u64;
        Ok(ready(appended(at)))
    }

    async fn reapply(
        &mut self,
        index: u64,
        _at: i64,
        _command: &Command,
    ) -> io::Result<Option<Outcome>> {
        Ok(self
            .applied
            .iter()
            .position(|(i, _)| *i == index)
            .map(|at| appended(at as u64)))
    }

    fn head(&self) -> u64 {
        self.applied.len() as u64
    }

    fn opened_at(&self) -> i64 {
        // It keeps no times: the replay's end is not checked.
        i64::MAX
    }

    fn sync(&mut self) -> io::Result<()> {
        let Some((vfs, path)) = &self.file else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        if vfs.exists(&tmp) {
            vfs.remove_file(&tmp)?;
        }
        let f = vfs.open(&tmp, OpenMode::CreateNew)?;
        f.write_all_at(&rmp_serde::to_vec(&self.applied).unwrap(), 0)?;
        f.sync_data()?;
        vfs.rename(&tmp, path)?;
        vfs.sync_dir(path.parent().unwrap())
    }

    fn snapshot(&mut self, _head: u64) -> io::Result<Vec<u8>> {
        Ok(rmp_serde::to_vec(&self.applied).unwrap())
    }

    fn install(&mut self, state: &[u8]) -> io::Result<()> {
        self.applied = rmp_serde::from_slice(state).unwrap();
        Ok(())
    }
}

/// A tiny deterministic generator (xorshift), so a failing seed replays.
pub struct Rng(pub u64);

impl Rng {
    /// The next number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
