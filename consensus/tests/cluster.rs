//! Three nodes in one process over [`logbook_consensus::local`], each with
//! its Raft log and state machine in a temporary directory on the real file
//! system: writers append while the leader is cut off (a new leader within
//! 5 s), then while a follower crashes and restarts from its files; in the
//! end every node holds the same commands at the same positions, every
//! acknowledged append exactly once at the position it was acknowledged
//! with, and an append whose outcome was unknown at most once. The same
//! history check runs after seeded fault schedules (cut-off nodes and
//! leaders, power cuts on each node's fault-injecting file system, a lossy
//! and slow network).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{FileLog, Rng};
use logbook_consensus::local::Router;
use logbook_consensus::sm::{EventLog, StateMachine};
use logbook_consensus::store_log;
use logbook_consensus::store_log::StoreLog;
use logbook_consensus::wal::Wal;
use logbook_consensus::{
    Command, EventData, ExpectedVersion, Member, Outcome, Raft, config, config_snapshotting,
};
use logbook_protocol::Direction;
use logbook_storage::fs::{CrashMode, MemFs, OsFs, Vfs};
use logbook_storage::{Store, StoreConfig};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use parking_lot::Mutex;

const NODES: [u64; 3] = [1, 2, 3];
/// Every node a test may start (one is added to a cluster of `NODES`).
const ANY_NODE: [u64; 4] = [1, 2, 3, 4];

fn home(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("n{id}"))
}

fn events_file(dir: &Path, id: u64) -> PathBuf {
    home(dir, id).join("events")
}

/// Starts node `id` over its files under `dir` on `vfs`.
async fn start(vfs: Arc<dyn Vfs>, dir: &Path, id: u64, router: &Router<FileLog>) -> Raft<FileLog> {
    let home = home(dir, id);
    vfs.create_dir_all(&home).unwrap();
    let wal = Wal::open(vfs.clone(), &home.join("raft")).unwrap();
    let log = FileLog::open(vfs.clone(), events_file(dir, id));
    let sm = StateMachine::open(vfs, &home.join("sm"), log).unwrap();
    let raft = Raft::new(id, config(), router.network(id), wal, sm)
        .await
        .unwrap();
    router.add(id, raft.clone());
    raft
}

/// The leader of the highest term among the nodes that are up (a leader
/// cut off from the others may still think it leads, in an older term).
fn leader<L: EventLog>(router: &Router<L>, except: Option<u64>) -> Option<Raft<L>> {
    ANY_NODE
        .iter()
        .filter(|id| Some(**id) != except)
        .filter_map(|id| router.node(*id))
        .filter_map(|raft| {
            let m = raft.metrics().borrow_watched().clone();
            (m.state == ServerState::Leader).then_some((m.current_term, raft))
        })
        .max_by_key(|(term, _)| *term)
        .map(|(_, raft)| raft)
}

async fn wait_for_leader<L: EventLog>(router: &Router<L>, except: Option<u64>) -> (u64, Duration) {
    let start = Instant::now();
    loop {
        if let Some(raft) = leader(router, except) {
            let id = raft.metrics().borrow_watched().id;
            return (id, start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no leader after 30 s"
        );
        // Polls the nodes' published metrics; no outcome depends on it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Default)]
struct History {
    /// Command id -> the position it was acknowledged at.
    acked: BTreeMap<u64, u64>,
    /// Commands whose outcome is unknown (the leader went away).
    unknown: Vec<u64>,
}

fn command(id: u64) -> Command {
    Command::Append {
        stream: format!("s-{}", id % 7),
        expected: ExpectedVersion::Any,
        events: vec![EventData {
            id: u128::from(id + 1).to_be_bytes(),
            event_type: "Happened".into(),
            metadata: Default::default(),
            data: id.to_le_bytes().to_vec().into(),
        }],
        // The proposer's clock, as a leader stamps an append.
        timestamp_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64,
    }
}

fn id_of(c: &Command) -> u64 {
    let Command::Append { events, .. } = c else {
        panic!("only appends here: {c}")
    };
    u64::from_le_bytes(events[0].data[..].try_into().unwrap())
}

/// Appends until `stop`, through whichever node leads.
async fn writer<L: EventLog>(
    router: Router<L>,
    ids: Arc<AtomicU64>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Some(raft) = leader(&router, None) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let write = tokio::time::timeout(Duration::from_secs(5), raft.client_write(command(id)));
        match write.await {
            Ok(Ok(r)) => match r.data {
                Outcome::Appended { first_position, .. } => {
                    history.lock().acked.insert(id, first_position);
                }
                other => panic!("unexpected outcome {other:?}"),
            },
            // Never appended: safe to forget (a new id goes next).
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
            // Timed out or the node stopped: it may or may not commit.
            _ => history.lock().unknown.push(id),
        }
    }
}

async fn acked(history: &Mutex<History>) -> usize {
    history.lock().acked.len()
}

async fn until_acked(history: &Mutex<History>, n: usize) {
    let start = Instant::now();
    while acked(history).await < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "appends stalled at {}",
            acked(history).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Makes the started nodes a cluster (from node 1) and waits for its first
/// leader, which it returns.
async fn initialize<L: EventLog>(router: &Router<L>) -> u64 {
    let members: BTreeMap<u64, Member> = NODES
        .iter()
        .map(|id| {
            (
                *id,
                Member {
                    raft: format!("node-{id}"),
                    client: String::new(),
                },
            )
        })
        .collect();
    router.node(1).unwrap().initialize(members).await.unwrap();
    wait_for_leader(router, None).await.0
}

/// Writers appending through whichever node leads, and what they heard.
struct Writers {
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn spawn<L: EventLog>(router: &Router<L>, n: usize) -> Writers {
        let history = Arc::new(Mutex::new(History::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|_| {
                tokio::spawn(writer(
                    router.clone(),
                    Arc::clone(&ids),
                    Arc::clone(&history),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        Writers {
            history,
            stop,
            tasks,
        }
    }

    /// Stops them; returns the history.
    async fn stop(self) -> Arc<Mutex<History>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.history
    }
}

/// Waits until every node applied what the leader holds.
async fn catch_up<L: EventLog>(router: &Router<L>) {
    catch_up_nodes(router, &NODES).await
}

/// Waits until `nodes` applied what the leader holds.
async fn catch_up_nodes<L: EventLog>(router: &Router<L>, nodes: &[u64]) {
    let (leader_id, _) = wait_for_leader(router, None).await;
    let last = router
        .node(leader_id)
        .unwrap()
        .metrics()
        .borrow_watched()
        .last_log_index;
    for &id in nodes {
        router
            .node(id)
            .unwrap()
            .wait(Some(Duration::from_secs(30)))
            .applied_index_at_least(last, "every node catches up")
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_restart_lose_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    for id in NODES {
        start(Arc::new(OsFs), dir.path(), id, &router).await;
    }
    let first = initialize(&router).await;
    let writers = Writers::spawn(&router, 4);
    let history = &writers.history;
    until_acked(history, 200).await;

    // The leader is cut off under load: another takes over within 5 s.
    router.isolate(first);
    let (second, took) = wait_for_leader(&router, Some(first)).await;
    assert_ne!(second, first);
    assert!(took < Duration::from_secs(5), "new leader after {took:?}");
    eprintln!("leader {first} cut off: node {second} leads after {took:?}");
    let before = acked(history).await;
    until_acked(history, before + 200).await;
    router.heal(first);

    // A follower crashes and restarts from its files.
    let follower = NODES.iter().copied().find(|id| *id != second).unwrap();
    let raft = router.remove(follower).unwrap();
    raft.shutdown().await.unwrap();
    let before = acked(history).await;
    until_acked(history, before + 100).await;
    start(Arc::new(OsFs), dir.path(), follower, &router).await;
    let before = acked(history).await;
    until_acked(history, before + 100).await;

    let history = writers.stop().await;
    let disks: HashMap<u64, Arc<dyn Vfs>> = NODES
        .iter()
        .map(|id| (*id, Arc::new(OsFs) as Arc<dyn Vfs>))
        .collect();
    let n = check(&router, &disks, dir.path(), &history).await;
    assert!(n >= 600, "{n} acknowledged");
}

/// Waits until every node applied all there is, stops them, and checks the
/// history: the same log everywhere, every acknowledged append once at its
/// position, unknown outcomes at most once. Returns the acknowledged count.
async fn check(
    router: &Router<FileLog>,
    disks: &HashMap<u64, Arc<dyn Vfs>>,
    dir: &Path,
    history: &Mutex<History>,
) -> usize {
    catch_up(router).await;
    for id in NODES {
        router.remove(id).unwrap().shutdown().await.unwrap();
    }
    let logs: Vec<Vec<(u64, Command)>> = NODES
        .iter()
        .map(|id| FileLog::read(disks[id].as_ref(), &events_file(dir, *id)))
        .collect();
    assert_eq!(logs[0], logs[1], "nodes 1 and 2 hold the same log");
    assert_eq!(logs[0], logs[2], "nodes 1 and 3 hold the same log");
    let positions: HashMap<u64, Vec<usize>> =
        logs[0]
            .iter()
            .enumerate()
            .fold(HashMap::new(), |mut m, (pos, (_, c))| {
                m.entry(id_of(c)).or_default().push(pos);
                m
            });
    let history = history.lock();
    for (id, pos) in &history.acked {
        assert_eq!(
            positions.get(id).map(Vec::as_slice),
            Some(&[*pos as usize][..]),
            "acknowledged append {id} once, at {pos}"
        );
    }
    for id in &history.unknown {
        assert!(positions.get(id).is_none_or(|p| p.len() == 1), "{id}");
    }
    history.acked.len()
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Seeded fault schedules: while writers append, a node is cut off, the
/// leader is cut off, or a node loses power (its unsynced writes dropped,
/// reordered or torn) and restarts, one fault at a time, over a network
/// that drops 2% of messages and delays each by up to 2 ms; then the
/// history is checked. `LOGBOOK_FAULT_SEEDS` (default 2) schedules of
/// `LOGBOOK_FAULT_STEPS` (default 8) faults from seed `LOGBOOK_FAULT_SEED`
/// (default 1): about 45 s; longer runs behind those variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_keep_the_history() {
    let seeds = env("LOGBOOK_FAULT_SEEDS").unwrap_or(2);
    let steps = env("LOGBOOK_FAULT_STEPS").unwrap_or(8);
    let first = env("LOGBOOK_FAULT_SEED").unwrap_or(1);
    for seed in first..first + seeds {
        let started = Instant::now();
        let n = schedule(seed, steps).await;
        eprintln!(
            "seed {seed}: {steps} faults, {n} acknowledged appends, checked in {:?}",
            started.elapsed()
        );
    }
}

async fn schedule(seed: u64, steps: u64) -> usize {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let dir = Path::new("/cluster");
    let router = Router::default();
    router.flaky(20, Duration::from_millis(2), seed);
    let mut disks: HashMap<u64, MemFs> = NODES.iter().map(|id| (*id, MemFs::new())).collect();
    for id in NODES {
        start(Arc::new(disks[&id].clone()), dir, id, &router).await;
    }
    initialize(&router).await;
    let writers = Writers::spawn(&router, 3);
    let history = &writers.history;
    for _ in 0..steps {
        let before = acked(history).await;
        match rng.below(3) {
            0 => {
                // Some node is cut off while appends go on.
                let id = NODES[rng.below(3) as usize];
                router.isolate(id);
                until_acked(history, before + 20).await;
                router.heal(id);
            }
            1 => {
                // The leader is cut off; another takes over.
                let (old, _) = wait_for_leader(&router, None).await;
                router.isolate(old);
                let (new, took) = wait_for_leader(&router, Some(old)).await;
                assert!(
                    took < Duration::from_secs(5),
                    "seed {seed}: node {new} led after {took:?}"
                );
                until_acked(history, before + 20).await;
                router.heal(old);
            }
            _ => {
                // A node loses power and comes back from what its disk kept.
                let id = NODES[rng.below(3) as usize];
                let raft = router.remove(id).unwrap();
                raft.shutdown().await.unwrap();
                let mode = if rng.below(2) == 0 {
                    CrashMode::DropUnsynced
                } else {
                    CrashMode::TornUnsynced {
                        seed: rng.below(u64::MAX),
                    }
                };
                let disk = disks[&id].crash(mode);
                disks.insert(id, disk.clone());
                until_acked(history, before + 10).await;
                start(Arc::new(disk), dir, id, &router).await;
            }
        }
        let before = acked(history).await;
        until_acked(history, before + 10).await;
    }
    let history = writers.stop().await;
    let disks: HashMap<u64, Arc<dyn Vfs>> = disks
        .into_iter()
        .map(|(id, d)| (id, Arc::new(d) as Arc<dyn Vfs>))
        .collect();
    check(&router, &disks, dir, &history).await
}

/// Starts node `id` with the engine as its event log, taking a snapshot
/// every `snapshot_every` entries (and keeping 20 entries before it).
async fn start_engine(
    dir: &Path,
    id: u64,
    router: &Router<StoreLog>,
    snapshot_every: u64,
) -> (Raft<StoreLog>, Store, tokio::sync::watch::Receiver<u64>) {
    start_engine_sized(dir, id, router, snapshot_every, 256 << 20).await
}

/// [`start_engine`] with segments of `segment_bytes`.
async fn start_engine_sized(
    dir: &Path,
    id: u64,
    router: &Router<StoreLog>,
    snapshot_every: u64,
    segment_bytes: u64,
) -> (Raft<StoreLog>, Store, tokio::sync::watch::Receiver<u64>) {
    let home = home(dir, id);
    std::fs::create_dir_all(&home).unwrap();
    let vfs = Arc::new(OsFs);
    // A replica's engine, as a cluster node opens it.
    let store = Store::open(StoreConfig {
        keep_removed_ids: true,
        segment_bytes,
        max_batch_bytes: (segment_bytes / 2).min(15 << 20),
        max_event_bytes: (segment_bytes / 4).min(4 << 20),
        ..StoreConfig::new(home.join("events"))
    })
    .unwrap();
    let wal = Wal::open(vfs.clone(), &home.join("raft")).unwrap();
    let log = StoreLog::with_fetch(store.clone(), Arc::new(router.fetch(id)));
    let served = store.clone();
    router.add_records(
        id,
        Arc::new(move |from, to, max| store_log::read_batches(&served, from, to, max)),
    );
    let sm = StateMachine::open(vfs, &home.join("sm"), log).unwrap();
    let durable = sm.durable();
    let config = config_snapshotting(snapshot_every, 20);
    let raft = Raft::new(id, config, router.network(id), wal, sm)
        .await
        .unwrap();
    router.add(id, raft.clone());
    (raft, store, durable)
}

/// Every record of `store`, as written.
fn records(store: &Store) -> Vec<logbook_storage::LogBatch> {
    store.read_batches(0, u64::MAX, usize::MAX).unwrap()
}

/// Waits until every node applied what the leader holds and every engine
/// holds it (applied entries reach an engine a group commit later), and
/// checks that they hold the same records: returns them.
async fn one_log(
    router: &Router<StoreLog>,
    stores: &BTreeMap<u64, Store>,
) -> Vec<logbook_storage::LogBatch> {
    let nodes: Vec<u64> = stores.keys().copied().collect();
    catch_up_nodes(router, &nodes).await;
    let (leader_id, _) = wait_for_leader(router, None).await;
    let head = stores[&leader_id].head().0;
    for store in stores.values() {
        let mut watch = store.watch_head();
        tokio::time::timeout(Duration::from_secs(30), watch.wait_for(|h| *h >= head))
            .await
            .expect("every engine holds every event")
            .unwrap();
    }
    let want = records(&stores[&nodes[0]]);
    assert_eq!(want.last().unwrap().end_position(), head);
    for (id, store) in stores {
        assert!(records(store) == want, "node {id} holds another log");
    }
    want
}

/// The leader, once its Raft log is purged past entry `index`.
async fn leader_past_purge(router: &Router<StoreLog>, index: u64) -> (u64, Raft<StoreLog>) {
    let (leader_id, _) = wait_for_leader(router, None).await;
    let leader = router.node(leader_id).unwrap();
    leader
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index() > index),
            "the leader purges its log",
        )
        .await
        .unwrap();
    (leader_id, leader)
}

/// Makes node 4 (started as `new`) a learner through `leader`, and waits
/// until it applied what the leader held then.
async fn add_learner_4(leader: &Raft<StoreLog>, new: &Raft<StoreLog>) {
    let member = Member {
        raft: "node-4".into(),
        client: String::new(),
    };
    leader.add_learner(4, member, false).await.unwrap();
    let last = leader.metrics().borrow_watched().last_log_index;
    new.wait(Some(Duration::from_secs(60)))
        .applied_index_at_least(last, "node 4 catches up")
        .await
        .unwrap();
}

/// Snapshots and a purged Raft log: with a snapshot every 50 entries, the
/// leader's log soon starts past its first entries, so a node added empty
/// cannot replay the log from the start; it installs the snapshot,
/// fetching the events it lacks from the members, while the writers go on
/// and one member is cut off. Then it becomes a voter, the leader is cut
/// off, and the new node restarts from its files (a crash: nothing is
/// flushed). In the end the four engines hold the same records (streams,
/// positions, versions, timestamps, bytes), and every acknowledged append
/// is at the position it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_after_the_log_was_purged_catches_up_from_a_snapshot() {
    use openraft::ChangeMembers;
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let mut stores = BTreeMap::new();
    for id in NODES {
        let (_, store, _) = start_engine(dir.path(), id, &router, 50).await;
        stores.insert(id, store);
    }
    initialize(&router).await;
    let writers = Writers::spawn(&router, 4);
    let history = &writers.history;
    until_acked(history, 400).await;
    let (leader_id, leader) = leader_past_purge(&router, 100).await;
    // A follower is cut off: the new node fetches from the others.
    let cut = NODES.into_iter().find(|id| *id != leader_id).unwrap();
    router.isolate(cut);
    let (new, store, _) = start_engine(dir.path(), 4, &router, 50).await;
    stores.insert(4, store);
    let started = Instant::now();
    add_learner_4(&leader, &new).await;
    eprintln!(
        "a learner caught up from a snapshot in {:?} ({} events)",
        started.elapsed(),
        stores[&4].head().0
    );
    let installed = new.metrics().borrow_watched().snapshot;
    assert!(
        installed.is_some_and(|s| s.index() > 100),
        "node 4 installed a snapshot: {installed:?}"
    );
    router.heal(cut);
    leader
        .change_membership(ChangeMembers::AddVoterIds([4].into()), false)
        .await
        .unwrap();
    let before = acked(history).await;
    until_acked(history, before + 100).await;
    router.isolate(leader_id);
    let (_, took) = wait_for_leader(&router, Some(leader_id)).await;
    assert!(took < Duration::from_secs(5), "new leader after {took:?}");
    let before = acked(history).await;
    until_acked(history, before + 100).await;
    router.heal(leader_id);
    // Node 4 crashes and restarts from its files.
    new.shutdown().await.unwrap();
    router.remove(4);
    stores.remove(&4).unwrap().abandon();
    let (_, store, _) = start_engine(dir.path(), 4, &router, 50).await;
    stores.insert(4, store);
    let before = acked(history).await;
    until_acked(history, before + 100).await;
    let history = writers.stop().await;

    one_log(&router, &stores).await;
    let acked = history.lock().acked.clone();
    assert!(acked.len() > 700);
    let events = stores[&4]
        .read_all(None, Direction::Forward, 100_000)
        .unwrap()
        .events;
    for (id, position) in acked {
        let e = &events[position as usize];
        assert_eq!(e.position.0, position);
        assert_eq!(e.data[..], id.to_le_bytes(), "append {id} at {position}");
    }
}

/// The engine as the state machine: three replicas, writers appending
/// through whichever node leads while the leader is cut off; in the end
/// every replica's engine holds the same events (stream, version,
/// position, id, type, data, timestamp) and every acknowledged append is
/// there at the position it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_the_engine_hold_the_same_events() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let mut stores = BTreeMap::new();
    let mut durable = BTreeMap::new();
    for id in NODES {
        let (_, store, d) = start_engine(dir.path(), id, &router, 0).await;
        stores.insert(id, store);
        durable.insert(id, d);
    }
    let first = initialize(&router).await;
    let writers = Writers::spawn(&router, 4);
    let history = &writers.history;
    let started = Instant::now();
    until_acked(history, 150).await;
    eprintln!(
        "engine replicas: 150 appends acknowledged in {:?} (4 writers)",
        started.elapsed()
    );
    router.isolate(first);
    let (_, took) = wait_for_leader(&router, Some(first)).await;
    assert!(took < Duration::from_secs(5), "new leader after {took:?}");
    let before = acked(history).await;
    until_acked(history, before + 150).await;
    router.heal(first);
    let before = acked(history).await;
    until_acked(history, before + 50).await;
    let history = writers.stop().await;
    catch_up(&router).await;
    // Applied entries reach the engine's disk a group commit later.
    let (leader_id, _) = wait_for_leader(&router, None).await;
    let last = router
        .node(leader_id)
        .unwrap()
        .metrics()
        .borrow_watched()
        .last_log_index
        .unwrap_or(0);
    for d in durable.values_mut() {
        tokio::time::timeout(Duration::from_secs(30), d.wait_for(|i| *i >= last))
            .await
            .expect("every engine holds every entry")
            .unwrap();
    }
    let logs: Vec<Vec<_>> = NODES
        .iter()
        .map(|id| {
            let all = stores[id]
                .read_all(None, Direction::Forward, 100_000)
                .unwrap();
            assert!(all.next.is_none());
            all.events
                .into_iter()
                .map(|e| {
                    (
                        e.stream.as_str().to_owned(),
                        e.version.0,
                        e.position.0,
                        e.id,
                        e.event_type.as_str().to_owned(),
                        e.data,
                        e.timestamp_us,
                    )
                })
                .collect()
        })
        .collect();
    assert!(
        logs[0].last().unwrap().6 > 1_700_000_000_000_000,
        "real timestamps"
    );
    assert_eq!(logs[0], logs[1], "replicas 1 and 2 hold the same events");
    assert_eq!(logs[0], logs[2], "replicas 1 and 3 hold the same events");
    // Versions are contiguous per stream, positions dense.
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (i, (stream, version, position, ..)) in logs[0].iter().enumerate() {
        assert_eq!(*position, i as u64);
        let next = versions.entry(stream.clone()).or_default();
        assert_eq!(*version, *next, "{stream}");
        *next += 1;
    }
    let by_id: HashMap<u64, u64> = logs[0]
        .iter()
        .map(|(_, _, position, _, _, data, _)| {
            (u64::from_le_bytes(data[..].try_into().unwrap()), *position)
        })
        .collect();
    for (id, pos) in &history.lock().acked {
        assert_eq!(by_id.get(id), Some(pos), "acknowledged append {id}");
    }
    assert_eq!(
        by_id.len(),
        logs[0].len(),
        "no append applied twice (unknown outcomes included)"
    );
    for id in NODES {
        router.remove(id).unwrap().shutdown().await.unwrap();
    }
}

/// A lifecycle change of `stream`, as a leader proposes it.
fn lifecycle(stream: &str, change: logbook_consensus::LifecycleChange) -> Command {
    Command::Lifecycle {
        stream: stream.into(),
        meta_expected: ExpectedVersion::Any,
        change,
        id: logbook_protocol::EventId::new_v7().0,
        timestamp_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64,
    }
}

/// Proposes `command` through whichever node leads, until one takes it.
async fn propose(router: &Router<StoreLog>, command: Command) -> Outcome {
    loop {
        let (id, _) = wait_for_leader(router, None).await;
        match router.node(id).unwrap().client_write(command.clone()).await {
            Ok(r) => return r.data,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every segment file's bytes of the engine of node `id`, concatenated.
fn engine_bytes(dir: &Path, id: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(home(dir, id).join("events/log")).unwrap() {
        out.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    out
}

/// Scavenges and an erase on a cluster: each node scavenges its own copy,
/// while writers append, keeping the ids of the events it removes, so the
/// replicas still hold one log: the same records at the same positions
/// (removed ones as ids only), whatever each scavenged. An erase is a
/// replicated tombstone that every node applies and then rewrites its own
/// segments for. A node added after the log was purged copies that log
/// from scavenged members, never receives the bytes of a removed or erased
/// event, and refuses a reused id of one as every other node does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scavenged_replicas_keep_one_log_that_a_new_node_copies() {
    use logbook_consensus::LifecycleChange;
    use logbook_storage::scavenge::ScavengeOptions;
    use openraft::ChangeMembers;
    let dir = tempfile::tempdir().unwrap();
    let router = Router::default();
    let mut stores = BTreeMap::new();
    for id in NODES {
        let (_, store, _) = start_engine_sized(dir.path(), id, &router, 50, 16 << 10).await;
        stores.insert(id, store);
    }
    initialize(&router).await;
    // Streams d-0..d-4, 30 events each, recognisable bytes.
    let marker = |stream: u64, i: u64| format!("removed-{stream}-{i}-");
    let mut id = 1_000_000u64;
    for i in 0..30 {
        for d in 0..5 {
            id += 1;
            let c = Command::Append {
                stream: format!("d-{d}"),
                expected: ExpectedVersion::Any,
                events: vec![EventData {
                    id: u128::from(id).to_be_bytes(),
                    event_type: "Kept".into(),
                    metadata: Default::default(),
                    data: marker(d, i).into_bytes().into(),
                }],
                timestamp_us: 1_800_000_000_000_000,
            };
            assert!(matches!(
                propose(&router, c).await,
                Outcome::Appended { .. }
            ));
        }
    }
    let writers = Writers::spawn(&router, 4);
    let history = &writers.history;
    until_acked(history, 300).await;
    // d-0 truncated, d-1 kept to 3 events, d-2 deleted for ever, d-3 left.
    for (stream, change) in [
        ("d-0", LifecycleChange::Truncate { before: 20 }),
        (
            "d-1",
            LifecycleChange::SetMetadata {
                metadata: "{\"max_count\":3}".into(),
            },
        ),
        (
            "d-2",
            LifecycleChange::Delete {
                hard: true,
                expected: ExpectedVersion::Any,
            },
        ),
    ] {
        let outcome = propose(&router, lifecycle(stream, change)).await;
        assert!(matches!(outcome, Outcome::Appended { .. }), "{outcome:?}");
    }
    let before = acked(history).await;
    until_acked(history, before + 300).await;
    // Every node scavenges its own copy, while the writers go on.
    let mut removed = 0;
    for (id, store) in &stores {
        let s = store.clone();
        let report = tokio::task::spawn_blocking(move || s.scavenge(ScavengeOptions::default()))
            .await
            .unwrap()
            .unwrap();
        eprintln!("node {id}: {report:?}");
        removed += report.events_removed;
    }
    assert!(removed >= 3 * (20 + 27 + 30), "{removed} events removed");
    // d-4 is erased: every node rewrites its own segments once it applied
    // the tombstone.
    let outcome = propose(&router, lifecycle("d-4", LifecycleChange::Erase)).await;
    assert!(matches!(outcome, Outcome::Appended { .. }), "{outcome:?}");
    for (id, store) in &stores {
        let s = store.clone();
        let d4 = logbook_protocol::StreamName::new("d-4").unwrap();
        let wait = move || s.wait_erased(&d4, Some(Duration::from_secs(30)));
        let receipt = tokio::task::spawn_blocking(wait).await.unwrap().unwrap();
        assert_eq!(receipt.events_removed, 30, "node {id}: {receipt:?}");
    }
    // Past the lifecycle changes.
    let (_, leader) = leader_past_purge(&router, 200).await;
    // A new node copies the log from the scavenged members.
    let (new, store, _) = start_engine_sized(dir.path(), 4, &router, 50, 16 << 10).await;
    stores.insert(4, store);
    add_learner_4(&leader, &new).await;
    let installed = new.metrics().borrow_watched().snapshot;
    assert!(installed.is_some_and(|s| s.index() > 200), "{installed:?}");
    leader
        .change_membership(ChangeMembers::AddVoterIds([4].into()), false)
        .await
        .unwrap();
    let before = acked(history).await;
    until_acked(history, before + 100).await;
    // Reused ids of removed events (d-2's first, d-0's first): nothing is
    // written, on any node.
    for reused in [1_000_003u128, 1_000_001] {
        let c = Command::Append {
            stream: "d-3".into(),
            expected: ExpectedVersion::Any,
            events: vec![EventData {
                id: reused.to_be_bytes(),
                event_type: "Again".into(),
                metadata: Default::default(),
                data: b"{}".to_vec().into(),
            }],
            timestamp_us: 1_800_000_000_000_000,
        };
        let outcome = propose(&router, c).await;
        assert!(
            matches!(outcome, Outcome::DuplicateEventId { .. }),
            "{outcome:?}"
        );
    }
    let history = writers.stop().await;
    let want = one_log(&router, &stores).await;
    assert!(want.iter().filter(|b| b.removed).count() >= 20 + 27 + 30 + 30);
    let visible = |store: &Store| {
        store
            .read_all(None, Direction::Forward, 100_000)
            .unwrap()
            .events
    };
    let seen = visible(&stores[&1]);
    for id in [2, 3, 4] {
        assert!(visible(&stores[&id]) == seen, "node {id} reads otherwise");
    }
    // The removed events' bytes are on no node's disk (those of the
    // original nodes were in sealed segments, rewritten), the kept ones
    // are.
    for id in ANY_NODE {
        let bytes = engine_bytes(dir.path(), id);
        let has = |m: String| bytes.windows(m.len()).any(|w| w == m.as_bytes());
        assert!(!has(marker(2, 5)), "node {id} holds an event of d-2");
        assert!(
            !has(marker(0, 3)),
            "node {id} holds an event of d-0 below 20"
        );
        assert!(
            !has(marker(4, 29)),
            "node {id} holds an event of erased d-4"
        );
        assert!(has(marker(0, 25)), "node {id} lost d-0's event 25");
        assert!(has(marker(3, 0)), "node {id} lost d-3's event 0");
    }
    let events = visible(&stores[&4]);
    let by_position: HashMap<u64, &logbook_protocol::RecordedEvent> =
        events.iter().map(|e| (e.position.0, e)).collect();
    for (id, position) in history.lock().acked.clone() {
        let e = by_position[&position];
        assert_eq!(e.data[..], id.to_le_bytes(), "append {id} at {position}");
    }
    for id in ANY_NODE {
        router.remove(id).unwrap().shutdown().await.unwrap();
    }
}
