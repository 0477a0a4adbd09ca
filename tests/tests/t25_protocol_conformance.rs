//! Conformance with `protocol/PROTOCOL.md`: one test per rule, each named
//! for the rule and citing its section. Where the rule is about bytes, the
//! test sends raw frames ([`raw_frame`]) rather than trusting an encoder
//! that obeys it.

use logbook_protocol::{
    Append, Credit, Direction, ErrorCode, ErrorReply, EventId, ExpectedVersion, Filter, Hello,
    Kind, LogPosition, NewEvent, Opcode, Ping, Push, ReadAll, ReadStream, Request, Response,
    ServerMessage, StreamVersion, Subscribe, SubscribeFrom, SubscriptionTarget, Text,
};
use logbook_tests::{RawConn, RawHeader, TestServer, payload, raw_frame, within};

/// `{"nonce": 1}`, a Ping body.
const PING_BODY: [u8; 8] = [0x81, 0xa5, b'n', b'o', b'n', b'c', b'e', 0x01];

fn ev(n: u64, event_type: &str) -> NewEvent {
    NewEvent::new(
        EventId::from_u128(u128::from(n) + 1),
        event_type,
        payload(8),
    )
}

/// Appends `count` small events to `stream` in batches of at most 1,000.
async fn fill(c: &mut RawConn, stream: &str, count: u64, first_id: u64) {
    let mut done = 0;
    while done < count {
        let n = (count - done).min(1_000);
        let events = (0..n).map(|i| ev(first_id + done + i, "Noted")).collect();
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
        done += n;
    }
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

async fn grant(c: &mut RawConn, subscription: u32, events: u32) {
    c.send_with_id(
        &Request::Credit(Credit {
            subscription,
            events,
        }),
        subscription,
    )
    .await;
}

fn filtered(prefix: &str) -> SubscriptionTarget {
    SubscriptionTarget::All {
        from: SubscribeFrom::Start,
        filter: Some(Filter {
            stream_prefixes: vec![prefix.to_owned()],
            ..Filter::default()
        }),
    }
}

/// What a subscription pushed until (and including) its first `caught_up`.
#[derive(Debug, Default)]
struct UntilCaughtUp {
    /// Positions of the events.
    events: Vec<u64>,
    /// Versions of the events.
    versions: Vec<u64>,
    checkpoints: Vec<u64>,
    caught_up: u64,
    next_version: Option<StreamVersion>,
}

async fn until_caught_up(c: &mut RawConn, sub: u32) -> UntilCaughtUp {
    let mut seen = UntilCaughtUp::default();
    loop {
        let f = c.recv_frame().await.expect("a push");
        assert_eq!(f.header.corr_id, sub);
        match ServerMessage::decode(&f).expect("a push") {
            ServerMessage::Push(Push::Events { events, .. }) => {
                seen.events.extend(events.iter().map(|e| e.position.0));
                seen.versions.extend(events.iter().map(|e| e.version.0));
            }
            ServerMessage::Push(Push::Checkpoint { position }) => seen.checkpoints.push(position.0),
            ServerMessage::Push(Push::CaughtUp {
                position,
                next_version,
            }) => {
                seen.caught_up = position.0;
                seen.next_version = next_version;
                return seen;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next frame must be a connection-level error (§2.4: corr_id 0,
/// opcode Hello, the given code), and the connection must close after it.
async fn expect_connection_error(c: &mut RawConn, code: ErrorCode) -> ErrorReply {
    let f = within(10, "a connection-level error", c.recv_frame())
        .await
        .expect("an error frame before the close");
    assert_eq!(f.header.kind, Kind::Error, "{f:?}");
    assert_eq!(f.header.corr_id, 0, "connection-level errors use corr_id 0");
    assert_eq!(f.header.opcode, Opcode::Hello);
    let ServerMessage::Error(e) = ServerMessage::decode(&f).expect("an error body") else {
        panic!("{f:?}")
    };
    assert_eq!(e.code, code, "{e:?}");
    assert!(
        within(10, "the close", c.recv_frame()).await.is_none(),
        "the connection closes after a connection-level error"
    );
    e
}

async fn expect_pong(c: &mut RawConn) {
    let (_, m) = c.call(&Request::Ping(Ping { nonce: 9 })).await;
    assert!(
        matches!(m, ServerMessage::Response(Response::Pong(_))),
        "{m:?}"
    );
}

// ------------------------------------------------------------- §1 frames

/// §1: Requests have END clear; a request with it set breaks the framing
/// rules and is a frame error.
#[tokio::test]
async fn a_request_with_the_end_flag_set_is_a_frame_error() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let header = RawHeader {
        flags: 1,
        ..RawHeader::request(Opcode::Ping, 5)
    };
    c.send_raw(&raw_frame(header, &PING_BODY)).await;
    expect_connection_error(&mut c, ErrorCode::BadRequest).await;
    server.stop().await;
}

/// §2.4: a declared length over the server's frame limit is refused with
/// `TooLarge` carrying the limit, before anything is buffered.
#[tokio::test]
async fn an_oversized_frame_length_gets_too_large_with_the_limit() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let max = logbook_protocol::DEFAULT_MAX_FRAME_BYTES;
    // len counts everything after itself: the frame would be max + 1 bytes.
    c.send_raw(&(max - 3).to_le_bytes()).await;
    let e = expect_connection_error(&mut c, ErrorCode::TooLarge).await;
    assert_eq!(e.limit, Some(u64::from(max)));
    server.stop().await;
}

/// §2.4: a frame in another protocol version is refused with
/// `UnsupportedVersion` carrying `max_version`.
#[tokio::test]
async fn a_frame_version_mismatch_gets_unsupported_version_with_max_version() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let header = RawHeader {
        version: 2,
        ..RawHeader::request(Opcode::Ping, 5)
    };
    c.send_raw(&raw_frame(header, &PING_BODY)).await;
    let e = expect_connection_error(&mut c, ErrorCode::UnsupportedVersion).await;
    assert_eq!(e.max_version, Some(logbook_protocol::PROTOCOL_VERSION));
    server.stop().await;
}

/// §2.4: clients send only requests; any other kind is a connection-level
/// error on corr_id 0, not an error on the frame's own corr_id.
#[tokio::test]
async fn a_frame_that_is_not_a_request_gets_an_error_on_corr_id_0() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let header = RawHeader {
        kind: 2,
        flags: 1,
        ..RawHeader::request(Opcode::Ping, 5)
    };
    c.send_raw(&raw_frame(header, &PING_BODY)).await;
    expect_connection_error(&mut c, ErrorCode::BadRequest).await;
    server.stop().await;
}

// -------------------------------------------------- §2 connection rules

/// §2.2: corr_id 0 is reserved; a request that uses it is a
/// connection-level error and the connection closes.
#[tokio::test]
async fn a_request_with_corr_id_0_is_a_connection_error() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    c.send_with_id(&Request::Ping(Ping { nonce: 1 }), 0).await;
    expect_connection_error(&mut c, ErrorCode::BadRequest).await;
    // Hello too.
    let mut c = RawConn::connect(server.addr).await;
    let hello = Request::Hello(Hello {
        protocol_version: logbook_protocol::PROTOCOL_VERSION,
        client_name: "t25".into(),
        token: None,
        user: None,
    });
    c.send_with_id(&hello, 0).await;
    expect_connection_error(&mut c, ErrorCode::BadRequest).await;

    // A Credit on corr_id 0 too, and it is not applied: the subscription,
    // paused at its first event, sends nothing before the close.
    let mut writer = server.raw().await;
    fill(&mut writer, "s", 1, 0).await;
    let mut c = server.raw().await;
    let sub = subscribe(&mut c, filtered(""), 0).await;
    c.send_with_id(
        &Request::Credit(Credit {
            subscription: sub,
            events: 5,
        }),
        0,
    )
    .await;
    expect_connection_error(&mut c, ErrorCode::BadRequest).await;
    server.stop().await;
}

/// §2.3: a Credit never gets a reply, whether or not its subscription
/// exists.
#[tokio::test]
async fn a_credit_gets_no_reply() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    grant(&mut c, 999, 10).await;
    expect_pong(&mut c).await;
    let sub = subscribe(
        &mut c,
        SubscriptionTarget::All {
            from: SubscribeFrom::End,
            filter: None,
        },
        10,
    )
    .await;
    let first = until_caught_up(&mut c, sub).await;
    assert!(first.events.is_empty());
    grant(&mut c, sub, 10).await;
    expect_pong(&mut c).await;
    server.stop().await;
}

/// §2.3: a Credit whose body does not decode cannot be answered (a Credit
/// has no reply) and cannot be attributed: it is a connection-level error.
#[tokio::test]
async fn a_malformed_credit_is_a_connection_error() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    // {"subscription": "x", "events": 1}
    let mut body = vec![0x82, 0xac];
    body.extend_from_slice(b"subscription");
    body.extend_from_slice(&[0xa1, b'x', 0xa6]);
    body.extend_from_slice(b"events");
    body.push(0x01);
    c.send_raw(&raw_frame(RawHeader::request(Opcode::Credit, 7), &body))
        .await;
    expect_connection_error(&mut c, ErrorCode::BadRequest).await;
    server.stop().await;
}

/// §2.4: when the server shuts down it ends every subscription with an
/// `ended` push (`ShuttingDown`), then says `ShuttingDown` on corr_id 0
/// and closes.
#[tokio::test]
async fn shutdown_ends_subscriptions_then_says_shutting_down_on_corr_id_0() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    let sub = subscribe(
        &mut c,
        SubscriptionTarget::All {
            from: SubscribeFrom::Start,
            filter: None,
        },
        10,
    )
    .await;
    until_caught_up(&mut c, sub).await;
    server.stop().await;
    let f = c.recv_frame().await.expect("an ended push");
    assert_eq!(f.header.corr_id, sub);
    assert!(
        matches!(
            ServerMessage::decode(&f),
            Ok(ServerMessage::Push(Push::Ended {
                code: ErrorCode::ShuttingDown,
                ..
            }))
        ),
        "{f:?}"
    );
    expect_connection_error(&mut c, ErrorCode::ShuttingDown).await;
}

// ---------------------------------------------------------- §3 bodies

/// §3: every body is one map with str keys; an array, or a map with
/// integer keys, is refused with `BadRequest` and the connection goes on.
#[tokio::test]
async fn a_body_that_is_not_a_map_with_str_keys_is_refused() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    for (corr_id, body) in [(5, &[0x91, 77][..]), (6, &[0x81, 0x00, 77][..])] {
        c.send_raw(&raw_frame(RawHeader::request(Opcode::Ping, corr_id), body))
            .await;
        let f = c.recv_frame().await.expect("a reply");
        assert_eq!(f.header.corr_id, corr_id);
        match ServerMessage::decode(&f) {
            Ok(ServerMessage::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest),
            other => panic!("body {body:?}: {other:?}"),
        }
    }
    expect_pong(&mut c).await;
    server.stop().await;
}

// -------------------------------------------------------- §5 messages

/// §3: an optional field may be nil, which means "not given": a ReadAll
/// whose `direction` is nil reads forward.
#[tokio::test]
async fn an_optional_field_may_be_nil() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    fill(&mut c, "s", 3, 0).await;
    // {"max_count": 2, "direction": nil, "from": nil}
    let mut body = vec![0x83, 0xa9];
    body.extend_from_slice(b"max_count");
    body.extend_from_slice(&[0x02, 0xa9]);
    body.extend_from_slice(b"direction");
    body.extend_from_slice(&[0xc0, 0xa4]);
    body.extend_from_slice(b"from");
    body.push(0xc0);
    c.send_raw(&raw_frame(RawHeader::request(Opcode::ReadAll, 5), &body))
        .await;
    match c.recv().await {
        Some(ServerMessage::Response(Response::ReadAllOk(page))) => {
            let positions: Vec<u64> = page.events.iter().map(|e| e.position.0).collect();
            assert_eq!(positions, vec![0, 1]);
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// §5.1: `HelloOk` announces `max_event_bytes`, the largest event's type,
/// metadata and data bytes together; an event of that size is accepted,
/// one byte more is `TooLarge` with the limit.
#[tokio::test]
async fn hello_ok_announces_the_largest_event() {
    let server = TestServer::start_tuned(|s, _| s.max_event_bytes = 10_000).await;
    let mut c = RawConn::connect(server.addr).await;
    let ok = c.hello_ok().await;
    assert_eq!(ok.max_event_bytes, 10_000);
    let append = |id: u128, size: usize| {
        Request::Append(Append {
            stream: Text::from("limits"),
            expected: ExpectedVersion::Any,
            events: vec![
                NewEvent::new(EventId::from_u128(id), "Type", payload(size - 4 - 2))
                    .with_metadata(payload(2)),
            ],
        })
    };
    let (_, m) = c.call(&append(1, 10_000)).await;
    assert!(
        matches!(m, ServerMessage::Response(Response::AppendOk(_))),
        "{m:?}"
    );
    let (_, m) = c.call(&append(2, 10_001)).await;
    match m {
        ServerMessage::Error(e) => {
            assert_eq!(e.code, ErrorCode::TooLarge);
            assert_eq!(e.limit, Some(10_000));
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// §5.1: `max_append_bytes` counts the type, metadata and data bytes of
/// an append's events, not their encoding: an append of exactly that many
/// such bytes is accepted, one more is `TooLarge` with the limit.
#[tokio::test]
async fn max_append_bytes_counts_type_metadata_and_data() {
    let server = TestServer::start_tuned(|s, _| {
        s.max_batch_bytes = 64 << 10;
        s.max_event_bytes = 32 << 10;
        s.max_batch_events = 8;
    })
    .await;
    let mut c = RawConn::connect(server.addr).await;
    let ok = c.hello_ok().await;
    let limit = ok.max_append_bytes as usize;
    assert!(limit > 32 << 10, "{ok:?}");
    // Two events, "E" plus data: exactly `limit` bytes in all.
    let batch = |extra: usize| {
        let first = (32 << 10) - 1;
        let second = limit - (32 << 10) - 1 + extra;
        vec![
            NewEvent::new(
                EventId::from_u128(1 + extra as u128 * 10),
                "E",
                payload(first),
            ),
            NewEvent::new(
                EventId::from_u128(2 + extra as u128 * 10),
                "E",
                payload(second),
            ),
        ]
    };
    let append = |events| {
        Request::Append(Append {
            stream: Text::from("limits"),
            expected: ExpectedVersion::Any,
            events,
        })
    };
    let (_, m) = c.call(&append(batch(0))).await;
    assert!(
        matches!(m, ServerMessage::Response(Response::AppendOk(_))),
        "{m:?}"
    );
    let (_, m) = c.call(&append(batch(1))).await;
    match m {
        ServerMessage::Error(e) => {
            assert_eq!(e.code, ErrorCode::TooLarge);
            assert_eq!(e.limit, Some(limit as u64));
        }
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// §5.4/§5.5: `max_count: 0` returns no events; the page still says where
/// the stream or the log stands and where a read would start.
#[tokio::test]
async fn a_read_with_max_count_0_returns_no_events() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    fill(&mut c, "s", 3, 0).await;
    let read_stream = |from, direction| {
        Request::ReadStream(ReadStream {
            stream: Text::from("s"),
            from,
            direction,
            max_count: 0,
            min_position: None,
        })
    };
    for (from, direction, next) in [
        (None, Direction::Forward, Some(0)),
        (Some(StreamVersion(1)), Direction::Backward, Some(1)),
        (Some(StreamVersion(3)), Direction::Forward, None),
    ] {
        let (_, m) = c.call(&read_stream(from, direction)).await;
        let ServerMessage::Response(Response::ReadStreamOk(page)) = m else {
            panic!("{m:?}")
        };
        assert!(page.events.is_empty(), "{page:?}");
        assert_eq!(page.last_version, Some(StreamVersion(2)));
        assert_eq!(
            page.next,
            next.map(StreamVersion),
            "from {from:?} {direction:?}"
        );
    }
    for (from, direction, next) in [
        (None, Direction::Forward, Some(0)),
        (None, Direction::Backward, Some(2)),
        (Some(LogPosition(3)), Direction::Forward, None),
    ] {
        let (_, m) = c
            .call(&Request::ReadAll(ReadAll {
                from,
                direction,
                max_count: 0,
                min_position: None,
            }))
            .await;
        let ServerMessage::Response(Response::ReadAllOk(page)) = m else {
            panic!("{m:?}")
        };
        assert!(page.events.is_empty(), "{page:?}");
        assert_eq!(page.head, LogPosition(3));
        assert_eq!(
            page.next,
            next.map(LogPosition),
            "from {from:?} {direction:?}"
        );
    }
    server.stop().await;
}

/// §5.6: `from` names an event that exists: subscribing after a position
/// past the end of the log, or a version past the end of the stream (or of
/// a stream with no events), is refused with `OutOfRange` (12).
#[tokio::test]
async fn subscribing_after_the_end_is_refused_with_out_of_range() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    fill(&mut c, "s", 3, 0).await;
    let all_after = |p| SubscriptionTarget::All {
        from: SubscribeFrom::After(LogPosition(p)),
        filter: None,
    };
    let stream_after = |s: &str, v| SubscriptionTarget::Stream {
        stream: Text::from(s),
        from: SubscribeFrom::After(StreamVersion(v)),
    };
    // The last event itself is a valid starting point.
    for target in [all_after(2), stream_after("s", 2)] {
        let mut s = server.raw().await;
        let sub = subscribe(&mut s, target, 10).await;
        assert!(until_caught_up(&mut s, sub).await.events.is_empty());
    }
    for (target, stream) in [
        (all_after(3), None),
        (stream_after("s", 3), Some("s")),
        (stream_after("nobody", 0), Some("nobody")),
    ] {
        let (_, m) = c
            .call(&Request::Subscribe(Subscribe {
                target: target.clone(),
                initial_credit: 10,
            }))
            .await;
        match m {
            ServerMessage::Error(e) => {
                assert_eq!(e.code, ErrorCode::from_u16(12), "{target:?}: {e:?}");
                assert_eq!(e.stream.as_deref(), stream);
            }
            other => panic!("{target:?}: {other:?}"),
        }
    }
    expect_pong(&mut c).await;
    server.stop().await;
}

/// §5.7: a filtered subscription keeps scanning, and checkpointing every
/// `checkpoint_interval` events (default 1,000), with no credit at all.
#[tokio::test]
async fn filtered_catch_up_with_no_credit_still_checkpoints_and_catches_up() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    fill(&mut c, "a", 3_000, 0).await;
    let mut s = server.raw().await;
    let sub = subscribe(&mut s, filtered("zz"), 0).await;
    let seen = within(30, "caught_up", until_caught_up(&mut s, sub)).await;
    assert!(seen.events.is_empty());
    assert_eq!(seen.checkpoints, vec![1_000, 2_000, 3_000]);
    assert_eq!(seen.caught_up, 3_000);
    server.stop().await;
}

/// §5.7: running out of credit pauses a filtered subscription only at a
/// match it cannot send: past the last match it scans on to `caught_up`.
#[tokio::test]
async fn filtered_catch_up_past_its_last_credited_match_reaches_caught_up() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    // 13,002 events; the two in `zz-1` are at positions 100 and 7,000.
    fill(&mut c, "a", 100, 0).await;
    fill(&mut c, "zz-1", 1, 100).await;
    fill(&mut c, "a", 6_899, 101).await;
    fill(&mut c, "zz-1", 1, 7_000).await;
    fill(&mut c, "a", 6_001, 7_001).await;
    let mut s = server.raw().await;
    let sub = subscribe(&mut s, filtered("zz"), 2).await;
    let seen = within(30, "caught_up", until_caught_up(&mut s, sub)).await;
    assert_eq!(seen.events, vec![100, 7_000]);
    assert_eq!(seen.caught_up, 13_002);
    server.stop().await;
}

/// §2.3: credit holds back events, never `caught_up`: a subscription with
/// nothing to deliver reports it with no credit, so a client may wait for
/// it before granting any.
#[tokio::test]
async fn a_subscription_from_end_with_no_credit_reports_caught_up() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    fill(&mut c, "s", 5, 0).await;
    let mut s = server.raw().await;
    for target in [
        SubscriptionTarget::All {
            from: SubscribeFrom::End,
            filter: None,
        },
        SubscriptionTarget::Stream {
            stream: Text::from("s"),
            from: SubscribeFrom::End,
        },
    ] {
        let sub = subscribe(&mut s, target, 0).await;
        let seen = within(10, "caught_up", until_caught_up(&mut s, sub)).await;
        assert!(seen.events.is_empty());
        assert_eq!(seen.caught_up, 5);
    }
    server.stop().await;
}

/// §5.6: a stream with no events can be subscribed to (from `start` or
/// `end`): the subscription is caught up at once, at stream version 0,
/// and delivers the stream's first events when they come.
#[tokio::test]
async fn subscribing_to_a_stream_before_it_exists_waits_for_its_first_event() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    fill(&mut c, "other", 2, 0).await;
    for (i, from) in [SubscribeFrom::Start, SubscribeFrom::End]
        .into_iter()
        .enumerate()
    {
        let mut s = server.raw().await;
        let target = SubscriptionTarget::Stream {
            stream: Text::from(format!("later-{from:?}").as_str()),
            from,
        };
        let sub = subscribe(&mut s, target, 10).await;
        let seen = until_caught_up(&mut s, sub).await;
        assert!(seen.events.is_empty());
        assert_eq!(seen.next_version, Some(StreamVersion(0)));
        // Event ids are unique in the store: a new one per stream.
        fill(&mut c, &format!("later-{from:?}"), 1, 100 + i as u64).await;
        let f = s.recv_frame().await.expect("the first event");
        match ServerMessage::decode(&f) {
            Ok(ServerMessage::Push(Push::Events { events, .. })) => {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].version, StreamVersion(0));
            }
            other => panic!("{other:?}"),
        }
    }
    server.stop().await;
}

/// §5.7: a stream subscription's `caught_up` carries `next_version`, the
/// first version not delivered; subscribing after `next_version - 1`
/// resumes exactly there, which `position` (a log position) cannot do.
#[tokio::test]
async fn stream_markers_carry_the_next_version_to_resume_from() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    // The stream's three events are at log positions 1, 3 and 5.
    for i in 0..3 {
        fill(&mut c, "noise", 1, 10 + i).await;
        fill(&mut c, "s", 1, 20 + i).await;
    }
    let stream = |from| SubscriptionTarget::Stream {
        stream: Text::from("s"),
        from,
    };
    for from in [SubscribeFrom::Start, SubscribeFrom::End] {
        let mut s = server.raw().await;
        let sub = subscribe(&mut s, stream(from), 10).await;
        let seen = until_caught_up(&mut s, sub).await;
        assert_eq!(seen.caught_up, 6, "{from:?}");
        assert_eq!(seen.next_version, Some(StreamVersion(3)), "{from:?}");
    }
    // The recipe: after next_version - 1.
    fill(&mut c, "s", 2, 30).await;
    let mut s = server.raw().await;
    let sub = subscribe(&mut s, stream(SubscribeFrom::After(StreamVersion(2))), 10).await;
    let seen = until_caught_up(&mut s, sub).await;
    assert_eq!(seen.versions, vec![3, 4]);
    assert_eq!(seen.next_version, Some(StreamVersion(5)));
    server.stop().await;
}

/// §5.6: a checkpoint follows every `checkpoint_interval` events scanned
/// without a match, counted afresh after each match; `position` is where
/// the scan reached.
#[tokio::test]
async fn checkpoints_follow_each_interval_of_events_without_a_match() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    fill(&mut c, "a", 5, 0).await;
    fill(&mut c, "zz", 1, 5).await;
    fill(&mut c, "a", 12, 6).await;
    let mut s = server.raw().await;
    let target = SubscriptionTarget::All {
        from: SubscribeFrom::Start,
        filter: Some(Filter {
            stream_prefixes: vec!["zz".into()],
            checkpoint_interval: 5,
            ..Filter::default()
        }),
    };
    let sub = subscribe(&mut s, target, 10).await;
    let seen = until_caught_up(&mut s, sub).await;
    assert_eq!(seen.events, vec![5]);
    assert_eq!(seen.checkpoints, vec![5, 11, 16]);
    assert_eq!(seen.caught_up, 18);
    server.stop().await;
}
