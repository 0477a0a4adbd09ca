//! Many tasks on one client: requests are pipelined on one connection and
//! every caller gets its own reply, whatever order replies come back in.

mod common;

use std::sync::{Arc, Mutex};

use common::{MemStore, options, recorded, setup, start_store_server};
use futures::TryStreamExt;
use logbook_client::{
    AppendResult, Client, EventId, ExpectedVersion, LogPosition, NewEvent, ReadStreamOptions,
    StreamVersion,
};
use logbook_protocol::{Pong, ReadStreamOk, Request, Response};

const TASKS: u64 = 64;
const ROUNDS: u64 = 10;

/// A reply that only the request's own caller would accept.
fn answer(request: &Request) -> Response {
    match request {
        Request::Ping(p) => Response::Pong(Pong { nonce: p.nonce }),
        Request::Append(a) => {
            // Positions encode the event id, so each caller can check the
            // reply is for its batch.
            let id = a.events[0].id.as_u128() as u64;
            Response::AppendOk(AppendResult {
                first_version: StreamVersion(id),
                last_version: StreamVersion(id),
                first_position: LogPosition(id),
                last_position: LogPosition(id),
            })
        }
        Request::ReadStream(r) => Response::ReadStreamOk(ReadStreamOk {
            events: vec![recorded(&r.stream, r.from.map_or(0, |v| v.0), 0)],
            last_version: None,
            next: None,
        }),
        other => panic!("{other:?}"),
    }
}

/// Permutes a batch deterministically (reverse, then interleave halves) so
/// replies come back far from request order.
fn scramble<T>(mut v: Vec<T>) -> Vec<T> {
    v.reverse();
    let tail = v.split_off(v.len() / 2);
    let mut out = Vec::with_capacity(v.len() + tail.len());
    let (mut a, mut b) = (v.into_iter(), tail.into_iter());
    loop {
        match (b.next(), a.next()) {
            (None, None) => break out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_callers_get_their_own_replies_out_of_order() {
    let (_server, client, mut conn) = setup(options()).await;

    let server = tokio::spawn(async move {
        // Every round has exactly one request per task in flight: a task
        // sends its next request only after its previous reply.
        for _ in 0..ROUNDS {
            let mut batch = Vec::new();
            while batch.len() < TASKS as usize {
                let (id, req) = conn.expect().await;
                batch.push((id, req));
            }
            // corr_ids are unique among requests in flight.
            let ids: std::collections::HashSet<u32> = batch.iter().map(|(id, _)| *id).collect();
            assert_eq!(ids.len(), batch.len());
            for (id, req) in scramble(batch) {
                conn.reply(id, answer(&req)).await;
            }
        }
        conn
    });

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                let tag = task * 1000 + round + 1;
                match (task + round) % 3 {
                    0 => {
                        client.ping().await.unwrap();
                    }
                    1 => {
                        let event = NewEvent::new(EventId::from_u128(tag.into()), "E", "x");
                        let result = client
                            .append(format!("s-{task}"), ExpectedVersion::Any, vec![event])
                            .await
                            .unwrap();
                        assert_eq!(result.first_position, LogPosition(tag));
                    }
                    _ => {
                        let stream = format!("s-{task}");
                        let page = client
                            .read_stream_page(
                                stream.as_str(),
                                ReadStreamOptions::default().from(StreamVersion(tag)),
                            )
                            .await
                            .unwrap();
                        assert_eq!(page.events.len(), 1);
                        assert_eq!(page.events[0].stream, stream.as_str());
                        assert_eq!(page.events[0].version, StreamVersion(tag));
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_and_reads_against_a_store() {
    let store = Arc::new(Mutex::new(MemStore::new(50)));
    let (addr, _task) = start_store_server(Arc::clone(&store)).await;
    let client = Client::connect_with(addr, options()).await.unwrap();

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("acct-{task}");
            let mut expected = ExpectedVersion::NoStream;
            for i in 0..20u64 {
                let id = EventId::from_u128(u128::from(task * 100 + i + 1));
                let result = client
                    .append(
                        stream.as_str(),
                        expected,
                        vec![NewEvent::new(id, "E", i.to_string())],
                    )
                    .await
                    .unwrap();
                assert_eq!(result.last_version, StreamVersion(i));
                expected = ExpectedVersion::Exact(result.last_version);
            }
            let events: Vec<_> = client
                .read_stream(stream.as_str(), ReadStreamOptions::default().page_size(8))
                .try_collect()
                .await
                .unwrap();
            let data: Vec<String> = events
                .iter()
                .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
                .collect();
            assert_eq!(data, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.lock().unwrap().log.len(), (TASKS * 20) as usize);
}
