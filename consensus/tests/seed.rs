//! A node seeded from a store that holds events (`NodeConfig::seed`, a
//! restored backup): its checks hold at every start until its cluster is
//! initialized, and its Raft log is purged past its first entries before
//! it serves, whatever the snapshot policy and however its first start
//! ended. (The joiners' copy is in `tests/tests/t75_cluster.rs`.)

use std::collections::BTreeMap;
use std::path::Path;

use logbook_consensus::node::{Node, NodeConfig, Role};
use logbook_consensus::sm::StateMachine;
use logbook_consensus::store_log::StoreLog;
use logbook_consensus::{Command, EventData, ExpectedVersion, Member, Outcome};
use logbook_protocol::{EventId, NewEvent, StreamName};
use logbook_storage::fs::OsFs;
use logbook_storage::{Store, StoreConfig};

/// Node `id`'s configuration among `ids`; it listens on a port of its own
/// choosing (no other node reaches it in these tests).
fn config(id: u64, ids: &[u64], dir: &Path, join: bool, seed: bool, every: u64) -> NodeConfig {
    NodeConfig {
        id,
        members: ids
            .iter()
            .map(|&i| {
                let m = Member {
                    raft: format!("127.0.0.1:{}", 1 + i),
                    client: format!("127.0.0.1:{}", 100 + i),
                };
                (i, m)
            })
            .collect::<BTreeMap<_, _>>(),
        listen: "127.0.0.1:0".parse().unwrap(),
        cluster: "logbook".into(),
        secret: None,
        tls: None,
        dir: dir.join("raft"),
        join,
        snapshot_every: every,
        seed,
    }
}

/// A store holding `n` events written outside any cluster (a restored
/// backup).
async fn restored(dir: &Path, n: u64) -> Store {
    let store = Store::open(StoreConfig::new(dir.join("events"))).unwrap();
    for i in 0..n {
        let e = NewEvent::new(EventId::from_u128(10_000 + u128::from(i)), "Old", "{}");
        store
            .append(
                &StreamName::new("old").unwrap(),
                logbook_protocol::ExpectedVersion::Any,
                vec![e],
            )
            .await
            .unwrap();
    }
    store
}

/// The first start's record, as `Node::start` writes it before anything
/// else: a first start killed right after it.
fn seeded_then_killed(dir: &Path, store: &Store) {
    StateMachine::<StoreLog>::seed(
        &OsFs,
        &dir.join("raft").join("sm"),
        store.head().0,
        store.last_commit_us(),
    )
    .unwrap();
}

/// The next append lands past the seed's events.
async fn appends_after(node: &Node, base: u64) {
    let command = Command::Append {
        stream: "acct-1".into(),
        expected: ExpectedVersion::Any,
        events: vec![EventData {
            id: [7; 16],
            event_type: "Deposited".into(),
            metadata: bytes::Bytes::new(),
            data: bytes::Bytes::from_static(b"{}"),
        }],
        timestamp_us: 1,
    };
    let outcome = node.propose(command).await.unwrap().await.unwrap();
    assert!(
        matches!(outcome, Outcome::Appended { first_position, .. } if first_position == base),
        "{outcome:?}"
    );
}

/// A first start that stopped after its record and before its cluster
/// was initialized is still a seed: started again with other members or
/// with --join it is refused (others could take entries before its
/// events, at other positions); alone, without the flag, it leads, purges
/// its first entries before serving, and appends past its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_whose_first_start_stopped_is_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    let base = 5;
    let store = restored(dir.path(), base).await;
    seeded_then_killed(dir.path(), &store);
    for (ids, join) in [(&[1, 2, 3][..], false), (&[1][..], true)] {
        let refused = Node::start(config(1, ids, dir.path(), join, false, 0), store.clone()).await;
        let e = refused.expect_err("a seed among others, or joining");
        assert!(e.to_string().contains("of itself alone"), "{e}");
    }
    let node = Node::start(
        config(1, &[1], dir.path(), false, false, 10_000),
        store.clone(),
    )
    .await
    .unwrap();
    assert_eq!(node.status().role, Role::Leader);
    assert!(node.status().purged > 0, "{:?}", node.status());
    appends_after(&node, base).await;
    node.shutdown().await;
}

/// With snapshots never taken by policy (`--snapshot-every 0`) the seed
/// still takes one and purges its first entries; a restart with --seed
/// again changes nothing. --seed on an empty store is refused (a wrong
/// data directory), and so is --seed on a node that was never seeded
/// (a copy of a node's whole data directory, Raft state included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_purges_whatever_the_policy_and_only_a_backup_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let base = 7;
    let store = restored(dir.path(), base).await;
    let node = Node::start(config(1, &[1], dir.path(), false, true, 0), store.clone())
        .await
        .unwrap();
    assert_eq!(node.status().role, Role::Leader);
    let purged = node.status().purged;
    assert!(purged > 0, "{:?}", node.status());
    appends_after(&node, base).await;
    node.shutdown().await;
    store.close().unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("events"))).unwrap();
    let again = Node::start(config(1, &[1], dir.path(), false, true, 0), store)
        .await
        .unwrap();
    assert!(again.status().purged >= purged);
    again.shutdown().await;

    let empty = tempfile::tempdir().unwrap();
    let nothing = Store::open(StoreConfig::new(empty.path().join("events"))).unwrap();
    let e = Node::start(config(1, &[1], empty.path(), false, true, 0), nothing)
        .await
        .expect_err("nothing to seed");
    assert!(e.to_string().contains("no events to seed"), "{e}");

    let node_dir = tempfile::tempdir().unwrap();
    let plain = Store::open(StoreConfig::new(node_dir.path().join("events"))).unwrap();
    let member = Node::start(
        config(1, &[1], node_dir.path(), false, false, 0),
        plain.clone(),
    )
    .await
    .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while member.status().role != Role::Leader {
            member.changed().await;
        }
    })
    .await
    .expect("a single node elects itself");
    appends_after(&member, 0).await;
    member.shutdown().await;
    let e = Node::start(config(1, &[1], node_dir.path(), false, true, 0), plain)
        .await
        .expect_err("a node's directory is no backup");
    assert!(e.to_string().contains("Raft state"), "{e}");
}
