//! openraft's storage conformance suite against Logbook's Raft log
//! ([`Wal`]) and state machine ([`StateMachine`]), on the real file system
//! in temporary directories.

use std::io;
use std::sync::Arc;

use logbook_consensus::sm::{EventLog, StateMachine};
use logbook_consensus::wal::Wal;
use logbook_consensus::{Command, Outcome, TypeConfig};
use logbook_storage::fs::OsFs;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

/// An event log in memory: enough for the suite, which applies blank and
/// membership entries and moves snapshots.
#[derive(Default)]
struct MemLog {
    applied: Vec<(u64, Command)>,
}

impl EventLog for MemLog {
    fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        self.applied.push((index, command.clone()));
        Outcome::Appended {
            first_position: self.applied.len() as u64 - 1,
            first_version: 0,
        }
    }
    fn sync(&mut self) -> io::Result<()> {
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

struct Builder;

impl StoreBuilder<TypeConfig, Wal, StateMachine<MemLog>, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, Wal, StateMachine<MemLog>), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let vfs = Arc::new(OsFs);
        let wal = Wal::open(vfs.clone(), &dir.path().join("raft")).unwrap();
        let sm = StateMachine::open(vfs, &dir.path().join("sm"), MemLog::default()).unwrap();
        Ok((dir, wal, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_conformance_suite() {
    Suite::test_all(Builder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_transfer_between_state_machines() {
    Suite::transfer_snapshot(&Builder).await.unwrap();
}
