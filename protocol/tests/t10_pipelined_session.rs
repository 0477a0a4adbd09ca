//! A session over an async byte stream, the way the server and client use
//! the codec: frames cut at arbitrary points by a tiny pipe, requests
//! pipelined, replies sent out of order and matched by `corr_id`, a
//! subscription's pushes, and a corrupt frame ending the session.

use bytes::BytesMut;
use logbook_protocol::{
    Append, AppendResult, Error, EventId, ExpectedVersion, Frame, FrameCodec, LogPosition,
    NewEvent, Ping, Pong, Push, RecordedEvent, Request, Response, ServerMessage, StreamVersion,
    Text,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::codec::Decoder;

const MAX: u32 = 1 << 20;

/// Reads until the codec yields a frame (or the stream ends).
async fn next_frame(
    io: &mut DuplexStream,
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
) -> Result<Option<Frame>, Error> {
    loop {
        if let Some(frame) = codec.decode(buf)? {
            return Ok(Some(frame));
        }
        if io.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

fn event(i: u64) -> RecordedEvent {
    RecordedEvent {
        stream: Text::from("account-1"),
        version: StreamVersion(i),
        position: LogPosition(i),
        id: EventId::from_u128(i.into()),
        event_type: Text::from("Deposited"),
        metadata: bytes::Bytes::new(),
        data: bytes::Bytes::from(vec![i as u8; 200]),
        timestamp_us: 1,
    }
}

#[tokio::test]
async fn pipelined_requests_get_out_of_order_replies() {
    // 61 bytes of pipe: every frame arrives in pieces.
    let (mut client, mut server) = tokio::io::duplex(61);

    let server_task = tokio::spawn(async move {
        let mut codec = FrameCodec::new(MAX);
        let mut buf = BytesMut::new();
        let mut pending = Vec::new();
        while pending.len() < 11 {
            let frame = next_frame(&mut server, &mut codec, &mut buf)
                .await
                .unwrap()
                .unwrap();
            pending.push((frame.header.corr_id, Request::decode(&frame).unwrap()));
        }
        // Answer newest first, with one push in between.
        let mut out = BytesMut::new();
        Push::encode_events(&mut out, 99, &[event(0), event(1)], Some(0), MAX).unwrap();
        for (corr_id, req) in pending.into_iter().rev() {
            let resp = match req {
                Request::Ping(Ping { nonce }) => Response::Pong(Pong { nonce }),
                Request::Append(a) => Response::AppendOk(AppendResult {
                    first_version: StreamVersion(0),
                    last_version: StreamVersion(a.events.len() as u64 - 1),
                    first_position: LogPosition(0),
                    last_position: LogPosition(a.events.len() as u64 - 1),
                }),
                other => panic!("unexpected {other:?}"),
            };
            resp.encode(&mut out, corr_id, MAX).unwrap();
        }
        server.write_all(&out).await.unwrap();
        // Then a frame with a flipped body byte: fatal for the session.
        let mut bad = BytesMut::new();
        Response::Pong(Pong { nonce: 0 })
            .encode(&mut bad, 500, MAX)
            .unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        server.write_all(&bad).await.unwrap();
    });

    let mut out = BytesMut::new();
    for corr_id in 1..=10u32 {
        Request::Ping(Ping {
            nonce: u64::from(corr_id) * 1000,
        })
        .encode(&mut out, corr_id, MAX)
        .unwrap();
    }
    Request::Append(Append {
        stream: Text::from("account-1"),
        expected: ExpectedVersion::NoStream,
        events: (0..3)
            .map(|i| NewEvent::new(EventId::from_u128(i), "Deposited", vec![1u8; 200]))
            .collect(),
    })
    .encode(&mut out, 11, MAX)
    .unwrap();
    client.write_all(&out).await.unwrap();

    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::new();
    let mut order = Vec::new();
    loop {
        let frame = match next_frame(&mut client, &mut codec, &mut buf).await {
            Ok(Some(frame)) => frame,
            Err(Error::ChecksumMismatch { .. }) => break,
            other => panic!("{other:?}"),
        };
        let corr_id = frame.header.corr_id;
        match ServerMessage::decode(&frame).unwrap() {
            ServerMessage::Response(Response::Pong(Pong { nonce })) => {
                assert_eq!(nonce, u64::from(corr_id) * 1000);
                order.push(corr_id);
            }
            ServerMessage::Response(Response::AppendOk(r)) => {
                assert_eq!(corr_id, 11);
                assert_eq!(r.last_version, StreamVersion(2));
                order.push(corr_id);
            }
            ServerMessage::Push(Push::Events { events, .. }) => {
                assert_eq!(corr_id, 99);
                assert_eq!(events, vec![event(0), event(1)]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(order, (1..=11).rev().collect::<Vec<_>>());
    server_task.await.unwrap();
}
