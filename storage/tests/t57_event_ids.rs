//! Event ids are unique in the store for ever. Resending any earlier batch
//! (same ids, same order, same stream, same content) returns its original
//! result, whatever its expected version says, across flushes, merges and
//! restarts; anything else that meets a stored id is refused with
//! `DuplicateEventId` and writes nothing.
//!
//! Regression tests for retries that were only recognised when they
//! repeated a stream's last batch: a lost reply, another client's append to
//! the same stream, then the retry, got WrongExpectedVersion (with Exact)
//! or wrote the events twice (with Any).

mod common;

use std::sync::Arc;

use common::*;
use logbook_protocol::{
    AppendResult, Direction, EventId, ExpectedVersion, LogPosition, NewEvent, StreamVersion,
};
use logbook_storage::fs::{CrashMode, MemFs};
use logbook_storage::{AppendError, Store};

fn event(id: u128, data: &str) -> NewEvent {
    NewEvent::new(EventId::from_u128(id), "Deposited", data.to_owned())
}

fn dup(err: AppendError) -> (EventId, String, Option<LogPosition>) {
    match err {
        AppendError::DuplicateEventId {
            id,
            stream,
            position,
        } => (id, stream, position),
        other => panic!("expected DuplicateEventId, got {other}"),
    }
}

#[test]
fn resending_an_earlier_batch_returns_its_original_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let s = name("account-1");
    let a = vec![event(1, "a1"), event(2, "a2")];
    let ra = store
        .append_blocking(&s, ExpectedVersion::NoStream, a.clone())
        .unwrap();
    // Another client appends to the same stream in between: A is no longer
    // the stream's last batch.
    let rb = store
        .append_blocking(
            &s,
            ExpectedVersion::Exact(StreamVersion(1)),
            vec![event(3, "b")],
        )
        .unwrap();
    store
        .append_blocking(&name("other"), ExpectedVersion::Any, vec![event(4, "c")])
        .unwrap();
    let head = store.head();
    // The retry of A, with its (now stale) expected version and with Any.
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Any,
        ExpectedVersion::Exact(StreamVersion(7)),
    ] {
        assert_eq!(store.append_blocking(&s, expected, a.clone()).unwrap(), ra);
    }
    assert_eq!(
        store
            .append_blocking(
                &s,
                ExpectedVersion::Exact(StreamVersion(1)),
                vec![event(3, "b")]
            )
            .unwrap(),
        rb
    );
    assert_eq!(store.head(), head, "nothing written");
    let versions: Vec<u64> = store
        .read_stream("account-1", None, Direction::Forward, 100)
        .unwrap()
        .events
        .iter()
        .map(|e| e.version.0)
        .collect();
    assert_eq!(versions, vec![0, 1, 2]);
}

#[test]
fn anything_else_that_meets_a_stored_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let s = name("account-1");
    let ra = store
        .append_blocking(
            &s,
            ExpectedVersion::Any,
            vec![event(1, "a1"), event(2, "a2")],
        )
        .unwrap();
    let head = store.head();
    let at = |p: u64| Some(LogPosition(ra.first_position.0 + p));
    // (what, stream, batch, (the id reported, its position)).
    type Case = (
        &'static str,
        &'static str,
        Vec<NewEvent>,
        (u128, Option<LogPosition>),
    );
    let cases: Vec<Case> = vec![
        (
            "the same ids with other data",
            "account-1",
            vec![event(1, "a1"), event(2, "CHANGED")],
            (1, at(0)),
        ),
        (
            "the same ids with another type",
            "account-1",
            vec![
                event(1, "a1"),
                NewEvent::new(EventId::from_u128(2), "Withdrawn", "a2"),
            ],
            (1, at(0)),
        ),
        (
            "part of the batch",
            "account-1",
            vec![event(1, "a1")],
            (1, at(0)),
        ),
        (
            "the ids in another order",
            "account-1",
            vec![event(2, "a2"), event(1, "a1")],
            (2, at(1)),
        ),
        (
            "stored and new ids mixed",
            "account-1",
            vec![event(9, "new"), event(2, "a2")],
            (2, at(1)),
        ),
        (
            "a stored id in another stream",
            "account-2",
            vec![event(1, "a1"), event(2, "a2")],
            (1, at(0)),
        ),
        (
            "the batch and more",
            "account-1",
            vec![event(1, "a1"), event(2, "a2"), event(3, "more")],
            (1, at(0)),
        ),
    ];
    for (what, stream, events, (id, position)) in cases {
        let err = store
            .append_blocking(&name(stream), ExpectedVersion::Any, events)
            .unwrap_err();
        assert_eq!(
            dup(err),
            (EventId::from_u128(id), "account-1".to_string(), position),
            "{what}"
        );
    }
    // An id twice in one batch: refused, nothing written.
    let err = store
        .append_blocking(
            &s,
            ExpectedVersion::Any,
            vec![event(20, "x"), event(21, "y"), event(20, "x")],
        )
        .unwrap_err();
    assert_eq!(dup(err), (EventId::from_u128(20), "account-1".into(), None));
    assert_eq!(store.head(), head, "nothing written");
    // Ids 20 and 21 were not stored by the refused batch.
    store
        .append_blocking(
            &s,
            ExpectedVersion::Any,
            vec![event(20, "x"), event(21, "y")],
        )
        .unwrap();
}

/// Pipelined: the original and its resend in one group (the resend is
/// answered from the group being built) and in consecutive groups still
/// being synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_while_the_original_is_in_flight_gets_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny(dir.path())).unwrap();
    let s = name("s");
    let mut pending = Vec::new();
    for i in 0..50u128 {
        let batch = vec![event(i * 2, "x"), event(i * 2 + 1, "y")];
        pending.push(
            store
                .submit(&s, ExpectedVersion::Any, batch.clone())
                .await
                .unwrap(),
        );
        pending.push(store.submit(&s, ExpectedVersion::Any, batch).await.unwrap());
    }
    let mut results = Vec::new();
    for p in pending {
        results.push(p.await.unwrap());
    }
    for pair in results.chunks(2) {
        assert_eq!(pair[0], pair[1]);
    }
    assert_eq!(store.head().0, 100);
}

/// Every earlier batch is recognised after index flushes and merges, a
/// clean restart and a power cut, and a changed one is refused.
#[test]
fn ids_stay_unique_across_flushes_merges_restarts_and_power_cuts() {
    let mut fs = MemFs::new();
    let mut store = Store::open(tiny_mem(&fs)).unwrap();
    let mut batches: Vec<(String, Vec<NewEvent>, AppendResult)> = Vec::new();
    let mut next_id = 1u128;
    for i in 0..300u64 {
        let stream = format!("s-{}", i % 13);
        let n = 1 + (i % 3) as u128;
        let events: Vec<NewEvent> = (0..n)
            .map(|k| event(next_id + k, &format!("{i}-{k}")))
            .collect();
        next_id += n;
        let r = store
            .append_blocking(&name(&stream), ExpectedVersion::Any, events.clone())
            .unwrap();
        batches.push((stream, events, r));
        match i {
            // A clean restart (index flushed), then a power cut.
            100 => {
                store.close().unwrap();
                drop(store);
                store = Store::open(tiny_mem(&fs)).unwrap();
            }
            200 => {
                fs = fs.crash(CrashMode::DropUnsynced);
                drop(store);
                store = Store::open(tiny_mem(&fs)).unwrap();
            }
            _ => {}
        }
    }
    // Merges run on their own thread.
    wait_until(&store, "a merge", |s| s.index_merges > 0);
    let head = store.head();
    for (i, (stream, events, original)) in batches.iter().enumerate() {
        let again = store
            .append_blocking(&name(stream), ExpectedVersion::NoStream, events.clone())
            .unwrap();
        assert_eq!(&again, original, "batch {i}");
        let mut changed = events.clone();
        changed[0] = NewEvent::new(changed[0].id, "Deposited", "changed");
        let (id, s, p) = dup(store
            .append_blocking(&name(stream), ExpectedVersion::Any, changed)
            .unwrap_err());
        assert_eq!(
            (id, s.as_str(), p),
            (events[0].id, stream.as_str(), Some(original.first_position))
        );
    }
    assert_eq!(store.head(), head);
    store.close().unwrap();
    drop(store);
    // Offline: every id file matches the log, and no id is stored twice.
    let crashed = fs.crash(CrashMode::DropUnsynced);
    let report = logbook_storage::verify(&tiny_mem(&crashed), |_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.event_ids, head.0, "{report:?}");
}

/// `verify` reports an id stored twice (a log written by hand: the
/// engine never writes one).
#[test]
fn verify_reports_an_id_stored_twice() {
    use logbook_storage::fs::{OpenMode, Vfs};
    use logbook_storage::internals::{encode_record, encode_segment_header, record_crc_seed};
    let fs = MemFs::new();
    let dir = std::path::Path::new("/data/log");
    fs.create_dir_all(dir).unwrap();
    let seed = record_crc_seed(Some(7));
    let mut bytes = encode_segment_header(0, 7).to_vec();
    encode_record(&mut bytes, seed, "a", 0, 0, 1, &[event(5, "x")]);
    encode_record(&mut bytes, seed, "b", 1, 0, 2, &[event(5, "y")]);
    let f = fs
        .open(
            &dir.join(logbook_protocol::layout::segment_file(0)),
            OpenMode::CreateNew,
        )
        .unwrap();
    f.write_all_at(&bytes, 0).unwrap();
    f.sync_data().unwrap();
    let report = logbook_storage::verify(&tiny_mem(&fs), |_| {}).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.what.contains("stored twice") && p.what.contains("position 1")),
        "{:?}",
        report.problems
    );
}

/// Concurrent appenders resend random earlier batches of theirs (as
/// clients retrying after lost replies would) while others append: every
/// resend gets its original result, and every id is stored exactly once.
#[test]
fn concurrent_resends_are_answered_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tiny_fast(dir.path())).unwrap());
    let tasks: Vec<_> = (0..4u128)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut mine: Vec<(Vec<NewEvent>, AppendResult)> = Vec::new();
                let mut rng = 0x1234_5678_u64 ^ (t as u64);
                for i in 0..200u128 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // Each batch goes to one of five streams, by its id.
                    let stream_of = |id: EventId| name(&format!("t{t}-{}", id.0[15] % 5));
                    if !mine.is_empty() && rng.is_multiple_of(3) {
                        let (events, original) = &mine[rng as usize % mine.len()];
                        let r = store.append_blocking(
                            &stream_of(events[0].id),
                            ExpectedVersion::Any,
                            events.clone(),
                        );
                        assert_eq!(r.as_ref().ok(), Some(original), "{r:?}");
                        continue;
                    }
                    let events = vec![event((t << 64) | i, "e")];
                    let r = store
                        .append_blocking(
                            &stream_of(events[0].id),
                            ExpectedVersion::Any,
                            events.clone(),
                        )
                        .unwrap();
                    mine.push((events, r));
                }
                mine.len() as u64
            })
        })
        .collect();
    let written: u64 = tasks.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(store.head().0, written, "no resend was written again");
    let all = store
        .read_all(None, Direction::Forward, 100_000)
        .unwrap()
        .events;
    let mut ids: Vec<EventId> = all.iter().map(|e| e.id).collect();
    ids.sort_by_key(|id| id.0);
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "every id once");
}

/// An id check made apart from the append (`check_ids`, as logbookd does
/// off its network threads) and used after flushes moved the ids it did not
/// see into index tables: the writer looks up what the tables gained since,
/// so a resend is still recognised and a changed batch still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_check_made_before_flushes_still_finds_the_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(tiny_fast(dir.path())).unwrap();
    let s = name("s");
    let original: Vec<NewEvent> = (1..=3).map(|i| event(i, "first")).collect();
    let first = store
        .append(&s, ExpectedVersion::NoStream, original.clone())
        .await
        .unwrap();
    // Checked now: no table holds the ids yet.
    let ids = |events: &[NewEvent]| events.iter().map(|e| e.id).collect::<Vec<_>>();
    let stale = store.check_ids(&ids(&original)).unwrap();
    let changed: Vec<NewEvent> = vec![event(1, "changed")];
    let stale_changed = store.check_ids(&ids(&changed)).unwrap();
    // A check of other ids (as many), made now too.
    let other = store.check_ids(&ids(&[event(99_999, "x")])).unwrap();
    // Enough appends for several flushes (and merges): the ids move into
    // tables, and the writer's own record of them is dropped.
    for i in 0..200u128 {
        store
            .append(
                &name("other"),
                ExpectedVersion::Any,
                vec![event(1_000 + i, "x")],
            )
            .await
            .unwrap();
    }
    wait_until(&store, "the first batch in a table", |st| {
        st.index_flushes >= 5
    });
    let again = store
        .submit_checked(&s, ExpectedVersion::NoStream, original, stale)
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(again, first, "a resend gets the original result");
    let err = store
        .submit_checked(&name("t"), ExpectedVersion::Any, changed, stale_changed)
        .await
        .unwrap()
        .await
        .unwrap_err();
    let (id, stream, _) = dup(err);
    assert_eq!((id, stream.as_str()), (EventId::from_u128(1), "s"));
    // A check of other ids is not trusted for these: the lookup is done
    // again, and the stored id still refused.
    let err = store
        .submit_checked(
            &name("u"),
            ExpectedVersion::Any,
            vec![event(1, "again")],
            other,
        )
        .await
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(dup(err).0, EventId::from_u128(1));
}
