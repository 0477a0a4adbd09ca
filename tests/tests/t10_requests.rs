//! Every request kind and every error code, over the wire, against a real
//! daemon in this process.

use bytes::Bytes;
use logbook_protocol::{
    Append, Direction, ErrorCode, EventId, ExpectedVersion, Hello, LogPosition, NewEvent, Ping,
    ReadAll, ReadStream, Request, Response, ServerMessage, StreamVersion, Subscribe, SubscribeFrom,
    SubscriptionTarget, Text,
};
use std::sync::Arc;

use logbook_storage::fs::{Fault, MemFs};
use logbook_tests::{RawConn, TestServer, payload};

fn event(n: u128, size: usize) -> NewEvent {
    NewEvent::new(EventId::from_u128(n), "Deposited", payload(size))
        .with_metadata(Bytes::from_static(b"{}"))
}

fn append(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Request {
    Request::Append(Append {
        stream: Text::from(stream),
        expected,
        events,
    })
}

fn expect_error(msg: ServerMessage, code: ErrorCode) -> logbook_protocol::ErrorReply {
    match msg {
        ServerMessage::Error(e) if e.code == code => e,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn ping_append_read_and_their_errors() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;

    let (_, m) = c.call(&Request::Ping(Ping { nonce: 42 })).await;
    assert!(matches!(m, ServerMessage::Response(Response::Pong(p)) if p.nonce == 42));

    let (_, m) = c
        .call(&append(
            "acct-1",
            ExpectedVersion::NoStream,
            vec![event(1, 10), event(2, 20)],
        ))
        .await;
    let ServerMessage::Response(Response::AppendOk(r)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(
        (
            r.first_version.0,
            r.last_version.0,
            r.first_position.0,
            r.last_position.0
        ),
        (0, 1, 0, 1)
    );

    // Idempotent retry of the same batch.
    let (_, m) = c
        .call(&append(
            "acct-1",
            ExpectedVersion::NoStream,
            vec![event(1, 10), event(2, 20)],
        ))
        .await;
    assert!(matches!(m, ServerMessage::Response(Response::AppendOk(r2)) if r2 == r));

    // WrongExpectedVersion carries expected and actual.
    let (_, m) = c
        .call(&append(
            "acct-1",
            ExpectedVersion::Exact(StreamVersion(7)),
            vec![event(3, 1)],
        ))
        .await;
    let e = expect_error(m, ErrorCode::WrongExpectedVersion);
    assert_eq!(e.expected, Some(ExpectedVersion::Exact(StreamVersion(7))));
    assert_eq!(e.actual, Some(Some(StreamVersion(1))));
    assert_eq!(e.stream.as_deref(), Some("acct-1"));
    let (_, m) = c
        .call(&append(
            "acct-9",
            ExpectedVersion::StreamExists,
            vec![event(4, 1)],
        ))
        .await;
    let e = expect_error(m, ErrorCode::WrongExpectedVersion);
    assert_eq!(e.actual, Some(None));

    // Bad requests: empty batch, bad stream name, bad event type.
    let (_, m) = c
        .call(&append("acct-1", ExpectedVersion::Any, vec![]))
        .await;
    expect_error(m, ErrorCode::BadRequest);
    let (_, m) = c
        .call(&append(
            "bad\nname",
            ExpectedVersion::Any,
            vec![event(5, 1)],
        ))
        .await;
    expect_error(m, ErrorCode::BadRequest);
    let mut bad_type = event(6, 1);
    bad_type.event_type = Text::from("");
    let (_, m) = c
        .call(&append("acct-1", ExpectedVersion::Any, vec![bad_type]))
        .await;
    expect_error(m, ErrorCode::BadRequest);
    // Too large: one event above the 4 MiB default.
    let (_, m) = c
        .call(&append(
            "acct-1",
            ExpectedVersion::Any,
            vec![event(7, 5 << 20)],
        ))
        .await;
    let e = expect_error(m, ErrorCode::TooLarge);
    assert_eq!(e.limit, Some(4 << 20));

    // Reads.
    let (_, m) = c
        .call(&Request::ReadStream(ReadStream {
            stream: Text::from("acct-1"),
            from: None,
            direction: Direction::Forward,
            max_count: 10,
            min_position: None,
        }))
        .await;
    let ServerMessage::Response(Response::ReadStreamOk(s)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(s.events.len(), 2);
    assert_eq!(s.events[1].data, payload(20));
    assert_eq!(s.last_version, Some(StreamVersion(1)));
    assert_eq!(s.next, None);
    let (_, m) = c
        .call(&Request::ReadStream(ReadStream {
            stream: Text::from("nobody"),
            from: None,
            direction: Direction::Forward,
            max_count: 10,
            min_position: None,
        }))
        .await;
    let e = expect_error(m, ErrorCode::StreamNotFound);
    assert_eq!(e.stream.as_deref(), Some("nobody"));
    let (_, m) = c
        .call(&Request::ReadAll(ReadAll {
            from: None,
            direction: Direction::Backward,
            max_count: 1,
            min_position: None,
        }))
        .await;
    let ServerMessage::Response(Response::ReadAllOk(a)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(a.events.len(), 1);
    assert_eq!(a.events[0].position, LogPosition(1));
    assert_eq!(a.head, LogPosition(2));
    assert_eq!(a.next, Some(LogPosition(0)));

    // A subscription to a bad stream name is refused.
    let (_, m) = c
        .call(&Request::Subscribe(Subscribe {
            target: SubscriptionTarget::Stream {
                stream: Text::from(""),
                from: SubscribeFrom::Start,
            },
            initial_credit: 10,
        }))
        .await;
    expect_error(m, ErrorCode::BadRequest);

    // A second Hello is refused; the connection stays usable.
    let (_, m) = c
        .call(&Request::Hello(Hello {
            protocol_version: 1,
            client_name: "again".into(),
            token: None,
            user: None,
        }))
        .await;
    expect_error(m, ErrorCode::BadRequest);
    let (_, m) = c.call(&Request::Ping(Ping { nonce: 1 })).await;
    assert!(matches!(m, ServerMessage::Response(Response::Pong(_))));
    server.stop().await;
}

#[tokio::test]
async fn handshake_errors() {
    let server = TestServer::start_tuned(|_, n| n.auth_token = Some("sesame".into())).await;
    // A request before Hello: BadRequest, then closed.
    let mut c = RawConn::connect(server.addr).await;
    let (_, m) = c.call(&Request::Ping(Ping { nonce: 1 })).await;
    expect_error(m, ErrorCode::BadRequest);
    assert!(c.recv().await.is_none(), "closed");
    // Wrong token.
    let mut c = RawConn::connect(server.addr).await;
    let hello = |token: Option<&str>, v: u8| {
        Request::Hello(Hello {
            protocol_version: v,
            client_name: "t".into(),
            token: token.map(str::to_owned),
            user: None,
        })
    };
    let (_, m) = c.call(&hello(Some("wrong"), 1)).await;
    expect_error(m, ErrorCode::NotAuthenticated);
    assert!(c.recv().await.is_none(), "closed");
    let mut c = RawConn::connect(server.addr).await;
    let (_, m) = c.call(&hello(None, 1)).await;
    expect_error(m, ErrorCode::NotAuthenticated);
    // Unsupported version (0 is below what the server speaks).
    let mut c = RawConn::connect(server.addr).await;
    let (_, m) = c.call(&hello(Some("sesame"), 0)).await;
    // Version 0 in the frame header is a frame error; either way the reply
    // names the problem and the connection closes.
    match m {
        ServerMessage::Error(e) => assert!(
            matches!(
                e.code,
                ErrorCode::UnsupportedVersion | ErrorCode::BadRequest
            ),
            "{e:?}"
        ),
        other => panic!("{other:?}"),
    }
    // The right token works.
    let mut c = RawConn::connect(server.addr).await;
    let (_, m) = c.call(&hello(Some("sesame"), 1)).await;
    let ServerMessage::Response(Response::HelloOk(ok)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(ok.protocol_version, 1);
    assert_eq!(ok.max_in_flight, 1024);
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_limit_get_server_busy() {
    let server = TestServer::start_tuned(|_, n| n.max_connections = 2).await;
    let _a = server.raw().await;
    let _b = server.raw().await;
    let mut c = RawConn::connect(server.addr).await;
    let m = c.recv().await.expect("an error frame");
    let e = expect_error(m, ErrorCode::ServerBusy);
    assert!(e.message.contains("too many connections"));
    drop(_a);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_tells_connected_clients() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let addr = server.addr;
    server.stop().await;
    let m = c.recv().await.expect("a shutdown notice");
    expect_error(m, ErrorCode::ShuttingDown);
    assert!(c.recv().await.is_none());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn storage_failures_map_to_internal_and_corruption() {
    let fs = MemFs::new();
    let vfs = fs.clone();
    let server = TestServer::start_tuned(move |s, _| {
        s.vfs = Arc::new(vfs);
        s.data_dir = "/data".into();
        s.segment_bytes = 64 << 10;
        s.max_batch_bytes = 32 << 10;
        s.max_event_bytes = 16 << 10;
        // Room in a batch for the record overhead of this many events.
        s.max_batch_events = 100;
    })
    .await;
    let mut c = server.raw().await;
    for i in 0..100 {
        let (_, m) = c
            .call(&append("s", ExpectedVersion::Any, vec![event(i + 1, 1000)]))
            .await;
        assert!(
            matches!(m, ServerMessage::Response(Response::AppendOk(_))),
            "{m:?}"
        );
    }
    // Damage the first (sealed) segment: reads that touch it report
    // Corruption, with the file in the message.
    let seg = std::path::Path::new("/data/log/00000000000000000000.seg");
    let mut bytes = fs.read_file(seg).unwrap();
    bytes[200] ^= 1;
    fs.write_file(seg, bytes);
    let (_, m) = c
        .call(&Request::ReadAll(ReadAll {
            from: None,
            direction: Direction::Forward,
            max_count: 10,
            min_position: None,
        }))
        .await;
    let e = expect_error(m, ErrorCode::Corruption);
    assert!(
        e.message.contains("00000000000000000000.seg"),
        "{}",
        e.message
    );
    // A failing disk: the append fails with Internal, naming the cause;
    // later appends too, until restart.
    fs.fail_syncs_after(0, Fault::Eio);
    let (_, m) = c
        .call(&append("s", ExpectedVersion::Any, vec![event(500, 10)]))
        .await;
    let e = expect_error(m, ErrorCode::Internal);
    assert!(e.message.contains("until restart"), "{}", e.message);
    fs.clear_faults();
    let (_, m) = c
        .call(&append("s", ExpectedVersion::Any, vec![event(501, 10)]))
        .await;
    expect_error(m, ErrorCode::Internal);
    // Reads of undamaged data still work.
    let (_, m) = c
        .call(&Request::ReadAll(ReadAll {
            from: None,
            direction: Direction::Backward,
            max_count: 5,
            min_position: None,
        }))
        .await;
    assert!(matches!(m, ServerMessage::Response(Response::ReadAllOk(a)) if a.events.len() == 5));
    drop(c);
    // The store cannot flush its index any more; stopping still works.
    server.stop().await;
}

#[tokio::test]
async fn big_events_are_paged_to_fit_frames() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    for i in 0..8 {
        let (_, m) = c
            .call(&append(
                "big",
                ExpectedVersion::Any,
                vec![event(100 + i, 3 << 20)],
            ))
            .await;
        assert!(
            matches!(m, ServerMessage::Response(Response::AppendOk(_))),
            "{m:?}"
        );
    }
    // Eight 3 MiB events do not fit one 16 MiB frame: the reply carries
    // some, and `next` says where to go on.
    let mut from = None;
    let mut got = 0;
    let mut pages = 0;
    loop {
        let (_, m) = c
            .call(&Request::ReadStream(ReadStream {
                stream: Text::from("big"),
                from,
                direction: Direction::Forward,
                max_count: 100,
                min_position: None,
            }))
            .await;
        let ServerMessage::Response(Response::ReadStreamOk(s)) = m else {
            panic!("{m:?}")
        };
        assert!(!s.events.is_empty());
        got += s.events.len();
        pages += 1;
        match s.next {
            Some(v) => from = Some(v),
            None => break,
        }
    }
    assert_eq!(got, 8);
    assert!(pages >= 2);
    let (_, m) = c
        .call(&Request::ReadAll(ReadAll {
            from: None,
            direction: Direction::Backward,
            max_count: 100,
            min_position: None,
        }))
        .await;
    let ServerMessage::Response(Response::ReadAllOk(a)) = m else {
        panic!("{m:?}")
    };
    assert!(a.events.len() < 8 && a.next.is_some());
    server.stop().await;
}
