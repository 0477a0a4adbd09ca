//! The Hello handshake: what the client sends, what it keeps, and how a
//! refused or silent handshake fails.

mod common;

use std::io;
use std::time::Duration;

use common::{FakeServer, Handshake, hello_ok, options};
use logbook_client::{Client, ClientOptions, Error};
use logbook_protocol::{ErrorCode, ErrorReply};

#[tokio::test]
async fn hello_carries_name_and_token_and_server_info_is_kept() {
    let mut ok = hello_ok("logbookd-fake 9.9");
    ok.max_in_flight = 77;
    let mut server = FakeServer::start_with(Handshake::Accept(ok.clone())).await;
    let client = Client::connect_with(
        server.addr,
        options().client_name("t10-client").auth_token("tok"),
    )
    .await
    .unwrap();
    let conn = server.accept().await;
    let hello = conn.hello.clone().unwrap();
    assert_eq!(hello.client_name, "t10-client");
    assert_eq!(hello.token.as_deref(), Some("tok"));
    assert_eq!(hello.protocol_version, 1);
    assert_eq!(client.server_info(), ok);
}

#[tokio::test]
async fn default_name_and_no_token() {
    let mut server = FakeServer::start().await;
    let _client = Client::connect(server.addr).await.unwrap();
    let hello = server.accept().await.hello.unwrap();
    assert!(hello.client_name.starts_with("logbook-client/"));
    assert_eq!(hello.token, None);
}

#[tokio::test]
async fn wrong_token_is_not_authenticated() {
    let server = FakeServer::start_with(Handshake::Reject(
        ErrorReply::new(ErrorCode::NotAuthenticated, "bad token"),
        1,
    ))
    .await;
    let err = Client::connect_with(server.addr, options().auth_token("nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
}

#[tokio::test]
async fn no_common_version_reports_the_servers_max() {
    // Sent as a connection-level error (corr_id 0), which the client must
    // also accept as the answer to Hello.
    let server = FakeServer::start_with(Handshake::Reject(
        ErrorReply::new(ErrorCode::UnsupportedVersion, "too new").with_max_version(0),
        0,
    ))
    .await;
    let err = Client::connect(server.addr).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                max_version: Some(0)
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_picking_another_version_is_refused() {
    let mut ok = hello_ok("future");
    ok.protocol_version = 2;
    let server = FakeServer::start_with(Handshake::Accept(ok)).await;
    let err = Client::connect(server.addr).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                max_version: Some(2)
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = Client::connect(addr).await.unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
}

#[tokio::test]
async fn silent_server_hits_the_connect_timeout() {
    let server = FakeServer::start_with(Handshake::Silent).await;
    // Paused time: the runtime skips ahead once everything is idle, so the
    // timeout fires without the test waiting for it.
    tokio::time::pause();
    let opts = ClientOptions::default().connect_timeout(Some(Duration::from_secs(3)));
    let err = Client::connect_with(server.addr, opts).await.unwrap_err();
    match err {
        Error::Connect(e) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
}
