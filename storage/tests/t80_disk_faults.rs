//! Disk faults: a failed write or fdatasync (EIO) and a full disk (ENOSPC).
//! The appends of that group fail with a clear error, nothing acknowledged
//! is lost, nothing from the failed write is served, and the store refuses
//! writes until it is restarted (what reached the disk is unknown).

mod common;

use common::*;
use logbook_protocol::{Direction, ExpectedVersion};
use logbook_storage::fs::{CrashMode, Fault, MemFs};
use logbook_storage::{AppendError, StorageError, Store};

fn fails_and_stays_failed(fault_on_sync: bool, fault: Fault) {
    let fs = MemFs::new();
    let store = Store::open(tiny_mem(&fs)).unwrap();
    for i in 0..10u64 {
        store
            .append_blocking(&name("a"), ExpectedVersion::Any, evs(i, 1))
            .unwrap();
    }
    if fault_on_sync {
        fs.fail_syncs_after(0, fault);
    } else {
        fs.fail_writes_after(0, fault);
    }
    let err = store
        .append_blocking(&name("a"), ExpectedVersion::Any, evs(10, 1))
        .unwrap_err();
    assert!(
        matches!(err, AppendError::Storage(StorageError::WriterFailed { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("until restart"), "{msg}");
    assert!(store.writer_failure().is_some());
    // Even once the disk recovers, writes stay refused until restart.
    fs.clear_faults();
    let err = store
        .append_blocking(&name("b"), ExpectedVersion::Any, evs(11, 1))
        .unwrap_err();
    assert!(matches!(
        err,
        AppendError::Storage(StorageError::WriterFailed { .. })
    ));
    // Reads go on, and never show the failed batch.
    let all = store.read_all(None, Direction::Forward, 100).unwrap();
    assert_eq!(all.events.len(), 10);
    assert_eq!(
        store
            .read_stream("a", None, Direction::Forward, 100)
            .unwrap()
            .events
            .len(),
        10
    );
    // A power cut now: the ten acknowledged events are there, the failed
    // one is not (it was never synced).
    let crashed = fs.crash(CrashMode::DropUnsynced);
    drop(store);
    let store = Store::open(tiny_mem(&crashed)).unwrap();
    assert_eq!(store.head().0, 10);
    store
        .append_blocking(&name("a"), ExpectedVersion::Any, evs(12, 1))
        .unwrap();
}

#[test]
fn fsync_eio() {
    fails_and_stays_failed(true, Fault::Eio);
}

#[test]
fn write_eio() {
    fails_and_stays_failed(false, Fault::Eio);
}

#[test]
fn disk_full() {
    fails_and_stays_failed(false, Fault::NoSpace);
}

/// Faults at every write and sync index during a run that rolls segments:
/// acknowledged events always survive a crash right after the fault.
#[test]
fn fault_at_every_step() {
    for step in 0..60u64 {
        for on_sync in [false, true] {
            let fs = MemFs::new();
            let store = Store::open(tiny_mem(&fs)).unwrap();
            if on_sync {
                fs.fail_syncs_after(step, Fault::Eio);
            } else {
                fs.fail_writes_after(step, Fault::NoSpace);
            }
            let mut acked = 0u64;
            for i in 0..40u64 {
                match store.append_blocking(
                    &name(&format!("s-{}", i % 3)),
                    ExpectedVersion::Any,
                    evs(acked, 2),
                ) {
                    Ok(r) => {
                        assert_eq!(r.first_position.0, acked);
                        acked += 2;
                    }
                    Err(AppendError::Storage(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            let crashed = fs.crash(CrashMode::DropUnsynced);
            drop(store);
            let store = Store::open(tiny_mem(&crashed)).unwrap();
            assert_eq!(store.head().0, acked, "step {step} sync {on_sync}");
            assert_eq!(
                store
                    .read_all(None, Direction::Forward, 1000)
                    .unwrap()
                    .events
                    .len() as u64,
                acked
            );
        }
    }
}

/// A failed writeback is reported once per open file description, to the
/// first fdatasync on it that checks. Two sync lanes syncing through one
/// description could then see the error on one lane (failing the newer
/// group) while the other lane's fdatasync succeeds and acknowledges an
/// older group whose pages never reached the disk. Here the failing
/// writeback waits for another sync on its description and hands it the
/// error, as a concurrent fdatasync would take it: with a description per
/// lane there is no such other sync, so the failing lane reports it itself.
/// Whatever the step, every acknowledged append survives a power cut.
#[test]
fn a_writeback_error_seen_by_another_lane_fails_every_group_it_covers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    for step in [3u64, 8, 17, 30] {
        let fs = MemFs::new();
        let config = logbook_storage::StoreConfig {
            sync_lanes: 2,
            // Every sync is a segment's: no roll-over, no index flush.
            segment_bytes: 1 << 20,
            index_flush_entries: 1 << 20,
            ..tiny_mem(&fs)
        };
        let store = Arc::new(Store::open(config.clone()).unwrap());
        fs.fail_writeback_after(step, std::time::Duration::from_millis(300));
        let next = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (store, next) = (Arc::clone(&store), Arc::clone(&next));
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= 400 {
                            return acked;
                        }
                        match store.append_blocking(
                            &name(&format!("w{w}")),
                            ExpectedVersion::Any,
                            evs(n, 1),
                        ) {
                            Ok(r) => acked.push((n, r.first_position.0)),
                            Err(AppendError::Storage(StorageError::WriterFailed { .. })) => {
                                return acked;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        let acked: Vec<(u64, u64)> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        assert!(
            store.writer_failure().is_some(),
            "step {step}: the fault fired"
        );
        let crashed = fs.crash(CrashMode::DropUnsynced);
        drop(store);
        let store = Store::open(logbook_storage::StoreConfig {
            vfs: Arc::new(crashed),
            ..config
        })
        .unwrap();
        for (n, position) in &acked {
            let got = store
                .read_all(
                    Some(logbook_protocol::LogPosition(*position)),
                    Direction::Forward,
                    1,
                )
                .unwrap();
            let e = got.events.first().unwrap_or_else(|| {
                panic!("step {step}: acknowledged event {n} at {position} is lost")
            });
            assert_eq!(e.id, ev(*n).id, "step {step}: position {position}");
        }
    }
}

/// After a failed writeback the lost pages stay in the page cache. A
/// restart without a power cut (the process restarted, the machine did
/// not) must not read them back as records: the disk does not hold them,
/// and they would vanish at the next power cut after being served.
#[test]
fn a_restart_after_a_failed_writeback_reads_the_disk_not_the_cache() {
    let fs = MemFs::new();
    let store = Store::open(tiny_mem(&fs)).unwrap();
    for i in 0..5u64 {
        store
            .append_blocking(&name("a"), ExpectedVersion::Any, evs(i, 1))
            .unwrap();
    }
    fs.fail_writeback_after(0, std::time::Duration::ZERO);
    let err = store
        .append_blocking(&name("a"), ExpectedVersion::Any, evs(5, 3))
        .unwrap_err();
    assert!(
        matches!(err, AppendError::Storage(StorageError::WriterFailed { .. })),
        "{err}"
    );
    store.abandon();
    drop(store);
    // The same file system: the cache still holds the failed batch.
    let store = Store::open(tiny_mem(&fs)).unwrap();
    assert_eq!(
        store.head().0,
        5,
        "the failed batch is not adopted from the cache"
    );
    let events = store
        .read_all(None, Direction::Forward, 100)
        .unwrap()
        .events;
    assert_eq!(events.len(), 5);
    store.close().unwrap();
    drop(store);
    let store = Store::open(tiny_mem(&fs.crash(CrashMode::DropUnsynced))).unwrap();
    assert_eq!(
        store.head().0,
        5,
        "what the restart served survives a power cut"
    );
}
