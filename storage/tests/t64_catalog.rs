//! The stream catalog: every stream, by prefix, a page at a time, through
//! index flushes, merges and restarts, and after an upgrade from tables
//! without names.

mod common;

use std::collections::BTreeSet;

use common::*;
use logbook_protocol::{ExpectedVersion, StreamInfo};
use logbook_storage::{Store, StoreConfig};

/// Every page of the catalog, concatenated, checking the pages' order.
fn list_all(store: &Store, prefix: &str, page: usize) -> Vec<StreamInfo> {
    list_all_bytes(store, prefix, page, usize::MAX)
}

/// The same, with pages of at most `bytes` (never empty).
fn list_all_bytes(store: &Store, prefix: &str, page: usize, bytes: usize) -> Vec<StreamInfo> {
    let mut out: Vec<StreamInfo> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = store
            .list_streams(prefix, after.as_deref(), page, bytes)
            .unwrap();
        assert!(p.streams.len() <= page);
        assert!(!p.streams.is_empty() || p.next.is_none());
        out.extend(p.streams);
        match p.next {
            Some(n) => {
                assert_eq!(Some(&n), out.last().map(|s| &s.stream));
                after = Some(n);
            }
            None => return out,
        }
    }
}

fn names(v: &[StreamInfo]) -> Vec<String> {
    v.iter().map(|i| i.stream.clone()).collect()
}

fn stream_name(i: u64) -> String {
    match i % 5 {
        0 => format!("account-{i}"),
        1 => format!("order-{}", i * 7919 % 1000),
        2 => format!("ü-{i}"),
        3 => format!("a{i}"),
        _ => format!("account-{}-x", i / 3),
    }
}

fn fill(
    store: &Store,
    rt: &tokio::runtime::Runtime,
    from: u64,
    to: u64,
    model: &mut BTreeSet<String>,
) {
    let mut id = from * 10;
    for i in from..to {
        let s = stream_name(i);
        rt.block_on(store.append(&name(&s), ExpectedVersion::Any, evs(id, 1 + i % 3)))
            .unwrap();
        id += 3;
        model.insert(s);
    }
}

fn check(store: &Store, model: &BTreeSet<String>) {
    let all: Vec<String> = model.iter().cloned().collect();
    for page in [1, 17, 10_000] {
        assert_eq!(names(&list_all(store, "", page)), all, "pages of {page}");
    }
    // Pages cut by bytes: a few streams each, none empty, the same list.
    assert_eq!(names(&list_all_bytes(store, "", 10_000, 400)), all);
    assert_eq!(names(&list_all_bytes(store, "", 10_000, 0)), all);
    for prefix in ["account-", "account-1", "ü", "a", "order-99", "zz", "$"] {
        let want: Vec<String> = all
            .iter()
            .filter(|n| n.starts_with(prefix))
            .cloned()
            .collect();
        assert_eq!(names(&list_all(store, prefix, 13)), want, "prefix {prefix}");
    }
    // A page of one from anywhere: the next name.
    for (i, n) in all.iter().enumerate().step_by(37) {
        let p = store.list_streams("", Some(n), 1, usize::MAX).unwrap();
        assert_eq!(
            names(&p.streams),
            all.get(i + 1).cloned().into_iter().collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_catalog_lists_every_stream_through_flushes_merges_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut model = BTreeSet::new();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    fill(&store, &rt, 0, 400, &mut model);
    check(&store, &model);
    store.close().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    check(&store, &model);
    fill(&store, &rt, 400, 900, &mut model);
    check(&store, &model);
    store.abandon();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    check(&store, &model);
    let stats = store.stats();
    assert!(stats.index_tables > 1, "{stats:?}");
    assert_eq!(stats.streams, model.len() as u64);
    store.close().unwrap();
    // The tables' names agree with their first events.
    let report = logbook_storage::verify(&tiny_fast(dir.path()), |_| {}).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A store whose index tables an earlier build wrote (format 2: no names)
/// is rebuilt from the log at the first start, once; the catalog is whole.
#[test]
fn tables_without_names_are_rebuilt_once() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut model = BTreeSet::new();
    let old = |format| StoreConfig {
        testing: logbook_storage::TestKnobs {
            table_format: format,
            ..tiny_fast(dir.path()).testing
        },
        ..tiny_fast(dir.path())
    };
    let store = Store::open(old(Some(2))).unwrap();
    fill(&store, &rt, 0, 300, &mut model);
    store.close().unwrap();
    let store = Store::open(old(None)).unwrap();
    let reason = store.recovery_report().index_rebuilt.clone().unwrap();
    assert!(reason.contains("format 2"), "{reason}");
    check(&store, &model);
    store.close().unwrap();
    let store = Store::open(old(None)).unwrap();
    assert_eq!(store.recovery_report().index_rebuilt, None);
    check(&store, &model);
    store.close().unwrap();
}
