//! Deletes, truncations and retention seen through the protocol's read
//! paths before any scavenge: read-all pages and catch-up and live
//! subscriptions return exactly the live events, deliver the lifecycle
//! events in order, and their frames tile the log with no hole.

use std::collections::BTreeSet;

use logbook_protocol::lifecycle::Deletion;
use logbook_protocol::{
    Direction, EventId, ExpectedVersion, LogPosition, NewEvent, Push, ReadAll, RecordedEvent,
    Request, Response, ServerMessage, StreamName, Subscribe, SubscribeFrom, SubscriptionTarget,
};
use logbook_tests::{RawConn, TestServer, payload};

/// What a subscriber saw, and how far its frames covered the log.
#[derive(Debug, Default)]
struct Tiled {
    events: Vec<RecordedEvent>,
    /// End (exclusive) of the log the frames so far cover.
    end: u64,
    checkpoints: usize,
    caught_up: bool,
}

impl Tiled {
    /// Takes one push, checking it starts where the last frame ended.
    fn take(&mut self, p: Push) {
        match p {
            Push::Events { events, from } => {
                let (Some(first), Some(last)) = (events.first(), events.last()) else {
                    panic!("an empty events push");
                };
                // The push covers the log from `from`: no hole between the
                // frames, whatever was removed.
                let from = from.expect("an unfiltered push says where it covers from");
                assert!(
                    from <= self.end,
                    "a hole before a push: {from} > {}",
                    self.end
                );
                assert!(
                    first.position.0 >= from && first.position.0 >= self.end,
                    "events go back"
                );
                for w in events.windows(2) {
                    assert!(w[0].position < w[1].position);
                }
                self.end = last.position.0 + 1;
                self.events.extend(events);
            }
            Push::Checkpoint { position } => {
                assert!(position.0 >= self.end, "a checkpoint goes back");
                self.end = position.0;
                self.checkpoints += 1;
            }
            Push::CaughtUp { position, .. } => {
                assert!(position.0 >= self.end);
                self.end = position.0;
                self.caught_up = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn subscribe_all(c: &mut RawConn) -> u32 {
    let (id, m) = c
        .call(&Request::Subscribe(Subscribe {
            target: SubscriptionTarget::All {
                from: SubscribeFrom::Start,
                filter: None,
            },
            initial_credit: 1_000_000,
        }))
        .await;
    assert!(
        matches!(m, ServerMessage::Response(Response::SubscribeOk(_))),
        "{m:?}"
    );
    id
}

async fn next_push(c: &mut RawConn, sub: u32) -> Push {
    let f = c.recv_frame().await.expect("a push");
    assert_eq!(f.header.corr_id, sub);
    match ServerMessage::decode(&f).unwrap() {
        ServerMessage::Push(p) => p,
        other => panic!("{other:?}"),
    }
}

/// Pushes until caught up at `head` or beyond.
async fn until_caught_up(c: &mut RawConn, sub: u32, seen: &mut Tiled, head: u64) {
    while !(seen.caught_up && seen.end >= head) {
        let p = next_push(c, sub).await;
        seen.take(p);
    }
}

fn ev(n: u64) -> NewEvent {
    NewEvent::new(EventId::from_u128(u128::from(n) + 1), "T", payload(24))
}

/// Every event a paged ReadAll from 0 returns, checking the pages tile
/// the log: each `next` is where the page's scan ended.
async fn read_all(c: &mut RawConn, page: u32) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = LogPosition(0);
    loop {
        let (_, m) = c
            .call(&Request::ReadAll(ReadAll {
                from: Some(from),
                direction: Direction::Forward,
                max_count: page,
                min_position: None,
            }))
            .await;
        let ServerMessage::Response(Response::ReadAllOk(p)) = m else {
            panic!("{m:?}");
        };
        for e in &p.events {
            assert!(e.position >= from);
        }
        out.extend(p.events);
        match p.next {
            Some(n) => {
                assert!(n > from, "a page that does not progress");
                from = n;
            }
            None => return out,
        }
    }
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position.0).collect()
}

#[tokio::test]
async fn half_the_streams_deleted_every_read_path_returns_the_survivors() {
    let server = TestServer::start().await;
    let store = &server.store;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // 1,000 streams of 1 to 8 events, in batches interleaved at random;
    // the model: the positions of each stream's events.
    let mut id = 0u64;
    let mut at: Vec<Vec<u64>> = vec![Vec::new(); 1000];
    let mut left: Vec<(usize, u64)> = (0..1000).map(|s| (s, 1 + next(8))).collect();
    while !left.is_empty() {
        let i = next(left.len() as u64) as usize;
        let (s, n) = left[i];
        let k = (1 + next(3)).min(n);
        let r = store
            .append(
                &StreamName::new(format!("acct-{s}")).unwrap(),
                ExpectedVersion::Any,
                (id..id + k).map(ev).collect(),
            )
            .await
            .unwrap();
        at[s].extend(r.first_position.0..=r.last_position.0);
        id += k;
        if n == k {
            left.swap_remove(i);
        } else {
            left[i].1 -= k;
        }
    }
    let mut deleted = BTreeSet::new();
    let mut survivors: Vec<u64> = Vec::new();
    for (s, events) in at.iter().enumerate() {
        if next(2) == 0 {
            let mode = if next(3) == 0 {
                Deletion::Hard
            } else {
                Deletion::Soft
            };
            let w = store
                .delete_stream(
                    &StreamName::new(format!("acct-{s}")).unwrap(),
                    ExpectedVersion::Any,
                    mode,
                )
                .await
                .unwrap();
            survivors.push(w.position.0);
            deleted.insert(format!("acct-{s}"));
        } else {
            survivors.extend(events);
        }
    }
    survivors.sort_unstable();
    let head = store.head().0;
    assert!(deleted.len() > 400 && deleted.len() < 600);

    // Read-all through the protocol, by pages of several sizes.
    let mut c = server.raw().await;
    for page in [1, 13, 1000] {
        let got = read_all(&mut c, page).await;
        assert_eq!(positions(&got), survivors, "pages of {page}");
        assert!(got.iter().all(|e| !deleted.contains(e.stream.as_str())));
    }
    // A subscription from the start: the same events, frames tiling the log.
    let mut s = server.raw().await;
    let sub = subscribe_all(&mut s).await;
    let mut seen = Tiled::default();
    until_caught_up(&mut s, sub, &mut seen, head).await;
    assert_eq!(positions(&seen.events), survivors);
    assert_eq!(seen.end, head);
    server.stop().await;
}

#[tokio::test]
async fn a_live_subscriber_sees_the_events_then_the_delete_and_a_late_one_only_the_delete() {
    let server = TestServer::start().await;
    let store = &server.store;
    let x = StreamName::new("x").unwrap();
    let y = StreamName::new("y").unwrap();
    let mut s = server.raw().await;
    let sub = subscribe_all(&mut s).await;
    let mut live = Tiled::default();
    until_caught_up(&mut s, sub, &mut live, 0).await;
    store
        .append(&x, ExpectedVersion::Any, vec![ev(0), ev(1)])
        .await
        .unwrap();
    store
        .delete_stream(&x, ExpectedVersion::Any, Deletion::Soft)
        .await
        .unwrap();
    store
        .append(&y, ExpectedVersion::Any, vec![ev(2)])
        .await
        .unwrap();
    while live.events.len() < 4 {
        let p = next_push(&mut s, sub).await;
        live.take(p);
    }
    let got: Vec<(&str, &str)> = live
        .events
        .iter()
        .map(|e| (e.stream.as_str(), e.event_type.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![("x", "T"), ("x", "T"), ("$$x", "$deleted"), ("y", "T")]
    );
    // A subscriber from the start after the delete: the delete, not x's
    // events; its frames still cover the log from 0.
    let mut late = server.raw().await;
    let sub = subscribe_all(&mut late).await;
    let mut seen = Tiled::default();
    until_caught_up(&mut late, sub, &mut seen, 4).await;
    assert_eq!(positions(&seen.events), vec![2, 3]);
    assert_eq!(seen.end, 4);
    server.stop().await;
}

#[tokio::test]
async fn a_long_removed_range_is_passed_with_checkpoints_not_a_stall() {
    let server = TestServer::start().await;
    let store = &server.store;
    let big = StreamName::new("big").unwrap();
    // More removed events than one read scans past (64 Ki).
    let n = 70_000u64;
    for b in 0..n / 500 {
        store
            .append(
                &big,
                ExpectedVersion::Any,
                (b * 500..(b + 1) * 500).map(ev).collect(),
            )
            .await
            .unwrap();
    }
    store
        .truncate(&big, logbook_protocol::StreamVersion(n))
        .await
        .unwrap();
    store
        .append(
            &StreamName::new("after").unwrap(),
            ExpectedVersion::Any,
            vec![ev(n)],
        )
        .await
        .unwrap();
    let head = store.head().0;
    let mut c = server.raw().await;
    // A read from 0 returns nothing at first, and says how far it got.
    let (_, m) = c
        .call(&Request::ReadAll(ReadAll {
            from: Some(LogPosition(0)),
            direction: Direction::Forward,
            max_count: 10,
            min_position: None,
        }))
        .await;
    let ServerMessage::Response(Response::ReadAllOk(p)) = m else {
        panic!("{m:?}");
    };
    assert!(p.events.is_empty());
    assert!(p.next.is_some_and(|next| next.0 > 0 && next.0 < n));
    assert_eq!(positions(&read_all(&mut c, 10).await), vec![n, n + 1]);
    let mut s = server.raw().await;
    let sub = subscribe_all(&mut s).await;
    let mut seen = Tiled::default();
    until_caught_up(&mut s, sub, &mut seen, head).await;
    assert!(seen.checkpoints >= 1, "the removed range is reported");
    assert_eq!(positions(&seen.events), vec![n, n + 1]);
    server.stop().await;
}
