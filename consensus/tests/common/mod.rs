//! Test support: an event log kept in a file, for state machines in tests.
#![allow(dead_code)] // each test binary uses part of it

use std::io;
use std::path::PathBuf;

use logbook_consensus::sm::EventLog;
use logbook_consensus::{Command, Outcome};

/// The commands applied, in order, by Raft index; a command's position is
/// its place in the list. `sync` rewrites the file (renamed over the old).
pub struct FileLog {
    path: Option<PathBuf>,
    pub applied: Vec<(u64, Command)>,
}

impl FileLog {
    /// In memory only.
    pub fn memory() -> FileLog {
        FileLog {
            path: None,
            applied: Vec::new(),
        }
    }

    /// Kept in `path` (read back if it exists).
    pub fn open(path: PathBuf) -> FileLog {
        let applied = std::fs::read(&path)
            .map(|b| rmp_serde::from_slice(&b).unwrap())
            .unwrap_or_default();
        FileLog {
            path: Some(path),
            applied,
        }
    }

    /// What a file holds.
    pub fn read(path: &std::path::Path) -> Vec<(u64, Command)> {
        FileLog::open(path.to_owned()).applied
    }
}

impl EventLog for FileLog {
    fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        // Applied before a crash: the first outcome, nothing written again.
        let at = match self.applied.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.applied.push((index, command.clone()));
                self.applied.len() - 1
            }
        };
        Outcome::Appended {
            first_position: at as u64,
            first_version: 0,
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let f = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut &f, &rmp_serde::to_vec(&self.applied).unwrap())?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    fn snapshot(&mut self) -> io::Result<Vec<u8>> {
        Ok(rmp_serde::to_vec(&self.applied).unwrap())
    }

    fn install(&mut self, state: &[u8]) -> io::Result<()> {
        self.applied = rmp_serde::from_slice(state).unwrap();
        Ok(())
    }
}
