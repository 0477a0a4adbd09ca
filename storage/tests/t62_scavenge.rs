//! Scavenge and erase through the engine: the disk given back, survivors
//! byte-identical at their old positions, reads during rewrites, crashes
//! and disk errors at every step of a rewrite, erase leaving no byte of the
//! stream anywhere, and a scavenge with nothing to do doing nothing.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use logbook_protocol::lifecycle::Deletion;
use logbook_protocol::{
    Direction, EventId, ExpectedVersion, LogPosition, NewEvent, RecordedEvent, StreamName,
};
use logbook_storage::fs::{CrashMode, Fault, MemFs, Vfs};
use logbook_storage::scavenge::ScavengeOptions;
use logbook_storage::{Durability, Store, StoreConfig, verify};

/// Every event of the global log, forward by pages, checking that the
/// pages tile `[0, head)`.
fn read_all(store: &Store, page: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let s = store
            .read_all(Some(LogPosition(from)), Direction::Forward, page)
            .unwrap();
        assert!(s.through.0 >= from);
        out.extend(s.events);
        match s.next {
            Some(n) => {
                assert_eq!(n, s.through);
                from = n.0;
            }
            None => {
                assert_eq!(s.through, s.head);
                return out;
            }
        }
    }
}

fn dir_bytes(dir: &Path, sub: &str) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir.join(sub)).unwrap() {
        total += e.unwrap().metadata().unwrap().len();
    }
    total
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn payload_event(n: u64, bytes: usize) -> NewEvent {
    NewEvent::new(
        EventId::from_u128(u128::from(n) + 1),
        "Deposited",
        format!("{n:08}{}", "p".repeat(bytes)),
    )
}

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        segment_bytes: 256 << 10,
        max_batch_bytes: 32 << 10,
        max_event_bytes: 16 << 10,
        index_flush_entries: 4096,
        durability: Durability::Os,
        ..StoreConfig::new(dir)
    }
}

/// Appends `streams` streams of 1 to 20 events (batches of 1 to 4, at
/// random), returns the events' total payload bytes per stream.
fn fill(store: &Store, rng: &mut Rng, streams: usize) -> Vec<u64> {
    let mut bytes = vec![0u64; streams];
    let mut left: Vec<(usize, u64)> = (0..streams).map(|s| (s, 1 + rng.next(20))).collect();
    let mut id = 0u64;
    while !left.is_empty() {
        let i = rng.next(left.len() as u64) as usize;
        let (s, n) = left[i];
        let k = (1 + rng.next(4)).min(n);
        let events: Vec<NewEvent> = (id..id + k).map(|j| payload_event(j, 80)).collect();
        bytes[s] += events.iter().map(|e| e.data.len() as u64 + 60).sum::<u64>();
        store
            .append_blocking(
                &StreamName::new(format!("acct-{s}")).unwrap(),
                ExpectedVersion::Any,
                events,
            )
            .unwrap();
        id += k;
        if n == k {
            left.swap_remove(i);
        } else {
            left[i].1 -= k;
        }
    }
    bytes
}

#[test]
fn half_the_streams_deleted_then_scavenged_gives_half_the_log_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let streams = 10_000;
    let bytes = fill(&store, &mut rng, streams);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut deleted = BTreeSet::new();
    let mut deleted_bytes = 0;
    for (s, b) in bytes.iter().enumerate() {
        if rng.next(2) == 0 {
            let mode = if rng.next(4) == 0 {
                Deletion::Hard
            } else {
                Deletion::Soft
            };
            rt.block_on(store.delete_stream(
                &StreamName::new(format!("acct-{s}")).unwrap(),
                ExpectedVersion::Any,
                mode,
            ))
            .unwrap();
            deleted.insert(format!("acct-{s}"));
            deleted_bytes += b;
        }
    }
    let share = deleted_bytes as f64 / bytes.iter().sum::<u64>() as f64;
    // Before any scavenge: the survivors and the deletes, nothing else.
    let before = read_all(&store, 1000);
    assert!(before.iter().all(|e| !deleted.contains(e.stream.as_str())));
    assert_eq!(
        before
            .iter()
            .filter(|e| e.stream.as_str().starts_with("$$"))
            .count(),
        deleted.len()
    );
    let log_before = dir_bytes(dir.path(), "log");
    let report = store.scavenge(ScavengeOptions::default()).unwrap();
    assert!(report.segments_rewritten > 0);
    assert_eq!(report.events_removed as usize, {
        // Every event of the deleted streams.
        deleted
            .iter()
            .map(|s| {
                store
                    .stream_lifecycle(s)
                    .and_then(|l| l.state.last_version)
                    .map_or(0, |l| l as usize + 1)
            })
            .sum::<usize>()
    });
    let log_after = dir_bytes(dir.path(), "log");
    let shrunk = 1.0 - log_after as f64 / log_before as f64;
    eprintln!(
        "log {log_before} -> {log_after} bytes ({:.1}% smaller; deleted share {:.1}%), \
         index {} bytes, scavenge {:?}",
        shrunk * 100.0,
        share * 100.0,
        dir_bytes(dir.path(), "index"),
        report.duration
    );
    assert!(
        (shrunk - share).abs() < 0.05,
        "the log shrank by {shrunk:.3}, the deleted share is {share:.3}"
    );
    // Survivors byte-identical at their old positions, frames tiling the
    // log (the scavenge's own two `$scavenges` events come after).
    let after: Vec<RecordedEvent> = read_all(&store, 777)
        .into_iter()
        .filter(|e| e.stream.as_str() != "$scavenges")
        .collect();
    same(&after, &before);
    for s in ["acct-1", "acct-2", "acct-3", "acct-9999"] {
        let slice = store.read_stream(s, None, Direction::Forward, 100);
        if !deleted.contains(s) {
            let slice = slice.unwrap();
            let want: Vec<&RecordedEvent> =
                before.iter().filter(|e| e.stream.as_str() == s).collect();
            assert_eq!(slice.events.iter().collect::<Vec<_>>(), want);
        }
    }
    // A second scavenge has nothing to do and reads no segment.
    let again = store.scavenge(ScavengeOptions::default()).unwrap();
    assert_eq!(again.segments_considered, 0);
    // At most the small segments the two scavenges' own seals left, merged.
    assert_eq!(again.events_removed, 0);
    assert!(again.bytes_before < 8 << 10, "{again:?}");
    // Restarted, and verified.
    store.close().unwrap();
    let v = verify(&config(dir.path()), |_| {}).unwrap();
    assert!(
        v.problems.is_empty(),
        "{:?}",
        &v.problems[..v.problems.len().min(5)]
    );
    let store = Store::open(config(dir.path())).unwrap();
    let reopened: Vec<RecordedEvent> = read_all(&store, 5000)
        .into_iter()
        .filter(|e| e.stream.as_str() != "$scavenges")
        .collect();
    same(&reopened, &before);
    store.close().unwrap();
}

/// `got == want`, reporting the first difference rather than both lists.
fn same(got: &[RecordedEvent], want: &[RecordedEvent]) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!("event {i} differs: {:?} vs {:?}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "as many events");
}

#[test]
fn a_scavenge_costs_the_streams_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut rng = Rng(7);
    fill(&store, &mut rng, 2000);
    store.scavenge(ScavengeOptions::default()).unwrap();
    let segments = store.stats().segments;
    // One stream deleted: only the segments holding its events.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let s = StreamName::new("acct-5").unwrap();
    let held: BTreeSet<u64> = store
        .read_stream("acct-5", None, Direction::Forward, 100)
        .unwrap()
        .events
        .iter()
        .map(|e| e.position.0)
        .collect();
    rt.block_on(store.delete_stream(&s, ExpectedVersion::Any, Deletion::Soft))
        .unwrap();
    let r = store.scavenge(ScavengeOptions::default()).unwrap();
    assert!(r.segments_considered >= 1 && r.segments_considered <= held.len() as u64);
    assert!(r.segments_considered < segments / 2, "{r:?} of {segments}");
    assert_eq!(r.events_removed, held.len() as u64);
    let r = store.scavenge(ScavengeOptions::default()).unwrap();
    assert_eq!(r.segments_considered, 0);
    store.close().unwrap();
}

#[test]
fn a_reader_crossing_segments_while_they_are_rewritten_sees_every_survivor_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    let mut rng = Rng(11);
    fill(&store, &mut rng, 3000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Two streams in three deleted: the rewritten segments are a third
    // full, so they are merged too.
    for s in (0..3000).filter(|s| s % 3 != 1) {
        rt.block_on(store.delete_stream(
            &StreamName::new(format!("acct-{s}")).unwrap(),
            ExpectedVersion::Any,
            Deletion::Soft,
        ))
        .unwrap();
    }
    let expected = read_all(&store, 10_000);
    // A reader part-way through, then a scavenge, then the rest.
    let mut got = Vec::new();
    let first = store
        .read_all(Some(LogPosition(0)), Direction::Forward, 500)
        .unwrap();
    got.extend(first.events);
    let scavenger = {
        let store = store.clone();
        std::thread::spawn(move || store.scavenge(ScavengeOptions::default()).unwrap())
    };
    // Read on, page by page, while the scavenge runs.
    let mut from = first.next;
    while let Some(f) = from {
        let s = store.read_all(Some(f), Direction::Forward, 97).unwrap();
        got.extend(s.events);
        from = s.next;
    }
    let report = scavenger.join().unwrap();
    assert!(report.segments_rewritten > 0);
    assert!(report.segments_merged > 0, "{report:?}");
    // The two `$scavenges` events came after `expected` was taken.
    let got: Vec<RecordedEvent> = got
        .into_iter()
        .filter(|e| e.stream.as_str() != "$scavenges")
        .collect();
    same(&got, &expected);
    // Stream reads whose index offsets are now stale.
    for s in (1..3000).step_by(301) {
        let name = format!("acct-{s}");
        let want: Vec<&RecordedEvent> = expected
            .iter()
            .filter(|e| e.stream.as_str() == name)
            .collect();
        let fwd = store
            .read_stream(&name, None, Direction::Forward, 100)
            .unwrap();
        assert_eq!(fwd.events.iter().collect::<Vec<_>>(), want);
        let mut back = store
            .read_stream(&name, None, Direction::Backward, 100)
            .unwrap()
            .events;
        back.reverse();
        assert_eq!(back.iter().collect::<Vec<_>>(), want);
    }
    store.close().unwrap();
}

/// Disk errors and power cuts at every write and sync of a scavenge: after
/// restart the live events are exactly the same, verify passes, and every
/// segment is whole (old or rewritten).
#[test]
fn crashes_and_disk_errors_at_every_step_of_a_rewrite() {
    let base = MemFs::new();
    let cfg = |fs: &MemFs| StoreConfig {
        segment_bytes: 16 << 10,
        index_flush_entries: 256,
        ..tiny_mem(fs)
    };
    let expected = {
        let store = Store::open(cfg(&base)).unwrap();
        let mut rng = Rng(3);
        fill(&store, &mut rng, 200);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for s in (0..200).step_by(2) {
            rt.block_on(store.delete_stream(
                &StreamName::new(format!("acct-{s}")).unwrap(),
                ExpectedVersion::Any,
                Deletion::Hard,
            ))
            .unwrap();
        }
        let all = read_all(&store, 1000);
        store.close().unwrap();
        all
    };
    let live = |store: &Store| -> Vec<RecordedEvent> {
        read_all(store, 333)
            .into_iter()
            .filter(|e| e.stream.as_str() != "$scavenges")
            .collect()
    };
    // How many writes and syncs a whole scavenge makes.
    let (writes, syncs) = {
        let fs = base.crash(CrashMode::DropUnsynced);
        let store = Store::open(cfg(&fs)).unwrap();
        let (w0, s0) = fs.counts();
        let r = store.scavenge(ScavengeOptions::default()).unwrap();
        assert!(r.segments_rewritten > 2, "{r:?}");
        let (w1, s1) = fs.counts();
        store.close().unwrap();
        (w1 - w0, s1 - s0)
    };
    let mut cases = 0;
    for (n, on_sync) in (0..writes)
        .map(|n| (n, false))
        .chain((0..syncs).map(|n| (n, true)))
    {
        let fs = base.crash(CrashMode::DropUnsynced);
        let store = Store::open(cfg(&fs)).unwrap();
        if on_sync {
            fs.fail_syncs_after(n, Fault::Eio);
        } else {
            fs.fail_writes_after(n, Fault::NoSpace);
        }
        let _ = store.scavenge(ScavengeOptions::default());
        let image = fs.crash(CrashMode::TornUnsynced { seed: n });
        // The disk heals and the same process scavenges again: done, or
        // refused until a restart (the failure came after a rename, or the
        // writer stopped at its seal); the reads stay whole either way.
        fs.clear_faults();
        let _ = store.scavenge(ScavengeOptions::default());
        same(&live(&store), &expected);
        let retried = fs.crash(CrashMode::TornUnsynced { seed: n + 1 });
        store.abandon();
        for image in [image, retried] {
            let store = Store::open(cfg(&image)).unwrap();
            same(&live(&store), &expected);
            store.close().unwrap();
            let v = verify(&cfg(&image), |_| {}).unwrap();
            assert!(
                v.problems.is_empty(),
                "case {n} {on_sync}: {:?}",
                v.problems
            );
            // And a scavenge after the restart finishes the job.
            let store = Store::open(cfg(&image)).unwrap();
            store.scavenge(ScavengeOptions::default()).unwrap();
            same(&live(&store), &expected);
            store.close().unwrap();
        }
        cases += 1;
    }
    assert!(cases > 10);
}

#[test]
fn erase_leaves_no_byte_of_the_stream_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || StoreConfig {
        segment_bytes: 64 << 10,
        max_batch_bytes: 32 << 10,
        max_event_bytes: 16 << 10,
        index_flush_entries: 512,
        durability: Durability::Os,
        ..StoreConfig::new(dir.path())
    };
    let store = Store::open(cfg()).unwrap();
    let marker: [u8; 32] = {
        let mut m = [0u8; 32];
        let mut r = Rng(0xdead_beef);
        for b in &mut m {
            *b = r.next(256) as u8;
        }
        m
    };
    let x = StreamName::new("person-42").unwrap();
    let other = StreamName::new("other").unwrap();
    let mut id = 0u64;
    let append = |s: &StreamName, with_marker: bool, id: &mut u64| {
        let mut data = vec![b'd'; 300];
        if with_marker {
            data.extend_from_slice(&marker);
        }
        let e = NewEvent::new(EventId::from_u128(u128::from(*id) + 1), "T", data);
        *id += 1;
        store
            .append_blocking(s, ExpectedVersion::Any, vec![e])
            .unwrap();
    };
    // X's events spread over sealed segments, and some in the active one.
    for i in 0..2000 {
        append(&other, false, &mut id);
        if i % 50 == 0 {
            append(&x, true, &mut id);
        }
    }
    append(&x, true, &mut id);
    assert!(store.stats().segments > 5);
    let contains = |root: &Path| -> Vec<String> {
        let mut hits = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    // (Index files come and go as the index merges.)
                    let Ok(b) = std::fs::read(&p) else { continue };
                    if b.windows(32).any(|w| w == marker) {
                        hits.push(p.display().to_string());
                    }
                }
            }
        }
        hits
    };
    assert!(!contains(dir.path()).is_empty(), "the marker is on disk");
    let before_other = store
        .read_stream("other", None, Direction::Forward, 10_000)
        .unwrap()
        .events;
    let receipt = store.erase(&x).unwrap();
    eprintln!("erase: {receipt:?}");
    assert!(receipt.segments_rewritten >= 2);
    assert_eq!(receipt.events_removed, 41);
    assert!(
        contains(dir.path()).is_empty(),
        "marker found in {:?}",
        contains(dir.path())
    );
    assert!(matches!(
        store.read_stream("person-42", None, Direction::Forward, 10),
        Err(logbook_storage::ReadError::StreamDeleted { .. })
    ));
    assert_eq!(
        store
            .read_stream("other", None, Direction::Forward, 10_000)
            .unwrap()
            .events,
        before_other
    );
    // Again (idempotent), across a restart, and verified.
    store.close().unwrap();
    let store = Store::open(cfg()).unwrap();
    store.erase(&x).unwrap();
    assert!(contains(dir.path()).is_empty());
    store.close().unwrap();
    let v = verify(&cfg(), |_| {}).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}

/// A scavenge that leaves segments small merges them with their small
/// neighbours (each result at most a segment): fewer files, the same
/// events at the same positions. A crash at each step of a merge (the new
/// file written, renamed over the first of the run, each neighbour
/// removed) leaves a store that verifies as it is, opens in the before or
/// the after state (the leftover neighbours removed at start), and serves
/// exactly the same live events.
#[test]
fn small_neighbours_are_merged_and_a_crash_at_each_step_loses_nothing() {
    use logbook_storage::scavenge::ScavengeStep;
    use std::sync::{Arc, Mutex};
    let base = MemFs::new();
    let images: Arc<Mutex<Vec<(ScavengeStep, MemFs)>>> = Arc::default();
    let cfg = |fs: &MemFs, hook: bool| {
        let mut c = StoreConfig {
            segment_bytes: 16 << 10,
            index_flush_entries: 256,
            ..tiny_mem(fs)
        };
        if hook {
            let (fs, images) = (fs.clone(), Arc::clone(&images));
            c.testing.scavenge_hook = Some(logbook_storage::ScavengeHook(Arc::new(move |step| {
                images
                    .lock()
                    .unwrap()
                    .push((step, fs.crash(CrashMode::DropUnsynced)));
            })));
        }
        c
    };
    let store = Store::open(cfg(&base, false)).unwrap();
    let mut rng = Rng(5);
    fill(&store, &mut rng, 300);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // Nine streams in ten deleted: the rewritten segments are a tenth of
    // their size.
    for s in (0..300).filter(|s| s % 10 != 0) {
        rt.block_on(store.delete_stream(
            &StreamName::new(format!("acct-{s}")).unwrap(),
            ExpectedVersion::Any,
            if s % 3 == 0 {
                Deletion::Hard
            } else {
                Deletion::Soft
            },
        ))
        .unwrap();
    }
    let live = |store: &Store| -> Vec<RecordedEvent> {
        read_all(store, 333)
            .into_iter()
            .filter(|e| e.stream.as_str() != "$scavenges")
            .collect()
    };
    let expected = live(&store);
    store.close().unwrap();

    let fs = base.crash(CrashMode::DropUnsynced);
    let store = Store::open(cfg(&fs, true)).unwrap();
    let before = store.stats().segments;
    let r = store.scavenge(ScavengeOptions::default()).unwrap();
    let after = store.stats().segments;
    assert!(r.segments_merged > 5, "{r:?}");
    // The scavenge sealed the active segment: one more, less the merged.
    assert_eq!(before + 1 - after, r.segments_merged, "{r:?}");
    same(&live(&store), &expected);
    // Every merged segment fits in one.
    store.close().unwrap();
    for name in fs.list_dir(Path::new("/data/log")).unwrap() {
        let len = fs
            .read_file(&Path::new("/data/log").join(&name))
            .unwrap()
            .len();
        assert!(len <= (16 << 10) + 4096, "{name}: {len} bytes");
    }
    let v = verify(&cfg(&fs, false), |_| {}).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);

    let images = std::mem::take(&mut *images.lock().unwrap());
    let removed_steps = images
        .iter()
        .filter(|(s, _)| *s == ScavengeStep::Removed)
        .count();
    assert!(
        removed_steps >= r.segments_merged as usize,
        "{removed_steps}"
    );
    let mut leftovers = 0;
    for (i, (step, image)) in images.iter().enumerate() {
        let v = verify(&cfg(image, false), |_| {}).unwrap();
        assert!(
            v.problems.is_empty(),
            "image {i} at {step:?}: {:?}",
            v.problems
        );
        let store = Store::open(cfg(image, false)).unwrap();
        leftovers += store.recovery_report().removed_files.len();
        same(&live(&store), &expected);
        // And a scavenge after the restart finishes the job.
        store.scavenge(ScavengeOptions::default()).unwrap();
        same(&live(&store), &expected);
        store.close().unwrap();
        let v = verify(&cfg(image, false), |_| {}).unwrap();
        assert!(v.problems.is_empty(), "image {i} after: {:?}", v.problems);
    }
    // Crashes after a merge's rename left neighbours the start removed.
    assert!(leftovers > 0);
}

/// On a replica of a cluster an erase is a replicated tombstone
/// (`LifecycleChange::Erase`), whose rewrite each replica owes until it
/// is done: across a crash right after the tombstone, and with a damaged
/// record of what is owed (every erased stream is then owed again). Once
/// done, no file holds the stream's bytes, the log still has no hole, and
/// a waiter hears what the rewrite did.
#[test]
fn a_replica_owes_an_erase_until_its_segments_are_rewritten() {
    use logbook_storage::LifecycleChange;
    let dir = tempfile::tempdir().unwrap();
    let cfg = || StoreConfig {
        keep_removed_ids: true,
        segment_bytes: 32 << 10,
        max_batch_bytes: 16 << 10,
        max_event_bytes: 8 << 10,
        index_flush_entries: 256,
        durability: Durability::Os,
        ..StoreConfig::new(dir.path())
    };
    let store = Store::open(cfg()).unwrap();
    let marker = |k: u8| -> Vec<u8> { (0..32u8).map(|i| i.wrapping_mul(37) ^ k).collect() };
    let mut id = 0u64;
    let append = |store: &Store, s: &str, mark: Option<u8>, id: &mut u64| {
        let mut data = vec![b'd'; 200];
        if let Some(k) = mark {
            data.extend_from_slice(&marker(k));
        }
        *id += 1;
        let e = NewEvent::new(EventId::from_u128(u128::from(*id)), "T", data);
        let s = StreamName::new(s).unwrap();
        store
            .append_blocking(&s, ExpectedVersion::Any, vec![e])
            .unwrap();
    };
    for i in 0..600 {
        append(&store, "other", None, &mut id);
        if i % 40 == 0 {
            append(&store, "person-1", Some(1), &mut id);
            append(&store, "person-2", Some(2), &mut id);
        }
    }
    let files_holding = |k: u8| -> usize {
        let m = marker(k);
        let mut n = 0;
        for sub in ["log", "index"] {
            for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
                let Ok(b) = std::fs::read(e.unwrap().path()) else {
                    continue;
                };
                n += usize::from(b.windows(32).any(|w| w == m));
            }
        }
        n
    };
    assert!(files_holding(1) > 1 && files_holding(2) > 1);
    let erase = |store: &Store, s: &str, at: i64| {
        let s = StreamName::new(s).unwrap();
        futures::executor::block_on(async {
            store
                .submit_lifecycle_at(
                    &s,
                    ExpectedVersion::Any,
                    LifecycleChange::Erase,
                    EventId::new_v7(),
                    at,
                )
                .await
                .unwrap()
                .await
                .unwrap()
        })
    };
    let head = store.head().0;
    let tombstone = erase(&store, "person-1", store.now_us());
    assert_eq!(tombstone.first_position.0, head);
    assert_eq!(store.erasures_owed(), 1);
    // A crash before the rewrite: still owed after the restart.
    store.abandon();
    let store = Store::open(cfg()).unwrap();
    assert_eq!(store.erasures_owed(), 1);
    assert!(files_holding(1) > 0);
    let waiter = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.wait_erased(
                &StreamName::new("person-1").unwrap(),
                Some(std::time::Duration::from_secs(30)),
            )
        })
    };
    assert_eq!(store.finish_erasures().unwrap(), 1);
    let receipt = waiter.join().unwrap().unwrap();
    assert_eq!(receipt.position, tombstone.first_position);
    assert_eq!(receipt.events_removed, 15, "{receipt:?}");
    assert_eq!(files_holding(1), 0);
    assert_eq!(store.erasures_owed(), 0);
    assert!(matches!(
        store.read_stream("person-1", None, Direction::Forward, 10),
        Err(logbook_storage::ReadError::StreamDeleted { .. })
    ));

    // A damaged record of what is owed: every erased stream is owed again
    // (person-1's rewrite finds nothing left).
    erase(&store, "person-2", store.now_us());
    store.close().unwrap();
    std::fs::write(dir.path().join("ERASING"), b"LGBKERAS garbage").unwrap();
    let store = Store::open(cfg()).unwrap();
    assert_eq!(store.erasures_owed(), 2);
    assert_eq!(store.finish_erasures().unwrap(), 2);
    assert_eq!(files_holding(2), 0);
    store.close().unwrap();
    let store = Store::open(cfg()).unwrap();
    assert_eq!(store.erasures_owed(), 0);
    // No hole: the removed events keep their ids and positions.
    let batches = store.read_batches(0, u64::MAX, usize::MAX).unwrap();
    let mut next = 0;
    for b in &batches {
        assert_eq!(b.first_position, next);
        next = b.end_position();
    }
    assert_eq!(next, store.head().0);
    assert!(batches.iter().any(|b| b.removed && b.stream == "person-2"));
    store.close().unwrap();
    let v = verify(&cfg(), |_| {}).unwrap();
    assert!(v.problems.is_empty(), "{:?}", v.problems);
}
