//! Subscriptions when the log cannot be read: every failure reaches the
//! client with its own error code, a subscription ended by one frees its
//! place on the connection, and a failed live read is reported like any
//! other fall back to the log. Reads fail on demand through
//! [`FlakyReads`], an in-memory file system.

use std::sync::Arc;

use logbook_protocol::{
    Append, ErrorCode, EventId, ExpectedVersion, LogPosition, NewEvent, Push, Request, Response,
    ServerMessage, Subscribe, SubscribeFrom, SubscriptionTarget, Text,
};
use logbook_tests::{FlakyReads, RawConn, TestServer, payload, within};

async fn server_on(fs: &FlakyReads, max_subscriptions: usize) -> TestServer {
    let vfs = fs.clone();
    TestServer::start_tuned(move |s, n| {
        s.vfs = Arc::new(vfs);
        s.data_dir = "/data".into();
        n.max_subscriptions_per_connection = max_subscriptions;
    })
    .await
}

async fn append(c: &mut RawConn, stream: &str, n: u64) {
    let (_, m) = c
        .call(&Request::Append(Append {
            stream: Text::from(stream),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new(
                EventId::from_u128(u128::from(n)),
                "Noted",
                payload(16),
            )],
        }))
        .await;
    assert!(
        matches!(m, ServerMessage::Response(Response::AppendOk(_))),
        "{m:?}"
    );
}

fn subscribe_request(target: SubscriptionTarget) -> Request {
    Request::Subscribe(Subscribe {
        target,
        initial_credit: 100,
    })
}

fn all_from_start() -> SubscriptionTarget {
    SubscriptionTarget::All {
        from: SubscribeFrom::Start,
        filter: None,
    }
}

/// The next push of `sub`.
async fn next_push(c: &mut RawConn, sub: u32) -> Push {
    let f = within(10, "a push", c.recv_frame())
        .await
        .expect("the connection stays open");
    assert_eq!(f.header.corr_id, sub, "{f:?}");
    match ServerMessage::decode(&f) {
        Ok(ServerMessage::Push(p)) => p,
        other => panic!("expected a push, got {other:?}"),
    }
}

/// A stream subscription from `end` must learn where the stream stands;
/// when that read fails the Subscribe is refused with the failure's code,
/// rather than started from a made-up version (which used to re-read the
/// stream from version 0 for ever).
#[tokio::test]
async fn a_failed_stream_lookup_refuses_a_subscription_from_end() {
    let fs = FlakyReads::new();
    let server = server_on(&fs, 100).await;
    let mut c = server.raw().await;
    for n in 1..=5 {
        append(&mut c, "s", n).await;
    }
    fs.fail_all(true);
    let (_, m) = c
        .call(&subscribe_request(SubscriptionTarget::Stream {
            stream: Text::from("s"),
            from: SubscribeFrom::End,
        }))
        .await;
    match m {
        ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::Internal, "{e:?}"),
        other => panic!("expected an error reply, got {other:?}"),
    }
    fs.fail_all(false);
    server.stop().await;
}

/// A catch-up read that fails ends the subscription with the code of its
/// failure: an I/O error is `Internal`, damaged bytes are `Corruption`.
#[tokio::test]
async fn a_catch_up_read_error_ends_the_subscription_with_its_own_code() {
    let fs = FlakyReads::new();
    let server = server_on(&fs, 100).await;
    let mut c = server.raw().await;
    for n in 1..=5 {
        append(&mut c, "s", n).await;
    }
    fs.fail_all(true);
    let (sub, m) = c.call(&subscribe_request(all_from_start())).await;
    assert!(
        matches!(m, ServerMessage::Response(Response::SubscribeOk(_))),
        "{m:?}"
    );
    match next_push(&mut c, sub).await {
        Push::Ended { code, .. } => assert_eq!(code, ErrorCode::Internal),
        other => panic!("{other:?}"),
    }
    fs.fail_all(false);

    // Damaged bytes in the log: Corruption.
    let seg = std::path::Path::new("/data/log/00000000000000000000.seg");
    let mut bytes = fs.files().read_file(seg).expect("the first segment");
    // A byte inside the second record: its checksum no longer matches.
    bytes[200] ^= 1;
    fs.files().write_file(seg, bytes);
    let (sub, _) = c.call(&subscribe_request(all_from_start())).await;
    loop {
        match next_push(&mut c, sub).await {
            Push::Events { .. } => {}
            Push::Ended { code, .. } => {
                assert_eq!(code, ErrorCode::Corruption);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    server.stop().await;
}

/// A subscription the server ended on an error is over: it no longer
/// counts toward the connection's limit, and its corr_id may name a new
/// subscription at once.
#[tokio::test]
async fn a_subscription_ended_by_an_error_frees_its_slot_and_its_corr_id() {
    let fs = FlakyReads::new();
    let server = server_on(&fs, 1).await;
    let mut c = server.raw().await;
    append(&mut c, "s", 1).await;
    fs.fail_all(true);
    c.send_with_id(&subscribe_request(all_from_start()), 77)
        .await;
    let m = c.recv().await.expect("a reply");
    assert!(
        matches!(m, ServerMessage::Response(Response::SubscribeOk(_))),
        "{m:?}"
    );
    assert!(matches!(next_push(&mut c, 77).await, Push::Ended { .. }));
    fs.fail_all(false);
    // The same corr_id, on a connection allowed one subscription.
    c.send_with_id(&subscribe_request(all_from_start()), 77)
        .await;
    let m = c.recv().await.expect("a reply");
    assert!(
        matches!(m, ServerMessage::Response(Response::SubscribeOk(_))),
        "{m:?}"
    );
    match next_push(&mut c, 77).await {
        Push::Events { events, .. } => assert_eq!(events[0].position, LogPosition(0)),
        other => panic!("{other:?}"),
    }
    server.stop().await;
}

/// When live delivery cannot read the log, its subscriptions fall back to
/// reading it themselves, and say so: `fell_behind`, then the events, then
/// `caught_up` again.
#[tokio::test]
async fn a_live_read_error_says_fell_behind_and_catches_up_again() {
    let fs = FlakyReads::new();
    let server = server_on(&fs, 100).await;
    let mut c = server.raw().await;
    append(&mut c, "s", 1).await;
    let (sub, m) = c.call(&subscribe_request(all_from_start())).await;
    assert!(
        matches!(m, ServerMessage::Response(Response::SubscribeOk(_))),
        "{m:?}"
    );
    assert!(matches!(next_push(&mut c, sub).await, Push::Events { .. }));
    assert!(matches!(
        next_push(&mut c, sub).await,
        Push::CaughtUp { .. }
    ));
    // The live dispatcher's read of the next event fails; the
    // subscription's own read of it succeeds. (Appending to a new stream
    // reads nothing.)
    fs.fail_next(1);
    let mut w = server.raw().await;
    append(&mut w, "new", 2).await;
    match next_push(&mut c, sub).await {
        Push::FellBehind { position, .. } => assert_eq!(position, LogPosition(1)),
        other => panic!("expected fell_behind, got {other:?}"),
    }
    match next_push(&mut c, sub).await {
        Push::Events { events, .. } => assert_eq!(events[0].position, LogPosition(1)),
        other => panic!("{other:?}"),
    }
    match next_push(&mut c, sub).await {
        Push::CaughtUp { position, .. } => assert_eq!(position, LogPosition(2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs.pending_failures(), 0, "the live read did fail");
    server.stop().await;
}
