//! Message-level tests: round trips of every message, zero-copy decoding,
//! forward compatibility, and hostile bodies.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use serde::Serialize;

use super::*;
use crate::frame::{DEFAULT_MAX_FRAME_BYTES, Flags, FrameCodec, HEADER_LEN, decode_frame};
use crate::lifecycle::{Deletion, StreamLifecycle, StreamMetadata};
use crate::types::{
    Direction, EventId, ExpectedVersion, LogPosition, NewEvent, StreamVersion, Text,
};

const MAX: u32 = DEFAULT_MAX_FRAME_BYTES;

// ---------------------------------------------------------------- strategies

pub(crate) fn text() -> impl Strategy<Value = Text> {
    // Any Unicode, including multi-byte characters and the empty string:
    // the codec must not care what the server would later refuse.
    "\\PC{0,24}".prop_map(Text::from)
}

pub(crate) fn payload() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn event_id() -> impl Strategy<Value = EventId> {
    any::<[u8; 16]>().prop_map(EventId)
}

pub(crate) fn new_event() -> impl Strategy<Value = NewEvent> {
    (event_id(), text(), payload(), payload()).prop_map(|(id, event_type, metadata, data)| {
        NewEvent {
            id,
            event_type,
            metadata,
            data,
        }
    })
}

pub(crate) fn recorded_event() -> impl Strategy<Value = RecordedEvent> {
    (
        text(),
        any::<u64>(),
        any::<u64>(),
        event_id(),
        text(),
        payload(),
        payload(),
        any::<i64>(),
    )
        .prop_map(
            |(stream, version, position, id, event_type, metadata, data, timestamp_us)| {
                RecordedEvent {
                    stream,
                    version: StreamVersion(version),
                    position: LogPosition(position),
                    id,
                    event_type,
                    metadata,
                    data,
                    timestamp_us,
                }
            },
        )
}

fn recorded_events() -> impl Strategy<Value = Vec<RecordedEvent>> {
    prop::collection::vec(recorded_event(), 0..12)
}

fn expected() -> impl Strategy<Value = ExpectedVersion> {
    prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::StreamExists),
        any::<u64>().prop_map(|v| ExpectedVersion::Exact(StreamVersion(v))),
    ]
}

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![Just(Direction::Forward), Just(Direction::Backward)]
}

fn version() -> impl Strategy<Value = StreamVersion> {
    any::<u64>().prop_map(StreamVersion)
}

fn position() -> impl Strategy<Value = LogPosition> {
    any::<u64>().prop_map(LogPosition)
}

fn from<P: std::fmt::Debug + Clone>(
    p: impl Strategy<Value = P>,
) -> impl Strategy<Value = SubscribeFrom<P>> {
    prop_oneof![
        Just(SubscribeFrom::Start),
        Just(SubscribeFrom::End),
        p.prop_map(SubscribeFrom::After),
    ]
}

fn filter() -> impl Strategy<Value = Filter> {
    let prefixes = || prop::collection::vec("\\PC{0,8}", 0..4);
    let regex = || prop::option::of("\\PC{0,12}");
    (prefixes(), prefixes(), regex(), regex(), any::<u32>()).prop_map(
        |(stream_prefixes, type_prefixes, stream_regex, type_regex, checkpoint_interval)| Filter {
            stream_prefixes,
            type_prefixes,
            stream_regex,
            type_regex,
            checkpoint_interval,
        },
    )
}

/// Metadata within the ranges [`StreamMetadata::validate`] accepts (a
/// decoder refuses the rest), with custom keys of every JSON kind but
/// floats (whose text form need not round-trip bit for bit).
fn stream_metadata() -> impl Strategy<Value = StreamMetadata> {
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
        prop::collection::vec("\\PC{0,4}", 0..3).prop_map(serde_json::Value::from),
    ];
    (
        prop::option::of(1u64..),
        prop::option::of(1u64..=i64::MAX as u64 / 1_000_000),
        prop::option::of(any::<u64>()),
        prop::collection::btree_map("\\PC{0,8}", value, 0..4),
    )
        .prop_map(
            |(max_count, max_age_secs, truncate_before, custom)| StreamMetadata {
                max_count,
                max_age_secs,
                truncate_before,
                custom: custom.into_iter().collect(),
            },
        )
}

/// A catalog entry as a server builds one: the live range within the
/// versions, a count that matches it.
fn stream_info() -> impl Strategy<Value = StreamInfo> {
    (
        "\\PC{0,24}",
        prop::option::of(0u64..1 << 40),
        any::<u64>(),
        prop::option::of(deletion()),
        stream_metadata(),
        prop::option::of(version()),
    )
        .prop_map(|(stream, last, first, deleted, metadata, meta_version)| {
            let first = last.map(|l| first % (l + 1)).filter(|_| deleted.is_none());
            StreamInfo {
                stream,
                last_version: last.map(StreamVersion),
                first_version: first.map(StreamVersion),
                event_count: match (first, last) {
                    (Some(f), Some(l)) => l - f + 1,
                    _ => 0,
                },
                deleted,
                metadata,
                meta_version,
            }
        })
}

fn deletion() -> impl Strategy<Value = Deletion> {
    prop_oneof![Just(Deletion::Soft), Just(Deletion::Hard)]
}

fn stream_lifecycle() -> impl Strategy<Value = StreamLifecycle> {
    (
        "\\PC{0,24}",
        stream_metadata(),
        prop::option::of(deletion()),
        prop::option::of(any::<u64>()),
        any::<bool>(),
    )
        .prop_map(
            |(stream, metadata, deleted, last_version, erased)| StreamLifecycle {
                stream,
                metadata,
                deleted,
                last_version,
                deleted_last: last_version.filter(|_| deleted.is_some()),
                expired_before_us: last_version.map(|v| v as i64 / 2),
                erased: erased && deleted == Some(Deletion::Hard),
            },
        )
}

fn lifecycle_ok() -> impl Strategy<Value = LifecycleOk> {
    (position(), version(), stream_lifecycle()).prop_map(|(position, meta_version, state)| {
        LifecycleOk {
            position,
            meta_version,
            state,
        }
    })
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    // from_u16 keeps Unknown for unknown codes only, as a decoder would.
    any::<u16>().prop_map(ErrorCode::from_u16)
}

pub(crate) fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            any::<u8>(),
            "\\PC{0,16}",
            prop::option::of("\\PC{0,16}"),
            prop::option::of("\\PC{0,16}")
        )
            .prop_map(|(protocol_version, client_name, token, user)| {
                Request::Hello(Hello {
                    protocol_version,
                    client_name,
                    token,
                    user,
                })
            }),
        any::<u64>().prop_map(|nonce| Request::Ping(Ping { nonce })),
        (
            text(),
            expected(),
            prop::collection::vec(new_event(), 0..12)
        )
            .prop_map(|(stream, expected, events)| Request::Append(Append {
                stream,
                expected,
                events,
            })),
        (
            text(),
            prop::option::of(version()),
            direction(),
            any::<u32>(),
            prop::option::of(position()),
        )
            .prop_map(|(stream, from, direction, max_count, min_position)| {
                Request::ReadStream(ReadStream {
                    stream,
                    from,
                    direction,
                    max_count,
                    min_position,
                })
            }),
        (
            prop::option::of(position()),
            direction(),
            any::<u32>(),
            prop::option::of(position()),
        )
            .prop_map(|(from, direction, max_count, min_position)| {
                Request::ReadAll(ReadAll {
                    from,
                    direction,
                    max_count,
                    min_position,
                })
            }),
        (text(), from(version()), any::<u32>()).prop_map(|(stream, from, initial_credit)| {
            Request::Subscribe(Subscribe {
                target: SubscriptionTarget::Stream { stream, from },
                initial_credit,
            })
        }),
        (from(position()), prop::option::of(filter()), any::<u32>()).prop_map(
            |(from, filter, initial_credit)| Request::Subscribe(Subscribe {
                target: SubscriptionTarget::All { from, filter },
                initial_credit,
            })
        ),
        any::<u32>().prop_map(|subscription| Request::Unsubscribe(Unsubscribe { subscription })),
        (any::<u32>(), any::<u32>()).prop_map(|(subscription, events)| Request::Credit(Credit {
            subscription,
            events
        })),
        Just(Request::Stats(Stats)),
        Just(Request::BackupBegin(BackupBegin)),
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
            |(backup, file, offset, len)| Request::BackupRead(BackupRead {
                backup,
                file,
                offset,
                len,
            })
        ),
        any::<u32>().prop_map(|backup| Request::BackupEnd(BackupEnd { backup })),
        (text(), expected(), stream_metadata()).prop_map(|(stream, expected, metadata)| {
            Request::SetMetadata(SetMetadata {
                stream,
                expected,
                metadata,
            })
        }),
        text().prop_map(|stream| Request::GetMetadata(GetMetadata { stream })),
        (text(), version())
            .prop_map(|(stream, before)| Request::Truncate(Truncate { stream, before })),
        (text(), expected(), deletion()).prop_map(|(stream, expected, mode)| {
            Request::DeleteStream(DeleteStream {
                stream,
                expected,
                mode,
            })
        }),
        prop::option::of(1u64..)
            .prop_map(|max_bytes_per_sec| Request::Scavenge(Scavenge { max_bytes_per_sec })),
        text().prop_map(|stream| Request::Erase(Erase { stream })),
        (text(), prop::option::of(text()), any::<u32>()).prop_map(|(prefix, after, limit)| {
            Request::ListStreams(ListStreams {
                prefix,
                after,
                limit,
            })
        }),
    ]
}

fn stats_ok() -> impl Strategy<Value = StatsOk> {
    (
        "\\PC{0,16}",
        any::<[u64; 18]>(),
        any::<[u32; 5]>(),
        prop::option::of("\\PC{0,16}"),
        prop::option::of("\\PC{0,16}"),
        any::<[u64; 5]>(),
        any::<[u64; 6]>(),
    )
        .prop_map(
            |(server_version, n, r, truncated_at, index_rebuilt, m, sc)| {
                // Finite floats, so that equality after the round trip holds.
                let f = |i: usize| f64::from(r[i]) / 8.0;
                StatsOk {
                    server_version,
                    uptime_ms: n[0],
                    events: n[1],
                    streams: n[2],
                    segments: n[3],
                    log_bytes: n[4],
                    index_tables: n[5],
                    index_bytes: n[6],
                    memtable_entries: n[7],
                    connections: n[8],
                    subscriptions: n[9],
                    subscription_lag_max: n[10],
                    subscription_lag_total: n[11],
                    appends: n[12],
                    events_written: n[13],
                    bytes_written: n[14],
                    fsyncs: n[15],
                    conflicts: n[16],
                    appends_per_sec: f(0),
                    events_per_sec: f(1),
                    fsyncs_per_sec: f(2),
                    appends_per_fsync: f(3),
                    lifecycle_streams: m[4],
                    deleted_streams: sc[5],
                    scavenges: sc[0],
                    scavenge_segments: sc[1],
                    scavenge_bytes_reclaimed: sc[2],
                    scavenge_todo: sc[3],
                    scavenge_done: sc[4],
                    recovery: RecoveryStats {
                        duration_ms: f(4),
                        events: n[17],
                        truncated_bytes: m[0],
                        truncated_at,
                        sealed_segments: m[1],
                        index_rebuilt,
                        replayed_events: m[2],
                        removed_files: m[3],
                    },
                    cluster: (m[4] % 2 == 1).then(|| crate::ClusterStats {
                        node_id: m[4],
                        role: "follower".into(),
                        term: sc[0],
                        leader: (sc[1] % 2 == 0).then_some(sc[1]),
                        last_index: sc[2],
                        committed_index: sc[3],
                        applied_index: sc[4],
                        snapshot_index: sc[4] / 2,
                        purged_index: sc[4] / 3,
                        members: vec![crate::MemberStats {
                            node_id: sc[5],
                            raft_addr: "10.0.0.1:7201".into(),
                            client_addr: "10.0.0.1:7117".into(),
                            matched: (sc[5] % 3 == 0).then_some(sc[2]),
                            lag: (sc[5] % 3 == 0).then_some(sc[3]),
                            learner: sc[5] % 5 == 0,
                        }],
                    }),
                }
            },
        )
}

fn backup_begin_ok() -> impl Strategy<Value = BackupBeginOk> {
    (
        any::<u32>(),
        position(),
        prop::collection::vec(("[a-z0-9/.]{0,24}", any::<u64>()), 0..6),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<u32>(),
    )
        .prop_map(
            |(backup, position, files, manifest, max_read)| BackupBeginOk {
                backup,
                position,
                files: files
                    .into_iter()
                    .map(|(name, len)| BackupFile { name, len })
                    .collect(),
                manifest: Bytes::from(manifest),
                max_read,
            },
        )
}

pub(crate) fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (
            any::<u8>(),
            "\\PC{0,16}",
            any::<[u32; 5]>(),
            prop::option::of("\\PC{0,16}"),
            prop::collection::vec("\\PC{0,16}", 0..4),
            prop::option::of("\\PC{0,16}"),
        )
            .prop_map(|(v, server_version, n, user, members, leader)| {
                Response::HelloOk(HelloOk {
                    protocol_version: v,
                    server_version,
                    max_frame_bytes: n[0],
                    max_append_bytes: n[1],
                    max_event_bytes: n[4],
                    max_events_per_append: n[2],
                    max_in_flight: n[3],
                    user,
                    members,
                    leader,
                })
            }),
        any::<u64>().prop_map(|nonce| Response::Pong(Pong { nonce })),
        (version(), version(), position(), position()).prop_map(|(fv, lv, fp, lp)| {
            Response::AppendOk(AppendResult {
                first_version: fv,
                last_version: lv,
                first_position: fp,
                last_position: lp,
            })
        }),
        (
            recorded_events(),
            prop::option::of(version()),
            prop::option::of(version())
        )
            .prop_map(|(events, last_version, next)| Response::ReadStreamOk(
                ReadStreamOk {
                    events,
                    last_version,
                    next,
                }
            )),
        (recorded_events(), position(), prop::option::of(position()))
            .prop_map(|(events, head, next)| Response::ReadAllOk(ReadAllOk { events, head, next })),
        position().prop_map(|head| Response::SubscribeOk(SubscribeOk { head })),
        Just(Response::UnsubscribeOk),
        stats_ok().prop_map(|s| Response::StatsOk(Box::new(s))),
        backup_begin_ok().prop_map(Response::BackupBeginOk),
        prop::collection::vec(any::<u8>(), 0..256)
            .prop_map(|d| Response::BackupReadOk(Bytes::from(d))),
        Just(Response::BackupEndOk),
        lifecycle_ok().prop_map(Response::SetMetadataOk),
        prop::option::of(lifecycle_ok()).prop_map(Response::GetMetadataOk),
        lifecycle_ok().prop_map(Response::TruncateOk),
        lifecycle_ok().prop_map(Response::DeleteStreamOk),
        any::<[u64; 6]>().prop_map(|n| Response::ScavengeOk(ScavengeOk {
            segments_considered: n[0],
            segments_rewritten: n[1],
            segments_merged: n[1] / 2,
            events_removed: n[2],
            bytes_before: n[3],
            bytes_after: n[4],
            duration_us: n[5],
        })),
        (
            prop::collection::vec(stream_info(), 0..8),
            prop::option::of("\\PC{0,24}")
        )
            .prop_map(|(streams, next)| Response::ListStreamsOk(ListStreamsOk { streams, next })),
        (position(), any::<[u64; 5]>()).prop_map(|(position, n)| Response::EraseOk(EraseOk {
            position,
            segments_rewritten: n[0],
            events_removed: n[1],
            bytes_before: n[2],
            bytes_after: n[3],
            duration_us: n[4],
        })),
    ]
}

pub(crate) fn push() -> impl Strategy<Value = Push> {
    prop_oneof![
        (recorded_events(), prop::option::of(any::<u64>()))
            .prop_map(|(events, from)| Push::Events { events, from }),
        (position(), prop::option::of(version())).prop_map(|(position, next_version)| {
            Push::CaughtUp {
                position,
                next_version,
            }
        }),
        (position(), prop::option::of(version())).prop_map(|(position, next_version)| {
            Push::FellBehind {
                position,
                next_version,
            }
        }),
        position().prop_map(|position| Push::Checkpoint { position }),
        (error_code(), "\\PC{0,32}").prop_map(|(code, message)| Push::Ended { code, message }),
    ]
}

pub(crate) fn error_reply() -> impl Strategy<Value = ErrorReply> {
    (
        error_code(),
        "\\PC{0,32}",
        prop::option::of(text()),
        prop::option::of(expected()),
        prop::option::of(prop::option::of(version())),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u8>()),
        prop::option::of(event_id()),
        prop::option::of(position()),
        prop::option::of("\\PC{0,16}"),
    )
        .prop_map(
            |(
                code,
                message,
                stream,
                expected,
                actual,
                limit,
                max_version,
                event_id,
                position,
                leader,
            )| {
                ErrorReply {
                    code,
                    message,
                    stream,
                    expected,
                    actual,
                    limit,
                    max_version,
                    event_id,
                    position,
                    leader,
                }
            },
        )
}

fn opcode() -> impl Strategy<Value = Opcode> {
    (1u16..=41).prop_filter_map("known opcode", Opcode::from_u16)
}

fn group_settings() -> impl Strategy<Value = GroupSettings> {
    (any::<u64>(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(a, d, f, per)| {
        GroupSettings {
            ack_wait_ms: a,
            max_deliveries: d,
            max_in_flight: f,
            strategy: if per {
                GroupStrategy::PerStream
            } else {
                GroupStrategy::RoundRobin
            },
        }
    })
}

fn group_source() -> impl Strategy<Value = GroupSource> {
    prop_oneof![
        prop::option::of(filter()).prop_map(|filter| GroupSource::All { filter }),
        "\\PC{1,16}".prop_map(|stream| GroupSource::Stream { stream }),
    ]
}

fn group_start() -> impl Strategy<Value = GroupStart> {
    prop_oneof![
        Just(GroupStart::Start),
        Just(GroupStart::End),
        any::<u64>().prop_map(GroupStart::At),
    ]
}

fn ids() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec(any::<u64>(), 0..20)
}

pub(crate) fn group_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            "\\PC{0,16}",
            group_source(),
            group_start(),
            group_settings()
        )
            .prop_map(|(group, source, start, settings)| Request::CreateGroup(
                CreateGroup {
                    group,
                    source,
                    start,
                    settings,
                }
            )),
        ("\\PC{0,16}", group_settings())
            .prop_map(|(group, settings)| Request::UpdateGroup(UpdateGroup { group, settings })),
        "\\PC{0,16}".prop_map(|group| Request::DeleteGroup(DeleteGroup { group })),
        Just(Request::ListGroups(ListGroups)),
        ("\\PC{0,16}", any::<u32>())
            .prop_map(|(group, window)| Request::JoinGroup(JoinGroup { group, window })),
        (any::<u32>(), ids())
            .prop_map(|(subscription, ids)| Request::GroupAck(GroupAck { subscription, ids })),
        ("\\PC{0,16}", prop::option::of(any::<u64>()), any::<u32>()).prop_map(
            |(group, after, limit)| Request::ListParked(ListParked {
                group,
                after,
                limit
            })
        ),
        ("\\PC{0,16}", prop::option::of(any::<u64>()))
            .prop_map(|(group, max)| Request::ReplayParked(ReplayParked { group, max })),
        "\\PC{0,16}".prop_map(|group| Request::DeleteParked(DeleteParked { group })),
        auth_request(),
        (any::<u32>(), ids()).prop_map(|(subscription, ids)| Request::GroupExtend(GroupExtend {
            subscription,
            ids
        })),
        (
            any::<u32>(),
            ids(),
            prop_oneof![
                any::<u64>().prop_map(|delay_ms| NackAction::Retry { delay_ms }),
                "\\PC{0,16}".prop_map(|reason| NackAction::Park { reason }),
                Just(NackAction::Skip),
            ]
        )
            .prop_map(|(subscription, ids, action)| Request::GroupNack(GroupNack {
                subscription,
                ids,
                action
            })),
    ]
}

fn group_info() -> impl Strategy<Value = GroupInfo> {
    (
        "\\PC{0,16}",
        group_source(),
        group_start(),
        group_settings(),
        any::<[u64; 13]>(),
        any::<u32>(),
    )
        .prop_map(|(group, source, start, settings, n, consumers)| GroupInfo {
            group,
            source,
            start,
            settings,
            floor: n[0],
            cursor: n[1],
            head: n[2],
            outstanding: n[3],
            in_flight: n[4],
            waiting: n[5],
            consumers,
            oldest_in_flight_ms: n[6],
            parked: n[7],
            delivered: n[8],
            acked: n[9],
            skipped: n[10],
            failures: n[11],
            parked_total: n[12],
        })
}

pub(crate) fn group_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        group_info().prop_map(|g| Response::CreateGroupOk(Box::new(g))),
        group_info().prop_map(|g| Response::UpdateGroupOk(Box::new(g))),
        group_info().prop_map(|g| Response::JoinGroupOk(Box::new(g))),
        Just(Response::DeleteGroupOk),
        (
            prop::collection::vec(
                (any::<[u64; 5]>(), "\\PC{0,12}", "\\PC{0,12}", any::<u32>()).prop_map(
                    |(n, stream, reason, deliveries)| ParkedEntry {
                        version: n[0],
                        seq: n[1],
                        position: n[2],
                        stream,
                        event_version: n[3],
                        reason,
                        deliveries,
                        parked_at_us: n[4],
                    }
                ),
                0..4
            ),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(entries, next)| Response::ListParkedOk(ListParkedOk { entries, next })),
        (any::<u64>(), any::<u64>()).prop_map(|(until, entries)| Response::ReplayParkedOk(
            ReplayParkedOk { until, entries }
        )),
        any::<u64>().prop_map(|removed| Response::DeleteParkedOk(DeleteParkedOk { removed })),
        auth_response(),
        prop::collection::vec(group_info(), 0..4).prop_map(Response::ListGroupsOk),
    ]
}

pub(crate) fn group_push() -> impl Strategy<Value = GroupPush> {
    prop_oneof![
        recorded_events().prop_flat_map(|events| {
            let n = events.len();
            (
                Just(events),
                prop::collection::vec(any::<u64>(), n),
                prop::collection::vec(any::<u32>(), n),
            )
                .prop_map(|(events, ids, deliveries)| GroupPush::Events {
                    events,
                    ids,
                    deliveries,
                })
        }),
        (any::<u16>(), "\\PC{0,16}").prop_map(|(c, message)| GroupPush::Ended {
            code: ErrorCode::from_u16(c),
            message,
        }),
    ]
}

// ------------------------------------------------------------------ helpers

/// Decodes the single frame in `buf`, checking nothing is left over.
fn one_frame(mut buf: BytesMut) -> Frame {
    let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
    assert!(buf.is_empty(), "{} bytes left after the frame", buf.len());
    frame
}

/// A frame with `body` encoded from any serializable value, named fields.
fn frame_with_body(kind: Kind, opcode: Opcode, body: &impl Serialize) -> Frame {
    Frame::new(
        FrameHeader::new(kind, opcode, 7),
        rmp_serde::to_vec_named(body).unwrap(),
    )
}

fn raw_frame(kind: Kind, opcode: Opcode, body: Vec<u8>) -> Frame {
    Frame::new(FrameHeader::new(kind, opcode, 7), body)
}

/// Whether `inner` lies inside `outer`'s memory.
fn points_into(inner: &[u8], outer: &[u8]) -> bool {
    let range = outer.as_ptr_range();
    inner.is_empty() || (range.start <= inner.as_ptr() && inner.as_ptr_range().end <= range.end)
}

// --------------------------------------------------------------- round trips

proptest! {
    #[test]
    fn request_round_trips(req in request(), corr_id in any::<u32>()) {
        let mut buf = BytesMut::new();
        req.encode(&mut buf, corr_id, MAX).unwrap();
        let frame = one_frame(buf);
        prop_assert_eq!(frame.header.kind, Kind::Request);
        prop_assert_eq!(frame.header.opcode, req.opcode());
        prop_assert_eq!(frame.header.corr_id, corr_id);
        prop_assert_eq!(frame.header.flags, Flags::NONE);
        prop_assert_eq!(Request::decode(&frame).unwrap(), req);
    }

    #[test]
    fn response_round_trips(resp in response(), corr_id in any::<u32>()) {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, corr_id, MAX).unwrap();
        let frame = one_frame(buf);
        prop_assert_eq!(frame.header.kind, Kind::Response);
        prop_assert_eq!(frame.header.opcode, resp.opcode());
        prop_assert_eq!(frame.header.corr_id, corr_id);
        prop_assert_eq!(frame.header.flags, Flags::END);
        prop_assert_eq!(&Response::decode(&frame).unwrap(), &resp);
        prop_assert_eq!(ServerMessage::decode(&frame).unwrap(), ServerMessage::Response(resp));
    }

    #[test]
    fn push_round_trips(push in push(), subscription in any::<u32>()) {
        let mut buf = BytesMut::new();
        push.encode(&mut buf, subscription, MAX).unwrap();
        let frame = one_frame(buf);
        prop_assert_eq!(frame.header.kind, Kind::Push);
        prop_assert_eq!(frame.header.opcode, Opcode::Subscribe);
        prop_assert_eq!(frame.header.corr_id, subscription);
        prop_assert_eq!(&Push::decode(&frame).unwrap(), &push);
        prop_assert_eq!(ServerMessage::decode(&frame).unwrap(), ServerMessage::Push(push));
    }

    #[test]
    fn group_messages_round_trip(
        req in group_request(),
        resp in group_response(),
        push in group_push(),
        corr_id in any::<u32>(),
    ) {
        let mut buf = BytesMut::new();
        req.encode(&mut buf, corr_id, MAX).unwrap();
        let frame = one_frame(buf);
        prop_assert_eq!(frame.header.opcode, req.opcode());
        prop_assert_eq!(Request::decode(&frame).unwrap(), req);
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, corr_id, MAX).unwrap();
        let frame = one_frame(buf);
        prop_assert_eq!(frame.header.opcode, resp.opcode());
        prop_assert_eq!(&Response::decode(&frame).unwrap(), &resp);
        let mut buf = BytesMut::new();
        push.encode(&mut buf, corr_id, MAX).unwrap();
        let frame = one_frame(buf);
        prop_assert_eq!(frame.header.kind, Kind::Push);
        prop_assert_eq!(frame.header.opcode, Opcode::JoinGroup);
        prop_assert_eq!(ServerMessage::decode(&frame).unwrap(), ServerMessage::GroupPush(push));
    }

    #[test]
    fn group_bodies_cut_or_flipped_are_errors_not_panics(
        req in group_request(),
        push in group_push(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        for mut buf in [
            { let mut b = BytesMut::new(); req.encode(&mut b, 5, MAX).unwrap(); b },
            { let mut b = BytesMut::new(); push.encode(&mut b, 5, MAX).unwrap(); b },
        ] {
            let frame = one_frame(buf.split());
            let body = frame.body.to_vec();
            let mut cut_body = body.clone();
            cut_body.truncate(cut.index(body.len().max(1)));
            let mut flipped = body.clone();
            if !flipped.is_empty() {
                let i = flip.index(flipped.len());
                flipped[i] ^= 1 << bit;
            }
            for b in [cut_body, flipped] {
                let f = Frame::new(frame.header, b);
                // Either decodes (to something) or says why; never panics.
                match frame.header.kind {
                    Kind::Request => { let _ = Request::decode(&f); }
                    _ => { let _ = ServerMessage::decode(&f); }
                }
            }
        }
    }

    #[test]
    fn events_fast_path_matches_push(
        events in recorded_events(),
        from in prop::option::of(any::<u64>()),
        subscription in any::<u32>(),
    ) {
        let mut fast = BytesMut::new();
        Push::encode_events(&mut fast, subscription, &events, from, MAX).unwrap();
        let mut slow = BytesMut::new();
        Push::Events { events, from }.encode(&mut slow, subscription, MAX).unwrap();
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn error_reply_round_trips(err in error_reply(), opcode in opcode(), corr_id in any::<u32>()) {
        let mut buf = BytesMut::new();
        err.encode(&mut buf, opcode, corr_id, MAX).unwrap();
        let frame = one_frame(buf);
        prop_assert_eq!(frame.header.kind, Kind::Error);
        prop_assert_eq!(frame.header.opcode, opcode);
        prop_assert_eq!(frame.header.corr_id, corr_id);
        prop_assert_eq!(frame.header.flags, Flags::END);
        prop_assert_eq!(&ErrorReply::decode(&frame).unwrap(), &err);
        prop_assert_eq!(ServerMessage::decode(&frame).unwrap(), ServerMessage::Error(err));
    }

    /// The size the server budgets with is the size it writes.
    #[test]
    fn event_wire_lengths_are_exact(
        recorded in recorded_events(),
        new in prop::collection::vec(new_event(), 0..12),
    ) {
        let mut buf = BytesMut::new();
        event::put_recorded_events(&mut buf, &recorded);
        let sum: usize = recorded.iter().map(recorded_event_wire_len).sum();
        prop_assert_eq!(buf.len(), event::array_header_len(recorded.len()) + sum);

        let mut buf = BytesMut::new();
        event::put_new_events(&mut buf, &new);
        let sum: usize = new.iter().map(new_event_wire_len).sum();
        prop_assert_eq!(buf.len(), event::array_header_len(new.len()) + sum);
    }

    /// A body that is not the announced message is `Malformed`, never a
    /// panic, whatever its bytes.
    #[test]
    fn garbage_bodies_are_malformed(
        body in prop::collection::vec(any::<u8>(), 0..64),
        opcode in opcode(),
    ) {
        for kind in [Kind::Request, Kind::Response, Kind::Push, Kind::Error] {
            let frame = raw_frame(kind, opcode, body.clone());
            // Some byte strings are valid bodies; only the failure mode
            // matters here.
            let results = [
                ServerMessage::decode(&frame).map(drop),
                Request::decode(&frame).map(drop),
            ];
            for e in results.into_iter().filter_map(Result::err) {
                prop_assert!(!e.is_fatal(), "{e}");
            }
        }
    }
}

/// Boundary sizes of every msgpack length class.
#[test]
fn event_wire_lengths_at_size_boundaries() {
    for n in [0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536, 70_000] {
        for num in [
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u32::MAX.into(),
            u64::MAX,
        ] {
            for ts in [
                0i64,
                -1,
                -32,
                -33,
                -128,
                -129,
                -32_768,
                -32_769,
                i64::MIN,
                i64::MAX,
            ] {
                let e = RecordedEvent {
                    stream: Text::from("s".repeat(n)),
                    version: StreamVersion(num),
                    position: LogPosition(num),
                    id: EventId::default(),
                    event_type: Text::from("t".repeat(n)),
                    metadata: Bytes::from(vec![1; n]),
                    data: Bytes::from(vec![2; n]),
                    timestamp_us: ts,
                };
                let mut buf = BytesMut::new();
                event::put_recorded_events(&mut buf, std::slice::from_ref(&e));
                assert_eq!(
                    buf.len(),
                    1 + recorded_event_wire_len(&e),
                    "n={n} num={num} ts={ts}"
                );
            }
        }
    }
}

/// The overhead constant really bounds every events-carrying message.
#[test]
fn events_message_overhead_is_an_upper_bound() {
    let events: Vec<RecordedEvent> = Vec::new();
    let big = Some(StreamVersion(u64::MAX));
    let mut frames = [BytesMut::new(), BytesMut::new(), BytesMut::new()];
    Response::ReadStreamOk(ReadStreamOk {
        events: events.clone(),
        last_version: big,
        next: big,
    })
    .encode(&mut frames[0], u32::MAX, MAX)
    .unwrap();
    Response::ReadAllOk(ReadAllOk {
        events: events.clone(),
        head: LogPosition(u64::MAX),
        next: Some(LogPosition(u64::MAX)),
    })
    .encode(&mut frames[1], u32::MAX, MAX)
    .unwrap();
    Push::encode_events(&mut frames[2], u32::MAX, &events, Some(u64::MAX), MAX).unwrap();
    for buf in frames {
        // An empty array takes 1 byte; a full one up to 5.
        assert!(
            buf.len() - 1 + 5 <= EVENTS_MESSAGE_OVERHEAD,
            "{}",
            buf.len()
        );
    }
}

// ---------------------------------------------------------------- zero copy

#[test]
fn decoded_payloads_share_the_frame_body() {
    let events: Vec<RecordedEvent> = (0..3u64)
        .map(|i| RecordedEvent {
            stream: Text::from(format!("account-{i}")),
            version: StreamVersion(i),
            position: LogPosition(100 + i),
            id: EventId::from_u128(i.into()),
            event_type: Text::from("Deposited"),
            metadata: Bytes::from(format!("{{\"i\":{i}}}")),
            data: Bytes::from(vec![i as u8; 200]),
            timestamp_us: 1_700_000_000_000_000,
        })
        .collect();
    let mut buf = BytesMut::new();
    Push::encode_events(&mut buf, 9, &events, Some(100), MAX).unwrap();
    let frame = one_frame(buf);
    let Push::Events {
        events: decoded, ..
    } = Push::decode(&frame).unwrap()
    else {
        panic!("not an events push");
    };
    assert_eq!(decoded, events);
    for e in &decoded {
        assert!(points_into(&e.data, &frame.body));
        assert!(points_into(&e.metadata, &frame.body));
        assert!(points_into(e.stream.as_bytes(), &frame.body));
        assert!(points_into(e.event_type.as_bytes(), &frame.body));
    }

    let append = Request::Append(Append {
        stream: Text::from("account-1"),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new(EventId::default(), "Opened", vec![7u8; 64]).with_metadata("m")],
    });
    let mut buf = BytesMut::new();
    append.encode(&mut buf, 1, MAX).unwrap();
    let frame = one_frame(buf);
    let Request::Append(decoded) = Request::decode(&frame).unwrap() else {
        panic!("not an append");
    };
    assert!(points_into(decoded.stream.as_bytes(), &frame.body));
    for e in &decoded.events {
        assert!(points_into(&e.data, &frame.body));
        assert!(points_into(&e.metadata, &frame.body));
        assert!(points_into(e.event_type.as_bytes(), &frame.body));
    }
}

/// The codec hands out bodies that share the read buffer, so the whole
/// path from socket bytes to event payloads copies nothing.
#[test]
fn codec_body_shares_the_read_buffer() {
    let mut buf = BytesMut::new();
    Request::Ping(Ping { nonce: 1 })
        .encode(&mut buf, 1, MAX)
        .unwrap();
    let start = buf.as_ptr();
    let frame = decode_frame(&mut buf, MAX).unwrap().unwrap();
    assert_eq!(frame.body.as_ptr(), start.wrapping_add(HEADER_LEN));
}

// ------------------------------------------------------ forward compatibility

#[derive(Serialize)]
struct PingFromTheFuture<'a> {
    hint: &'a str,
    nonce: u64,
    extra: Vec<Vec<u32>>,
}

#[test]
fn unknown_fields_are_ignored() {
    let frame = frame_with_body(
        Kind::Request,
        Opcode::Ping,
        &PingFromTheFuture {
            hint: "new",
            nonce: 5,
            extra: vec![vec![1, 2], vec![]],
        },
    );
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::Ping(Ping { nonce: 5 })
    );
}

#[derive(Serialize)]
struct MinimalReadStream<'a> {
    stream: &'a str,
    max_count: u32,
}

#[test]
fn missing_optional_fields_default() {
    let frame = frame_with_body(
        Kind::Request,
        Opcode::ReadStream,
        &MinimalReadStream {
            stream: "s",
            max_count: 10,
        },
    );
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::ReadStream(ReadStream {
            stream: Text::from("s"),
            from: None,
            direction: Direction::Forward,
            max_count: 10,
            min_position: None
        })
    );
}

#[derive(Serialize)]
struct EventsPush<E> {
    t: &'static str,
    events: Vec<E>,
}

#[test]
fn extra_trailing_event_fields_are_ignored() {
    // [stream, version, position, id, type, metadata, data, ts, <future field>]
    type Future<'a> = (
        &'a str,
        u64,
        u64,
        serde_bytes_like::Bin,
        &'a str,
        serde_bytes_like::Bin,
        serde_bytes_like::Bin,
        i64,
        &'a str,
    );
    let ev: Future<'_> = (
        "s",
        1,
        2,
        serde_bytes_like::Bin(vec![0; 16]),
        "T",
        serde_bytes_like::Bin(vec![]),
        serde_bytes_like::Bin(vec![9]),
        3,
        "later",
    );
    let frame = frame_with_body(
        Kind::Push,
        Opcode::Subscribe,
        &EventsPush {
            t: "events",
            events: vec![ev],
        },
    );
    let Push::Events { events, .. } = Push::decode(&frame).unwrap() else {
        panic!("not an events push");
    };
    assert_eq!(events.len(), 1);
    assert_eq!(
        events.first().map(|e| e.data.clone()),
        Some(Bytes::from_static(&[9]))
    );
}

/// Owned `bin` values for hand-built test bodies.
mod serde_bytes_like {
    pub struct Bin(pub Vec<u8>);
    impl serde::Serialize for Bin {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
}

#[test]
fn unknown_push_type_is_its_own_error() {
    #[derive(Serialize)]
    struct Tagged {
        t: &'static str,
        position: u64,
    }
    let frame = frame_with_body(
        Kind::Push,
        Opcode::Subscribe,
        &Tagged {
            t: "rebalanced",
            position: 3,
        },
    );
    match Push::decode(&frame) {
        Err(Error::UnknownPushType { tag }) => assert_eq!(tag, "rebalanced"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_error_code_survives() {
    let err = ErrorReply::new(ErrorCode::from_u16(4242), "from the future");
    assert_eq!(err.code, ErrorCode::Unknown(4242));
    let mut buf = BytesMut::new();
    err.encode(&mut buf, Opcode::Append, 3, MAX).unwrap();
    assert_eq!(
        ErrorReply::decode(&one_frame(buf)).unwrap().code,
        ErrorCode::Unknown(4242)
    );
}

#[test]
fn error_codes_have_their_documented_values() {
    let codes = [
        (ErrorCode::WrongExpectedVersion, 1),
        (ErrorCode::StreamNotFound, 2),
        (ErrorCode::BadRequest, 3),
        (ErrorCode::TooLarge, 4),
        (ErrorCode::NotAuthenticated, 5),
        (ErrorCode::ServerBusy, 6),
        (ErrorCode::ShuttingDown, 7),
        (ErrorCode::Corruption, 8),
        (ErrorCode::Internal, 9),
        (ErrorCode::UnsupportedVersion, 10),
        (ErrorCode::DuplicateEventId, 11),
        (ErrorCode::OutOfRange, 12),
        (ErrorCode::IdleTimeout, 13),
        (ErrorCode::StreamDeleted, 14),
        (ErrorCode::GroupNotFound, 15),
        (ErrorCode::GroupExists, 16),
        (ErrorCode::AccessDenied, 17),
        (ErrorCode::NotLeader, 18),
        (ErrorCode::Unsupported, 19),
    ];
    for (code, value) in codes {
        assert_eq!(code.as_u16(), value);
        assert_eq!(ErrorCode::from_u16(value), code);
    }
}

/// PROTOCOL.md §3: a body is a map with str keys; serde on its own would
/// take a struct as an array (fields by position) or with integer keys
/// (fields by index), and the same goes for a Filter inside a Subscribe.
#[test]
fn bodies_and_filters_are_maps_with_str_keys() {
    for body in [vec![0x91, 77], vec![0x81, 0x00, 77]] {
        let frame = raw_frame(Kind::Request, Opcode::Ping, body.clone());
        assert!(
            matches!(Request::decode(&frame), Err(Error::Malformed { .. })),
            "{body:x?}"
        );
    }
    // A Subscribe {target: "all", from: "start", filter: <filter>,
    // initial_credit: 1}, with the filter's bytes as given.
    let subscribe = |filter: &[u8]| {
        let mut body = vec![0x84];
        for (key, value) in [("target", "all"), ("from", "start")] {
            body.extend(mp_str(key));
            body.extend(mp_str(value));
        }
        body.extend(mp_str("filter"));
        body.extend_from_slice(filter);
        body.extend(mp_str("initial_credit"));
        body.push(1);
        Request::decode(&raw_frame(Kind::Request, Opcode::Subscribe, body))
    };
    // [["a"]]: the stream prefixes by position.
    let array = [0x91, 0x91, 0xa1, b'a'];
    assert!(matches!(subscribe(&array), Err(Error::Malformed { .. })));
    // {0: ["a"]}: the stream prefixes by index.
    let int_keys = [0x81, 0x00, 0x91, 0xa1, b'a'];
    assert!(matches!(subscribe(&int_keys), Err(Error::Malformed { .. })));
    // Optional fields may be nil, and unknown ones are skipped.
    let mut nils = vec![0x85];
    for key in ["stream_prefixes", "stream_regex", "checkpoint_interval"] {
        nils.extend(mp_str(key));
        nils.push(0xc0);
    }
    nils.extend(mp_str("type_prefixes"));
    nils.push(0x91);
    nils.extend(mp_str("T"));
    nils.extend(mp_str("later"));
    nils.extend_from_slice(&[0x81, 0x01, 0x02]);
    match subscribe(&nils) {
        Ok(Request::Subscribe(Subscribe {
            target: SubscriptionTarget::All {
                filter: Some(f), ..
            },
            ..
        })) => assert_eq!(
            f,
            Filter {
                type_prefixes: vec!["T".into()],
                ..Filter::default()
            }
        ),
        other => panic!("{other:?}"),
    }
}

/// A filter is matched against every event its subscription scans: more
/// than `MAX_FILTER_PREFIXES` prefixes in a list, or a prefix longer than
/// a name can be, is refused while decoding, before the rest of the list
/// is (a 16 MiB frame holds millions of one-byte strings).
#[test]
fn oversized_filters_are_refused_while_decoding() {
    let subscribe = |filter: Filter| {
        let req = Request::Subscribe(Subscribe {
            target: SubscriptionTarget::All {
                from: SubscribeFrom::Start,
                filter: Some(filter),
            },
            initial_credit: 1,
        });
        let mut buf = bytes::BytesMut::new();
        req.encode(&mut buf, 1, DEFAULT_MAX_FRAME_BYTES).unwrap();
        let frame = crate::frame::decode_frame(&mut buf, DEFAULT_MAX_FRAME_BYTES)
            .unwrap()
            .unwrap();
        Request::decode(&frame)
    };
    let many = |n: usize| (0..n).map(|i| format!("p{i}")).collect::<Vec<_>>();
    assert!(
        subscribe(Filter {
            stream_prefixes: many(MAX_FILTER_PREFIXES),
            type_prefixes: many(MAX_FILTER_PREFIXES),
            ..Filter::default()
        })
        .is_ok()
    );
    for f in [
        Filter {
            stream_prefixes: many(MAX_FILTER_PREFIXES + 1),
            ..Filter::default()
        },
        Filter {
            type_prefixes: many(100_000),
            ..Filter::default()
        },
        Filter {
            stream_prefixes: vec!["s".repeat(crate::MAX_STREAM_NAME_BYTES + 1)],
            ..Filter::default()
        },
        Filter {
            type_prefixes: vec!["t".repeat(crate::MAX_EVENT_TYPE_BYTES + 1)],
            ..Filter::default()
        },
    ] {
        match subscribe(f) {
            Err(Error::Malformed { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// A short MessagePack str.
fn mp_str(s: &str) -> Vec<u8> {
    assert!(s.len() < 32);
    let mut b = vec![0xa0 | s.len() as u8];
    b.extend_from_slice(s.as_bytes());
    b
}

/// PROTOCOL.md §3: an optional field may be nil, meaning "not given":
/// a nil `direction` reads forward.
#[test]
fn a_nil_direction_is_the_default() {
    #[derive(Serialize)]
    struct Read {
        max_count: u32,
        direction: Option<&'static str>,
    }
    let body = rmp_serde::to_vec_named(&Read {
        max_count: 5,
        direction: None,
    })
    .unwrap();
    match Request::decode(&raw_frame(Kind::Request, Opcode::ReadAll, body)) {
        Ok(Request::ReadAll(r)) => assert_eq!(r.direction, Direction::Forward),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------ hostile bodies

#[test]
fn malformed_body_names_the_opcode() {
    // A map whose nonce is a string.
    #[derive(Serialize)]
    struct BadPing {
        nonce: &'static str,
    }
    let frame = frame_with_body(Kind::Request, Opcode::Ping, &BadPing { nonce: "x" });
    match Request::decode(&frame) {
        Err(Error::Malformed { opcode, reason }) => {
            assert_eq!(opcode, Opcode::Ping);
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // Truncated body.
    let mut buf = BytesMut::new();
    Request::Append(Append {
        stream: Text::from("s"),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent::new(EventId::default(), "T", "data")],
    })
    .encode(&mut buf, 1, MAX)
    .unwrap();
    let frame = one_frame(buf);
    let cut = Frame::new(frame.header, frame.body.slice(..frame.body.len() - 3));
    assert!(matches!(
        Request::decode(&cut),
        Err(Error::Malformed {
            opcode: Opcode::Append,
            ..
        })
    ));
}

#[test]
fn wrong_kind_or_opcode_is_unexpected_frame() {
    let mut buf = BytesMut::new();
    Request::Ping(Ping { nonce: 1 })
        .encode(&mut buf, 1, MAX)
        .unwrap();
    let frame = one_frame(buf);
    assert!(matches!(
        Response::decode(&frame),
        Err(Error::UnexpectedFrame {
            expected: Kind::Response,
            kind: Kind::Request,
            ..
        })
    ));
    assert!(matches!(
        ServerMessage::decode(&frame),
        Err(Error::UnexpectedFrame { .. })
    ));
    let push_ping = raw_frame(Kind::Push, Opcode::Ping, vec![0x80]);
    assert!(matches!(
        Push::decode(&push_ping),
        Err(Error::UnexpectedFrame { .. })
    ));
    let stats = raw_frame(Kind::Request, Opcode::Stats, vec![0x80]);
    assert!(matches!(Request::decode(&stats), Ok(Request::Stats(Stats))));
    // A backup read with a missing field is malformed, not a zero read.
    let short_read = raw_frame(Kind::Request, Opcode::BackupRead, vec![0x80]);
    assert!(matches!(
        Request::decode(&short_read),
        Err(Error::Malformed {
            opcode: Opcode::BackupRead,
            ..
        })
    ));
    let credit_reply = raw_frame(Kind::Response, Opcode::Credit, vec![0x80]);
    assert!(matches!(
        Response::decode(&credit_reply),
        Err(Error::UnexpectedFrame { .. })
    ));
}

/// A tiny body that declares an array of 2^32 - 1 events must fail fast,
/// without reserving memory for the declared count.
#[test]
fn huge_declared_array_fails_without_allocating_for_it() {
    // {"t": "events", "events": array32(0xffff_ffff) with nothing after}
    let mut body = vec![0x82, 0xa1, b't', 0xa6];
    body.extend_from_slice(b"events");
    body.push(0xa6);
    body.extend_from_slice(b"events");
    body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    let frame = raw_frame(Kind::Push, Opcode::Subscribe, body);
    let started = std::time::Instant::now();
    // Event decoders size their Vec by what the body can hold, not by the
    // declared count; an allocation for the declared count would be
    // ~700 GiB and abort the test process.
    assert!(matches!(Push::decode(&frame), Err(Error::Malformed { .. })));
    assert!(started.elapsed() < std::time::Duration::from_secs(1));

    // Same for a map of 2^32 - 1 entries, through the serde path and the
    // hand-written one. (The serde path first walks the body with
    // `Reader::skip`, which refuses counts larger than the bytes left, so
    // serde never sees an impossible size hint.)
    let huge_map = vec![0xdf, 0xff, 0xff, 0xff, 0xff];
    let frame = raw_frame(Kind::Request, Opcode::Ping, huge_map.clone());
    assert!(matches!(
        Request::decode(&frame),
        Err(Error::Malformed { .. })
    ));
    let frame = raw_frame(Kind::Request, Opcode::Append, huge_map);
    assert!(matches!(
        Request::decode(&frame),
        Err(Error::Malformed { .. })
    ));
    // Filter prefix lists go through serde's Vec.
    let mut body = rmp_serde::to_vec_named(&std::collections::BTreeMap::from([
        ("target", "all"),
        ("from", "start"),
    ]))
    .unwrap();
    body[0] = 0x84; // two more entries follow
    body.extend_from_slice(&[0xae]);
    body.extend_from_slice(b"initial_credit");
    body.push(0x01);
    body.extend_from_slice(&[0xa6]);
    body.extend_from_slice(b"filter");
    body.extend_from_slice(&[0x81, 0xaf]);
    body.extend_from_slice(b"stream_prefixes");
    body.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    let frame = raw_frame(Kind::Request, Opcode::Subscribe, body);
    assert!(matches!(
        Request::decode(&frame),
        Err(Error::Malformed { .. })
    ));
}

/// Deep nesting in a field the receiver skips must hit the depth limit, not
/// recurse through the stack.
#[test]
fn deep_nesting_is_refused() {
    // {"nonce": 1, "x": [[[[...]]]]} with 100_000 levels.
    let mut body = vec![0x82, 0xa5];
    body.extend_from_slice(b"nonce");
    body.push(0x01);
    body.extend_from_slice(&[0xa1, b'x']);
    body.extend(std::iter::repeat_n(0x91, 100_000));
    body.push(0xc0);
    let frame = raw_frame(Kind::Request, Opcode::Ping, body);
    assert!(matches!(
        Request::decode(&frame),
        Err(Error::Malformed { .. })
    ));

    // Nesting within the limit is fine.
    let mut body = vec![0x82, 0xa5];
    body.extend_from_slice(b"nonce");
    body.push(0x01);
    body.extend_from_slice(&[0xa1, b'x']);
    body.extend(std::iter::repeat_n(0x91, MAX_BODY_DEPTH - 2));
    body.push(0xc0);
    let frame = raw_frame(Kind::Request, Opcode::Ping, body);
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::Ping(Ping { nonce: 1 })
    );
}

#[test]
fn subscribe_target_rules() {
    #[derive(Serialize)]
    struct Sub<'a> {
        target: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        stream: Option<&'a str>,
        from: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        filter: Option<std::collections::BTreeMap<&'a str, u32>>,
        initial_credit: u32,
    }
    let sub = |target, stream, filter| {
        frame_with_body(
            Kind::Request,
            Opcode::Subscribe,
            &Sub {
                target,
                stream,
                from: "start",
                filter,
                initial_credit: 1,
            },
        )
    };
    let some_filter = Some(std::collections::BTreeMap::from([(
        "checkpoint_interval",
        5,
    )]));
    for bad in [
        sub("stream", None, None),
        sub("stream", Some("s"), some_filter.clone()),
        sub("all", Some("s"), None),
        sub("everything", None, None),
    ] {
        assert!(
            matches!(Request::decode(&bad), Err(Error::Malformed { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(
        Request::decode(&sub("all", None, some_filter)).unwrap(),
        Request::Subscribe(Subscribe {
            target: SubscriptionTarget::All {
                from: SubscribeFrom::Start,
                filter: Some(Filter {
                    checkpoint_interval: 5,
                    ..Filter::default()
                }),
            },
            initial_credit: 1,
        })
    );
}

// -------------------------------------------------------------- size limits

#[test]
fn oversized_message_is_too_large_and_leaves_the_buffer_alone() {
    let mut buf = BytesMut::from(&b"earlier frames"[..]);
    let append = Request::Append(Append {
        stream: Text::from("s"),
        expected: ExpectedVersion::Any,
        events: vec![NewEvent::new(EventId::default(), "T", vec![0u8; 10_000])],
    });
    match append.encode(&mut buf, 1, 4096) {
        Err(Error::TooLarge { len, max: 4096 }) => assert!(len > 4096),
        other => panic!("{other:?}"),
    }
    assert_eq!(&buf[..], b"earlier frames");
    // The limit stopped the writer early: nothing near 10 KB was reserved.
    assert!(buf.capacity() < 10_000, "{}", buf.capacity());

    // Exactly at the limit is allowed.
    let mut exact = BytesMut::new();
    let ping = Request::Ping(Ping { nonce: 1 });
    ping.encode(&mut exact, 1, MAX).unwrap();
    let len = exact.len() as u32;
    ping.encode(&mut BytesMut::new(), 1, len).unwrap();
    assert!(matches!(
        ping.encode(&mut BytesMut::new(), 1, len - 1),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn version_exemption_lets_a_newer_hello_through() {
    let mut buf = BytesMut::new();
    Request::Hello(Hello {
        protocol_version: 3,
        client_name: "future".into(),
        token: None,
        user: None,
    })
    .encode(&mut buf, 1, MAX)
    .unwrap();
    // Rewrite the header version to 3 and re-seal the crc.
    let frame = one_frame(buf);
    let header = FrameHeader {
        version: 3,
        ..frame.header
    };
    let mut buf = BytesMut::new();
    FrameCodec::default()
        .encode_with(&mut buf, &header, |b| {
            b.extend_from_slice(&frame.body);
            Ok(())
        })
        .unwrap();
    let frame = one_frame(buf);
    assert_eq!(frame.header.version, 3);
    let Request::Hello(hello) = Request::decode(&frame).unwrap() else {
        panic!("not a hello");
    };
    assert_eq!(hello.protocol_version, 3);
}

/// Bodies built by another encoder (serde here), with keys reordered,
/// unknown keys, wide integers and nil optionals, decode through the
/// hand-written paths.
#[test]
fn hand_decoders_accept_any_valid_encoding() {
    use serde_bytes_like::Bin;
    #[derive(Serialize)]
    struct AppendOtherOrder {
        events: Vec<(Bin, &'static str, Bin, Bin)>,
        future: Vec<u8>,
        expected: u64,
        stream: &'static str,
    }
    let body = rmp_serde::to_vec_named(&AppendOtherOrder {
        events: vec![(Bin(vec![1; 16]), "T", Bin(vec![]), Bin(b"d".to_vec()))],
        future: vec![1, 2, 3],
        expected: 7,
        stream: "s",
    })
    .unwrap();
    let frame = raw_frame(Kind::Request, Opcode::Append, body);
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::Append(Append {
            stream: Text::from("s"),
            expected: ExpectedVersion::Exact(StreamVersion(7)),
            events: vec![NewEvent::new(EventId([1; 16]), "T", "d")],
        })
    );

    let mut body = Vec::new();
    rmp::encode::write_map_len(&mut body, 3).unwrap();
    rmp::encode::write_str(&mut body, "next").unwrap();
    rmp::encode::write_nil(&mut body).unwrap();
    rmp::encode::write_str(&mut body, "head").unwrap();
    rmp::encode::write_u64(&mut body, 5).unwrap(); // non-minimal
    rmp::encode::write_str(&mut body, "events").unwrap();
    rmp::encode::write_array_len(&mut body, 0).unwrap();
    let frame = raw_frame(Kind::Response, Opcode::ReadAll, body);
    assert_eq!(
        Response::decode(&frame).unwrap(),
        Response::ReadAllOk(ReadAllOk {
            events: vec![],
            head: LogPosition(5),
            next: None,
        })
    );
}

#[test]
fn bodies_must_be_exactly_one_map() {
    let mut buf = BytesMut::new();
    Request::Ping(Ping { nonce: 1 })
        .encode(&mut buf, 1, MAX)
        .unwrap();
    let frame = one_frame(buf);
    let mut body = frame.body.to_vec();
    body.push(0xc0);
    let trailing = Frame::new(frame.header, body);
    assert!(matches!(
        Request::decode(&trailing),
        Err(Error::Malformed { .. })
    ));

    let mut buf = BytesMut::new();
    Push::CaughtUp {
        position: LogPosition(1),
        next_version: None,
    }
    .encode(&mut buf, 1, MAX)
    .unwrap();
    let frame = one_frame(buf);
    let mut body = frame.body.to_vec();
    body.push(0xc0);
    let trailing = Frame::new(frame.header, body);
    assert!(matches!(
        Push::decode(&trailing),
        Err(Error::Malformed { .. })
    ));

    // Not a map at all.
    let frame = raw_frame(Kind::Request, Opcode::Append, vec![0x90]);
    assert!(matches!(
        Request::decode(&frame),
        Err(Error::Malformed { .. })
    ));
}

/// The example in PROTOCOL.md §7 is what the code writes.
#[test]
fn worked_example_in_protocol_md_is_exact() {
    const PING_42: [u8; 28] = [
        0x18, 0x00, 0x00, 0x00, // len = 24
        0x01, // version
        0x01, // kind = Request
        0x02, 0x00, // opcode = Ping
        0x00, 0x00, // flags
        0x00, 0x00, // reserved
        0x01, 0x00, 0x00, 0x00, // corr_id = 1
        0xfd, 0x51, 0xf4, 0xb2, // crc32c
        0x81, 0xa5, b'n', b'o', b'n', b'c', b'e', 0x2a, // {"nonce": 42}
    ];
    let mut buf = BytesMut::new();
    Request::Ping(Ping { nonce: 42 })
        .encode(&mut buf, 1, MAX)
        .unwrap();
    assert_eq!(&buf[..], &PING_42[..]);

    let doc = include_str!("../../PROTOCOL.md");
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        doc.contains(&hex(&PING_42)),
        "PROTOCOL.md must show the frame's bytes"
    );
    assert!(doc.contains("| 16     | `fd 51 f4 b2`"));
    assert!(doc.contains("0xb2f451fd"));
    assert_eq!(
        crc32c::crc32c(b"123456789"),
        0xe306_9283,
        "check value quoted in PROTOCOL.md"
    );
    assert!(doc.contains("`0xE3069283`"));

    let frame = one_frame(BytesMut::from(&PING_42[..]));
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::Ping(Ping { nonce: 42 })
    );

    // "The server's Pong differs only in kind, flags and crc."
    let mut pong = BytesMut::new();
    Response::Pong(Pong { nonce: 42 })
        .encode(&mut pong, 1, MAX)
        .unwrap();
    let differ: Vec<usize> = (0..PING_42.len())
        .filter(|&i| pong[i] != PING_42[i])
        .collect();
    assert!(
        differ
            .iter()
            .all(|&i| i == 5 || i == 8 || (16..20).contains(&i)),
        "{differ:?}"
    );
}

// ---------------------------------------------------------- lifecycle bodies

/// Metadata with every field set, and a custom key.
fn some_metadata() -> StreamMetadata {
    StreamMetadata {
        max_count: Some(3),
        max_age_secs: Some(60),
        truncate_before: Some(2),
        custom: serde_json::Map::from_iter([("owner".to_owned(), serde_json::json!("ada"))]),
    }
}

fn some_lifecycle_ok() -> LifecycleOk {
    LifecycleOk {
        position: LogPosition(41),
        meta_version: StreamVersion(2),
        state: StreamLifecycle {
            stream: "account-1".into(),
            metadata: some_metadata(),
            deleted: Some(Deletion::Soft),
            last_version: Some(9),
            deleted_last: Some(9),
            expired_before_us: None,
            erased: false,
        },
    }
}

/// One frame of every lifecycle request and reply.
fn lifecycle_frames() -> Vec<Frame> {
    let stream = || Text::from("account-1");
    let requests = [
        Request::SetMetadata(SetMetadata {
            stream: stream(),
            expected: ExpectedVersion::NoStream,
            metadata: some_metadata(),
        }),
        Request::GetMetadata(GetMetadata { stream: stream() }),
        Request::Truncate(Truncate {
            stream: stream(),
            before: StreamVersion(5),
        }),
        Request::DeleteStream(DeleteStream {
            stream: stream(),
            expected: ExpectedVersion::Exact(StreamVersion(9)),
            mode: Deletion::Hard,
        }),
        Request::ListStreams(ListStreams {
            prefix: Text::from("account-"),
            after: Some(stream()),
            limit: 100,
        }),
    ];
    let responses = [
        Response::SetMetadataOk(some_lifecycle_ok()),
        Response::GetMetadataOk(Some(some_lifecycle_ok())),
        Response::GetMetadataOk(None),
        Response::TruncateOk(some_lifecycle_ok()),
        Response::DeleteStreamOk(some_lifecycle_ok()),
        Response::ListStreamsOk(ListStreamsOk {
            streams: vec![
                StreamInfo {
                    stream: "account-1".into(),
                    last_version: Some(StreamVersion(9)),
                    first_version: Some(StreamVersion(5)),
                    event_count: 5,
                    deleted: None,
                    metadata: some_metadata(),
                    meta_version: Some(StreamVersion(2)),
                },
                StreamInfo {
                    stream: "account-2".into(),
                    last_version: Some(StreamVersion(3)),
                    deleted: Some(Deletion::Hard),
                    ..StreamInfo::default()
                },
            ],
            next: Some("account-2".into()),
        }),
    ];
    let mut frames = Vec::new();
    for r in &requests {
        let mut buf = BytesMut::new();
        r.encode(&mut buf, 3, MAX).unwrap();
        frames.push(one_frame(buf));
    }
    for r in &responses {
        let mut buf = BytesMut::new();
        r.encode(&mut buf, 3, MAX).unwrap();
        frames.push(one_frame(buf));
    }
    frames
}

/// Decodes `frame` as what its kind says it is.
fn decode_as_its_kind(frame: &Frame) -> Result<(), Error> {
    match frame.header.kind {
        Kind::Request => Request::decode(frame).map(drop),
        _ => ServerMessage::decode(frame).map(drop),
    }
}

/// PROTOCOL.md §5.10: the JSON travels as a str, `hard` as a bool, and an
/// absent state is an empty map.
#[test]
fn lifecycle_bodies_are_as_documented() {
    #[derive(Serialize)]
    struct SetMetadataBody {
        stream: &'static str,
        expected: &'static str,
        metadata: &'static str,
    }
    let frame = frame_with_body(
        Kind::Request,
        Opcode::SetMetadata,
        &SetMetadataBody {
            stream: "s",
            expected: "no_stream",
            metadata: r#"{"max_count":3,"custom":{"owner":"ada"}}"#,
        },
    );
    match Request::decode(&frame).unwrap() {
        Request::SetMetadata(m) => {
            assert_eq!(m.stream, "s");
            assert_eq!(m.expected, ExpectedVersion::NoStream);
            assert_eq!(m.metadata.max_count, Some(3));
            assert_eq!(
                m.metadata.custom.get("owner"),
                Some(&serde_json::json!("ada"))
            );
        }
        other => panic!("{other:?}"),
    }

    #[derive(Serialize)]
    struct DeleteBody {
        stream: &'static str,
        expected: u64,
        hard: bool,
    }
    let frame = frame_with_body(
        Kind::Request,
        Opcode::DeleteStream,
        &DeleteBody {
            stream: "s",
            expected: 4,
            hard: true,
        },
    );
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::DeleteStream(DeleteStream {
            stream: Text::from("s"),
            expected: ExpectedVersion::Exact(StreamVersion(4)),
            mode: Deletion::Hard,
        })
    );

    let mut buf = BytesMut::new();
    Response::GetMetadataOk(None)
        .encode(&mut buf, 1, MAX)
        .unwrap();
    assert_eq!(&one_frame(buf).body[..], &[0x80]);

    let mut buf = BytesMut::new();
    Response::TruncateOk(some_lifecycle_ok())
        .encode(&mut buf, 1, MAX)
        .unwrap();
    let body: std::collections::BTreeMap<String, rmpv_like::Value> =
        rmp_serde::from_slice(&one_frame(buf).body).unwrap();
    assert_eq!(body.get("position"), Some(&rmpv_like::Value::U(41)));
    assert_eq!(body.get("meta_version"), Some(&rmpv_like::Value::U(2)));
    let Some(rmpv_like::Value::S(state)) = body.get("state") else {
        panic!("{body:?}")
    };
    assert_eq!(
        StreamLifecycle::from_json(state.as_bytes()).unwrap(),
        some_lifecycle_ok().state
    );
}

/// Just enough of a MessagePack value to look at a body's fields.
mod rmpv_like {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(untagged)]
    pub enum Value {
        U(u64),
        S(String),
        B(bool),
    }
}

/// JSON that does not parse, or breaks the metadata's rules, makes the
/// message malformed: a per-message error that keeps the connection.
#[test]
fn lifecycle_json_that_does_not_parse_is_malformed_not_fatal() {
    #[derive(Serialize)]
    struct SetMetadataBody<'a> {
        stream: &'a str,
        expected: &'a str,
        metadata: &'a str,
    }
    for bad in [
        "",
        "{",
        "[1]",
        "null",
        r#"{"max_cuont":3}"#,
        r#"{"max_count":0}"#,
        r#"{"max_age_secs":-1}"#,
        r#"{"custom":[1]}"#,
    ] {
        let frame = frame_with_body(
            Kind::Request,
            Opcode::SetMetadata,
            &SetMetadataBody {
                stream: "s",
                expected: "any",
                metadata: bad,
            },
        );
        match Request::decode(&frame) {
            Err(
                e @ Error::Malformed {
                    opcode: Opcode::SetMetadata,
                    ..
                },
            ) => assert!(!e.is_fatal()),
            other => panic!("{bad:?}: {other:?}"),
        }
    }

    #[derive(Serialize)]
    struct LifecycleOkBody<'a> {
        position: u64,
        meta_version: u64,
        state: &'a str,
    }
    for op in [Opcode::SetMetadata, Opcode::Truncate, Opcode::DeleteStream] {
        for bad in ["", "{", "7", r#"{"stream":5}"#] {
            let frame = frame_with_body(
                Kind::Response,
                op,
                &LifecycleOkBody {
                    position: 1,
                    meta_version: 0,
                    state: bad,
                },
            );
            match ServerMessage::decode(&frame) {
                Err(e @ Error::Malformed { opcode, .. }) => {
                    assert_eq!(opcode, op);
                    assert!(!e.is_fatal());
                }
                other => panic!("{op:?} {bad:?}: {other:?}"),
            }
        }
    }

    // A GetMetadataOk with part of the state only.
    #[derive(Serialize)]
    struct Partial {
        position: u64,
    }
    let frame = frame_with_body(
        Kind::Response,
        Opcode::GetMetadata,
        &Partial { position: 1 },
    );
    assert!(matches!(
        Response::decode(&frame),
        Err(Error::Malformed {
            opcode: Opcode::GetMetadata,
            ..
        })
    ));

    // `hard` is required: a delete says what it means.
    #[derive(Serialize)]
    struct DeleteBody {
        stream: &'static str,
        expected: &'static str,
    }
    let frame = frame_with_body(
        Kind::Request,
        Opcode::DeleteStream,
        &DeleteBody {
            stream: "s",
            expected: "any",
        },
    );
    assert!(matches!(
        Request::decode(&frame),
        Err(Error::Malformed {
            opcode: Opcode::DeleteStream,
            ..
        })
    ));
}

/// MessagePack is prefix-free: every cut of a lifecycle body is
/// malformed, whatever message it was.
#[test]
fn truncated_lifecycle_bodies_are_malformed() {
    for frame in lifecycle_frames() {
        decode_as_its_kind(&frame).unwrap();
        for cut in 0..frame.body.len() {
            let short = Frame::new(frame.header, frame.body.slice(..cut));
            match decode_as_its_kind(&short) {
                Err(Error::Malformed { opcode, .. }) => assert_eq!(opcode, frame.header.opcode),
                other => panic!("{:?} cut at {cut}: {other:?}", frame.header),
            }
        }
    }
}

/// A flipped bit in a lifecycle body (the frame's crc would catch it on
/// the wire; a buggy peer is another matter) either still decodes or is a
/// per-message error, never a panic or a fatal one.
#[test]
fn bit_flipped_lifecycle_bodies_are_message_errors() {
    for frame in lifecycle_frames() {
        for byte in 0..frame.body.len() {
            for bit in 0..8 {
                let mut body = frame.body.to_vec();
                body[byte] ^= 1 << bit;
                let flipped = Frame::new(frame.header, body);
                if let Err(e) = decode_as_its_kind(&flipped) {
                    assert!(
                        !e.is_fatal(),
                        "{:?} byte {byte} bit {bit}: {e}",
                        frame.header
                    );
                }
            }
        }
    }
}

/// Lifecycle messages over the frame limit are refused before anything
/// is left in the buffer, like every other message.
#[test]
fn oversized_lifecycle_messages_are_too_large() {
    let mut big = some_metadata();
    big.custom
        .insert("blob".into(), serde_json::Value::from("x".repeat(10_000)));
    let mut state = some_lifecycle_ok();
    state.state.metadata = big.clone();
    let requests = [Request::SetMetadata(SetMetadata {
        stream: Text::from("s"),
        expected: ExpectedVersion::Any,
        metadata: big,
    })];
    let responses = [
        Response::SetMetadataOk(state.clone()),
        Response::GetMetadataOk(Some(state.clone())),
        Response::TruncateOk(state.clone()),
        Response::DeleteStreamOk(state),
    ];
    let check = |r: Result<(), Error>, buf: &BytesMut| {
        assert!(matches!(r, Err(Error::TooLarge { max: 4096, .. })), "{r:?}");
        assert_eq!(&buf[..], b"earlier");
    };
    for r in &requests {
        let mut buf = BytesMut::from(&b"earlier"[..]);
        check(r.encode(&mut buf, 1, 4096), &buf);
    }
    for r in &responses {
        let mut buf = BytesMut::from(&b"earlier"[..]);
        check(r.encode(&mut buf, 1, 4096), &buf);
    }
    // A long stream name alone is enough for the small requests.
    let long = Text::from("s".repeat(5000));
    for r in [
        Request::GetMetadata(GetMetadata {
            stream: long.clone(),
        }),
        Request::Truncate(Truncate {
            stream: long.clone(),
            before: StreamVersion(1),
        }),
        Request::DeleteStream(DeleteStream {
            stream: long,
            expected: ExpectedVersion::Any,
            mode: Deletion::Soft,
        }),
    ] {
        let mut buf = BytesMut::from(&b"earlier"[..]);
        check(r.encode(&mut buf, 1, 4096), &buf);
    }
}

// ------------------------------------------------- scavenge and erase bodies

fn some_scavenge_ok() -> ScavengeOk {
    ScavengeOk {
        segments_considered: 5,
        segments_rewritten: 4,
        segments_merged: 2,
        events_removed: 1200,
        bytes_before: 1 << 30,
        bytes_after: 300 << 20,
        duration_us: 12_345_678,
    }
}

fn some_erase_ok() -> EraseOk {
    EraseOk {
        position: LogPosition(77),
        segments_rewritten: 2,
        events_removed: 9,
        bytes_before: 2 << 20,
        bytes_after: (2 << 20) - 4096,
        duration_us: 250_000,
    }
}

/// One frame of every scavenge and erase request and reply.
fn scavenge_frames() -> Vec<Frame> {
    let requests = [
        Request::Scavenge(Scavenge::default()),
        Request::Scavenge(Scavenge {
            max_bytes_per_sec: Some(50 << 20),
        }),
        Request::Erase(Erase {
            stream: Text::from("customer-42"),
        }),
    ];
    let responses = [
        Response::ScavengeOk(some_scavenge_ok()),
        Response::EraseOk(some_erase_ok()),
    ];
    let mut frames = Vec::new();
    for r in &requests {
        let mut buf = BytesMut::new();
        r.encode(&mut buf, 3, MAX).unwrap();
        frames.push(one_frame(buf));
    }
    for r in &responses {
        let mut buf = BytesMut::new();
        r.encode(&mut buf, 3, MAX).unwrap();
        frames.push(one_frame(buf));
    }
    frames
}

/// PROTOCOL.md §5.11: named uint fields; a scavenge without a rate limit
/// is an empty map.
#[test]
fn scavenge_and_erase_bodies_are_as_documented() {
    let mut buf = BytesMut::new();
    Request::Scavenge(Scavenge::default())
        .encode(&mut buf, 1, MAX)
        .unwrap();
    assert_eq!(&one_frame(buf).body[..], &[0x80]);

    #[derive(Serialize)]
    struct ScavengeBody {
        max_bytes_per_sec: u64,
    }
    let frame = frame_with_body(
        Kind::Request,
        Opcode::Scavenge,
        &ScavengeBody {
            max_bytes_per_sec: 1_000_000,
        },
    );
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::Scavenge(Scavenge {
            max_bytes_per_sec: Some(1_000_000)
        })
    );
    // nil is "not given", like absent.
    #[derive(Serialize)]
    struct NilBody {
        max_bytes_per_sec: Option<u64>,
    }
    let frame = frame_with_body(
        Kind::Request,
        Opcode::Scavenge,
        &NilBody {
            max_bytes_per_sec: None,
        },
    );
    assert_eq!(
        Request::decode(&frame).unwrap(),
        Request::Scavenge(Scavenge::default())
    );

    #[derive(Serialize)]
    struct EraseBody {
        stream: &'static str,
    }
    let frame = frame_with_body(
        Kind::Request,
        Opcode::Erase,
        &EraseBody {
            stream: "customer-42",
        },
    );
    match Request::decode(&frame).unwrap() {
        Request::Erase(e) => {
            assert_eq!(e.stream, "customer-42");
            assert!(points_into(e.stream.as_bytes(), &frame.body));
        }
        other => panic!("{other:?}"),
    }

    let mut buf = BytesMut::new();
    Response::ScavengeOk(some_scavenge_ok())
        .encode(&mut buf, 1, MAX)
        .unwrap();
    let body: std::collections::BTreeMap<String, u64> =
        rmp_serde::from_slice(&one_frame(buf).body).unwrap();
    let expect = [
        ("bytes_after", 300 << 20),
        ("bytes_before", 1 << 30),
        ("duration_us", 12_345_678),
        ("events_removed", 1200),
        ("segments_considered", 5),
        ("segments_merged", 2),
        ("segments_rewritten", 4),
    ];
    assert_eq!(
        body,
        expect.map(|(k, v)| (k.to_owned(), v)).into_iter().collect()
    );

    let mut buf = BytesMut::new();
    Response::EraseOk(some_erase_ok())
        .encode(&mut buf, 1, MAX)
        .unwrap();
    let body: std::collections::BTreeMap<String, u64> =
        rmp_serde::from_slice(&one_frame(buf).body).unwrap();
    let keys: Vec<&str> = body.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "bytes_after",
            "bytes_before",
            "duration_us",
            "events_removed",
            "position",
            "segments_rewritten"
        ]
    );
    assert_eq!(body.get("position"), Some(&77));
}

/// A zero rate, a missing stream or a reply short of a field is
/// malformed: a per-message error that keeps the connection.
#[test]
fn bad_scavenge_and_erase_bodies_are_malformed_not_fatal() {
    #[derive(Serialize)]
    struct ScavengeBody {
        max_bytes_per_sec: u64,
    }
    let frame = frame_with_body(
        Kind::Request,
        Opcode::Scavenge,
        &ScavengeBody {
            max_bytes_per_sec: 0,
        },
    );
    match Request::decode(&frame) {
        Err(
            e @ Error::Malformed {
                opcode: Opcode::Scavenge,
                ..
            },
        ) => assert!(!e.is_fatal()),
        other => panic!("{other:?}"),
    }

    #[derive(Serialize)]
    struct Empty {}
    let frame = frame_with_body(Kind::Request, Opcode::Erase, &Empty {});
    assert!(matches!(
        Request::decode(&frame),
        Err(Error::Malformed {
            opcode: Opcode::Erase,
            ..
        })
    ));

    // Every field of the replies is required.
    #[derive(Serialize)]
    struct Short {
        segments_considered: u64,
        segments_rewritten: u64,
    }
    for op in [Opcode::Scavenge, Opcode::Erase] {
        let frame = frame_with_body(
            Kind::Response,
            op,
            &Short {
                segments_considered: 1,
                segments_rewritten: 1,
            },
        );
        match ServerMessage::decode(&frame) {
            Err(e @ Error::Malformed { opcode, .. }) => {
                assert_eq!(opcode, op);
                assert!(!e.is_fatal());
            }
            other => panic!("{op:?}: {other:?}"),
        }
    }
}

/// MessagePack is prefix-free: every cut of a scavenge or erase body is
/// malformed, whatever message it was.
#[test]
fn truncated_scavenge_and_erase_bodies_are_malformed() {
    for frame in scavenge_frames() {
        decode_as_its_kind(&frame).unwrap();
        for cut in 0..frame.body.len() {
            let short = Frame::new(frame.header, frame.body.slice(..cut));
            match decode_as_its_kind(&short) {
                Err(Error::Malformed { opcode, .. }) => assert_eq!(opcode, frame.header.opcode),
                other => panic!("{:?} cut at {cut}: {other:?}", frame.header),
            }
        }
    }
}

/// A flipped bit in a scavenge or erase body still decodes or is a
/// per-message error, never a panic or a fatal one.
#[test]
fn bit_flipped_scavenge_and_erase_bodies_are_message_errors() {
    for frame in scavenge_frames() {
        for byte in 0..frame.body.len() {
            for bit in 0..8 {
                let mut body = frame.body.to_vec();
                body[byte] ^= 1 << bit;
                let flipped = Frame::new(frame.header, body);
                if let Err(e) = decode_as_its_kind(&flipped) {
                    assert!(
                        !e.is_fatal(),
                        "{:?} byte {byte} bit {bit}: {e}",
                        frame.header
                    );
                }
            }
        }
    }
}

/// An erase of a name too long for the frame is refused before anything
/// is left in the buffer, like every other message.
#[test]
fn oversized_erase_is_too_large() {
    let mut buf = BytesMut::from(&b"earlier"[..]);
    let r = Request::Erase(Erase {
        stream: Text::from("s".repeat(5000)),
    })
    .encode(&mut buf, 1, 4096);
    assert!(matches!(r, Err(Error::TooLarge { max: 4096, .. })), "{r:?}");
    assert_eq!(&buf[..], b"earlier");
}

#[test]
fn group_ids_past_the_limit_are_refused_before_they_are_read() {
    let ids: Vec<u64> = (0..=groups::MAX_GROUP_IDS as u64).collect();
    let mut buf = BytesMut::new();
    Request::GroupAck(GroupAck {
        subscription: 1,
        ids,
    })
    .encode(&mut buf, 1, MAX)
    .unwrap();
    let err = Request::decode(&one_frame(buf)).unwrap_err();
    assert!(err.to_string().contains("too many ids"), "{err}");
    // A push whose ids do not pair with its events is malformed.
    let frame = frame_with_body(
        Kind::Push,
        Opcode::JoinGroup,
        &serde_json::json!({ "t": "events", "events": [], "ids": [1], "deliveries": [] }),
    );
    assert!(GroupPush::decode(&frame).is_err());
    assert!(groups::validate_group_name("orders.projector-1").is_ok());
    assert!(groups::validate_group_name("").is_err());
    assert!(groups::validate_group_name("a:b").is_err());
    assert!(groups::validate_group_name(&"x".repeat(129)).is_err());
}

fn grant() -> impl Strategy<Value = crate::msg::Grant> {
    ("\\PC{0,12}", prop::collection::vec("[a-z_]{0,8}", 0..4))
        .prop_map(|(prefix, rights)| crate::msg::Grant { prefix, rights })
}

fn role() -> impl Strategy<Value = crate::msg::Role> {
    (
        "\\PC{0,12}",
        prop::collection::vec(grant(), 0..4),
        prop::collection::vec("[a-z_]{0,8}", 0..4),
        any::<bool>(),
    )
        .prop_map(|(name, grants, ops, builtin)| crate::msg::Role {
            name,
            grants,
            ops,
            builtin,
        })
}

fn user_info() -> impl Strategy<Value = crate::msg::UserInfo> {
    (
        "\\PC{0,12}",
        prop::collection::vec("\\PC{0,8}", 0..3),
        prop::option::of("\\PC{0,8}"),
        any::<[bool; 2]>(),
        prop::collection::vec(("\\PC{0,8}", "\\PC{0,8}", any::<i64>()), 0..3),
    )
        .prop_map(|(name, roles, tenant, b, tokens)| crate::msg::UserInfo {
            name,
            roles,
            tenant,
            disabled: b[0],
            password: b[1],
            tokens: tokens
                .into_iter()
                .map(|(id, label, created_us)| crate::msg::TokenInfo {
                    id,
                    label,
                    created_us,
                })
                .collect(),
        })
}

/// The user, role and token requests (opcodes 31 to 39).
fn auth_request() -> impl Strategy<Value = Request> {
    use crate::msg::{CreateToken, NameOnly, PutUser, RevokeToken};
    let name = || "\\PC{0,12}";
    prop_oneof![
        (
            name(),
            prop::option::of(name()),
            prop::collection::vec(name(), 0..3),
            prop::option::of(name()),
            any::<bool>(),
        )
            .prop_map(|(name, password, roles, tenant, disabled)| {
                Request::PutUser(PutUser {
                    name,
                    password,
                    roles,
                    tenant,
                    disabled,
                })
            }),
        name().prop_map(|name| Request::DeleteUser(NameOnly { name })),
        Just(Request::ListUsers),
        role().prop_map(Request::PutRole),
        name().prop_map(|name| Request::DeleteRole(NameOnly { name })),
        Just(Request::ListRoles),
        (name(), name())
            .prop_map(|(user, label)| Request::CreateToken(CreateToken { user, label })),
        (name(), name()).prop_map(|(user, id)| Request::RevokeToken(RevokeToken { user, id })),
        Just(Request::WhoAmI),
        (any::<u64>(), name(), name()).prop_map(|(node_id, raft_addr, client_addr)| {
            Request::AddNode(crate::msg::AddNode {
                node_id,
                raft_addr,
                client_addr,
            })
        }),
        any::<u64>().prop_map(|node_id| Request::RemoveNode(crate::msg::RemoveNode { node_id })),
    ]
}

/// Their replies.
fn auth_response() -> impl Strategy<Value = Response> {
    use crate::msg::{CreateTokenOk, ListRolesOk, ListUsersOk, WhoAmIOk};
    prop_oneof![
        user_info().prop_map(|u| Response::PutUserOk(Box::new(u))),
        Just(Response::DeleteUserOk),
        prop::collection::vec(user_info(), 0..3)
            .prop_map(|users| Response::ListUsersOk(ListUsersOk { users })),
        role().prop_map(|r| Response::PutRoleOk(Box::new(r))),
        Just(Response::DeleteRoleOk),
        prop::collection::vec(role(), 0..3)
            .prop_map(|roles| Response::ListRolesOk(ListRolesOk { roles })),
        ("\\PC{0,8}", "\\PC{0,40}")
            .prop_map(|(id, token)| Response::CreateTokenOk(CreateTokenOk { id, token })),
        Just(Response::RevokeTokenOk),
        (any::<bool>(), any::<u64>())
            .prop_map(|(voter, lag)| Response::AddNodeOk(crate::msg::AddNodeOk { voter, lag })),
        Just(Response::RemoveNodeOk),
        (
            "\\PC{0,8}",
            prop::collection::vec("\\PC{0,8}", 0..3),
            prop::option::of("\\PC{0,8}"),
            any::<bool>(),
            prop::collection::vec("[a-z_]{0,8}", 0..3),
            prop::collection::vec(grant(), 0..3),
        )
            .prop_map(|(user, roles, tenant, admin, ops, grants)| {
                Response::WhoAmIOk(Box::new(WhoAmIOk {
                    user,
                    roles,
                    tenant,
                    admin,
                    ops,
                    grants,
                }))
            }),
    ]
}
