//! A flipped byte inside a completed record is detected and reported with
//! file and offset, never served; reads that do not touch it keep working.

mod common;

use std::path::Path;

use common::*;
use logbook_protocol::{Direction, ExpectedVersion};
use logbook_storage::fs::{CrashMode, MemFs, Vfs};
use logbook_storage::{ReadError, StorageError, Store};

#[test]
fn flipped_byte_in_a_sealed_segment_is_reported_not_served() {
    let fs = MemFs::new();
    let store = Store::open(tiny_mem(&fs)).unwrap();
    for i in 0..60u64 {
        store
            .append_blocking(
                &name(&format!("s-{}", i % 3)),
                ExpectedVersion::Any,
                evs(i, 1),
            )
            .unwrap();
    }
    store.close().unwrap();
    drop(store);
    let dir = Path::new("/data/log");
    let first = dir.join(fs.list_dir(dir).unwrap().remove(0));
    let bytes = fs.read_file(&first).unwrap();
    // Flip a byte in the data of the second record of the first segment.
    let len0 = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
    let second = 32 + len0;
    for (at, bit) in [
        (second + 60, 0x01u8),
        (second + 4, 0x80),
        (second + 38, 0x02),
    ] {
        let copy = fs.crash(CrashMode::DropUnsynced);
        let mut bad = bytes.clone();
        bad[at] ^= bit;
        copy.write_file(&first, bad);
        // Sealed segments are not rescanned at start-up: open succeeds.
        let store = Store::open(tiny_mem(&copy)).unwrap();
        let err = store.read_all(None, Direction::Forward, 1000).unwrap_err();
        let ReadError::Storage(e) = err else {
            panic!("{err:?}")
        };
        assert!(e.is_corruption(), "{e}");
        match &e {
            StorageError::ChecksumMismatch { file, offset, .. }
            | StorageError::Corrupt { file, offset, .. } => {
                assert_eq!(file, &first);
                assert_eq!(*offset, second as u64);
            }
            other => panic!("{other}"),
        }
        // Position 0 (the first record) is still readable...
        let ok = store.read_all(None, Direction::Forward, 1).unwrap();
        assert_eq!(ok.events.len(), 1);
        // ...and so is every later segment. (Within the damaged segment,
        // positions after the damage up to the next sparse-index entry are
        // found by scanning past it, and report it too.)
        let tail = store
            .read_all(
                Some(logbook_protocol::LogPosition(55)),
                Direction::Forward,
                1000,
            )
            .unwrap();
        assert_eq!(tail.events.len(), 5);
        let back = store.read_all(None, Direction::Backward, 5).unwrap();
        assert_eq!(back.events.len(), 5);
        // A stream read that needs the damaged event fails the same way;
        // the second record holds event 1, of stream s-1.
        assert!(
            store
                .read_stream("s-1", None, Direction::Forward, 100)
                .is_err()
        );
        assert_eq!(
            store
                .read_stream("s-0", None, Direction::Forward, 100)
                .unwrap()
                .events
                .len(),
            20
        );
        store.close().unwrap();
        drop(store);
        let report = logbook_storage::verify(&tiny_mem(&copy), |_| {}).unwrap();
        assert!(!report.is_ok());
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.file == first && p.offset == second as u64),
            "{:?}",
            report.problems
        );
    }
}

#[test]
fn damaged_index_table_is_rebuilt_from_the_log() {
    let fs = MemFs::new();
    let store = Store::open(tiny_mem(&fs)).unwrap();
    for i in 0..100u64 {
        store
            .append_blocking(
                &name(&format!("s-{}", i % 5)),
                ExpectedVersion::Any,
                evs(i, 1),
            )
            .unwrap();
    }
    store.close().unwrap();
    drop(store);
    let idx = Path::new("/data/index");
    let tables: Vec<_> = fs
        .list_dir(idx)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".sidx"))
        .collect();
    assert!(!tables.is_empty());
    // Damage a table's footer: the index is derived data, so it is rebuilt.
    let victim = idx.join(&tables[0]);
    let mut b = fs.read_file(&victim).unwrap();
    let n = b.len();
    b[n - 20] ^= 0xff;
    let copy = fs.crash(CrashMode::DropUnsynced);
    copy.write_file(&victim, b);
    let store = Store::open(tiny_mem(&copy)).unwrap();
    assert!(store.recovery_report().index_rebuilt.is_some());
    assert_eq!(store.recovery_report().replayed_events, 100);
    for s in 0..5 {
        assert_eq!(
            store
                .read_stream(&format!("s-{s}"), None, Direction::Forward, 100)
                .unwrap()
                .events
                .len(),
            20
        );
    }
    // Deleting the whole index directory's files works the same way.
    store.close().unwrap();
    drop(store);
    for n in copy.list_dir(idx).unwrap() {
        copy.remove_file(&idx.join(n)).unwrap();
    }
    let store = Store::open(tiny_mem(&copy)).unwrap();
    assert_eq!(store.recovery_report().replayed_events, 100);
    assert_eq!(
        store
            .read_stream("s-3", None, Direction::Backward, 5)
            .unwrap()
            .events[0]
            .version
            .0,
        19
    );
}

/// A request whose checks meet damage (here the stored record an id names
/// fails its checksum) is refused alone when it is an ordinary append. At
/// a caller's time (`append_at`: a replicated log, whose replicas must
/// decide every request alike) it stops the writer instead: the requests
/// after it cannot be decided as the other replicas decide them (this one
/// may have been written there), so they are refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_met_by_a_replicated_append_stops_the_writer() {
    let fs = MemFs::new();
    let store = Store::open(tiny_mem(&fs)).unwrap();
    for i in 0..60u64 {
        store
            .append(
                &name(&format!("s-{}", i % 3)),
                ExpectedVersion::Any,
                evs(i, 1),
            )
            .await
            .unwrap();
    }
    store.close().unwrap();
    drop(store);
    let dir = Path::new("/data/log");
    let first = dir.join(fs.list_dir(dir).unwrap().remove(0));
    let mut bytes = fs.read_file(&first).unwrap();
    let len0 = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
    // The data of the second record (position 1, event 1 of `s-1`).
    bytes[32 + len0 + 60] ^= 0x01;
    let at = 1_900_000_000_000_000;
    for replicated in [false, true] {
        let copy = fs.crash(CrashMode::DropUnsynced);
        copy.write_file(&first, bytes.clone());
        let store = Store::open(tiny_mem(&copy)).unwrap();
        // Event 1's id again: its record must be read to tell a resend.
        let met = if replicated {
            store
                .append_at(&name("s-1"), ExpectedVersion::Any, evs(1, 1), at)
                .await
        } else {
            store
                .append(&name("s-1"), ExpectedVersion::Any, evs(1, 1))
                .await
        };
        let Err(logbook_storage::AppendError::Storage(e)) = met else {
            panic!("{met:?}")
        };
        let next = if replicated {
            store
                .append_at(&name("s-9"), ExpectedVersion::Any, evs(100, 1), at + 1)
                .await
        } else {
            store
                .append(&name("s-9"), ExpectedVersion::Any, evs(100, 1))
                .await
        };
        if replicated {
            assert!(
                matches!(e, StorageError::WriterFailed { .. }),
                "the damage stops the writer: {e}"
            );
            assert!(
                matches!(next, Err(logbook_storage::AppendError::Storage(_))),
                "a later replicated append was decided without the damaged one: {next:?}"
            );
            assert_eq!(store.head().0, 60, "nothing was written after the damage");
        } else {
            assert!(e.is_corruption(), "{e}");
            assert_eq!(
                next.unwrap().first_position.0,
                60,
                "the next append goes on"
            );
        }
    }
}
