//! Client subscriptions over a log with removed events (deleted streams,
//! truncations): positions and versions are no longer dense, and the
//! client's check that it missed nothing must still hold, never fail on a
//! legitimate hole. Each push says from where it covers the log (or the
//! stream), so the client tells a removed range from a lost one.

use futures::TryStreamExt;
use logbook_client::{
    Client, Deletion, EventId, ExpectedVersion, NewEvent, RecordedEvent, StreamVersion,
    SubscribeAllOptions, SubscribeFrom, SubscribeStreamOptions, Subscription, SubscriptionMessage,
};
use logbook_tests::{TestServer, payload};

fn ev(n: u64) -> NewEvent {
    NewEvent::new(EventId::new_v7(), format!("T{n}"), payload(16))
}

/// Events until the first `CaughtUp`.
async fn until_caught_up(sub: &mut Subscription) -> Vec<RecordedEvent> {
    let mut got = Vec::new();
    while let Some(m) = sub.try_next().await.unwrap() {
        match m {
            SubscriptionMessage::Event(e) => got.push(e),
            SubscriptionMessage::CaughtUp { .. } => return got,
            _ => {}
        }
    }
    panic!("subscription ended");
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position.0).collect()
}

/// Live positions of the log, from a read.
async fn live(client: &Client) -> Vec<u64> {
    let events: Vec<RecordedEvent> = client
        .read_all(Default::default())
        .try_collect()
        .await
        .unwrap();
    positions(&events)
}

#[tokio::test]
async fn catch_up_across_deleted_events_inside_one_batch() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    // a, x, a, x, a ... then x soft-deleted: every other event is a hole.
    for i in 0..20 {
        let s = if i % 2 == 0 { "a" } else { "x" };
        client
            .append(s, ExpectedVersion::Any, vec![ev(i)])
            .await
            .unwrap();
    }
    client
        .delete_stream("x", ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();
    let expected = live(&client).await;
    assert_eq!(expected.len(), 11, "{expected:?}");
    let mut sub = client
        .subscribe_all(SubscribeAllOptions::default())
        .await
        .unwrap();
    assert_eq!(positions(&until_caught_up(&mut sub).await), expected);
    // From a position inside a removed range, too.
    let mut sub = client
        .subscribe_all(
            SubscribeAllOptions::default()
                .from(SubscribeFrom::After(logbook_client::LogPosition(0))),
        )
        .await
        .unwrap();
    assert_eq!(
        positions(&until_caught_up(&mut sub).await),
        expected
            .iter()
            .copied()
            .filter(|&p| p >= 1)
            .collect::<Vec<_>>()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_small_window_and_holes_between_windows() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    for i in 0..60 {
        let s = ["a", "x", "y"][(i % 3) as usize];
        client
            .append(s, ExpectedVersion::Any, vec![ev(i)])
            .await
            .unwrap();
    }
    client
        .delete_stream("x", ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    client
        .delete_stream("y", ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();
    let expected = live(&client).await;
    let mut sub = client
        .subscribe_all(SubscribeAllOptions::default().window(1))
        .await
        .unwrap();
    assert_eq!(positions(&until_caught_up(&mut sub).await), expected);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_subscription_over_a_truncated_stream() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let batch: Vec<NewEvent> = (0..10).map(ev).collect();
    client
        .append("t", ExpectedVersion::NoStream, batch)
        .await
        .unwrap();
    client.truncate_stream("t", StreamVersion(6)).await.unwrap();
    let mut sub = client
        .subscribe_stream("t", SubscribeStreamOptions::default())
        .await
        .unwrap();
    let got: Vec<u64> = until_caught_up(&mut sub)
        .await
        .iter()
        .map(|e| e.version.0)
        .collect();
    assert_eq!(got, vec![6, 7, 8, 9]);
    server.stop().await;
}

#[tokio::test]
async fn a_stream_subscription_over_a_soft_deleted_then_continued_stream() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    client
        .append("s", ExpectedVersion::NoStream, (0..3).map(ev).collect())
        .await
        .unwrap();
    client
        .delete_stream("s", ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();
    client
        .append("s", ExpectedVersion::Any, (3..5).map(ev).collect())
        .await
        .unwrap();
    let mut sub = client
        .subscribe_stream("s", SubscribeStreamOptions::default())
        .await
        .unwrap();
    let got: Vec<u64> = until_caught_up(&mut sub)
        .await
        .iter()
        .map(|e| e.version.0)
        .collect();
    assert_eq!(got, vec![3, 4]);
    // Live: another soft delete and more events.
    client
        .delete_stream("s", ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();
    client
        .append("s", ExpectedVersion::Any, (5..7).map(ev).collect())
        .await
        .unwrap();
    let mut more = Vec::new();
    while more.len() < 2 {
        if let SubscriptionMessage::Event(e) = sub.try_next().await.unwrap().unwrap() {
            more.push(e.version.0);
        }
    }
    assert_eq!(more, vec![5, 6]);
    server.stop().await;
}

/// Live subscribers while streams are written and deleted concurrently:
/// whatever the interleaving of the deletes with the live dispatcher's
/// reads, no subscription fails, positions only rise, and every event
/// still live at the end was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscribers_while_streams_are_deleted() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let mut subs = Vec::new();
    for window in [1u32, 7, 1000] {
        let mut sub = client
            .subscribe_all(SubscribeAllOptions::default().window(window))
            .await
            .unwrap();
        until_caught_up(&mut sub).await;
        subs.push(sub);
    }
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            for round in 0..60u64 {
                let victim = format!("v-{round}");
                client
                    .append(
                        victim.as_str(),
                        ExpectedVersion::Any,
                        (0..3).map(ev).collect(),
                    )
                    .await
                    .unwrap();
                client
                    .append("keep", ExpectedVersion::Any, vec![ev(round)])
                    .await
                    .unwrap();
                let mode = if round % 2 == 0 {
                    Deletion::Soft
                } else {
                    Deletion::Hard
                };
                client
                    .delete_stream(victim.as_str(), ExpectedVersion::Any, mode)
                    .await
                    .unwrap();
            }
            client
                .append("done", ExpectedVersion::Any, vec![ev(0)])
                .await
                .unwrap();
        })
    };
    writer.await.unwrap();
    let survivors = live(&client).await;
    for mut sub in subs {
        let mut seen = Vec::new();
        loop {
            match sub.try_next().await.unwrap().unwrap() {
                SubscriptionMessage::Event(e) => {
                    let done = e.stream.as_str() == "done";
                    seen.push(e.position.0);
                    if done {
                        break;
                    }
                }
                _ => continue,
            }
        }
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "positions rise");
        for p in &survivors {
            assert!(seen.binary_search(p).is_ok(), "live event at {p} delivered");
        }
    }
    server.stop().await;
}
