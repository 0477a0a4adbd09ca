//! Entry points for the fuzz targets in `fuzz/` and for the bounded
//! property tests that run the same code in `cargo test`. Each takes
//! arbitrary bytes and must never panic, whatever they hold.

use bytes::{Bytes, BytesMut};

use crate::frame::{Frame, FrameHeader, Kind, Opcode, decode_frame};
use crate::msg::{Request, ServerMessage};

/// Cuts `data` into frames as a connection would, and decodes each as a
/// request and as a server message.
pub fn frames(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut buf, 1 << 20) {
        let _ = Request::decode(&frame);
        let _ = ServerMessage::decode(&frame);
    }
}

/// Decodes `data` as the body of every kind of message.
pub fn bodies(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    for kind in [Kind::Request, Kind::Response, Kind::Push, Kind::Error] {
        // Every known opcode (`from_u16` skips the unknown ones): a range
        // wider than the table, so that new opcodes are covered as added.
        for op in 1..=64u16 {
            let Some(opcode) = Opcode::from_u16(op) else {
                continue;
            };
            let frame = Frame::new(FrameHeader::new(kind, opcode, 1), body.clone());
            let _ = Request::decode(&frame);
            let _ = ServerMessage::decode(&frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            super::frames(&data);
        }

        #[test]
        fn bodies_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            super::bodies(&data);
        }
    }

    /// Mutations of valid frames reach deeper than random bytes.
    #[test]
    fn mutated_valid_frames_never_panic() {
        use crate::lifecycle::{Deletion, StreamLifecycle, StreamMetadata};
        use crate::msg::{Request, Response};
        use crate::{
            Append, DeleteStream, Erase, EraseOk, EventId, ExpectedVersion, LifecycleOk,
            LogPosition, NewEvent, Ping, Scavenge, ScavengeOk, SetMetadata, StreamVersion, Text,
        };
        let mut seeds = Vec::new();
        for req in [
            Request::Ping(Ping { nonce: 7 }),
            Request::Append(Append {
                stream: Text::from("s"),
                expected: ExpectedVersion::Any,
                events: vec![NewEvent::new(EventId::from_u128(1), "T", &b"data"[..])],
            }),
            Request::SetMetadata(SetMetadata {
                stream: Text::from("s"),
                expected: ExpectedVersion::NoStream,
                metadata: StreamMetadata {
                    max_count: Some(3),
                    ..StreamMetadata::default()
                },
            }),
            Request::DeleteStream(DeleteStream {
                stream: Text::from("s"),
                expected: ExpectedVersion::Any,
                mode: Deletion::Hard,
            }),
            Request::Scavenge(Scavenge {
                max_bytes_per_sec: Some(1 << 20),
            }),
            Request::Erase(Erase {
                stream: Text::from("s"),
            }),
            Request::CreateGroup(crate::CreateGroup {
                group: "g".into(),
                source: crate::GroupSource::All {
                    filter: Some(crate::Filter {
                        stream_prefixes: vec!["acc-".into()],
                        ..crate::Filter::default()
                    }),
                },
                start: crate::GroupStart::At(3),
                settings: crate::GroupSettings::default(),
            }),
            Request::JoinGroup(crate::JoinGroup {
                group: "g".into(),
                window: 10,
            }),
            Request::GroupAck(crate::GroupAck {
                subscription: 3,
                ids: vec![1, 2, 3],
            }),
            Request::GroupNack(crate::GroupNack {
                subscription: 3,
                ids: vec![4],
                action: crate::NackAction::Park {
                    reason: "bad".into(),
                },
            }),
            Request::ListParked(crate::ListParked {
                group: "g".into(),
                after: Some(2),
                limit: 10,
            }),
            Request::ListStreams(crate::ListStreams {
                prefix: Text::from("acc"),
                after: Some(Text::from("acc-1")),
                limit: 10,
            }),
        ] {
            let mut b = bytes::BytesMut::new();
            req.encode(&mut b, 3, 1 << 20).unwrap();
            seeds.push(b.to_vec());
        }
        let mut b = bytes::BytesMut::new();
        Response::GetMetadataOk(Some(LifecycleOk {
            position: LogPosition(4),
            meta_version: StreamVersion(0),
            state: StreamLifecycle {
                stream: "s".into(),
                deleted: Some(Deletion::Soft),
                last_version: Some(3),
                ..StreamLifecycle::default()
            },
        }))
        .encode(&mut b, 3, 1 << 20)
        .unwrap();
        seeds.push(b.to_vec());
        for resp in [
            Response::ListStreamsOk(crate::ListStreamsOk {
                streams: vec![crate::StreamInfo {
                    stream: "acc-2".into(),
                    last_version: Some(StreamVersion(4)),
                    first_version: Some(StreamVersion(2)),
                    event_count: 3,
                    deleted: None,
                    metadata: StreamMetadata {
                        max_count: Some(3),
                        ..StreamMetadata::default()
                    },
                    meta_version: Some(StreamVersion(0)),
                }],
                next: Some("acc-2".into()),
            }),
            Response::ScavengeOk(ScavengeOk {
                segments_considered: 3,
                segments_rewritten: 2,
                segments_merged: 1,
                events_removed: 40,
                bytes_before: 1 << 20,
                bytes_after: 1 << 19,
                duration_us: 1500,
            }),
            Response::EraseOk(EraseOk {
                position: LogPosition(9),
                segments_rewritten: 1,
                events_removed: 4,
                bytes_before: 4096,
                bytes_after: 2048,
                duration_us: 700,
            }),
        ] {
            let mut b = bytes::BytesMut::new();
            resp.encode(&mut b, 3, 1 << 20).unwrap();
            seeds.push(b.to_vec());
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for seed in &seeds {
            for _ in 0..2000 {
                let mut m = seed.clone();
                for _ in 0..3 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let at = (x as usize) % m.len();
                    m[at] ^= (x >> 32) as u8 | 1;
                }
                super::frames(&m);
                super::bodies(&m[20.min(m.len())..]);
            }
        }
    }
}
