//! Broken connections: requests in flight are retried on a new connection
//! (reads and appends alike), give up with `Disconnected` when the policy
//! runs out, and the client reconnects to a restarted server.

mod common;

use std::time::Duration;

use common::{FakeServer, Handshake, hello_ok, options, recorded, setup};
use logbook_client::{
    AppendResult, Client, Error, EventId, ExpectedVersion, LogPosition, NewEvent,
    ReadStreamOptions, RetryPolicy, StreamVersion,
};
use logbook_protocol::{Pong, ReadStreamOk, Request, Response};

fn pong(req: &Request) -> Response {
    match req {
        Request::Ping(p) => Response::Pong(Pong { nonce: p.nonce }),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_read_is_retried_on_a_new_connection() {
    let (mut server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn(async move {
        client
            .read_stream_page("s", ReadStreamOptions::default().from(StreamVersion(3)))
            .await
    });
    let (_, first) = conn.expect().await;
    drop(conn); // the server goes away mid-request

    let mut conn = server.accept().await;
    let (id, again) = conn.expect().await;
    assert_eq!(first, again);
    conn.reply(
        id,
        Response::ReadStreamOk(ReadStreamOk {
            events: vec![recorded("s", 3, 30)],
            last_version: Some(StreamVersion(3)),
            next: None,
        }),
    )
    .await;
    let page = call.await.unwrap().unwrap();
    assert_eq!(page.events[0].version, StreamVersion(3));
}

#[tokio::test]
async fn an_append_is_resent_with_the_same_event_ids() {
    let (mut server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn(async move {
        let events = vec![
            NewEvent::new(EventId::from_u128(71), "E", "a"),
            NewEvent::new(EventId::from_u128(72), "E", "b"),
        ];
        client
            .append("acct", ExpectedVersion::NoStream, events)
            .await
    });
    let (_, first) = conn.expect().await;
    drop(conn);

    let mut conn = server.accept().await;
    let (id, again) = conn.expect().await;
    assert_eq!(first, again, "the retry must carry the same batch");
    let result = AppendResult {
        first_version: StreamVersion(0),
        last_version: StreamVersion(1),
        first_position: LogPosition(0),
        last_position: LogPosition(1),
    };
    conn.reply(id, Response::AppendOk(result)).await;
    assert_eq!(call.await.unwrap().unwrap(), result);
}

#[tokio::test]
async fn every_request_in_flight_is_retried() {
    let (mut server, client, mut conn) = setup(options()).await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.ping().await })
        })
        .collect();
    for _ in 0..10 {
        conn.expect().await;
    }
    drop(conn);
    let mut conn = server.accept().await;
    for _ in 0..10 {
        let (id, req) = conn.expect().await;
        conn.reply(id, pong(&req)).await;
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn exhausted_retries_fail_with_disconnected() {
    let retry = RetryPolicy::default()
        .max_attempts(2)
        .backoff(Duration::from_millis(1), Duration::from_millis(1));
    let (mut server, client, mut conn) = setup(options().retry(retry)).await;
    let call = tokio::spawn(async move { client.read_all_page(Default::default()).await });
    conn.expect().await;
    drop(conn);
    let mut conn = server.accept().await;
    conn.expect().await;
    drop(conn);
    let result = call.await.unwrap();
    assert!(matches!(result, Err(Error::Disconnected)), "{result:?}");
}

#[tokio::test]
async fn without_retries_the_request_in_flight_fails_at_once() {
    let (_server, client, mut conn) = setup(options().retry(RetryPolicy::none())).await;
    let call = tokio::spawn(async move { client.ping().await });
    conn.expect().await;
    drop(conn);
    assert!(matches!(call.await.unwrap(), Err(Error::Disconnected)));
}

#[tokio::test]
async fn reconnects_to_a_server_restarted_on_the_same_port() {
    let mut server = FakeServer::start_with(Handshake::Accept(hello_ok("first"))).await;
    let addr = server.addr;
    let client = Client::connect_with(addr, options()).await.unwrap();
    let conn = server.accept().await;
    assert_eq!(client.server_info().server_version, "first");

    // The server stops: calls fail with a retryable error.
    server.stop().await;
    drop(conn);
    let err = client.ping().await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");

    // It comes back on the same port: the next call reconnects.
    let mut server = FakeServer::start_on(addr, Handshake::Accept(hello_ok("second"))).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let mut conn = server.accept().await;
    let (id, req) = conn.expect().await;
    conn.reply(id, pong(&req)).await;
    call.await.unwrap().unwrap();
    assert_eq!(client.server_info().server_version, "second");
}

#[tokio::test]
async fn a_call_waiting_out_its_backoff_succeeds_once_the_server_is_back() {
    let mut server = FakeServer::start().await;
    let addr = server.addr;
    let patient = options().retry(
        RetryPolicy::default()
            .max_attempts(10_000)
            .backoff(Duration::from_millis(1), Duration::from_millis(2)),
    );
    let client = Client::connect_with(addr, patient).await.unwrap();
    let conn = server.accept().await;
    server.stop().await;
    drop(conn);

    let call = tokio::spawn(async move { client.ping().await });
    let mut server = FakeServer::start_on(addr, Handshake::Accept(hello_ok("back"))).await;
    let mut conn = server.accept().await;
    let (id, req) = conn.expect().await;
    conn.reply(id, pong(&req)).await;
    call.await.unwrap().unwrap();
}
