//! What a restored backup brings to a cluster it seeds (`logbookd --seed`):
//! a store opened as a replica's that a joining node copies whole, and the
//! erasures the node it came from still owed.

mod common;

use std::path::Path;

use common::*;
use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
use logbook_protocol::{EventId, ExpectedVersion, NewEvent, StreamVersion};
use logbook_storage::{LifecycleChange, Store, StoreConfig};

fn replica(dir: &Path) -> StoreConfig {
    StoreConfig {
        keep_removed_ids: true,
        ..tiny(dir)
    }
}

fn files_hold(dir: &Path, needle: &[u8]) -> bool {
    fn walk(dir: &Path, needle: &[u8]) -> bool {
        std::fs::read_dir(dir).unwrap().any(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, needle)
            } else {
                let b = std::fs::read(&p).unwrap();
                b.windows(needle.len()).any(|w| w == needle)
            }
        })
    }
    walk(dir, needle)
}

/// A backup of a cluster node taken after it applied an erase but before
/// its segments were rewritten holds the erased bytes and not the record
/// of the debt (`ERASING`): restored, the store owes nothing, and a seed
/// made from it would keep the bytes for good. The seed owes every erased
/// stream again (`owe_erased_streams`), and the rewrite removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_an_erasure_is_owed_is_erased_by_the_seed() {
    let (d, r) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::open(replica(d.path())).unwrap();
    let secret = name("person-1");
    let marker = "SECRET-PII-0123456789";
    store
        .append_at(
            &secret,
            ExpectedVersion::Any,
            vec![NewEvent::new(
                EventId::from_u128(1),
                "Registered",
                format!("{{\"ssn\":\"{marker}\"}}"),
            )],
            1_700_000_000_000_000,
        )
        .await
        .unwrap();
    store
        .append_at(
            &name("other"),
            ExpectedVersion::Any,
            evs(10, 3),
            1_700_000_000_000_100,
        )
        .await
        .unwrap();
    store
        .submit_lifecycle_at(
            &secret,
            ExpectedVersion::Any,
            LifecycleChange::Erase,
            EventId::from_u128(99),
            1_700_000_000_000_200,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(store.erasures_owed(), 1);
    // The backup, while the rewrite (Store::finish_erasures) has not run.
    let image = store.backup_image().unwrap();
    write_image(&image, r.path());
    drop(image);
    assert!(files_hold(r.path(), marker.as_bytes()));
    let restored = Store::open(replica(r.path())).unwrap();
    assert_eq!(restored.erasures_owed(), 0, "a backup carries no debts");
    assert_eq!(restored.owe_erased_streams().unwrap(), 1);
    assert_eq!(restored.erasures_owed(), 1);
    // Owed durably: a crash before the rewrite keeps the debt.
    restored.close().unwrap();
    let restored = Store::open(replica(r.path())).unwrap();
    assert_eq!(restored.erasures_owed(), 1);
    assert_eq!(
        tokio::task::block_in_place(|| restored.finish_erasures()).unwrap(),
        1
    );
    assert_eq!(restored.erasures_owed(), 0);
    assert!(!files_hold(r.path(), marker.as_bytes()));
    // Owing a stream erased already costs a rewrite that removes nothing.
    assert_eq!(restored.owe_erased_streams().unwrap(), 1);
    tokio::task::block_in_place(|| restored.finish_erasures()).unwrap();
    assert_eq!(restored.erasures_owed(), 0);
    assert!(!files_hold(r.path(), marker.as_bytes()));
}

/// The README says a single server that never scavenged seeds a cluster:
/// its log, opened as a replica's, copies whole to an empty replica
/// (`read_batches` -> `ingest`, what a joiner does) and both read alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_servers_log_with_lifecycle_changes_copies_to_a_replica() {
    let (d, j) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::open(tiny(d.path())).unwrap();
    let mut n = 0;
    for i in 0..60u64 {
        store
            .append(
                &name(&format!("s-{}", i % 6)),
                ExpectedVersion::Any,
                evs(n, 2),
            )
            .await
            .unwrap();
        n += 2;
    }
    store
        .set_metadata(
            &name("s-0"),
            ExpectedVersion::Any,
            StreamMetadata {
                max_count: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store
        .set_metadata(
            &name("s-5"),
            ExpectedVersion::Any,
            StreamMetadata {
                max_age_secs: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store
        .truncate(&name("s-1"), StreamVersion(7))
        .await
        .unwrap();
    store
        .delete_stream(&name("s-2"), ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();
    store
        .append(&name("s-2"), ExpectedVersion::Any, evs(n, 1))
        .await
        .unwrap();
    n += 1;
    store
        .delete_stream(&name("s-3"), ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    store
        .append(&name("s-4"), ExpectedVersion::Any, evs(n, 1))
        .await
        .unwrap();
    store.close().unwrap();

    // Reopened as the seed does (a replica's configuration).
    let seed = Store::open(replica(d.path())).unwrap();
    assert_eq!(seed.first_gap().unwrap(), None);
    let head = seed.head().0;
    let batches = tokio::task::block_in_place(|| seed.read_batches(0, head, usize::MAX)).unwrap();
    let joiner = Store::open(replica(j.path())).unwrap();
    let end = joiner
        .ingest(batches)
        .await
        .expect("the joiner copies the seed's log");
    assert_eq!(end, head);
    assert_eq!(
        events(&seed),
        events(&joiner),
        "the seed and its joiner read alike"
    );
    for s in ["s-0", "s-1", "s-2", "s-3", "s-4", "s-5"] {
        assert_eq!(
            format!("{:?}", seed.stream_lifecycle(s).map(|l| l.state)),
            format!("{:?}", joiner.stream_lifecycle(s).map(|l| l.state)),
            "{s}"
        );
    }
    // The next append at the same position on both.
    let a = seed
        .append_at(
            &name("new"),
            ExpectedVersion::Any,
            evs(900, 1),
            i64::MAX / 2,
        )
        .await
        .unwrap();
    let b = joiner
        .append_at(
            &name("new"),
            ExpectedVersion::Any,
            evs(900, 1),
            i64::MAX / 2,
        )
        .await
        .unwrap();
    assert_eq!(a.first_position, b.first_position);
}

/// A single server's erase drops the stream's records: a hole the seed's
/// check must find.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_servers_erase_leaves_a_hole_first_gap_finds() {
    let d = tempfile::tempdir().unwrap();
    let store = Store::open(tiny(d.path())).unwrap();
    for i in 0..40u64 {
        store
            .append(
                &name(if i % 2 == 0 { "a" } else { "b" }),
                ExpectedVersion::Any,
                evs(i, 1),
            )
            .await
            .unwrap();
    }
    tokio::task::block_in_place(|| store.erase(&name("a"))).unwrap();
    store.close().unwrap();
    let seed = Store::open(replica(d.path())).unwrap();
    assert!(
        seed.first_gap().unwrap().is_some(),
        "no hole found after an erase"
    );
}

/// A single server that scavenged but removed nothing has no hole (the
/// seed takes it) and holds `$scavenges` events: a joiner must copy them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_that_scavenged_nothing_copies_to_a_replica() {
    let (d, j) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = Store::open(tiny(d.path())).unwrap();
    for i in 0..30u64 {
        store
            .append(&name("a"), ExpectedVersion::Any, evs(i, 1))
            .await
            .unwrap();
    }
    tokio::task::block_in_place(|| {
        store.scavenge(logbook_storage::scavenge::ScavengeOptions::default())
    })
    .unwrap();
    store
        .append(&name("a"), ExpectedVersion::Any, evs(100, 1))
        .await
        .unwrap();
    store.close().unwrap();
    let seed = Store::open(replica(d.path())).unwrap();
    assert_eq!(seed.first_gap().unwrap(), None);
    let head = seed.head().0;
    let batches = tokio::task::block_in_place(|| seed.read_batches(0, head, usize::MAX)).unwrap();
    let joiner = Store::open(replica(j.path())).unwrap();
    assert_eq!(joiner.ingest(batches).await.expect("copied"), head);
}
