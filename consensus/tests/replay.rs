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

/// Fetches a snapshot's records from a store, `chunk` bytes at a time;
/// the `crash_at`-th call tells the test to crash the node and never
/// returns.
struct FromStore {
    store: Store,
    chunk: usize,
    calls: std::sync::atomic::AtomicU64,
    crash_at: u64,
    crash: parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl logbook_consensus::catchup::Fetch for FromStore {
    fn fetch<'a>(
        &'a self,
        _id: u64,
        _member: &'a logbook_consensus::Member,
        from: u64,
        to: u64,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<logbook_consensus::Batch>>> {
        Box::pin(async move {
            let n = self
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n == self.crash_at {
                if let Some(tx) = self.crash.lock().take() {
                    let _ = tx.send(());
                }
                return futures::future::pending().await;
            }
            logbook_consensus::store_log::read_batches(&self.store, from, to, self.chunk)
        })
    }
}

/// Entry `index`: a membership of nodes 1 and 2 (what a snapshot's
/// installer fetches from).
fn membership(index: u64) -> Entry {
    Entry::new_membership(
        log_id(index),
        openraft::Membership::new_with_defaults(vec![[1, 2].into()], []),
    )
}

/// A snapshot of `sm`, as a leader would send it.
async fn snapshot_of(
    sm: &mut StateMachine<StoreLog>,
) -> openraft::alias::SnapshotOf<C, std::io::Cursor<Vec<u8>>> {
    use openraft::RaftSnapshotBuilder;
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

/// Every record of `store`, as written.
fn records(store: &Store) -> Vec<logbook_storage::LogBatch> {
    store.read_batches(0, u64::MAX, usize::MAX).unwrap()
}

/// A snapshot install on the engine: the follower fetches the records it
/// lacks from a member, a chunk at a time, and crashes in the middle (the
/// install abandoned, the engine not closed). Restarted, it holds a
/// prefix and is not yet at the snapshot; the snapshot sent again is
/// installed from where the engine stands. The follower then holds the
/// leader's records, applies the next entries as the leader does (refused
/// ones included), and does so again after a restart from its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_install_cut_by_a_crash_goes_on_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = Arc::new(OsFs);
    // The leader's state machine: a membership, then appends, some refused.
    let leader_store = Store::open(StoreConfig::new(dir.path().join("a"))).unwrap();
    let mut leader = StateMachine::open(
        vfs.clone(),
        &dir.path().join("a-sm"),
        StoreLog::new(leader_store.clone()),
    )
    .unwrap();
    let entries = |from: u64, to: u64| -> Vec<Entry> {
        (from..to)
            .map(|i| {
                if i == 1 {
                    membership(1)
                } else {
                    // Every fifth expects a version the stream is past.
                    let expected = if i % 5 == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Any
                    };
                    append(i, expected, (i % 250) as u8)
                }
            })
            .collect()
    };
    apply(&mut leader, entries(1, 200)).await;
    let snapshot = snapshot_of(&mut leader).await;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(199)));
    let want = records(&leader_store);

    let engine = dir.path().join("b");
    let smdir = dir.path().join("b-sm");
    let open = |crash_at: u64| {
        let store = Store::open(StoreConfig::new(&engine)).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let fetch = Arc::new(FromStore {
            store: leader_store.clone(),
            chunk: 1 << 10,
            calls: Default::default(),
            crash_at,
            crash: parking_lot::Mutex::new(Some(tx)),
        });
        let sm = StateMachine::open(
            vfs.clone(),
            &smdir,
            StoreLog::with_fetch(store.clone(), fetch),
        )
        .unwrap();
        (sm, store, rx)
    };
    let (mut sm, store, crashed) = open(3);
    let data = || std::io::Cursor::new(snapshot.snapshot.get_ref().clone());
    tokio::select! {
        r = sm.install_snapshot(&snapshot.meta, data()) => panic!("installed despite the crash: {r:?}"),
        _ = crashed => {}
    }
    drop(sm);
    store.abandon();

    let (mut sm, store, _) = open(u64::MAX);
    let got = records(&store);
    assert!(
        !got.is_empty() && got.len() < want.len(),
        "{} records",
        got.len()
    );
    assert_eq!(got[..], want[..got.len()], "a prefix");
    assert_eq!(sm.applied_state().await.unwrap().0, None);
    sm.install_snapshot(&snapshot.meta, data()).await.unwrap();
    assert_eq!(records(&store), want);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(199)));

    // The next entries, on both.
    apply(&mut leader, entries(200, 260)).await;
    apply(&mut sm, entries(200, 260)).await;
    assert_eq!(records(&store), records(&leader_store));
    // Restarted from its files (snapshot and record), it goes on alike.
    drop(sm);
    store.close().unwrap();
    let (mut sm, store, _) = open(u64::MAX);
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(259)));
    apply(&mut leader, entries(260, 300)).await;
    apply(&mut sm, entries(260, 300)).await;
    assert_eq!(records(&store), records(&leader_store));
}

/// (Review.) A snapshot taken while the entries past the record are being
/// re-applied (a restart after a crash) records the engine's head, which
/// holds the effects of entries past the snapshot's index. A follower that
/// installs it holds those events and then decides the entries after the
/// snapshot again, normally: one refused on the leader (it expected a
/// version the stream had not reached) was accepted on the follower. The
/// snapshot now records the head after its last entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_mid_replay_records_the_head_after_its_entries() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = Arc::new(OsFs);
    let (engine, smdir) = (dir.path().join("a"), dir.path().join("a-sm"));
    let open_leader = || {
        let store = Store::open(StoreConfig::new(&engine)).unwrap();
        (
            StateMachine::open(vfs.clone(), &smdir, StoreLog::new(store.clone())).unwrap(),
            store,
        )
    };
    let (mut leader, _) = open_leader();
    apply(
        &mut leader,
        vec![membership(1), append(2, ExpectedVersion::NoStream, 2)],
    )
    .await;
    let recorded = std::fs::read(smdir.join("sm.meta")).unwrap();
    // Entry 3 expects version 2 while the stream is at 0: refused. Entries
    // 4 and 5 take the stream to version 2.
    let exact2 = ExpectedVersion::Exact(logbook_protocol::StreamVersion(2));
    let after = || {
        vec![
            append(3, exact2, 3),
            append(4, ExpectedVersion::Any, 4),
            append(5, ExpectedVersion::Any, 5),
        ]
    };
    apply(&mut leader, after()).await;
    let want = log(leader.log().store());
    assert_eq!(want.len(), 3);
    // The crash: the engine holds entries 3-5, `sm.meta` names entry 2.
    leader.log().store().close().unwrap();
    drop(leader);
    std::fs::write(smdir.join("sm.meta"), &recorded).unwrap();
    let (mut leader, leader_store) = open_leader();
    assert_eq!(leader.applied_state().await.unwrap().0, Some(log_id(2)));
    // openraft asks for a snapshot before it has re-applied 3-5 (its
    // committed index was lost with the power cut, or the policy's
    // threshold fell there).
    let snapshot = snapshot_of(&mut leader).await;
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(2)));

    // A new follower installs it, fetching from the leader's engine.
    let fstore = Store::open(StoreConfig::new(dir.path().join("b"))).unwrap();
    let fetch = Arc::new(FromStore {
        store: leader_store.clone(),
        chunk: 1 << 20,
        calls: Default::default(),
        crash_at: u64::MAX,
        crash: parking_lot::Mutex::new(None),
    });
    let mut follower = StateMachine::open(
        vfs.clone(),
        &dir.path().join("b-sm"),
        StoreLog::with_fetch(fstore.clone(), fetch),
    )
    .unwrap();
    follower
        .install_snapshot(
            &snapshot.meta,
            std::io::Cursor::new(snapshot.snapshot.get_ref().clone()),
        )
        .await
        .unwrap();
    // Both apply the entries after the snapshot.
    apply(&mut leader, after()).await;
    apply(&mut follower, after()).await;
    assert_eq!(log(&leader_store), want, "the leader's replay");
    assert_eq!(log(&fstore), want, "the follower diverged");
}

/// A member that never has the records (they are all down, say) until
/// the node shuts down.
struct NoRecords {
    calls: std::sync::atomic::AtomicU64,
}

impl logbook_consensus::catchup::Fetch for NoRecords {
    fn fetch<'a>(
        &'a self,
        _id: u64,
        _member: &'a logbook_consensus::Member,
        _from: u64,
        _to: u64,
    ) -> futures::future::BoxFuture<'a, std::io::Result<Vec<logbook_consensus::Batch>>> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async { Ok(Vec::new()) })
    }

    fn stopped(&self) -> bool {
        self.calls.load(std::sync::atomic::Ordering::Relaxed) >= 3
    }
}

/// An install no member can serve keeps asking (the members may come
/// back), and gives up when the node shuts down, leaving nothing recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_nobody_can_serve_gives_up_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = Arc::new(OsFs);
    let leader_store = Store::open(StoreConfig::new(dir.path().join("a"))).unwrap();
    let mut leader = StateMachine::open(
        vfs.clone(),
        &dir.path().join("a-sm"),
        StoreLog::new(leader_store),
    )
    .unwrap();
    apply(
        &mut leader,
        vec![membership(1), append(2, ExpectedVersion::Any, 2)],
    )
    .await;
    let snapshot = snapshot_of(&mut leader).await;
    let store = Store::open(StoreConfig::new(dir.path().join("b"))).unwrap();
    let fetch = Arc::new(NoRecords {
        calls: Default::default(),
    });
    let mut sm = StateMachine::open(
        vfs,
        &dir.path().join("b-sm"),
        StoreLog::with_fetch(store.clone(), fetch.clone()),
    )
    .unwrap();
    let r = sm
        .install_snapshot(
            &snapshot.meta,
            std::io::Cursor::new(snapshot.snapshot.into_inner()),
        )
        .await;
    let e = r.unwrap_err();
    assert!(e.to_string().contains("shutting down"), "{e}");
    assert!(fetch.calls.load(std::sync::atomic::Ordering::Relaxed) >= 3);
    assert_eq!(sm.applied_state().await.unwrap().0, None);
    assert_eq!(store.head().0, 0);
}
