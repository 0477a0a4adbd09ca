//! Criterion benches of CPU-only components (no disk):
//! - `record`: log record codec for a 100-event batch (~200-byte events):
//!   `encode_100`, `check_100` (bounds, suffix, crc32c), `decode_100`
//!   (check + parse + every event).
//! - `sidx`: an index table of 1,000,000 entries (10,000 streams x 100
//!   versions) on `MemFs`: `lookup_hit` (one entry of a present stream),
//!   `lookup_miss` (an absent stream; mostly the bloom filter),
//!   `range_100` (a whole stream).
//! - `ids`: the event-id file of a 1,000,000-event table: `lookup_miss`
//!   (a new id), `lookup_hit` (a stored one).
//! - `protocol`: 1000-event messages: `encode_read_all_ok_1000`,
//!   `encode_push_events_1000`, `decode_frame_1000` (cut one frame out of a
//!   read buffer, crc included), `decode_read_all_ok_1000`
//!   (`ServerMessage::decode` of the cut frame).

use std::hint::black_box;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use logbook_bench::events::{EventFactory, stream_name};
use logbook_protocol::EventId;
use logbook_protocol::frame::decode_frame;
use logbook_protocol::{
    DEFAULT_MAX_FRAME_BYTES, LogPosition, Push, ReadAllOk, RecordedEvent, Response, ServerMessage,
};
use logbook_storage::fs::{MemFs, Vfs};
use logbook_storage::internals::{
    Entry, IdTable, Record, StreamHasher, check_record, encode_record, write_ids, write_table,
};

const MAX_RECORD: usize = 16 << 20;
/// The crc32c seed of a segment's records (any value: the cost is the same).
const SEED: u32 = 0x1234_5678;

/// One record of `n` events; `first_position` 0.
fn encoded_record(n: usize) -> Vec<u8> {
    let events = EventFactory::default().batch(n);
    let mut buf = Vec::new();
    encode_record(
        &mut buf,
        SEED,
        "account-42",
        0,
        0,
        1_700_000_000_000_000,
        &events,
    );
    buf
}

fn record_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    let events = EventFactory::default().batch(100);
    let stream = stream_name("account", 42);
    let bytes = Bytes::from(encoded_record(100));
    g.throughput(Throughput::Elements(100));

    let mut buf = Vec::with_capacity(bytes.len());
    g.bench_function("encode_100", |b| {
        b.iter(|| {
            buf.clear();
            encode_record(
                &mut buf,
                SEED,
                &stream,
                1000,
                7,
                1_700_000_000_000_000,
                &events,
            );
            black_box(buf.len())
        });
    });
    g.bench_function("check_100", |b| {
        b.iter(|| check_record(black_box(&bytes), MAX_RECORD, SEED).expect("valid record"));
    });
    g.bench_function("decode_100", |b| {
        b.iter(|| {
            let len = check_record(black_box(&bytes), MAX_RECORD, SEED).expect("valid record");
            let r = Record::parse(bytes.slice(..len)).expect("parse");
            let evs: Vec<RecordedEvent> = r.events().collect::<Result<_, _>>().expect("events");
            assert_eq!(evs.len(), 100);
            evs
        });
    });
    g.finish();
}

const SIDX_STREAMS: u64 = 10_000;
const SIDX_VERSIONS: u64 = 100;

fn sidx_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("sidx");
    let fs = MemFs::new();
    let dir = Path::new("/index");
    fs.create_dir_all(dir).expect("mkdir");
    let hasher = StreamHasher::new(0x5eed);
    let hashes: Vec<u64> = (0..SIDX_STREAMS)
        .map(|s| hasher.hash(&stream_name("account", s)))
        .collect();
    // Stream s's version v is at position v * STREAMS + s (interleaved).
    let mut entries: Vec<(u64, Entry)> = hashes
        .iter()
        .enumerate()
        .flat_map(|(s, &h)| {
            (0..SIDX_VERSIONS).map(move |v| {
                let position = v * SIDX_STREAMS + s as u64;
                (
                    h,
                    Entry {
                        version: v,
                        position,
                        offset: position * 250,
                    },
                )
            })
        })
        .collect();
    entries.sort_by_key(|(h, e)| (*h, e.version, e.position));
    let count = entries.len() as u64;
    // The table's event ids: one per entry, random-looking as v4 ids are.
    let id_of = |p: u64| {
        EventId::from_u128(u128::from(p.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64 | u128::from(p))
    };
    let mut ids: Vec<(EventId, u64)> = (0..count).map(|p| (id_of(p), p)).collect();
    ids.sort_by_key(|(id, _)| id.0);
    let id_table = write_ids(
        &fs,
        dir,
        1,
        0,
        count,
        count,
        ids.into_iter().map(Ok),
        |id| hasher.hash_id(id),
    )
    .expect("write ids");
    let table = write_table(
        &fs,
        dir,
        1,
        0,
        0,
        count,
        count,
        entries.into_iter().map(Ok),
        std::iter::empty(),
        id_table,
    )
    .expect("write table");

    let mut out = Vec::with_capacity(SIDX_VERSIONS as usize);
    let mut i = 0usize;
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            // A stride co-prime with the stream count visits them all.
            i = (i + 7919) % hashes.len();
            out.clear();
            table
                .range(
                    hashes[i],
                    (50, 0),
                    logbook_protocol::Direction::Forward,
                    1,
                    &mut out,
                )
                .expect("lookup");
            assert_eq!(out.len(), 1);
            out[0].1.position
        });
    });
    let mut miss = 0u64;
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            miss += 1;
            out.clear();
            let h = hasher.hash(&stream_name("absent", miss));
            table
                .range(h, (0, 0), logbook_protocol::Direction::Forward, 1, &mut out)
                .expect("lookup");
            out.len()
        });
    });
    g.throughput(Throughput::Elements(SIDX_VERSIONS));
    g.bench_function("range_100", |b| {
        b.iter(|| {
            i = (i + 7919) % hashes.len();
            out.clear();
            table
                .range(
                    hashes[i],
                    (0, 0),
                    logbook_protocol::Direction::Forward,
                    SIDX_VERSIONS as usize,
                    &mut out,
                )
                .expect("range");
            assert_eq!(out.len(), SIDX_VERSIONS as usize);
            out.len()
        });
    });
    g.finish();
    ids_bench(c, &fs, &hasher, count, id_of);
}

/// The event-id index of a 1,000,000-event table: `ids/lookup_miss` (a new
/// id: one blocked-bloom probe, the common case of every append) and
/// `ids/lookup_hit` (a stored id: the probe and one block).
fn ids_bench(
    c: &mut Criterion,
    fs: &MemFs,
    hasher: &StreamHasher,
    count: u64,
    id_of: impl Fn(u64) -> EventId,
) {
    let mut g = c.benchmark_group("ids");
    let t = IdTable::open(fs, Path::new("/index"), 1).expect("open ids");
    g.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            n += 1;
            let id = EventId::from_u128(u128::from(n) << 32 | 0xabcd);
            t.get(hasher.hash_id(&id), &id).expect("lookup")
        });
    });
    let mut p = 0u64;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            p = (p + 7919) % count;
            let id = id_of(p);
            let got = t.get(hasher.hash_id(&id), &id).expect("lookup");
            assert_eq!(got, Some(p));
            got
        });
    });
    g.finish();
}

/// 1000 recorded events as a reader would get them from the log.
fn recorded_events(n: usize) -> Vec<RecordedEvent> {
    let bytes = Bytes::from(encoded_record(n));
    let r = Record::parse(bytes).expect("parse");
    let mut evs: Vec<RecordedEvent> = r.events().collect::<Result<_, _>>().expect("events");
    // Positions as in a global read: increasing.
    for (i, e) in evs.iter_mut().enumerate() {
        e.position = LogPosition(5_000_000 + i as u64);
    }
    evs
}

fn protocol_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("protocol");
    let events = recorded_events(1000);
    let msg = Response::ReadAllOk(ReadAllOk {
        events: events.clone(),
        head: LogPosition(9_000_000),
        next: Some(LogPosition(5_001_000)),
    });
    let mut dst = BytesMut::with_capacity(1 << 20);
    msg.encode(&mut dst, 7, DEFAULT_MAX_FRAME_BYTES)
        .expect("encode");
    let encoded = dst.split().freeze();
    g.throughput(Throughput::Elements(1000));

    g.bench_function("encode_read_all_ok_1000", |b| {
        b.iter(|| {
            dst.clear();
            msg.encode(&mut dst, 7, DEFAULT_MAX_FRAME_BYTES)
                .expect("encode");
            dst.len()
        });
    });
    g.bench_function("encode_push_events_1000", |b| {
        b.iter(|| {
            dst.clear();
            Push::encode_events(&mut dst, 3, &events, Some(0), DEFAULT_MAX_FRAME_BYTES)
                .expect("encode");
            dst.len()
        });
    });
    g.bench_function("decode_frame_1000", |b| {
        b.iter_batched(
            || BytesMut::from(&encoded[..]),
            |mut src| {
                decode_frame(&mut src, DEFAULT_MAX_FRAME_BYTES)
                    .expect("frame")
                    .expect("whole frame")
            },
            BatchSize::SmallInput,
        );
    });
    let frame = decode_frame(&mut BytesMut::from(&encoded[..]), DEFAULT_MAX_FRAME_BYTES)
        .expect("frame")
        .expect("whole frame");
    g.bench_function("decode_read_all_ok_1000", |b| {
        b.iter(
            || match ServerMessage::decode(black_box(&frame)).expect("decode") {
                ServerMessage::Response(Response::ReadAllOk(m)) => {
                    assert_eq!(m.events.len(), 1000);
                    m
                }
                other => panic!("unexpected message {other:?}"),
            },
        );
    });
    g.finish();
}

criterion_group!(benches, record_group, sidx_group, protocol_group);
criterion_main!(benches);
