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
