//! Bad input: garbage, oversized lengths, truncated frames, unknown kinds,
//! malformed bodies, silent clients and clients that never read. Each gets
//! an error frame where possible and is closed; every other client keeps
//! being served, and nothing stored is touched.

use std::time::Duration;

use bytes::BytesMut;
use logbook_protocol::{
    Append, Direction, ErrorCode, EventId, ExpectedVersion, NewEvent, Ping, ReadAll, Request,
    Response, ServerMessage, Text,
};
use logbook_tests::{RawConn, TestServer, payload};

fn append(stream: &str, n: u128) -> Request {
    Request::Append(Append {
        stream: Text::from(stream),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new(EventId::from_u128(n), "E", payload(100))],
    })
}

/// A well-behaved client still gets its appends and reads answered, and
/// sees every event stored so far.
async fn still_serving(server: &TestServer, expect_events: u64) {
    let mut c = server.raw().await;
    let (_, m) = c.call(&Request::Ping(Ping { nonce: 7 })).await;
    assert!(matches!(m, ServerMessage::Response(Response::Pong(_))));
    let (_, m) = c
        .call(&Request::ReadAll(ReadAll {
            from: None,
            direction: Direction::Forward,
            max_count: 10_000,
            min_position: None,
        }))
        .await;
    let ServerMessage::Response(Response::ReadAllOk(a)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(a.events.len() as u64, expect_events);
}

fn ping_frame() -> BytesMut {
    let mut b = BytesMut::new();
    Request::Ping(Ping { nonce: 1 })
        .encode(&mut b, 5, 1 << 20)
        .unwrap();
    b
}

/// Rewrites the crc of a frame after its header or body was edited.
fn fix_crc(frame: &mut [u8]) {
    let mut crc = crc32c::crc32c(&frame[4..16]);
    crc = crc32c::crc32c_append(crc, &frame[20..]);
    frame[16..20].copy_from_slice(&crc.to_le_bytes());
}

async fn expect_error_then_close(c: &mut RawConn, codes: &[ErrorCode]) {
    match c.recv().await {
        Some(ServerMessage::Error(e)) => assert!(codes.contains(&e.code), "{e:?}"),
        other => panic!("expected an error frame, got {other:?}"),
    }
    assert!(c.recv().await.is_none(), "the connection is closed");
}

#[tokio::test]
async fn each_kind_of_bad_frame_is_answered_and_closed() {
    let server = TestServer::start().await;
    let mut good = server.raw().await;
    for i in 0..5 {
        let (_, m) = good.call(&append("kept", i + 1)).await;
        assert!(matches!(m, ServerMessage::Response(Response::AppendOk(_))));
    }

    // Garbage bytes after the handshake.
    let mut c = server.raw().await;
    c.send_raw(b"\x20\x00\x00\x00this is not a logbook frame at all!")
        .await;
    expect_error_then_close(&mut c, &[ErrorCode::BadRequest]).await;
    still_serving(&server, 5).await;

    // Garbage before any handshake.
    let mut c = RawConn::connect(server.addr).await;
    c.send_raw(&[0xff; 64]).await;
    expect_error_then_close(&mut c, &[ErrorCode::BadRequest, ErrorCode::TooLarge]).await;

    // An oversized declared length: refused before anything is allocated.
    let mut c = server.raw().await;
    c.send_raw(&u32::MAX.to_le_bytes()).await;
    expect_error_then_close(&mut c, &[ErrorCode::TooLarge]).await;
    still_serving(&server, 5).await;

    // An unknown kind, with a valid checksum.
    let mut c = server.raw().await;
    let mut f = ping_frame();
    f[5] = 9;
    fix_crc(&mut f);
    c.send_raw(&f).await;
    expect_error_then_close(&mut c, &[ErrorCode::BadRequest]).await;

    // An unknown opcode.
    let mut c = server.raw().await;
    let mut f = ping_frame();
    f[6] = 0x77;
    fix_crc(&mut f);
    c.send_raw(&f).await;
    expect_error_then_close(&mut c, &[ErrorCode::BadRequest]).await;

    // A flipped bit in the body: checksum mismatch.
    let mut c = server.raw().await;
    let mut f = ping_frame();
    let last = f.len() - 1;
    f[last] ^= 1;
    c.send_raw(&f).await;
    expect_error_then_close(&mut c, &[ErrorCode::BadRequest]).await;

    // A malformed body in a well-formed frame: refused, connection kept.
    let mut c = server.raw().await;
    let mut f = ping_frame();
    let body_at = 20;
    f.truncate(body_at);
    f.extend_from_slice(&[0x81, 0xa5, b'n', b'o', b'n', b'c', b'e', 0xc0]); // {"nonce": nil}
    let len = (f.len() - 4) as u32;
    f[0..4].copy_from_slice(&len.to_le_bytes());
    fix_crc(&mut f);
    c.send_raw(&f).await;
    match c.recv().await {
        Some(ServerMessage::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    let (_, m) = c.call(&Request::Ping(Ping { nonce: 3 })).await;
    assert!(
        matches!(m, ServerMessage::Response(Response::Pong(_))),
        "connection still usable"
    );

    // A truncated frame, then the client goes away.
    let mut c = server.raw().await;
    let f = ping_frame();
    c.send_raw(&f[..f.len() - 3]).await;
    drop(c);

    still_serving(&server, 5).await;
    // Nothing stored was touched: the good connection goes on appending.
    let (_, m) = good.call(&append("kept", 100)).await;
    assert!(matches!(m, ServerMessage::Response(Response::AppendOk(r)) if r.first_position.0 == 5));
    server.stop().await;
}

#[tokio::test]
async fn silent_clients_are_dropped_after_the_handshake_timeout() {
    let server =
        TestServer::start_tuned(|_, n| n.handshake_timeout = Duration::from_millis(300)).await;
    let mut silent = RawConn::connect(server.addr).await;
    // Others are served while it sits there.
    still_serving(&server, 0).await;
    expect_error_then_close(&mut silent, &[ErrorCode::BadRequest]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_stall_others() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    for i in 0..200 {
        let (_, m) = c.call(&append("big", i + 1)).await;
        assert!(matches!(m, ServerMessage::Response(Response::AppendOk(_))));
    }
    // The flooder asks for the whole log over and over and reads nothing.
    // Its replies pile up until the server stops reading its requests;
    // the flood is written from another task so this test does not block.
    let mut flooder = server.raw().await;
    let flood = tokio::spawn(async move {
        let mut req = BytesMut::new();
        for id in 1..=5_000u32 {
            Request::ReadAll(ReadAll {
                from: None,
                direction: Direction::Forward,
                max_count: 200,
                min_position: None,
            })
            .encode(&mut req, id, 1 << 20)
            .unwrap();
        }
        // This write stalls once both socket buffers are full: the server
        // has stopped reading. Keep the connection open until aborted.
        flooder.send_raw(&req).await;
        std::future::pending::<()>().await;
    });
    for round in 0..20u64 {
        still_serving(&server, 200 + round).await;
        let (_, m) = c.call(&append("big", 1000 + u128::from(round))).await;
        assert!(matches!(m, ServerMessage::Response(Response::AppendOk(_))));
        let (_, m) = c
            .call(&Request::ReadAll(ReadAll {
                from: None,
                direction: Direction::Forward,
                max_count: 200,
                min_position: None,
            }))
            .await;
        assert!(matches!(m, ServerMessage::Response(Response::ReadAllOk(_))));
    }
    flood.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_trickled_frame_times_out_and_large_frames_share_a_budget() {
    let server = TestServer::start_tuned(|_, n| {
        n.frame_timeout = Duration::from_millis(300);
        n.max_incomplete_frame_bytes = 1 << 20;
    })
    .await;
    // Declares a 400 KiB frame, sends a few bytes of it, then waits.
    let mut slow = server.raw().await;
    let mut start = (400u32 << 10).to_le_bytes().to_vec();
    start.extend_from_slice(&[1, 1, 2, 0]);
    slow.send_raw(&start).await;
    // A second one fits the 1 MiB budget; a third does not and is refused.
    let mut slow2 = server.raw().await;
    slow2.send_raw(&start).await;
    let mut slow3 = server.raw().await;
    slow3.send_raw(&start).await;
    expect_error_then_close(&mut slow3, &[ErrorCode::ServerBusy]).await;
    // Others are served meanwhile; the trickled frames time out.
    still_serving(&server, 0).await;
    expect_error_then_close(&mut slow, &[ErrorCode::BadRequest]).await;
    expect_error_then_close(&mut slow2, &[ErrorCode::BadRequest]).await;
    // Their budget is free again.
    let mut again = server.raw().await;
    again.send_raw(&start).await;
    expect_error_then_close(&mut again, &[ErrorCode::BadRequest]).await;
    server.stop().await;
}
