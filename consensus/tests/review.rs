//! What a review of the consensus crate found (2026-12-03), each a test
//! that failed before its fix: a re-applied batch deciding a refused
//! append again (see also `replay.rs`), snapshots asked of an engine that
//! could not make them stopping every node after 5,000 entries, append and
//! rewrite records past what a reader accepts, a truncation not durable
//! before a snapshot install, and a quadratic recovery scan.

use std::path::Path;
use std::sync::Arc;

use logbook_consensus::sm::StateMachine;
use logbook_consensus::store_log::StoreLog;
use logbook_consensus::{Command, EventData, ExpectedVersion, LifecycleChange, TypeConfig};
use logbook_protocol::{Direction, StreamVersion};
use logbook_storage::fs::{CrashMode, Fault, MemFs};
use logbook_storage::{Store, StoreConfig};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;

type C = TypeConfig;
type LogId = openraft::alias::LogIdOf<C>;
type Entry = openraft::alias::EntryOf<C>;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 },
        index,
    )
}

fn append(stream: &str, expected: ExpectedVersion, id: u8, at: i64) -> Command {
    Command::Append {
        stream: stream.into(),
        expected,
        events: vec![EventData {
            id: [id; 16],
            event_type: "t".into(),
            metadata: bytes::Bytes::new(),
            data: bytes::Bytes::from(vec![id]),
        }],
        timestamp_us: at,
    }
}

async fn apply<L: logbook_consensus::sm::EventLog>(
    sm: &mut StateMachine<L>,
    entries: &[Entry],
) -> std::io::Result<()> {
    let items: Vec<_> = entries.iter().cloned().map(|e| Ok((e, None))).collect();
    sm.apply(futures::stream::iter(items)).await?;
    // Durable and recorded (or the recording failed).
    sm.flush().await
}

/// Every event a read of the whole log returns.
fn all_events(store: &Store) -> Vec<logbook_protocol::RecordedEvent> {
    store
        .read_all(None, Direction::Forward, 1000)
        .unwrap()
        .events
}

fn events(store: &Store) -> Vec<(String, u64, u64, [u8; 16], i64)> {
    all_events(store)
        .into_iter()
        .map(|e| {
            (
                e.stream.as_str().to_owned(),
                e.version.0,
                e.position.0,
                e.id.0,
                e.timestamp_us,
            )
        })
        .collect()
}

/// A batch of two committed appends: the first is refused (the stream is
/// not at version 0 yet), the second creates the stream at version 0. The
/// engine makes the second durable, then the process dies before sm.meta is
/// written. After the restart openraft re-applies both: the engine's dedup
/// recognises the second (same ids), but the first is no longer refused
/// (the stream IS at version 0 now) and is written. This replica now holds
/// an event no other replica has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reapplied_after_a_crash_leaves_what_the_first_run_did() {
    let entries = vec![
        Entry::new_normal(
            log_id(1, 1),
            append("s", ExpectedVersion::Exact(StreamVersion(0)), 1, 1_000),
        ),
        Entry::new_normal(
            log_id(1, 2),
            append("s", ExpectedVersion::NoStream, 2, 2_000),
        ),
    ];

    // A replica that never crashed.
    let dir = tempfile::tempdir().unwrap();
    let good = Store::open(StoreConfig::new(dir.path().join("good"))).unwrap();
    let mut sm = StateMachine::open(
        Arc::new(MemFs::new()),
        Path::new("/sm"),
        StoreLog::new(good.clone()),
    )
    .unwrap();
    apply(&mut sm, &entries).await.unwrap();
    let expected = events(&good);
    assert_eq!(expected.len(), 1, "only the second append is written");

    // A replica that crashes between the engine's sync and sm.meta.
    let fs = MemFs::new();
    let path = dir.path().join("crashed");
    let store = Store::open(StoreConfig::new(&path)).unwrap();
    let mut sm = StateMachine::open(
        Arc::new(fs.clone()),
        Path::new("/sm"),
        StoreLog::new(store.clone()),
    )
    .unwrap();
    fs.fail_writes_after(0, Fault::Eio); // sm.meta's write fails: the node stops
    assert!(apply(&mut sm, &entries).await.is_err());
    drop(sm);
    store.close().unwrap();
    drop(store);

    // Restart: applied is None again, openraft re-applies 1..=2.
    let fs = fs.crash(CrashMode::DropUnsynced);
    let store = Store::open(StoreConfig::new(&path)).unwrap();
    let mut sm = StateMachine::open(
        Arc::new(fs.clone()),
        Path::new("/sm"),
        StoreLog::new(store.clone()),
    )
    .unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, None);
    apply(&mut sm, &entries).await.unwrap();
    assert_eq!(
        events(&store),
        expected,
        "the re-applied batch must leave the same events as on a replica that never crashed"
    );
}

mod common;

/// openraft's install of a snapshot on a follower whose log conflicts with
/// it: (1) `truncate_after(local committed)`, (2) the state machine installs
/// the snapshot (sm.meta durable: applied = (t2,10)), (3) `purge(t2,10)`.
/// When `truncate_after` returned before its record was durable (and did
/// not report a failed write), a power cut after (2) left the conflicting
/// entries (t1, 5..=12) beside applied = (t2,10), which openraft's
/// start-up refuses as a corrupt store. Now it waits for its sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_a_snapshot_install_leaves_a_node_that_starts() {
    use logbook_consensus::wal::Wal;
    use openraft::RaftSnapshotBuilder;
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::type_config::TypeConfigExt;
    type Vote = openraft::alias::VoteOf<C>;

    // The snapshot, as a leader would send it.
    let leader_fs = MemFs::new();
    let mut leader = StateMachine::open(
        Arc::new(leader_fs),
        Path::new("/sm"),
        common::FileLog::memory(),
    )
    .unwrap();
    let items = vec![Ok((Entry::new_blank(log_id(2, 10)), None))];
    leader.apply(futures::stream::iter(items)).await.unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 10)));

    // The follower: entries (t1,1..=12) flushed, committed (t1,4).
    let log_fs = MemFs::new();
    let sm_fs = MemFs::new();
    let mut wal = Wal::open(Arc::new(log_fs.clone()), Path::new("/raft")).unwrap();
    let entries: Vec<Entry> = (1..=12).map(|i| Entry::new_blank(log_id(1, i))).collect();
    let (tx, rx) = C::oneshot();
    wal.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
    wal.save_committed(Some(log_id(1, 4))).await.unwrap();
    wal.save_vote(&Vote::new_committed(2, 2)).await.unwrap();
    let mut sm = StateMachine::open(
        Arc::new(sm_fs.clone()),
        Path::new("/sm"),
        common::FileLog::memory(),
    )
    .unwrap();

    // A failed write of the truncation is reported (openraft then stops
    // the node before it installs anything)...
    log_fs.fail_writes_after(0, Fault::Eio);
    assert!(
        wal.truncate_after(Some(log_id(1, 4))).await.is_err(),
        "a failed truncation is reported"
    );
    drop(wal);
    let log_fs = log_fs.crash(CrashMode::DropUnsynced);
    let mut wal = Wal::open(Arc::new(log_fs.clone()), Path::new("/raft")).unwrap();
    // ... and one that returned is durable: the snapshot installed after
    // it, a power cut before the purge is synced leaves a node that starts.
    wal.truncate_after(Some(log_id(1, 4))).await.unwrap();
    sm.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    wal.purge(log_id(2, 10)).await.unwrap();

    // Power cut, restart.
    drop(wal);
    drop(sm);
    let log_fs = log_fs.crash(CrashMode::DropUnsynced);
    let sm_fs = sm_fs.crash(CrashMode::DropUnsynced);
    let mut wal = Wal::open(Arc::new(log_fs), Path::new("/raft")).unwrap();
    let mut sm =
        StateMachine::open(Arc::new(sm_fs), Path::new("/sm"), common::FileLog::memory()).unwrap();
    let state = openraft::StorageHelper::new(&mut wal, &mut sm)
        .with_id(2)
        .get_initial_state()
        .await;
    assert!(
        state.is_ok(),
        "the node restarts after a power cut during a snapshot install: {:?}",
        state.err()
    );
}

/// openraft's default snapshot policy (LogsSinceLast(5000)) asked the state
/// machine for a snapshot after 5000 applied entries; StoreLog's `snapshot`
/// refused, `build_snapshot` returned that error, and openraft treats a
/// failed snapshot build as a fatal storage error: the node stopped. Every
/// replica reaches the threshold at the same entries, so a whole cluster of
/// the engine stopped after ~5000 appends. Now the engine's snapshots are
/// built (its head: `catchup.rs`): with one every 1,000 entries, the node
/// goes past 5,200 appends, takes them, and purges its Raft log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_node_goes_past_5000_appends() {
    use logbook_consensus::local::Router;
    use logbook_consensus::wal::Wal;
    use logbook_consensus::{Member, Raft, config_snapshotting};
    use logbook_storage::fs::OsFs;

    let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let vfs = Arc::new(OsFs);
    let store = Store::open(StoreConfig::new(dir.path().join("events"))).unwrap();
    let wal = Wal::open(vfs.clone(), &dir.path().join("raft")).unwrap();
    let sm = StateMachine::open(vfs, &dir.path().join("sm"), StoreLog::new(store.clone())).unwrap();
    let router: Router<StoreLog> = Router::default();
    let config = config_snapshotting(1_000, 100);
    let raft: Raft<StoreLog> = Raft::new(1, config, router.network(1), wal, sm)
        .await
        .unwrap();
    router.add(1, raft.clone());
    raft.initialize(std::collections::BTreeMap::from([(1, Member::default())]))
        .await
        .unwrap();
    raft.wait(Some(std::time::Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let raft = raft.clone();
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= 5200 {
                        return Ok(());
                    }
                    let mut id = [0u8; 16];
                    id[..8].copy_from_slice(&(i + 1).to_le_bytes());
                    let cmd = Command::Append {
                        stream: format!("s{}", i % 7),
                        expected: ExpectedVersion::Any,
                        events: vec![EventData {
                            id,
                            event_type: "t".into(),
                            metadata: bytes::Bytes::new(),
                            data: bytes::Bytes::from(i.to_le_bytes().to_vec()),
                        }],
                        timestamp_us: 1_700_000_000_000_000 + i as i64,
                    };
                    if let Err(e) = raft.client_write(cmd).await {
                        return Err(format!("append {i}: {e}"));
                    }
                }
            })
        })
        .collect();
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            errors.push(e);
        }
    }
    assert!(
        errors.is_empty(),
        "{} writers failed, e.g. {:?}",
        errors.len(),
        errors.first()
    );
    raft.wait(Some(std::time::Duration::from_secs(30)))
        .metrics(
            |m| {
                m.snapshot.is_some_and(|s| s.index() >= 5_000)
                    && m.purged.is_some_and(|p| p.index() >= 4_900)
            },
            "snapshots taken and the log purged",
        )
        .await
        .unwrap();
    raft.shutdown().await.unwrap();
}

fn big_entry(index: u64, size: usize) -> Entry {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&index.to_le_bytes());
    Entry::new_normal(
        log_id(1, index),
        Command::Append {
            stream: "big".into(),
            expected: ExpectedVersion::Any,
            events: vec![EventData {
                id,
                event_type: "t".into(),
                metadata: bytes::Bytes::new(),
                data: bytes::Bytes::from(vec![0xA5; size]),
            }],
            timestamp_us: 0,
        },
    )
}

async fn indexes(wal: &mut logbook_consensus::wal::Wal) -> Vec<u64> {
    use openraft::RaftLogReader;
    use openraft::storage::RaftLogStorage;
    let mut r = wal.get_log_reader().await;
    r.try_get_log_entries(0..)
        .await
        .unwrap()
        .iter()
        .map(|e| e.index())
        .collect()
}

/// One `append` of entries whose record is past frame::MAX_PAYLOAD (64 MiB:
/// here 5 entries of 14 MiB, each within the engine's 15 MiB batch limit;
/// openraft hands the leader's log up to 4096 entries per append, with no
/// byte limit): written, synced, reported flushed; after a restart the
/// reader takes the frame's length for damage, finds no later batch, and
/// cuts it as a torn tail. Entries reported flushed are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_past_64_mib_survive_a_restart() {
    use logbook_consensus::wal::Wal;
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::type_config::TypeConfigExt;
    let fs = MemFs::new();
    let mut wal = Wal::open(Arc::new(fs.clone()), Path::new("/raft")).unwrap();
    let (tx, rx) = C::oneshot();
    wal.append(vec![big_entry(1, 1000)], IOFlushed::signal(tx))
        .await
        .unwrap();
    rx.await.unwrap().unwrap();
    let entries: Vec<Entry> = (2..=6).map(|i| big_entry(i, 14 << 20)).collect();
    let (tx, rx) = C::oneshot();
    wal.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx.await.unwrap().expect("reported flushed");
    drop(wal);
    let fs = fs.crash(CrashMode::DropUnsynced);
    let mut wal = Wal::open(Arc::new(fs), Path::new("/raft")).unwrap();
    assert_eq!(
        indexes(&mut wal).await,
        vec![1, 2, 3, 4, 5, 6],
        "every entry reported flushed survives a restart"
    );
}

/// A rewrite packs 1024 entries per record: 1024 entries of 70 KB make a
/// record past frame::MAX_PAYLOAD. After the rewrite (synced, renamed, dir
/// synced) a restart cuts that record and everything after it as a torn
/// tail (or, once a later batch follows, refuses the whole log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewrite_of_many_70kb_entries_survives_a_restart() {
    use logbook_consensus::wal::{FILE, Wal};
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use openraft::type_config::TypeConfigExt;
    let fs = MemFs::new();
    let path = Path::new("/raft").join(FILE);
    let mut wal =
        Wal::open_compacting_at(Arc::new(fs.clone()), Path::new("/raft"), 1 << 20).unwrap();
    for chunk in 0..210u64 {
        let entries: Vec<Entry> = (chunk * 10..chunk * 10 + 10)
            .map(|i| big_entry(i, 70_000))
            .collect();
        let (tx, rx) = C::oneshot();
        wal.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }
    let before = fs.read_file(&path).unwrap().len();
    // Purging the first 1060 triggers the rewrite (the file is more than
    // twice what is live).
    wal.purge(log_id(1, 1059)).await.unwrap();
    let started = std::time::Instant::now();
    while fs.read_file(&path).unwrap().len() >= before / 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no rewrite"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let live = indexes(&mut wal).await;
    assert_eq!(live.len(), 1040);
    drop(wal);
    let fs = fs.crash(CrashMode::DropUnsynced);
    let mut wal = Wal::open(Arc::new(fs), Path::new("/raft")).expect("the log reopens");
    assert_eq!(
        indexes(&mut wal).await.len(),
        live.len(),
        "the rewritten log holds the entries it was rewritten with"
    );
}

/// Recovery's search for a later batch marker (frame::scan from the first
/// bad frame to the end of the file) computes a CRC over up to `len` bytes
/// at every byte offset whose length field fits in what is left: quadratic
/// in the torn tail. Here 4 MiB of random bytes (an unsynced batch of
/// binary event payloads, torn): reported in seconds; a 16 MiB batch
/// (MAX_BATCH) costs about 16 times as much.
#[test]
fn the_recovery_scan_of_a_torn_tail_is_linear() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let n = 4 << 20;
    let bytes: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Payload bytes of an ordinary binary encoding: mostly small.
            (x % 16) as u8
        })
        .collect();
    let started = std::time::Instant::now();
    let found = logbook_consensus::frame::scan(&bytes, 1, 64).count();
    let took = started.elapsed();
    eprintln!("scan of {n} bytes: {took:?}, {found} frames");
    assert!(
        took < std::time::Duration::from_secs(1),
        "scan of a 4 MiB torn tail took {took:?}"
    );
}

/// An append of one event with id `id` to `acct-1` at Raft index `index`,
/// proposed at a time that grows with the index.
fn entry(index: u64, expected: ExpectedVersion, id: u8) -> Entry {
    entry_at(index, expected, id, 1_700_000_000_000_000 + index as i64)
}

fn entry_at(index: u64, expected: ExpectedVersion, id: u8, at: i64) -> Entry {
    Entry::new_normal(log_id(1, index), append("acct-1", expected, id, at))
}

/// (Second review.) X refused, Z refused, Y = X's batch written by a resend
/// under a looser expected version: the replay of X found Y's write and
/// took the head past Z, which was then decided again and accepted on this
/// replica only.
///
/// Here the later entry's batch lands exactly where the refused entry's
/// own would have (Y at position 1, X's place): positions and ids cannot
/// tell them apart, the commit time does (each entry has its own, and a
/// resend counts only the batch written at it). Also when the leader's
/// clock gave every entry the same reading (a new leader whose clock is
/// behind the old one's), or a decreasing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_does_not_take_a_later_entrys_write_for_an_earlier_ones() {
    const BASE: i64 = 1_700_000_000_000_000;
    type Clock = fn(u64) -> i64;
    let clocks: [(&str, Clock); 3] = [
        ("growing", |i| BASE + i as i64),
        ("stuck", |_| BASE),
        ("going back", |i| BASE - i as i64),
    ];
    for (name, clock) in clocks {
        let dir = tempfile::tempdir().unwrap();
        let (engine, smdir) = (dir.path().join("engine"), dir.path().join("sm"));
        let vfs = Arc::new(logbook_storage::fs::OsFs);
        let open = || {
            let store = Store::open(StoreConfig::new(&engine)).unwrap();
            StateMachine::open(vfs.clone(), &smdir, StoreLog::new(store)).unwrap()
        };
        let mut sm = open();
        apply(
            &mut sm,
            &[entry_at(1, ExpectedVersion::NoStream, 1, clock(1))],
        )
        .await
        .unwrap();
        let recorded = std::fs::read(smdir.join("sm.meta")).unwrap();
        let v = |n| ExpectedVersion::Exact(StreamVersion(n));
        let batch = || {
            vec![
                entry_at(2, v(5), 2, clock(2)),                 // X: refused
                entry_at(3, v(1), 3, clock(3)),                 // Z: refused (stream at 0)
                entry_at(4, ExpectedVersion::Any, 2, clock(4)), // Y: X's batch, written at 1
            ]
        };
        apply(&mut sm, &batch()).await.unwrap();
        let before = events(sm.log().store());
        assert_eq!(before.len(), 2, "{name}: Y wrote");
        sm.log().store().close().unwrap();
        drop(sm);
        std::fs::write(smdir.join("sm.meta"), &recorded).unwrap();
        let mut sm = open();
        apply(&mut sm, &batch()).await.unwrap();
        let after = events(sm.log().store());
        assert_eq!(after, before, "{name}: replay re-decided an entry");
        let times: Vec<i64> = after.iter().map(|e| e.4).collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "{name}: entries share a commit time: {times:?}"
        );
    }
}

/// (Second review.) A snapshot recorded the apply side's head, which
/// submitted entries do not advance: sm.meta got applied=3, head=0, and
/// after a crash every later entry was taken for one refused before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_records_the_head_after_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let smdir = dir.path().join("sm");
    let logfile = dir.path().join("events");
    let vfs: Arc<dyn logbook_storage::fs::Vfs> = Arc::new(logbook_storage::fs::OsFs);
    let open = || {
        StateMachine::open(
            vfs.clone(),
            &smdir,
            common::FileLog::open(vfs.clone(), logfile.clone()),
        )
        .unwrap()
    };
    let mut sm = open();
    let items: Vec<Result<_, std::io::Error>> = (1..=3)
        .map(|i| Ok((entry(i, ExpectedVersion::Any, i as u8), None)))
        .collect();
    sm.apply(futures::stream::iter(items)).await.unwrap();
    let _ = sm.get_snapshot_builder().await;
    drop(sm); // crash right after
    let mut sm = open();
    let items: Vec<Result<_, std::io::Error>> = vec![Ok((entry(4, ExpectedVersion::Any, 4), None))];
    sm.apply(futures::stream::iter(items)).await.unwrap();
    sm.flush().await.unwrap();
    let n = sm.log().applied.len();
    assert_eq!(
        n, 4,
        "entry 4 was not applied on this replica (treated as refused before restart)"
    );
}

fn lifecycle(index: u64, meta_expected: ExpectedVersion, change: LifecycleChange) -> Entry {
    Entry::new_normal(
        log_id(1, index),
        Command::Lifecycle {
            stream: "acct-1".into(),
            meta_expected,
            change,
            id: [0xA0 + index as u8; 16],
            timestamp_us: 1_700_000_000_000_000 + index as i64 * 1_000_000,
        },
    )
}

/// Everything a replica shows: every event with its data, and the
/// stream's lifecycle state.
fn everything(store: &Store) -> (Vec<logbook_protocol::RecordedEvent>, String) {
    (
        all_events(store),
        format!("{:?}", store.stream_lifecycle("acct-1")),
    )
}

/// Lifecycle changes are replicated entries too: applied on two replicas
/// they give the same events, bytes and state (the leader's id and time,
/// not each replica's clock: an age-based retention's cut depends on the
/// time); re-applied after a crash before the record, they are resends
/// (written changes answered, the refused one staying refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_changes_apply_alike_and_replay_as_resends() {
    use logbook_protocol::lifecycle::StreamMetadata;
    let v = |n| ExpectedVersion::Exact(StreamVersion(n));
    let metadata = |m: StreamMetadata| LifecycleChange::SetMetadata {
        metadata: m.to_json(),
    };
    let entries = vec![
        entry(1, ExpectedVersion::NoStream, 1),
        lifecycle(
            2,
            ExpectedVersion::NoStream,
            metadata(StreamMetadata {
                max_age_secs: Some(1),
                ..StreamMetadata::default()
            }),
        ),
        // Replaces the age limit: what it removed by then stays removed,
        // as of the entry's time.
        lifecycle(
            3,
            v(0),
            metadata(StreamMetadata {
                max_count: Some(5),
                ..StreamMetadata::default()
            }),
        ),
        // Refused: the stream is not at 7.
        lifecycle(
            4,
            ExpectedVersion::Any,
            LifecycleChange::Delete {
                hard: false,
                expected: v(7),
            },
        ),
        entry(5, ExpectedVersion::Any, 5),
        lifecycle(
            6,
            ExpectedVersion::Any,
            LifecycleChange::Truncate { before: 1 },
        ),
        lifecycle(
            7,
            ExpectedVersion::Any,
            LifecycleChange::Delete {
                hard: false,
                expected: v(1),
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let vfs = Arc::new(logbook_storage::fs::OsFs);
    let open = |name: &str| {
        let store = Store::open(StoreConfig::new(dir.path().join(name).join("engine"))).unwrap();
        StateMachine::open(
            vfs.clone(),
            &dir.path().join(name).join("sm"),
            StoreLog::new(store),
        )
        .unwrap()
    };
    // Replica a applies them in one go; replica b in two, with a crash
    // after the record of the first entry.
    let mut a = open("a");
    apply(&mut a, &entries).await.unwrap();
    let want = everything(a.log().store());
    // 2 appends and 4 lifecycle events (the refused delete wrote none),
    // the last of them the soft delete; the age limit's cut taken at the
    // time of entry 3 (its leader's time, less the 1 s limit).
    for part in [
        "position: LogPosition(5)",
        "meta_version: StreamVersion(3)",
        "deleted: Some(Soft)",
        "expired_before_us: Some(1700000002000000)",
    ] {
        assert!(want.1.contains(part), "{part}: {}", want.1);
    }
    let mut b = open("b");
    apply(&mut b, &entries[..1]).await.unwrap();
    let recorded = std::fs::read(dir.path().join("b/sm/sm.meta")).unwrap();
    apply(&mut b, &entries[1..]).await.unwrap();
    assert_eq!(everything(b.log().store()), want, "the replicas differ");
    b.log().store().close().unwrap();
    drop(b);
    std::fs::write(dir.path().join("b/sm/sm.meta"), &recorded).unwrap();
    let mut b = open("b");
    apply(&mut b, &entries[1..]).await.unwrap();
    assert_eq!(
        everything(b.log().store()),
        want,
        "the replay changed the replica"
    );
    // And the replay ended where the event log's head was: the next entry
    // is decided as on the other replica.
    let next = [entry(8, ExpectedVersion::Any, 8)];
    apply(&mut a, &next).await.unwrap();
    apply(&mut b, &next).await.unwrap();
    let (after_a, after_b) = (everything(a.log().store()), everything(b.log().store()));
    assert!(
        after_a.1.contains("position: LogPosition(5)"),
        "{after_a:?}"
    );
    assert_eq!(after_a.0.len(), want.0.len() + 1, "entry 8 was written");
    assert_eq!(after_b, after_a, "the replicas differ after the replay");
}

/// (Third review.) An event log that fails an entry before queueing it
/// (`StoreLog::submit` when an id table cannot be read): the failure is
/// returned by `submit` itself, so the state machine queues no later
/// entry. (Returned as the entry's outcome instead, the entries after it
/// were written while it was not, and the replay after the restart took
/// it for one refused the first time: the replica lost it for good.)
struct FailsOnce {
    inner: StoreLog,
    fail: Option<u64>,
}

impl logbook_consensus::sm::EventLog for FailsOnce {
    async fn submit(
        &mut self,
        index: u64,
        at: i64,
        command: &Command,
    ) -> std::io::Result<logbook_consensus::sm::Pending> {
        if self.fail == Some(index) {
            self.fail = None;
            return Err(std::io::Error::other("an id table cannot be read"));
        }
        self.inner.submit(index, at, command).await
    }
    async fn reapply(
        &mut self,
        index: u64,
        at: i64,
        command: &Command,
    ) -> std::io::Result<Option<logbook_consensus::Outcome>> {
        self.inner.reapply(index, at, command).await
    }
    fn head(&self) -> u64 {
        self.inner.head()
    }
    fn opened_at(&self) -> i64 {
        self.inner.opened_at()
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn snapshot(&mut self, head: u64) -> std::io::Result<Vec<u8>> {
        self.inner.snapshot(head)
    }
    fn install(&mut self, state: &[u8]) -> std::io::Result<()> {
        self.inner.install(state)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_failed_before_the_writer_is_not_lost_after_the_restart() {
    let v = |n| ExpectedVersion::Exact(StreamVersion(n));
    let entries = [
        entry(1, ExpectedVersion::NoStream, 1),
        entry(2, v(0), 2),
        entry(3, ExpectedVersion::Any, 3),
    ];
    let dir = tempfile::tempdir().unwrap();
    let vfs = Arc::new(logbook_storage::fs::OsFs);
    let open = |name: &str, fail: Option<u64>| {
        let store = Store::open(StoreConfig::new(dir.path().join(name).join("engine"))).unwrap();
        StateMachine::open(
            vfs.clone(),
            &dir.path().join(name).join("sm"),
            FailsOnce {
                inner: StoreLog::new(store),
                fail,
            },
        )
        .unwrap()
    };
    let mut a = open("a", None);
    apply(&mut a, &entries).await.unwrap();
    let want = events(a.log().inner.store());
    let mut b = open("b", Some(2));
    apply(&mut b, &entries[..1]).await.unwrap();
    assert!(
        apply(&mut b, &entries[1..]).await.is_err(),
        "the node stops"
    );
    assert_eq!(
        events(b.log().inner.store()).len(),
        1,
        "nothing after the failed entry was queued"
    );
    b.log().inner.store().close().unwrap();
    drop(b);
    let mut b = open("b", None);
    apply(&mut b, &entries[1..]).await.unwrap();
    assert_eq!(events(b.log().inner.store()), want, "the replicas differ");
}

/// (Third review.) A replay that cannot account for what the event log
/// holds (here a limit lowered across the restart refuses a re-applied
/// entry that was written) stops the node at the first entry past the
/// event log's last write, instead of refusing that entry and every later
/// one on this replica alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_cannot_reach_the_head_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = Arc::new(logbook_storage::fs::OsFs);
    let smdir = dir.path().join("sm");
    let open = |max_event_bytes: u64| {
        let mut config = StoreConfig::new(dir.path().join("engine"));
        config.max_event_bytes = max_event_bytes;
        StateMachine::open(
            vfs.clone(),
            &smdir,
            StoreLog::new(Store::open(config).unwrap()),
        )
        .unwrap()
    };
    let big = |index: u64, id: u8| {
        Entry::new_normal(
            log_id(1, index),
            Command::Append {
                stream: "acct-1".into(),
                expected: ExpectedVersion::Any,
                events: vec![EventData {
                    id: [id; 16],
                    event_type: "t".into(),
                    metadata: bytes::Bytes::new(),
                    data: bytes::Bytes::from(vec![id; 4000]),
                }],
                timestamp_us: 1_700_000_000_000_000 + index as i64,
            },
        )
    };
    let mut sm = open(1 << 20);
    apply(&mut sm, &[entry(1, ExpectedVersion::Any, 1)])
        .await
        .unwrap();
    let recorded = std::fs::read(smdir.join("sm.meta")).unwrap();
    let batch = [big(2, 2), entry(3, ExpectedVersion::Any, 3)];
    apply(&mut sm, &batch).await.unwrap();
    sm.log().store().close().unwrap();
    drop(sm);
    std::fs::write(smdir.join("sm.meta"), &recorded).unwrap();
    let mut sm = open(1000);
    apply(&mut sm, &batch).await.unwrap();
    let stopped = apply(&mut sm, &[entry(4, ExpectedVersion::Any, 4)]).await;
    let e = stopped.expect_err("entry 4 was refused on this replica alone");
    assert!(e.to_string().contains("rejoin"), "{e}");
    assert_eq!(
        events(sm.log().store()).len(),
        3,
        "nothing more was written"
    );
}
