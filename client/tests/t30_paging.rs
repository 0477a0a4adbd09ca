//! `read_stream` and `read_all` page through results larger than a page
//! (the fake server caps pages at 7 events), in both directions, honouring
//! `from` and `max_count`.

mod common;

use std::sync::{Arc, Mutex};

use common::{MemStore, options, start_store_server};
use futures::{StreamExt, TryStreamExt};
use logbook_client::{
    Client, EventId, ExpectedVersion, LogPosition, NewEvent, ReadAllOptions, ReadStreamOptions,
    RecordedEvent, StreamVersion,
};
use logbook_protocol::Opcode;

/// A store with 3 streams of 20, 20 and 5 events, interleaved in the log.
async fn populated() -> (Client, Arc<Mutex<MemStore>>) {
    let store = Arc::new(Mutex::new(MemStore::new(7)));
    let (addr, _task) = start_store_server(Arc::clone(&store)).await;
    let client = Client::connect_with(addr, options()).await.unwrap();
    let mut id = 0u128;
    for round in 0..20 {
        for stream in ["a", "b", "c"] {
            if stream == "c" && round >= 5 {
                continue;
            }
            id += 1;
            let event = NewEvent::new(EventId::from_u128(id), "E", format!("{stream}{round}"));
            client
                .append(stream, ExpectedVersion::Any, vec![event])
                .await
                .unwrap();
        }
    }
    (client, store)
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.0).collect()
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position.0).collect()
}

fn read_stream_requests(store: &Mutex<MemStore>) -> usize {
    let s = store.lock().unwrap();
    s.served.get(&Opcode::ReadStream).copied().unwrap_or(0)
}

#[tokio::test]
async fn read_stream_forward_pages_through_everything() {
    let (client, store) = populated().await;
    let events: Vec<_> = client
        .read_stream("a", ReadStreamOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions(&events), (0..20).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e.stream == "a"));
    assert_eq!(events[3].data, "a3".as_bytes());
    // 20 events in pages of at most 7.
    assert_eq!(read_stream_requests(&store), 3);
}

#[tokio::test]
async fn read_stream_backward_from_a_version_with_a_limit() {
    let (client, _store) = populated().await;
    let events: Vec<_> = client
        .read_stream(
            "b",
            ReadStreamOptions::default()
                .from(StreamVersion(15))
                .backward()
                .max_count(12)
                .page_size(5),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions(&events), (4..=15).rev().collect::<Vec<_>>());
}

#[tokio::test]
async fn read_stream_stops_at_max_count_without_extra_requests() {
    let (client, store) = populated().await;
    let before = read_stream_requests(&store);
    let events: Vec<_> = client
        .read_stream("a", ReadStreamOptions::default().max_count(7))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions(&events), (0..7).collect::<Vec<_>>());
    assert_eq!(read_stream_requests(&store) - before, 1);
}

#[tokio::test]
async fn empty_and_missing_streams_read_as_empty() {
    let (client, _store) = populated().await;
    let events: Vec<_> = client
        .read_stream("nothing-here", ReadStreamOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert!(events.is_empty());
    let page = client
        .read_stream_page("nothing-here", ReadStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(page.last_version, None);
    assert_eq!(page.next, None);
}

#[tokio::test]
async fn read_all_forward_and_backward() {
    let (client, _store) = populated().await;
    let forward: Vec<_> = client
        .read_all(ReadAllOptions::default().page_size(4))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(positions(&forward), (0..45).collect::<Vec<_>>());

    let backward: Vec<_> = client
        .read_all(ReadAllOptions::default().backward())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(positions(&backward), (0..45).rev().collect::<Vec<_>>());

    let middle: Vec<_> = client
        .read_all(
            ReadAllOptions::default()
                .from(LogPosition(30))
                .max_count(10),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(positions(&middle), (30..40).collect::<Vec<_>>());
}

#[tokio::test]
async fn manual_paging_with_the_page_calls() {
    let (client, _store) = populated().await;
    let mut options = ReadAllOptions::default();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = client.read_all_page(options).await.unwrap();
        assert_eq!(page.head, LogPosition(45));
        pages += 1;
        seen.extend(positions(&page.events));
        match page.next {
            Some(next) => options = options.from(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..45).collect::<Vec<_>>());
    assert_eq!(pages, 7);
}

#[tokio::test]
async fn invalid_stream_name_is_yielded_once() {
    let (client, _store) = populated().await;
    let mut events = client.read_stream("bad\u{7f}name", ReadStreamOptions::default());
    assert!(matches!(
        events.next().await,
        Some(Err(logbook_client::Error::BadRequest(_)))
    ));
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn a_long_stream_reads_in_order_across_many_pages() {
    let store = Arc::new(Mutex::new(MemStore::new(100)));
    let (addr, _task) = start_store_server(Arc::clone(&store)).await;
    let client = Client::connect_with(addr, options()).await.unwrap();
    for batch in 0..50u128 {
        let events = (0..100u128)
            .map(|i| NewEvent::new(EventId::from_u128(batch * 100 + i + 1), "E", "x"))
            .collect();
        client
            .append("long", ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let mut stream = client.read_stream("long", ReadStreamOptions::default().page_size(1000));
    let mut expected = 0u64;
    while let Some(event) = stream.try_next().await.unwrap() {
        assert_eq!(event.version.0, expected);
        expected += 1;
    }
    assert_eq!(expected, 5000);
}
