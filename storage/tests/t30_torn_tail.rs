//! Torn writes: whatever prefix of the last batch reached the disk, the
//! store reopens with exactly the batches before it, and cuts the rest.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use logbook_protocol::{Direction, ExpectedVersion, StreamVersion};
use logbook_storage::fs::{CrashMode, MemFs, OpenMode, Vfs};
use logbook_storage::{RecoveryMode, StorageError, Store, StoreConfig};

fn segments(fs: &dyn Vfs) -> Vec<PathBuf> {
    let dir = Path::new("/data/log");
    fs.list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|n| dir.join(n))
        .collect()
}

/// Offsets of the records in a segment's bytes.
fn record_offsets(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 32;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + len > bytes.len() {
            break;
        }
        out.push((at, at + len));
        at += len;
    }
    out
}

/// Builds a store whose last segment holds several records; returns the fs
/// (closed cleanly), the last segment's path and the expected events.
fn build() -> (MemFs, PathBuf, u64) {
    let fs = MemFs::new();
    let store = Store::open(tiny_mem(&fs)).unwrap();
    let mut n = 0;
    for i in 0..90u64 {
        let batch = 1 + i % 3;
        store
            .append_blocking(
                &name(&format!("s-{}", i % 4)),
                ExpectedVersion::Any,
                evs(n, batch),
            )
            .unwrap();
        n += batch;
    }
    store.close().unwrap();
    drop(store);
    let last = segments(&fs).pop().unwrap();
    (fs, last, n)
}

#[test]
fn every_cut_inside_the_last_batch_recovers_to_the_batch_before() {
    let (fs, last, total) = build();
    let bytes = fs.read_file(&last).unwrap();
    let records = record_offsets(&bytes);
    let (start, end) = *records.last().unwrap();
    assert_eq!(
        end,
        bytes.len(),
        "a clean close leaves no preallocated space"
    );
    // Events in the last record.
    let last_count = u16::from_le_bytes(bytes[start + 10..start + 12].try_into().unwrap()) as u64;
    let before = total - last_count;
    for cut in start..end {
        let copy = fs.crash(CrashMode::DropUnsynced);
        copy.write_file(&last, bytes[..cut].to_vec());
        let store = Store::open(tiny_mem(&copy)).unwrap();
        assert_eq!(store.head().0, before, "cut at {cut}");
        let report = store.recovery_report().clone();
        if cut > start {
            let t = report
                .truncated
                .as_ref()
                .expect("the partial record is cut");
            assert_eq!(t.offset, start as u64);
            assert_eq!(t.bytes, (cut - start) as u64);
        }
        // The index had already covered the lost batch: it is rebuilt, and
        // stream reads agree with the log.
        let all = store.read_all(None, Direction::Forward, 10_000).unwrap();
        assert_eq!(all.events.len() as u64, before);
        for s in 0..4 {
            let st = store
                .read_stream(&format!("s-{s}"), None, Direction::Forward, 10_000)
                .unwrap();
            let want: Vec<u64> = all
                .events
                .iter()
                .filter(|e| e.stream.as_str() == format!("s-{s}"))
                .map(|e| e.position.0)
                .collect();
            assert_eq!(
                st.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
                want
            );
        }
        // And the store takes new appends where the cut left it.
        let r = store
            .append_blocking(&name("after"), ExpectedVersion::NoStream, evs(1000, 2))
            .unwrap();
        assert_eq!(r.first_position.0, before);
        store.close().unwrap();
        drop(store);
        let store = Store::open(tiny_mem(&copy)).unwrap();
        assert_eq!(store.head().0, before + 2);
        assert_eq!(store.recovery_report().truncated, None);
    }
}

#[test]
fn torn_tail_on_a_real_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny(dir.path())).unwrap();
    for i in 0..10u64 {
        store
            .append_blocking(&name("a"), ExpectedVersion::Any, evs(i * 2, 2))
            .unwrap();
    }
    store.close().unwrap();
    drop(store);
    let log = dir.path().join("log");
    let mut segs: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    let last = segs.pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let (start, end) = *record_offsets(&bytes).last().unwrap();
    // Keep half of the last record, then garbage after it.
    let mut torn = bytes[..(start + end) / 2].to_vec();
    torn.extend_from_slice(&[0xAB; 100]);
    std::fs::write(&last, &torn).unwrap();
    let store = Store::open(tiny(dir.path())).unwrap();
    assert_eq!(store.head().0, 18);
    assert!(store.recovery_report().truncated.is_some());
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        start as u64,
        "cut at the last good record"
    );
    let s = store
        .read_stream("a", None, Direction::Forward, 100)
        .unwrap();
    assert_eq!(s.last_version, Some(StreamVersion(17)));
}

/// Damage to acknowledged data in the last segment (a damaged record with
/// complete groups after it) is not a torn write: open refuses, naming the
/// file and offset, unless repair is asked for.
#[test]
fn damage_followed_by_complete_groups_is_corruption() {
    let (fs, last, _total) = build();
    let bytes = fs.read_file(&last).unwrap();
    let records = record_offsets(&bytes);
    assert!(records.len() >= 3, "need records after the damaged one");
    let (start, _) = records[0];
    let mut bad = bytes.clone();
    bad[start + 20] ^= 0x40;
    let copy = fs.crash(CrashMode::DropUnsynced);
    copy.write_file(&last, bad);
    match Store::open(tiny_mem(&copy)) {
        Err(StorageError::Corrupt {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, last);
            assert_eq!(offset, start as u64);
            assert!(reason.contains("acknowledged"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    // Offline verify names the same place.
    let report = logbook_storage::verify(&tiny_mem(&copy), |_| {}).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == last && p.offset == start as u64),
        "{:?}",
        report.problems
    );

    // Explicit repair: cut at the damage and go on.
    let repair = StoreConfig {
        recovery: RecoveryMode::TruncateDamagedTail,
        ..tiny_mem(&copy)
    };
    let store = Store::open(repair).unwrap();
    let t = store.recovery_report().truncated.clone().unwrap();
    assert_eq!(t.offset, start as u64);
}

/// A torn group write may persist later pages and lose earlier ones: valid
/// records after a hole, with no complete group after them, are cut.
#[test]
fn hole_inside_the_last_group_is_a_torn_write() {
    let fs = MemFs::new();
    let store = Store::open(tiny_mem(&fs)).unwrap();
    store
        .append_blocking(&name("a"), ExpectedVersion::Any, evs(0, 1))
        .unwrap();
    store.close().unwrap();
    drop(store);
    let last = segments(&fs).pop().unwrap();
    let good = fs.read_file(&last).unwrap();
    // Forge the last group: three records appended in one write (the last
    // flagged as group end), then zero the first one as if its page was lost.
    let copy = fs.crash(CrashMode::DropUnsynced);
    let store = Store::open(tiny_mem(&copy)).unwrap();
    // Three appends queued together land in one group in practice; to be
    // independent of timing, write them and stitch their bytes.
    for i in 1..4 {
        store
            .append_blocking(&name("a"), ExpectedVersion::Any, evs(i, 1))
            .unwrap();
    }
    store.close().unwrap();
    drop(store);
    let grown = copy.read_file(&last).unwrap();
    let recs = record_offsets(&grown);
    let (first_new, _) = recs[recs.len() - 3];
    assert_eq!(first_new, good.len());
    // Clear the group-end flags of all but the last new record, so that the
    // three look like one group, then recompute their checksums.
    let mut forged = grown.clone();
    for &(s, e) in &recs[recs.len() - 3..recs.len() - 1] {
        forged[s + 9] &= !1;
        let crc = crc32c::crc32c(&forged[s + 8..e - 4]);
        forged[s + 4..s + 8].copy_from_slice(&crc.to_le_bytes());
    }
    // Lose the first record of the group.
    let (s, e) = recs[recs.len() - 3];
    forged[s..e].fill(0);
    let crashed = copy.crash(CrashMode::DropUnsynced);
    crashed.write_file(&last, forged);
    let store = Store::open(tiny_mem(&crashed)).unwrap();
    assert_eq!(store.head().0, 1, "the whole torn group is dropped");
    assert_eq!(
        store.recovery_report().truncated.as_ref().unwrap().offset,
        good.len() as u64
    );
}

#[test]
fn a_second_open_of_the_same_directory_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny(dir.path())).unwrap();
    match Store::open(tiny(dir.path())) {
        Err(e @ StorageError::Locked { .. }) => {
            assert!(e.to_string().contains("locked by another process"))
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(store);
    Store::open(tiny(dir.path())).unwrap();
}

#[test]
fn unsealed_segment_before_the_last_is_sealed_on_recovery() {
    let (fs, _, total) = build();
    let segs = segments(&fs);
    assert!(segs.len() >= 3);
    // Strip the footer from a sealed segment, as if the seal had not
    // reached the disk before the next segment was created.
    let victim = &segs[segs.len() - 2];
    let bytes = fs.read_file(victim).unwrap();
    let data_end = u64::from_le_bytes(
        bytes[bytes.len() - 56..bytes.len() - 48]
            .try_into()
            .unwrap(),
    ) as usize;
    let copy = fs.crash(CrashMode::DropUnsynced);
    copy.write_file(victim, bytes[..data_end].to_vec());
    let store = Store::open(tiny_mem(&copy)).unwrap();
    assert_eq!(store.recovery_report().sealed, vec![victim.clone()]);
    assert_eq!(store.head().0, total);
    assert_eq!(
        store
            .read_all(None, Direction::Forward, 10_000)
            .unwrap()
            .events
            .len() as u64,
        total
    );
    let f = copy.open(victim, OpenMode::Read).unwrap();
    assert_eq!(
        f.len().unwrap(),
        bytes.len() as u64,
        "the seal is rewritten identically"
    );
}

/// A crash while the next segment was being created leaves its file empty
/// (or holding part of its header): recovery removes it and creates it
/// again; nothing is lost.
#[test]
fn interrupted_segment_creation_is_repaired() {
    let (fs, last, total) = build();
    for partial in [0usize, 7, 31] {
        let copy = fs.crash(CrashMode::DropUnsynced);
        // The next segment, as create_segment leaves it when cut short.
        let next = last.with_file_name(format!("{:020}.seg", total));
        let f = copy.open(&next, OpenMode::CreateNew).unwrap();
        let header = logbook_storage::internals::encode_segment_header(total, 0x1d2c_3b4a);
        f.write_all_at(&header[..partial], 0).unwrap();
        f.sync_data().unwrap();
        copy.sync_dir(Path::new("/data/log")).unwrap();
        let store = Store::open(tiny_mem(&copy)).unwrap();
        assert_eq!(store.head().0, total, "partial header of {partial} bytes");
        assert!(store.recovery_report().removed_files.contains(&next));
        store
            .append_blocking(&name("after"), ExpectedVersion::Any, evs(5000, 1))
            .unwrap();
        store.close().unwrap();
        drop(store);
        let store = Store::open(tiny_mem(&copy)).unwrap();
        assert_eq!(store.head().0, total + 1);
    }
}

/// Records forged inside an event's payload never steer recovery: a client
/// embeds a chain of checksum-valid records (each flagged as the end of a
/// group, as the writer flags them) in an event's data; a crash tears the
/// group holding it; strict recovery must call that a torn tail and open,
/// not take the forged chain for acknowledged records and refuse to start.
/// (Records are checksummed under a random per-segment nonce that the
/// client cannot know; the forger uses the plain crc32c a format-1 segment
/// had.)
#[test]
fn records_forged_in_a_payload_do_not_steer_recovery() {
    use logbook_storage::internals::encode_record;
    let fs = MemFs::new();
    let store = Store::open(StoreConfig {
        max_event_bytes: 2 << 10,
        max_batch_bytes: 3 << 10,
        ..tiny_mem(&fs)
    })
    .unwrap();
    for i in 0..5 {
        store
            .append_blocking(&name("ok"), ExpectedVersion::Any, evs(i, 1))
            .unwrap();
    }
    let head = store.head().0;
    // The forged chain: positions from the head on, contiguous, each a
    // group end, far more than the in-flight bound.
    let mut forged = Vec::new();
    for k in 0..12u64 {
        let at = forged.len();
        encode_record(
            &mut forged,
            0,
            "ok",
            head + 1 + k,
            100 + k,
            0,
            &evs(500 + k, 1),
        );
        forged[at + 9] |= 1; // group end
        let len = forged.len() - at;
        let crc = crc32c::crc32c(&forged[at + 8..at + len - 4]);
        forged[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    }
    let poison = logbook_protocol::NewEvent::new(
        logbook_protocol::EventId::from_u128(9_999),
        "Innocent",
        forged.clone(),
    );
    store
        .append_blocking(&name("ok"), ExpectedVersion::Any, vec![poison])
        .unwrap();
    store.close().unwrap();
    drop(store);
    let last = segments(&fs).pop().unwrap();
    let bytes = fs.read_file(&last).unwrap();
    let (start, end) = *record_offsets(&bytes).last().unwrap();
    assert!(
        bytes[start..end]
            .windows(forged.len())
            .any(|w| w == &forged[..]),
        "the payload is in the record"
    );
    // Tear the poisoned group: its first bytes never reached the disk.
    let mut torn = bytes.clone();
    torn[start..start + 16].fill(0);
    let copy = fs.crash(CrashMode::DropUnsynced);
    copy.write_file(&last, torn);
    let store = Store::open(tiny_mem(&copy)).expect("a torn tail, not corruption");
    assert_eq!(store.head().0, head, "the torn group is cut, the rest kept");
    let cut = store.recovery_report().truncated.clone().unwrap();
    assert_eq!(cut.offset, start as u64);
    let events = store
        .read_stream("ok", None, Direction::Forward, 100)
        .unwrap()
        .events;
    assert_eq!(events.len(), 5);
}
