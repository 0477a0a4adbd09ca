//! The state machine over the engine, across a crash between the engine's
//! sync and the record of what was applied (`sm.meta`): the entries past
//! the record are applied again after the restart, and the engine must end
//! up as it was, not as deciding them again would leave it. The case that
//! needs care: an append refused for its expected version, followed in the
//! same batch by one that makes the stream reach that version; decided
//! again, the first would be accepted, on this replica only.

use std::sync::Arc;

use logbook_consensus::sm::StateMachine;
use logbook_consensus::store_log::StoreLog;
use logbook_consensus::{Command, EventData, ExpectedVersion, TypeConfig};
use logbook_protocol::Direction;
use logbook_storage::fs::OsFs;
use logbook_storage::{Store, StoreConfig};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;

type C = TypeConfig;
type Entry = openraft::alias::EntryOf<C>;
type LogId = openraft::alias::LogIdOf<C>;

fn log_id(index: u64) -> LogId {
    LogId::new(
        openraft::impls::leader_id_adv::LeaderId {
            term: 1,
            node_id: 1,
        },
        index,
    )
}

fn append(index: u64, expected: ExpectedVersion, id: u8) -> Entry {
    Entry::new_normal(
        log_id(index),
        Command::Append {
            stream: "acct-1".into(),
            expected,
            events: vec![EventData {
                id: [id; 16],
                event_type: "Deposited".into(),
                metadata: bytes::Bytes::new(),
                data: bytes::Bytes::from_static(b"{}"),
            }],
            timestamp_us: 1_700_000_000_000_000 + index as i64,
        },
    )
}

async fn apply(sm: &mut StateMachine<StoreLog>, entries: Vec<Entry>) {
    let items: Vec<Result<_, std::io::Error>> =
        entries.into_iter().map(|e| Ok((e, None))).collect();
    sm.apply(futures::stream::iter(items)).await.unwrap();
    // Durable and recorded.
    sm.flush().await.unwrap();
}

fn log(store: &Store) -> Vec<(u64, u64, [u8; 16])> {
    store
        .read_all(None, Direction::Forward, 1000)
        .unwrap()
        .events
        .into_iter()
        .map(|e| (e.position.0, e.version.0, e.id.0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_applied_before_a_crash_are_not_decided_again() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, smdir) = (dir.path().join("engine"), dir.path().join("sm"));
    let vfs = Arc::new(OsFs);
    let open = || {
        let store = Store::open(StoreConfig::new(&engine)).unwrap();
        StateMachine::open(vfs.clone(), &smdir, StoreLog::new(store)).unwrap()
    };
    let mut sm = open();
    apply(&mut sm, vec![append(1, ExpectedVersion::NoStream, 1)]).await;
    let recorded = std::fs::read(smdir.join("sm.meta")).unwrap();
    // Entry 2 expects version 1 while the stream is at 0: refused. Entry 3
    // appends whatever the version: the stream reaches 1.
    let batch = || {
        vec![
            append(
                2,
                ExpectedVersion::Exact(logbook_protocol::StreamVersion(1)),
                2,
            ),
            append(3, ExpectedVersion::Any, 3),
        ]
    };
    apply(&mut sm, batch()).await;
    let before = log(sm.log().store());
    assert_eq!(before, vec![(0, 0, [1; 16]), (1, 1, [3; 16])]);
    // The crash: the engine holds the batch, `sm.meta` does not.
    sm.log().store().close().unwrap();
    drop(sm);
    std::fs::write(smdir.join("sm.meta"), &recorded).unwrap();

    let mut sm = open();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1)));
    // openraft applies the entries past the record again.
    apply(&mut sm, batch()).await;
    assert_eq!(
        log(sm.log().store()),
        before,
        "the re-applied batch changed the log"
    );
    // And the node goes on as any other: a new entry is decided normally.
    apply(
        &mut sm,
        vec![append(
            4,
            ExpectedVersion::Exact(logbook_protocol::StreamVersion(1)),
            4,
        )],
    )
    .await;
    assert_eq!(log(sm.log().store()).len(), 3);
    // Restarted after a clean record, nothing is replayed.
    sm.log().store().close().unwrap();
    drop(sm);
    let mut sm = open();
    apply(&mut sm, vec![append(5, ExpectedVersion::Any, 5)]).await;
    assert_eq!(log(sm.log().store()).len(), 4);
}
