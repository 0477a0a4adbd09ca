//! Stream reads racing appends to the same stream: every answer is checked
//! against what was acknowledged before the read started. Regression test
//! for reads that copied the active memtable's newest entries, dropped the
//! ones past the durable head, and never looked at the ones before (a
//! backward read of one event then answered "no such stream", an empty
//! page or an older last version).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use logbook_protocol::{Direction, ExpectedVersion, StreamVersion};
use logbook_storage::{StorageError, Store, StoreConfig};

/// Acknowledged versions + 1 (0: nothing acknowledged yet).
struct Acked(AtomicU64);

impl Acked {
    fn count(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

fn check_read(store: &Store, acked: &Acked, size: usize, direction: Direction, from: Option<u64>) {
    let before = acked.count();
    let slice = match store.read_stream("hot", from.map(StreamVersion), direction, size) {
        Ok(s) => s,
        Err(e) => panic!("read failed: {e}"),
    };
    if before == 0 {
        return;
    }
    let last = slice
        .last_version
        .unwrap_or_else(|| panic!("no last version after {before} acknowledged events"))
        .0;
    assert!(
        last + 1 >= before,
        "last version {last} went back below {before}"
    );
    let versions: Vec<u64> = slice.events.iter().map(|e| e.version.0).collect();
    match direction {
        Direction::Forward => {
            let from = from.unwrap_or(0);
            // Every event from `from` up to what was acknowledged is there,
            // in order, up to the page size.
            let want = (before.saturating_sub(from) as usize).min(size);
            assert!(
                versions.len() >= want,
                "forward page of {size} from {from} is short: {versions:?} with {before} acknowledged"
            );
            for (i, v) in versions.iter().enumerate() {
                assert_eq!(*v, from + i as u64, "forward page not contiguous");
            }
            match slice.next {
                Some(n) => assert_eq!(
                    (n, versions.len()),
                    (StreamVersion(from + size as u64), size),
                    "a forward page with a next page is full and ends before it"
                ),
                None => assert!(versions.len() <= size),
            }
        }
        Direction::Backward => {
            let top = match from {
                Some(f) => f.min(last),
                None => last,
            };
            if from.is_none() {
                assert!(
                    versions.first().is_some_and(|v| v + 1 >= before),
                    "backward read from the end missed acknowledged events: {versions:?}, {before} acknowledged"
                );
            }
            let want = (top as usize + 1).min(size);
            assert_eq!(
                versions.len(),
                want,
                "backward page of {size} is short: {versions:?}"
            );
            for (i, v) in versions.iter().enumerate() {
                assert_eq!(*v, top - i as u64, "backward page not contiguous");
            }
            let lowest = top + 1 - want as u64;
            let expect_next = (lowest > 0).then(|| StreamVersion(lowest - 1));
            assert_eq!(slice.next, expect_next, "backward page's next");
        }
    }
}

fn hammer(config: StoreConfig) {
    let store = Arc::new(Store::open(config).unwrap());
    let acked = Arc::new(Acked(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    const EVENTS: u64 = 3_000;
    let writer = {
        let (store, acked) = (Arc::clone(&store), Arc::clone(&acked));
        std::thread::spawn(move || {
            let stream = name("hot");
            let other = name("other");
            let mut n = 0;
            while n < EVENTS {
                // Batches of 1-3 events, so records hold several versions,
                // and appends to another stream in between.
                let k = 1 + n % 3;
                let expected = match n {
                    0 => ExpectedVersion::NoStream,
                    _ => ExpectedVersion::Exact(StreamVersion(n - 1)),
                };
                store
                    .append_blocking(&stream, expected, evs(n * 10, k))
                    .unwrap();
                n += k;
                acked.0.store(n, Ordering::Release);
                store
                    .append_blocking(&other, ExpectedVersion::Any, evs(n * 10 + 5, 1))
                    .unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (store, acked, stop) = (Arc::clone(&store), Arc::clone(&acked), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 0usize;
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let size = 1 + (i * 7 + r) % 6;
                    match i % 4 {
                        0 => check_read(&store, &acked, size, Direction::Backward, None),
                        1 => {
                            let from = acked.count().saturating_sub(1 + (i % 5) as u64);
                            check_read(&store, &acked, size, Direction::Backward, Some(from))
                        }
                        2 => {
                            let from = acked.count().saturating_sub((i % 4) as u64);
                            check_read(&store, &acked, size, Direction::Forward, Some(from))
                        }
                        _ => check_read(&store, &acked, size, Direction::Forward, None),
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    match store.close() {
        Ok(()) | Err(StorageError::ShuttingDown) => {}
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn stream_reads_never_miss_acknowledged_events_while_appends_run() {
    let dir = tempfile::tempdir().unwrap();
    // Big memtables: the race is in the active memtable.
    hammer(StoreConfig {
        index_flush_entries: 1 << 20,
        ..tiny_fast(dir.path())
    });
}

#[test]
fn stream_reads_never_miss_acknowledged_events_across_flushes() {
    let dir = tempfile::tempdir().unwrap();
    // Tiny memtables and segments: reads cross frozen memtables and tables
    // while they are flushed and merged.
    hammer(tiny_fast(dir.path()));
}
