//! Request timeouts, on paused time: the runtime skips ahead once idle, so
//! nothing here waits for real.

mod common;

use std::time::Duration;

use common::{options, setup};
use logbook_client::Error;
use logbook_protocol::{Pong, Request, Response};

#[tokio::test]
async fn unanswered_request_times_out_and_its_late_reply_is_dropped() {
    let (_server, client, mut conn) =
        setup(options().request_timeout(Some(Duration::from_secs(5)))).await;
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.ping().await }
    });
    let (late_id, late) = conn.expect().await;
    let result = call.await.unwrap();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(start.elapsed() >= Duration::from_secs(5));
    tokio::time::resume();

    // The reply arrives after the caller gave up: nobody is waiting for it,
    // and the connection carries on.
    let Request::Ping(p) = late else {
        panic!("{late:?}")
    };
    conn.reply(late_id, Response::Pong(Pong { nonce: p.nonce }))
        .await;
    let call = tokio::spawn(async move { client.ping().await });
    let (id, req) = conn.expect().await;
    assert_ne!(id, late_id);
    let Request::Ping(p) = req else {
        panic!("{req:?}")
    };
    conn.reply(id, Response::Pong(Pong { nonce: p.nonce }))
        .await;
    call.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_timeout_bounds_a_page_of_a_paging_stream() {
    use futures::StreamExt;
    let (_server, client, mut conn) =
        setup(options().request_timeout(Some(Duration::from_secs(2)))).await;
    tokio::time::pause();
    let mut events = client.read_stream("s", Default::default());
    let next = tokio::spawn(async move { events.next().await });
    let _ = conn.expect().await;
    let item = next.await.unwrap();
    assert!(matches!(item, Some(Err(Error::Timeout))), "{item:?}");
}
