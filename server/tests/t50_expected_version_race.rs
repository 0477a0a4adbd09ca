//! K tasks append to one stream with the same expected version: exactly one
//! wins each round, the others get the conflict with the actual version.

mod common;

use std::sync::Arc;

use common::*;
use logbook_protocol::{EventId, ExpectedVersion, NewEvent, StreamVersion};
use logbook_server::storage::{AppendError, Store};

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
