//! Stream counts survive flushes, merges and restarts; backup images taken
//! while appenders run open as stores holding exactly their events.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use logbook_protocol::{Direction, ExpectedVersion};
use logbook_storage::backup::BackupImage;
use logbook_storage::{Store, StoreConfig};

#[test]
fn stream_count_survives_flushes_merges_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let mut n = 0;
    for i in 0..300u64 {
        // 37 streams, each written many times.
        store
            .append_blocking(
                &name(&format!("s-{}", i % 37)),
                ExpectedVersion::Any,
                evs(n, 2),
            )
            .unwrap();
        n += 2;
    }
    // Merges run on their own thread.
    let stats = wait_until(&store, "a merge", |s| s.index_merges > 0);
    assert_eq!(stats.streams, 37);
    store.close().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    assert_eq!(store.stats().streams, 37);
    store
        .append_blocking(&name("new"), ExpectedVersion::NoStream, evs(n, 1))
        .unwrap();
    assert_eq!(store.stats().streams, 38);
    // A crash: the memtable is lost and replayed from the log.
    store.abandon();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    assert_eq!(store.stats().streams, 38);
}

/// `tiny` with segments large enough that a few thousand events take tens
/// of segments, not thousands of open files.
fn small(dir: &Path) -> StoreConfig {
    StoreConfig {
        segment_bytes: 32 << 10,
        ..tiny(dir)
    }
}

#[test]
fn images_taken_during_appends_open_with_exactly_their_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    let images_done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let store = store.clone();
            let images_done = Arc::clone(&images_done);
            std::thread::spawn(move || {
                // A bounded amount of work, going on while images are taken.
                let mut i = 0u64;
                while i < 400 && !(images_done.load(Ordering::Relaxed) && i >= 50) {
                    store
                        .append_blocking(
                            &name(&format!("w{w}-{}", i % 5)),
                            ExpectedVersion::Any,
                            evs(w * 1_000_000 + i * 3, 1 + i % 3),
                        )
                        .unwrap();
                    i += 1;
                }
            })
        })
        .collect();
    let mut images = Vec::new();
    for _ in 0..15 {
        let image = store.backup_image().unwrap();
        let copy = tempfile::tempdir().unwrap();
        write_image(&image, copy.path());
        images.push((image.position, copy));
    }
    images_done.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let all = store
        .read_all(None, Direction::Forward, 1_000_000)
        .unwrap()
        .events;
    for (position, copy) in images {
        let restored = Store::open(small(copy.path())).unwrap();
        let report = restored.recovery_report().clone();
        assert!(report.truncated.is_none(), "{report:?}");
        assert_eq!(restored.head().0, position);
        let got = restored
            .read_all(None, Direction::Forward, 1_000_000)
            .unwrap()
            .events;
        assert_eq!(got.as_slice(), &all[..position as usize]);
        // The stream index agrees with the log, and the copy takes appends.
        for w in 0..3 {
            for s in 0..5 {
                let stream = format!("w{w}-{s}");
                let want: Vec<_> = got.iter().filter(|e| e.stream.as_str() == stream).collect();
                let read = restored
                    .read_stream(&stream, None, Direction::Forward, 1_000_000)
                    .map(|s| s.events)
                    .unwrap_or_default();
                assert_eq!(read.iter().collect::<Vec<_>>(), want);
            }
        }
        let streams = got
            .iter()
            .map(|e| e.stream.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        assert_eq!(restored.stats().streams, streams);
        let r = restored
            .append_blocking(
                &name("after"),
                ExpectedVersion::NoStream,
                evs(90_000_000, 1),
            )
            .unwrap();
        assert_eq!(r.first_position.0, position);
    }
}

/// Images taken before a scavenge and in the middle of one (right after a
/// merged segment was renamed over the first of its run), copied only once
/// the scavenge has rewritten, merged and removed the files they name,
/// open as stores serving exactly the live events of their moment, and
/// verify.
#[test]
fn images_taken_before_and_during_a_scavenge_stay_whole() {
    use logbook_protocol::lifecycle::Deletion;
    use logbook_storage::scavenge::{ScavengeOptions, ScavengeStep};
    let dir = tempfile::tempdir().unwrap();
    let taken: Arc<std::sync::Mutex<Vec<BackupImage>>> = Arc::default();
    let handle: Arc<std::sync::Mutex<Option<Store>>> = Arc::default();
    let mut config = small(dir.path());
    {
        let (taken, handle) = (Arc::clone(&taken), Arc::clone(&handle));
        config.testing.scavenge_hook = Some(logbook_storage::ScavengeHook(Arc::new(move |step| {
            let mut taken = taken.lock().unwrap();
            if step == ScavengeStep::Renamed && taken.len() < 3 {
                let store = handle.lock().unwrap().clone().unwrap();
                taken.push(store.backup_image().unwrap());
            }
        })));
    }
    let store = Store::open(config).unwrap();
    *handle.lock().unwrap() = Some(store.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for i in 0..600u64 {
        store
            .append_blocking(
                &name(&format!("s{}", i % 60)),
                ExpectedVersion::Any,
                evs(i * 4, 1 + i % 3),
            )
            .unwrap();
    }
    for s in (0..60).filter(|s| s % 3 != 0) {
        rt.block_on(store.delete_stream(
            &name(&format!("s{s}")),
            ExpectedVersion::Any,
            Deletion::Soft,
        ))
        .unwrap();
    }
    let live = |store: &Store| -> Vec<logbook_protocol::RecordedEvent> {
        let mut out = Vec::new();
        let mut from = None;
        loop {
            let s = store.read_all(from, Direction::Forward, 1000).unwrap();
            out.extend(
                s.events
                    .into_iter()
                    .filter(|e| e.stream.as_str() != "$scavenges"),
            );
            match s.next {
                Some(n) => from = Some(n),
                None => return out,
            }
        }
    };
    let expected = live(&store);
    let before = store.backup_image().unwrap();
    let report = store.scavenge(ScavengeOptions::default()).unwrap();
    assert!(report.segments_merged > 0, "{report:?}");
    let mut images = vec![before];
    images.extend(std::mem::take(&mut *taken.lock().unwrap()));
    assert!(images.len() >= 2);
    for image in &images {
        let copy = tempfile::tempdir().unwrap();
        write_image(image, copy.path());
        let restored = Store::open(small(copy.path())).unwrap();
        assert_eq!(live(&restored), expected);
        restored.close().unwrap();
        let v = logbook_storage::verify(&small(copy.path()), |_| {}).unwrap();
        assert!(v.problems.is_empty(), "{:?}", v.problems);
    }
    *handle.lock().unwrap() = None;
    store.close().unwrap();
}
