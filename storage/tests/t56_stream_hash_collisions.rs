//! Expected-version checks hold when every stream name hashes to the same
//! value (a test-only degenerate hash) and the head cache holds two
//! streams: pipelined appends to many streams keep versions contiguous per
//! stream, with no duplicate and no false conflict, through flushes,
//! merges, roll-overs and a restart; `verify` checks the same across the
//! log. Regression test for a head cache keyed by the bare hash (colliding
//! names overwrote each other) whose rotation could drop the heads of
//! groups still being synced.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use logbook_protocol::{Direction, ExpectedVersion, StreamVersion};
use logbook_storage::{AppendError, Store, StoreConfig, TestKnobs};

const STREAMS: u64 = 60;
const TASKS: u64 = 6;
const ROUNDS: u64 = 25;

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        head_cache_streams: 2,
        sync_lanes: 2,
        testing: TestKnobs {
            degenerate_stream_hash: Some(0xC011_1DE5),
            ..TestKnobs::default()
        },
        ..tiny(dir)
    }
}

fn stream(task: u64, i: u64) -> String {
    format!("s-{task}-{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn colliding_streams_keep_exact_versions_under_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(dir.path())).unwrap());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            // Each task owns STREAMS / TASKS streams and appends to them
            // with exact expected versions, many appends queued before the
            // first answer: groups hold several appends to one stream, and
            // every stream is written by groups still in flight.
            let mine = STREAMS / TASKS;
            let mut versions: Vec<Option<u64>> = vec![None; mine as usize];
            let mut n = t * 1_000_000;
            for round in 0..ROUNDS {
                let mut pending = Vec::new();
                for i in 0..mine {
                    for _ in 0..=(round % 3) {
                        let slot = &mut versions[i as usize];
                        let expected = match *slot {
                            None => ExpectedVersion::NoStream,
                            Some(v) => ExpectedVersion::Exact(StreamVersion(v)),
                        };
                        let k = 1 + n % 2;
                        *slot = Some(slot.map_or(k - 1, |v| v + k));
                        let p = store
                            .submit(&name(&stream(t, i)), expected, evs(n, k))
                            .await
                            .unwrap();
                        pending.push((i, expected, p));
                        n += k;
                    }
                }
                for (i, expected, p) in pending {
                    match p.await {
                        Ok(r) => {
                            let want = match expected {
                                ExpectedVersion::NoStream => 0,
                                ExpectedVersion::Exact(v) => v.0 + 1,
                                _ => unreachable!(),
                            };
                            assert_eq!(r.first_version.0, want, "stream {}", stream(t, i));
                        }
                        Err(AppendError::WrongExpectedVersion {
                            stream,
                            expected,
                            actual,
                        }) => {
                            panic!(
                                "false conflict on {stream}: expected {expected}, actual {actual:?}"
                            )
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            versions
        }));
    }
    // A task appending with Any to the same colliding streams' neighbours:
    // no duplicate versions either.
    let any = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut pending = Vec::new();
            for n in 0..600u64 {
                let p = store
                    .submit(
                        &name(&format!("any-{}", n % 7)),
                        ExpectedVersion::Any,
                        evs(9_000_000 + n, 1),
                    )
                    .await
                    .unwrap();
                pending.push(p);
            }
            for p in pending {
                p.await.unwrap();
            }
        })
    };
    let mut expected_last: HashMap<String, u64> = HashMap::new();
    for (t, task) in tasks.into_iter().enumerate() {
        for (i, v) in task.await.unwrap().into_iter().enumerate() {
            expected_last.insert(stream(t as u64, i as u64), v.unwrap());
        }
    }
    any.await.unwrap();
    let check = |store: &Store| {
        for (s, last) in &expected_last {
            let slice = store
                .read_stream(s, None, Direction::Forward, 100_000)
                .unwrap();
            let versions: Vec<u64> = slice.events.iter().map(|e| e.version.0).collect();
            assert_eq!(versions, (0..=*last).collect::<Vec<_>>(), "{s}");
            assert!(slice.events.iter().all(|e| e.stream.as_str() == s), "{s}");
        }
        let mut any_total = 0;
        for k in 0..7 {
            let slice = store
                .read_stream(&format!("any-{k}"), None, Direction::Forward, 100_000)
                .unwrap();
            let versions: Vec<u64> = slice.events.iter().map(|e| e.version.0).collect();
            assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
            any_total += versions.len();
        }
        assert_eq!(any_total, 600);
    };
    check(&store);
    store.close().unwrap();
    drop(store);
    let report = logbook_storage::verify(&config(dir.path()), |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    let store = Store::open(config(dir.path())).unwrap();
    check(&store);
    store.close().unwrap();
}

/// `verify` reports a stream whose versions skip one, with file and offset
/// (a log written by hand: the engine never writes one).
#[test]
fn verify_reports_a_gap_in_a_streams_versions() {
    use logbook_storage::fs::{MemFs, OpenMode, Vfs};
    use logbook_storage::internals::{encode_record, encode_segment_header, record_crc_seed};
    let fs = MemFs::new();
    let dir = std::path::Path::new("/data/log");
    fs.create_dir_all(dir).unwrap();
    let nonce = 0xabcd;
    let seed = record_crc_seed(Some(nonce));
    let mut bytes = encode_segment_header(0, nonce).to_vec();
    let second = {
        encode_record(&mut bytes, seed, "acct", 0, 0, 1, &evs(0, 2));
        let at = bytes.len();
        // Versions 0-1, then 3: version 2 is missing.
        encode_record(&mut bytes, seed, "acct", 2, 3, 2, &evs(2, 1));
        at
    };
    let path = dir.join(logbook_protocol::layout::segment_file(0));
    let f = fs.open(&path, OpenMode::CreateNew).unwrap();
    f.write_all_at(&bytes, 0).unwrap();
    f.sync_data().unwrap();
    let report = logbook_storage::verify(&tiny_mem(&fs), |_| {}).unwrap();
    let gap = report
        .problems
        .iter()
        .find(|p| p.what.contains("continues at version 3, expected 2"))
        .unwrap_or_else(|| panic!("gap not reported: {:?}", report.problems));
    assert_eq!(
        (gap.file.as_path(), gap.offset),
        (path.as_path(), second as u64)
    );
}
