//! Power cuts and disk errors at every write and sync of an index merge
//! (tables, their id files and names, the MANIFEST): after a restart the
//! store is in the before or the after state, every stream reads back
//! whole, the catalog lists every stream, event ids are still known, and
//! `verify` passes.

mod common;

use std::sync::Arc;

use common::*;
use logbook_protocol::{Direction, ExpectedVersion, StreamVersion};
use logbook_storage::config::Gate;
use logbook_storage::fs::{CrashMode, Fault, MemFs};
use logbook_storage::{Store, StoreConfig, verify};

const STREAMS: u64 = 40;

fn cfg(fs: &MemFs, gate: Option<Arc<Gate>>) -> StoreConfig {
    let mut c = StoreConfig {
        index_flush_entries: 64,
        ..tiny_mem(fs)
    };
    c.testing.merge_gate = gate;
    c
}

/// Every stream's events (versions and ids), and the catalog's names.
fn contents(store: &Store) -> (Vec<Vec<(u64, u128)>>, Vec<String>) {
    let streams = (0..STREAMS)
        .map(|s| {
            store
                .read_stream(&format!("s{s}"), None, Direction::Forward, 10_000)
                .unwrap()
                .events
                .iter()
                .map(|e| (e.version.0, u128::from_be_bytes(e.id.0)))
                .collect()
        })
        .collect();
    let names = store
        .list_streams("", None, 10_000, usize::MAX)
        .unwrap()
        .streams
        .into_iter()
        .map(|i| i.stream)
        .collect();
    (streams, names)
}

/// How many merges `tables` level-0 tables take (the flusher's rule: the
/// oldest run of 4 consecutive tables of one level, until there is none).
fn merges_of(tables: u64) -> u64 {
    let mut levels = vec![0u32; tables as usize];
    let mut merges = 0;
    while let Some(at) = levels.windows(4).position(|w| w.iter().all(|l| *l == w[0])) {
        let l = levels[at];
        levels.splice(at..at + 4, [l + 1]);
        merges += 1;
    }
    merges
}

#[test]
fn a_crash_at_every_step_of_an_index_merge_loses_nothing() {
    // A store whose index holds a run of level-0 tables a merge is waiting
    // for (the gate keeps it from running while they are written).
    let base = MemFs::new();
    let expected = {
        let gate = Gate::closed();
        let store = Store::open(cfg(&base, Some(Arc::clone(&gate)))).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut id = 0;
        for round in 0..8u64 {
            for s in 0..STREAMS {
                let n = 1 + (s + round) % 3;
                rt.block_on(store.append(
                    &name(&format!("s{s}")),
                    ExpectedVersion::Any,
                    evs(id, n),
                ))
                .unwrap();
                id += n;
            }
        }
        let stats = wait_until(&store, "tables", |s| s.memtable_entries < 64);
        assert!(stats.index_tables >= 4, "{stats:?}");
        let got = contents(&store);
        store.close().unwrap();
        got
    };
    assert_eq!(expected.1.len() as u64, STREAMS);
    // How many writes and syncs the merges make.
    let (writes, syncs, merges) = {
        let fs = base.crash(CrashMode::DropUnsynced);
        let gate = Gate::closed();
        let store = Store::open(cfg(&fs, Some(Arc::clone(&gate)))).unwrap();
        gate.wait_until_blocked();
        let merges = merges_of(store.stats().index_tables);
        let (w0, s0) = fs.counts();
        gate.open();
        let stats = wait_until(&store, "merges", |s| s.index_merges >= merges);
        let (w1, s1) = fs.counts();
        assert_eq!(stats.index_failures, 0);
        assert_eq!(contents(&store), expected);
        store.close().unwrap();
        (w1 - w0, s1 - s0, merges)
    };
    assert!(merges >= 2, "{merges} merges");
    assert!(writes > 3 && syncs > 3, "{writes} writes, {syncs} syncs");
    let mut cases = 0;
    for (n, on_sync) in (0..writes)
        .map(|n| (n, false))
        .chain((0..syncs).map(|n| (n, true)))
    {
        let fs = base.crash(CrashMode::DropUnsynced);
        let gate = Gate::closed();
        let store = Store::open(cfg(&fs, Some(Arc::clone(&gate)))).unwrap();
        gate.wait_until_blocked();
        if on_sync {
            fs.fail_syncs_after(n, Fault::Eio);
        } else {
            fs.fail_writes_after(n, Fault::NoSpace);
        }
        gate.open();
        // The merge ends, done or failed (it is retried after a backoff
        // until the faults clear, which they do not here).
        wait_until(&store, "the merges to end", |s| {
            s.index_failures > 0 || s.index_merges >= merges
        });
        let image = fs.crash(CrashMode::TornUnsynced { seed: n });
        store.abandon();
        fs.clear_faults();
        let v = verify(&cfg(&image, None), |_| {}).unwrap();
        assert!(
            v.problems.is_empty(),
            "case {n} {on_sync}: {:?}",
            v.problems
        );
        let store = Store::open(cfg(&image, None)).unwrap();
        assert_eq!(contents(&store), expected, "case {n} {on_sync}");
        // Every id is still known: a resend of an old batch is recognised.
        let again = store
            .append_blocking(&name("s0"), ExpectedVersion::Any, evs(0, 1))
            .unwrap();
        assert_eq!(again.first_version, StreamVersion(0), "case {n} {on_sync}");
        store.close().unwrap();
        let v = verify(&cfg(&image, None), |_| {}).unwrap();
        assert!(
            v.problems.is_empty(),
            "case {n} {on_sync} after: {:?}",
            v.problems
        );
        cases += 1;
    }
    assert!(cases > 6);
}
