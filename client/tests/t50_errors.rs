//! Error replies map to the right `Error` variant with their details;
//! non-retryable errors are never retried; retryable ones are.

mod common;

use common::{options, setup};
use logbook_client::{Error, EventId, ExpectedVersion, NewEvent, RetryPolicy, StreamVersion};
use logbook_protocol::{ErrorCode, ErrorReply, Opcode, Pong, Request, Response};

/// Appends once while the server answers `reply`; returns the client's error
/// and checks the server saw exactly one request.
async fn append_error(reply: ErrorReply) -> Error {
    let (_server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move {
            let event = NewEvent::new(EventId::from_u128(1), "E", "x");
            client
                .append(
                    "acct-7",
                    ExpectedVersion::Exact(StreamVersion(3)),
                    vec![event],
                )
                .await
        }
    });
    let (id, req) = conn.expect().await;
    assert!(matches!(req, Request::Append(_)));
    conn.error(id, Opcode::Append, reply).await;
    let err = call.await.unwrap().unwrap_err();

    // Not retried: the next request the server sees is this ping.
    let ping = tokio::spawn(async move { client.ping().await });
    let (id, req) = conn.expect().await;
    let Request::Ping(p) = req else {
        panic!("the error was retried: {req:?}")
    };
    conn.reply(id, Response::Pong(Pong { nonce: p.nonce }))
        .await;
    ping.await.unwrap().unwrap();
    err
}

#[tokio::test]
async fn wrong_expected_version_carries_stream_expected_and_actual() {
    let reply = ErrorReply::new(ErrorCode::WrongExpectedVersion, "conflict")
        .with_stream("acct-7")
        .with_versions(
            ExpectedVersion::Exact(StreamVersion(3)),
            Some(StreamVersion(5)),
        );
    match append_error(reply).await {
        Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => {
            assert_eq!(stream, "acct-7");
            assert_eq!(expected, ExpectedVersion::Exact(StreamVersion(3)));
            assert_eq!(actual, Some(StreamVersion(5)));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wrong_expected_version_on_a_missing_stream() {
    let reply = ErrorReply::new(ErrorCode::WrongExpectedVersion, "conflict")
        .with_stream("acct-7")
        .with_versions(ExpectedVersion::StreamExists, None);
    match append_error(reply).await {
        Error::WrongExpectedVersion {
            expected, actual, ..
        } => {
            assert_eq!(expected, ExpectedVersion::StreamExists);
            assert_eq!(actual, None);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_other_code_maps_to_its_variant() {
    let no_retry = || async { setup(options().retry(RetryPolicy::none())).await };
    type Check = fn(&Error) -> bool;
    let cases: Vec<(ErrorReply, Check)> = vec![
        (
            ErrorReply::new(ErrorCode::StreamNotFound, "gone").with_stream("acct-7"),
            |e| matches!(e, Error::StreamNotFound { stream } if stream == "acct-7"),
        ),
        (
            ErrorReply::new(ErrorCode::BadRequest, "bad name"),
            |e| matches!(e, Error::BadRequest(m) if m == "bad name"),
        ),
        (
            ErrorReply::new(ErrorCode::TooLarge, "too many").with_limit(1000),
            |e| matches!(e, Error::TooLarge { limit: Some(1000), message } if message == "too many"),
        ),
        (ErrorReply::new(ErrorCode::NotAuthenticated, "who?"), |e| {
            matches!(e, Error::NotAuthenticated)
        }),
        (ErrorReply::new(ErrorCode::ServerBusy, "busy"), |e| {
            matches!(e, Error::ServerBusy)
        }),
        (ErrorReply::new(ErrorCode::ShuttingDown, "bye"), |e| {
            matches!(e, Error::ShuttingDown)
        }),
        (
            ErrorReply::new(ErrorCode::Corruption, "log/0.seg offset 42"),
            |e| matches!(e, Error::Corruption(m) if m.contains("offset 42")),
        ),
        (
            ErrorReply::new(ErrorCode::Internal, "oops"),
            |e| matches!(e, Error::Internal(m) if m == "oops"),
        ),
        (
            ErrorReply::new(ErrorCode::UnsupportedVersion, "v?").with_max_version(1),
            |e| {
                matches!(
                    e,
                    Error::UnsupportedVersion {
                        max_version: Some(1)
                    }
                )
            },
        ),
        (
            ErrorReply::new(ErrorCode::from_u16(4242), "from the future"),
            |e| matches!(e, Error::Server { code: 4242, message } if message == "from the future"),
        ),
    ];
    for (reply, check) in cases {
        let code = reply.code;
        let (_server, client, mut conn) = no_retry().await;
        let call =
            tokio::spawn(
                async move { client.read_stream_page("acct-7", Default::default()).await },
            );
        let (id, _) = conn.expect().await;
        conn.error(id, Opcode::ReadStream, reply).await;
        let err = call.await.unwrap().unwrap_err();
        assert!(check(&err), "{code:?} mapped to {err:?}");
    }
}

#[tokio::test]
async fn stream_not_found_without_detail_names_the_requested_stream() {
    let (_server, client, mut conn) = setup(options()).await;
    let call =
        tokio::spawn(async move { client.read_stream_page("acct-9", Default::default()).await });
    let (id, _) = conn.expect().await;
    conn.error(
        id,
        Opcode::ReadStream,
        ErrorReply::new(ErrorCode::StreamNotFound, "no"),
    )
    .await;
    match call.await.unwrap().unwrap_err() {
        Error::StreamNotFound { stream } => assert_eq!(stream, "acct-9"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn server_busy_is_retried_and_then_succeeds() {
    let (_server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn(async move { client.ping().await });
    let (id, _) = conn.expect().await;
    conn.error(
        id,
        Opcode::Ping,
        ErrorReply::new(ErrorCode::ServerBusy, "later"),
    )
    .await;
    let (id, req) = conn.expect().await;
    let Request::Ping(p) = req else {
        panic!("{req:?}")
    };
    conn.reply(id, Response::Pong(Pong { nonce: p.nonce }))
        .await;
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn server_busy_until_the_attempts_run_out() {
    let (_server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn(async move { client.ping().await });
    for _ in 0..3 {
        let (id, _) = conn.expect().await;
        conn.error(
            id,
            Opcode::Ping,
            ErrorReply::new(ErrorCode::ServerBusy, "later"),
        )
        .await;
    }
    assert!(matches!(call.await.unwrap(), Err(Error::ServerBusy)));
}

#[tokio::test]
async fn a_malformed_reply_is_a_protocol_error_and_drops_the_connection() {
    let (mut server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let (id, _) = conn.expect().await;
    // A Pong body where an AppendOk is expected would be a wrong type; here
    // the body is not a map at all.
    let mut out = bytes::BytesMut::new();
    logbook_protocol::frame::encode_frame_with(
        &mut out,
        &logbook_protocol::FrameHeader::new(logbook_protocol::Kind::Response, Opcode::Ping, id),
        common::MAX_FRAME,
        |b| {
            b.extend_from_slice(&[0x2a]);
            Ok(())
        },
    )
    .unwrap();
    conn.send_raw(&out).await;
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    // The client hung up and the next call reconnects.
    assert!(conn.recv().await.is_none());
    let ping = tokio::spawn(async move { client.ping().await });
    let mut conn = server.accept().await;
    let (id, req) = conn.expect().await;
    let Request::Ping(p) = req else {
        panic!("{req:?}")
    };
    conn.reply(id, Response::Pong(Pong { nonce: p.nonce }))
        .await;
    ping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_reply_with_the_wrong_opcode_is_a_protocol_error() {
    let (_server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn(async move { client.ping().await });
    let (id, _) = conn.expect().await;
    conn.error(
        id,
        Opcode::Append,
        ErrorReply::new(ErrorCode::Internal, "?"),
    )
    .await;
    assert!(matches!(call.await.unwrap(), Err(Error::Protocol(_))));
}

#[tokio::test]
async fn a_connection_level_error_fails_requests_in_flight() {
    let (_server, client, mut conn) = setup(options().retry(RetryPolicy::none())).await;
    let call = tokio::spawn(async move { client.ping().await });
    let _ = conn.expect().await;
    conn.error(
        0,
        Opcode::Hello,
        ErrorReply::new(ErrorCode::BadRequest, "bad frame"),
    )
    .await;
    assert!(matches!(call.await.unwrap(), Err(Error::Disconnected)));
}

#[tokio::test]
async fn a_frame_over_the_clients_limit_breaks_the_connection() {
    let (_server, client, mut conn) =
        setup(options().retry(RetryPolicy::none()).max_frame_bytes(1024)).await;
    let call = tokio::spawn(async move { client.read_stream_page("s", Default::default()).await });
    let (id, _) = conn.expect().await;
    let events = (0..100).map(|v| common::recorded("s", v, v)).collect();
    conn.reply(
        id,
        Response::ReadStreamOk(logbook_protocol::ReadStreamOk {
            events,
            last_version: None,
            next: None,
        }),
    )
    .await;
    let r = call.await.unwrap();
    assert!(matches!(r, Err(Error::Disconnected)), "{r:?}");
}
