//! openraft's storage conformance suite against Logbook's Raft log
//! ([`Wal`]) and state machine ([`StateMachine`]), on the real file system
//! in temporary directories.

mod common;

use std::sync::Arc;

use common::FileLog as MemLog;
use logbook_consensus::TypeConfig;
use logbook_consensus::sm::StateMachine;
use logbook_consensus::wal::Wal;
use logbook_storage::fs::OsFs;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

struct Builder;

impl StoreBuilder<TypeConfig, Wal, StateMachine<MemLog>, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, Wal, StateMachine<MemLog>), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().unwrap();
        let vfs = Arc::new(OsFs);
        let wal = Wal::open(vfs.clone(), &dir.path().join("raft")).unwrap();
        let sm = StateMachine::open(vfs, &dir.path().join("sm"), MemLog::memory()).unwrap();
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
