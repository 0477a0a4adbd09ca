//! TLS on the client port: a client trusting the server's CA appends,
//! reads and subscribes over TLS; clear text, an unknown CA and a wrong
//! server name are refused during the handshake while trusted clients go
//! on; with client CAs (mutual TLS) a client without a certificate, or with
//! one from another CA, is refused. The daemon binary serves TLS on both
//! ports and the CLI speaks it.

use std::time::Duration;

use futures::StreamExt;
use logbook_client::{
    Client, ClientOptions, Error, EventId, ExpectedVersion, NewEvent, ReadStreamOptions,
    RecordedEvent, RetryPolicy, StreamVersion, SubscribeStreamOptions, Subscription,
    SubscriptionMessage, TlsOptions,
};
use logbook_server::tls::{ServerTls, TlsFiles};
use logbook_tests::TestServer;
use logbook_tests::certs::TestPki;
use logbook_tests::daemon::{Daemon, logbook_cli};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn options(tls: Option<TlsOptions>) -> ClientOptions {
    let o = ClientOptions::default()
        .retry(RetryPolicy::none())
        .connect_timeout(Some(Duration::from_secs(10)));
    match tls {
        Some(t) => o.tls(t),
        None => o,
    }
}

fn event(i: u32) -> NewEvent {
    NewEvent::new(EventId::new_v7(), "Deposited", format!("{{\"n\":{i}}}"))
}

async fn next_event(sub: &mut Subscription) -> RecordedEvent {
    loop {
        match sub
            .next()
            .await
            .expect("subscription open")
            .expect("no error")
        {
            SubscriptionMessage::Event(e) => return e,
            _ => continue,
        }
    }
}

async fn start(pki: &TestPki, client_ca: bool) -> TestServer {
    let tls = ServerTls::load(&TlsFiles {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: client_ca.then(|| pki.ca.clone()),
    })
    .expect("load TLS");
    TestServer::start_tuned(|_, s| s.tls = Some(tls)).await
}

#[tokio::test]
async fn clients_trusting_the_ca_are_served_and_the_rest_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "good", "alice");
    let other = TestPki::generate(dir.path(), "other", "mallory");
    let server = start(&pki, false).await;

    let trusted = TlsOptions::from_ca_file(&pki.ca, "localhost").unwrap();
    let client = Client::connect_with(server.addr, options(Some(trusted.clone())))
        .await
        .expect("TLS client connects");
    // A subscription opened before the appends sees them live.
    let mut sub = client
        .subscribe_stream("account-1", SubscribeStreamOptions::default())
        .await
        .unwrap();
    for i in 0..50 {
        client
            .append("account-1", ExpectedVersion::Any, vec![event(i)])
            .await
            .unwrap();
    }
    let read = client
        .read_stream_page("account-1", ReadStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(read.events.len(), 50);
    for i in 0..50u64 {
        assert_eq!(next_event(&mut sub).await.version, StreamVersion(i));
    }

    // Clear text to a TLS port: the server reads no Hello in it.
    let err = Client::connect_with(server.addr, options(None))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    // A CA the server's certificate does not chain to.
    let untrusted = TlsOptions::from_ca_file(&other.ca, "localhost").unwrap();
    let err = Client::connect_with(server.addr, options(Some(untrusted)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // A name the certificate does not carry.
    let wrong_name = TlsOptions::from_ca_file(&pki.ca, "logbook.example.com").unwrap();
    let err = Client::connect_with(server.addr, options(Some(wrong_name)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // Garbage where a TLS ClientHello belongs: the connection is closed.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    raw.write_all(&[0u8; 4096]).await.unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink).await;

    // The first client was never disturbed, and by name `127.0.0.1` too.
    client
        .append(
            "account-1",
            ExpectedVersion::Exact(StreamVersion(49)),
            vec![event(50)],
        )
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub).await.version, StreamVersion(50));
    let by_ip = TlsOptions::from_ca_file(&pki.ca, "127.0.0.1").unwrap();
    let c2 = Client::connect_with(server.addr, options(Some(by_ip)))
        .await
        .unwrap();
    let read = c2
        .read_stream_page("account-1", ReadStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(read.events.len(), 51);
    drop(sub);
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "good", "alice");
    let other = TestPki::generate(dir.path(), "other", "mallory");
    let server = start(&pki, true).await;

    let trusted = TlsOptions::from_ca_file(&pki.ca, "localhost").unwrap();
    // No certificate: refused during the handshake (TLS 1.3 reports it on
    // the first read, the Hello's answer).
    let err = Client::connect_with(server.addr, options(Some(trusted.clone())))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    // A certificate from another CA.
    let foreign = trusted
        .clone()
        .client_identity_files(&other.client_cert, &other.client_key)
        .unwrap();
    let err = Client::connect_with(server.addr, options(Some(foreign)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err:?}");
    // The CA's own client certificate.
    let alice = trusted
        .client_identity_files(&pki.client_cert, &pki.client_key)
        .unwrap();
    let client = Client::connect_with(server.addr, options(Some(alice)))
        .await
        .expect("client with a certificate connects");
    client
        .append("s", ExpectedVersion::NoStream, vec![event(0)])
        .await
        .unwrap();
    server.stop().await;
}

#[test]
fn the_daemon_binary_serves_tls_on_both_ports_and_the_cli_speaks_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "good", "alice");
    let data = dir.path().join("data");
    let daemon = Daemon::start(
        &data,
        &[
            "--tls-cert",
            pki.server_cert.to_str().unwrap(),
            "--tls-key",
            pki.server_key.to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--metrics-tls",
        ],
    );
    let server = daemon.addr.to_string();
    let cli = |extra: &[&str]| {
        std::process::Command::new(logbook_cli())
            .args(["--server", &server])
            .args(extra)
            .output()
            .expect("run logbook")
    };
    let out = cli(&["--tls-ca", pki.ca.to_str().unwrap(), "ping"]);
    assert!(out.status.success(), "{out:?}");
    // The host part of --server (127.0.0.1) is the name checked.
    let out = cli(&[
        "--tls-ca",
        pki.ca.to_str().unwrap(),
        "append",
        "cli-stream",
        "--type",
        "Opened",
        "--data",
        "{}",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&["ping"]);
    assert!(!out.status.success(), "clear text must fail: {out:?}");
    let out = cli(&[
        "--tls-ca",
        pki.ca.to_str().unwrap(),
        "--tls-server-name",
        "elsewhere.example.com",
        "ping",
    ]);
    assert!(!out.status.success(), "a wrong name must fail: {out:?}");

    // /health over TLS on the metrics port.
    let metrics = daemon.metrics_addr.expect("metrics address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = rt.block_on(https_get(&pki.ca, metrics, "/health"));
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.ends_with("ok\n") || body.ends_with("ok"), "{body}");
    daemon.kill();
}

/// One HTTPS GET to a server whose certificate chains to `ca` and names
/// `localhost`, answered with the whole response.
async fn https_get(ca: &std::path::Path, addr: std::net::SocketAddr, path: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[test]
fn listening_beyond_loopback_in_clear_text_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "good", "alice");
    let exposed = Daemon::start_on(&dir.path().join("a"), "0.0.0.0:0", &[]);
    let local = Daemon::start(&dir.path().join("b"), &[]);
    let with_tls = Daemon::start_on(
        &dir.path().join("c"),
        "0.0.0.0:0",
        &[
            "--tls-cert",
            pki.server_cert.to_str().unwrap(),
            "--tls-key",
            pki.server_key.to_str().unwrap(),
        ],
    );
    let warned = |d: &Daemon| d.log_text().contains("without TLS");
    assert!(warned(&exposed), "{}", exposed.log_text());
    assert!(!warned(&local), "{}", local.log_text());
    assert!(!warned(&with_tls), "{}", with_tls.log_text());
    for d in [exposed, local, with_tls] {
        d.kill();
    }
}

#[tokio::test]
async fn many_short_tls_connections_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path(), "good", "alice");
    let server = start(&pki, false).await;
    let trusted = TlsOptions::from_ca_file(&pki.ca, "localhost").unwrap();
    // Busy connections first, dropped mid-stream.
    let mut tasks = Vec::new();
    for k in 0..8 {
        let o = options(Some(trusted.clone()));
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let c = Client::connect_with(addr, o).await.unwrap();
            for i in 0..200 {
                c.append(
                    format!("b-{k}").as_str(),
                    ExpectedVersion::Any,
                    vec![event(i)],
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..2000 {
        let c = Client::connect_with(server.addr, options(Some(trusted.clone())))
            .await
            .unwrap_or_else(|e| panic!("connection {i}: {e:?}"));
        drop(c);
    }
    server.stop().await;
}
