//! Client subscriptions against a real in-process daemon: every subscriber
//! sees exactly the log from where it started (no gap, no duplicate, same
//! bytes), whatever the interleaving with appends, the catch-up/live
//! switch, broken connections (server restart, network cut, client reset)
//! or a restart of the consumer from its stored checkpoint.
//!
//! Every run ends with a `Stop` event appended after all other appends:
//! a subscriber is done when it has seen it. Synchronisation is by
//! channels and the store's head watch, never by sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use logbook_client::{
    Checkpoint, CheckpointStore, Client, ClientOptions, EventId, ExpectedVersion,
    FileCheckpointStore, Filter, LogPosition, NewEvent, RecordedEvent, RetryPolicy, StreamVersion,
    SubscribeAllOptions, SubscribeFrom, SubscribeStreamOptions, Subscription, SubscriptionMessage,
};
use logbook_protocol::Direction;
use logbook_storage::Durability;
use logbook_tests::{Proxy, TestServer, payload};
use tokio::sync::watch;

const STOP: &str = "Stop";
const STOP_STREAM: &str = "acct-0-1";

/// Event ids, unique across the test process.
static IDS: AtomicU64 = AtomicU64::new(1);

fn ev(event_type: &str) -> NewEvent {
    let id = IDS.fetch_add(1, Ordering::Relaxed);
    NewEvent::new(EventId::from_u128(u128::from(id)), event_type, payload(24))
}

const TYPES: [&str; 3] = ["Opened", "Deposited", "Withdrawn"];

/// Patient options: calls and subscriptions ride out restarts.
fn options() -> ClientOptions {
    ClientOptions::default()
        .retry(
            RetryPolicy::default()
                .max_attempts(200)
                .backoff(Duration::from_millis(1), Duration::from_millis(20)),
        )
        .resubscribe(
            RetryPolicy::forever().backoff(Duration::from_millis(1), Duration::from_millis(20)),
        )
}

async fn client(addr: std::net::SocketAddr) -> Client {
    Client::connect_with(addr, options()).await.unwrap()
}

async fn fast_server() -> TestServer {
    TestServer::start_tuned(|s, _| s.durability = Durability::Os).await
}

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Appends `batches` batches of 1 to 4 events to streams `acct-{t}-*`.
async fn append_batches(client: Client, t: u64, batches: u64, seed: u64) {
    let mut rng = Rng(seed | 1);
    for i in 0..batches {
        let n = 1 + rng.below(4);
        let events = (0..n).map(|_| ev(TYPES[rng.below(3) as usize])).collect();
        client
            .append(format!("acct-{t}-{}", i % 4), ExpectedVersion::Any, events)
            .await
            .unwrap();
        if i % 8 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

async fn append_stop(client: &Client) {
    client
        .append(STOP_STREAM, ExpectedVersion::Any, vec![ev(STOP)])
        .await
        .unwrap();
}

fn log(server: &TestServer) -> Vec<RecordedEvent> {
    server
        .store
        .read_all(None, Direction::Forward, 1_000_000)
        .unwrap()
        .events
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    events: Vec<RecordedEvent>,
    caught_up: usize,
    fell_behind: usize,
    /// Events seen before the first `CaughtUp`.
    before_live: Option<usize>,
}

/// Consumes `sub` until the `Stop` event, checking that `CaughtUp` and
/// `FellBehind` alternate (starting with `CaughtUp`). `progress` receives
/// the log position reached (see [`reached`]) and whether the subscription
/// is live;
/// `on_event` may act on each event.
async fn consume(
    mut sub: Subscription,
    progress: Option<watch::Sender<(u64, bool)>>,
    mut on_event: impl FnMut(&RecordedEvent, usize),
) -> Seen {
    let mut seen = Seen::default();
    let mut live = false;
    while let Some(msg) = sub.try_next().await.unwrap() {
        match msg {
            SubscriptionMessage::Event(e) => {
                let stop = e.event_type.as_str() == STOP;
                seen.events.push(e);
                on_event(seen.events.last().unwrap(), seen.events.len());
                if let Some(p) = &progress {
                    p.send_replace((reached(&sub, &seen), live));
                }
                if stop {
                    break;
                }
            }
            SubscriptionMessage::CaughtUp { .. } => {
                assert!(!live, "CaughtUp twice in a row");
                live = true;
                seen.caught_up += 1;
                seen.before_live.get_or_insert(seen.events.len());
                if let Some(p) = &progress {
                    p.send_replace((reached(&sub, &seen), live));
                }
            }
            SubscriptionMessage::FellBehind { .. } => {
                assert!(live, "FellBehind while not live");
                live = false;
                seen.fell_behind += 1;
                if let Some(p) = &progress {
                    p.send_replace((reached(&sub, &seen), live));
                }
            }
            SubscriptionMessage::Checkpoint { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    sub.unsubscribe().await.unwrap();
    seen
}

/// The log position before which `sub` has delivered everything.
fn reached(sub: &Subscription, seen: &Seen) -> u64 {
    match sub.resume_point() {
        Checkpoint::All { next } => next.0,
        _ => seen.events.last().map_or(0, |e| e.position.0 + 1),
    }
}

/// Asserts that `seen` is exactly `expected`, reporting the first
/// difference rather than two huge vectors.
fn assert_exact(seen: &[RecordedEvent], expected: &[RecordedEvent], what: &str) {
    for (i, (s, e)) in seen.iter().zip(expected).enumerate() {
        assert_eq!(
            s, e,
            "{what}: event {i} differs (saw position {}, expected {})",
            s.position, e.position
        );
    }
    assert_eq!(
        seen.len(),
        expected.len(),
        "{what}: saw {} events, expected {}",
        seen.len(),
        expected.len()
    );
}

/// How a subscriber of the randomized test starts, and what it must see.
#[derive(Clone, Debug)]
enum Kind {
    All(SubscribeFrom<LogPosition>),
    /// From `End`, called when the head was this.
    End(u64),
    Filtered(SubscribeFrom<LogPosition>),
    Stream(SubscribeFrom<StreamVersion>),
}

fn filter() -> Filter {
    Filter {
        type_prefixes: vec!["Dep".to_owned(), STOP.to_owned()],
        checkpoint_interval: 16,
        ..Filter::default()
    }
}

fn expected_for(kind: &Kind, log: &[RecordedEvent], seen: &[RecordedEvent]) -> Vec<RecordedEvent> {
    let after = |from: &SubscribeFrom<u64>| match from {
        SubscribeFrom::Start => 0,
        SubscribeFrom::After(p) => p + 1,
        SubscribeFrom::End => unreachable!(),
    };
    let from_u64 = |f: SubscribeFrom<LogPosition>| match f {
        SubscribeFrom::Start => SubscribeFrom::Start,
        SubscribeFrom::After(p) => SubscribeFrom::After(p.0),
        SubscribeFrom::End => SubscribeFrom::End,
    };
    match kind {
        Kind::All(from) => log[after(&from_u64(*from)) as usize..].to_vec(),
        Kind::End(head) => {
            let first = seen
                .first()
                .expect("saw at least the Stop event")
                .position
                .0;
            assert!(
                first >= *head,
                "from End: first event {first} before head {head}"
            );
            log[first as usize..].to_vec()
        }
        Kind::Filtered(from) => log[after(&from_u64(*from)) as usize..]
            .iter()
            .filter(|e| e.event_type.starts_with("Dep") || e.event_type.as_str() == STOP)
            .cloned()
            .collect(),
        Kind::Stream(from) => {
            let start = match from {
                SubscribeFrom::Start => 0,
                SubscribeFrom::After(v) => v.0 + 1,
                SubscribeFrom::End => unreachable!(),
            };
            log.iter()
                .filter(|e| e.stream.as_str() == STOP_STREAM && e.version.0 >= start)
                .cloned()
                .collect()
        }
    }
}

async fn start_subscriber(client: &Client, kind: &Kind, window: u32) -> Subscription {
    match kind {
        Kind::All(from) => client
            .subscribe_all(SubscribeAllOptions::default().from(*from).window(window))
            .await
            .unwrap(),
        Kind::End(_) => client
            .subscribe_all(
                SubscribeAllOptions::default()
                    .from(SubscribeFrom::End)
                    .window(window),
            )
            .await
            .unwrap(),
        Kind::Filtered(from) => client
            .subscribe_all(
                SubscribeAllOptions::default()
                    .from(*from)
                    .filter(filter())
                    .window(window),
            )
            .await
            .unwrap(),
        Kind::Stream(from) => client
            .subscribe_stream(
                STOP_STREAM,
                SubscribeStreamOptions::default().from(*from).window(window),
            )
            .await
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_interleavings_of_appends_and_subscribers() {
    interleavings(fast_server).await;
}

/// The same, with an outbox budget of 4 KiB and one reader thread: live
/// batches rarely get room, so subscribers are demoted to catching up and
/// go live again all the time, catch-up steps wait for room and reader
/// slots, the server keeps pausing and resuming its reading of requests,
/// and the handover runs at every turn; every subscriber must still see
/// exactly its events, in order.
///
/// The frame timeout is an hour so that a stall cannot heal itself: a
/// Credit left unread in the server's buffer once made the server close the
/// connection after 30 s, and the client's resubscription hid it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_interleavings_with_almost_no_outbox_room() {
    let run = interleavings(|| {
        TestServer::start_tuned(|s, n| {
            s.durability = Durability::Os;
            n.max_outbox_bytes = 4 << 10;
            n.read_threads = 1;
            n.frame_timeout = std::time::Duration::from_secs(3600);
        })
    });
    // A failure detector, not a synchronisation: a run takes well under a
    // second.
    tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("a subscriber or request stalled");
}

async fn interleavings<F: std::future::Future<Output = TestServer>>(start: fn() -> F) {
    for seed in [0x5eed_0001u64, 0x5eed_0002, 0x5eed_0003] {
        let server = start().await;
        let mut rng = Rng(seed);
        let appenders: Vec<_> = (0..4)
            .map(|t| {
                let addr = server.addr;
                tokio::spawn(async move {
                    append_batches(client(addr).await, t, 60, seed ^ t).await;
                })
            })
            .collect();
        // Subscribers start at random moments, at random places.
        let mut head = server.store.watch_head();
        let subscriber_client = client(server.addr).await;
        let mut subscribers = Vec::new();
        for k in 0..8u64 {
            let at = rng.below(400);
            let _ = head.wait_for(|h| *h >= at).await;
            let now = server.store.head().0;
            let kind = match k % 4 {
                0 if rng.below(2) == 0 => Kind::All(SubscribeFrom::Start),
                0 => Kind::End(now),
                1 => Kind::All(SubscribeFrom::After(LogPosition(rng.below(now.max(1))))),
                2 => Kind::Filtered(match rng.below(2) {
                    0 => SubscribeFrom::Start,
                    _ => SubscribeFrom::After(LogPosition(rng.below(now.max(1)))),
                }),
                _ => Kind::Stream(match rng.below(2) {
                    0 => SubscribeFrom::Start,
                    _ => SubscribeFrom::After(StreamVersion(rng.below(8))),
                }),
            };
            let window = [1u32, 3, 16, 1024][rng.below(4) as usize];
            // Half share one client (one connection), half have their own.
            let c = if k % 2 == 0 {
                subscriber_client.clone()
            } else {
                client(server.addr).await
            };
            let sub = start_subscriber(&c, &kind, window).await;
            subscribers.push((
                kind.clone(),
                window,
                tokio::spawn(consume(sub, None, |_, _| {})),
            ));
        }
        for a in appenders {
            a.await.unwrap();
        }
        append_stop(&subscriber_client).await;
        let log = log(&server);
        for (kind, window, task) in subscribers {
            let seen = task.await.unwrap();
            let what = format!("seed {seed:#x}, {kind:?}, window {window}");
            assert_exact(
                &seen.events,
                &expected_for(&kind, &log, &seen.events),
                &what,
            );
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_started_during_a_burst_switch_to_live() {
    let server = fast_server().await;
    let appenders: Vec<_> = (0..4)
        .map(|t| {
            let addr = server.addr;
            tokio::spawn(async move {
                append_batches(client(addr).await, t, 400, 77 + t).await;
            })
        })
        .collect();
    let _ = server.store.watch_head().wait_for(|h| *h >= 500).await;
    let c = client(server.addr).await;
    let mut subs = Vec::new();
    // (window, yields per message): the slow ones keep running out of
    // credit while live, so the server sends them back to the log.
    for (window, slowness) in [(2u32, 8), (4, 0), (64, 0), (1024, 0), (4, 2)] {
        let sub = c
            .subscribe_all(SubscribeAllOptions::default().window(window))
            .await
            .unwrap();
        let (progress, watcher) = watch::channel((0u64, false));
        let task = tokio::spawn(consume(sub, Some(progress), move |_, _| {
            for _ in 0..slowness {
                std::thread::yield_now();
            }
        }));
        subs.push((Kind::All(SubscribeFrom::Start), watcher, task));
    }
    let head = server.store.head().0;
    let end = c
        .subscribe_all(SubscribeAllOptions::default().from(SubscribeFrom::End))
        .await
        .unwrap();
    let (progress, watcher) = watch::channel((0u64, false));
    subs.push((
        Kind::End(head),
        watcher,
        tokio::spawn(consume(end, Some(progress), |_, _| {})),
    ));
    for a in appenders {
        a.await.unwrap();
    }
    // Every subscriber delivers the whole burst and goes live; then the
    // last event reaches them live.
    let head = server.store.head().0;
    for (_, watcher, _) in &mut subs {
        let _ = watcher.wait_for(|&(next, live)| next >= head && live).await;
    }
    append_stop(&c).await;
    let log = log(&server);
    for (i, (kind, _, task)) in subs.into_iter().enumerate() {
        let seen = task.await.unwrap();
        let what = format!("subscriber {i} ({kind:?})");
        assert_exact(
            &seen.events,
            &expected_for(&kind, &log, &seen.events),
            &what,
        );
        assert_eq!(
            seen.caught_up,
            seen.fell_behind + 1,
            "{what}: ends live, CaughtUp and FellBehind alternating"
        );
    }
    server.stop().await;
}

/// Subscriber tasks and how each started.
type Subscribers = Vec<(Kind, tokio::task::JoinHandle<Seen>)>;

/// Runs an all-from-Start subscriber, a filtered one and a stream one on
/// `c`, reporting the first one's progress.
fn three_subscribers(c: &Client, window: u32) -> (watch::Receiver<(u64, bool)>, Subscribers) {
    let (progress, watcher) = watch::channel((0u64, false));
    let mut progress = Some(progress);
    let kinds = [
        Kind::All(SubscribeFrom::Start),
        Kind::Filtered(SubscribeFrom::Start),
        Kind::Stream(SubscribeFrom::Start),
    ];
    let tasks = kinds
        .into_iter()
        .map(|kind| {
            let (c, k, p) = (c.clone(), kind.clone(), progress.take());
            (
                kind,
                tokio::spawn(async move {
                    let sub = start_subscriber(&c, &k, window).await;
                    consume(sub, p, |_, _| {}).await
                }),
            )
        })
        .collect();
    (watcher, tasks)
}

async fn check(server: &TestServer, subs: Subscribers) {
    let log = log(server);
    for (kind, task) in subs {
        let seen = task.await.unwrap();
        assert_exact(
            &seen.events,
            &expected_for(&kind, &log, &seen.events),
            &format!("{kind:?}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_mid_subscription_is_invisible_to_the_consumer() {
    let mut server = fast_server().await;
    let writer = client(server.addr).await;
    append_batches(writer.clone(), 0, 150, 1).await;
    let c = client(server.addr).await;
    let (mut progress, subs) = three_subscribers(&c, 16);

    // Restart while the first subscriber is catching up...
    let _ = progress.wait_for(|(n, _)| *n >= 100).await;
    server.restart().await;
    let total = server.store.head().0;
    // ... and again once it is live.
    let _ = progress.wait_for(|&(n, live)| n >= total && live).await;
    append_batches(writer.clone(), 1, 50, 2).await;
    server.restart().await;
    append_batches(writer.clone(), 2, 50, 3).await;
    append_stop(&writer).await;
    check(&server, subs).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_cuts_mid_subscription_lose_and_repeat_nothing() {
    let server = fast_server().await;
    let proxy = Proxy::start(server.addr).await;
    let writer = client(server.addr).await;
    append_batches(writer.clone(), 0, 100, 5).await;
    let c = client(proxy.addr).await;
    let (mut progress, subs) = three_subscribers(&c, 8);
    // Appends go on (directly) while the subscribers' connection is cut
    // again and again, wherever they are.
    let appender = tokio::spawn({
        let writer = writer.clone();
        async move { append_batches(writer, 1, 200, 6).await }
    });
    for k in 1..=8 {
        let _ = progress.wait_for(|(n, _)| *n >= k * 90).await;
        proxy.cut();
    }
    appender.await.unwrap();
    append_stop(&writer).await;
    check(&server, subs).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_side_resets_mid_subscription_lose_and_repeat_nothing() {
    let server = fast_server().await;
    let writer = client(server.addr).await;
    append_batches(writer.clone(), 0, 100, 8).await;
    let c = client(server.addr).await;
    let appender = tokio::spawn({
        let writer = writer.clone();
        async move { append_batches(writer, 1, 150, 9).await }
    });
    let sub = c
        .subscribe_all(SubscribeAllOptions::default().window(32))
        .await
        .unwrap();
    // The consumer itself drops the connection every 61 events.
    let resetter = c.clone();
    let consumer = tokio::spawn(consume(sub, None, move |_, n| {
        if n % 61 == 0 {
            resetter.reset_connection();
        }
    }));
    appender.await.unwrap();
    append_stop(&writer).await;
    check(&server, vec![(Kind::All(SubscribeFrom::Start), consumer)]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_consumer_restarted_from_its_checkpoint_gets_exactly_the_rest() {
    let server = fast_server().await;
    let dir = tempfile::tempdir().unwrap();
    let writer = client(server.addr).await;
    append_batches(writer.clone(), 0, 80, 10).await;
    let head = server.store.head().0 as usize;
    assert!(head > 150);

    // First run: process 120 events, saving the resume point after each.
    let store = FileCheckpointStore::new(dir.path().join("all.cp"));
    {
        let c = client(server.addr).await;
        let options = SubscribeAllOptions::default().from_checkpoint(store.load().await.unwrap());
        let mut sub = c.subscribe_all(options).await.unwrap();
        let mut processed = 0;
        while processed < 120 {
            if let SubscriptionMessage::Event(_) = sub.try_next().await.unwrap().unwrap() {
                processed += 1;
            }
            store.save(&sub.resume_point()).await.unwrap();
        }
        // The process stops (no unsubscribe: dropped).
    }
    append_batches(writer.clone(), 1, 20, 11).await;
    append_stop(&writer).await;

    // Second run, from the stored checkpoint.
    let stored = FileCheckpointStore::new(dir.path().join("all.cp"))
        .load()
        .await
        .unwrap();
    assert_eq!(
        stored,
        Some(Checkpoint::All {
            next: LogPosition(120)
        })
    );
    let c = client(server.addr).await;
    let sub = c
        .subscribe_all(SubscribeAllOptions::default().from_checkpoint(stored))
        .await
        .unwrap();
    let seen = consume(sub, None, |_, _| {}).await;
    assert_exact(&seen.events, &log(&server)[120..], "after restart");
    server.stop().await;
}

#[tokio::test]
async fn a_filtered_consumer_resumes_after_its_last_checkpoint_marker() {
    let server = fast_server().await;
    let dir = tempfile::tempdir().unwrap();
    let writer = client(server.addr).await;
    // Rare matches, long stretches without.
    for i in 0..300u64 {
        let ty = if i % 97 == 5 { "Rare" } else { "Common" };
        writer
            .append("noise", ExpectedVersion::Any, vec![ev(ty)])
            .await
            .unwrap();
    }
    let rare = Filter {
        type_prefixes: vec!["Rare".to_owned(), STOP.to_owned()],
        checkpoint_interval: 10,
        ..Filter::default()
    };
    let store = FileCheckpointStore::new(dir.path().join("rare.cp"));
    let saved = {
        let c = client(server.addr).await;
        let mut sub = c
            .subscribe_all(SubscribeAllOptions::default().filter(rare.clone()))
            .await
            .unwrap();
        let mut rare_seen = 0;
        // Stop at the first marker past the third match (position 199).
        loop {
            let msg = sub.try_next().await.unwrap().unwrap();
            if let SubscriptionMessage::Event(e) = &msg {
                assert_eq!(e.event_type.as_str(), "Rare");
                rare_seen += 1;
            }
            let cp = sub.checkpoint_after(&msg).expect("global log");
            store.save(&cp).await.unwrap();
            if rare_seen == 3 && matches!(msg, SubscriptionMessage::Checkpoint { .. }) {
                break cp;
            }
        }
    };
    let Checkpoint::All { next } = saved else {
        panic!("{saved:?}")
    };
    assert!(
        next.0 > 199,
        "the marker moved past the last match: {next:?}"
    );
    for _ in 0..20 {
        writer
            .append("noise", ExpectedVersion::Any, vec![ev("Rare")])
            .await
            .unwrap();
    }
    append_stop(&writer).await;

    let c = client(server.addr).await;
    let options = SubscribeAllOptions::default()
        .filter(rare)
        .from_checkpoint(store.load().await.unwrap());
    let sub = c.subscribe_all(options).await.unwrap();
    let seen = consume(sub, None, |_, _| {}).await;
    let expected: Vec<_> = log(&server)
        .into_iter()
        .filter(|e| e.position >= next)
        .filter(|e| matches!(e.event_type.as_str(), "Rare" | STOP))
        .collect();
    assert_exact(&seen.events, &expected, "filtered, after restart");
    server.stop().await;
}

#[tokio::test]
async fn a_stream_consumer_resumes_from_its_checkpoint() {
    let server = fast_server().await;
    let dir = tempfile::tempdir().unwrap();
    let writer = client(server.addr).await;
    for i in 0..30 {
        let stream = if i % 3 == 0 { STOP_STREAM } else { "other" };
        writer
            .append(stream, ExpectedVersion::Any, vec![ev("Deposited")])
            .await
            .unwrap();
    }
    let store = FileCheckpointStore::new(dir.path().join("stream.cp"));
    {
        let c = client(server.addr).await;
        let mut sub = c
            .subscribe_stream(STOP_STREAM, SubscribeStreamOptions::default())
            .await
            .unwrap();
        let mut events = 0;
        while events < 4 {
            let msg = sub.try_next().await.unwrap().unwrap();
            if let Some(cp) = sub.checkpoint_after(&msg) {
                store.save(&cp).await.unwrap();
                events += 1;
            }
        }
        sub.unsubscribe().await.unwrap();
    }
    let stored = store.load().await.unwrap();
    assert_eq!(
        stored,
        Some(Checkpoint::Stream {
            next: StreamVersion(4)
        })
    );
    append_stop(&writer).await;
    let c = client(server.addr).await;
    let sub = c
        .subscribe_stream(
            STOP_STREAM,
            SubscribeStreamOptions::default().from_checkpoint(stored),
        )
        .await
        .unwrap();
    let seen = consume(sub, None, |_, _| {}).await;
    let expected = expected_for(
        &Kind::Stream(SubscribeFrom::After(StreamVersion(3))),
        &log(&server),
        &[],
    );
    assert_eq!(expected.first().unwrap().version, StreamVersion(4));
    assert_exact(&seen.events, &expected, "stream, after restart");
    server.stop().await;
}

#[tokio::test]
async fn a_stream_subscription_waits_for_its_stream_to_be_created() {
    let server = fast_server().await;
    let c = client(server.addr).await;
    c.append("other", ExpectedVersion::Any, vec![ev("Opened")])
        .await
        .unwrap();
    let mut from_start = c
        .subscribe_stream("later", SubscribeStreamOptions::default())
        .await
        .unwrap();
    let mut from_end = c
        .subscribe_stream(
            "later",
            SubscribeStreamOptions::default().from(SubscribeFrom::End),
        )
        .await
        .unwrap();
    // Nothing to catch up on: both go live at once.
    for sub in [&mut from_start, &mut from_end] {
        assert!(matches!(
            sub.try_next().await.unwrap(),
            Some(SubscriptionMessage::CaughtUp { .. })
        ));
    }
    c.append("other", ExpectedVersion::Any, vec![ev("Opened")])
        .await
        .unwrap();
    c.append(
        "later",
        ExpectedVersion::NoStream,
        vec![ev("Opened"), ev("Deposited")],
    )
    .await
    .unwrap();
    c.append("later", ExpectedVersion::Any, vec![ev("Deposited")])
        .await
        .unwrap();
    for sub in [&mut from_start, &mut from_end] {
        for version in 0..3 {
            let Some(SubscriptionMessage::Event(e)) = sub.try_next().await.unwrap() else {
                panic!("expected an event")
            };
            assert_eq!(
                (e.stream.as_str(), e.version),
                ("later", StreamVersion(version))
            );
        }
    }
    from_start.unsubscribe().await.unwrap();
    drop(from_end);
    server.stop().await;
}

#[tokio::test]
async fn end_of_an_existing_stream_starts_after_its_last_version() {
    let server = fast_server().await;
    let c = client(server.addr).await;
    c.append("s", ExpectedVersion::Any, vec![ev("Opened"), ev("Opened")])
        .await
        .unwrap();
    let mut sub = c
        .subscribe_stream(
            "s",
            SubscribeStreamOptions::default().from(SubscribeFrom::End),
        )
        .await
        .unwrap();
    c.append("s", ExpectedVersion::Any, vec![ev("Deposited")])
        .await
        .unwrap();
    loop {
        match sub.try_next().await.unwrap().unwrap() {
            SubscriptionMessage::Event(e) => {
                assert_eq!(e.version, StreamVersion(2));
                break;
            }
            SubscriptionMessage::CaughtUp { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        sub.resume_point(),
        Checkpoint::Stream {
            next: StreamVersion(3)
        }
    );
    server.stop().await;
}
