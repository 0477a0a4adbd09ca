//! The replication port against hostile or confused peers: garbage, a
//! frame that claims to be huge, a bad checksum, a hello of another
//! cluster, without the secret or with other size limits, a request before
//! the hello, fetches of records. Each such
//! connection is closed (or refused with a reason), and the node goes on
//! committing appends.

use std::collections::BTreeMap;
use std::time::Duration;

use logbook_consensus::node::{Node, NodeConfig, Role};
use logbook_consensus::tcp::Limits;
use logbook_consensus::{Batch, Command, EventData, ExpectedVersion, Member, Outcome};
use logbook_storage::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A frame as the replication port reads them.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    logbook_consensus::frame::encode(payload, &mut out);
    out
}

/// A MessagePack hello (`{"Hello": {cluster, from, secret, limits}}`, as
/// serde writes the enum), with the engine's default size limits.
fn hello(cluster: &str, secret: Option<&str>) -> Vec<u8> {
    hello_with(cluster, secret, Limits::of(&StoreConfig::new("unused")))
}

fn hello_with(cluster: &str, secret: Option<&str>, limits: Limits) -> Vec<u8> {
    #[derive(serde::Serialize)]
    enum Request<'a> {
        Hello {
            cluster: &'a str,
            from: u64,
            secret: Option<&'a str>,
            limits: Limits,
        },
    }
    rmp_serde::to_vec(&Request::Hello {
        cluster,
        from: 9,
        secret,
        limits,
    })
    .unwrap()
}

/// Sends `bytes` and reads until the node closes the connection; returns
/// what it sent back.
async fn send(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut back = Vec::new();
    // The node closes it (a refusal, or a frame it cannot take).
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut back))
        .await
        .expect("the node closes a connection it cannot trust")
        .ok();
    back
}

/// Asks the node at `addr` for its records `from..to`, as a member
/// installing a snapshot does (the messages mirror the port's: same
/// variants in the same order).
async fn fetch(addr: std::net::SocketAddr, from: u64, to: u64) -> Result<Vec<Batch>, String> {
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum Request {
        Hello {
            cluster: String,
            from: u64,
            secret: Option<String>,
        },
        AppendEntries(()),
        Vote(()),
        PreVote(()),
        Snapshot(()),
        Fetch {
            from: u64,
            to: u64,
            max_bytes: u64,
        },
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    enum Response {
        Hello(Result<(), String>),
        AppendEntries(serde::de::IgnoredAny),
        Vote(serde::de::IgnoredAny),
        Snapshot(serde::de::IgnoredAny),
        Fetch(Result<Vec<Batch>, String>),
    }
    let mut bytes = frame(&hello("logbook", Some("s3cret")));
    let request = Request::Fetch {
        from,
        to,
        max_bytes: u64::MAX,
    };
    bytes.extend_from_slice(&frame(&rmp_serde::to_vec(&request).unwrap()));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut back = Vec::new();
    loop {
        let (payload, used) = match logbook_consensus::frame::at(&back) {
            Some((p, n)) => (p.to_vec(), n),
            None => {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before answering");
                back.extend_from_slice(&buf[..n]);
                continue;
            }
        };
        back.drain(..used);
        match rmp_serde::from_slice::<Response>(&payload).unwrap() {
            Response::Hello(r) => r.unwrap(),
            Response::Fetch(r) => return r,
            _ => panic!("an answer of another kind"),
        }
    }
}

async fn append(node: &Node, n: u8) -> Outcome {
    let command = Command::Append {
        stream: "acct-1".into(),
        expected: ExpectedVersion::Any,
        events: vec![EventData {
            id: [n; 16],
            event_type: "Deposited".into(),
            metadata: bytes::Bytes::new(),
            data: bytes::Bytes::from_static(b"{}"),
        }],
        timestamp_us: 1_700_000_000_000_000,
    };
    node.propose(command).await.unwrap().await.unwrap()
}

/// A one-node cluster in `dir`, with the secret `s3cret`, once it leads.
async fn single_node(dir: &std::path::Path) -> (Node, Store) {
    let store = Store::open(StoreConfig::new(dir.join("events"))).unwrap();
    let node = Node::start(
        NodeConfig {
            id: 1,
            members: BTreeMap::from([(1, Member::default())]),
            listen: "127.0.0.1:0".parse().unwrap(),
            cluster: "logbook".into(),
            secret: Some("s3cret".into()),
            dir: dir.join("raft"),
            join: false,
            tls: None,
            snapshot_every: 0,
            seed: false,
        },
        store.clone(),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        while node.status().role != Role::Leader {
            node.changed().await;
        }
    })
    .await
    .expect("a single node elects itself");
    (node, store)
}

/// Strangers that connect and say nothing wait in a small budget of their
/// own, a few per address: one more from the same address is closed at
/// once, and a member from another address still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_waiting_for_their_hello_leave_room_for_members() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _store) = single_node(dir.path()).await;
    assert!(matches!(append(&node, 1).await, Outcome::Appended { .. }));
    let addr = node.raft_addr();
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        socket.connect(addr)
    };
    // Four idle connections from 127.0.0.2, each accepted before the next
    // (a member's fetch, connected after it, is answered only once the
    // accept loop took it).
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(from("127.0.0.2").await.unwrap());
        assert_eq!(fetch(addr, 0, u64::MAX).await.unwrap().len(), 1);
    }
    // A fifth from there is closed at once (well before the hello's 10 s).
    let mut fifth = from("127.0.0.2").await.unwrap();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a fifth stranger's connection stays open: {closed:?}"
    );
    // A member from another address gets in and is served.
    assert_eq!(fetch(addr, 0, u64::MAX).await.unwrap().len(), 1);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_port_closes_what_it_cannot_trust_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (node, _store) = single_node(dir.path()).await;
    assert!(matches!(append(&node, 1).await, Outcome::Appended { .. }));
    let addr = node.raft_addr();

    // Garbage, a huge length, a bad checksum: closed without an answer.
    let mut bad_crc = frame(&hello("logbook", Some("s3cret")));
    bad_crc[9] ^= 0x40;
    let huge = [0xff, 0xff, 0xff, 0x0f, 0, 0, 0, 0];
    for bytes in [b"GET / HTTP/1.1\r\n\r\n".to_vec(), huge.to_vec(), bad_crc] {
        assert!(send(addr, &bytes).await.is_empty(), "{bytes:?}");
    }
    // Another cluster, no secret, a wrong one, a request before the
    // hello: refused with a reason.
    // Other size limits (an append taken on one node would be refused on
    // the other): refused too.
    let other_limits = Limits {
        max_event_bytes: 1 << 10,
        max_batch_bytes: 1 << 20,
        max_batch_events: 10,
    };
    for (h, why) in [
        (hello("other", Some("s3cret")), "cluster"),
        (hello("logbook", None), "secret"),
        (hello("logbook", Some("guess")), "secret"),
        (
            hello_with("logbook", Some("s3cret"), other_limits),
            "--max-event-bytes",
        ),
        (rmp_serde::to_vec(&"Vote").unwrap(), "hello"),
    ] {
        let back = send(addr, &frame(&h)).await;
        let (payload, _) = logbook_consensus::frame::at(&back).expect("a framed refusal");
        let text = String::from_utf8_lossy(payload);
        assert!(text.contains(why), "{text}");
    }
    // The right hello, then garbage: closed after the hello's answer.
    let mut bytes = frame(&hello("logbook", Some("s3cret")));
    bytes.extend_from_slice(&frame(b"\xc1 not msgpack"));
    let back = send(addr, &bytes).await;
    assert!(logbook_consensus::frame::at(&back).is_some());

    // A member fetching records (as a node installing a snapshot does):
    // what the log holds, nothing past its head, and a clear refusal for a
    // position inside a record.
    let two = Command::Append {
        stream: "acct-2".into(),
        expected: ExpectedVersion::Any,
        events: (7..9)
            .map(|n| EventData {
                id: [n; 16],
                event_type: "Deposited".into(),
                metadata: bytes::Bytes::new(),
                data: bytes::Bytes::from_static(b"{}"),
            })
            .collect(),
        timestamp_us: 1_700_000_000_000_000,
    };
    node.propose(two).await.unwrap().await.unwrap();
    let all = fetch(addr, 0, u64::MAX).await.unwrap();
    assert_eq!(
        all.iter().map(|b| b.events.len()).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(all[1].stream, "acct-2");
    assert_eq!(fetch(addr, 1, 3).await.unwrap(), all[1..]);
    assert_eq!(fetch(addr, 3, u64::MAX).await.unwrap(), []);
    assert_eq!(fetch(addr, 1, 2).await.unwrap(), [], "no record cut short");
    let inside = fetch(addr, 2, 3).await.unwrap_err();
    assert!(inside.contains("not where a record"), "{inside}");

    // The node is still leading and committing.
    assert_eq!(node.status().role, Role::Leader);
    assert!(matches!(append(&node, 2).await, Outcome::Appended { .. }));

    // Membership changes it refuses: removing the only voter, adding a
    // member again at other addresses. Removing a stranger is a no-op.
    use logbook_consensus::node::{Joining, MembershipError};
    assert!(matches!(
        node.remove_member(1).await,
        Err(MembershipError::Invalid(_))
    ));
    let elsewhere = Member {
        raft: "127.0.0.1:1".into(),
        client: "127.0.0.1:2".into(),
    };
    assert!(matches!(
        node.add_member(1, elsewhere.clone()).await,
        Err(MembershipError::Invalid(_))
    ));
    assert_eq!(
        node.add_member(1, Member::default()).await,
        Ok(Joining::Voter)
    );
    assert_eq!(node.remove_member(9).await, Ok(()));
    // A learner nobody runs: added, behind, and removed again; the node
    // goes on committing alone meanwhile (a learner does not vote).
    assert!(matches!(
        node.add_member(9, elsewhere.clone()).await,
        Ok(Joining::CatchingUp { .. })
    ));
    // (The metrics follow the commit: waited for.)
    let members_are = |want: &'static [(u64, bool)]| {
        let node = &node;
        async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    let now: Vec<(u64, bool)> = node
                        .status()
                        .members
                        .iter()
                        .map(|m| (m.id, m.voter))
                        .collect();
                    if now == want {
                        return;
                    }
                    node.changed().await;
                }
            })
            .await
            .expect("the members as changed")
        }
    };
    members_are(&[(1, true), (9, false)]).await;
    assert!(matches!(append(&node, 3).await, Outcome::Appended { .. }));
    // Asked again, it stays a learner: the leader never reached it (made
    // a voter, it would stall this one-node cluster's every commit).
    let again = tokio::time::timeout(
        Duration::from_secs(10),
        node.add_member(9, elsewhere.clone()),
    )
    .await
    .expect("an answer at once");
    assert!(matches!(again, Ok(Joining::CatchingUp { .. })), "{again:?}");
    members_are(&[(1, true), (9, false)]).await;
    assert_eq!(node.remove_member(9).await, Ok(()));
    members_are(&[(1, true)]).await;
    node.shutdown().await;
}
