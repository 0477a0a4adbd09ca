//! Online backup through the protocol while appenders run, opened by a
//! second daemon; incremental backups; and the `Stats` request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::TryStreamExt;
use logbook_client::{
    Client, Error, EventId, ExpectedVersion, NewEvent, ReadAllOptions, RecordedEvent,
    SubscribeAllOptions,
};
use logbook_server::net::ServerConfig;
use logbook_storage::StoreConfig;
use logbook_tests::TestServer;
use tokio::sync::watch;

/// Small segments and memtables, so a backup spans sealed segments, an
/// active one and index tables.
fn small(store: &mut StoreConfig, _: &mut ServerConfig) {
    store.segment_bytes = 64 << 10;
    store.max_batch_bytes = 16 << 10;
    store.max_event_bytes = 4 << 10;
    // Room in a batch for the record overhead of this many events.
    store.max_batch_events = 100;
    store.max_group_bytes = 32 << 10;
    store.index_flush_entries = 200;
    store.preallocate_bytes = 16 << 10;
}

fn event(writer: u64, i: u64) -> NewEvent {
    NewEvent::new(
        EventId::new_v7(),
        "Happened",
        format!(
            "{{\"writer\":{writer},\"i\":{i},\"pad\":\"{}\"}}",
            "x".repeat((i % 200) as usize)
        ),
    )
}

async fn all_events(client: &Client) -> Vec<RecordedEvent> {
    client
        .read_all(ReadAllOptions::default())
        .try_collect()
        .await
        .unwrap()
}

/// Appends from several tasks until told to stop, counting the events
/// acknowledged into `count`.
fn appenders(
    client: &Client,
    stop: &Arc<AtomicBool>,
    count: &Arc<watch::Sender<u64>>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..4u64)
        .map(|w| {
            let (client, stop, count) = (client.clone(), Arc::clone(stop), Arc::clone(count));
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) || i < 100 {
                    let n = 1 + i % 3;
                    let batch = (0..n).map(|k| event(w, i * 10 + k)).collect();
                    client
                        .append(format!("acct-{w}-{}", i % 7), ExpectedVersion::Any, batch)
                        .await
                        .unwrap();
                    count.send_modify(|c| *c += n);
                    i += 1;
                }
                i
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_during_appends_opens_with_exactly_its_events() {
    let server = TestServer::start_tuned(small).await;
    let client = Client::connect(server.addr).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(watch::channel(0u64).0);
    let mut acked = count.subscribe();
    let tasks = appenders(&client, &stop, &count);
    // Let some history build up (no timing: wait for a count).
    acked.wait_for(|&n| n >= 2_000).await.unwrap();
    let target = tempfile::tempdir().unwrap();
    let mut last_progress = None;
    let first = client
        .backup(target.path(), |p| last_progress = Some(*p))
        .await
        .unwrap();
    let p = last_progress.unwrap();
    assert_eq!(p.copied_bytes, p.total_bytes);
    assert_eq!(first.bytes_copied, first.bytes_total);
    assert!(first.files > 2, "{first:?}");
    // The appenders go on; a second backup into the same place copies only
    // what is new.
    acked
        .wait_for(|&n| n >= first.position.0 + 1_000)
        .await
        .unwrap();
    let check = |position: u64, dir: std::path::PathBuf| {
        let client = client.clone();
        async move {
            let original = all_events(&client).await;
            let restored =
                TestServer::start_with(StoreConfig::new(&dir), ServerConfig::default()).await;
            let c2 = Client::connect(restored.addr).await.unwrap();
            let copy = all_events(&c2).await;
            assert_eq!(copy.len() as u64, position);
            assert_eq!(copy.as_slice(), &original[..position as usize]);
            // The stream index came along (or was rebuilt) and agrees.
            let stats = c2.stats().await.unwrap();
            assert_eq!(stats.events, position);
            let streams: std::collections::HashSet<_> =
                copy.iter().map(|e| e.stream.to_string()).collect();
            assert_eq!(stats.streams, streams.len() as u64);
            assert!(stats.recovery.truncated_at.is_none(), "{stats:?}");
            drop(c2);
            restored.stop().await;
        }
    };
    check(first.position.0, target.path().to_path_buf()).await;
    let second = client.backup(target.path(), |_| {}).await.unwrap();
    assert!(second.position > first.position);
    // What is new: the active segment's tail, new segments, and the index
    // tables (with their event-id files) that flushes and merges wrote
    // since; sealed segments are not copied again.
    assert!(
        second.files_copied < second.files && second.bytes_copied < second.bytes_total * 2 / 3,
        "an incremental backup copies what is new: {second:?}"
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    check(second.position.0, target.path().to_path_buf()).await;
    // A directory a daemon is using is refused.
    let live = server.dir.as_ref().unwrap().path().to_path_buf();
    match client.backup(&live, |_| {}).await {
        Err(Error::LocalIo {
            context: "lock", ..
        }) => {}
        other => panic!("backup into a live data dir: {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn stats_reports_the_store_and_the_server() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    for s in 0..3 {
        client
            .append(
                format!("s-{s}"),
                ExpectedVersion::NoStream,
                vec![event(0, s), event(0, s + 1)],
            )
            .await
            .unwrap();
    }
    let conflict = client
        .append("s-0", ExpectedVersion::NoStream, vec![event(0, 9)])
        .await;
    assert!(matches!(conflict, Err(Error::WrongExpectedVersion { .. })));
    let mut sub = client
        .subscribe_all(SubscribeAllOptions::default())
        .await
        .unwrap();
    // Wait until the subscription has caught up, so its lag is known: 0.
    while let Some(m) = sub.try_next().await.unwrap() {
        if matches!(m, logbook_client::SubscriptionMessage::CaughtUp { .. }) {
            break;
        }
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.events, 6);
    assert_eq!(stats.streams, 3);
    assert_eq!(stats.appends, 3);
    assert_eq!(stats.events_written, 6);
    assert_eq!(stats.conflicts, 1);
    assert!(stats.fsyncs >= 1 && stats.fsyncs <= 3, "{stats:?}");
    assert!(stats.appends_per_fsync >= 1.0, "{stats:?}");
    assert_eq!(stats.segments, 1);
    assert!(stats.log_bytes > 6 * 40, "{stats:?}");
    assert!(stats.connections >= 1);
    assert_eq!(stats.subscriptions, 1);
    assert_eq!(stats.subscription_lag_max, 0);
    assert_eq!(stats.recovery.events, 0);
    assert_eq!(stats.server_version, env!("CARGO_PKG_VERSION"));
    server.stop().await;
}

/// Hostile or confused backup requests get typed errors; the connection
/// and the store go on.
#[tokio::test]
async fn bad_backup_requests_get_typed_errors() {
    use logbook_protocol::{
        BackupBegin, BackupEnd, BackupRead, ErrorCode, Ping, Request, Response, ServerMessage,
    };
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    client
        .append("s", ExpectedVersion::NoStream, vec![event(0, 1)])
        .await
        .unwrap();
    let mut c = server.raw().await;
    let code = |m: ServerMessage| match m {
        ServerMessage::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    };
    let read = |backup, file, offset, len| {
        Request::BackupRead(BackupRead {
            backup,
            file,
            offset,
            len,
        })
    };
    // No session yet.
    let (_, m) = c.call(&read(1, 0, 0, 10)).await;
    assert_eq!(code(m), ErrorCode::BadRequest);
    let (_, m) = c.call(&Request::BackupBegin(BackupBegin)).await;
    let ServerMessage::Response(Response::BackupBeginOk(begin)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(begin.position.0, 1);
    let seg = begin.files.first().unwrap().clone();
    assert!(seg.name.starts_with("log/"), "{seg:?}");
    // A file number past the list.
    let (_, m) = c
        .call(&read(begin.backup, begin.files.len() as u32, 0, 10))
        .await;
    assert_eq!(code(m), ErrorCode::BadRequest);
    // Past the end: empty; a huge length: capped at the file's end.
    let (_, m) = c.call(&read(begin.backup, 0, u64::MAX, u32::MAX)).await;
    assert!(matches!(m, ServerMessage::Response(Response::BackupReadOk(d)) if d.is_empty()));
    let (_, m) = c.call(&read(begin.backup, 0, 0, u32::MAX)).await;
    let ServerMessage::Response(Response::BackupReadOk(d)) = m else {
        panic!("{m:?}")
    };
    assert_eq!(d.len() as u64, seg.len);
    // At most 4 sessions per connection.
    for _ in 0..3 {
        let (_, m) = c.call(&Request::BackupBegin(BackupBegin)).await;
        assert!(matches!(
            m,
            ServerMessage::Response(Response::BackupBeginOk(_))
        ));
    }
    let (_, m) = c.call(&Request::BackupBegin(BackupBegin)).await;
    assert_eq!(code(m), ErrorCode::ServerBusy);
    // Ending is idempotent; then the read is refused.
    for _ in 0..2 {
        let (_, m) = c
            .call(&Request::BackupEnd(BackupEnd {
                backup: begin.backup,
            }))
            .await;
        assert!(matches!(m, ServerMessage::Response(Response::BackupEndOk)));
    }
    let (_, m) = c.call(&read(begin.backup, 0, 0, 10)).await;
    assert_eq!(code(m), ErrorCode::BadRequest);
    let (_, m) = c.call(&Request::Ping(Ping { nonce: 7 })).await;
    assert!(matches!(m, ServerMessage::Response(Response::Pong(_))));
    // Nothing stored was touched.
    assert_eq!(all_events(&client).await.len(), 1);
    server.stop().await;
}

/// A server whose frames are smaller than 1 MiB reads backups in smaller
/// pieces; the client follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_with_small_frames() {
    let server = TestServer::start_tuned(|store, net| {
        store.max_batch_bytes = 256 << 10;
        store.max_event_bytes = 128 << 10;
        store.max_batch_events = 1_000;
        net.max_frame_bytes = 512 << 10;
    })
    .await;
    let client = Client::connect(server.addr).await.unwrap();
    for i in 0..30u64 {
        let big = NewEvent::new(EventId::new_v7(), "Blob", logbook_tests::payload(100_000));
        client
            .append(format!("blob-{}", i % 3), ExpectedVersion::Any, vec![big])
            .await
            .unwrap();
    }
    let target = tempfile::tempdir().unwrap();
    let report = client.backup(target.path(), |_| {}).await.unwrap();
    assert_eq!(report.position.0, 30);
    assert!(report.bytes_total > 3_000_000, "{report:?}");
    let original = all_events(&client).await;
    server.stop().await;
    let restored =
        TestServer::start_with(StoreConfig::new(target.path()), ServerConfig::default()).await;
    let c2 = Client::connect(restored.addr).await.unwrap();
    assert_eq!(all_events(&c2).await, original);
    restored.stop().await;
}

/// A backup cut off half way leaves a directory the daemon refuses; the
/// next run completes it. A directory holding another store is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_backups_are_refused_until_completed() {
    let server = TestServer::start_tuned(small).await;
    let client = Client::connect(server.addr).await.unwrap();
    for i in 0..400u64 {
        client
            .append(
                format!("acct-{}", i % 9),
                ExpectedVersion::Any,
                (0..5).map(|k| event(0, i * 5 + k)).collect(),
            )
            .await
            .unwrap();
    }
    let proxy = logbook_tests::Proxy::start(server.addr).await;
    let through_proxy = Client::connect_with(
        proxy.addr,
        logbook_client::ClientOptions::default().retry(logbook_client::RetryPolicy::none()),
    )
    .await
    .unwrap();
    let target = tempfile::tempdir().unwrap();
    let cut = through_proxy
        .backup(target.path(), |p| {
            if p.copied_bytes > 0 {
                proxy.cut();
            }
        })
        .await;
    assert!(cut.is_err(), "{cut:?}");
    match logbook_storage::Store::open(StoreConfig::new(target.path())) {
        Err(logbook_storage::StorageError::UnfinishedBackup { .. }) => {}
        other => panic!("an unfinished backup opened: {other:?}"),
    }
    let done = client.backup(target.path(), |_| {}).await.unwrap();
    let original = all_events(&client).await;
    let restored =
        TestServer::start_with(StoreConfig::new(target.path()), ServerConfig::default()).await;
    let c2 = Client::connect(restored.addr).await.unwrap();
    assert_eq!(all_events(&c2).await, original[..done.position.0 as usize]);
    restored.stop().await;
    // A run that fails before changing anything (the server is gone)
    // leaves the completed backup usable.
    drop(proxy);
    assert!(through_proxy.backup(target.path(), |_| {}).await.is_err());
    let reopened = logbook_storage::Store::open(StoreConfig::new(target.path())).unwrap();
    assert_eq!(reopened.head(), done.position);
    reopened.close().unwrap();
    // Another store's (stopped) data directory is not a backup target.
    let other = TestServer::start().await;
    let other_dir = other.dir.as_ref().unwrap().path().to_path_buf();
    let other_client = Client::connect(other.addr).await.unwrap();
    other_client
        .append("x", ExpectedVersion::Any, vec![event(9, 9)])
        .await
        .unwrap();
    other.store.close().unwrap();
    match client.backup(&other_dir, |_| {}).await {
        Err(Error::LocalIo {
            context: "back up into",
            ..
        }) => {}
        result => panic!("backup into another store's directory: {result:?}"),
    }
    server.stop().await;
}
