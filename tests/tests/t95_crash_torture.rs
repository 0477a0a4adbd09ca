//! Crash torture: the built `logbookd`, driven by concurrent appenders
//! (mixed batch sizes, many streams, `Any` and `Exact` expected versions)
//! and a live subscriber, is killed with SIGKILL at random moments and
//! restarted, over and over. After every restart:
//!
//! - every acknowledged append is present exactly once, where it was
//!   acknowledged, with identical content;
//! - every event present belongs to an append that was sent, whole (no
//!   half-written batch), positions are dense and stream versions
//!   contiguous;
//! - the log before the crash is a prefix of the log after it;
//! - stream reads through the index agree with the log, also after the
//!   index files were deleted or damaged between runs;
//!
//! and at the end the subscriber, which rode through every crash on its
//! own (the client resubscribes after the daemon comes back), has seen
//! every event exactly once, in log order.
//!
//! `LOGBOOK_TORTURE_KILLS` sets the number of kills (default 24: part of
//! `cargo test`); the long run in RELIABILITY.md uses 1000.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use logbook_client::{
    AppendResult, Client, ClientOptions, Error, EventId, ExpectedVersion, NewEvent, ReadAllOptions,
    ReadStreamOptions, RecordedEvent, RetryPolicy, StreamVersion, SubscribeAllOptions,
    SubscriptionMessage,
};
use logbook_tests::daemon::Daemon;
use parking_lot::Mutex;

const STREAMS: u64 = 12;
const TASKS: u64 = 6;

/// Acknowledgements so far in a round, and a wake-up for each.
#[derive(Default)]
struct Acks {
    count: AtomicU64,
    notify: tokio::sync::Notify,
}

/// A batch as it was sent.
#[derive(Clone, Debug)]
struct Sent {
    stream: String,
    ids: Vec<EventId>,
}

#[derive(Default)]
struct Model {
    /// Batches sent whose fate is unknown (no reply, or an error other than
    /// a conflict), by first event id.
    maybe: HashMap<EventId, Sent>,
    /// Acknowledged batches with their results.
    acked: Vec<(Sent, AppendResult)>,
    /// Unacknowledged batches that a restart found in the log: they are
    /// there for good now.
    landed: HashMap<EventId, Sent>,
    /// Each stream's last version as the verified log says.
    versions: HashMap<String, u64>,
    /// What each batch's append returned, for failure messages.
    outcomes: HashMap<EventId, String>,
}

fn data_of(id: EventId) -> String {
    format!("data-{id}")
}

fn free_listen_addr() -> String {
    format!("127.0.0.1:{}", logbook_tests::reserved_port())
}

fn options() -> ClientOptions {
    ClientOptions::default()
        .connect_timeout(Some(Duration::from_secs(5)))
        .request_timeout(Some(Duration::from_secs(5)))
        .retry(RetryPolicy::none())
}

async fn appender(
    addr: String,
    round: u64,
    task: u64,
    model: Arc<Mutex<Model>>,
    acks: Arc<Acks>,
    stop: Arc<AtomicBool>,
) {
    let Ok(client) = Client::connect_with(addr.as_str(), options()).await else {
        return;
    };
    let mut seq = 0u64;
    let mut x = round * 1_000_003 + task * 7919 + 1;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let stream = format!("torture-{}", x % STREAMS);
        let n = 1 + (x >> 8) % 4;
        let ids: Vec<EventId> = (0..n)
            .map(|k| {
                EventId::from_u128(
                    u128::from(round) << 96
                        | u128::from(task) << 80
                        | u128::from(seq) << 16
                        | u128::from(k),
                )
            })
            .collect();
        seq += 1;
        let expected = if (x >> 16) % 5 < 2 {
            ExpectedVersion::from(
                model
                    .lock()
                    .versions
                    .get(&stream)
                    .map(|v| StreamVersion(*v)),
            )
        } else {
            ExpectedVersion::Any
        };
        let sent = Sent {
            stream: stream.clone(),
            ids: ids.clone(),
        };
        let Some(first) = ids.first().copied() else {
            continue;
        };
        model.lock().maybe.insert(first, sent.clone());
        let events = ids
            .iter()
            .map(|id| NewEvent::new(*id, "Tortured", data_of(*id)))
            .collect();
        match client.append(stream.as_str(), expected, events).await {
            Ok(r) => {
                let mut m = model.lock();
                m.maybe.remove(&first);
                m.versions.insert(stream, r.last_version.0);
                m.acked.push((sent, r));
                drop(m);
                acks.count.fetch_add(1, Ordering::Relaxed);
                acks.notify.notify_waiters();
            }
            Err(Error::WrongExpectedVersion { actual, .. }) => {
                // Refused: nothing was written.
                let mut m = model.lock();
                m.outcomes.insert(
                    first,
                    format!("refused: expected {expected}, actual {actual:?}"),
                );
                m.maybe.remove(&first);
                match actual {
                    Some(v) => m.versions.insert(stream, v.0),
                    None => m.versions.remove(&stream),
                };
            }
            Err(e) => {
                // The daemon died (or is dying): the batch may or may not be
                // there after the restart.
                model.lock().outcomes.insert(first, format!("failed: {e}"));
                return;
            }
        }
    }
}

/// Checks the restarted daemon's log against the model; returns the log.
async fn verify(
    client: &Client,
    model: &Mutex<Model>,
    before: &[RecordedEvent],
    round: u64,
) -> Vec<RecordedEvent> {
    let log: Vec<RecordedEvent> = client
        .read_all(ReadAllOptions::default().page_size(10_000))
        .try_collect()
        .await
        .expect("read the log");
    assert!(
        log.iter()
            .enumerate()
            .all(|(i, e)| e.position.0 == i as u64),
        "positions are dense"
    );
    assert!(
        log.len() >= before.len(),
        "the log shrank: {} -> {}",
        before.len(),
        log.len()
    );
    for (a, b) in before.iter().zip(&log) {
        assert_eq!(
            (a.id, &a.stream, a.version),
            (b.id, &b.stream, b.version),
            "the log before the crash is a prefix"
        );
    }
    check_batches(&log, model, round);
    // The index agrees with the log, stream by stream.
    for s in 0..STREAMS {
        let stream = format!("torture-{s}");
        let want: Vec<_> = log
            .iter()
            .filter(|e| e.stream.as_str() == stream)
            .map(|e| (e.version, e.position))
            .collect();
        let got = match client
            .read_stream(stream.as_str(), ReadStreamOptions::default())
            .try_collect::<Vec<_>>()
            .await
        {
            Ok(v) => v.iter().map(|e| (e.version, e.position)).collect(),
            Err(Error::StreamNotFound { .. }) => Vec::new(),
            Err(e) => panic!("read {stream}: {e}"),
        };
        assert_eq!(got, want, "stream {stream} through the index");
    }
    log
}

/// Checks the log against what was sent and acknowledged, then settles
/// the fate of every batch whose append got no answer.
fn check_batches(log: &[RecordedEvent], model: &Mutex<Model>, round: u64) {
    let mut m = model.lock();
    for (sent, r) in &m.acked {
        for (k, id) in sent.ids.iter().enumerate() {
            let e = log
                .get(r.first_position.0 as usize + k)
                .expect("acknowledged event present");
            assert_eq!(e.id, *id, "acknowledged event at its position");
            assert_eq!(e.stream.as_str(), sent.stream);
            assert_eq!(e.version.0, r.first_version.0 + k as u64);
            assert_eq!(e.data, data_of(*id));
        }
    }
    // Everything present is a whole batch that was sent, once.
    let acked_first: HashMap<EventId, &Sent> = m
        .acked
        .iter()
        .filter_map(|(s, _)| Some((*s.ids.first()?, s)))
        .collect();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut seen_first = std::collections::HashSet::new();
    let mut i = 0;
    while let Some(e) = log.get(i) {
        let sent = acked_first
            .get(&e.id)
            .copied()
            .or_else(|| m.maybe.get(&e.id))
            .or_else(|| m.landed.get(&e.id))
            .unwrap_or_else(|| panic!("event {} at {i} starts no batch that was sent (verify after round {round}; its append: {:?})", e.id, m.outcomes.get(&e.id)));
        assert!(seen_first.insert(e.id), "batch {} present twice", e.id);
        for (k, id) in sent.ids.iter().enumerate() {
            let got = log
                .get(i + k)
                .unwrap_or_else(|| panic!("batch at {i} cut short"));
            assert_eq!(got.id, *id, "batch at {i} is whole");
            let v = versions.entry(sent.stream.clone()).or_insert(0);
            assert_eq!(got.version.0, *v, "versions of {} contiguous", sent.stream);
            *v += 1;
        }
        i += sent.ids.len();
    }
    // What survived is decided now: nothing unknown is left.
    let maybe = std::mem::take(&mut m.maybe);
    for (first, sent) in maybe {
        if seen_first.contains(&first) {
            m.landed.insert(first, sent);
        }
    }
    m.versions = versions.iter().map(|(s, n)| (s.clone(), n - 1)).collect();
}

/// Damages the index between runs: deleting it, or truncating a table.
fn damage_index(dir: &std::path::Path, round: u64) {
    let idx = dir.join("index");
    let Ok(entries) = std::fs::read_dir(&idx) else {
        return;
    };
    let files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    if round.is_multiple_of(2) {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
    } else if let Some(t) = files
        .iter()
        .find(|f| f.extension().is_some_and(|x| x == "sidx"))
    {
        let len = std::fs::metadata(t).map(|m| m.len()).unwrap_or(0);
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .open(t)
            .and_then(|f| f.set_len(len / 2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_torture() {
    let kills: u64 = std::env::var("LOGBOOK_TORTURE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr = free_listen_addr();
    let flags = [
        "--segment-bytes",
        "1MiB",
        "--index-flush-entries",
        "3000",
        "--max-append-bytes",
        "256KiB",
        "--max-event-bytes",
        "64KiB",
        "--max-frame-bytes",
        "1MiB",
    ];
    let model = Arc::new(Mutex::new(Model::default()));
    let mut log: Vec<RecordedEvent> = Vec::new();
    let mut daemon = Daemon::start_on(&data, &addr, &flags);

    // The subscriber follows the log through every crash.
    let sub_client = Client::connect_with(addr.as_str(), ClientOptions::default())
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<RecordedEvent>>> = Arc::default();
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(0usize);
    let subscriber = {
        let seen = Arc::clone(&seen);
        let mut sub = sub_client
            .subscribe_all(SubscribeAllOptions::default().window(4096))
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                match m {
                    Ok(SubscriptionMessage::Event(e)) => {
                        let n = {
                            let mut s = seen.lock();
                            s.push(e);
                            s.len()
                        };
                        let _ = seen_tx.send(n);
                    }
                    Ok(_) => {}
                    Err(e) => panic!("subscription failed: {e}"),
                }
            }
        })
    };

    let mut total_events_verified = 0usize;
    for round in 0..kills {
        let acks = Arc::new(Acks::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                tokio::spawn(appender(
                    addr.clone(),
                    round,
                    t,
                    Arc::clone(&model),
                    Arc::clone(&acks),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        // Let a random number of appends through, then pull the plug.
        let target = 20 + (round * 7919) % 200;
        loop {
            let woken = acks.notify.notified();
            if acks.count.load(Ordering::Relaxed) >= target {
                break;
            }
            woken.await;
        }
        daemon.kill();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        if round % 5 == 4 {
            damage_index(&data, round);
        }
        daemon = Daemon::start_on(&data, &addr, &flags);
        let client = Client::connect_with(addr.as_str(), options())
            .await
            .unwrap();
        log = verify(&client, &model, &log, round).await;
        total_events_verified += log.len();
    }

    // Stop cleanly, restart, check once more, and wait for the subscriber.
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let daemon = Daemon::start_on(&data, &addr, &flags);
    let client = Client::connect_with(addr.as_str(), options())
        .await
        .unwrap();
    log = verify(&client, &model, &log, kills).await;
    let want = log.len();
    seen_rx
        .wait_for(|n| *n >= want)
        .await
        .expect("the subscriber keeps going");
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), log.len(), "the subscriber saw each event once");
    for (a, b) in seen.iter().zip(&log) {
        assert_eq!((a.position, a.id), (b.position, b.id), "in log order");
    }
    subscriber.abort();
    eprintln!(
        "torture: {kills} kills survived; {} events in the log, {} acknowledged appends checked, {total_events_verified} event checks; the subscriber saw {} events exactly once",
        log.len(),
        model.lock().acked.len(),
        seen.len()
    );
    daemon.kill();
}
