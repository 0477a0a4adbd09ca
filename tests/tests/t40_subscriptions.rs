//! Catch-up subscriptions at the protocol level: history then live, in
//! order, exactly once, with credit-based flow control and filters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use logbook_protocol::{
    Append, Credit, ErrorCode, EventId, ExpectedVersion, Filter, LogPosition, NewEvent, Ping, Push,
    RecordedEvent, Request, Response, ServerMessage, StreamVersion, Subscribe, SubscribeFrom,
    SubscriptionTarget, Text, Unsubscribe,
};
use logbook_tests::{RawConn, TestServer, payload};

/// What a subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<RecordedEvent>,
    caught_up: Vec<u64>,
    fell_behind: Vec<u64>,
    checkpoints: Vec<u64>,
}

async fn subscribe(c: &mut RawConn, target: SubscriptionTarget, credit: u32) -> u32 {
    let (id, m) = c
        .call(&Request::Subscribe(Subscribe {
            target,
            initial_credit: credit,
        }))
        .await;
    assert!(
        matches!(m, ServerMessage::Response(Response::SubscribeOk(_))),
        "{m:?}"
    );
    id
}

async fn credit(c: &mut RawConn, subscription: u32, events: u32) {
    let mut b = BytesMut::new();
    Request::Credit(Credit {
        subscription,
        events,
    })
    .encode(&mut b, 999_999, 1 << 20)
    .unwrap();
    c.send_raw(&b).await;
}

/// Reads pushes until `done` says stop, granting `grant` credit after every
/// `grant` events.
async fn consume(
    c: &mut RawConn,
    sub: u32,
    grant: u32,
    mut done: impl FnMut(&Seen) -> bool,
) -> Seen {
    let mut seen = Seen::default();
    let mut since = 0u32;
    while !done(&seen) {
        let f = c.recv_frame().await.expect("subscription frames");
        assert_eq!(f.header.corr_id, sub);
        match ServerMessage::decode(&f).unwrap() {
            ServerMessage::Push(Push::Events { events, .. }) => {
                assert!(!events.is_empty());
                since += events.len() as u32;
                seen.events.extend(events);
                if since >= grant {
                    credit(c, sub, since).await;
                    since = 0;
                }
            }
            ServerMessage::Push(Push::CaughtUp { position, .. }) => seen.caught_up.push(position.0),
            ServerMessage::Push(Push::FellBehind { position, .. }) => {
                seen.fell_behind.push(position.0)
            }
            ServerMessage::Push(Push::Checkpoint { position }) => seen.checkpoints.push(position.0),
            other => panic!("unexpected {other:?}"),
        }
    }
    seen
}

fn ev(n: u64) -> NewEvent {
    NewEvent::new(
        EventId::from_u128(u128::from(n) + 1),
        if n.is_multiple_of(3) {
            "Opened"
        } else {
            "Deposited"
        },
        payload(40),
    )
}

async fn append(c: &mut RawConn, stream: &str, events: Vec<NewEvent>) {
    let (_, m) = c
        .call(&Request::Append(Append {
            stream: Text::from(stream),
            expected: ExpectedVersion::Any,
            events,
        }))
        .await;
    assert!(
        matches!(m, ServerMessage::Response(Response::AppendOk(_))),
        "{m:?}"
    );
}

fn all_from(from: SubscribeFrom<LogPosition>) -> SubscriptionTarget {
    SubscriptionTarget::All { from, filter: None }
}

#[tokio::test]
async fn history_then_live_with_appends_racing_the_switch() {
    let server = TestServer::start().await;
    let counter = Arc::new(AtomicU64::new(0));
    // Appenders run throughout, from several connections.
    let mut appenders = Vec::new();
    for t in 0..4 {
        let mut c = server.raw().await;
        let counter = Arc::clone(&counter);
        appenders.push(tokio::spawn(async move {
            for i in 0..150u64 {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let batch = 1 + (i % 3);
                append(
                    &mut c,
                    &format!("s-{t}-{}", i % 5),
                    (0..batch).map(|k| ev(n * 10 + k)).collect(),
                )
                .await;
            }
        }));
    }
    // Subscribers start at different moments and positions.
    let mut subs = Vec::new();
    for k in 0..6u64 {
        let mut c = server.raw().await;
        let head = server.store.head().0;
        // `After` must name an event that exists (PROTOCOL.md §5.6).
        let from = match (k % 3, head.checked_sub(1)) {
            (0, _) | (1, None) => SubscribeFrom::Start,
            (1, Some(last)) => SubscribeFrom::After(LogPosition(last / 2)),
            _ => SubscribeFrom::End,
        };
        let start = match from {
            SubscribeFrom::Start => 0,
            SubscribeFrom::After(p) => p.0 + 1,
            SubscribeFrom::End => u64::MAX, // known from the first event
        };
        let credit = [7u32, 50, 1000][k as usize % 3];
        subs.push(tokio::spawn(async move {
            let id = subscribe(&mut c, all_from(from), credit).await;
            let seen = consume(&mut c, id, credit, |s| {
                s.events.last().is_some_and(|e| e.position.0 >= 1500)
            })
            .await;
            (start, seen)
        }));
        tokio::task::yield_now().await;
    }
    for a in appenders {
        a.await.unwrap();
    }
    // Make sure the log reaches 1500+ events for every subscriber's stop.
    let mut c = server.raw().await;
    while server.store.head().0 <= 1500 {
        append(
            &mut c,
            "filler",
            vec![ev(1_000_000 + server.store.head().0)],
        )
        .await;
    }
    let log = server
        .store
        .read_all(None, logbook_protocol::Direction::Forward, 100_000)
        .unwrap()
        .events;
    for s in subs {
        let (start, seen) = s.await.unwrap();
        let first = seen.events.first().unwrap().position.0;
        if start != u64::MAX {
            assert_eq!(first, start, "history starts where asked");
        }
        for (i, e) in seen.events.iter().enumerate() {
            assert_eq!(e.position.0, first + i as u64, "no gap, no duplicate");
            assert_eq!(e, &log[e.position.0 as usize], "identical to the log");
        }
        assert!(!seen.caught_up.is_empty(), "announced catching up");
    }
    server.stop().await;
}

#[tokio::test]
async fn stream_subscription_before_the_stream_exists() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    append(&mut c, "other", vec![ev(1)]).await;
    let mut s = server.raw().await;
    let id = subscribe(
        &mut s,
        SubscriptionTarget::Stream {
            stream: Text::from("future"),
            from: SubscribeFrom::Start,
        },
        100,
    )
    .await;
    // Caught up at once: nothing to deliver yet.
    let seen = consume(&mut s, id, 100, |s| !s.caught_up.is_empty()).await;
    assert!(seen.events.is_empty());
    for i in 0..5 {
        append(&mut c, "future", vec![ev(10 + i)]).await;
        append(&mut c, "other", vec![ev(20 + i)]).await;
    }
    let seen = consume(&mut s, id, 100, |s| s.events.len() == 5).await;
    assert_eq!(
        seen.events.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(seen.events.iter().all(|e| e.stream.as_str() == "future"));
    // From a version: only later ones.
    let mut s2 = server.raw().await;
    let id2 = subscribe(
        &mut s2,
        SubscriptionTarget::Stream {
            stream: Text::from("future"),
            from: SubscribeFrom::After(StreamVersion(2)),
        },
        100,
    )
    .await;
    let seen = consume(&mut s2, id2, 100, |s| s.events.len() == 2).await;
    assert_eq!(
        seen.events.iter().map(|e| e.version.0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    server.stop().await;
}

#[tokio::test]
async fn filters_deliver_matches_and_checkpoint_through_silence() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    for i in 0..300u64 {
        let stream = if i % 50 == 0 {
            format!("account-{i}")
        } else {
            format!("noise-{}", i % 7)
        };
        append(&mut c, &stream, vec![ev(i)]).await;
    }
    let mut s = server.raw().await;
    let filter = Filter {
        stream_prefixes: vec!["account-".into()],
        checkpoint_interval: 20,
        ..Filter::default()
    };
    let id = subscribe(
        &mut s,
        SubscriptionTarget::All {
            from: SubscribeFrom::Start,
            filter: Some(filter),
        },
        1000,
    )
    .await;
    let seen = consume(&mut s, id, 1000, |s| !s.caught_up.is_empty()).await;
    assert_eq!(seen.events.len(), 6);
    assert!(seen.events.iter().all(|e| e.stream.starts_with("account-")));
    // Checkpoints came every 20 scanned non-matching events, increasing.
    assert!(seen.checkpoints.len() >= 10, "{:?}", seen.checkpoints);
    assert!(seen.checkpoints.windows(2).all(|w| w[0] < w[1]));
    // Live, a long run of non-matching events still yields checkpoints.
    for i in 0..100u64 {
        append(&mut c, "noise-x", vec![ev(1000 + i)]).await;
    }
    let seen = consume(&mut s, id, 1000, |s| s.checkpoints.len() >= 4).await;
    assert!(seen.events.is_empty());
    // Type prefixes too ("Opened" is every third event).
    let mut t = server.raw().await;
    let filter = Filter {
        type_prefixes: vec!["Open".into()],
        ..Filter::default()
    };
    let id = subscribe(
        &mut t,
        SubscriptionTarget::All {
            from: SubscribeFrom::Start,
            filter: Some(filter),
        },
        1000,
    )
    .await;
    let seen = consume(&mut t, id, 1000, |s| !s.caught_up.is_empty()).await;
    assert!(!seen.events.is_empty());
    assert!(
        seen.events
            .iter()
            .all(|e| e.event_type.as_str() == "Opened")
    );
    server.stop().await;
}

/// Regular expressions on stream and type, combined with prefixes; a bad
/// or oversized pattern is refused with BadRequest and the connection goes
/// on.
#[tokio::test]
async fn regex_filters_and_bad_patterns() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    for i in 0..120u64 {
        append(&mut c, &format!("order-{}-eu", i % 12), vec![ev(i)]).await;
        append(&mut c, &format!("order-{}-us", i % 12), vec![ev(1000 + i)]).await;
    }
    let mut s = server.raw().await;
    let filter = Filter {
        stream_prefixes: vec!["order-".into()],
        stream_regex: Some("^order-1[0-9]*-eu$".into()),
        type_regex: Some("^Open".into()),
        ..Filter::default()
    };
    let id = subscribe(
        &mut s,
        SubscriptionTarget::All {
            from: SubscribeFrom::Start,
            filter: Some(filter),
        },
        1000,
    )
    .await;
    let seen = consume(&mut s, id, 1000, |s| !s.caught_up.is_empty()).await;
    // Streams order-1-eu, order-10-eu, order-11-eu; "Opened" every third i.
    let want: Vec<u64> = (0..120u64)
        .filter(|i| [1, 10, 11].contains(&(i % 12)) && i.is_multiple_of(3))
        .collect();
    assert_eq!(seen.events.len(), want.len());
    // Exactly those, in order (eu events are at even positions): runs of
    // matches and gaps within one read batch.
    assert_eq!(
        seen.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        want.iter().map(|i| 2 * i).collect::<Vec<_>>()
    );
    assert!(seen.events.iter().all(|e| e.stream.ends_with("-eu")
        && e.stream.starts_with("order-1")
        && e.event_type.as_str() == "Opened"));
    // A filter that passes everything, with a small credit: every event
    // exactly once and in order, delivered a few at a time.
    let mut p = server.raw().await;
    let all = Filter {
        stream_prefixes: vec![String::new()],
        ..Filter::default()
    };
    let id = subscribe(
        &mut p,
        SubscriptionTarget::All {
            from: SubscribeFrom::Start,
            filter: Some(all),
        },
        7,
    )
    .await;
    let seen = consume(&mut p, id, 7, |s| !s.caught_up.is_empty()).await;
    assert_eq!(
        seen.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        (0..240).collect::<Vec<_>>()
    );
    // On a connection without pushes in flight.
    let mut s = server.raw().await;
    for (pattern, why) in [
        ("(unclosed", "regex"),
        (&*"a".repeat(2000), "at most"),
        // Compiles past the size limit.
        ("\\w{1000}\\w{1000}\\w{1000}", "regex"),
    ] {
        let (_, m) = s
            .call(&Request::Subscribe(Subscribe {
                target: SubscriptionTarget::All {
                    from: SubscribeFrom::Start,
                    filter: Some(Filter {
                        stream_regex: Some(pattern.to_owned()),
                        ..Filter::default()
                    }),
                },
                initial_credit: 10,
            }))
            .await;
        match m {
            ServerMessage::Error(e) if e.code == ErrorCode::BadRequest => {
                assert!(e.message.contains(why), "{}", e.message)
            }
            other => panic!("pattern {pattern:?}: {other:?}"),
        }
    }
    let (_, m) = s.call(&Request::Ping(Ping { nonce: 3 })).await;
    assert!(matches!(m, ServerMessage::Response(Response::Pong(_))));
    server.stop().await;
}

#[tokio::test]
async fn credit_bounds_what_is_sent_and_a_slow_consumer_catches_up_from_disk() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    for i in 0..200u64 {
        append(&mut c, "s", vec![ev(i)]).await;
    }
    let mut slow = server.raw().await;
    let slow_id = subscribe(&mut slow, all_from(SubscribeFrom::Start), 25).await;
    let mut fast = server.raw().await;
    let fast_id = subscribe(&mut fast, all_from(SubscribeFrom::Start), 100).await;
    // The slow one gets exactly its 25 and then nothing, while the fast one
    // and the writer go on.
    let first = consume(&mut slow, slow_id, u32::MAX, |s| s.events.len() >= 25).await;
    assert_eq!(first.events.len(), 25);
    for i in 200..2200u64 {
        append(&mut c, "s", vec![ev(i)]).await;
    }
    let seen = consume(&mut fast, fast_id, 100, |s| s.events.len() >= 2200).await;
    assert_eq!(seen.events.len(), 2200);
    // Nothing more reached the slow connection: ask for a ping reply; the
    // only frame before it must be the pong (no events past the credit).
    let (_, m) = slow
        .call(&Request::Ping(logbook_protocol::Ping { nonce: 5 }))
        .await;
    assert!(
        matches!(m, ServerMessage::Response(Response::Pong(_))),
        "no push beyond credit: {m:?}"
    );
    // It resumes: the rest comes from the log, in order.
    credit(&mut slow, slow_id, 10_000).await;
    let rest = consume(&mut slow, slow_id, 10_000, |s| s.events.len() >= 2175).await;
    assert_eq!(rest.events.first().unwrap().position.0, 25);
    assert!(
        rest.events
            .iter()
            .enumerate()
            .all(|(i, e)| e.position.0 == 25 + i as u64)
    );
    server.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_pushes_and_many_subscriptions_share_a_connection() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let mut s = server.raw().await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        ids.push(
            s.send(&Request::Subscribe(Subscribe {
                target: all_from(SubscribeFrom::End),
                initial_credit: 1_000,
            }))
            .await,
        );
    }
    // Every subscription is confirmed, then catches up (pushes of earlier
    // subscriptions interleave with later confirmations).
    let (mut ok, mut caught) = (0, 0);
    while ok < 200 || caught < 200 {
        match s.recv().await {
            Some(ServerMessage::Response(Response::SubscribeOk(_))) => ok += 1,
            Some(ServerMessage::Push(Push::CaughtUp { .. })) => caught += 1,
            other => panic!("{other:?}"),
        }
    }
    append(&mut c, "x", vec![ev(1), ev(2)]).await;
    let mut got: HashMap<u32, usize> = HashMap::new();
    while got.values().sum::<usize>() < 400 {
        let f = s.recv_frame().await.unwrap();
        if let ServerMessage::Push(Push::Events { events, .. }) = ServerMessage::decode(&f).unwrap()
        {
            *got.entry(f.header.corr_id).or_default() += events.len();
        }
    }
    assert_eq!(got.len(), 200);
    assert!(got.values().all(|&n| n == 2));
    for id in &ids {
        let (_, m) = s
            .call(&Request::Unsubscribe(Unsubscribe { subscription: *id }))
            .await;
        assert!(
            matches!(m, ServerMessage::Response(Response::UnsubscribeOk)),
            "{m:?}"
        );
    }
    append(&mut c, "x", vec![ev(3)]).await;
    let (_, m) = s
        .call(&Request::Ping(logbook_protocol::Ping { nonce: 1 }))
        .await;
    assert!(
        matches!(m, ServerMessage::Response(Response::Pong(_))),
        "no pushes after unsubscribe: {m:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_subscriptions_with_a_reason() {
    let server = TestServer::start().await;
    let mut s = server.raw().await;
    let id = subscribe(&mut s, all_from(SubscribeFrom::Start), 10).await;
    let _ = consume(&mut s, id, 10, |s| !s.caught_up.is_empty()).await;
    server.stop().await;
    match s.recv().await {
        Some(ServerMessage::Push(Push::Ended { code, .. })) => {
            assert_eq!(code, logbook_protocol::ErrorCode::ShuttingDown)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_costs_bounded_memory() {
    let server = TestServer::start().await;
    // A subscriber with unlimited credit that never reads its socket.
    let mut stuck = server.raw().await;
    let stuck_id = subscribe(&mut stuck, all_from(SubscribeFrom::Start), u32::MAX).await;
    let mut fast = server.raw().await;
    let fast_id = subscribe(&mut fast, all_from(SubscribeFrom::Start), 1000).await;
    let mut c = server.raw().await;
    let n = 6_000u64;
    let mut appender = tokio::spawn(async move {
        for i in 0..n / 10 {
            let batch = (0..10)
                .map(|k| {
                    NewEvent::new(
                        EventId::from_u128(u128::from(i * 10 + k) + 1),
                        "Big",
                        payload(2_000),
                    )
                })
                .collect();
            append(&mut c, "big", batch).await;
        }
        c
    });
    // The writer and the other subscriber keep going.
    let seen = consume(&mut fast, fast_id, 1000, |s| s.events.len() as u64 >= n).await;
    assert_eq!(seen.events.len() as u64, n);
    let _c = (&mut appender).await.unwrap();
    // 12 MB went by; the server held at most its 4 MiB high-water mark plus
    // one push (at most 1 MiB of events, plus one event) for the stuck
    // connection.
    let peak = server.stats.outbox_peak.load(Ordering::Relaxed);
    assert!(peak <= (5 << 20) + 4096, "outbox peak {peak}");
    assert!(peak >= 1 << 20, "the stuck subscriber did get data: {peak}");
    // When it reads again it gets everything, in order, partly from disk.
    let seen = consume(&mut stuck, stuck_id, u32::MAX, |s| {
        s.events.len() as u64 >= n
    })
    .await;
    assert!(
        seen.events
            .iter()
            .enumerate()
            .all(|(i, e)| e.position.0 == i as u64)
    );
    assert!(!seen.fell_behind.is_empty(), "it fell behind and recovered");
    server.stop().await;
}

/// A thousand live subscriptions to the global log (ten connections of a
/// hundred) each receive every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscriptions_each_get_everything() {
    let server = TestServer::start().await;
    let mut conns = Vec::new();
    for _ in 0..10 {
        let mut s = server.raw().await;
        let mut ids = Vec::new();
        for _ in 0..100 {
            ids.push(
                s.send(&Request::Subscribe(Subscribe {
                    target: all_from(SubscribeFrom::Start),
                    initial_credit: 10_000,
                }))
                .await,
            );
        }
        conns.push((s, ids));
    }
    let mut c = server.raw().await;
    let n = 50u64;
    for i in 0..n {
        append(&mut c, &format!("s-{}", i % 3), vec![ev(i)]).await;
    }
    assert_eq!(server.stats.subscriptions.load(Ordering::Relaxed), 1000);
    let mut tasks = Vec::new();
    for (mut s, ids) in conns {
        tasks.push(tokio::spawn(async move {
            let mut next: HashMap<u32, u64> = ids.iter().map(|id| (*id, 0)).collect();
            while next.values().any(|&p| p < n) {
                let f = s.recv_frame().await.expect("frames");
                if let ServerMessage::Push(Push::Events { events, .. }) =
                    ServerMessage::decode(&f).unwrap()
                {
                    let p = next
                        .get_mut(&f.header.corr_id)
                        .expect("a known subscription");
                    for e in events {
                        assert_eq!(e.position.0, *p, "in order, no gap, no duplicate");
                        *p += 1;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    server.stop().await;
}
