//! Each call: what goes on the wire and what comes back. Invalid
//! arguments fail before anything is sent.

mod common;

use bytes::Bytes;
use common::{options, recorded, setup};
use logbook_client::{
    AppendResult, Direction, Error, EventId, ExpectedVersion, LogPosition, NewEvent,
    ReadAllOptions, ReadStreamOptions, StreamVersion,
};
use logbook_protocol::{Pong, ReadAllOk, ReadStreamOk, Request, Response};

#[tokio::test]
async fn ping_echoes_its_nonce() {
    let (_server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let (id, req) = conn.expect().await;
    let Request::Ping(ping) = req else {
        panic!("{req:?}")
    };
    conn.reply(id, Response::Pong(Pong { nonce: ping.nonce }))
        .await;
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn pong_with_another_nonce_is_a_protocol_error() {
    let (_server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn(async move { client.ping().await });
    let (id, req) = conn.expect().await;
    let Request::Ping(ping) = req else {
        panic!("{req:?}")
    };
    conn.reply(
        id,
        Response::Pong(Pong {
            nonce: ping.nonce + 1,
        }),
    )
    .await;
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}

#[tokio::test]
async fn append_sends_the_batch_and_returns_the_result() {
    let (_server, client, mut conn) = setup(options()).await;
    let events = vec![
        NewEvent::new(EventId::from_u128(10), "Opened", "{}"),
        NewEvent::new(EventId::from_u128(11), "Deposited", vec![1u8, 2, 3])
            .with_metadata(Bytes::from_static(b"meta")),
    ];
    let sent = events.clone();
    let call = tokio::spawn(async move {
        client
            .append(
                "account-1",
                ExpectedVersion::Exact(StreamVersion(4)),
                events,
            )
            .await
    });
    let (id, req) = conn.expect().await;
    let Request::Append(append) = req else {
        panic!("{req:?}")
    };
    assert_eq!(append.stream, "account-1");
    assert_eq!(append.expected, ExpectedVersion::Exact(StreamVersion(4)));
    assert_eq!(append.events, sent);
    let result = AppendResult {
        first_version: StreamVersion(5),
        last_version: StreamVersion(6),
        first_position: LogPosition(100),
        last_position: LogPosition(101),
    };
    conn.reply(id, Response::AppendOk(result)).await;
    assert_eq!(call.await.unwrap().unwrap(), result);
}

#[tokio::test]
async fn read_stream_page_sends_its_options_and_returns_the_page() {
    let (_server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn(async move {
        client
            .read_stream_page(
                "account-1",
                ReadStreamOptions::default()
                    .from(StreamVersion(9))
                    .backward()
                    .page_size(50)
                    .max_count(3),
            )
            .await
    });
    let (id, req) = conn.expect().await;
    let Request::ReadStream(read) = req else {
        panic!("{req:?}")
    };
    assert_eq!(read.stream, "account-1");
    assert_eq!(read.from, Some(StreamVersion(9)));
    assert_eq!(read.direction, Direction::Backward);
    assert_eq!(read.max_count, 3, "the page is cut to max_count");
    let events = vec![
        recorded("account-1", 9, 90),
        recorded("account-1", 8, 80),
        recorded("account-1", 7, 70),
    ];
    conn.reply(
        id,
        Response::ReadStreamOk(ReadStreamOk {
            events: events.clone(),
            last_version: Some(StreamVersion(12)),
            next: Some(StreamVersion(6)),
        }),
    )
    .await;
    let page = call.await.unwrap().unwrap();
    assert_eq!(page.events, events);
    assert_eq!(page.last_version, Some(StreamVersion(12)));
    assert_eq!(page.next, Some(StreamVersion(6)));
}

#[tokio::test]
async fn read_all_page_sends_its_options_and_returns_the_page() {
    let (_server, client, mut conn) = setup(options()).await;
    let call = tokio::spawn(async move { client.read_all_page(ReadAllOptions::default()).await });
    let (id, req) = conn.expect().await;
    let Request::ReadAll(read) = req else {
        panic!("{req:?}")
    };
    assert_eq!(read.from, None);
    assert_eq!(read.direction, Direction::Forward);
    assert_eq!(read.max_count, logbook_client::DEFAULT_PAGE_SIZE);
    let events = vec![recorded("a", 0, 0), recorded("b", 0, 1)];
    conn.reply(
        id,
        Response::ReadAllOk(ReadAllOk {
            events: events.clone(),
            head: LogPosition(2),
            next: None,
        }),
    )
    .await;
    let page = call.await.unwrap().unwrap();
    assert_eq!(page.events, events);
    assert_eq!(page.head, LogPosition(2));
    assert_eq!(page.next, None);
}

#[tokio::test]
async fn invalid_arguments_fail_before_sending() {
    let (_server, client, mut conn) = setup(options()).await;
    let ev = |t: &str| NewEvent::new(EventId::from_u128(1), t, "x");
    fn bad<T>(r: Result<T, Error>) -> bool {
        matches!(r, Err(Error::BadRequest(_)))
    }

    assert!(bad(client
        .append("", ExpectedVersion::Any, vec![ev("T")])
        .await));
    assert!(bad(client
        .append("a\nb", ExpectedVersion::Any, vec![ev("T")])
        .await));
    assert!(bad(client.append("s", ExpectedVersion::Any, vec![]).await));
    assert!(bad(client
        .append("s", ExpectedVersion::Any, vec![ev("")])
        .await));
    assert!(bad(client
        .append("s", ExpectedVersion::Any, vec![ev(&"t".repeat(256))])
        .await));
    assert!(bad(client
        .read_stream_page("", ReadStreamOptions::default())
        .await));
    assert!(bad(client
        .read_stream_page("s", ReadStreamOptions::default().page_size(0))
        .await));
    assert!(bad(client
        .read_all_page(ReadAllOptions::default().max_count(0))
        .await));

    // The server's announced limits (fake: 100 events, 512 KiB in all,
    // 256 KiB per event).
    let many = (0..101).map(|i| NewEvent::new(EventId::from_u128(i), "T", "x"));
    match client
        .append("s", ExpectedVersion::Any, many.collect())
        .await
    {
        Err(Error::TooLarge {
            limit: Some(100), ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let big = NewEvent::new(EventId::from_u128(1), "T", vec![0u8; 300 * 1024]);
    match client.append("s", ExpectedVersion::Any, vec![big]).await {
        Err(Error::TooLarge { limit: Some(l), .. }) => assert_eq!(l, 256 * 1024),
        other => panic!("{other:?}"),
    }
    let three = (0..3).map(|i| NewEvent::new(EventId::from_u128(i), "T", vec![0u8; 200 * 1024]));
    match client
        .append("s", ExpectedVersion::Any, three.collect())
        .await
    {
        Err(Error::TooLarge { limit: Some(l), .. }) => assert_eq!(l, 512 * 1024),
        other => panic!("{other:?}"),
    }

    // Nothing reached the server: the first request it sees is this ping.
    let ping = tokio::spawn(async move { client.ping().await });
    let (id, req) = conn.expect().await;
    let Request::Ping(p) = req else {
        panic!("{req:?}")
    };
    conn.reply(id, Response::Pong(Pong { nonce: p.nonce }))
        .await;
    ping.await.unwrap().unwrap();
}

#[tokio::test]
async fn frames_over_the_servers_limit_are_refused_locally() {
    let mut ok = common::hello_ok("small");
    ok.max_frame_bytes = 4096;
    ok.max_append_bytes = 0; // not announced: only the frame limit applies
    let mut server = common::FakeServer::start_with(common::Handshake::Accept(ok)).await;
    let client = logbook_client::Client::connect_with(server.addr, options())
        .await
        .unwrap();
    let _conn = server.accept().await;
    let big = NewEvent::new(EventId::from_u128(1), "T", vec![0u8; 8192]);
    match client.append("s", ExpectedVersion::Any, vec![big]).await {
        Err(Error::TooLarge {
            limit: Some(4096), ..
        }) => {}
        other => panic!("{other:?}"),
    }
}
