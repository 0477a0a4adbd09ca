//! Regression tests from a review of lifecycle and scavenge: versions are
//! never given twice after a scavenge removed a stream's last events (after
//! a restart, or once the head cache forgets the stream), a soft delete is
//! undone by exactly one append, what max_age removed stays removed when it
//! is raised, max_count streams are scavenged every time, an erase leaves
//! no custom metadata in the lifecycle snapshot, and a max_count read never
//! comes back empty under appends.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::*;
use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
use logbook_protocol::{Direction, ExpectedVersion, StreamVersion};
use logbook_storage::scavenge::ScavengeOptions;
use logbook_storage::{Store, StoreConfig};

fn versions(store: &Store, s: &str) -> (Vec<u64>, Option<u64>) {
    let r = store
        .read_stream(s, None, Direction::Forward, 10_000)
        .unwrap();
    (
        r.events.iter().map(|e| e.version.0).collect(),
        r.last_version.map(|v| v.0),
    )
}

/// max_age: every event expires, a scavenge removes them all, and after a
/// restart the next append reuses version 0.
#[tokio::test]
async fn max_age_scavenge_then_restart_reuses_versions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_000_000_000_000));
    let config = || {
        let mut c: StoreConfig = tiny_fast(dir.path());
        c.testing.clock = Some(Arc::clone(&clock));
        c
    };
    let store = Store::open(config()).unwrap();
    let s = name("s");
    store
        .set_metadata(
            &s,
            ExpectedVersion::Any,
            StreamMetadata {
                max_age_secs: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let r = store
        .append(&s, ExpectedVersion::NoStream, evs(0, 10))
        .await
        .unwrap();
    assert_eq!(r.last_version, StreamVersion(9));
    clock.fetch_add(5_000_000, Ordering::SeqCst);
    let rep = store.scavenge(ScavengeOptions::default()).unwrap();
    eprintln!("scavenge: {rep:?}");
    eprintln!("before restart: {:?}", versions(&store, "s"));
    store.close().unwrap();
    let store = Store::open(config()).unwrap();
    eprintln!("after restart: {:?}", versions(&store, "s"));
    let r = store
        .append(&s, ExpectedVersion::Any, evs(100, 1))
        .await
        .unwrap();
    eprintln!("append after restart: {r:?}");
    eprintln!("read: {:?}", versions(&store, "s"));
    assert_eq!(r.first_version, StreamVersion(10), "versions must continue");
    store.close().unwrap();
}

/// truncate_before above the end, appends below it (hidden), a scavenge
/// removes them, restart: versions restart at the truncation's last+1.
#[tokio::test]
async fn truncate_ahead_scavenge_then_restart_reuses_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let s = name("s");
    store
        .append(&s, ExpectedVersion::NoStream, evs(0, 3))
        .await
        .unwrap();
    store.truncate(&s, StreamVersion(100)).await.unwrap();
    let r = store
        .append(&s, ExpectedVersion::Any, evs(10, 10))
        .await
        .unwrap();
    assert_eq!(r.last_version, StreamVersion(12));
    let rep = store.scavenge(ScavengeOptions::default()).unwrap();
    eprintln!("scavenge: {rep:?}");
    store.close().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let r = store
        .append(&s, ExpectedVersion::Any, evs(100, 1))
        .await
        .unwrap();
    eprintln!("append after restart: {r:?}");
    assert_eq!(r.first_version, StreamVersion(13), "versions must continue");
    store.close().unwrap();
}

/// A soft delete of a stream truncated ahead of its end: every append
/// "expecting no stream" succeeds, again and again.
#[tokio::test]
async fn soft_deleted_stream_truncated_ahead_admits_nostream_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let s = name("s");
    store
        .append(&s, ExpectedVersion::NoStream, evs(0, 3))
        .await
        .unwrap();
    store.truncate(&s, StreamVersion(100)).await.unwrap();
    store
        .delete_stream(&s, ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();
    let a = store
        .append(&s, ExpectedVersion::NoStream, evs(10, 1))
        .await;
    let b = store
        .append(&s, ExpectedVersion::NoStream, evs(11, 1))
        .await;
    eprintln!("first NoStream: {a:?}\nsecond NoStream: {b:?}");
    assert!(b.is_err(), "the second NoStream append must conflict");
    store.close().unwrap();
}

/// max_age raised after events expired: the expired ones come back on
/// reads unless a scavenge already took them.
#[tokio::test]
async fn raising_max_age_brings_back_unscavenged_events_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_000_000_000_000));
    let config = || {
        let mut c: StoreConfig = tiny_fast(dir.path());
        c.testing.clock = Some(Arc::clone(&clock));
        c
    };
    let store = Store::open(config()).unwrap();
    let (a, b) = (name("a"), name("b"));
    let md = |age| StreamMetadata {
        max_age_secs: Some(age),
        ..Default::default()
    };
    for (i, s) in [&a, &b].into_iter().enumerate() {
        store
            .set_metadata(s, ExpectedVersion::Any, md(1))
            .await
            .unwrap();
        store
            .append(s, ExpectedVersion::Any, evs(100 * i as u64, 5))
            .await
            .unwrap();
    }
    clock.fetch_add(5_000_000, Ordering::SeqCst);
    assert_eq!(versions(&store, "a").0, Vec::<u64>::new());
    // Scavenge a only (an erase of some other stream would do the same
    // for b's segments; here: scavenge, then append b's events again).
    store.scavenge(ScavengeOptions::default()).unwrap();
    for s in [&a, &b] {
        store
            .set_metadata(s, ExpectedVersion::Any, md(1_000_000))
            .await
            .unwrap();
    }
    // What the old max_age removed stays removed, scavenged or not.
    assert_eq!(versions(&store, "a").0, Vec::<u64>::new());
    assert_eq!(versions(&store, "b").0, Vec::<u64>::new());
    store.close().unwrap();
}

/// A max_count stream: the first scavenge after a start looks at it; later
/// appends push more events out of its window, but no later scavenge
/// considers it (its state did not change).
#[tokio::test]
async fn max_count_streams_are_scavenged_once_per_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let s = name("s");
    store
        .set_metadata(
            &s,
            ExpectedVersion::Any,
            StreamMetadata {
                max_count: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for i in 0..50 {
        store
            .append(&s, ExpectedVersion::Any, evs(i, 1))
            .await
            .unwrap();
    }
    let r1 = store.scavenge(ScavengeOptions::default()).unwrap();
    for i in 50..100 {
        store
            .append(&s, ExpectedVersion::Any, evs(i, 1))
            .await
            .unwrap();
    }
    let r2 = store.scavenge(ScavengeOptions::default()).unwrap();
    eprintln!("first: {r1:?}\nsecond: {r2:?}");
    store.close().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let r3 = store.scavenge(ScavengeOptions::default()).unwrap();
    eprintln!("after restart: {r3:?}");
    assert!(r1.events_removed > 0);
    assert!(r2.events_removed > 0, "the second scavenge removed nothing");
    store.close().unwrap();
}

/// Erase drops custom metadata from the state, but index/LIFECYCLE still
/// holds the old state until the next index flush.
#[tokio::test]
async fn erase_leaves_custom_metadata_in_the_lifecycle_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny_fast(dir.path());
    c.index_flush_entries = 4;
    let store = Store::open(c).unwrap();
    let s = name("person-42");
    let mut custom = serde_json::Map::new();
    custom.insert("email".into(), serde_json::json!("MARKER-ada@example.com"));
    store
        .append(&s, ExpectedVersion::Any, evs(0, 3))
        .await
        .unwrap();
    store
        .set_metadata(
            &s,
            ExpectedVersion::Any,
            StreamMetadata {
                custom,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Enough appends for a flush (which writes the snapshot).
    let o = name("other");
    for i in 0..40 {
        store
            .append(&o, ExpectedVersion::Any, evs(10 + i, 1))
            .await
            .unwrap();
    }
    wait_until(&store, "a flush", |s| s.index_flushes > 0);
    let snap = std::fs::read(dir.path().join("index/LIFECYCLE")).unwrap();
    eprintln!(
        "marker in LIFECYCLE before erase: {}",
        snap.windows(6).any(|w| w == b"MARKER")
    );
    let store2 = store.clone();
    let s2 = s.clone();
    tokio::task::spawn_blocking(move || store2.erase(&s2).unwrap())
        .await
        .unwrap();
    let snap = std::fs::read(dir.path().join("index/LIFECYCLE")).unwrap();
    let hit = snap.windows(6).any(|w| w == b"MARKER");
    let mut files = Vec::new();
    for sub in ["log", "index"] {
        for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
            let p = e.unwrap().path();
            let Ok(b) = std::fs::read(&p) else { continue };
            if b.windows(6).any(|w| w == b"MARKER") {
                files.push(p.display().to_string());
            }
        }
    }
    eprintln!("marker in LIFECYCLE: {hit}; files with marker: {files:?}");
    assert!(
        files.is_empty(),
        "custom metadata survived the erase in {files:?}"
    );
    store.close().unwrap();
}

#[tokio::test]
async fn raising_max_age_resurrects_expired_events_until_a_scavenge() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_000_000_000_000));
    let config = || {
        let mut c: StoreConfig = tiny_fast(dir.path());
        c.testing.clock = Some(Arc::clone(&clock));
        c
    };
    let store = Store::open(config()).unwrap();
    let md = |age| StreamMetadata {
        max_age_secs: Some(age),
        ..Default::default()
    };
    for (i, s) in ["a", "b"].into_iter().enumerate() {
        store
            .set_metadata(&name(s), ExpectedVersion::Any, md(1))
            .await
            .unwrap();
        store
            .append(&name(s), ExpectedVersion::Any, evs(100 * i as u64, 5))
            .await
            .unwrap();
    }
    clock.fetch_add(5_000_000, Ordering::SeqCst);
    eprintln!(
        "expired: a {:?} b {:?}",
        versions(&store, "a"),
        versions(&store, "b")
    );
    // Raise b's max_age before any scavenge: its expired events come back.
    store
        .set_metadata(&name("b"), ExpectedVersion::Any, md(1_000_000))
        .await
        .unwrap();
    assert_eq!(versions(&store, "b").0, Vec::<u64>::new());
    store.scavenge(ScavengeOptions::default()).unwrap();
    store
        .set_metadata(&name("a"), ExpectedVersion::Any, md(1_000_000))
        .await
        .unwrap();
    assert_eq!(versions(&store, "a").0, Vec::<u64>::new());
    assert_eq!(versions(&store, "b").0, Vec::<u64>::new());
    // New events are live again.
    store
        .append(&name("a"), ExpectedVersion::Any, evs(900, 1))
        .await
        .unwrap();
    assert_eq!(versions(&store, "a").0, vec![5]);
    store.close().unwrap();
}

/// max_count = 1 and a steady stream of appends: a read of the stream
/// should always return its one live event.
#[test]
fn max_count_read_never_empty_under_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny_fast(dir.path());
    c.segment_bytes = 64 << 20;
    c.max_group_bytes = 4 << 20;
    c.index_flush_entries = 1 << 20;
    let store = Store::open(c).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s = name("s");
    rt.block_on(async {
        store
            .append(&s, ExpectedVersion::Any, evs(0, 1))
            .await
            .unwrap();
        store
            .set_metadata(
                &s,
                ExpectedVersion::Any,
                StreamMetadata {
                    max_count: Some(1),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        // Many other streams with a state, so that the publish loop's
        // note_last calls take a while.
        for i in 0..300 {
            store
                .set_metadata(
                    &name(&format!("o{i}")),
                    ExpectedVersion::Any,
                    StreamMetadata {
                        max_count: Some(5),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let empties = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let (store, stop, empties, reads) = (
            store.clone(),
            Arc::clone(&stop),
            Arc::clone(&empties),
            Arc::clone(&reads),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = store
                    .read_stream("s", None, Direction::Forward, 10)
                    .unwrap();
                reads.fetch_add(1, Ordering::Relaxed);
                if r.events.is_empty() {
                    empties.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut n = 1_000u64;
    rt.block_on(async {
        for _ in 0..150 {
            let mut hs = Vec::new();
            // S first in the group, then many others.
            let st = store.clone();
            let ev0 = evs(n, 1);
            hs.push(tokio::spawn(async move {
                st.append(&name("s"), ExpectedVersion::Any, ev0)
                    .await
                    .map(|_| ())
            }));
            n += 1;
            for i in 0..300 {
                let st = store.clone();
                let e = evs(n, 1);
                n += 1;
                hs.push(tokio::spawn(async move {
                    st.append(&name(&format!("o{i}")), ExpectedVersion::Any, e)
                        .await
                        .map(|_| ())
                }));
            }
            for h in hs {
                h.await.unwrap().unwrap();
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    eprintln!(
        "reads {} empty {}",
        reads.load(Ordering::Relaxed),
        empties.load(Ordering::Relaxed)
    );
    assert_eq!(empties.load(Ordering::Relaxed), 0);
    store.close().unwrap();
}

/// Same as the max_age case, without a restart: the head cache (8 streams
/// in `tiny`) forgets `s`, and the index no longer has its events.
#[tokio::test]
async fn max_age_scavenge_then_cache_eviction_reuses_versions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_000_000_000_000));
    let mut c: StoreConfig = tiny_fast(dir.path());
    c.testing.clock = Some(Arc::clone(&clock));
    let store = Store::open(c).unwrap();
    let s = name("s");
    store
        .set_metadata(
            &s,
            ExpectedVersion::Any,
            StreamMetadata {
                max_age_secs: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store
        .append(&s, ExpectedVersion::NoStream, evs(0, 10))
        .await
        .unwrap();
    clock.fetch_add(5_000_000, Ordering::SeqCst);
    store.scavenge(ScavengeOptions::default()).unwrap();
    for i in 0..64 {
        store
            .append(
                &name(&format!("x{i}")),
                ExpectedVersion::Any,
                evs(1000 + i, 1),
            )
            .await
            .unwrap();
    }
    let r = store
        .append(&s, ExpectedVersion::Any, evs(100, 1))
        .await
        .unwrap();
    eprintln!("append after eviction: {r:?}");
    assert_eq!(r.first_version, StreamVersion(10), "versions must continue");
    store.close().unwrap();
}

/// The log alone says where a stream's versions stand: a scavenge keeps a
/// stream's last event (hidden from reads) when no `$$` event records its
/// version, so even a lost lifecycle snapshot cannot make versions repeat.
#[tokio::test]
async fn versions_continue_after_a_scavenge_even_without_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_000_000_000_000));
    let config = || {
        let mut c: StoreConfig = tiny_fast(dir.path());
        c.testing.clock = Some(Arc::clone(&clock));
        c
    };
    let store = Store::open(config()).unwrap();
    let s = name("s");
    store
        .set_metadata(
            &s,
            ExpectedVersion::Any,
            StreamMetadata {
                max_age_secs: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for i in 0..25 {
        store
            .append(&s, ExpectedVersion::Any, evs(i * 4, 4))
            .await
            .unwrap();
    }
    clock.fetch_add(5_000_000, Ordering::SeqCst);
    let r = store.scavenge(ScavengeOptions::default()).unwrap();
    assert_eq!(
        r.events_removed, 99,
        "all but the last, which no $$ event records"
    );
    assert_eq!(versions(&store, "s").0, Vec::<u64>::new());
    store.close().unwrap();
    std::fs::remove_file(dir.path().join("index/LIFECYCLE")).unwrap();
    let store = Store::open(config()).unwrap();
    let r = store
        .append(&s, ExpectedVersion::Any, evs(500, 1))
        .await
        .unwrap();
    assert_eq!(r.first_version, StreamVersion(100));
    store.close().unwrap();
}

/// An erase of a stream hard-deleted before still drops its custom
/// metadata (a new tombstone without it).
#[tokio::test]
async fn erase_after_a_hard_delete_drops_the_custom_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let s = name("person-7");
    let mut custom = serde_json::Map::new();
    custom.insert("email".into(), serde_json::json!("MARKER-x@example.com"));
    store
        .append(&s, ExpectedVersion::Any, evs(0, 3))
        .await
        .unwrap();
    store
        .set_metadata(
            &s,
            ExpectedVersion::Any,
            StreamMetadata {
                custom,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store
        .delete_stream(&s, ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    let (store2, s2) = (store.clone(), s.clone());
    tokio::task::spawn_blocking(move || store2.erase(&s2).unwrap())
        .await
        .unwrap();
    let state = store.stream_lifecycle("person-7").unwrap().state;
    assert!(state.metadata.custom.is_empty());
    assert!(state.is_hard_deleted());
    store.close().unwrap();
    for sub in ["log", "index"] {
        for e in std::fs::read_dir(dir.path().join(sub)).unwrap() {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            assert!(
                !b.windows(6).any(|w| w == b"MARKER"),
                "custom metadata left in {}",
                p.display()
            );
        }
    }
}
