//! A three-node cluster of real `logbookd` processes on loopback ports.
//!
//! Writers append through the real client (given the three addresses)
//! while the leader is killed with SIGKILL: the client follows the new
//! leader and resends appends whose answer was lost, and every append it
//! was told succeeded is in the log, once, at the position it was told. A
//! subscriber on a follower sees every event exactly once, in order. The
//! killed node, restarted, catches up, and all three nodes then hold the
//! same log, byte for byte (ids, versions, positions, timestamps, data).
//! Also: what a follower answers (NotLeader with the leader's address, for
//! appends, lifecycle changes and erasure; a scavenge of its own copy; a
//! read waiting for a position to see the reader's own write), what Hello and
//! Stats tell of the cluster, and that a store written outside a cluster
//! cannot join one. Users, roles and tokens changed through any node hold
//! on every node, one that was down included. Consumer groups run on the
//! leader and move to the next one, their consumers with them. Every node
//! scavenges its own copy and erases an erased stream from it, and the
//! nodes still hold one log; a backup of one verifies and seeds a new
//! cluster that holds that log.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt;
use logbook_client::{
    Client, ClientOptions, Error, EventId, ExpectedVersion, LogPosition, NewEvent, ReadAllOptions,
    ReadStreamOptions, RecordedEvent, RetryPolicy, StreamVersion, SubscribeAllOptions,
    SubscriptionMessage,
};
use logbook_tests::certs::TestPki;
use logbook_tests::daemon::Daemon;
use logbook_tests::within;

/// A free loopback port for a daemon to take (`logbook_tests::reserved_port`).
fn free_port() -> u16 {
    logbook_tests::reserved_port()
}

struct Cluster {
    clients: Vec<SocketAddr>,
    members: String,
    nodes: Vec<Option<Daemon>>,
    /// Arguments every node gets (TLS between nodes).
    extra: Vec<String>,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, Vec::new())
    }

    fn start_with(dir: &Path, extra: Vec<String>) -> Cluster {
        let clients: Vec<SocketAddr> = (0..3)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let members = clients
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}=127.0.0.1:{}/{c}", i + 1, free_port()))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            clients,
            members,
            nodes: Vec::new(),
            extra,
        };
        for i in 0..3 {
            let node = cluster.launch(dir, i);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn launch(&self, dir: &Path, i: usize) -> Daemon {
        let id = (i + 1).to_string();
        let mut args = vec!["--node-id", &id, "--cluster", &self.members];
        args.extend(self.extra.iter().map(String::as_str));
        Daemon::start_on(
            &dir.join(format!("n{id}")),
            &self.clients[i].to_string(),
            &args,
        )
    }

    fn addresses(&self) -> Vec<String> {
        self.clients.iter().map(|a| a.to_string()).collect()
    }

    /// The node that says it leads, asked directly.
    async fn leader(&self) -> usize {
        within(30, "a leader", async {
            loop {
                for (i, addr) in self.clients.iter().enumerate() {
                    if self.nodes[i].is_none() {
                        continue;
                    }
                    let Ok(c) = Client::connect_with(*addr, direct()).await else {
                        continue;
                    };
                    if let Ok(s) = c.stats().await
                        && s.cluster.as_ref().is_some_and(|c| c.role == "leader")
                    {
                        return i;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }
}

/// Options for talking to one node only: no retries, no redirects.
fn direct() -> ClientOptions {
    ClientOptions::default().retry(RetryPolicy::none())
}

fn event(writer: usize, n: u64) -> NewEvent {
    NewEvent::new(
        EventId::from_u128(((writer as u128) << 64) | (u128::from(n) + 1)),
        "Deposited",
        format!("{{\"writer\":{writer},\"n\":{n}}}"),
    )
}

async fn whole_log(addr: SocketAddr) -> Vec<RecordedEvent> {
    let c = Client::connect_with(addr, direct()).await.unwrap();
    c.read_all(ReadAllOptions::default())
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_keep_every_acknowledged_append_through_a_leader_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let options = ClientOptions::default().request_timeout(Some(Duration::from_secs(60)));
    let client = Client::connect_any(cluster.addresses(), options.clone())
        .await
        .unwrap();
    // Hello tells the members.
    let mut members = client.server_info().members.clone();
    members.sort();
    let mut expected = cluster.addresses();
    expected.sort();
    assert_eq!(members, expected);

    // The first append waits out the first election.
    client
        .append("setup", ExpectedVersion::NoStream, vec![event(99, 0)])
        .await
        .unwrap();
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;

    // A follower: reads and subscriptions yes, appends redirected, the
    // rest refused.
    let f = Client::connect_with(cluster.clients[follower], direct())
        .await
        .unwrap();
    // (Once it has heard from the leader: the first append needed only one
    // follower.)
    within(30, "the follower to know its leader", async {
        while f.stats().await.unwrap().cluster.unwrap().leader != Some(leader as u64 + 1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match f
        .append("x", ExpectedVersion::Any, vec![event(98, 0)])
        .await
    {
        Err(Error::NotLeader { leader: Some(at) }) => {
            assert_eq!(at, cluster.clients[leader].to_string())
        }
        other => panic!("a follower took an append: {other:?}"),
    }
    match f
        .delete_stream(
            "setup",
            ExpectedVersion::Any,
            logbook_client::Deletion::Soft,
        )
        .await
    {
        Err(Error::NotLeader { leader: Some(at) }) => {
            assert_eq!(at, cluster.clients[leader].to_string())
        }
        other => panic!("a follower deleted a stream: {other:?}"),
    }
    match f.erase("setup").await {
        Err(Error::NotLeader { leader: Some(at) }) => {
            assert_eq!(at, cluster.clients[leader].to_string())
        }
        other => panic!("a follower erased a stream: {other:?}"),
    }
    // A scavenge is each node's own.
    f.scavenge(logbook_client::ScavengeOptions::default())
        .await
        .unwrap();
    let stats = f.stats().await.unwrap();
    let c = stats.cluster.expect("a node says it is one");
    assert_eq!(c.role, "follower");
    assert_eq!(c.leader, Some(leader as u64 + 1));
    assert_eq!(c.members.len(), 3);

    // Read your own writes on a follower: appended through the leader,
    // read at once on the follower, waiting for it to apply.
    let mine = client
        .append("ryw", ExpectedVersion::NoStream, vec![event(97, 0)])
        .await
        .unwrap();
    let after = LogPosition(mine.last_position.0 + 1);
    let page = f
        .read_stream_page("ryw", ReadStreamOptions::default().min_position(after))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    let page = f
        .read_all_page(ReadAllOptions::default().min_position(after))
        .await
        .unwrap();
    assert!(page.head >= after);

    // A subscriber on the follower, from the start.
    let mut sub = f
        .subscribe_all(SubscribeAllOptions::default())
        .await
        .unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let subscriber = tokio::spawn(async move {
        while let Some(m) = sub.try_next().await.unwrap() {
            if let SubscriptionMessage::Event(e) = m
                && seen_tx.send(e).is_err()
            {
                return;
            }
        }
    });

    // Writers: each its own stream, each append expecting the last
    // version it was told.
    const WRITERS: usize = 4;
    const PER_WRITER: u64 = 40;
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = client.clone();
            let progress = progress_tx.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..PER_WRITER {
                    let expected = match n {
                        0 => ExpectedVersion::NoStream,
                        n => ExpectedVersion::Exact(StreamVersion(n - 1)),
                    };
                    let r = client
                        .append(format!("acct-{w}"), expected, vec![event(w, n)])
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}, append {n}: {e}"));
                    assert_eq!(r.first_version, StreamVersion(n));
                    acked.push((n, r.first_position));
                    let _ = progress.send(());
                }
                acked
            })
        })
        .collect();
    drop(progress_tx);
    // A third of the way in, the leader dies.
    for _ in 0..(WRITERS as u64 * PER_WRITER / 3) {
        progress_rx.recv().await.unwrap();
    }
    let killed = cluster.nodes[leader].take().unwrap();
    killed.kill();
    let mut acked = BTreeMap::new();
    for (w, t) in writers.into_iter().enumerate() {
        for (n, position) in within(120, "the writers", t).await.unwrap() {
            acked.insert(position, (w, n));
        }
    }
    assert_eq!(acked.len(), WRITERS * PER_WRITER as usize);

    // The killed node comes back and catches up.
    let restarted = cluster.launch(dir.path(), leader);
    cluster.nodes[leader] = Some(restarted);
    let head = 2 + WRITERS as u64 * PER_WRITER;
    for addr in &cluster.clients {
        within(60, "every node to catch up", async {
            loop {
                if let Ok(c) = Client::connect_with(*addr, direct()).await
                    && c.stats().await.is_ok_and(|s| s.events >= head)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    // Every node holds the same log, and it is what the writers were told.
    let logs = [
        whole_log(cluster.clients[0]).await,
        whole_log(cluster.clients[1]).await,
        whole_log(cluster.clients[2]).await,
    ];
    assert_eq!(logs[0].len() as u64, head, "events stored once each");
    assert_eq!(logs[0], logs[1], "nodes 1 and 2 differ");
    assert_eq!(logs[0], logs[2], "nodes 1 and 3 differ");
    let mut ids = HashSet::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for (i, e) in logs[0].iter().enumerate() {
        assert_eq!(e.position.0, i as u64);
        assert!(ids.insert(e.id), "event {} stored twice", e.id);
        let next = versions.entry(e.stream.to_string()).or_insert(0);
        assert_eq!(e.version.0, *next, "{} skips a version", e.stream);
        *next += 1;
        if let Some((w, n)) = acked.get(&e.position) {
            assert_eq!(
                e.id,
                event(*w, *n).id,
                "acked at {} but not there",
                e.position
            );
        }
    }
    for w in 0..WRITERS {
        assert_eq!(versions[&format!("acct-{w}")], PER_WRITER);
    }

    // The follower's subscriber saw each event once, in order.
    let mut seen = Vec::new();
    within(60, "the subscriber", async {
        while (seen.len() as u64) < head {
            seen.push(seen_rx.recv().await.expect("the subscription goes on"));
        }
    })
    .await;
    assert_eq!(seen, logs[0]);
    subscriber.abort();

    // The CLI shows every node: one leader, the others following it.
    let out = cli(&[
        "--server",
        &cluster.clients[follower].to_string(),
        "cluster",
        "--json",
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    let roles: Vec<&str> = rows.iter().filter_map(|r| r["role"].as_str()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{rows:?}"
    );
    assert_eq!(
        roles.iter().filter(|r| **r == "follower").count(),
        2,
        "{rows:?}"
    );
}

/// A node's event log must hold exactly what its Raft log applied: a
/// store with events written outside the cluster is refused, but as the
/// seed of a new cluster (`--seed`), and then only if its log has no hole
/// (a single server's scavenge leaves some; the other nodes copy the log
/// whole).
#[test]
fn a_store_written_outside_a_cluster_cannot_join_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("single");
    let small = logbook_tests::daemon::SMALL_SEGMENTS;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let single = Daemon::start(&data, &small);
    rt.block_on(async {
        let c = Client::connect(single.addr).await.unwrap();
        for n in 0..40 {
            let e = NewEvent::new(
                EventId::from_u128(1_000 + n),
                "Noted",
                format!("{{\"pad\":\"{}\"}}", "x".repeat(4000)),
            );
            c.append("gone", ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
        c.append("s", ExpectedVersion::Any, vec![event(0, 0)])
            .await
            .unwrap();
    });
    let stop = |mut d: Daemon| {
        d.signal("TERM");
        assert!(d.wait().success());
    };
    stop(single);
    let members = format!("1=127.0.0.1:{}/127.0.0.1:{}", free_port(), free_port());
    let refused = |how: &[&str], why: &str| {
        let data = data.to_str().unwrap();
        let mut args = vec!["--data-dir", data, "--listen", "127.0.0.1:0"];
        args.extend(["--node-id", "1", "--cluster", &members]);
        args.extend(small.iter().chain(how));
        let log = logbook_tests::daemon::refuses(args);
        assert!(log.contains(why), "no reason given: {log}");
    };
    refused(&[], "written outside the cluster");
    // Scavenged on its own, it has holes.
    let single = Daemon::start(&data, &small);
    rt.block_on(async {
        let c = Client::connect(single.addr).await.unwrap();
        c.delete_stream("gone", ExpectedVersion::Any, logbook_client::Deletion::Soft)
            .await
            .unwrap();
        let report = c
            .scavenge(logbook_client::ScavengeOptions::default())
            .await
            .unwrap();
        assert!(report.events_removed > 0, "{report:?}");
    });
    stop(single);
    refused(&["--seed"], "holds no events at positions 0..");
}

/// Runs the CLI and returns its stdout, failing with its stderr.
fn cli(args: &[&str]) -> String {
    let out = std::process::Command::new(logbook_tests::daemon::logbook_cli())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "logbook {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Lifecycle changes through the leader: retention, truncation, a soft
/// and a hard delete, and a delete refused for its expected version.
async fn change_lifecycles(client: &Client) {
    use logbook_client::{Deletion, StreamMetadata};
    client
        .append(
            "life",
            ExpectedVersion::NoStream,
            (0..6).map(|n| event(7, n)).collect(),
        )
        .await
        .unwrap();
    let metadata = StreamMetadata {
        max_count: Some(4),
        ..StreamMetadata::default()
    };
    client
        .set_stream_metadata("life", ExpectedVersion::NoStream, metadata)
        .await
        .unwrap();
    client
        .truncate_stream("life", StreamVersion(3))
        .await
        .unwrap();
    match client
        .delete_stream(
            "life",
            ExpectedVersion::Exact(StreamVersion(99)),
            Deletion::Soft,
        )
        .await
    {
        Err(Error::WrongExpectedVersion { .. }) => {}
        other => panic!("a delete at the wrong version: {other:?}"),
    }
    for (n, stream, mode) in [(0, "gone", Deletion::Soft), (1, "tomb", Deletion::Hard)] {
        client
            .append(stream, ExpectedVersion::NoStream, vec![event(8, n)])
            .await
            .unwrap();
        client
            .delete_stream(stream, ExpectedVersion::Exact(StreamVersion(0)), mode)
            .await
            .unwrap();
    }
}

/// A lifecycle change that cannot commit (both followers paused with
/// SIGSTOP) waits off the connection: a ping sent after it on the same
/// connection is answered while it waits, and it completes once the
/// followers go on.
async fn connection_serves_while_a_change_waits(cluster: &Cluster) {
    let leader = cluster.leader().await;
    let c = Client::connect_with(cluster.clients[leader], direct())
        .await
        .unwrap();
    let watch = Client::connect_with(cluster.clients[leader], direct())
        .await
        .unwrap();
    let last = || async { watch.stats().await.unwrap().cluster.unwrap().last_index };
    let before = last().await;
    let followers: Vec<&Daemon> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.nodes[i].as_ref().unwrap())
        .collect();
    for f in &followers {
        f.signal("STOP");
    }
    let waiting = {
        let c = c.clone();
        tokio::spawn(async move { c.truncate_stream("paused", StreamVersion(1)).await })
    };
    // Proposed: in the leader's log, not committed.
    within(30, "the change to reach the leader's log", async {
        while last().await == before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    within(30, "a ping while the change waits", c.ping())
        .await
        .unwrap();
    assert!(
        !waiting.is_finished(),
        "the change committed without a quorum"
    );
    for f in &followers {
        f.signal("CONT");
    }
    within(60, "the change once the followers go on", waiting)
        .await
        .unwrap()
        .unwrap();
}

/// What a node shows of the streams [`change_lifecycles`] changed, once it
/// holds the log up to `through`: each node must show the same.
async fn lifecycles_on(addr: SocketAddr, through: LogPosition) -> String {
    let c = Client::connect_with(addr, direct()).await.unwrap();
    let life: Vec<u64> = c
        .read_stream("life", ReadStreamOptions::default().min_position(through))
        .map_ok(|e| e.version.0)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(life, [3, 4, 5], "on {addr}: retention and truncation");
    let gone = c
        .read_stream_page("gone", ReadStreamOptions::default())
        .await;
    assert!(
        matches!(gone, Err(Error::StreamNotFound { .. })),
        "on {addr}: {gone:?}"
    );
    let mut states = String::new();
    for stream in ["life", "gone", "tomb"] {
        let w = c.get_stream_metadata(stream).await.unwrap().unwrap();
        states += &format!("{stream}: {:?} at {:?}\n", w.state, w.position);
    }
    states
}

/// A TLS connection to `raft`, checking its certificate against `ca`
/// and presenting `cert` and `key`.
async fn tls_to(
    raft: SocketAddr,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(raft).await?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

/// What the replication port of a node speaking mutual TLS answers: a
/// node's certificate signed by the cluster's CA gets through the
/// handshake (the port speaks TLS, under a certificate for the address
/// dialled); a plain TCP peer, and a TLS peer whose certificate another CA
/// signed, get no Logbook frame back, only the close.
async fn strangers_are_refused(raft: SocketAddr, pki: &TestPki, other: &TestPki) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hello = b"\x20\x00\x00\x00\x00\x00\x00\x00hello, I am node 1, let me in...";
    tls_to(raft, &pki.ca, &pki.node_cert, &pki.node_key)
        .await
        .expect("a node of the cluster completes the handshake");
    // Plain TCP: at most a TLS alert (record type 0x15), then the close.
    let mut tcp = tokio::net::TcpStream::connect(raft).await.unwrap();
    let _ = tcp.write_all(hello).await;
    let mut back = Vec::new();
    let _ = within(
        30,
        "the plain peer to be closed",
        tcp.read_to_end(&mut back),
    )
    .await;
    assert!(
        back.is_empty() || back[0] == 0x15,
        "a plain peer got {back:?}"
    );
    // Another CA's certificate: refused (with TLS 1.3 the refusal comes
    // after the client's side of the handshake is done).
    if let Ok(mut s) = tls_to(raft, &pki.ca, &other.node_cert, &other.node_key).await {
        let _ = s.write_all(hello).await;
        let mut back = Vec::new();
        let read = within(
            30,
            "the foreign peer to be closed",
            s.read_to_end(&mut back),
        )
        .await;
        assert!(
            read.is_err() || back.is_empty(),
            "a foreign peer got {back:?}"
        );
    }
}

/// Waits until the node at `addr` answers a read with `NotLeader` (a node
/// outside the membership, or one that knows no leader), polling its
/// published state.
async fn refuses_reads(addr: SocketAddr) {
    let client = Client::connect_with(addr, direct()).await.unwrap();
    within(60, "reads refused by a node outside the cluster", async {
        loop {
            let read: Result<Vec<RecordedEvent>, _> = client
                .read_all(ReadAllOptions::default())
                .try_collect()
                .await;
            match read {
                Err(Error::NotLeader { .. }) => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
}

/// Membership: a fourth node started with `--join` is added with
/// `logbook cluster add` (asked of a follower, which redirects to the
/// leader; before that it serves no reads), catches up on the log written
/// before it came (from a snapshot: the nodes snapshot every 20 entries and
/// purge their Raft logs, so it fetches the events from a member), and
/// becomes a voter; then the leader itself is removed with `logbook
/// cluster remove` (and serves no reads after). The other three elect a leader among them and go on taking appends,
/// and they all hold the same log. The nodes speak mutual TLS to each
/// other (`--cluster-tls-*`), and refuse strangers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_added_and_the_leader_removed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "cluster", "unused");
    let other = TestPki::generate(dir.path(), "other", "unused");
    let tls: Vec<String> = [
        ("--cluster-tls-cert", &pki.node_cert),
        ("--cluster-tls-key", &pki.node_key),
        ("--cluster-tls-ca", &pki.ca),
    ]
    .iter()
    .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
    // A snapshot every 20 entries, and the Raft log purged up to 20
    // entries before it: the node added below gets the snapshot.
    .chain(["--snapshot-every".to_owned(), "20".to_owned()])
    .collect();
    let mut cluster = Cluster::start_with(dir.path(), tls.clone());
    let options = ClientOptions::default().request_timeout(Some(Duration::from_secs(60)));
    let client = Client::connect_any(cluster.addresses(), options.clone())
        .await
        .unwrap();
    for n in 0..50u64 {
        let batch = (0..4).map(|k| event(0, n * 4 + k)).collect();
        client
            .append("acct-0", ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    change_lifecycles(&client).await;
    connection_serves_while_a_change_waits(&cluster).await;
    let through = LogPosition(client.stats().await.unwrap().events);
    let raft1: SocketAddr = cluster.members.split(',').next().unwrap()[2..]
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    strangers_are_refused(raft1, &pki, &other).await;

    // The fourth node joins.
    let (raft4, client4) = (
        format!("127.0.0.1:{}", free_port()),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let members4 = format!("{},4={raft4}/{client4}", cluster.members);
    let mut args4 = vec!["--node-id", "4", "--cluster", &members4, "--join"];
    args4.extend(tls.iter().map(String::as_str));
    let node4 = Daemon::start_on(&dir.path().join("n4"), &client4.to_string(), &args4);
    // Not added yet, it serves no reads: its log does not follow the
    // cluster's. A client that reaches it first reads from the members.
    refuses_reads(client4).await;
    let first4: Vec<String> = [client4.to_string()]
        .into_iter()
        .chain(cluster.addresses())
        .collect();
    let read: Vec<RecordedEvent> = Client::connect_any(first4, options.clone())
        .await
        .unwrap()
        .read_all(ReadAllOptions::default().min_position(through))
        .try_collect()
        .await
        .unwrap();
    let from_member: Vec<RecordedEvent> = Client::connect_any(cluster.addresses(), options.clone())
        .await
        .unwrap()
        .read_all(ReadAllOptions::default().min_position(through))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(read, from_member);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let add_four = |asked: SocketAddr| {
        let out = cli(&[
            "--server",
            &asked.to_string(),
            "cluster",
            "add",
            "4",
            &raft4,
            &client4.to_string(),
        ]);
        assert!(out.contains("node 4 added"), "{out}");
    };
    add_four(cluster.clients[follower]);
    let stats = Client::connect_with(cluster.clients[leader], direct())
        .await
        .unwrap()
        .stats()
        .await
        .unwrap()
        .cluster
        .unwrap();
    let four = stats
        .members
        .iter()
        .find(|m| m.node_id == 4)
        .expect("node 4 is a member");
    assert!(!four.learner, "node 4 votes: {stats:?}");
    assert_eq!(four.client_addr, client4.to_string());
    // Adding it again is answered at once.
    add_four(cluster.clients[leader]);
    // It holds what was written before it came, lifecycle changes
    // included, as every other node does.
    let c4 = Client::connect_with(client4, direct()).await.unwrap();
    let on4: Vec<RecordedEvent> = c4
        .read_all(ReadAllOptions::default().min_position(through))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(on4, whole_log(cluster.clients[leader]).await);
    // From a snapshot: the log it would have replayed was purged.
    let log4 = node4.log_text();
    assert!(
        log4.contains("installed a snapshot's events"),
        "node 4 did not install a snapshot:\n{log4}"
    );
    let states = lifecycles_on(client4, through).await;
    for addr in &cluster.clients {
        assert_eq!(lifecycles_on(*addr, through).await, states, "on {addr}");
    }
    assert!(states.contains("Hard"), "{states}");
    match client
        .append("tomb", ExpectedVersion::Any, vec![event(8, 2)])
        .await
    {
        Err(Error::StreamDeleted { .. }) => {}
        other => panic!("an append to a hard-deleted stream: {other:?}"),
    }

    // A consumer of a group, joined on the leader, goes on after its
    // removal: the removed node ends the membership and knows no leader,
    // and the consumer joins the group elsewhere.
    {
        use logbook_client::{GroupSettings, GroupSource, GroupStart};
        client
            .create_group(
                "billing",
                GroupSource::Stream {
                    stream: "orders".into(),
                },
                GroupStart::Start,
                GroupSettings::default(),
            )
            .await
            .unwrap();
    }
    let on_leader = Client::connect_with(cluster.clients[leader], options.clone())
        .await
        .unwrap();
    let mut consumer = on_leader.join_group("billing", 10).await.unwrap();
    client
        .append("orders", ExpectedVersion::Any, vec![event(12, 0)])
        .await
        .unwrap();
    let d = within(30, "the first delivery", consumer.next())
        .await
        .unwrap()
        .unwrap();
    consumer.ack(&[d.id]).unwrap();

    // The leader is removed; the others go on without it.
    let removed = leader;
    cli(&[
        "--server",
        &cluster.clients[follower].to_string(),
        "cluster",
        "remove",
        &(removed + 1).to_string(),
    ]);
    // Removed, it serves no reads either (once it applied its removal).
    refuses_reads(cluster.clients[removed]).await;
    let rest: Vec<String> = (0..3)
        .filter(|i| *i != removed)
        .map(|i| cluster.clients[i].to_string())
        .collect();
    Client::connect_any(rest, options.clone())
        .await
        .unwrap()
        .append("orders", ExpectedVersion::Any, vec![event(12, 1)])
        .await
        .unwrap();
    within(60, "the consumer's delivery after the removal", async {
        loop {
            let d = consumer
                .next()
                .await
                .expect("the membership goes on")
                .expect("a delivery");
            consumer.ack(&[d.id]).unwrap();
            if d.event.id == event(12, 1).id {
                return;
            }
        }
    })
    .await;
    drop(consumer);
    let mut node = cluster.nodes[removed].take().unwrap();
    node.signal("TERM");
    node.wait();
    let rest: Vec<String> = (0..3)
        .filter(|i| *i != removed)
        .map(|i| cluster.clients[i].to_string())
        .chain([client4.to_string()])
        .collect();
    let client = Client::connect_any(rest.clone(), options).await.unwrap();
    for n in 50..60u64 {
        let batch = (0..4).map(|k| event(0, n * 4 + k)).collect();
        client
            .append("acct-0", ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    let head = client.stats().await.unwrap().events;
    let out = cli(&["--server", &rest.join(","), "cluster", "--json"]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut ids: Vec<u64> = rows
        .iter()
        .map(|r| r["node_id"].as_u64().unwrap())
        .collect();
    ids.sort();
    let mut expected: Vec<u64> = (1..=3).filter(|i| *i != removed as u64 + 1).collect();
    expected.push(4);
    assert_eq!(ids, expected, "{rows:?}");
    assert_eq!(
        rows.iter().filter(|r| r["role"] == "leader").count(),
        1,
        "{rows:?}"
    );
    let mut logs = Vec::new();
    for addr in &rest {
        let c = Client::connect_with(addr.parse::<SocketAddr>().unwrap(), direct())
            .await
            .unwrap();
        let log: Vec<RecordedEvent> = c
            .read_all(ReadAllOptions::default().min_position(LogPosition(head)))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            log.last().map(|e| e.position.0 + 1),
            Some(head),
            "on {addr}"
        );
        logs.push(log);
    }
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
    drop(node4);
}

/// `who_am_i` through a session that logs in to `addr` alone with
/// `options`, once it can.
async fn logs_in(addr: SocketAddr, options: ClientOptions, what: &str) {
    within(60, what, async {
        loop {
            if let Ok(c) = Client::connect_with(addr, options.clone()).await
                && c.who_am_i().await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Waits until `addr` refuses a login with `options`.
async fn refuses_login(addr: SocketAddr, options: ClientOptions, what: &str) {
    within(60, what, async {
        loop {
            match Client::connect_with(addr, options.clone()).await {
                Err(Error::NotAuthenticated) => return,
                Ok(c) if matches!(c.who_am_i().await, Err(Error::NotAuthenticated)) => return,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
}

/// Waits until a session's requests fail (the node closed it).
async fn closed(session: &Client, what: &str) {
    within(60, what, async {
        while session.ping().await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Users, roles and tokens are changed through any node (a follower
/// redirects to the leader) and hold on every node: logins, the closing
/// of sessions whose rights changed, a revoked token; a node that was
/// down gets the changes made meanwhile from a snapshot; a new leader
/// goes on changing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_and_tokens_are_replicated() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with(
        dir.path(),
        vec!["--snapshot-every".to_owned(), "20".to_owned()],
    );
    let leader = cluster.leader().await;
    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    // Open while the store has no user (loopback only).
    let held = Client::connect_with(cluster.clients[other], direct())
        .await
        .unwrap();
    held.ping().await.unwrap();

    // The first user, asked of a follower: redirected to the leader.
    let ops = || direct().credentials("ops", "ops-password");
    Client::connect_with(cluster.clients[follower], ClientOptions::default())
        .await
        .unwrap()
        .put_user(logbook_client::PutUser {
            name: "ops".into(),
            password: Some("ops-password".into()),
            roles: vec!["admin".into()],
            tenant: None,
            disabled: false,
        })
        .await
        .unwrap();
    for addr in &cluster.clients {
        logs_in(*addr, ops(), "ops logs in on every node").await;
        refuses_login(*addr, direct(), "anonymous sessions refused").await;
    }
    closed(&held, "the anonymous session opened before the first user").await;

    // A token, created through a follower, works on every node; revoked,
    // nowhere, and its sessions are closed.
    let admin = Client::connect_any(
        cluster.addresses(),
        ClientOptions::default().credentials("ops", "ops-password"),
    )
    .await
    .unwrap();
    let session = Client::connect_with(cluster.clients[follower], ops())
        .await
        .unwrap();
    let token = session.create_token("ops", "ci").await.unwrap();
    let by_token = || direct().auth_token(token.token.clone());
    for addr in &cluster.clients {
        logs_in(*addr, by_token(), "the token logs in on every node").await;
    }
    let token_session = Client::connect_with(cluster.clients[other], by_token())
        .await
        .unwrap();
    token_session.ping().await.unwrap();
    session.revoke_token("ops", &token.id).await.unwrap();
    closed(&token_session, "the revoked token's session").await;
    for addr in &cluster.clients {
        refuses_login(*addr, by_token(), "the revoked token").await;
    }

    // A node down while a user is added (among enough appends that the
    // others purge the Raft log it would replay) gets it from a snapshot.
    cluster.nodes[other].take().unwrap().kill();
    for n in 0..30u64 {
        admin
            .append("acct-u", ExpectedVersion::Any, vec![event(5, n)])
            .await
            .unwrap();
    }
    admin
        .put_user(logbook_client::PutUser {
            name: "late".into(),
            password: Some("late-password".into()),
            roles: vec!["reader".into()],
            tenant: None,
            disabled: false,
        })
        .await
        .unwrap();
    // The leader applied the change before it answered.
    let added_by = Client::connect_with(cluster.clients[leader], ops())
        .await
        .unwrap()
        .stats()
        .await
        .unwrap()
        .cluster
        .unwrap()
        .applied_index;
    for n in 30..90u64 {
        admin
            .append("acct-u", ExpectedVersion::Any, vec![event(5, n)])
            .await
            .unwrap();
    }
    // Until the others' Raft logs no longer hold the change, it could be
    // replayed from them.
    for i in [leader, follower] {
        within(60, "the change purged from the Raft logs", async {
            loop {
                let c = Client::connect_with(cluster.clients[i], ops())
                    .await
                    .unwrap();
                let s = c.stats().await.unwrap().cluster.unwrap();
                if s.purged_index >= added_by {
                    assert!(s.snapshot_index > s.purged_index, "{s:?}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
    let restarted = cluster.launch(dir.path(), other);
    let late = || direct().credentials("late", "late-password");
    logs_in(
        cluster.clients[other],
        late(),
        "the user added while the node was down",
    )
    .await;
    let log = restarted.log_text();
    assert!(
        log.contains("installed a snapshot's events"),
        "the restarted node did not install a snapshot:\n{log}"
    );
    cluster.nodes[other] = Some(restarted);

    // The leader dies; the next one changes the users on from where the
    // last change left them.
    cluster.nodes[leader].take().unwrap().kill();
    admin
        .put_role("auditors", Vec::new(), vec!["stats".into()])
        .await
        .unwrap();
    admin
        .put_user(logbook_client::PutUser {
            name: "late".into(),
            password: None,
            roles: vec!["auditors".into()],
            tenant: None,
            disabled: true,
        })
        .await
        .unwrap();
    for i in [follower, other] {
        refuses_login(cluster.clients[i], late(), "the disabled user").await;
        let roles = Client::connect_with(cluster.clients[i], ops())
            .await
            .unwrap()
            .list_roles()
            .await
            .unwrap();
        assert!(roles.iter().any(|r| r.name == "auditors"), "{roles:?}");
        logs_in(cluster.clients[i], ops(), "ops still logs in").await;
    }
}

/// Consumer groups run on the leader: created through a follower
/// (redirected), their definitions and checkpoints written through the
/// replicated log. When the leader is cut off (paused), the others elect
/// another, which starts the groups from their last checkpoint; the old
/// one, back, steps down and stops its groups, ending their memberships
/// with `NotLeader`, and the consumer joins the group on the new leader on
/// its own: every event is delivered (at least once), those appended
/// meanwhile included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_move_to_the_new_leader() {
    use logbook_client::{GroupSettings, GroupSource, GroupStart};
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    // Asked of a follower: redirected to the leader.
    Client::connect_with(cluster.clients[follower], ClientOptions::default())
        .await
        .unwrap()
        .create_group(
            "billing",
            GroupSource::Stream {
                stream: "orders".into(),
            },
            GroupStart::Start,
            GroupSettings::default(),
        )
        .await
        .unwrap();
    // A follower runs no group: it sends the client to the leader.
    let not_leader = |addr: SocketAddr| async move {
        matches!(
            Client::connect_with(addr, direct())
                .await
                .unwrap()
                .list_groups()
                .await,
            Err(Error::NotLeader { leader: Some(_) })
        )
    };
    assert!(not_leader(cluster.clients[follower]).await);
    let client = Client::connect_any(cluster.addresses(), ClientOptions::default())
        .await
        .unwrap();
    const BEFORE: u64 = 60;
    const AFTER: u64 = 40;
    for n in 0..BEFORE {
        client
            .append("orders", ExpectedVersion::Any, vec![event(7, n)])
            .await
            .unwrap();
    }
    let consumer_client = Client::connect_any(cluster.addresses(), ClientOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_client.join_group("billing", 10).await.unwrap();
    let mut seen = HashSet::new();
    let mut deliveries = 0u64;
    let mut paused = false;
    within(120, "every event delivered", async {
        while (seen.len() as u64) < BEFORE + AFTER {
            let d = consumer
                .next()
                .await
                .expect("the membership goes on")
                .expect("a delivery");
            deliveries += 1;
            seen.insert(d.event.id);
            consumer.ack(&[d.id]).unwrap();
            if !paused && seen.len() as u64 == BEFORE / 2 {
                // Halfway through, the leader stops; more events come
                // through the next one; then it goes on.
                paused = true;
                let old = cluster.nodes[leader].as_ref().unwrap();
                old.signal("STOP");
                let others: Vec<String> = (0..3)
                    .filter(|i| *i != leader)
                    .map(|i| cluster.clients[i].to_string())
                    .collect();
                let rest = Client::connect_any(others, ClientOptions::default())
                    .await
                    .unwrap();
                for n in BEFORE..BEFORE + AFTER {
                    rest.append("orders", ExpectedVersion::Any, vec![event(7, n)])
                        .await
                        .unwrap();
                }
                old.signal("CONT");
            }
        }
    })
    .await;
    let expected: HashSet<EventId> = (0..BEFORE + AFTER).map(|n| event(7, n).id).collect();
    assert_eq!(seen, expected);
    assert!(deliveries >= BEFORE + AFTER);
    // The old leader stopped its groups (once it knew it lost the lead);
    // the new one runs the group.
    within(60, "the old leader's groups stopped", async {
        while !not_leader(cluster.clients[leader]).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let groups = client.list_groups().await.unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0].group, "billing");
}

/// A node cut off from the others serves no reads once it has not heard
/// from them for a while (its copy could be behind for ever): here a
/// follower paused while it is removed never learns of its removal, and
/// resumed, it refuses reads and sends the client elsewhere, while the
/// others serve them; then a leader whose only follower is paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_serves_no_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path());
    let leader = cluster.leader().await;
    let (cut, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let client = Client::connect_any(cluster.addresses(), ClientOptions::default())
        .await
        .unwrap();
    let written = client
        .append("acct-c", ExpectedVersion::Any, vec![event(9, 0)])
        .await
        .unwrap();
    let read_on = |addr: SocketAddr| async move {
        Client::connect_with(addr, direct())
            .await
            .unwrap()
            .read_all(
                ReadAllOptions::default().min_position(LogPosition(written.last_position.0 + 1)),
            )
            .try_collect::<Vec<RecordedEvent>>()
            .await
    };
    // It serves reads once it follows the leader.
    within(60, "the follower serves reads", async {
        while !read_on(cluster.clients[cut])
            .await
            .is_ok_and(|events| events.len() == 1)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let paused = cluster.nodes[cut].as_ref().unwrap();
    paused.signal("STOP");
    let out = cli(&[
        "--server",
        &cluster.clients[leader].to_string(),
        "cluster",
        "remove",
        &(cut + 1).to_string(),
    ]);
    assert!(out.contains("removed"), "{out}");
    paused.signal("CONT");
    refuses_reads(cluster.clients[cut]).await;
    assert_eq!(read_on(cluster.clients[other]).await.unwrap().len(), 1);
    assert_eq!(read_on(cluster.clients[leader]).await.unwrap().len(), 1);
    // A leader no quorum answers any more (its one follower paused) may
    // have been replaced: it refuses reads too, and serves them again
    // once the quorum is back.
    let follower = cluster.nodes[other].as_ref().unwrap();
    follower.signal("STOP");
    refuses_reads(cluster.clients[leader]).await;
    follower.signal("CONT");
    within(60, "the leader serves reads again", async {
        while read_on(cluster.clients[leader]).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Scavenges and erasure on a cluster of processes: an erase through the
/// client (answered by the leader once its own files are rewritten) leaves
/// the stream's bytes in no file of any node, each node's scavenge
/// removes what a truncation removed from its own copy, and afterwards the
/// three nodes still hold one log, refuse a reused id of an erased event
/// alike, and read the erased stream as deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scavenges_erasure_and_a_restore_keep_one_log_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let small = logbook_tests::daemon::SMALL_SEGMENTS
        .map(String::from)
        .to_vec();
    let cluster = Cluster::start_with(dir.path(), small.clone());
    let client = Client::connect_any(cluster.addresses(), ClientOptions::default())
        .await
        .unwrap();
    let secret = |n: u64| format!("person-7-secret-{n:04}");
    for batch in 0..60u64 {
        let events: Vec<NewEvent> = (0..20)
            .map(|k| {
                let n = batch * 20 + k;
                NewEvent::new(
                    EventId::from_u128(u128::from(n) + 1),
                    "Noted",
                    format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(100)),
                )
            })
            .collect();
        client
            .append("other", ExpectedVersion::Any, events)
            .await
            .unwrap();
        if batch % 6 == 0 {
            let e = NewEvent::new(
                EventId::from_u128(1_000_000 + u128::from(batch)),
                "Registered",
                format!("{{\"name\":\"{}\"}}", secret(batch)),
            );
            client
                .append("person-7", ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
    }
    let truncated = client
        .truncate_stream("other", StreamVersion(1000))
        .await
        .unwrap()
        .position;
    // Files under `sub` of node i's data directory (every file: "") that
    // hold the erased stream's first event.
    let holding_in = |i: usize, sub: &str| -> usize {
        let m = secret(0);
        let mut n = 0;
        let mut dirs = vec![dir.path().join(format!("n{}", i + 1)).join(sub)];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(b) = std::fs::read(&path) {
                    n += usize::from(b.windows(m.len()).any(|w| w == m.as_bytes()));
                }
            }
        }
        n
    };
    let holding = |i: usize| holding_in(i, "");
    // Each node scavenges its own copy (its sealed segments).
    for addr in &cluster.clients {
        let node = Client::connect_with(*addr, direct()).await.unwrap();
        // Once it applied the truncation.
        node.read_stream_page(
            "other",
            ReadStreamOptions::default().min_position(truncated),
        )
        .await
        .unwrap();
        let report = node
            .scavenge(logbook_client::ScavengeOptions::default())
            .await
            .unwrap();
        assert!(report.events_removed > 0, "{addr}: {report:?}");
        assert!(report.bytes_after < report.bytes_before, "{report:?}");
    }
    assert!((0..3).all(|i| holding(i) > 0));
    let receipt = client.erase("person-7").await.unwrap();
    assert!(receipt.events_removed >= 10, "{receipt:?}");
    assert_eq!(holding_in(cluster.leader().await, "log"), 0);
    // Nor, soon, any file of any node: segments, index, Raft log.
    within(60, "every node erases person-7 from its files", async {
        while (0..3).any(|i| holding(i) > 0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // A reused id of an erased event is refused.
    let reused = NewEvent::new(EventId::from_u128(1_000_000), "Registered", "{}");
    match client
        .append("person-8", ExpectedVersion::Any, vec![reused])
        .await
    {
        Err(Error::DuplicateEventId { .. }) => {}
        other => panic!("a reused id was taken: {other:?}"),
    }
    let end = client
        .append("other", ExpectedVersion::Any, vec![event(9, 0)])
        .await
        .unwrap()
        .last_position;
    let mut logs = Vec::new();
    for addr in &cluster.clients {
        let c = Client::connect_with(*addr, direct()).await.unwrap();
        let read = c
            .read_stream_page("other", ReadStreamOptions::default().min_position(end))
            .await
            .unwrap();
        assert_eq!(read.events.first().map(|e| e.version.0), Some(1000));
        match c
            .read_stream_page("person-7", ReadStreamOptions::default())
            .await
        {
            Err(Error::StreamDeleted { .. }) => {}
            other => panic!("{addr} reads an erased stream: {other:?}"),
        }
        logs.push(whole_log(*addr).await);
    }
    let others = logs[0].iter().filter(|e| e.stream == "other").count();
    assert_eq!(others, 201, "the events left");
    assert!(!logs[0].iter().any(|e| e.stream == "person-7"));
    assert!(
        logs[0] == logs[1] && logs[0] == logs[2],
        "the nodes read alike"
    );
    restored_from_a_backup(dir.path(), cluster, &small, end, &logs[0]).await;
}

/// A backup of a follower of `cluster` (whose log is `log`, through `end`)
/// verifies offline and seeds a new cluster: one node on the restored
/// backup, two empty ones that join and copy the log from it (removed
/// records as ids only), which then read as the old cluster did, refuse
/// the erased event's id, and take new appends. A stopped node's data
/// directory verifies too.
async fn restored_from_a_backup(
    dir: &Path,
    mut cluster: Cluster,
    small: &[String],
    end: LogPosition,
    log: &[RecordedEvent],
) {
    let verify = |data: &Path| {
        let out = std::process::Command::new(logbook_tests::daemon::logbookd())
            .arg("--data-dir")
            .arg(data)
            .arg("verify")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "verify {}: {text}", data.display());
    };
    let follower = (cluster.leader().await + 1) % 3;
    let backup = dir.join("backup");
    cli(&[
        "--server",
        &cluster.clients[follower].to_string(),
        "backup",
        "--to",
        backup.to_str().unwrap(),
    ]);
    verify(&backup);
    let mut stopped = cluster.nodes[follower].take().unwrap();
    stopped.signal("TERM");
    assert!(stopped.wait().success());
    verify(&dir.join(format!("n{}", follower + 1)));
    drop(cluster);

    let ports: Vec<(String, SocketAddr)> = (0..3)
        .map(|_| {
            (
                format!("127.0.0.1:{}", free_port()),
                SocketAddr::from(([127, 0, 0, 1], free_port())),
            )
        })
        .collect();
    let member = |i: usize| format!("{}={}/{}", i + 1, ports[i].0, ports[i].1);
    let start = |data: &Path, i: usize, members: &str, how: &str| {
        let id = (i + 1).to_string();
        let mut args = vec!["--node-id", &id, "--cluster", members, how];
        args.extend(small.iter().map(String::as_str));
        Daemon::start_on(data, &ports[i].1.to_string(), &args)
    };
    // A seed starts a cluster of itself alone: with other members, they
    // might take entries before its events.
    let all = (0..3).map(member).collect::<Vec<_>>().join(",");
    let why = logbook_tests::daemon::refuses([
        "--data-dir",
        backup.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "1",
        "--cluster",
        &all,
        "--seed",
    ]);
    assert!(why.contains("of itself alone"), "no reason given: {why}");

    let _seed = start(&backup, 0, &member(0), "--seed");
    let joined: Vec<Daemon> = (1..3)
        .map(|i| {
            let members = format!("{},{}", member(0), member(i));
            start(&dir.join(format!("r{}", i + 1)), i, &members, "--join")
        })
        .collect();
    for (i, (raft, client)) in ports.iter().enumerate().skip(1) {
        let id = (i + 1).to_string();
        let out = cli(&[
            "--server",
            &ports[0].1.to_string(),
            "cluster",
            "add",
            &id,
            raft,
            &client.to_string(),
        ]);
        assert!(out.contains(&format!("node {id} added")), "{out}");
    }
    for (i, node) in joined.iter().enumerate() {
        let text = node.log_text();
        assert!(
            text.contains("installed a snapshot's events"),
            "node {} copied no snapshot:\n{text}",
            i + 2
        );
    }
    for (_, addr) in &ports {
        let c = Client::connect_with(*addr, direct()).await.unwrap();
        let read: Vec<RecordedEvent> = c
            .read_all(ReadAllOptions::default().min_position(end))
            .try_collect()
            .await
            .unwrap();
        assert!(read == log, "{addr} reads another log than the backup's");
    }
    let client = Client::connect_any(
        ports.iter().map(|(_, a)| a.to_string()).collect::<Vec<_>>(),
        ClientOptions::default(),
    )
    .await
    .unwrap();
    let reused = NewEvent::new(EventId::from_u128(1_000_000), "Registered", "{}");
    match client
        .append("person-8", ExpectedVersion::Any, vec![reused])
        .await
    {
        Err(Error::DuplicateEventId { .. }) => {}
        other => panic!("the restored cluster took a reused id: {other:?}"),
    }
    let next = client
        .append("other", ExpectedVersion::Any, vec![event(9, 1)])
        .await
        .unwrap();
    assert!(next.last_position > end, "{next:?}");
    for (_, addr) in &ports {
        let c = Client::connect_with(*addr, direct()).await.unwrap();
        let read = c
            .read_stream_page(
                "other",
                ReadStreamOptions::default()
                    .min_position(next.last_position)
                    .from(StreamVersion(1201)),
            )
            .await
            .unwrap();
        assert_eq!(read.events.len(), 1, "{addr}");
    }
}
