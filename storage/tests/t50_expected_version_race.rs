//! K tasks append to one stream with the same expected version: exactly one
//! wins each round, the others get the conflict with the actual version.

mod common;

use std::sync::Arc;

use common::*;
use logbook_protocol::{EventId, ExpectedVersion, NewEvent, StreamVersion};
use logbook_storage::{AppendError, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_winner_per_round() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tiny(dir.path())).unwrap());
    let stream = name("contended");
    const K: u64 = 8;
    const ROUNDS: u64 = 150;
    for round in 0..ROUNDS {
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(StreamVersion(round - 1))
        };
        let mut tasks = Vec::new();
        for k in 0..K {
            let store = Arc::clone(&store);
            let stream = stream.clone();
            tasks.push(tokio::spawn(async move {
                let e = NewEvent::new(
                    EventId::from_u128(u128::from(round * K + k + 1)),
                    "Try",
                    format!("{k}"),
                );
                store.append(&stream, expected, vec![e]).await
            }));
        }
        let mut winners = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => {
                    winners += 1;
                    assert_eq!(r.first_version, StreamVersion(round));
                }
                Err(AppendError::WrongExpectedVersion { actual, .. }) => {
                    assert_eq!(actual, Some(StreamVersion(round)))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let s = store
        .read_stream(
            "contended",
            None,
            logbook_protocol::Direction::Forward,
            1000,
        )
        .unwrap();
    assert_eq!(s.events.len() as u64, ROUNDS);
    assert_eq!(store.stats().conflicts, ROUNDS * (K - 1));
}

/// A batch sent twice at once (a client retrying while the first attempt
/// is still in flight) is written once; both callers get the same result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_batch_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(tiny(dir.path())).unwrap());
    for round in 0..100u64 {
        let stream = name(&format!("retry-{}", round % 7));
        let batch: Vec<NewEvent> = (0..3)
            .map(|k| NewEvent::new(EventId::from_u128(u128::from(round * 10 + k + 1)), "E", "x"))
            .collect();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (store, stream, batch) = (Arc::clone(&store), stream.clone(), batch.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .append(&stream, ExpectedVersion::Any, batch)
                    .await
                    .unwrap()
            }));
        }
        let results: Vec<_> = futures_join(tasks).await;
        assert!(
            results.windows(2).all(|w| w[0] == w[1]),
            "round {round}: {results:?}"
        );
    }
    let all = store
        .read_all(None, logbook_protocol::Direction::Forward, 10_000)
        .unwrap();
    assert_eq!(all.events.len(), 300, "each batch once");
}

async fn futures_join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
