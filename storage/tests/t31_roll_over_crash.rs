//! A power cut at every sync of concurrent appends that roll over segments
//! (the seal of each full segment included): whatever the disk kept of the
//! unsynced writes (torn, reordered), the store opens, every acknowledged
//! batch reads back, and `verify` is clean.
//!
//! A seal must never be on disk without the records it covers: the writer
//! used to write the footer right after the last records and sync both at
//! once, so a power cut could keep the footer and lose records of groups
//! still being synced by the lanes; the segment then passed for whole and
//! its readers failed with "zero length (end of data)" (the rare failure of
//! `t70_crash_concurrent`, which this test reproduced in 3 runs of 4).

mod common;

use common::*;
use logbook_protocol::{Direction, ExpectedVersion};
use logbook_storage::fs::{CrashMode, Fault, MemFs};
use logbook_storage::{Store, StoreConfig};

fn cfg(fs: &MemFs) -> StoreConfig {
    StoreConfig {
        // One group at a time: each append is synced on its own.
        index_flush_entries: 1 << 20,
        ..tiny_mem(fs)
    }
}

/// Appends from four threads at once (so that a roll-over comes while
/// earlier groups are still being synced) until one fails; returns the
/// acknowledged batches' first positions and sizes.
fn run(store: &Store) -> Vec<(u64, u64)> {
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..20u64 {
                    let n = 1 + (i + t) % 3;
                    let id = (t * 1000 + i) * 4;
                    match store.append_blocking(
                        &name(&format!("s{t}")),
                        ExpectedVersion::Any,
                        evs(id, n),
                    ) {
                        Ok(r) => acked.push((r.first_position.0, n)),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

#[test]
fn a_power_cut_at_every_sync_of_roll_overs_loses_nothing_acknowledged() {
    let syncs = {
        let fs = MemFs::new();
        let store = Store::open(cfg(&fs)).unwrap();
        let (_, s0) = fs.counts();
        let acked = run(&store);
        assert_eq!(acked.len(), 80);
        assert!(store.stats().segments >= 4, "{:?}", store.stats());
        let (_, s1) = fs.counts();
        store.abandon();
        s1 - s0
    };
    for n in 0..syncs {
        let fs = MemFs::new();
        let store = Store::open(cfg(&fs)).unwrap();
        fs.fail_syncs_after(n, Fault::Eio);
        let acked = run(&store);
        for seed in 0..4 {
            let image = fs.crash(CrashMode::TornUnsynced {
                seed: n * 100 + seed,
            });
            let reopened =
                Store::open(cfg(&image)).unwrap_or_else(|e| panic!("sync {n}, seed {seed}: {e}"));
            let all = reopened
                .read_all(None, Direction::Forward, 1_000_000)
                .unwrap_or_else(|e| panic!("sync {n}, seed {seed}: {e}"))
                .events;
            for &(first, count) in &acked {
                for p in first..first + count {
                    assert!(
                        all.get(p as usize).is_some_and(|e| e.position.0 == p),
                        "sync {n}, seed {seed}: acknowledged position {p} lost"
                    );
                }
            }
            reopened.close().unwrap();
            let v = logbook_storage::verify(&cfg(&image), |_| {}).unwrap();
            assert!(v.is_ok(), "sync {n}, seed {seed}: {:?}", v.problems);
        }
        store.abandon();
    }
}
