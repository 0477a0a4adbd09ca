//! Connection-level limits that keep resources bounded: idle connections
//! are closed (and clients reconnect on their own), busy ones are not; a
//! frame's timeout counts only while the server reads; the server keeps
//! serving everyone else throughout.

use std::time::Duration;

use bytes::BytesMut;
use logbook_client::{Client, ExpectedVersion, NewEvent};
use logbook_protocol::{
    Direction, ErrorCode, EventId, Ping, ReadAll, Request, Response, ServerMessage, Subscribe,
    SubscribeFrom, SubscriptionTarget, Text,
};
use logbook_tests::{TestServer, within};

/// A connection with nothing going on is closed with `IdleTimeout` on
/// corr_id 0; one with an open subscription is not; a client whose
/// connection was closed this way reconnects on its next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_busy_ones_are_not() {
    let server = TestServer::start_tuned(|_, s| {
        s.idle_timeout = Some(Duration::from_secs(1));
    })
    .await;
    // Connected first, so their deadlines come before the idle one's.
    let client = Client::connect(server.addr).await.unwrap();
    client
        .append(
            "s",
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::from_u128(1), "T", "x")],
        )
        .await
        .unwrap();
    let mut busy = server.raw().await;
    busy.send(&Request::Subscribe(Subscribe {
        target: SubscriptionTarget::Stream {
            stream: Text::from("s"),
            from: SubscribeFrom::End,
        },
        initial_credit: 10,
    }))
    .await;
    let mut idle = server.raw().await;
    // The idle one is told why, then closed.
    match within(30, "the idle timeout", idle.recv()).await {
        Some(ServerMessage::Error(e)) => assert_eq!(e.code, ErrorCode::IdleTimeout, "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert!(within(30, "the close", idle.recv()).await.is_none());
    // The subscribed one is still served: its SubscribeOk, its caught_up,
    // and a pong.
    busy.send(&Request::Ping(Ping { nonce: 7 })).await;
    loop {
        match within(30, "the pong", busy.recv()).await {
            Some(ServerMessage::Response(Response::Pong(p))) => {
                assert_eq!(p.nonce, 7);
                break;
            }
            Some(ServerMessage::Error(e)) => panic!("closed: {e:?}"),
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    // The client's connection went idle before the raw one: it was closed
    // too, and the next call reconnects.
    client
        .append(
            "s",
            ExpectedVersion::Exact(logbook_client::StreamVersion(0)),
            vec![NewEvent::new(EventId::from_u128(2), "T", "y")],
        )
        .await
        .expect("the client reconnects");
    server.stop().await;
}

/// A frame whose arrival the server pauses is not timed out meanwhile: the
/// frame timeout counts only while the server reads. Here the client asks
/// for large pages and reads nothing for longer than the frame timeout:
/// the server stops reading it (4 MiB unsent), with the rest of its
/// requests, and half of one more frame, waiting in its buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frame_timeout_counts_only_while_the_server_reads() {
    let server = TestServer::start_tuned(|_, s| {
        s.frame_timeout = Duration::from_secs(1);
    })
    .await;
    let client = Client::connect(server.addr).await.unwrap();
    for i in 0..4u128 {
        client
            .append(
                "big",
                ExpectedVersion::Any,
                vec![NewEvent::new(
                    EventId::from_u128(i),
                    "T",
                    vec![7u8; 1 << 20],
                )],
            )
            .await
            .unwrap();
    }
    let mut c = server.raw().await;
    let mut reqs = BytesMut::new();
    for id in 2..=11u32 {
        Request::ReadAll(ReadAll {
            from: None,
            direction: Direction::Forward,
            max_count: 4,
            min_position: None,
        })
        .encode(&mut reqs, id, 1 << 20)
        .unwrap();
    }
    // And the first half of a ping.
    let mut last = BytesMut::new();
    Request::Ping(Ping { nonce: 12 })
        .encode(&mut last, 12, 1 << 20)
        .unwrap();
    let (head, tail) = last.split_at(last.len() / 2);
    reqs.extend_from_slice(head);
    c.send_raw(&reqs).await;
    // More than a frame timeout passes while the server waits for this
    // client to read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in 2..=11u32 {
        match within(30, "a page", c.recv()).await {
            Some(ServerMessage::Response(Response::ReadAllOk(p))) => {
                assert_eq!(p.events.len(), 4, "page {id}")
            }
            other => panic!("page {id}: {other:?}"),
        }
    }
    c.send_raw(tail).await;
    match within(30, "the pong", c.recv()).await {
        Some(ServerMessage::Response(Response::Pong(p))) => assert_eq!(p.nonce, 12),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// A read returns at least one event whatever its byte budget, so a page
/// can pass the outbox room its connection took: that event must still be
/// covered by room on the server's budget before it is sent. Here 60
/// clients each ask for four 3 MiB events, one per read, and never read
/// (the kernel's socket buffers take some: the rest stays in the server);
/// the server holds 16 MiB of outbox budget. Without covering, each read
/// got a 64 KiB room and sent a 3 MiB reply: hundreds of MiB unsent. The
/// counted total stays within the limit plus the small room each
/// connection may always take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_never_sends_more_than_the_room_it_took() {
    let limit = 16usize << 20;
    let server = TestServer::start_tuned(|_, s| {
        s.max_outbox_bytes = limit;
    })
    .await;
    let client = Client::connect(server.addr).await.unwrap();
    for i in 0..4u128 {
        client
            .append(
                "big",
                ExpectedVersion::Any,
                vec![NewEvent::new(
                    EventId::from_u128(i),
                    "T",
                    vec![7u8; 3 << 20],
                )],
            )
            .await
            .unwrap();
    }
    let mut stuck = Vec::new();
    for _ in 0..60 {
        let mut c = logbook_tests::RawConn::connect(server.addr).await;
        c.hello().await;
        for from in 0..4 {
            c.send(&Request::ReadAll(ReadAll {
                from: Some(logbook_protocol::LogPosition(from)),
                direction: Direction::Forward,
                max_count: 1,
                min_position: None,
            }))
            .await;
        }
        stuck.push(c);
    }
    // Sample the server's count while a well-behaved client is served.
    let mut peak = 0u64;
    for _ in 0..2_000 {
        peak = peak.max(
            server
                .stats
                .outbox_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        client.ping().await.expect("served");
    }
    let bound = (limit + 62 * (64 << 10)) as u64;
    assert!(peak <= bound, "outbox bytes peaked at {peak}, over {bound}");
    drop(stuck);
    server.stop().await;
}
