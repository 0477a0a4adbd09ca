//! Stream lifecycle over the wire (PROTOCOL.md §5.10), against a real
//! daemon in this process: metadata set and read back, truncation, soft
//! and hard deletes (across a restart), the reserved `$$` streams, and
//! what the global log shows of it all. Through the client, and raw frames
//! where the error code itself is the point.

use futures::TryStreamExt;
use logbook_client::{
    Client, Deletion, Error, EventId, ExpectedVersion, NewEvent, ReadAllOptions, ReadStreamOptions,
    RecordedEvent, StreamLifecycle, StreamMetadata, StreamVersion,
};
use logbook_protocol::{ErrorCode, ReadStream, Request, ServerMessage, Text};
use logbook_tests::TestServer;

fn event(i: u64) -> NewEvent {
    NewEvent::new(EventId::new_v7(), "Happened", format!("{{\"i\":{i}}}"))
}

/// Appends `n` events to `stream`, one append each.
async fn append_n(client: &Client, stream: &str, n: u64) {
    for i in 0..n {
        client
            .append(stream, ExpectedVersion::Any, vec![event(i)])
            .await
            .unwrap();
    }
}

async fn read(client: &Client, stream: &str) -> Result<Vec<RecordedEvent>, Error> {
    client
        .read_stream(stream, ReadStreamOptions::default())
        .try_collect()
        .await
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version.0).collect()
}

#[tokio::test]
async fn metadata_round_trips_and_checks_its_expected_version() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_n(&client, "acct-1", 2).await;

    // Nothing yet, whether or not the stream has events.
    assert_eq!(client.get_stream_metadata("acct-1").await.unwrap(), None);
    assert_eq!(client.get_stream_metadata("nobody").await.unwrap(), None);

    let metadata = StreamMetadata {
        max_age_secs: Some(3600),
        custom: serde_json::Map::from_iter([("owner".to_owned(), serde_json::json!("ada"))]),
        ..StreamMetadata::default()
    };
    let first = client
        .set_stream_metadata("acct-1", ExpectedVersion::NoStream, metadata.clone())
        .await
        .unwrap();
    assert_eq!(first.meta_version, StreamVersion(0));
    assert_eq!(first.state.stream, "acct-1");
    assert_eq!(first.state.metadata, metadata);
    assert_eq!(first.state.deleted, None);
    assert_eq!(first.state.last_version, Some(1));
    assert_eq!(
        client.get_stream_metadata("acct-1").await.unwrap(),
        Some(first.clone())
    );

    // The expected version is the metadata stream's.
    match client
        .set_stream_metadata("acct-1", ExpectedVersion::NoStream, metadata.clone())
        .await
    {
        Err(Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, "$$acct-1");
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, Some(StreamVersion(0)));
        }
        other => panic!("{other:?}"),
    }
    let second = StreamMetadata {
        max_count: Some(10),
        ..StreamMetadata::default()
    };
    let written = client
        .set_stream_metadata(
            "acct-1",
            ExpectedVersion::Exact(first.meta_version),
            second.clone(),
        )
        .await
        .unwrap();
    assert_eq!(written.meta_version, StreamVersion(1));
    assert!(written.position > first.position);
    // Replaced whole: the custom keys and the age limit are gone.
    assert_eq!(written.state.metadata, second);
    // The stream's events are untouched (both within max_count).
    assert_eq!(versions(&read(&client, "acct-1").await.unwrap()), [0, 1]);

    // Out-of-range settings never leave the client.
    let zero = StreamMetadata {
        max_count: Some(0),
        ..StreamMetadata::default()
    };
    assert!(matches!(
        client
            .set_stream_metadata("acct-1", ExpectedVersion::Any, zero)
            .await,
        Err(Error::BadRequest(_))
    ));
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.lifecycle_streams, 1);
    server.stop().await;
}

#[tokio::test]
async fn truncate_hides_the_events_below_and_only_rises() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_n(&client, "t", 5).await;

    let written = client.truncate_stream("t", StreamVersion(3)).await.unwrap();
    assert_eq!(written.state.metadata.truncate_before, Some(3));
    assert_eq!(versions(&read(&client, "t").await.unwrap()), [3, 4]);

    // A lower truncation changes nothing.
    let written = client.truncate_stream("t", StreamVersion(1)).await.unwrap();
    assert_eq!(written.state.metadata.truncate_before, Some(3));
    assert_eq!(versions(&read(&client, "t").await.unwrap()), [3, 4]);

    // Versions go on after the truncated ones.
    let appended = client
        .append(
            "t",
            ExpectedVersion::Exact(StreamVersion(4)),
            vec![event(9)],
        )
        .await
        .unwrap();
    assert_eq!(appended.first_version, StreamVersion(5));
    assert_eq!(versions(&read(&client, "t").await.unwrap()), [3, 4, 5]);
    server.stop().await;
}

#[tokio::test]
async fn soft_delete_reads_as_not_found_until_an_append_continues_the_versions() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_n(&client, "cart", 3).await;

    // The expected version is the stream's own.
    assert!(matches!(
        client
            .delete_stream("cart", ExpectedVersion::Exact(StreamVersion(0)), Deletion::Soft)
            .await,
        Err(Error::WrongExpectedVersion { stream, actual: Some(StreamVersion(2)), .. })
            if stream == "cart"
    ));
    let written = client
        .delete_stream(
            "cart",
            ExpectedVersion::Exact(StreamVersion(2)),
            Deletion::Soft,
        )
        .await
        .unwrap();
    assert_eq!(written.state.deleted, Some(Deletion::Soft));
    assert!(matches!(
        read(&client, "cart").await,
        Err(Error::StreamNotFound { stream }) if stream == "cart"
    ));

    // The stream starts again where its versions stopped.
    let appended = client
        .append("cart", ExpectedVersion::NoStream, vec![event(7)])
        .await
        .unwrap();
    assert_eq!(appended.first_version, StreamVersion(3));
    let events = read(&client, "cart").await.unwrap();
    assert_eq!(versions(&events), [3]);
    assert_eq!(events[0].data, &b"{\"i\":7}"[..]);
    server.stop().await;
}

#[tokio::test]
async fn hard_delete_is_for_ever_and_survives_a_restart() {
    let mut server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_n(&client, "gone", 2).await;
    append_n(&client, "kept", 1).await;

    let written = client
        .delete_stream("gone", ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    assert_eq!(written.state.deleted, Some(Deletion::Hard));

    async fn refused(client: &Client) {
        assert!(matches!(
            read(client, "gone").await,
            Err(Error::StreamDeleted { stream }) if stream == "gone"
        ));
        assert!(matches!(
            client.append("gone", ExpectedVersion::Any, vec![event(1)]).await,
            Err(Error::StreamDeleted { stream }) if stream == "gone"
        ));
        assert!(matches!(
            client
                .append("gone", ExpectedVersion::NoStream, vec![event(2)])
                .await,
            Err(Error::StreamDeleted { .. })
        ));
        assert!(matches!(
            client
                .set_stream_metadata("gone", ExpectedVersion::Any, StreamMetadata::default())
                .await,
            Err(Error::StreamDeleted { .. })
        ));
        assert!(matches!(
            client.truncate_stream("gone", StreamVersion(1)).await,
            Err(Error::StreamDeleted { .. })
        ));
        assert!(matches!(
            client
                .delete_stream("gone", ExpectedVersion::Any, Deletion::Soft)
                .await,
            Err(Error::StreamDeleted { .. })
        ));
        let state = client.get_stream_metadata("gone").await.unwrap().unwrap();
        assert_eq!(state.state.deleted, Some(Deletion::Hard));
        // Other streams are untouched.
        assert_eq!(versions(&read(client, "kept").await.unwrap()), [0]);
    }
    refused(&client).await;

    // On the wire: code StreamDeleted, with the stream.
    let mut raw = server.raw().await;
    let (_, reply) = raw
        .call(&Request::ReadStream(ReadStream {
            stream: Text::from("gone"),
            from: None,
            direction: logbook_protocol::Direction::Forward,
            max_count: 10,
            min_position: None,
        }))
        .await;
    match reply {
        ServerMessage::Error(e) => {
            assert_eq!(e.code, ErrorCode::StreamDeleted);
            assert_eq!(e.stream.as_deref(), Some("gone"));
        }
        other => panic!("{other:?}"),
    }
    drop(raw);

    server.restart().await;
    refused(&client).await;
    server.stop().await;
}

#[tokio::test]
async fn clients_cannot_write_metadata_streams() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_n(&client, "x", 1).await;
    client.truncate_stream("x", StreamVersion(1)).await.unwrap();

    assert!(matches!(
        client
            .append("$$x", ExpectedVersion::Any, vec![event(1)])
            .await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        client
            .append("$$fresh", ExpectedVersion::Any, vec![event(1)])
            .await,
        Err(Error::BadRequest(_))
    ));
    // A metadata stream has no lifecycle of its own.
    assert!(matches!(
        client.truncate_stream("$$x", StreamVersion(1)).await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        client.get_stream_metadata("$$x").await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        client
            .delete_stream("$$x", ExpectedVersion::Any, Deletion::Hard)
            .await,
        Err(Error::BadRequest(_))
    ));
    // But it can be read.
    let events = read(&client, "$$x").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "$truncated");
    server.stop().await;
}

#[tokio::test]
async fn the_global_log_drops_deleted_events_and_shows_lifecycle_events() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    append_n(&client, "a", 2).await;
    append_n(&client, "b", 1).await;
    append_n(&client, "c", 2).await;
    client
        .delete_stream("a", ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    client
        .delete_stream("c", ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();

    let all: Vec<RecordedEvent> = client
        .read_all(ReadAllOptions::default())
        .try_collect()
        .await
        .unwrap();
    let seen: Vec<(&str, u64, &str)> = all
        .iter()
        .map(|e| (e.stream.as_str(), e.position.0, e.event_type.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("b", 2, "Happened"),
            ("$$a", 5, "$tombstone"),
            ("$$c", 6, "$deleted")
        ],
        "positions are kept, never reused"
    );
    let tombstone = StreamLifecycle::from_json(&all[1].data).unwrap();
    assert_eq!(tombstone.stream, "a");
    assert_eq!(tombstone.deleted, Some(Deletion::Hard));
    assert_eq!(tombstone.last_version, Some(1));

    // Backward too.
    let back: Vec<RecordedEvent> = client
        .read_all(ReadAllOptions::default().backward())
        .try_collect()
        .await
        .unwrap();
    let back: Vec<u64> = back.iter().map(|e| e.position.0).collect();
    assert_eq!(back, [6, 5, 2]);

    // A new event of the soft-deleted stream comes after them all.
    client
        .append("c", ExpectedVersion::NoStream, vec![event(3)])
        .await
        .unwrap();
    let all: Vec<RecordedEvent> = client
        .read_all(ReadAllOptions::default())
        .try_collect()
        .await
        .unwrap();
    let last = all.last().unwrap();
    assert_eq!(
        (last.stream.as_str(), last.version.0, last.position.0),
        ("c", 2, 7)
    );
    assert_eq!(client.stats().await.unwrap().lifecycle_streams, 2);
    server.stop().await;
}
