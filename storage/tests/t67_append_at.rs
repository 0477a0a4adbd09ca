//! Appends with a commit time chosen by the caller (`Store::append_at`, what
//! a replica applies with the leader's time): two stores given the same
//! appends in the same order, one waiting for each, the other pipelining
//! them all so that the writer groups them as it likes, hold the same
//! events at the same positions with the same timestamps; a time earlier
//! than the previous record's is raised to it; and the clock plays no part.

mod common;

use common::events;
use logbook_protocol::{Direction, EventId, ExpectedVersion, NewEvent, StreamName};
use logbook_storage::{Store, StoreConfig};

const BASE: i64 = 1_700_000_000_000_000;

fn appends() -> Vec<(StreamName, NewEvent, i64)> {
    (0..300u64)
        .map(|i| {
            let stream = StreamName::new(format!("s-{}", i % 11)).unwrap();
            let event = NewEvent::new(
                EventId::from_u128(u128::from(i) + 1),
                "Happened",
                format!("{{\"i\":{i}}}"),
            );
            // Every seventh goes back in time.
            let at = if i % 7 == 3 {
                BASE
            } else {
                BASE + i as i64 * 10
            };
            (stream, event, at)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_appends_give_the_same_log_whatever_the_grouping() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open(StoreConfig::new(da.path())).unwrap();
    let b = Store::open(StoreConfig::new(db.path())).unwrap();
    for (stream, event, at) in appends() {
        a.append_at(&stream, ExpectedVersion::Any, vec![event], at)
            .await
            .unwrap();
    }
    let mut pending = Vec::new();
    for (stream, event, at) in appends() {
        pending.push(
            b.submit_at(&stream, ExpectedVersion::Any, vec![event], at)
                .await
                .unwrap(),
        );
    }
    for p in pending {
        p.await.unwrap();
    }
    let (ea, eb) = (events(&a), events(&b));
    assert_eq!(ea.len(), 300);
    assert_eq!(ea, eb);
    // Never backwards; a time before the previous record's is raised; the
    // wall clock (years after BASE) never shows.
    let times: Vec<i64> = ea.iter().map(|e| e.4).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(times[3], times[2], "raised to the previous record's");
    assert_eq!(times[299], BASE + 299 * 10);
    a.close().unwrap();
    b.close().unwrap();

    // Reopened, the stores go on from their last timestamp alike.
    let a = Store::open(StoreConfig::new(da.path())).unwrap();
    let s = StreamName::new("after").unwrap();
    let r = a
        .append_at(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::from_u128(999), "Later", "{}")],
            BASE,
        )
        .await
        .unwrap();
    let last = a
        .read_all(Some(r.first_position), Direction::Forward, 1)
        .unwrap()
        .events;
    assert_eq!(last[0].timestamp_us, BASE + 299 * 10);
}

/// `Store::resend`: a stored batch is answered with its original result
/// and nothing is written; a batch not stored is refused with `NotStored`
/// and nothing is written (its ids stay free); a partial or altered batch
/// is refused as an append would refuse it. Also after a reopen, when the
/// ids come from the index tables rather than the writer's memory. A
/// resend at a time counts only the batch committed at that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_answers_stored_batches_and_writes_nothing() {
    use logbook_storage::AppendError;
    let dir = tempfile::tempdir().unwrap();
    let stream = StreamName::new("acct-1").unwrap();
    let ev =
        |i: u128, body: &str| NewEvent::new(EventId::from_u128(i), "Happened", body.to_owned());
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let at = 1_700_000_000_000_000;
    let first = store
        .append_at(
            &stream,
            ExpectedVersion::NoStream,
            vec![ev(1, "{}"), ev(2, "{}")],
            at,
        )
        .await
        .unwrap();
    store
        .append(&stream, ExpectedVersion::Any, vec![ev(3, "{}")])
        .await
        .unwrap();
    for reopen in [false, true] {
        let store = if reopen {
            store.close().unwrap();
            Store::open(StoreConfig::new(dir.path())).unwrap()
        } else {
            store.clone()
        };
        let head = store.head();
        let again = store
            .resend(&stream, vec![ev(1, "{}"), ev(2, "{}")], None)
            .await
            .unwrap();
        assert_eq!(again, first);
        let own = store
            .resend(&stream, vec![ev(1, "{}"), ev(2, "{}")], Some(at))
            .await
            .unwrap();
        assert_eq!(own, first, "the batch committed at its own time");
        let later = store
            .resend(&stream, vec![ev(1, "{}"), ev(2, "{}")], Some(at + 1))
            .await;
        assert!(
            matches!(later, Err(AppendError::NotStored { .. })),
            "the batch committed at another time is not this resend's: {later:?}"
        );
        let new = store.resend(&stream, vec![ev(9, "{}")], None).await;
        assert!(matches!(new, Err(AppendError::NotStored { .. })), "{new:?}");
        let altered = store.resend(&stream, vec![ev(3, "{\"x\":1}")], None).await;
        assert!(
            matches!(altered, Err(AppendError::DuplicateEventId { .. })),
            "{altered:?}"
        );
        assert_eq!(store.head(), head, "a resend wrote");
        // The refused id was not kept: it can still be appended.
        if reopen {
            store
                .append(&stream, ExpectedVersion::Any, vec![ev(9, "{}")])
                .await
                .unwrap();
            assert_eq!(store.head().0, head.0 + 1);
        }
    }
}

/// The configuration of both stores of a copy: small segments, so that
/// the copy crosses roll-overs (and the two roll over at other records).
fn small(dir: &std::path::Path, segment_bytes: u64) -> StoreConfig {
    StoreConfig {
        segment_bytes,
        max_batch_bytes: 2 << 10,
        max_event_bytes: 1 << 10,
        max_group_bytes: 4 << 10,
        index_flush_entries: 32,
        ..StoreConfig::new(dir)
    }
}

/// Every record of `store`, as written.
fn records(store: &Store) -> Vec<logbook_storage::LogBatch> {
    store.read_batches(0, u64::MAX, usize::MAX).unwrap()
}

/// What reads see of `store`: every live event, each stream's version and
/// lifecycle state.
fn visible(store: &Store, streams: &[StreamName]) -> Vec<String> {
    let mut out: Vec<String> = store
        .read_all(None, Direction::Forward, 100_000)
        .unwrap()
        .events
        .into_iter()
        .map(|e| format!("{e:?}"))
        .collect();
    for s in streams {
        out.push(format!(
            "{s}: {:?} {:?}",
            store.stream_version(s.as_str()).unwrap(),
            store.stream_lifecycle(s.as_str()).map(|l| l.state)
        ));
    }
    out
}

/// A store written with appends and every lifecycle change, on the clock
/// and at chosen times.
async fn written(store: &Store) -> Vec<StreamName> {
    use logbook_protocol::StreamVersion;
    use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
    let streams: Vec<StreamName> = (0..6)
        .map(|i| StreamName::new(format!("acct-{i}")).unwrap())
        .collect();
    let ev = |i: u64| {
        NewEvent::new(
            EventId::from_u128(u128::from(i) + 1),
            "Happened",
            format!(
                "{{\"i\":{i},\"pad\":\"{}\"}}",
                "x".repeat((i % 40) as usize)
            ),
        )
    };
    for i in 0..400u64 {
        if i > 250 && i % 6 == 4 {
            // The hard-deleted stream takes no more appends.
            continue;
        }
        let s = &streams[(i % 6) as usize];
        let batch: Vec<NewEvent> = (0..1 + i % 3).map(|k| ev(i * 10 + k)).collect();
        if i % 2 == 0 {
            store.append(s, ExpectedVersion::Any, batch).await.unwrap();
        } else {
            store
                .append_at(s, ExpectedVersion::Any, batch, BASE + i as i64)
                .await
                .unwrap();
        }
        match i {
            // A one-character stream, one event, deleted: its removed
            // record is the shortest there is.
            3 => {
                let a = StreamName::new("a").unwrap();
                let e = NewEvent::new(EventId::from_u128(900_000), "A", "");
                store
                    .append(&a, ExpectedVersion::Any, vec![e])
                    .await
                    .unwrap();
                store
                    .delete_stream(&a, ExpectedVersion::Any, Deletion::Hard)
                    .await
                    .unwrap();
            }
            100 => {
                let m = StreamMetadata {
                    max_count: Some(5),
                    ..Default::default()
                };
                store
                    .set_metadata(&streams[1], ExpectedVersion::Any, m)
                    .await
                    .unwrap();
            }
            150 => {
                store
                    .truncate(&streams[2], StreamVersion(20))
                    .await
                    .unwrap();
            }
            200 => {
                store
                    .delete_stream(&streams[3], ExpectedVersion::Any, Deletion::Soft)
                    .await
                    .unwrap();
            }
            250 => {
                store
                    .delete_stream(&streams[4], ExpectedVersion::Any, Deletion::Hard)
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    streams
}

/// A replica that lacks the log copies it as records (`read_batches` on
/// one that has it, `ingest` on its own): in chunks, across roll-overs at
/// other records than the source's, with lifecycle states. The copy holds
/// the same records at the same positions, reads alike (retention,
/// truncation, deletions), stays so after a reopen, and takes the next
/// appends alike; a record at another position than the head is refused
/// and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_copied_record_by_record_is_the_same_log() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open(small(da.path(), 16 << 10)).unwrap();
    let streams = written(&a).await;
    let b = Store::open(small(db.path(), 11 << 10)).unwrap();
    let head = a.head().0;
    // In chunks of about 2 KiB, from wherever the copy stands.
    let mut chunks = 0;
    while b.head().0 < head {
        let batches = a.read_batches(b.head().0, head, 2 << 10).unwrap();
        assert!(!batches.is_empty());
        let bytes: usize = batches
            .iter()
            .flat_map(|b| &b.events)
            .map(|e| e.data.len() + e.metadata.len())
            .sum();
        assert!(batches.len() == 1 || bytes <= 2 << 10, "{bytes} bytes");
        let end = batches.last().unwrap().end_position();
        assert_eq!(b.ingest(batches).await.unwrap(), end);
        chunks += 1;
    }
    assert!(chunks > 10, "{chunks} chunks");
    assert_eq!(records(&a), records(&b));
    assert_eq!(visible(&a, &streams), visible(&b, &streams));
    assert!(
        b.stream_lifecycle(streams[4].as_str())
            .unwrap()
            .state
            .is_hard_deleted()
    );

    // A record that is not the next one is refused, and nothing is written.
    let again = a.read_batches(0, head, 1).unwrap();
    assert!(b.ingest(again).await.is_err());
    let mut all = a.read_batches(0, head, usize::MAX).unwrap();
    let ahead = all.split_off(5);
    let cdir = tempfile::tempdir().unwrap();
    let c = Store::open(small(cdir.path(), 11 << 10)).unwrap();
    assert!(c.ingest(ahead.clone()).await.is_err());
    assert_eq!(c.head().0, 0);
    assert_eq!(b.head().0, head);
    // Nor one committed before the record it follows (a time the copy
    // would raise): refused, nothing written.
    let end = c.ingest(all).await.unwrap();
    let mut early = ahead[0].clone();
    early.timestamp_us = ahead[0].timestamp_us - 1_000_000_000;
    assert!(c.ingest(vec![early]).await.is_err());
    assert_eq!(c.head().0, end);
    c.ingest(ahead).await.unwrap();
    assert_eq!(records(&c), records(&a));

    // Reopened, it is the same log, and the same appends give the same
    // results on both.
    b.close().unwrap();
    let b = Store::open(small(db.path(), 11 << 10)).unwrap();
    assert_eq!(records(&a), records(&b));
    assert_eq!(visible(&a, &streams), visible(&b, &streams));
    for (i, s) in streams.iter().enumerate() {
        let e = NewEvent::new(EventId::from_u128(1_000_000 + i as u128), "Later", "{}");
        let ra = a
            .append_at(s, ExpectedVersion::Any, vec![e.clone()], BASE)
            .await;
        let rb = b.append_at(s, ExpectedVersion::Any, vec![e], BASE).await;
        assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
    }
    assert_eq!(records(&a), records(&b));
}

/// A copy cut short by a power cut (written without syncs, then a random
/// part of the unsynced writes kept, torn) holds a prefix of the records,
/// and goes on from its head to the same log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_cut_by_a_power_cut_goes_on_from_its_head() {
    use logbook_storage::Durability;
    use logbook_storage::fs::{CrashMode, MemFs};
    let da = tempfile::tempdir().unwrap();
    let a = Store::open(small(da.path(), 16 << 10)).unwrap();
    let streams = written(&a).await;
    let head = a.head().0;
    let want = records(&a);
    let config = |fs: &MemFs, durability| StoreConfig {
        vfs: std::sync::Arc::new(fs.clone()),
        durability,
        ..small(std::path::Path::new("/data"), 11 << 10)
    };
    let fs = MemFs::new();
    let b = Store::open(config(&fs, Durability::Os)).unwrap();
    b.ingest(a.read_batches(0, head, usize::MAX).unwrap())
        .await
        .unwrap();
    let mut cut_short = 0;
    for seed in 0..8 {
        let after = fs.crash(CrashMode::TornUnsynced { seed });
        let b = Store::open(config(&after, Durability::Fsync)).unwrap();
        let got = records(&b);
        assert_eq!(got[..], want[..got.len()], "a prefix (seed {seed})");
        if got.len() < want.len() {
            cut_short += 1;
        }
        while b.head().0 < head {
            let batches = a.read_batches(b.head().0, head, 4 << 10).unwrap();
            b.ingest(batches).await.unwrap();
        }
        assert_eq!(records(&b), want);
        assert_eq!(visible(&a, &streams), visible(&b, &streams));
    }
    assert!(cut_short > 0, "no power cut lost anything");
}

/// Every segment file's bytes under `dir`, concatenated.
fn log_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("log")).unwrap() {
        out.extend(std::fs::read(e.unwrap().path()).unwrap());
    }
    out
}

/// On a single server a scavenge drops what it removes: the log then has
/// holes, which `first_gap` finds (the first one, where `read_batches`
/// stops), so such a store is never taken as a whole log to copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_servers_scavenge_leaves_holes_that_first_gap_finds() {
    use logbook_storage::scavenge::ScavengeOptions;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path(), 16 << 10)).unwrap();
    written(&store).await;
    assert_eq!(store.first_gap().unwrap(), None);
    let report =
        tokio::task::block_in_place(|| store.scavenge(ScavengeOptions::default())).unwrap();
    assert!(report.events_removed > 0, "{report:?}");
    let (from, to) = store.first_gap().unwrap().expect("a hole");
    assert!(from < to && to <= store.head().0, "{from}..{to}");
    // Every record before the hole is there, and none holds its positions.
    let before = store.read_batches(0, from, usize::MAX).unwrap();
    assert_eq!(before.last().map_or(0, |b| b.end_position()), from);
    assert!(
        store
            .read_batches(from, store.head().0, usize::MAX)
            .is_err()
    );
    // The active segment is never scavenged: the hole is followed by a
    // record.
    assert!(to < store.head().0);
    assert_eq!(
        store.read_batches(to, to + 1, 1).unwrap()[0].first_position,
        to
    );
}

/// On a replica of a cluster (`keep_removed_ids`) a scavenge keeps the ids
/// of the events it removes: reads are the same before and after it, the
/// log has no hole (the records sent to a copy are the same before and
/// after it, removed ones as ids only), no byte of a removed event stays
/// in the files, and a copy made from it reads alike, refuses the same
/// reused ids and answers the same resends as the original, also after a
/// reopen. A scavenge run again finds nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_scavenge_keeps_the_ids_and_its_copies_agree() {
    use logbook_storage::scavenge::ScavengeOptions;
    let replica = |dir: &std::path::Path, segment_bytes| StoreConfig {
        keep_removed_ids: true,
        ..small(dir, segment_bytes)
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open(replica(da.path(), 16 << 10)).unwrap();
    let streams = written(&a).await;
    let head = a.head().0;
    let before = visible(&a, &streams);
    let sent = records(&a);
    // Removed records are sent as ids only, whether or not a scavenge ran.
    assert!(sent.iter().any(|b| b.removed));
    for b in sent.iter().filter(|b| b.removed) {
        assert!(
            b.events
                .iter()
                .all(|e| e.event_type.is_empty() && e.data.len() == 8)
        );
    }
    // The hard-deleted stream's first event (i = 4), in a sealed segment.
    let marker = b"{\"i\":40,\"pad\"";
    let has = |bytes: &[u8]| bytes.windows(marker.len()).any(|w| w == marker);
    assert!(has(&log_bytes(da.path())));
    let bytes_before: u64 = std::fs::read_dir(da.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    let report = tokio::task::block_in_place(|| a.scavenge(ScavengeOptions::default())).unwrap();
    assert!(report.events_removed > 0, "{report:?}");
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    assert_eq!(
        a.head().0,
        head,
        "a replica's scavenge writes nothing to the log"
    );
    assert_eq!(visible(&a, &streams), before);
    assert_eq!(records(&a), sent, "the log has no hole");
    assert_eq!(a.first_gap().unwrap(), None);
    assert!(!has(&log_bytes(da.path())));
    let bytes_after: u64 = std::fs::read_dir(da.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        bytes_after < bytes_before,
        "{bytes_after} of {bytes_before}"
    );
    let again = tokio::task::block_in_place(|| a.scavenge(ScavengeOptions::default())).unwrap();
    assert_eq!(again.events_removed, 0, "{again:?}");

    // A copy from the scavenged replica.
    let b = Store::open(replica(db.path(), 11 << 10)).unwrap();
    while b.head().0 < head {
        let batches = a.read_batches(b.head().0, head, 2 << 10).unwrap();
        b.ingest(batches).await.unwrap();
    }
    assert_eq!(records(&b), sent);
    assert_eq!(visible(&b, &streams), before);
    assert!(!has(&log_bytes(db.path())));

    // Reused ids: every id of the log sent again, alone and as its whole
    // batch, gets the same answer from both and writes nothing.
    let check = async |a: &Store, b: &Store| {
        for batch in &sent {
            let stream = StreamName::new(batch.stream.clone()).unwrap();
            if stream.as_str().starts_with("$$") {
                continue;
            }
            let at = BASE + 1_000;
            let one = vec![NewEvent::new(batch.events[0].id, "Again", "{}")];
            let ra = a
                .append_at(&stream, ExpectedVersion::Any, one.clone(), at)
                .await;
            let rb = b.append_at(&stream, ExpectedVersion::Any, one, at).await;
            assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
            assert!(ra.is_err(), "{ra:?}");
        }
        assert_eq!(a.head().0, head);
        assert_eq!(b.head().0, head);
    };
    check(&a, &b).await;
    // A removed batch sent again whole (a replica re-applying its entries
    // after a crash) is answered with its first result, as before the
    // scavenge: the same log written on one server gives the originals.
    let edir = tempfile::tempdir().unwrap();
    let e = Store::open(small(edir.path(), 16 << 10)).unwrap();
    written(&e).await;
    let originals = records(&e);
    let resends = async |store: &Store| {
        let mut n = 0;
        for batch in sent
            .iter()
            .filter(|b| b.removed && !b.stream.starts_with("$$"))
        {
            let full = originals
                .iter()
                .find(|o| o.first_position == batch.first_position)
                .unwrap();
            let stream = StreamName::new(batch.stream.clone()).unwrap();
            assert_eq!(
                full.events.iter().map(|e| e.id).collect::<Vec<_>>(),
                batch.events.iter().map(|e| e.id).collect::<Vec<_>>(),
                "{batch:?} {full:?}"
            );
            let r = store
                .resend(&stream, full.events.clone(), Some(batch.timestamp_us))
                .await
                .unwrap();
            assert_eq!(r.first_position.0, batch.first_position);
            assert_eq!(r.first_version.0, batch.first_version);
            n += 1;
        }
        assert!(n > 10, "{n} removed batches");
        assert_eq!(store.head().0, head);
    };
    resends(&a).await;
    resends(&b).await;
    // And a reused id gets the same answer from a replica that never
    // scavenged (content compared by the removed events' hashes).
    check(&a, &e).await;
    b.close().unwrap();
    let b = Store::open(replica(db.path(), 11 << 10)).unwrap();
    assert_eq!(visible(&b, &streams), before);
    assert_eq!(records(&b), sent);
    check(&a, &b).await;
    resends(&b).await;
}

/// A replica copied up to an earlier point than its source's head decides
/// as the source did at that point, although the source erased a stream
/// since: the erased stream's older states stay states (without their
/// custom metadata, which is on no disk afterwards), so the copy still
/// refuses an append to the stream hard-deleted before that point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_to_an_earlier_point_decides_as_its_source_did_then() {
    use logbook_protocol::lifecycle::{Deletion, StreamMetadata};
    use logbook_storage::{AppendError, LifecycleChange};
    let replica = |dir: &std::path::Path| StoreConfig {
        keep_removed_ids: true,
        ..small(dir, 16 << 10)
    };
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::open(replica(da.path())).unwrap();
    let s = StreamName::new("person-9").unwrap();
    let other = StreamName::new("other").unwrap();
    let ev = |i: u128| NewEvent::new(EventId::from_u128(i), "E", "{\"x\":1}");
    for i in 0..3 {
        a.append(&s, ExpectedVersion::Any, vec![ev(i + 1)])
            .await
            .unwrap();
    }
    let mut custom = serde_json::Map::new();
    custom.insert("email".into(), "secret-9@example.com".into());
    let m = StreamMetadata {
        max_count: Some(10),
        custom,
        ..Default::default()
    };
    a.set_metadata(&s, ExpectedVersion::Any, m).await.unwrap();
    a.delete_stream(&s, ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    let point = a.head().0;
    for i in 0..50 {
        a.append(&other, ExpectedVersion::Any, vec![ev(100 + i)])
            .await
            .unwrap();
    }
    a.submit_lifecycle_at(
        &s,
        ExpectedVersion::Any,
        LifecycleChange::Erase,
        EventId::new_v7(),
        BASE * 2,
    )
    .await
    .unwrap()
    .await
    .unwrap();
    assert_eq!(
        tokio::task::block_in_place(|| a.finish_erasures()).unwrap(),
        1
    );
    let secret = b"secret-9@example.com";
    let has = |bytes: &[u8]| bytes.windows(secret.len()).any(|w| w == secret);
    assert!(!has(&log_bytes(da.path())), "the custom metadata is gone");

    let b = Store::open(replica(db.path())).unwrap();
    while b.head().0 < point {
        let batches = a.read_batches(b.head().0, point, 1 << 10).unwrap();
        b.ingest(batches).await.unwrap();
    }
    assert_eq!(b.head().0, point);
    let state = b
        .stream_lifecycle(s.as_str())
        .expect("the state at that point")
        .state;
    assert!(state.is_hard_deleted() && !state.erased, "{state:?}");
    assert_eq!(state.metadata.max_count, Some(10));
    assert!(state.metadata.custom.is_empty());
    assert!(matches!(
        b.append(&s, ExpectedVersion::Any, vec![ev(999)]).await,
        Err(AppendError::StreamDeleted { .. })
    ));
    assert!(!has(&log_bytes(db.path())));
}

/// A replica whose clock runs ahead of the cluster's removes from disk only
/// what the last record's commit time (the leader's clock) has expired:
/// an age limit raised afterwards still finds the events it keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_clock_ahead_removes_nothing_the_cluster_still_keeps() {
    use logbook_protocol::lifecycle::StreamMetadata;
    use logbook_storage::scavenge::ScavengeOptions;
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(BASE));
    let config = StoreConfig {
        keep_removed_ids: true,
        testing: logbook_storage::TestKnobs {
            clock: Some(std::sync::Arc::clone(&clock)),
            ..Default::default()
        },
        ..small(dir.path(), 16 << 10)
    };
    let a = Store::open(config).unwrap();
    let s = StreamName::new("aged").unwrap();
    let m = StreamMetadata {
        max_age_secs: Some(60),
        ..Default::default()
    };
    a.set_metadata(&s, ExpectedVersion::Any, m).await.unwrap();
    // Events at the leader's times, up to BASE + 30 s.
    for i in 0..400u64 {
        let e = NewEvent::new(EventId::from_u128(u128::from(i) + 1), "E", "x".repeat(40));
        a.append_at(&s, ExpectedVersion::Any, vec![e], BASE + i as i64 * 75_000)
            .await
            .unwrap();
    }
    // This replica's clock is 2 minutes ahead.
    clock.store(BASE + 150_000_000, std::sync::atomic::Ordering::Release);
    let report = tokio::task::block_in_place(|| a.scavenge(ScavengeOptions::default())).unwrap();
    assert_eq!(report.events_removed, 0, "{report:?}");
    assert!(!records(&a).iter().any(|b| b.removed));
}
