//! Scavenge and erase over the wire (PROTOCOL.md §5.11), against a real
//! daemon in this process with small segments: the disk given back with
//! the survivors read back identical, the progress and counters in Stats,
//! the connection serving on while a scavenge runs, one scavenge at a
//! time, and an erase leaving no byte of the stream in any file under the
//! data directory. Through the client, and raw frames where the error code
//! itself is the point.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::TryStreamExt;
use logbook_client::{
    Client, Deletion, Error, EventId, ExpectedVersion, NewEvent, ReadAllOptions, ReadStreamOptions,
    RecordedEvent, ScavengeOptions, ScavengeReport,
};
use logbook_protocol::{Erase, ErrorCode, Request, Scavenge, ServerMessage, Text};
use logbook_server::net::ServerConfig;
use logbook_storage::{Durability, StorageError, StoreConfig};
use logbook_tests::{TestServer, within};

/// Streams the tests fill.
const STREAMS: usize = 40;
/// Events per stream.
const EVENTS: usize = 10;

/// Segments of about 64 KiB, so that a few hundred events of 600 bytes
/// fill several.
fn tune(s: &mut StoreConfig) {
    s.segment_bytes = 64 << 10;
    s.max_batch_bytes = 32 << 10;
    s.max_event_bytes = 16 << 10;
    // Room in a batch for the record overhead of this many events.
    s.max_batch_events = 100;
    s.durability = Durability::Os;
}

/// A daemon with small segments ([`tune`]).
async fn small_segments() -> TestServer {
    TestServer::start_tuned(|s, _| tune(s)).await
}

fn stream(i: usize) -> String {
    format!("acct-{i}")
}

/// An event of `stream` number `s`, its `n`th, with `data` after a
/// 600-byte body.
fn event(s: usize, n: usize, extra: &[u8]) -> NewEvent {
    let mut data = format!(
        "{{\"stream\":{s},\"n\":{n},\"pad\":\"{}\"}}",
        "p".repeat(560)
    )
    .into_bytes();
    data.extend_from_slice(extra);
    NewEvent::new(EventId::new_v7(), "Deposited", data)
}

/// Appends [`EVENTS`] events to each of [`STREAMS`] streams, two at a
/// time and round-robin, so that every segment holds events of many
/// streams.
async fn fill(client: &Client) {
    for n in (0..EVENTS).step_by(2) {
        for s in 0..STREAMS {
            let events = vec![event(s, n, b""), event(s, n + 1, b"")];
            client
                .append(stream(s), ExpectedVersion::Any, events)
                .await
                .unwrap();
        }
    }
}

/// Deletes every even-numbered stream, softly or hard by turns.
async fn delete_half(client: &Client) {
    for s in (0..STREAMS).step_by(2) {
        let mode = if s % 4 == 0 {
            Deletion::Soft
        } else {
            Deletion::Hard
        };
        client
            .delete_stream(stream(s), ExpectedVersion::Any, mode)
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

async fn read_all(client: &Client) -> Vec<RecordedEvent> {
    client
        .read_all(ReadAllOptions::default())
        .try_collect()
        .await
        .unwrap()
}

/// The surviving (odd-numbered) streams' events.
async fn survivors(client: &Client) -> Vec<Vec<RecordedEvent>> {
    let mut all = Vec::new();
    for s in (1..STREAMS).step_by(2) {
        all.push(read(client, &stream(s)).await.unwrap());
    }
    all
}

/// 32 bytes no file holds by chance.
fn random_marker() -> [u8; 32] {
    let mut marker = [0u8; 32];
    for (i, chunk) in marker.chunks_mut(8).enumerate() {
        let word = RandomState::new().hash_one(i);
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    marker
}

/// Every file under `root` whose bytes hold `marker`.
fn files_holding(root: &Path, marker: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(marker.len())
                .any(|w| w == marker)
            {
                hits.push(path);
            }
        }
    }
    hits
}

fn data_dir(server: &TestServer) -> &Path {
    server.dir.as_ref().unwrap().path()
}

#[tokio::test]
async fn scavenge_gives_the_disk_back_and_the_survivors_read_back_identical() {
    let server = small_segments().await;
    let client = Client::connect(server.addr).await.unwrap();
    fill(&client).await;
    let before = client.stats().await.unwrap();
    assert!(before.segments >= 4, "{} segments", before.segments);
    delete_half(&client).await;
    let kept = survivors(&client).await;
    let log_before = read_all(&client).await;
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.scavenges, 0);
    assert_eq!(stats.scavenge_segments, 0);
    assert_eq!(stats.scavenge_bytes_reclaimed, 0);

    let report = client.scavenge(ScavengeOptions::default()).await.unwrap();
    assert!(report.segments_considered >= 2, "{report:?}");
    assert!(report.segments_rewritten >= 2, "{report:?}");
    // Merged neighbours count as rewritten too.
    assert!(report.segments_rewritten >= report.segments_merged);
    assert_eq!(report.events_removed, (STREAMS / 2 * EVENTS) as u64);
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    // About half of each rewritten segment was deleted events.
    assert!(
        report.bytes_reclaimed() > report.bytes_before / 3,
        "{report:?}"
    );

    // The counters moved, and the progress says it is complete.
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.scavenges, 1);
    assert_eq!(stats.scavenge_segments, report.segments_rewritten);
    assert_eq!(stats.scavenge_bytes_reclaimed, report.bytes_reclaimed());
    assert_eq!(stats.scavenge_todo, report.segments_considered);
    assert_eq!(stats.scavenge_done, stats.scavenge_todo);
    assert!(stats.log_bytes < before.log_bytes, "{stats:?}");

    // The survivors are as they were, at the same versions and positions;
    // the deleted streams stay deleted.
    assert_eq!(survivors(&client).await, kept);
    for s in (0..STREAMS).step_by(2) {
        let r = read(&client, &stream(s)).await;
        if s % 4 == 0 {
            assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}");
        } else {
            assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
        }
    }
    // The global log too, but for the scavenge's own events.
    let log_after: Vec<RecordedEvent> = read_all(&client)
        .await
        .into_iter()
        .filter(|e| e.stream != "$scavenges")
        .collect();
    assert_eq!(log_after, log_before);

    // `$scavenges` says when it started and what it did.
    let events = read(&client, "$scavenges").await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["$scavenge-started", "$scavenged"]);
    let done: serde_json::Value = serde_json::from_slice(&events[1].data).unwrap();
    assert_eq!(done["segments_rewritten"], report.segments_rewritten);
    assert_eq!(done["bytes_after"], report.bytes_after);

    // A second scavenge finds nothing more to do.
    let again = client.scavenge(ScavengeOptions::default()).await.unwrap();
    assert_eq!(again.segments_rewritten, 0, "{again:?}");
    assert_eq!(again.events_removed, 0, "{again:?}");
    assert_eq!(client.stats().await.unwrap().scavenges, 2);
    assert_eq!(survivors(&client).await, kept);
    server.stop().await;
}

/// A throttled scavenge takes seconds; meanwhile its own connection
/// answers pings, reports its progress, refuses a second scavenge with
/// `ServerBusy` and queues an erase behind it.
#[tokio::test]
async fn the_connection_serves_on_while_a_scavenge_runs() {
    let server = small_segments().await;
    let client = Client::connect(server.addr).await.unwrap();
    fill(&client).await;
    delete_half(&client).await;
    let kept = survivors(&client).await;

    // ~32 KiB/s over segments of up to 64 KiB: a few seconds.
    let slow = ScavengeOptions::default().max_bytes_per_sec(32 << 10);
    let running = tokio::spawn({
        let client = client.clone();
        async move { client.scavenge(slow).await }
    });
    // Its progress shows up in Stats, on the same connection.
    let progress = within(10, "the scavenge's progress", async {
        loop {
            let s = client.stats().await.unwrap();
            if s.scavenge_todo > 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        progress.scavenge_done < progress.scavenge_todo,
        "{progress:?}"
    );
    assert_eq!(progress.scavenges, 0);

    // Requests sent after it are answered before it.
    client.ping().await.unwrap();
    assert_eq!(survivors(&client).await, kept);
    assert!(matches!(
        client.scavenge(ScavengeOptions::default()).await,
        Err(Error::ServerBusy)
    ));
    // On another connection too.
    let other = Client::connect(server.addr).await.unwrap();
    assert!(matches!(
        other.scavenge(ScavengeOptions::default()).await,
        Err(Error::ServerBusy)
    ));
    // An erase waits its turn instead.
    let erase = tokio::spawn({
        let client = client.clone();
        async move { client.erase(stream(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!running.is_finished(), "the scavenge was too quick to test");
    assert!(!erase.is_finished(), "the erase did not wait");

    let report: ScavengeReport = within(60, "the scavenge", running).await.unwrap().unwrap();
    assert!(report.segments_rewritten >= 2, "{report:?}");
    let receipt = within(60, "the erase", erase).await.unwrap().unwrap();
    assert!(receipt.segments_rewritten >= 1, "{receipt:?}");
    assert!(matches!(
        read(&client, &stream(1)).await,
        Err(Error::StreamDeleted { .. })
    ));
    server.stop().await;
}

/// A scavenge still running when the server shuts down is answered
/// `ShuttingDown`; the engine stops it between two segments, and the
/// store it leaves opens with the survivors intact and scavenges the rest.
#[tokio::test]
async fn a_scavenge_running_at_shutdown_is_answered_shutting_down() {
    let mut server = small_segments().await;
    let client = Client::connect(server.addr).await.unwrap();
    fill(&client).await;
    delete_half(&client).await;
    let kept = survivors(&client).await;
    let slow = ScavengeOptions::default().max_bytes_per_sec(32 << 10);
    let running = tokio::spawn({
        let client = client.clone();
        async move { client.scavenge(slow).await }
    });
    within(10, "the scavenge's start", async {
        while client.stats().await.unwrap().scavenge_todo == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let dir = server.dir.take().unwrap();
    let store = server.store.clone();
    server.stop().await;
    let r = within(10, "the scavenge's reply", running).await.unwrap();
    assert!(matches!(r, Err(Error::ShuttingDown)), "{r:?}");
    // The engine's scavenge goes on to the end of its segment: wait until
    // it lets go (a scavenge of the closed store is then refused for
    // shutting down, no longer for being busy).
    within(60, "the engine's scavenge to stop", async {
        loop {
            let store = store.clone();
            let r = tokio::task::spawn_blocking(move || store.scavenge(Default::default()))
                .await
                .unwrap();
            match r {
                Err(StorageError::Busy(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => break,
            }
        }
    })
    .await;

    let mut config = StoreConfig::new(dir.path());
    tune(&mut config);
    let server = TestServer::start_with(config, ServerConfig::default()).await;
    let client = Client::connect(server.addr).await.unwrap();
    assert_eq!(survivors(&client).await, kept);
    client.scavenge(ScavengeOptions::default()).await.unwrap();
    let last = client.scavenge(ScavengeOptions::default()).await.unwrap();
    assert_eq!(last.events_removed, 0, "{last:?}");
    assert_eq!(survivors(&client).await, kept);
    server.stop().await;
    drop(dir);
}

/// Two scavenges at once, from two connections: each completes or is
/// refused with `ServerBusy`, nothing else.
#[tokio::test]
async fn a_second_scavenge_at_once_is_busy_or_completes() {
    let server = small_segments().await;
    let a = Client::connect(server.addr).await.unwrap();
    let b = Client::connect(server.addr).await.unwrap();
    fill(&a).await;
    delete_half(&a).await;
    let kept = survivors(&a).await;
    let (ra, rb) = tokio::join!(
        a.scavenge(ScavengeOptions::default()),
        b.scavenge(ScavengeOptions::default())
    );
    for r in [&ra, &rb] {
        assert!(matches!(r, Ok(_) | Err(Error::ServerBusy)), "{r:?}");
    }
    assert!(ra.is_ok() || rb.is_ok(), "{ra:?} {rb:?}");
    let removed: u64 = [ra, rb]
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.events_removed)
        .sum();
    assert_eq!(removed, (STREAMS / 2 * EVENTS) as u64);
    assert_eq!(survivors(&a).await, kept);
    server.stop().await;
}

#[tokio::test]
async fn erase_leaves_no_byte_of_the_stream_under_the_data_directory() {
    let mut server = small_segments().await;
    let client = Client::connect(server.addr).await.unwrap();
    let marker = random_marker();
    // The person's events spread over sealed segments and the active one,
    // between other streams' events.
    let mut ids = Vec::new();
    for n in 0..60 {
        let e = event(99, n, &marker);
        ids.push(e.id);
        client
            .append("person-42", ExpectedVersion::Any, vec![e])
            .await
            .unwrap();
        for s in 0..4 {
            client
                .append(stream(s), ExpectedVersion::Any, vec![event(s, n, b"")])
                .await
                .unwrap();
        }
    }
    let dir = data_dir(&server).to_path_buf();
    assert!(
        !files_holding(&dir, &marker).is_empty(),
        "the marker is on disk before the erase"
    );
    let others = {
        let mut v = Vec::new();
        for s in 0..4 {
            v.push(read(&client, &stream(s)).await.unwrap());
        }
        v
    };

    let receipt = client.erase("person-42").await.unwrap();
    assert!(receipt.segments_rewritten >= 2, "{receipt:?}");
    assert_eq!(receipt.events_removed, 60, "{receipt:?}");
    assert!(receipt.bytes_after < receipt.bytes_before, "{receipt:?}");
    let hits = files_holding(&dir, &marker);
    assert!(hits.is_empty(), "the marker is still in {hits:?}");

    // Deleted for ever; its tombstone is where the receipt says.
    assert!(matches!(
        read(&client, "person-42").await,
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        client
            .append("person-42", ExpectedVersion::Any, vec![event(99, 0, b"")])
            .await,
        Err(Error::StreamDeleted { .. })
    ));
    let state = client
        .get_stream_metadata("person-42")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.position, receipt.position);
    assert_eq!(state.state.deleted, Some(Deletion::Hard));
    for (s, events) in others.iter().enumerate() {
        assert_eq!(&read(&client, &stream(s)).await.unwrap(), events);
    }
    // The erased events' ids stay reserved.
    let reused = NewEvent::new(ids[3], "Deposited", &b"{}"[..]);
    assert!(matches!(
        client
            .append("someone-else", ExpectedVersion::Any, vec![reused])
            .await,
        Err(Error::DuplicateEventId { id, .. }) if id == ids[3]
    ));

    // Erasing again is allowed (a retry after a lost reply): nothing left
    // to rewrite, the same tombstone.
    let again = client.erase("person-42").await.unwrap();
    assert_eq!(again.position, receipt.position);
    assert_eq!(again.segments_rewritten, 0, "{again:?}");

    // Still nowhere after a restart (recovery rebuilds nothing from it).
    server.restart().await;
    assert!(files_holding(&dir, &marker).is_empty());
    assert!(matches!(
        read(&client, "person-42").await,
        Err(Error::StreamDeleted { .. })
    ));
    server.stop().await;
}

#[tokio::test]
async fn erase_refuses_metadata_streams_and_bad_names() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    client
        .append("x", ExpectedVersion::Any, vec![event(0, 0, b"")])
        .await
        .unwrap();
    client
        .delete_stream("x", ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();
    for bad in ["$$x", "", "tab\there"] {
        let r = client.erase(bad).await;
        assert!(matches!(r, Err(Error::BadRequest(_))), "{bad:?}: {r:?}");
    }

    // On the wire: BadRequest, and the connection stays open.
    let mut raw = server.raw().await;
    for (request, code) in [
        (
            Request::Erase(Erase {
                stream: Text::from("$$x"),
            }),
            ErrorCode::BadRequest,
        ),
        (
            Request::Scavenge(Scavenge {
                max_bytes_per_sec: Some(0),
            }),
            ErrorCode::BadRequest,
        ),
    ] {
        match raw.call(&request).await.1 {
            ServerMessage::Error(e) => assert_eq!(e.code, code, "{request:?}: {e:?}"),
            other => panic!("{request:?}: {other:?}"),
        }
    }
    assert!(matches!(
        client
            .scavenge(ScavengeOptions::default().max_bytes_per_sec(0))
            .await,
        Err(Error::BadRequest(_))
    ));
    // The stream was left alone, and the connection serves on.
    let state = client.get_stream_metadata("x").await.unwrap().unwrap();
    assert_eq!(state.state.deleted, Some(Deletion::Soft));
    match raw.call(&Request::Scavenge(Scavenge::default())).await.1 {
        ServerMessage::Response(logbook_protocol::Response::ScavengeOk(ok)) => {
            assert_eq!(ok.events_removed, 1, "{ok:?}");
        }
        other => panic!("{other:?}"),
    }
    drop(raw);
    server.stop().await;
}

/// With `scavenge_interval` the server scavenges on its own: removed
/// events' disk comes back with no client asking, the report lands in
/// `$scavenges`, and the survivors read back identical.
#[tokio::test]
async fn scheduled_scavenges_run_on_their_own() {
    let server = TestServer::start_tuned(|s, c| {
        tune(s);
        c.scavenge_interval = Some(Duration::from_millis(20));
        c.scavenge_max_bytes_per_sec = Some(64 << 20);
    })
    .await;
    let client = Client::connect(server.addr).await.unwrap();
    fill(&client).await;
    delete_half(&client).await;
    let before = survivors(&client).await;
    // Polled: the schedule's own clock decides when it runs.
    within(60, "a scheduled scavenge", async {
        loop {
            let s = client.stats().await.unwrap();
            if s.scavenges > 0 && s.scavenge_bytes_reclaimed > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let reports = read(&client, "$scavenges").await.unwrap();
    assert!(
        reports.iter().any(|e| e.event_type == "$scavenged"),
        "{reports:?}"
    );
    assert_eq!(survivors(&client).await, before);
    server.stop().await;
}
