//! Many requests in flight on one connection: replies are matched by
//! correlation id, and appends commit in the order they were sent.

use std::collections::HashMap;

use bytes::BytesMut;
use logbook_protocol::{
    Append, Direction, EventId, ExpectedVersion, NewEvent, Ping, ReadStream, Request, Response,
    ServerMessage, StreamVersion, Text,
};
use logbook_tests::{TestServer, payload};

#[tokio::test]
async fn pipelined_appends_commit_in_send_order() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    // 600 appends, each expecting the version the previous one creates:
    // they all succeed only if the server keeps their order.
    let n = 600u32;
    let mut buf = BytesMut::new();
    for i in 0..n {
        let expected = if i == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(StreamVersion(u64::from(i) - 1))
        };
        Request::Append(Append {
            stream: Text::from("ordered"),
            expected,
            events: vec![NewEvent::new(
                EventId::from_u128(u128::from(i) + 1),
                "E",
                payload(50),
            )],
        })
        .encode(&mut buf, i + 1, 1 << 20)
        .unwrap();
        // Interleave pings and reads: they are answered while appends wait
        // for their fsync.
        Request::Ping(Ping {
            nonce: u64::from(i),
        })
        .encode(&mut buf, 100_000 + i, 1 << 20)
        .unwrap();
    }
    c.send_raw(&buf).await;
    let mut appended: HashMap<u32, u64> = HashMap::new();
    let mut pongs = 0;
    while appended.len() < n as usize || pongs < n {
        match c
            .recv_frame()
            .await
            .map(|f| (f.header.corr_id, ServerMessage::decode(&f).unwrap()))
        {
            Some((id, ServerMessage::Response(Response::AppendOk(r)))) => {
                assert!(
                    appended.insert(id, r.first_version.0).is_none(),
                    "one reply per request"
                );
            }
            Some((id, ServerMessage::Response(Response::Pong(p)))) => {
                assert_eq!(u64::from(id - 100_000), p.nonce);
                pongs += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    for (id, v) in appended {
        assert_eq!(u64::from(id - 1), v);
    }
    let (_, m) = c
        .call(&Request::ReadStream(ReadStream {
            stream: Text::from("ordered"),
            from: None,
            direction: Direction::Forward,
            max_count: 10_000,
            min_position: None,
        }))
        .await;
    let ServerMessage::Response(Response::ReadStreamOk(s)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(s.events.len(), n as usize);
    assert!(
        s.events
            .iter()
            .enumerate()
            .all(|(i, e)| e.id == EventId::from_u128(i as u128 + 1))
    );
    server.stop().await;
}

#[tokio::test]
async fn expected_version_race_over_the_network() {
    let server = TestServer::start().await;
    let clients = 8;
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(server.raw().await);
    }
    for round in 0..60u64 {
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(StreamVersion(round - 1))
        };
        let mut tasks = Vec::new();
        for (k, mut c) in conns.drain(..).enumerate() {
            tasks.push(tokio::spawn(async move {
                let id = EventId::from_u128(u128::from(round) * 100 + k as u128 + 1);
                let (_, m) = c
                    .call(&Request::Append(Append {
                        stream: Text::from("contended"),
                        expected,
                        events: vec![NewEvent::new(id, "Try", payload(10))],
                    }))
                    .await;
                (c, m)
            }));
        }
        let mut winners = 0;
        for t in tasks {
            let (c, m) = t.await.unwrap();
            conns.push(c);
            match m {
                ServerMessage::Response(Response::AppendOk(r)) => {
                    winners += 1;
                    assert_eq!(r.first_version.0, round);
                }
                ServerMessage::Error(e) => {
                    assert_eq!(e.code, logbook_protocol::ErrorCode::WrongExpectedVersion);
                    assert_eq!(e.actual, Some(Some(StreamVersion(round))));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    server.stop().await;
}
