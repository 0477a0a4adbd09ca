//! Streams whose events span many segments and index tables read back in
//! order, both directions, before and after restarts; index merges happen.

mod common;

use common::*;
use logbook_protocol::{Direction, ExpectedVersion, LogPosition, StreamVersion};
use logbook_storage::Store;

#[test]
fn streams_spanning_segments_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let streams = 3u64;
    let mut n = 0;
    for i in 0..400u64 {
        let batch = 1 + i % 4;
        store
            .append_blocking(
                &name(&format!("s-{}", i % streams)),
                ExpectedVersion::Any,
                evs(n, batch),
            )
            .unwrap();
        n += batch;
    }
    let stats = store.stats();
    assert!(stats.segments > 20, "{stats:?}");
    let check = |store: &Store| {
        let all = store.read_all(None, Direction::Forward, 100_000).unwrap();
        assert_eq!(all.events.len() as u64, n);
        assert!(
            all.events
                .iter()
                .enumerate()
                .all(|(i, e)| e.position.0 == i as u64)
        );
        let back = store.read_all(None, Direction::Backward, 100_000).unwrap();
        assert!(
            back.events
                .iter()
                .rev()
                .map(|e| e.position)
                .eq(all.events.iter().map(|e| e.position))
        );
        // Reads across every segment leave at most the budget of sparse
        // position index entries loaded (2 in `tiny`, plus the last one
        // loaded), dropping and reloading them as they go.
        let loaded = store.stats().position_index_entries;
        assert!(loaded <= 4, "{loaded} position index entries loaded");
        for s in 0..streams {
            let name = format!("s-{s}");
            let want: Vec<_> = all
                .events
                .iter()
                .filter(|e| e.stream.as_str() == name)
                .collect();
            let fwd = store
                .read_stream(&name, None, Direction::Forward, 100_000)
                .unwrap();
            assert_eq!(fwd.events.len(), want.len());
            for (i, (g, w)) in fwd.events.iter().zip(&want).enumerate() {
                assert_eq!(g.version, StreamVersion(i as u64));
                assert_eq!(g, *w);
            }
            let bwd = store
                .read_stream(&name, None, Direction::Backward, 100_000)
                .unwrap();
            assert!(bwd.events.iter().rev().eq(fwd.events.iter()));
            // Paging through in small steps gives the same sequence.
            let mut paged = Vec::new();
            let mut from = Some(StreamVersion(0));
            while let Some(f) = from {
                let page = store
                    .read_stream(&name, Some(f), Direction::Forward, 7)
                    .unwrap();
                paged.extend(page.events);
                from = page.next;
            }
            assert_eq!(paged, fwd.events);
            let mut paged = Vec::new();
            let mut from = None;
            loop {
                let page = store
                    .read_stream(&name, from, Direction::Backward, 5)
                    .unwrap();
                paged.extend(page.events);
                match page.next {
                    Some(v) => from = Some(v),
                    None => break,
                }
            }
            assert!(paged.iter().rev().eq(fwd.events.iter()));
        }
        // Paging the global log backward from the middle.
        let mid = n / 2;
        let page = store
            .read_all(Some(LogPosition(mid)), Direction::Backward, 10)
            .unwrap();
        assert_eq!(
            page.events.iter().map(|e| e.position.0).collect::<Vec<_>>(),
            (mid - 9..=mid).rev().collect::<Vec<_>>()
        );
    };
    check(&store);
    // Merges run on their own thread; closing flushes every memtable.
    wait_until(&store, "a merge", |s| s.index_merges > 0);
    store.close().unwrap();
    drop(store);
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    check(&store);
    drop(store);
    let report = logbook_storage::verify(&tiny_fast(dir.path()), |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.index_entries, n);
}
