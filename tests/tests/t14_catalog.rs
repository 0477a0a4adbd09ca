//! The stream catalog over the wire (PROTOCOL.md §5.12), against a real
//! daemon in this process: every stream by pages and by prefix, with its
//! versions, live events, deletion and metadata, across a restart and a
//! scavenge; and bad requests answered without harm to the connection.

use std::collections::BTreeMap;

use logbook_client::{
    Client, Deletion, EventId, ExpectedVersion, NewEvent, StreamInfo, StreamMetadata, StreamVersion,
};
use logbook_protocol::{ErrorCode, ListStreams, Request, ServerMessage, Text};
use logbook_tests::TestServer;

fn name(i: u64) -> String {
    match i % 4 {
        0 => format!("account-{i:04}"),
        1 => format!("order-{i}"),
        2 => format!("cart-{}", i * 37 % 1000),
        _ => format!("ü-{i}"),
    }
}

#[tokio::test]
async fn the_catalog_lists_every_stream_with_its_state() {
    let mut server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let mut want: BTreeMap<String, StreamInfo> = BTreeMap::new();
    for i in 0..600u64 {
        let s = name(i);
        let n = 1 + i % 4;
        let events = (0..n)
            .map(|k| NewEvent::new(EventId::new_v7(), "Happened", format!("{{\"k\":{k}}}")))
            .collect();
        client
            .append(s.as_str(), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
        want.insert(
            s.clone(),
            StreamInfo {
                stream: s,
                last_version: Some(StreamVersion(n - 1)),
                first_version: Some(StreamVersion(0)),
                event_count: n,
                ..StreamInfo::default()
            },
        );
    }
    // Every fifth stream deleted (a third of those for ever), every
    // seventh truncated, a stream with metadata and no event yet.
    for (i, (s, info)) in want.iter_mut().enumerate() {
        if i % 5 == 0 {
            let mode = if i % 3 == 0 {
                Deletion::Hard
            } else {
                Deletion::Soft
            };
            let w = client
                .delete_stream(s.as_str(), ExpectedVersion::Any, mode)
                .await
                .unwrap();
            info.deleted = Some(mode);
            info.first_version = None;
            info.event_count = 0;
            info.metadata = w.state.metadata;
            info.meta_version = Some(w.meta_version);
        } else if i % 7 == 0 && info.event_count > 1 {
            let w = client
                .truncate_stream(s.as_str(), StreamVersion(1))
                .await
                .unwrap();
            info.first_version = Some(StreamVersion(1));
            info.event_count -= 1;
            info.metadata = w.state.metadata;
            info.meta_version = Some(w.meta_version);
        }
    }
    let metadata = StreamMetadata {
        max_count: Some(10),
        custom: serde_json::Map::from_iter([("owner".to_owned(), serde_json::json!("ada"))]),
        ..StreamMetadata::default()
    };
    let w = client
        .set_stream_metadata("account-new", ExpectedVersion::NoStream, metadata.clone())
        .await
        .unwrap();
    want.insert(
        "account-new".into(),
        StreamInfo {
            stream: "account-new".into(),
            metadata,
            meta_version: Some(w.meta_version),
            ..StreamInfo::default()
        },
    );
    let all: Vec<StreamInfo> = want.values().cloned().collect();
    let deleted = all.iter().filter(|s| s.deleted.is_some()).count() as u64;
    let check = |client: Client, all: Vec<StreamInfo>| async move {
        assert_eq!(client.list_all_streams("").await.unwrap(), all);
        for prefix in ["account-", "cart-9", "ü", "order-599", "none", "$$"] {
            let want: Vec<StreamInfo> = all
                .iter()
                .filter(|s| s.stream.starts_with(prefix))
                .cloned()
                .collect();
            assert_eq!(
                client.list_all_streams(prefix).await.unwrap(),
                want,
                "{prefix}"
            );
        }
        // Small pages tile the catalog.
        let mut got = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = client.list_streams("", after.as_deref(), 7).await.unwrap();
            assert!(page.streams.len() <= 7);
            got.extend(page.streams);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(got, all);
    };
    check(client.clone(), all.clone()).await;
    assert_eq!(client.stats().await.unwrap().deleted_streams, deleted);

    // A restart and a scavenge change nothing the catalog says.
    server.restart().await;
    let client = Client::connect(server.addr).await.unwrap();
    check(client.clone(), all.clone()).await;
    client
        .scavenge(logbook_client::ScavengeOptions::default())
        .await
        .unwrap();
    let mut all = all;
    // The scavenge wrote its start and its report.
    all.insert(
        0,
        StreamInfo {
            stream: "$scavenges".into(),
            last_version: Some(StreamVersion(1)),
            first_version: Some(StreamVersion(0)),
            event_count: 2,
            ..StreamInfo::default()
        },
    );
    check(client.clone(), all).await;
    assert_eq!(client.stats().await.unwrap().deleted_streams, deleted);
    server.stop().await;
}

#[tokio::test]
async fn bad_catalog_requests_are_refused_and_the_connection_goes_on() {
    let server = TestServer::start().await;
    let mut raw = server.raw().await;
    for req in [
        ListStreams {
            prefix: Text::from(""),
            after: None,
            limit: 0,
        },
        ListStreams {
            prefix: Text::from("x".repeat(2000)),
            after: None,
            limit: 5,
        },
        ListStreams {
            prefix: Text::from(""),
            after: Some(Text::from("y".repeat(2000))),
            limit: 5,
        },
    ] {
        let (_, reply) = raw.call(&Request::ListStreams(req)).await;
        match reply {
            ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::BadRequest),
            other => panic!("{other:?}"),
        }
    }
    // A limit past the cap is capped, not refused.
    let (_, reply) = raw
        .call(&Request::ListStreams(ListStreams {
            prefix: Text::from(""),
            after: None,
            limit: u32::MAX,
        }))
        .await;
    assert!(matches!(reply, ServerMessage::Response(_)), "{reply:?}");
    server.stop().await;
}
