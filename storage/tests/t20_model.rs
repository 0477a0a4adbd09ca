//! Property test: random sequences of appends (every expected-version kind,
//! batches, retries, many streams), reads in both directions, clean
//! restarts and simulated power cuts, checked against a simple in-memory
//! model. Runs on the in-memory file system with tiny segments and
//! memtables, so roll-over, index flushes and merges all happen.

mod common;

use common::*;
use logbook_protocol::{Direction, EventId, ExpectedVersion, NewEvent, StreamVersion};
use logbook_storage::fs::{CrashMode, MemFs};
use logbook_storage::{AppendError, Store};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    /// Exact(actual + delta), delta usually 0.
    Exact(i8),
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: u8,
        expect: Expect,
        n: u8,
        size: u16,
    },
    RetryLast {
        stream: u8,
    },
    ReadStream {
        stream: u8,
        from: Option<u8>,
        backward: bool,
        max: u8,
    },
    ReadAll {
        from: Option<u16>,
        backward: bool,
        max: u8,
    },
    Restart,
    Crash {
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let expect = prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::StreamExists),
        (-1i8..=1).prop_map(Expect::Exact),
        Just(Expect::Exact(0)),
    ];
    prop_oneof![
        10 => (0u8..6, expect, 1u8..6, 0u16..900).prop_map(|(stream, expect, n, size)| Op::Append { stream, expect, n, size }),
        1 => (0u8..6).prop_map(|stream| Op::RetryLast { stream }),
        3 => (0u8..6, proptest::option::of(0u8..30), any::<bool>(), 1u8..40)
            .prop_map(|(stream, from, backward, max)| Op::ReadStream { stream, from, backward, max }),
        2 => (proptest::option::of(0u16..200), any::<bool>(), 1u8..80)
            .prop_map(|(from, backward, max)| Op::ReadAll { from, backward, max }),
        1 => Just(Op::Restart),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

/// The model: the global log, and each stream's positions and last batch.
#[derive(Default)]
struct Model {
    log: Vec<(String, NewEvent)>,
    streams: Vec<Vec<u64>>,
    last_batch: Vec<Option<(Vec<NewEvent>, u64, u64)>>,
    next_id: u128,
}

impl Model {
    fn new() -> Model {
        Model {
            streams: vec![Vec::new(); 6],
            last_batch: vec![None; 6],
            ..Model::default()
        }
    }
}

fn stream_name(i: u8) -> String {
    format!("stream-{i}")
}

fn run(ops: Vec<Op>) {
    let mut fs = MemFs::new();
    let mut store = Store::open(tiny_mem(&fs)).unwrap();
    let mut m = Model::new();
    for op in ops {
        match op {
            Op::Append {
                stream,
                expect,
                n,
                size,
            } => {
                let si = stream as usize;
                let actual = m.streams[si].len().checked_sub(1).map(|v| v as u64);
                let expected = match expect {
                    Expect::Any => ExpectedVersion::Any,
                    Expect::NoStream => ExpectedVersion::NoStream,
                    Expect::StreamExists => ExpectedVersion::StreamExists,
                    Expect::Exact(d) => {
                        let base = actual.map_or(0, |a| a as i64);
                        ExpectedVersion::Exact(StreamVersion((base + i64::from(d)).max(0) as u64))
                    }
                };
                let events: Vec<NewEvent> = (0..n)
                    .map(|i| {
                        m.next_id += 1;
                        NewEvent::new(
                            EventId::from_u128(m.next_id),
                            format!("T{}", i % 2),
                            vec![i; usize::from(size) / usize::from(n)],
                        )
                        .with_metadata(format!("m{}", m.next_id))
                    })
                    .collect();
                let got =
                    store.append_blocking(&name(&stream_name(stream)), expected, events.clone());
                if expected.admits(actual.map(StreamVersion)) {
                    let r = got.unwrap();
                    let first_pos = m.log.len() as u64;
                    let first_ver = m.streams[si].len() as u64;
                    assert_eq!(r.first_position.0, first_pos);
                    assert_eq!(r.first_version.0, first_ver);
                    assert_eq!(r.last_version.0, first_ver + u64::from(n) - 1);
                    for (i, e) in events.iter().enumerate() {
                        m.streams[si].push(first_pos + i as u64);
                        m.log.push((stream_name(stream), e.clone()));
                    }
                    m.last_batch[si] = Some((events, first_ver, first_pos));
                } else {
                    match got {
                        Err(AppendError::WrongExpectedVersion {
                            expected: e,
                            actual: a,
                            ..
                        }) => {
                            assert_eq!(e, expected);
                            assert_eq!(a, actual.map(StreamVersion));
                        }
                        other => panic!("expected a conflict, got {other:?}"),
                    }
                }
            }
            Op::RetryLast { stream } => {
                let si = stream as usize;
                if let Some((events, first_ver, first_pos)) = m.last_batch[si].clone() {
                    // A retry with a stale expected version must still be
                    // answered with the original result.
                    let r = store
                        .append_blocking(
                            &name(&stream_name(stream)),
                            ExpectedVersion::Exact(StreamVersion(first_ver.saturating_sub(1))),
                            events.clone(),
                        )
                        .unwrap();
                    assert_eq!(r.first_position.0, first_pos);
                    assert_eq!(r.first_version.0, first_ver);
                    assert_eq!(r.last_position.0, first_pos + events.len() as u64 - 1);
                }
            }
            Op::ReadStream {
                stream,
                from,
                backward,
                max,
            } => {
                let si = stream as usize;
                let dir = if backward {
                    Direction::Backward
                } else {
                    Direction::Forward
                };
                let got = store
                    .read_stream(
                        &stream_name(stream),
                        from.map(|v| StreamVersion(u64::from(v))),
                        dir,
                        usize::from(max),
                    )
                    .unwrap();
                let versions: Vec<u64> = (0..m.streams[si].len() as u64).collect();
                let want: Vec<u64> = match (backward, from) {
                    (false, f) => versions
                        .iter()
                        .copied()
                        .filter(|v| *v >= f.map_or(0, u64::from))
                        .take(usize::from(max))
                        .collect(),
                    (true, f) => versions
                        .iter()
                        .rev()
                        .copied()
                        .filter(|v| *v <= f.map_or(u64::MAX, u64::from))
                        .take(usize::from(max))
                        .collect(),
                };
                assert_eq!(
                    got.events.iter().map(|e| e.version.0).collect::<Vec<_>>(),
                    want,
                    "read_stream {stream} from {from:?} back {backward} max {max}"
                );
                for e in &got.events {
                    let pos = m.streams[si][e.version.0 as usize];
                    assert_eq!(e.position.0, pos);
                    let (s, me) = &m.log[pos as usize];
                    assert_eq!(e.stream.as_str(), s);
                    assert_eq!(e.id, me.id);
                    assert_eq!(e.data, me.data);
                    assert_eq!(e.metadata, me.metadata);
                    assert_eq!(e.event_type, me.event_type);
                }
                assert_eq!(
                    got.last_version.map(|v| v.0),
                    m.streams[si].len().checked_sub(1).map(|v| v as u64)
                );
            }
            Op::ReadAll {
                from,
                backward,
                max,
            } => {
                let dir = if backward {
                    Direction::Backward
                } else {
                    Direction::Forward
                };
                let got = store
                    .read_all(
                        from.map(|p| logbook_protocol::LogPosition(u64::from(p))),
                        dir,
                        usize::from(max),
                    )
                    .unwrap();
                let len = m.log.len() as u64;
                let want: Vec<u64> = if backward {
                    let start = from.map_or(len, |f| (u64::from(f) + 1).min(len));
                    (0..start).rev().take(usize::from(max)).collect()
                } else {
                    (from.map_or(0, u64::from)..len)
                        .take(usize::from(max))
                        .collect()
                };
                assert_eq!(
                    got.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
                    want
                );
                for e in &got.events {
                    let (s, me) = &m.log[e.position.0 as usize];
                    assert_eq!(e.stream.as_str(), s);
                    assert_eq!(e.id, me.id);
                    assert_eq!(e.data, me.data);
                }
                assert_eq!(got.head.0, len);
            }
            Op::Restart => {
                store.close().unwrap();
                drop(store);
                store = Store::open(tiny_mem(&fs)).unwrap();
                let r = store.recovery_report();
                assert_eq!(r.truncated, None, "a clean restart cuts nothing");
                assert_eq!(r.replayed_events, 0, "a clean restart replays nothing");
            }
            Op::Crash { seed } => {
                // Power cut: only what fsync covered survives (plus, in torn
                // mode, random scraps of what it did not).
                let mode = if seed.is_multiple_of(2) {
                    CrashMode::DropUnsynced
                } else {
                    CrashMode::TornUnsynced { seed }
                };
                fs = fs.crash(mode);
                // The old engine shuts down against the old file system, which
                // the crashed copy no longer shares.
                drop(store);
                store = Store::open(tiny_mem(&fs)).unwrap();
                assert_eq!(
                    store.head().0,
                    m.log.len() as u64,
                    "every acknowledged event survives"
                );
            }
        }
    }
    // Finally everything, both ways.
    let all = store.read_all(None, Direction::Forward, 100_000).unwrap();
    assert_eq!(all.events.len(), m.log.len());
    for (e, (s, me)) in all.events.iter().zip(&m.log) {
        assert_eq!(e.stream.as_str(), s);
        assert_eq!(e.id, me.id);
    }
    store.close().unwrap();
    let report = logbook_storage::verify(&tiny_mem(&fs), |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.events, m.log.len() as u64);
}

proptest! {
    // PROPTEST_CASES raises the count for a longer local run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]
    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops);
    }
}
