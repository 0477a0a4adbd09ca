//! Appends with a commit time chosen by the caller (`Store::append_at`, what
//! a replica applies with the leader's time): two stores given the same
//! appends in the same order, one waiting for each, the other pipelining
//! them all so that the writer groups them as it likes, hold the same
//! events at the same positions with the same timestamps; a time earlier
//! than the previous record's is raised to it; and the clock plays no part.

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

fn events(store: &Store) -> Vec<(String, u64, u64, EventId, i64)> {
    store
        .read_all(None, Direction::Forward, 10_000)
        .unwrap()
        .events
        .into_iter()
        .map(|e| {
            (
                e.stream.as_str().to_owned(),
                e.version.0,
                e.position.0,
                e.id,
                e.timestamp_us,
            )
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
