//! Subscriptions against the scripted fake server: what goes on the wire
//! (Subscribe, Credit, Unsubscribe), how credit follows the consumer, and
//! where a subscription resumes after the connection breaks.
//!
//! "Nothing was sent" is checked with a ping as a barrier: frames leave the
//! client in the order they were queued, so whatever the subscription sent
//! before the ping reaches the server before it.

mod common;

use std::time::Duration;

use common::{FakeConn, FakeServer, options, recorded, setup};
use futures::TryStreamExt;
use logbook_client::{
    Checkpoint, Client, ClientOptions, Error, Filter, LogPosition, RetryPolicy, StreamVersion,
    SubscribeAllOptions, SubscribeFrom, SubscribeStreamOptions, Subscription, SubscriptionMessage,
};
use logbook_protocol::{
    Credit, ErrorCode, ErrorReply, Opcode, Pong, Push, ReadAllOk, ReadStreamOk, RecordedEvent,
    Request, Response, Subscribe, SubscribeOk, SubscriptionTarget, Text, Unsubscribe,
};

/// Test options that resubscribe at once.
fn sub_options() -> ClientOptions {
    options().resubscribe(
        RetryPolicy::forever().backoff(Duration::from_millis(1), Duration::from_millis(5)),
    )
}

/// Answers the next request, which must be a Subscribe, with SubscribeOk.
async fn accept_subscribe(conn: &mut FakeConn) -> (u32, Subscribe) {
    let (id, req) = conn.expect().await;
    let Request::Subscribe(s) = req else {
        panic!("expected Subscribe, got {req:?}")
    };
    conn.reply(
        id,
        Response::SubscribeOk(SubscribeOk {
            head: LogPosition(0),
        }),
    )
    .await;
    (id, s)
}

async fn subscribe_all(
    client: &Client,
    conn: &mut FakeConn,
    options: SubscribeAllOptions,
) -> (Subscription, u32, Subscribe) {
    let (sub, (id, req)) = tokio::join!(client.subscribe_all(options), accept_subscribe(conn));
    (sub.unwrap(), id, req)
}

fn all_from(s: &Subscribe) -> SubscribeFrom<LogPosition> {
    match &s.target {
        SubscriptionTarget::All { from, .. } => *from,
        other => panic!("{other:?}"),
    }
}

fn stream_from(s: &Subscribe) -> (String, SubscribeFrom<StreamVersion>) {
    match &s.target {
        SubscriptionTarget::Stream { stream, from } => (stream.to_string(), *from),
        other => panic!("{other:?}"),
    }
}

/// Events at these log positions (each in a stream of its own).
fn at(positions: impl IntoIterator<Item = u64>) -> Push {
    Push::Events {
        events: positions
            .into_iter()
            .map(|p| recorded(&format!("s-{p}"), 0, p))
            .collect(),
        from: None,
    }
}

async fn next(sub: &mut Subscription) -> SubscriptionMessage {
    sub.try_next()
        .await
        .unwrap()
        .expect("the subscription ended")
}

async fn next_event(sub: &mut Subscription) -> RecordedEvent {
    match next(sub).await {
        SubscriptionMessage::Event(e) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

async fn positions(sub: &mut Subscription, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_event(sub).await.position.0);
    }
    out
}

/// Pings through `conn` and returns the requests the client sent before
/// the ping.
async fn barrier(client: &Client, conn: &mut FakeConn) -> Vec<Request> {
    let ping = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let mut before = Vec::new();
    loop {
        let (id, req) = conn.expect().await;
        if let Request::Ping(p) = req {
            conn.reply(id, Response::Pong(Pong { nonce: p.nonce }))
                .await;
            break;
        }
        before.push(req);
    }
    ping.await.unwrap().unwrap();
    before
}

fn credit(subscription: u32, events: u32) -> Request {
    Request::Credit(Credit {
        subscription,
        events,
    })
}

#[tokio::test]
async fn credit_is_granted_as_the_consumer_takes_events() {
    let (_server, client, mut conn) = setup(sub_options()).await;
    let (mut sub, id, req) =
        subscribe_all(&client, &mut conn, SubscribeAllOptions::default().window(8)).await;
    assert_eq!(req.initial_credit, 8);
    assert_eq!(all_from(&req), SubscribeFrom::Start);

    conn.push(id, at(0..8)).await;
    // Received but not taken: no credit.
    assert_eq!(barrier(&client, &mut conn).await, vec![]);
    assert_eq!(positions(&mut sub, 3).await, vec![0, 1, 2]);
    assert_eq!(barrier(&client, &mut conn).await, vec![]);
    // Half the window taken: granted back in one Credit.
    assert_eq!(positions(&mut sub, 1).await, vec![3]);
    assert_eq!(barrier(&client, &mut conn).await, vec![credit(id, 4)]);
    assert_eq!(positions(&mut sub, 4).await, vec![4, 5, 6, 7]);
    assert_eq!(barrier(&client, &mut conn).await, vec![credit(id, 4)]);
}

#[tokio::test]
async fn credit_never_runs_ahead_of_the_consumer() {
    let (_server, client, mut conn) = setup(sub_options()).await;
    let window = 5;
    let (mut sub, id, req) = subscribe_all(
        &client,
        &mut conn,
        SubscribeAllOptions::default().window(window),
    )
    .await;
    // The server side obeys the window; the consumer takes one event at a
    // time and checks, through a barrier, that the credit granted so far
    // never exceeds what it took.
    let (mut window_left, mut sent, mut granted, mut taken) =
        (u64::from(req.initial_credit), 0u64, 0u64, 0u64);
    while taken < 40 {
        if window_left > 0 && sent < 40 {
            let n = window_left.min(3).min(40 - sent);
            conn.push(id, at(sent..sent + n)).await;
            sent += n;
            window_left -= n;
        }
        assert_eq!(next_event(&mut sub).await.position.0, taken);
        taken += 1;
        for req in barrier(&client, &mut conn).await {
            let Request::Credit(c) = req else {
                panic!("{req:?}")
            };
            assert_eq!(c.subscription, id);
            granted += u64::from(c.events);
            window_left += u64::from(c.events);
        }
        assert!(granted <= taken, "granted {granted} after taking {taken}");
        assert!(
            taken - granted <= u64::from(window) / 2,
            "owes {} after taking {taken}",
            taken - granted
        );
    }
}

#[tokio::test]
async fn resubscribes_after_the_last_event_when_the_connection_drops() {
    let (mut server, client, mut conn) = setup(sub_options()).await;
    let (mut sub, id, _) = subscribe_all(
        &client,
        &mut conn,
        SubscribeAllOptions::default().window(10),
    )
    .await;
    conn.push(id, at(0..5)).await;
    assert_eq!(positions(&mut sub, 3).await, vec![0, 1, 2]);
    drop(conn); // mid-stream: 3 and 4 are still queued

    assert_eq!(positions(&mut sub, 2).await, vec![3, 4]);
    let next_events = tokio::spawn(async move { (positions(&mut sub, 3).await, sub) });
    let mut conn = server.accept().await;
    let (id, req) = accept_subscribe(&mut conn).await;
    assert_eq!(all_from(&req), SubscribeFrom::After(LogPosition(4)));
    assert_eq!(req.initial_credit, 10, "a fresh window");
    conn.push(id, at(5..8)).await;
    let (seen, sub) = next_events.await.unwrap();
    assert_eq!(seen, vec![5, 6, 7]);
    assert_eq!(
        sub.resume_point(),
        Checkpoint::All {
            next: LogPosition(8)
        }
    );
}

#[tokio::test]
async fn caught_up_and_checkpoint_positions_are_exclusive() {
    let (mut server, client, mut conn) = setup(sub_options()).await;
    let filter = Filter {
        stream_prefixes: vec!["s-".to_owned()],
        ..Filter::default()
    };
    let (mut sub, id, _) = subscribe_all(
        &client,
        &mut conn,
        SubscribeAllOptions::default().filter(filter),
    )
    .await;
    conn.push(id, at([2, 7])).await;
    conn.push(
        id,
        Push::Checkpoint {
            position: LogPosition(20),
        },
    )
    .await;
    assert_eq!(positions(&mut sub, 2).await, vec![2, 7]);
    let marker = next(&mut sub).await;
    assert_eq!(
        marker,
        SubscriptionMessage::Checkpoint {
            position: LogPosition(20)
        }
    );
    // Everything before 20 was scanned: resume after 19.
    let expected = Checkpoint::All {
        next: LogPosition(20),
    };
    assert_eq!(sub.resume_point(), expected);
    assert_eq!(sub.checkpoint_after(&marker), Some(expected));
    drop(conn);

    let resumed = tokio::spawn(async move { (next(&mut sub).await, sub) });
    let mut conn = server.accept().await;
    let (id, req) = accept_subscribe(&mut conn).await;
    assert_eq!(all_from(&req), SubscribeFrom::After(LogPosition(19)));
    assert!(
        matches!(&req.target, SubscriptionTarget::All { filter: Some(f), .. } if f.stream_prefixes == ["s-"]),
        "the filter is kept: {req:?}"
    );
    conn.push(id, at([21])).await;
    let (msg, _sub) = resumed.await.unwrap();
    assert!(matches!(msg, SubscriptionMessage::Event(e) if e.position == LogPosition(21)));
}

#[tokio::test]
async fn a_live_subscription_reports_falling_behind_while_it_reconnects() {
    let (mut server, client, mut conn) = setup(sub_options()).await;
    let (mut sub, id, _) = subscribe_all(&client, &mut conn, SubscribeAllOptions::default()).await;
    conn.push(id, at(0..3)).await;
    conn.push(
        id,
        Push::CaughtUp {
            position: LogPosition(3),
            next_version: None,
        },
    )
    .await;
    // A repeated CaughtUp (without FellBehind) is not passed on.
    conn.push(
        id,
        Push::CaughtUp {
            position: LogPosition(3),
            next_version: None,
        },
    )
    .await;
    conn.push(id, at([3])).await;
    assert_eq!(positions(&mut sub, 3).await, vec![0, 1, 2]);
    assert_eq!(
        next(&mut sub).await,
        SubscriptionMessage::CaughtUp {
            position: LogPosition(3),
            next_version: None,
        }
    );
    assert_eq!(positions(&mut sub, 1).await, vec![3]);
    drop(conn);

    // Live no more: said at once, before the new connection exists.
    assert_eq!(
        next(&mut sub).await,
        SubscriptionMessage::FellBehind {
            position: LogPosition(4),
            next_version: None,
        }
    );
    let resumed = tokio::spawn(async move {
        let msgs = vec![next(&mut sub).await, next(&mut sub).await];
        (msgs, sub)
    });
    let mut conn = server.accept().await;
    let (id, req) = accept_subscribe(&mut conn).await;
    assert_eq!(all_from(&req), SubscribeFrom::After(LogPosition(3)));
    conn.push(
        id,
        Push::CaughtUp {
            position: LogPosition(4),
            next_version: None,
        },
    )
    .await;
    conn.push(id, at([4])).await;
    let (msgs, _sub) = resumed.await.unwrap();
    assert_eq!(
        msgs[0],
        SubscriptionMessage::CaughtUp {
            position: LogPosition(4),
            next_version: None,
        }
    );
    assert!(matches!(&msgs[1], SubscriptionMessage::Event(e) if e.position == LogPosition(4)));
}

#[tokio::test]
async fn without_events_a_resubscription_starts_where_the_first_did() {
    for (from, first) in [
        (SubscribeFrom::Start, 0),
        (SubscribeFrom::After(LogPosition(11)), 12),
        (SubscribeFrom::After(LogPosition(0)), 1),
    ] {
        let (mut server, client, mut conn) = setup(sub_options()).await;
        let (mut sub, _, req) = subscribe_all(
            &client,
            &mut conn,
            SubscribeAllOptions::default().from(from),
        )
        .await;
        assert_eq!(all_from(&req), from);
        drop(conn);
        let resumed = tokio::spawn(async move { next(&mut sub).await });
        let mut conn = server.accept().await;
        let (id, req) = accept_subscribe(&mut conn).await;
        assert_eq!(all_from(&req), from);
        conn.push(id, at([first])).await;
        assert!(
            matches!(resumed.await.unwrap(), SubscriptionMessage::Event(e) if e.position.0 == first)
        );
    }
}

#[tokio::test]
async fn a_stream_subscription_resumes_after_its_last_version() {
    let (mut server, client, mut conn) = setup(sub_options()).await;
    let options = SubscribeStreamOptions::default().from(SubscribeFrom::After(StreamVersion(1)));
    let (sub, (id, req)) = tokio::join!(
        client.subscribe_stream("acct", options),
        accept_subscribe(&mut conn)
    );
    let mut sub = sub.unwrap();
    assert_eq!(
        stream_from(&req),
        ("acct".to_owned(), SubscribeFrom::After(StreamVersion(1)))
    );
    conn.push(
        id,
        Push::Events {
            events: vec![recorded("acct", 2, 40), recorded("acct", 3, 41)],
            from: None,
        },
    )
    .await;
    conn.push(
        id,
        Push::CaughtUp {
            position: LogPosition(50),
            next_version: Some(StreamVersion(4)),
        },
    )
    .await;
    assert_eq!(next_event(&mut sub).await.version, StreamVersion(2));
    let third = next(&mut sub).await;
    assert_eq!(
        sub.checkpoint_after(&third),
        Some(Checkpoint::Stream {
            next: StreamVersion(4)
        })
    );
    let caught_up = next(&mut sub).await;
    assert_eq!(
        caught_up,
        SubscriptionMessage::CaughtUp {
            position: LogPosition(50),
            next_version: Some(StreamVersion(4)),
        }
    );
    // The marker's stream version says where the stream resumes.
    assert_eq!(
        sub.checkpoint_after(&caught_up),
        Some(Checkpoint::Stream {
            next: StreamVersion(4)
        })
    );
    assert_eq!(
        sub.resume_point(),
        Checkpoint::Stream {
            next: StreamVersion(4)
        }
    );
    drop(conn);

    assert_eq!(
        next(&mut sub).await,
        SubscriptionMessage::FellBehind {
            position: LogPosition(50),
            next_version: Some(StreamVersion(4)),
        }
    );
    let resumed = tokio::spawn(async move { next_event(&mut sub).await });
    let mut conn = server.accept().await;
    let (id, req) = accept_subscribe(&mut conn).await;
    assert_eq!(
        stream_from(&req),
        ("acct".to_owned(), SubscribeFrom::After(StreamVersion(3)))
    );
    conn.push(
        id,
        Push::Events {
            events: vec![recorded("acct", 4, 60)],
            from: None,
        },
    )
    .await;
    assert_eq!(resumed.await.unwrap().version, StreamVersion(4));
}

#[tokio::test]
async fn end_is_resolved_before_subscribing() {
    let (_server, client, mut conn) = setup(sub_options()).await;
    // The global log: one read of the head.
    let server_side = async {
        let (id, req) = conn.expect().await;
        let Request::ReadAll(r) = req else {
            panic!("{req:?}")
        };
        assert_eq!(r.from, Some(LogPosition(u64::MAX)));
        conn.reply(
            id,
            Response::ReadAllOk(ReadAllOk {
                events: vec![],
                head: LogPosition(7),
                next: None,
            }),
        )
        .await;
        accept_subscribe(&mut conn).await
    };
    let (sub, (_, req)) = tokio::join!(
        client.subscribe_all(SubscribeAllOptions::default().from(SubscribeFrom::End)),
        server_side
    );
    assert_eq!(all_from(&req), SubscribeFrom::After(LogPosition(6)));
    // Kept alive: dropping one sends an Unsubscribe.
    let mut subs = vec![sub.unwrap()];
    assert_eq!(
        subs[0].resume_point(),
        Checkpoint::All {
            next: LogPosition(7)
        }
    );

    // A stream: one read of its last version; a missing stream starts at 0.
    for (answer, expected) in [
        (Some(4), SubscribeFrom::After(StreamVersion(4))),
        (None, SubscribeFrom::Start),
    ] {
        let server_side = async {
            let (id, req) = conn.expect().await;
            assert!(matches!(req, Request::ReadStream(_)), "{req:?}");
            match answer {
                Some(v) => {
                    conn.reply(
                        id,
                        Response::ReadStreamOk(ReadStreamOk {
                            events: vec![],
                            last_version: Some(StreamVersion(v)),
                            next: None,
                        }),
                    )
                    .await
                }
                None => {
                    conn.error(
                        id,
                        Opcode::ReadStream,
                        ErrorReply::new(ErrorCode::StreamNotFound, "no such stream")
                            .with_stream(Text::from("acct")),
                    )
                    .await
                }
            }
            accept_subscribe(&mut conn).await
        };
        let options = SubscribeStreamOptions::default().from(SubscribeFrom::End);
        let (sub, (_, req)) = tokio::join!(client.subscribe_stream("acct", options), server_side);
        subs.push(sub.unwrap());
        assert_eq!(stream_from(&req).1, expected);
    }
}

#[tokio::test]
async fn unsubscribe_waits_for_the_server() {
    let (_server, client, mut conn) = setup(sub_options()).await;
    let (mut sub, id, _) = subscribe_all(&client, &mut conn, SubscribeAllOptions::default()).await;
    conn.push(id, at(0..2)).await;
    next_event(&mut sub).await;
    let done = tokio::spawn(sub.unsubscribe());
    let (uid, req) = conn.expect().await;
    assert_eq!(req, Request::Unsubscribe(Unsubscribe { subscription: id }));
    assert!(!done.is_finished());
    conn.reply(uid, Response::UnsubscribeOk).await;
    done.await.unwrap().unwrap();
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes_in_the_background() {
    let (_server, client, mut conn) = setup(sub_options()).await;
    let (sub, id, _) = subscribe_all(&client, &mut conn, SubscribeAllOptions::default()).await;
    drop(sub);
    let (_, req) = conn.expect().await;
    assert_eq!(req, Request::Unsubscribe(Unsubscribe { subscription: id }));
    // Pushes still in flight are dropped; the connection carries on.
    conn.push(id, at(0..3)).await;
    assert_eq!(barrier(&client, &mut conn).await, vec![]);
}

#[tokio::test]
async fn duplicates_are_dropped_and_a_gap_ends_the_subscription() {
    let (_server, client, mut conn) = setup(sub_options()).await;
    let (mut sub, id, _) = subscribe_all(
        &client,
        &mut conn,
        SubscribeAllOptions::default().window(100),
    )
    .await;
    conn.push(id, at(0..3)).await;
    conn.push(id, at(1..5)).await;
    assert_eq!(positions(&mut sub, 5).await, vec![0, 1, 2, 3, 4]);
    conn.push(id, at([6])).await;
    let err = sub.try_next().await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    assert!(sub.try_next().await.unwrap().is_none(), "ended");
    // The server-side subscription is ended too.
    let (_, req) = conn.expect().await;
    assert_eq!(req, Request::Unsubscribe(Unsubscribe { subscription: id }));
}

/// Events at `positions`, in a push that covers the log from `from`.
fn covering(from: u64, positions: impl IntoIterator<Item = u64>) -> Push {
    let Push::Events { events, .. } = at(positions) else {
        unreachable!()
    };
    Push::Events {
        events,
        from: Some(from),
    }
}

#[tokio::test]
async fn a_push_covering_a_removed_range_is_no_gap_but_one_starting_past_it_is() {
    let (_server, client, mut conn) = setup(sub_options()).await;
    let (mut sub, id, _) = subscribe_all(
        &client,
        &mut conn,
        SubscribeAllOptions::default().window(100),
    )
    .await;
    // 1, 3, 4, 6 removed: the pushes say so by covering from 0 and 5.
    conn.push(id, covering(0, [0, 2])).await;
    conn.push(id, covering(3, [5, 7])).await;
    // A repeat covering from before what was delivered: duplicates dropped.
    conn.push(id, covering(5, [5, 7, 9])).await;
    assert_eq!(positions(&mut sub, 5).await, vec![0, 2, 5, 7, 9]);
    assert_eq!(
        sub.resume_point(),
        Checkpoint::All {
            next: LogPosition(10)
        }
    );
    // A push whose coverage starts past what is expected: lost events.
    conn.push(id, covering(12, [12])).await;
    let err = sub.try_next().await.unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    assert!(err.to_string().contains("were lost"), "{err}");
}

#[tokio::test]
async fn a_server_shutting_down_is_a_reconnect_and_a_failure_is_an_error() {
    let (mut server, client, mut conn) = setup(sub_options()).await;
    let (mut sub, id, _) = subscribe_all(&client, &mut conn, SubscribeAllOptions::default()).await;
    conn.push(id, at(0..2)).await;
    conn.push(
        id,
        Push::Ended {
            code: ErrorCode::ShuttingDown,
            message: "bye".to_owned(),
        },
    )
    .await;
    let resumed = tokio::spawn(async move { (positions(&mut sub, 3).await, sub) });
    // The client does not wait for the server to close the connection.
    let mut conn2 = server.accept().await;
    let (id2, req) = accept_subscribe(&mut conn2).await;
    assert_eq!(all_from(&req), SubscribeFrom::After(LogPosition(1)));
    drop(conn);
    conn2.push(id2, at(2..4)).await;
    conn2
        .push(
            id2,
            Push::Ended {
                code: ErrorCode::Corruption,
                message: "segment 7 offset 42".to_owned(),
            },
        )
        .await;
    // Events before the failure are delivered first.
    let (seen, mut sub) = resumed.await.unwrap();
    assert_eq!(seen, vec![0, 1, 2]);
    assert_eq!(positions(&mut sub, 1).await, vec![3]);
    let err = sub.try_next().await.unwrap_err();
    assert!(
        matches!(err, Error::Corruption(ref m) if m.contains("offset 42")),
        "{err:?}"
    );
    assert!(sub.try_next().await.unwrap().is_none());
}

#[tokio::test]
async fn reset_connection_resubscribes() {
    let (mut server, client, mut conn) = setup(sub_options()).await;
    let (mut sub, id, _) = subscribe_all(&client, &mut conn, SubscribeAllOptions::default()).await;
    conn.push(id, at(0..1)).await;
    next_event(&mut sub).await;
    client.reset_connection();
    let resumed = tokio::spawn(async move { next_event(&mut sub).await });
    let mut conn = server.accept().await;
    let (id, req) = accept_subscribe(&mut conn).await;
    assert_eq!(all_from(&req), SubscribeFrom::After(LogPosition(0)));
    conn.push(id, at([1])).await;
    assert_eq!(resumed.await.unwrap().position, LogPosition(1));
}

#[tokio::test]
async fn the_subscription_fails_when_the_resubscribe_policy_gives_up() {
    let policy = RetryPolicy::default()
        .max_attempts(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(1));
    let (server, client, mut conn) = setup(options().resubscribe(policy)).await;
    let (mut sub, _, _) = subscribe_all(&client, &mut conn, SubscribeAllOptions::default()).await;
    server.stop().await;
    drop(conn);
    let err = sub.try_next().await.unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn refusals_and_bad_options_fail_the_call() {
    let (_server, client, mut conn) = setup(sub_options()).await;
    let server_side = async {
        let (id, _) = conn.expect().await;
        conn.error(
            id,
            Opcode::Subscribe,
            ErrorReply::new(ErrorCode::BadRequest, "no"),
        )
        .await;
    };
    let (sub, ()) = tokio::join!(
        client.subscribe_all(SubscribeAllOptions::default()),
        server_side
    );
    assert!(matches!(sub, Err(Error::BadRequest(_))), "{sub:?}");

    let zero = client
        .subscribe_all(SubscribeAllOptions::default().window(0))
        .await;
    assert!(matches!(zero, Err(Error::BadRequest(_))), "{zero:?}");
    let stream_checkpoint = Some(Checkpoint::Stream {
        next: StreamVersion(3),
    });
    let wrong = client
        .subscribe_all(SubscribeAllOptions::default().from_checkpoint(stream_checkpoint))
        .await;
    assert!(matches!(wrong, Err(Error::BadRequest(_))), "{wrong:?}");
    let bad_name = client
        .subscribe_stream("", SubscribeStreamOptions::default())
        .await;
    assert!(
        matches!(bad_name, Err(Error::BadRequest(_))),
        "{bad_name:?}"
    );
    // None of these reached the server.
    assert_eq!(barrier(&client, &mut conn).await, vec![]);
}

#[tokio::test]
async fn a_subscribe_without_an_answer_times_out_and_is_ended() {
    let opts = sub_options().request_timeout(Some(Duration::from_secs(5)));
    let (_server, client, mut conn) = setup(opts).await;
    tokio::time::pause();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.subscribe_all(SubscribeAllOptions::default()).await }
    });
    let (id, req) = conn.expect().await;
    assert!(matches!(req, Request::Subscribe(_)));
    let result = call.await.unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    // The abandoned subscription is ended on the server.
    let (_, req) = conn.expect().await;
    assert_eq!(req, Request::Unsubscribe(Unsubscribe { subscription: id }));
}

#[tokio::test]
async fn a_restarted_server_on_the_same_port_is_resubscribed_to() {
    let (server, client, mut conn) = setup(sub_options()).await;
    let addr = server.addr;
    let (mut sub, id, _) = subscribe_all(&client, &mut conn, SubscribeAllOptions::default()).await;
    conn.push(id, at(0..2)).await;
    assert_eq!(positions(&mut sub, 2).await, vec![0, 1]);
    server.stop().await;
    drop(conn);
    let resumed = tokio::spawn(async move { positions(&mut sub, 2).await });
    let mut server =
        FakeServer::start_on(addr, common::Handshake::Accept(common::hello_ok("2"))).await;
    let mut conn = server.accept().await;
    let (id, req) = accept_subscribe(&mut conn).await;
    assert_eq!(all_from(&req), SubscribeFrom::After(LogPosition(1)));
    conn.push(id, at(2..4)).await;
    assert_eq!(resumed.await.unwrap(), vec![2, 3]);
}
