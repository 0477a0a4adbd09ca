//! Consumer groups against a real daemon in this process: competing
//! consumers share the work, per-stream order holds with several
//! consumers, a poison event is parked after its deliveries while the
//! others carry on, a restart delivers again only what was unsettled,
//! groups are created, listed, updated and deleted, and the server's group
//! streams refuse client writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use logbook_client::{
    Client, Error, EventId, ExpectedVersion, Filter, GroupConsumer, GroupDelivery, GroupSettings,
    GroupSource, GroupStart, GroupStrategy, NackAction, NewEvent,
};
use logbook_tests::TestServer;
use parking_lot::Mutex;

fn ev(n: u64) -> NewEvent {
    NewEvent::new(EventId::new_v7(), "Worked", n.to_string().into_bytes())
}

fn all() -> GroupSource {
    GroupSource::All { filter: None }
}

async fn append_streams(client: &Client, streams: usize, per_stream: u64) -> u64 {
    let mut n = 0;
    for v in 0..per_stream {
        for s in 0..streams {
            client
                .append(
                    format!("job-{s}").as_str(),
                    ExpectedVersion::Any,
                    vec![ev(v)],
                )
                .await
                .unwrap();
            n += 1;
        }
    }
    n
}

/// The first `n` records of a group's parked list, as they are written
/// (followed with a subscription: no polling).
async fn parked(client: &Client, group: &str, n: usize) -> Vec<serde_json::Value> {
    use futures::TryStreamExt;
    let mut sub = client
        .subscribe_stream(
            format!("$group:{group}:parked").as_str(),
            logbook_client::SubscribeStreamOptions::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        if let logbook_client::SubscriptionMessage::Event(e) =
            sub.try_next().await.unwrap().unwrap()
        {
            out.push(serde_json::from_slice(&e.data).unwrap());
        }
    }
    out
}

async fn next(c: &mut GroupConsumer) -> GroupDelivery {
    c.next()
        .await
        .expect("membership open")
        .expect("a delivery")
}

#[tokio::test]
async fn two_consumers_share_every_event_once() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let n = append_streams(&client, 10, 10).await;
    client
        .create_group("work", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let mut a = client.join_group("work", 7).await.unwrap();
    let mut b = client.join_group("work", 7).await.unwrap();
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut by = [0u64; 2];
    while (seen.len() as u64) < n {
        tokio::select! {
            d = next(&mut a) => { *seen.entry(d.event.position.0).or_default() += 1; by[0] += 1; a.ack(&[d.id]).unwrap(); }
            d = next(&mut b) => { *seen.entry(d.event.position.0).or_default() += 1; by[1] += 1; b.ack(&[d.id]).unwrap(); }
        }
    }
    assert!(seen.values().all(|&k| k == 1), "each event once");
    assert!(by[0] > 0 && by[1] > 0, "both consumers worked: {by:?}");
    let groups = client.list_groups().await.unwrap();
    assert_eq!(groups.len(), 1);
    let g = &groups[0];
    assert_eq!(g.group, "work");
    assert_eq!(g.consumers, 2);
    assert_eq!(g.delivered, n);
    server.stop().await;
}

/// Per-stream: with three consumers acking at their own pace, no two
/// events of one stream are ever held at once, and each stream's events
/// are acknowledged in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_stream_order_holds_across_consumers() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let n = append_streams(&client, 12, 15).await;
    let settings = GroupSettings {
        strategy: GroupStrategy::PerStream,
        ..GroupSettings::default()
    };
    client
        .create_group("ordered", all(), GroupStart::Start, settings)
        .await
        .unwrap();
    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let acked: Arc<Mutex<BTreeMap<String, Vec<u64>>>> = Arc::default();
    let total: Arc<Mutex<u64>> = Arc::default();
    // Set when every event is acknowledged: the consumers stop.
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let done_tx = Arc::new(done_tx);
    let mut tasks = Vec::new();
    for k in 0..3u64 {
        let (client, held, acked, total) = (
            client.clone(),
            Arc::clone(&held),
            Arc::clone(&acked),
            Arc::clone(&total),
        );
        let (done_tx, mut done_rx) = (Arc::clone(&done_tx), done_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = client.join_group("ordered", 4).await.unwrap();
            let mut turn = k;
            loop {
                let d = tokio::select! {
                    d = next(&mut c) => d,
                    _ = done_rx.wait_for(|d| *d) => return,
                };
                let stream = d.event.stream.to_string();
                assert!(
                    held.lock().insert(stream.clone()),
                    "two events of {stream} held at once"
                );
                // Work a little, differently per consumer.
                turn += 1;
                for _ in 0..(turn % 3) {
                    tokio::task::yield_now().await;
                }
                acked
                    .lock()
                    .entry(stream.clone())
                    .or_default()
                    .push(d.event.version.0);
                held.lock().remove(&stream);
                c.ack(&[d.id]).unwrap();
                let mut t = total.lock();
                *t += 1;
                if *t == n {
                    done_tx.send_replace(true);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().clone();
    assert_eq!(acked.len(), 12);
    for (stream, versions) in acked.iter() {
        assert_eq!(
            versions,
            &(0..15).collect::<Vec<_>>(),
            "{stream} in order, once each"
        );
    }
    server.stop().await;
}

/// A consumer that crashes each time it gets one event: after
/// `max_deliveries` the event is parked, and everything else is
/// acknowledged by the other consumer meanwhile.
#[tokio::test]
async fn a_poison_event_is_parked_while_the_others_carry_on() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    for i in 0..20 {
        let s = if i == 5 { "poison" } else { "fine" };
        client
            .append(s, ExpectedVersion::Any, vec![ev(i)])
            .await
            .unwrap();
    }
    let settings = GroupSettings {
        max_deliveries: 3,
        ..GroupSettings::default()
    };
    client
        .create_group("p", all(), GroupStart::Start, settings)
        .await
        .unwrap();
    let mut good = client.join_group("p", 1).await.unwrap();
    let mut crashes = 0;
    let mut acked = 0;
    let mut bad = client.join_group("p", 1).await.unwrap();
    while acked < 19 || crashes < 3 {
        tokio::select! {
            d = next(&mut good) => {
                if d.event.stream.as_str() == "poison" {
                    // The good consumer crashes on it too.
                    crashes += 1;
                    assert!(d.deliveries <= 3);
                    good = client.join_group("p", 1).await.unwrap();
                } else {
                    acked += 1;
                    good.ack(&[d.id]).unwrap();
                }
            }
            d = next(&mut bad) => {
                if d.event.stream.as_str() == "poison" {
                    crashes += 1;
                    assert!(d.deliveries <= 3, "delivered {} times", d.deliveries);
                    // Crash: the membership goes with its connection.
                    drop(bad);
                    bad = client.join_group("p", 1).await.unwrap();
                } else {
                    acked += 1;
                    bad.ack(&[d.id]).unwrap();
                }
            }
        }
    }
    assert_eq!(crashes, 3);
    // The parked list names it, with why and how often.
    let record = &parked(&client, "p", 1).await[0];
    assert_eq!(record["stream"], "poison");
    assert_eq!(record["deliveries"], 3);
    let g = &client.list_groups().await.unwrap()[0];
    assert_eq!(g.parked, 1);
    assert_eq!(g.acked, 19);
    server.stop().await;
}

/// A restart (clean stop, then start) delivers again only what was
/// delivered and not acknowledged; nothing acknowledged comes back.
#[tokio::test]
async fn after_a_restart_only_unsettled_events_come_again() {
    let mut server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let n = append_streams(&client, 5, 10).await;
    client
        .create_group("r", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let mut c = client.join_group("r", 10).await.unwrap();
    let mut acked = HashSet::new();
    let mut unsettled = HashSet::new();
    for i in 0..20 {
        let d = next(&mut c).await;
        if i % 4 == 3 {
            unsettled.insert(d.event.position.0);
        } else {
            acked.insert(d.event.position.0);
            c.ack(&[d.id]).unwrap();
        }
    }
    // The acks are on their way; a ping behind them on the same connection
    // makes sure the server has read them before it stops.
    client.ping().await.unwrap();
    drop(c);
    server.restart().await;
    let client = Client::connect(server.addr).await.unwrap();
    let mut c = client.join_group("r", 10).await.unwrap();
    let mut again = HashSet::new();
    while (acked.len() + again.len()) < n as usize {
        let d = next(&mut c).await;
        let p = d.event.position.0;
        assert!(
            !acked.contains(&p),
            "{p} was acknowledged before the restart"
        );
        assert!(again.insert(p), "{p} twice after the restart");
        c.ack(&[d.id]).unwrap();
    }
    assert!(unsettled.is_subset(&again));
    server.stop().await;
}

#[tokio::test]
async fn groups_are_created_updated_listed_and_deleted() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_streams(&client, 2, 3).await;
    let filter = Filter {
        stream_prefixes: vec!["job-1".into()],
        ..Filter::default()
    };
    let g = client
        .create_group(
            "only-1",
            GroupSource::All {
                filter: Some(filter),
            },
            GroupStart::Start,
            GroupSettings::default(),
        )
        .await
        .unwrap();
    assert_eq!(g.settings, GroupSettings::default());
    let err = client
        .create_group("only-1", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::GroupExists { .. }), "{err:?}");
    client
        .create_group(
            "stream",
            GroupSource::Stream {
                stream: "job-0".into(),
            },
            GroupStart::End,
            GroupSettings::default(),
        )
        .await
        .unwrap();
    // The filtered group delivers job-1's events only.
    let mut c = client.join_group("only-1", 10).await.unwrap();
    for v in 0..3 {
        let d = next(&mut c).await;
        assert_eq!(d.event.stream.as_str(), "job-1");
        assert_eq!(d.event.version.0, v);
        c.ack(&[d.id]).unwrap();
    }
    // The stream group started at the end: only what comes next.
    let mut s = client.join_group("stream", 10).await.unwrap();
    client
        .append("job-0", ExpectedVersion::Any, vec![ev(99)])
        .await
        .unwrap();
    let d = next(&mut s).await;
    assert_eq!((d.event.stream.as_str(), d.event.version.0), ("job-0", 3));
    let updated = client
        .update_group(
            "stream",
            GroupSettings {
                max_deliveries: 2,
                ..GroupSettings::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.settings.max_deliveries, 2);
    let names: Vec<String> = client
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.group)
        .collect();
    assert_eq!(names, ["only-1", "stream"]);
    // Deleting ends its consumers' deliveries with GroupNotFound.
    client.delete_group("only-1").await.unwrap();
    let err = c.next().await.unwrap().unwrap_err();
    assert!(matches!(err, Error::GroupNotFound { .. }), "{err:?}");
    assert!(c.next().await.is_none());
    let err = client.join_group("only-1", 1).await.unwrap_err();
    assert!(matches!(err, Error::GroupNotFound { .. }), "{err:?}");
    // Created again, it starts afresh.
    client
        .create_group("only-1", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let mut c = client.join_group("only-1", 100).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.event.position.0, 0);
    assert_eq!(d.deliveries, 1);
    // Bad definitions are refused.
    for (name, settings) in [
        ("bad name", GroupSettings::default()),
        (
            "zero",
            GroupSettings {
                max_deliveries: 0,
                ..GroupSettings::default()
            },
        ),
    ] {
        let err = client
            .create_group(name, all(), GroupStart::Start, settings)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn nacks_retry_skip_and_park() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_streams(&client, 3, 1).await;
    client
        .create_group("n", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let mut c = client.join_group("n", 10).await.unwrap();
    let mut got: BTreeMap<u64, GroupDelivery> = BTreeMap::new();
    for _ in 0..3 {
        let d = next(&mut c).await;
        got.insert(d.event.position.0, d);
    }
    let ids: Vec<u64> = got.values().map(|d| d.id).collect();
    c.nack(&ids[0..1], NackAction::Retry { delay_ms: 0 })
        .unwrap();
    c.nack(&ids[1..2], NackAction::Skip).unwrap();
    c.nack(
        &ids[2..3],
        NackAction::Park {
            reason: "cannot bill".into(),
        },
    )
    .unwrap();
    let again = next(&mut c).await;
    assert_eq!(again.id, ids[0]);
    assert_eq!(again.deliveries, 2);
    c.ack(&[again.id]).unwrap();
    let record = &parked(&client, "n", 1).await[0];
    assert_eq!(record["reason"], "cannot bill");
    server.stop().await;
}

#[tokio::test]
async fn the_servers_group_streams_refuse_client_writes() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    for stream in ["$groups", "$group:x:checkpoint", "$group:x:parked"] {
        let err = client
            .append(stream, ExpectedVersion::Any, vec![ev(0)])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{stream}: {err:?}");
        let err = client
            .delete_stream(stream, ExpectedVersion::Any, logbook_client::Deletion::Soft)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{stream}: {err:?}");
    }
    server.stop().await;
}

/// Waits (by subscription, no polling) for the `n`-th lifecycle event of
/// a group's parked list: its truncations as replayed entries finish.
async fn parked_truncations(client: &Client, group: &str, n: usize) {
    use futures::TryStreamExt;
    let mut sub = client
        .subscribe_stream(
            format!("$$$group:{group}:parked").as_str(),
            logbook_client::SubscribeStreamOptions::default(),
        )
        .await
        .unwrap();
    let mut seen = 0;
    while seen < n {
        if let logbook_client::SubscriptionMessage::Event(e) =
            sub.try_next().await.unwrap().unwrap()
            && e.event_type.as_str() == "$truncated"
        {
            seen += 1;
        }
    }
}

#[tokio::test]
async fn parked_events_are_listed_replayed_and_deleted() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_streams(&client, 6, 1).await;
    client
        .create_group("pk", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    let mut c = client.join_group("pk", 10).await.unwrap();
    let mut parked_positions = Vec::new();
    for _ in 0..6 {
        let d = next(&mut c).await;
        if d.event.position.0 % 2 == 0 {
            parked_positions.push(d.event.position.0);
            c.nack(
                &[d.id],
                NackAction::Park {
                    reason: format!("bad {}", d.event.position.0),
                },
            )
            .unwrap();
        } else {
            c.ack(&[d.id]).unwrap();
        }
    }
    let records = parked(&client, "pk", 3).await;
    assert_eq!(records.len(), 3);
    // Listed, in pages.
    let first = client.list_parked("pk", None, 2).await.unwrap();
    assert_eq!(first.entries.len(), 2);
    let rest = client.list_parked("pk", first.next, 2).await.unwrap();
    assert_eq!(rest.entries.len(), 1);
    assert_eq!(rest.next, None);
    let listed: Vec<u64> = first
        .entries
        .iter()
        .chain(&rest.entries)
        .map(|e| e.position)
        .collect();
    assert_eq!(listed, parked_positions);
    assert!(first.entries[0].reason.starts_with("bad "));
    assert!(first.entries[0].parked_at_us > 0);
    // Replayed: delivered again (fresh counts), the list empties as they
    // are acknowledged.
    let r = client.replay_parked("pk", None).await.unwrap();
    assert_eq!(r.entries, 3);
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = next(&mut c).await;
        assert_eq!(d.deliveries, 1);
        again.push(d.event.position.0);
        c.ack(&[d.id]).unwrap();
    }
    again.sort_unstable();
    assert_eq!(again, parked_positions);
    parked_truncations(&client, "pk", 1).await;
    let left = client.list_parked("pk", None, 10).await.unwrap();
    assert!(left.entries.is_empty(), "{left:?}");
    // Parked again, then deleted.
    append_streams(&client, 1, 1).await;
    let d = next(&mut c).await;
    c.nack(
        &[d.id],
        NackAction::Park {
            reason: "again".into(),
        },
    )
    .unwrap();
    // (The list holds only this one now: the replayed three were dropped.)
    parked(&client, "pk", 1).await;
    assert_eq!(client.delete_parked("pk").await.unwrap(), 1);
    assert!(
        client
            .list_parked("pk", None, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    let err = client.replay_parked("nope", None).await.unwrap_err();
    assert!(matches!(err, Error::GroupNotFound { .. }), "{err:?}");
    server.stop().await;
}

/// A replay of many parked events holds no more than the group's
/// read-ahead: the entries are read from the list as room frees. (The
/// parked list is filled straight through the engine, as a server would
/// have after many failures; BENCHMARKS.md has the 1M figure.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_many_parked_events_holds_bounded_memory() {
    use logbook_protocol::StreamName;
    let server =
        TestServer::start_tuned(|s, _| s.durability = logbook_storage::Durability::Os).await;
    let client = Client::connect(server.addr).await.unwrap();
    append_streams(&client, 10, 1).await;
    let settings = GroupSettings {
        max_in_flight: 50,
        ..GroupSettings::default()
    };
    client
        .create_group("many", all(), GroupStart::End, settings)
        .await
        .unwrap();
    const PARKED: u64 = 20_000;
    let stream = StreamName::new("$group:many:parked").unwrap();
    for batch in 0..PARKED / 500 {
        let events: Vec<NewEvent> = (0..500)
            .map(|i| {
                let p = (batch * 500 + i) % 10;
                let json = serde_json::json!({
                    "seq": p, "position": p, "stream": format!("job-{p}"),
                    "version": 0, "reason": "bulk", "deliveries": 10,
                });
                NewEvent::new(
                    EventId::new_v7(),
                    "$parked",
                    serde_json::to_vec(&json).unwrap(),
                )
            })
            .collect();
        server
            .store
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let r = client.replay_parked("many", None).await.unwrap();
    assert_eq!(r.entries, PARKED);
    let mut c = client.join_group("many", 200).await.unwrap();
    // The read-ahead: max(4 x max_in_flight, 1,000).
    let bound = 1_000;
    let mut got = 0u64;
    while got < PARKED {
        let d = next(&mut c).await;
        c.ack(&[d.id]).unwrap();
        got += 1;
        if got.is_multiple_of(1000) {
            let g = client.list_groups().await.unwrap().remove(0);
            assert!(g.outstanding <= bound, "{} outstanding", g.outstanding);
        }
    }
    server.stop().await;
}

/// Random consumers against a real server: they join and vanish
/// (dropped connections), ack, retry, skip or park at random, and the
/// server restarts cleanly now and then. Every event ends acknowledged,
/// skipped or parked; nothing acknowledged before a clean restart (and
/// confirmed read by the server) is delivered after it; per-stream order
/// never gives one consumer set two events of a stream at once while no
/// delivery timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_consumers_and_restarts_against_the_model() {
    for seed in [
        0x9e37_79b9_7f4a_7c15u64,
        0x2545_f491_4f6c_dd1d,
        0xdead_beef_cafe_f00d,
    ] {
        for strategy in [GroupStrategy::RoundRobin, GroupStrategy::PerStream] {
            random_run(seed, strategy).await;
        }
    }
}

async fn random_run(seed: u64, strategy: GroupStrategy) {
    use futures::TryStreamExt;
    let mut rng = seed;
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    let mut server =
        TestServer::start_tuned(|s, _| s.durability = logbook_storage::Durability::Os).await;
    let mut client = Client::connect(server.addr).await.unwrap();
    let n = append_streams(&client, 8, 25).await;
    let settings = GroupSettings {
        strategy,
        max_deliveries: 4,
        // Long: no delivery times out, so what a consumer holds is its own.
        ack_wait_ms: 600_000,
        ..GroupSettings::default()
    };
    client
        .create_group("m", all(), GroupStart::Start, settings)
        .await
        .unwrap();
    // Positions of the source's events, and how each ended.
    let mut acked: HashSet<u64> = HashSet::new();
    let mut skipped: HashSet<u64> = HashSet::new();
    let mut consumers: Vec<(GroupConsumer, Vec<GroupDelivery>)> = Vec::new();
    let mut restarts = 0;
    for step in 0..1200 {
        if consumers.is_empty() || rand(10) == 0 {
            consumers.push((
                client.join_group("m", 1 + rand(6) as u32).await.unwrap(),
                Vec::new(),
            ));
        }
        let k = rand(consumers.len() as u64) as usize;
        match rand(20) {
            // Take what has come (without waiting for more than one).
            0..=7 => {
                let (c, held) = &mut consumers[k];
                if held.len() < 6 {
                    let d = tokio::select! {
                        d = c.next() => d.unwrap().unwrap(),
                        // Nothing for this one now: another turn.
                        () = tokio::task::yield_now() => continue,
                    };
                    // Never delivered after being acknowledged.
                    assert!(
                        !acked.contains(&d.event.position.0),
                        "step {step}: {} again",
                        d.event.position.0
                    );
                    if strategy == GroupStrategy::PerStream {
                        for (_, other) in &consumers {
                            assert!(
                                other.iter().all(|o| o.event.stream != d.event.stream),
                                "step {step}: two events of {} held at once",
                                d.event.stream.as_str()
                            );
                        }
                    }
                    consumers[k].1.push(d);
                }
            }
            8..=13 => {
                let (c, held) = &mut consumers[k];
                if let Some(d) = held.pop() {
                    c.ack(&[d.id]).unwrap();
                    acked.insert(d.event.position.0);
                }
            }
            14 => {
                let (c, held) = &mut consumers[k];
                if let Some(d) = held.pop() {
                    c.nack(&[d.id], NackAction::Retry { delay_ms: 0 }).unwrap();
                }
            }
            15 => {
                let (c, held) = &mut consumers[k];
                if let Some(d) = held.pop() {
                    c.nack(&[d.id], NackAction::Skip).unwrap();
                    skipped.insert(d.event.position.0);
                }
            }
            16 => {
                let (c, held) = &mut consumers[k];
                if let Some(d) = held.pop() {
                    c.nack(
                        &[d.id],
                        NackAction::Park {
                            reason: "random".into(),
                        },
                    )
                    .unwrap();
                }
            }
            17 | 18 => {
                // The consumer vanishes with what it held.
                consumers.swap_remove(k);
            }
            _ if restarts < 3 => {
                // Settles are read by the server before it stops: a ping
                // behind them on the same connection.
                client.ping().await.unwrap();
                consumers.clear();
                server.restart().await;
                client = Client::connect(server.addr).await.unwrap();
                restarts += 1;
            }
            _ => {}
        }
    }
    // Drain: one consumer acknowledges everything until the group has
    // nothing outstanding and its floor is past the source.
    consumers.clear();
    let mut c = client.join_group("m", 50).await.unwrap();
    loop {
        let g = client.list_groups().await.unwrap().remove(0);
        if g.outstanding == 0 && g.floor >= n {
            break;
        }
        let d = tokio::select! {
            d = c.next() => d.unwrap().unwrap(),
            () = tokio::task::yield_now() => continue,
        };
        assert!(
            !acked.contains(&d.event.position.0),
            "{} again in the drain",
            d.event.position.0
        );
        c.ack(&[d.id]).unwrap();
        acked.insert(d.event.position.0);
    }
    // Every event ended: acknowledged, skipped, or parked.
    let mut parked_positions = HashSet::new();
    let mut after = None;
    loop {
        let page = client.list_parked("m", after, 1000).await.unwrap();
        parked_positions.extend(page.entries.iter().map(|e| e.position));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let events: Vec<logbook_client::RecordedEvent> = client
        .read_all(Default::default())
        .try_collect()
        .await
        .unwrap();
    for e in events.iter().filter(|e| !e.stream.starts_with('$')) {
        let p = e.position.0;
        assert!(
            acked.contains(&p) || skipped.contains(&p) || parked_positions.contains(&p),
            "{strategy:?}: event at {p} never ended"
        );
    }
    server.stop().await;
}

/// Events of a stream deleted after the group read them drop out: they
/// are never delivered, and count as skipped.
#[tokio::test]
async fn events_of_a_deleted_stream_drop_out_of_the_group() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    for (stream, n) in [("kept", 0), ("gone", 0), ("gone", 1), ("kept", 1)] {
        client
            .append(stream, ExpectedVersion::Any, vec![ev(n)])
            .await
            .unwrap();
    }
    client
        .create_group("d", all(), GroupStart::Start, GroupSettings::default())
        .await
        .unwrap();
    // A window of one: the group has read the rest, and holds it.
    let mut c = client.join_group("d", 1).await.unwrap();
    let first = next(&mut c).await;
    assert_eq!(first.event.stream.as_str(), "kept");
    client
        .delete_stream("gone", ExpectedVersion::Any, logbook_client::Deletion::Soft)
        .await
        .unwrap();
    c.ack(&[first.id]).unwrap();
    let d = next(&mut c).await;
    assert_eq!((d.event.stream.as_str(), d.event.version.0), ("kept", 1));
    c.ack(&[d.id]).unwrap();
    client.ping().await.unwrap();
    let g = client.list_groups().await.unwrap().remove(0);
    assert_eq!(g.skipped, 2);
    assert_eq!(g.acked, 2);
    server.stop().await;
}
