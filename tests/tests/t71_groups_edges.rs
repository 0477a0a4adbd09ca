//! Consumer groups at their edges (found by review, each reproduced first):
//! more parks at once than one append takes, a park reason larger than an
//! event, checkpoints of a large read-ahead in a store of small events,
//! memberships of deleted groups, a stored definition that no longer
//! starts, a clean stop with events in flight, and a strategy change.

use std::collections::HashSet;

use futures::TryStreamExt;
use logbook_client::{
    Client, Error, EventId, ExpectedVersion, GroupConsumer, GroupDelivery, GroupSettings,
    GroupSource, GroupStart, GroupStrategy, NackAction, NewEvent,
};
use logbook_tests::TestServer;

fn ev(n: u64) -> NewEvent {
    NewEvent::new(EventId::new_v7(), "Worked", n.to_string().into_bytes())
}

fn all() -> GroupSource {
    GroupSource::All { filter: None }
}

async fn next(c: &mut GroupConsumer) -> GroupDelivery {
    c.next()
        .await
        .expect("membership open")
        .expect("a delivery")
}

/// Waits (by subscription) until `n` parked records are written.
async fn parked(client: &Client, group: &str, n: usize) {
    let mut sub = client
        .subscribe_stream(
            format!("$group:{group}:parked").as_str(),
            logbook_client::SubscribeStreamOptions::default(),
        )
        .await
        .unwrap();
    let mut seen = 0;
    while seen < n {
        if let logbook_client::SubscriptionMessage::Event(_) =
            sub.try_next().await.unwrap().unwrap()
        {
            seen += 1;
        }
    }
}

/// Waits (by subscription) for a checkpoint of the group whose floor is
/// at least `floor`.
async fn checkpoint_at(client: &Client, group: &str, floor: u64) {
    let mut sub = client
        .subscribe_stream(
            format!("$group:{group}:checkpoint").as_str(),
            logbook_client::SubscribeStreamOptions::default(),
        )
        .await
        .unwrap();
    loop {
        if let logbook_client::SubscriptionMessage::Event(e) =
            sub.try_next().await.unwrap().unwrap()
        {
            let c: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
            if c["floor"].as_u64().unwrap() >= floor {
                return;
            }
        }
    }
}

/// 12,000 parks decided in one turn (more than one append takes) are all
/// written, in batches, and the floor passes them.
#[tokio::test]
async fn more_parks_at_once_than_one_append_takes() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    for i in 0..2 {
        client
            .append(
                format!("s{i}").as_str(),
                ExpectedVersion::Any,
                (0..6_000).map(ev).collect(),
            )
            .await
            .unwrap();
    }
    let settings = GroupSettings {
        max_in_flight: 12_000,
        ..GroupSettings::default()
    };
    client
        .create_group("g", all(), GroupStart::Start, settings)
        .await
        .unwrap();
    let mut a = client.join_group("g", 6_000).await.unwrap();
    let mut b = client.join_group("g", 6_000).await.unwrap();
    let (mut ia, mut ib) = (Vec::new(), Vec::new());
    for _ in 0..6_000 {
        ia.push(next(&mut a).await.id);
        ib.push(next(&mut b).await.id);
    }
    a.nack(&ia, NackAction::Park { reason: "a".into() })
        .unwrap();
    b.nack(&ib, NackAction::Park { reason: "b".into() })
        .unwrap();
    parked(&client, "g", 12_000).await;
    // The floor follows once the group has counted them (a checkpoint
    // after the parks says so).
    checkpoint_at(&client, "g", 12_000).await;
    let g = &client.list_groups().await.unwrap()[0];
    assert_eq!(g.parked_total, 12_000);
    assert_eq!(g.outstanding, 0);
    // Past every event of the source (the floor is a log position: the
    // group's own records come after them).
    assert!(g.floor >= 12_000, "{g:?}");
    server.stop().await;
}

/// A park reason larger than an event is cut, not a wedge: both parks are
/// written and the floor passes them.
#[tokio::test]
async fn a_park_reason_larger_than_an_event_is_cut() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    client
        .append("s", ExpectedVersion::Any, vec![ev(0), ev(1)])
        .await
        .unwrap();
    client
        .create_group("g", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let mut c = client.join_group("g", 10).await.unwrap();
    let a = next(&mut c).await;
    let b = next(&mut c).await;
    c.nack(
        &[a.id],
        NackAction::Park {
            reason: "x".repeat(5 << 20),
        },
    )
    .unwrap();
    c.nack(
        &[b.id],
        NackAction::Park {
            reason: "ordinary".into(),
        },
    )
    .unwrap();
    parked(&client, "g", 2).await;
    let page = client.list_parked("g", None, 10).await.unwrap();
    assert!(page.entries[0].reason.len() <= 1024 + 3);
    assert_eq!(page.entries[1].reason, "ordinary");
    server.stop().await;
}

/// In a store of small events (8 KiB), a group with a large read-ahead
/// still stores its checkpoints (the read-ahead is capped to what one can
/// name): after a clean restart nothing acknowledged comes again.
#[tokio::test]
async fn checkpoints_fit_in_a_store_of_small_events() {
    let mut server = TestServer::start_tuned(|st, _| st.max_event_bytes = 8 << 10).await;
    let client = Client::connect(server.addr).await.unwrap();
    for k in 0..4 {
        client
            .append(
                format!("s{k}").as_str(),
                ExpectedVersion::Any,
                (0..1_000).map(ev).collect(),
            )
            .await
            .unwrap();
    }
    client
        .create_group("g", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let mut c = client.join_group("g", 5_000).await.unwrap();
    // The first is never acknowledged: it holds the floor, and every
    // other acknowledged event is named in the checkpoint.
    let _first = next(&mut c).await;
    // The read-ahead is capped at what a checkpoint event can name
    // (8 KiB / 80 = 102 events): the other 101 come, and are acknowledged.
    let mut acked = HashSet::new();
    for _ in 0..101 {
        let d = next(&mut c).await;
        acked.insert(d.event.position.0);
        c.ack(&[d.id]).unwrap();
    }
    client.ping().await.unwrap();
    drop(c);
    server.restart().await;
    let client = Client::connect(server.addr).await.unwrap();
    let mut c = client.join_group("g", 5_000).await.unwrap();
    // Everything comes, once: all but what was acknowledged.
    let mut seen = 0;
    while seen < 4_000 - acked.len() {
        let d = next(&mut c).await;
        assert!(
            !acked.contains(&d.event.position.0),
            "{} was acknowledged before the clean restart",
            d.event.position.0
        );
        seen += 1;
        c.ack(&[d.id]).unwrap();
    }
    server.stop().await;
}

/// A deleted group's memberships do not linger on the connection (they
/// would count against its subscription limit for ever).
#[tokio::test]
async fn memberships_of_deleted_groups_are_dropped() {
    let server = TestServer::start_tuned(|_, s| s.max_subscriptions_per_connection = 2).await;
    let client = Client::connect(server.addr).await.unwrap();
    for round in 0..4 {
        client
            .create_group("g", all(), GroupStart::Start, GroupSettings::default())
            .await
            .unwrap();
        let mut c = client
            .join_group("g", 1)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        client.delete_group("g").await.unwrap();
        let err = c.next().await.unwrap().unwrap_err();
        assert!(matches!(err, Error::GroupNotFound { .. }), "{err:?}");
    }
    server.stop().await;
}

/// A stored definition that no longer starts (an expression this version
/// refuses) leaves that group out; the server and the other groups go on.
#[tokio::test]
async fn a_definition_that_cannot_start_is_left_out() {
    let mut server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    client
        .create_group("fine", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let def = serde_json::json!({
        "group": "old", "filter": { "stream_regex": "(" }, "start": "start", "from": 0,
        "ack_wait_ms": 30000, "max_deliveries": 10, "max_in_flight": 1000,
        "strategy": "round_robin"
    });
    server
        .store
        .append(
            &logbook_protocol::StreamName::new("$groups").unwrap(),
            ExpectedVersion::Any,
            vec![NewEvent::new(
                EventId::new_v7(),
                "$group-created",
                serde_json::to_vec(&def).unwrap(),
            )],
        )
        .await
        .unwrap();
    server.restart().await;
    let client = Client::connect(server.addr).await.unwrap();
    let names: Vec<String> = client
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.group)
        .collect();
    assert_eq!(names, ["fine"]);
    server.stop().await;
}

/// A clean stop is no failure of the consumers': with max_deliveries 1,
/// what they held is delivered again after the restart, not parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_parks_nothing() {
    for _ in 0..5 {
        let mut server = TestServer::start().await;
        let client = Client::connect(server.addr).await.unwrap();
        client
            .append("s", ExpectedVersion::Any, (0..50).map(ev).collect())
            .await
            .unwrap();
        let settings = GroupSettings {
            max_deliveries: 1,
            ..GroupSettings::default()
        };
        client
            .create_group("g", all(), GroupStart::Start, settings)
            .await
            .unwrap();
        let mut c = client.join_group("g", 50).await.unwrap();
        for _ in 0..50 {
            next(&mut c).await;
        }
        server.restart().await;
        let client = Client::connect(server.addr).await.unwrap();
        let g = &client.list_groups().await.unwrap()[0];
        assert_eq!((g.parked, g.floor), (0, 0), "{g:?}");
        let mut c = client.join_group("g", 50).await.unwrap();
        let d = next(&mut c).await;
        assert_eq!(d.deliveries, 2);
        server.stop().await;
    }
}

#[tokio::test]
async fn the_strategy_is_fixed_at_creation() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    client
        .create_group("g", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let err = client
        .update_group(
            "g",
            GroupSettings {
                strategy: GroupStrategy::PerStream,
                ..GroupSettings::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    server.stop().await;
}

/// SIGKILL of the daemon while consumers ack: after the restart nothing is
/// lost (every event is delivered until acknowledged), and nothing the
/// last stored checkpoint names as finished (below its floor, or in its
/// done ranges) comes again: the stored checkpoint was never ahead of what
/// was acknowledged.
#[tokio::test]
async fn a_killed_daemon_loses_nothing_and_its_checkpoint_was_never_ahead() {
    use logbook_tests::daemon::Daemon;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = format!("127.0.0.1:{}", logbook_tests::reserved_port());
    let daemon = Daemon::start_on(&data, &addr, &[]);
    let client = Client::connect(daemon.addr).await.unwrap();
    for s in 0..10 {
        client
            .append(
                format!("k-{s}").as_str(),
                ExpectedVersion::Any,
                (0..30).map(ev).collect(),
            )
            .await
            .unwrap();
    }
    client
        .create_group("k", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    // A window past the 50 left unacknowledged: nothing waits for an ack
    // wait to pass.
    let mut c = client.join_group("k", 100).await.unwrap();
    let mut acked = HashSet::new();
    // Ack 200 of the 300, leaving every fifth unacknowledged, and wait
    // until a checkpoint names most of them.
    for i in 0..250 {
        let d = next(&mut c).await;
        if i % 5 != 4 {
            acked.insert(d.event.position.0);
            c.ack(&[d.id]).unwrap();
        }
    }
    checkpoint_at(&client, "k", 1).await;
    // The last checkpoint stored, as the restarted daemon will read it.
    let stored = client
        .read_stream_page(
            "$group:k:checkpoint",
            logbook_client::ReadStreamOptions::default().backward(),
        )
        .await
        .unwrap()
        .events
        .remove(0);
    drop(c);
    drop(client);
    daemon.kill();
    let c: serde_json::Value = serde_json::from_slice(&stored.data).unwrap();
    let floor = c["floor"].as_u64().unwrap();
    let mut finished: HashSet<u64> = (0..floor).collect();
    for r in c["done"].as_array().unwrap() {
        finished.extend(r[0].as_u64().unwrap()..r[1].as_u64().unwrap());
    }
    // Never ahead: everything the checkpoint calls finished was acked.
    for p in finished.iter().filter(|p| **p < 300) {
        assert!(
            acked.contains(p),
            "the checkpoint names {p}, never acknowledged"
        );
    }
    let daemon = Daemon::start_on(&data, &addr, &[]);
    let client = Client::connect(daemon.addr).await.unwrap();
    let mut c = client.join_group("k", 100).await.unwrap();
    let mut all_acked = acked.clone();
    while all_acked.len() < 300 {
        let d = next(&mut c).await;
        let p = d.event.position.0;
        assert!(
            !finished.contains(&p),
            "{p} came again, though the stored checkpoint had it finished"
        );
        all_acked.insert(p);
        c.ack(&[d.id]).unwrap();
    }
    drop(c);
    drop(client);
    daemon.kill();
}

/// The server keeps at most --max-groups groups.
#[tokio::test]
async fn groups_past_the_limit_are_refused() {
    let server = TestServer::start_tuned(|_, s| s.max_groups = 2).await;
    let client = Client::connect(server.addr).await.unwrap();
    for g in ["a", "b"] {
        client
            .create_group(g, all(), GroupStart::Start, GroupSettings::default())
            .await
            .unwrap();
    }
    let err = client
        .create_group("c", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    client.delete_group("a").await.unwrap();
    client
        .create_group("c", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    server.stop().await;
}
