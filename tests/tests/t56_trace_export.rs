//! The server's spans of traced appends join the caller's trace: a daemon
//! in this process exports them over OTLP/HTTP JSON to a collector played
//! by this test, each one a child of the span named by the appended
//! events' `"$traceparent"`; appends without a sampled trace context make
//! none; a collector that is down slows nothing.

use std::net::SocketAddr;
use std::time::Duration;

use logbook_client::es::{EventMeta, Format, Repository, encode};
use logbook_client::{Client, EventId, ExpectedVersion, ReadStreamOptions, StreamVersion};
use logbook_tests::TestServer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A collector: answers each POST 200 and hands over its JSON body.
async fn collector() -> (SocketAddr, mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = conn.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "request cut short");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        assert!(head.starts_with("post /v1/traces http/1.1"), "{head}");
                        assert!(head.contains("content-type: application/json"), "{head}");
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .expect("a content length")
                            .trim()
                            .parse()
                            .unwrap();
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    let n = conn.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "body cut short");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body: Value =
                    serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tx.send(body);
            });
        }
    });
    (addr, rx)
}

/// The next `n` spans the collector receives (with a generous deadline: a
/// batch waits 200 ms for company).
async fn spans(rx: &mut mpsc::UnboundedReceiver<Value>, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        let body = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the collector received spans")
            .expect("collector running");
        let rs = &body["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
        assert_eq!(
            rs["resource"]["attributes"][0]["value"]["stringValue"],
            "ledger-db"
        );
        out.extend(
            rs["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    out
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    let attrs = span["attributes"].as_array().unwrap();
    let a = attrs
        .iter()
        .find(|a| a["key"] == key)
        .unwrap_or_else(|| panic!("{key} in {span}"));
    &a["value"]
}

fn event(n: i64, meta: &EventMeta) -> logbook_client::NewEvent {
    #[derive(serde::Serialize, serde::Deserialize)]
    enum E {
        Noted { n: i64 },
    }
    impl logbook_client::es::SerdeEvent for E {}
    encode(&E::Noted { n }, EventId::new_v7(), meta, Format::Json).unwrap()
}

#[tokio::test]
async fn traced_appends_become_child_spans_of_the_callers() {
    let (addr, mut rx) = collector().await;
    let server = TestServer::start_tuned(|_, s| {
        s.otlp_endpoint = Some(format!("http://{addr}").parse().unwrap());
        s.otlp_service_name = "ledger-db".into();
    })
    .await;
    let client = Client::connect(server.addr).await.unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let sampled = EventMeta::default().with_traceparent(format!("00-{trace}-{caller}-01"));
    let unsampled = EventMeta::default().with_traceparent(format!("00-{trace}-{caller}-00"));

    // No trace context, an unsampled one, a malformed one: no span.
    client
        .append(
            "plain-1",
            ExpectedVersion::Any,
            vec![event(1, &EventMeta::default())],
        )
        .await
        .unwrap();
    client
        .append(
            "unsampled-1",
            ExpectedVersion::Any,
            vec![event(1, &unsampled)],
        )
        .await
        .unwrap();
    let malformed = EventMeta::default().with_traceparent("00-zz-yy-01");
    client
        .append(
            "malformed-1",
            ExpectedVersion::Any,
            vec![event(1, &malformed)],
        )
        .await
        .unwrap();
    // A traced append that succeeds, then one that is refused.
    let ok = client
        .append(
            "traced-1",
            ExpectedVersion::NoStream,
            vec![event(1, &sampled), event(2, &sampled)],
        )
        .await
        .unwrap();
    let refused = client
        .append(
            "traced-1",
            ExpectedVersion::NoStream,
            vec![event(3, &sampled)],
        )
        .await;
    assert!(refused.is_err());

    // Spans are recorded as replies are sent, in order: had the first three
    // appends made any, they would come before these.
    let got = spans(&mut rx, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    for s in &got {
        assert_eq!(s["name"], "logbook.append");
        assert_eq!(s["traceId"], trace, "the caller's trace");
        assert_eq!(s["parentSpanId"], caller, "a child of the caller's span");
        assert_eq!(s["kind"], 2, "SERVER");
        assert_eq!(s["spanId"].as_str().unwrap().len(), 16);
        assert_ne!(s["spanId"], caller);
        assert_eq!(attribute(s, "logbook.stream")["stringValue"], "traced-1");
        let start: u128 = s["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u128 = s["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(start <= end);
    }
    assert_ne!(got[0]["spanId"], got[1]["spanId"]);
    assert_eq!(
        got[0]["status"]["code"], 0,
        "success leaves the status unset"
    );
    assert_eq!(attribute(&got[0], "logbook.events")["intValue"], "2");
    assert_eq!(
        attribute(&got[0], "logbook.first_position")["intValue"],
        ok.first_position.0.to_string()
    );
    assert_eq!(attribute(&got[0], "logbook.last_version")["intValue"], "1");
    assert_eq!(got[1]["status"]["code"], 2);
    assert_eq!(
        attribute(&got[1], "error.type")["stringValue"],
        "WrongExpectedVersion"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_repository_command_is_traced_end_to_end() {
    use logbook_client::es::{Aggregate, CommandId, SerdeEvent};
    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    enum Counted {
        Added { by: i64 },
    }
    impl SerdeEvent for Counted {}
    #[derive(Default, Clone, serde::Serialize, serde::Deserialize)]
    struct Counter(i64);
    impl Aggregate for Counter {
        type Event = Counted;
        fn apply(&mut self, e: &Counted) {
            let Counted::Added { by } = e;
            self.0 += by;
        }
    }

    let (addr, mut rx) = collector().await;
    let server = TestServer::start_tuned(|_, s| {
        s.otlp_endpoint = Some(format!("http://{addr}/v1/traces").parse().unwrap());
        s.otlp_service_name = "ledger-db".into();
    })
    .await;
    let client = Client::connect(server.addr).await.unwrap();
    let repo: Repository<Counter> = Repository::new(client.clone());
    let traceparent = logbook_client::es::new_traceparent();
    let meta = EventMeta::default().with_traceparent(traceparent.clone());
    repo.execute("counter-1", CommandId::new(), meta, |_| {
        Ok::<_, std::convert::Infallible>(vec![Counted::Added { by: 2 }])
    })
    .await
    .unwrap();
    let got = spans(&mut rx, 1).await;
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(got[0]["traceId"], parts[1]);
    assert_eq!(got[0]["parentSpanId"], parts[2]);
    assert_eq!(
        attribute(&got[0], "logbook.stream")["stringValue"],
        "counter-1"
    );
    let stored = client
        .read_stream_page("counter-1", ReadStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(stored.events.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_collector_that_is_down_slows_no_append() {
    // A port nothing listens on (bound, then released).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = TestServer::start_tuned(|_, s| {
        s.otlp_endpoint = Some(format!("http://{dead}").parse().unwrap());
    })
    .await;
    let client = Client::connect(server.addr).await.unwrap();
    let meta = EventMeta::default().with_traceparent(logbook_client::es::new_traceparent());
    let mut expected = ExpectedVersion::NoStream;
    for i in 0..200 {
        let r = client
            .append("dead-collector", expected, vec![event(i, &meta)])
            .await
            .unwrap();
        assert_eq!(r.last_version, StreamVersion(i as u64));
        expected = ExpectedVersion::Exact(r.last_version);
    }
    server.stop().await;
}
