//! Stream lifecycle through the engine's API: metadata, truncation, soft
//! and hard delete, max_count and max_age (with an injected clock), on
//! every read path, across restarts, against a model.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common::*;
use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
use logbook_protocol::{
    Direction, ExpectedVersion, LogPosition, RecordedEvent, StreamInfo, StreamVersion,
};
use logbook_storage::scavenge::ScavengeOptions;
use logbook_storage::{AppendError, ReadError, Store, StoreConfig};

/// Every event of the global log a forward read from 0 returns, paged by
/// `page`, checking that the pages tile `[0, head)`: each starts where the
/// last one's `through` ended, and the last ends at the head.
fn read_all_tiled(store: &Store, page: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let s = store
            .read_all(Some(LogPosition(from)), Direction::Forward, page)
            .unwrap();
        assert!(s.through.0 >= from, "a page ends before it starts");
        for e in &s.events {
            assert!(e.position.0 >= from && e.position.0 < s.through.0);
        }
        out.extend(s.events);
        match s.next {
            Some(n) => {
                assert_eq!(n, s.through, "next is where the scan ended");
                assert!(n.0 > from || page == 0, "no progress at {from}");
                from = n.0;
            }
            None => {
                assert_eq!(s.through, s.head, "the last page reaches the head");
                return out;
            }
        }
    }
}

/// The same, backward from the end, reversed.
fn read_all_backward(store: &Store, page: usize) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = None;
    loop {
        let s = store.read_all(from, Direction::Backward, page).unwrap();
        out.extend(s.events);
        match s.next {
            Some(n) => from = Some(n),
            None => {
                assert_eq!(s.through.0, 0);
                out.reverse();
                return out;
            }
        }
    }
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.0).collect()
}

fn stream_events(store: &Store, s: &str) -> Result<Option<Vec<u64>>, ReadError> {
    let slice = store.read_stream(s, None, Direction::Forward, 10_000)?;
    Ok(slice.last_version.map(|_| versions(&slice.events)))
}

#[tokio::test]
async fn soft_delete_then_append_continues_the_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny(dir.path())).unwrap();
    let a = name("a");
    store
        .append(&a, ExpectedVersion::NoStream, evs(0, 3))
        .await
        .unwrap();
    store
        .append(&name("b"), ExpectedVersion::Any, evs(10, 1))
        .await
        .unwrap();
    let w = store
        .delete_stream(&a, ExpectedVersion::Exact(StreamVersion(2)), Deletion::Soft)
        .await
        .unwrap();
    assert_eq!(w.state.deleted, Some(Deletion::Soft));
    assert_eq!(w.state.metadata.truncate_before, Some(3));
    assert_eq!(w.position, LogPosition(4));
    // Not found, on every read path; the delete is in the global log.
    assert_eq!(stream_events(&store, "a").unwrap(), None);
    let back = store
        .read_stream("a", None, Direction::Backward, 10)
        .unwrap();
    assert!(back.events.is_empty() && back.last_version.is_none());
    let all = read_all_tiled(&store, 2);
    let streams: Vec<&str> = all.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams, vec!["b", "$$a"]);
    assert_eq!(all[1].event_type.as_str(), "$deleted");
    assert_eq!(read_all_backward(&store, 1), all);
    // An append expecting no stream recreates it at the next version.
    let r = store
        .append(&a, ExpectedVersion::NoStream, evs(20, 2))
        .await
        .unwrap();
    assert_eq!(r.first_version, StreamVersion(3));
    assert_eq!(stream_events(&store, "a").unwrap(), Some(vec![3, 4]));
    let s = store
        .read_stream("a", None, Direction::Forward, 10)
        .unwrap();
    assert_eq!(s.last_version, Some(StreamVersion(4)));
    // And its old events stay gone after a restart.
    store.close().unwrap();
    let store = Store::open(tiny(dir.path())).unwrap();
    assert_eq!(stream_events(&store, "a").unwrap(), Some(vec![3, 4]));
    assert_eq!(read_all_tiled(&store, 3).len(), 4);
    // Deleting with a wrong expected version is refused.
    match store
        .delete_stream(&a, ExpectedVersion::NoStream, Deletion::Soft)
        .await
    {
        Err(AppendError::WrongExpectedVersion { actual, .. }) => {
            assert_eq!(actual, Some(StreamVersion(4)))
        }
        other => panic!("{other:?}"),
    }
    store.close().unwrap();
}

#[tokio::test]
async fn hard_delete_is_for_ever() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(tiny(dir.path())).unwrap();
    let a = name("a");
    store
        .append(&a, ExpectedVersion::NoStream, evs(0, 3))
        .await
        .unwrap();
    store
        .delete_stream(&a, ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    for round in 0..3 {
        assert!(matches!(
            store.read_stream("a", None, Direction::Forward, 10),
            Err(ReadError::StreamDeleted { .. })
        ));
        for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
            assert!(matches!(
                store.append(&a, expected, evs(100 + round, 1)).await,
                Err(AppendError::StreamDeleted { .. })
            ));
        }
        assert!(matches!(
            store
                .set_metadata(&a, ExpectedVersion::Any, StreamMetadata::default())
                .await,
            Err(AppendError::StreamDeleted { .. })
        ));
        assert!(matches!(
            store
                .delete_stream(&a, ExpectedVersion::Any, Deletion::Soft)
                .await,
            Err(AppendError::StreamDeleted { .. })
        ));
        let all = read_all_tiled(&store, 10);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].event_type.as_str(), "$tombstone");
        // Across a clean restart, a crash, and a lost snapshot.
        match round {
            0 => store.close().unwrap(),
            1 => store.abandon(),
            _ => {
                store.close().unwrap();
                std::fs::remove_file(dir.path().join("index/LIFECYCLE")).unwrap();
            }
        }
        store = Store::open(tiny(dir.path())).unwrap();
    }
    store.close().unwrap();
}

#[tokio::test]
async fn truncate_in_the_middle_of_a_batch_keeps_versions_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny(dir.path())).unwrap();
    let a = name("a");
    store
        .append(&a, ExpectedVersion::NoStream, evs(0, 5))
        .await
        .unwrap();
    let w = store.truncate(&a, StreamVersion(2)).await.unwrap();
    assert_eq!(w.state.metadata.truncate_before, Some(2));
    let s = store
        .read_stream("a", None, Direction::Forward, 10)
        .unwrap();
    assert_eq!(versions(&s.events), vec![2, 3, 4]);
    assert_eq!(
        s.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(s.events[0].id, ev(2).id);
    // From below the first live version: starts at it.
    let s = store
        .read_stream("a", Some(StreamVersion(1)), Direction::Forward, 1)
        .unwrap();
    assert_eq!(versions(&s.events), vec![2]);
    assert_eq!(s.next, Some(StreamVersion(3)));
    let s = store
        .read_stream("a", None, Direction::Backward, 10)
        .unwrap();
    assert_eq!(versions(&s.events), vec![4, 3, 2]);
    assert_eq!(s.next, None);
    let s = store
        .read_stream("a", Some(StreamVersion(1)), Direction::Backward, 10)
        .unwrap();
    assert!(s.events.is_empty());
    // The global log: the survivors of the batch, then the truncation.
    let all = read_all_tiled(&store, 1);
    assert_eq!(
        all.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert_eq!(read_all_backward(&store, 2), all);
    // A lower truncation changes nothing; metadata cannot lower it either.
    let w = store.truncate(&a, StreamVersion(1)).await.unwrap();
    assert_eq!(w.state.metadata.truncate_before, Some(2));
    let w = store
        .set_metadata(
            &a,
            ExpectedVersion::Any,
            StreamMetadata {
                truncate_before: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(w.state.metadata.truncate_before, Some(2));
    // The metadata stream serves its latest state only (each event holds
    // the whole state; older ones are superseded).
    let meta = store
        .read_stream("$$a", None, Direction::Forward, 10)
        .unwrap();
    let got: Vec<(&str, u64)> = meta
        .events
        .iter()
        .map(|e| (e.event_type.as_str(), e.version.0))
        .collect();
    assert_eq!(got, vec![("$metadata", 2)]);
    // Nobody appends to a metadata stream directly.
    assert!(matches!(
        store
            .append(&name("$$a"), ExpectedVersion::Any, evs(50, 1))
            .await,
        Err(AppendError::ReservedStream { .. })
    ));
    store.close().unwrap();
}

#[tokio::test]
async fn max_count_and_max_age_follow_the_clock_and_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicI64::new(1_000_000_000_000));
    let config = || {
        let mut c: StoreConfig = tiny(dir.path());
        c.testing.clock = Some(Arc::clone(&clock));
        c
    };
    let store = Store::open(config()).unwrap();
    let (a, b) = (name("a"), name("b"));
    store
        .append(&a, ExpectedVersion::NoStream, evs(0, 5))
        .await
        .unwrap();
    let set = |max_count, max_age_secs| StreamMetadata {
        max_count,
        max_age_secs,
        ..Default::default()
    };
    let w = store
        .set_metadata(&a, ExpectedVersion::NoStream, set(Some(2), None))
        .await
        .unwrap();
    assert_eq!(w.meta_version, StreamVersion(0));
    assert_eq!(stream_events(&store, "a").unwrap(), Some(vec![3, 4]));
    store
        .append(&a, ExpectedVersion::Any, evs(5, 1))
        .await
        .unwrap();
    assert_eq!(stream_events(&store, "a").unwrap(), Some(vec![4, 5]));
    let live_a: Vec<u64> = read_all_tiled(&store, 2)
        .iter()
        .filter(|e| e.stream.as_str() == "a")
        .map(|e| e.version.0)
        .collect();
    assert_eq!(live_a, vec![4, 5]);
    // The metadata's own expected version.
    assert!(matches!(
        store
            .set_metadata(&a, ExpectedVersion::NoStream, set(None, None))
            .await,
        Err(AppendError::WrongExpectedVersion { .. })
    ));

    // max_age: b's first events age out as the clock moves.
    store
        .append(&b, ExpectedVersion::NoStream, evs(10, 2))
        .await
        .unwrap();
    clock.fetch_add(30_000_000, Ordering::SeqCst);
    store
        .append(&b, ExpectedVersion::Any, evs(12, 1))
        .await
        .unwrap();
    store
        .set_metadata(&b, ExpectedVersion::Any, set(None, Some(60)))
        .await
        .unwrap();
    assert_eq!(stream_events(&store, "b").unwrap(), Some(vec![0, 1, 2]));
    clock.fetch_add(45_000_000, Ordering::SeqCst);
    assert_eq!(stream_events(&store, "b").unwrap(), Some(vec![2]));
    let back = store
        .read_stream("b", None, Direction::Backward, 10)
        .unwrap();
    assert_eq!(versions(&back.events), vec![2]);
    assert!(
        !read_all_tiled(&store, 1)
            .iter()
            .any(|e| e.stream.as_str() == "b" && e.version.0 < 2)
    );
    // Across a restart (max_count needs the last version again).
    store.close().unwrap();
    let store = Store::open(config()).unwrap();
    assert_eq!(stream_events(&store, "a").unwrap(), Some(vec![4, 5]));
    assert_eq!(stream_events(&store, "b").unwrap(), Some(vec![2]));
    clock.fetch_add(60_000_000, Ordering::SeqCst);
    assert_eq!(stream_events(&store, "b").unwrap(), Some(vec![]));
    store.close().unwrap();
}

/// Random appends, deletes, truncations and metadata over many streams,
/// with restarts (clean, crashed, and without the lifecycle snapshot):
/// every read path returns exactly what a model says is live.
#[test]
fn random_lifecycles_match_a_model() {
    let mut rewritten = 0;
    for seed in 0..4u64 {
        rewritten += run_model(seed);
    }
    assert!(rewritten > 10, "scavenges rewrote {rewritten} segments");
}

#[derive(Default, Clone)]
struct ModelStream {
    /// (version, position) of every event written.
    events: Vec<(u64, u64)>,
    tb: u64,
    max_count: Option<u64>,
    deleted: Option<Deletion>,
    /// The last version when it was soft-deleted.
    deleted_last: Option<u64>,
    /// Lifecycle events of `$$s`: positions.
    meta: Vec<(u64, u64)>,
    /// Erased (a hard delete alone is not).
    erased: bool,
}

impl ModelStream {
    fn last(&self) -> Option<u64> {
        self.events.last().map(|e| e.0)
    }
    fn first_live(&self) -> u64 {
        let by_count = match (self.max_count, self.last()) {
            (Some(n), Some(l)) => (l + 1).saturating_sub(n),
            _ => 0,
        };
        self.tb.max(by_count)
    }
    fn live(&self) -> Vec<(u64, u64)> {
        if self.deleted == Some(Deletion::Hard) {
            return Vec::new();
        }
        let f = self.first_live();
        self.events.iter().copied().filter(|e| e.0 >= f).collect()
    }
    fn not_found(&self) -> bool {
        self.events.is_empty()
            || (self.deleted == Some(Deletion::Soft) && self.last() <= self.deleted_last)
    }
}

fn run_model(seed: u64) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut store = Store::open(tiny_fast(dir.path())).unwrap();
    let mut model: BTreeMap<String, ModelStream> = BTreeMap::new();
    let mut head = 0u64;
    let mut scavenge_events = 0u64;
    let mut rewritten = 0u64;
    let mut id = 1_000_000u64;
    for step in 0..400 {
        let s = format!("s{}", next(12));
        let st = model.entry(s.clone()).or_default();
        let hard = st.deleted == Some(Deletion::Hard);
        match next(10) {
            0..=5 => {
                let n = 1 + next(4);
                let r = rt.block_on(store.append(&name(&s), ExpectedVersion::Any, evs(id, n)));
                id += n;
                if hard {
                    assert!(matches!(r, Err(AppendError::StreamDeleted { .. })));
                } else {
                    let r = r.unwrap();
                    let first = st.last().map_or(0, |l| l + 1);
                    assert_eq!(r.first_version.0, first, "step {step}");
                    assert_eq!(r.first_position.0, head);
                    for i in 0..n {
                        st.events.push((first + i, head + i));
                    }
                    head += n;
                }
            }
            6 => {
                let before = next(st.last().map_or(1, |l| l + 2));
                let r = rt.block_on(store.truncate(&name(&s), StreamVersion(before)));
                if hard {
                    assert!(r.is_err());
                } else {
                    r.unwrap();
                    st.tb = st.tb.max(before);
                    st.meta.push((st.meta.len() as u64, head));
                    head += 1;
                }
            }
            7 => {
                let mc = (next(2) == 0).then(|| 1 + next(4));
                let meta = StreamMetadata {
                    max_count: mc,
                    ..Default::default()
                };
                let r = rt.block_on(store.set_metadata(&name(&s), ExpectedVersion::Any, meta));
                if hard {
                    assert!(r.is_err());
                } else {
                    r.unwrap();
                    // What the old max_count removed stays removed.
                    st.tb = st.tb.max(st.first_live());
                    st.max_count = mc;
                    st.meta.push((st.meta.len() as u64, head));
                    head += 1;
                }
            }
            8 => {
                let mode = if next(4) == 0 {
                    Deletion::Hard
                } else {
                    Deletion::Soft
                };
                let r = rt.block_on(store.delete_stream(&name(&s), ExpectedVersion::Any, mode));
                if hard {
                    assert!(r.is_err());
                } else {
                    r.unwrap();
                    st.tb = st.tb.max(st.last().map_or(0, |l| l + 1));
                    st.deleted = Some(mode);
                    st.deleted_last = st.last();
                    st.meta.push((st.meta.len() as u64, head));
                    head += 1;
                }
            }
            _ => {
                // Restart (clean, crashed, or without the snapshot), or a
                // scavenge, or an erase.
                match next(5) {
                    0 => store.close().unwrap(),
                    1 => store.abandon(),
                    2 => {
                        store.close().unwrap();
                        let _ = std::fs::remove_file(dir.path().join("index/LIFECYCLE"));
                    }
                    3 => {
                        store.scavenge(ScavengeOptions::default()).unwrap();
                        // Its start and its report, in `$scavenges`.
                        head += 2;
                        scavenge_events += 2;
                        continue;
                    }
                    _ => {
                        store.erase(&name(&s)).unwrap();
                        if !st.erased {
                            // Its tombstone forgets the earlier settings.
                            st.tb = st.last().map_or(0, |l| l + 1);
                            st.max_count = None;
                            st.deleted = Some(Deletion::Hard);
                            st.meta.push((st.meta.len() as u64, head));
                            st.erased = true;
                        } else {
                            // Erased before: the erase seals with a mark in
                            // `$scavenges`.
                            scavenge_events += 1;
                        }
                        head += 1;
                        continue;
                    }
                }
                store = Store::open(tiny_fast(dir.path())).unwrap();
            }
        }
        if step % 25 == 0 || step == 399 {
            check(&store, &model, head, scavenge_events);
        }
        rewritten = rewritten.max(store.stats().scavenge_segments);
    }
    store.close().unwrap();
    rewritten
}

fn check(store: &Store, model: &BTreeMap<String, ModelStream>, head: u64, scavenge_events: u64) {
    assert_eq!(store.head().0, head);
    let mut expected: Vec<(String, u64, u64)> = Vec::new();
    // `$scavenges` events: starts and reports (and erases' marks).
    let sc = store
        .read_stream("$scavenges", None, Direction::Forward, 100_000)
        .unwrap();
    assert_eq!(sc.events.len() as u64, scavenge_events);
    for e in &sc.events {
        expected.push(("$scavenges".into(), e.version.0, e.position.0));
    }
    for (s, st) in model {
        for (v, p) in st.live() {
            expected.push((s.clone(), v, p));
        }
        // Only the latest state of each metadata stream is live.
        if let Some(&(v, p)) = st.meta.last() {
            expected.push((format!("$${s}"), v, p));
        }
        let read = store.read_stream(s, None, Direction::Forward, 10_000);
        if st.deleted == Some(Deletion::Hard) {
            assert!(matches!(read, Err(ReadError::StreamDeleted { .. })), "{s}");
            continue;
        }
        let read = read.unwrap();
        if st.not_found() {
            assert_eq!(read.last_version, None, "{s} should not be found");
            assert!(read.events.is_empty());
        } else {
            assert_eq!(read.last_version.map(|v| v.0), st.last(), "{s}");
            let got: Vec<(u64, u64)> = read
                .events
                .iter()
                .map(|e| (e.version.0, e.position.0))
                .collect();
            assert_eq!(got, st.live(), "{s}");
        }
    }
    check_catalog(store, model, scavenge_events);
    expected.sort_by_key(|e| e.2);
    for page in [1, 7, 1000] {
        let got: Vec<(String, u64, u64)> = read_all_tiled(store, page)
            .iter()
            .map(|e| (e.stream.as_str().to_owned(), e.version.0, e.position.0))
            .collect();
        assert_eq!(got, expected, "read-all by pages of {page}");
    }
    let back: Vec<u64> = read_all_backward(store, 5)
        .iter()
        .map(|e| e.position.0)
        .collect();
    assert_eq!(back, expected.iter().map(|e| e.2).collect::<Vec<_>>());
}

/// Every page of the stream catalog, concatenated.
fn list_all(store: &Store, prefix: &str, page: usize) -> Vec<StreamInfo> {
    let mut out: Vec<StreamInfo> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = store
            .list_streams(prefix, after.as_deref(), page, usize::MAX)
            .unwrap();
        assert!(p.streams.len() <= page);
        out.extend(p.streams);
        match p.next {
            Some(n) => {
                assert_eq!(
                    Some(&n),
                    out.last().map(|s| &s.stream),
                    "next is the last name"
                );
                after = Some(n);
            }
            None => return out,
        }
    }
}

/// The catalog against the model: every stream that has events or a
/// lifecycle state, with its versions, live events, deletion and metadata;
/// by pages of any size, and by prefix.
fn check_catalog(store: &Store, model: &BTreeMap<String, ModelStream>, scavenge_events: u64) {
    let mut want: Vec<StreamInfo> = Vec::new();
    if scavenge_events > 0 {
        want.push(StreamInfo {
            stream: "$scavenges".into(),
            last_version: Some(StreamVersion(scavenge_events - 1)),
            first_version: Some(StreamVersion(0)),
            event_count: scavenge_events,
            ..StreamInfo::default()
        });
    }
    for (s, st) in model {
        if st.events.is_empty() && st.meta.is_empty() {
            continue;
        }
        let deleted = match st.deleted {
            Some(Deletion::Hard) => Some(Deletion::Hard),
            Some(Deletion::Soft) if st.last() <= st.deleted_last => Some(Deletion::Soft),
            _ => None,
        };
        let live = if deleted.is_some() {
            Vec::new()
        } else {
            st.live()
        };
        let state = store.stream_lifecycle(s);
        assert_eq!(state.is_some(), !st.meta.is_empty(), "{s}");
        want.push(StreamInfo {
            stream: s.clone(),
            last_version: st.last().map(StreamVersion),
            first_version: live.first().map(|e| StreamVersion(e.0)),
            event_count: live.len() as u64,
            deleted,
            metadata: state
                .as_ref()
                .map(|w| w.state.metadata.clone())
                .unwrap_or_default(),
            meta_version: st.meta.last().map(|m| StreamVersion(m.0)),
        });
    }
    want.sort_by(|a, b| a.stream.cmp(&b.stream));
    for page in [1, 3, 1000] {
        assert_eq!(
            list_all(store, "", page),
            want,
            "catalog by pages of {page}"
        );
    }
    let s1: Vec<StreamInfo> = want
        .iter()
        .filter(|i| i.stream.starts_with("s1"))
        .cloned()
        .collect();
    assert_eq!(list_all(store, "s1", 2), s1);
    assert!(list_all(store, "$$", 10).is_empty());
    assert!(list_all(store, "zz", 10).is_empty());
}
