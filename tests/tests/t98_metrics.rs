//! The metrics listener of the real `logbookd` binary
//! (`--metrics-listen`): `/health`, `/ready`, and a `/metrics` scrape whose
//! OpenMetrics text is parsed and checked against what the client did.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use logbook_client::{
    Client, Deletion, Error, EventId, ExpectedVersion, NewEvent, ReadAllOptions, ReadStreamOptions,
    ScavengeOptions, SubscribeAllOptions, SubscriptionMessage,
};
use logbook_tests::daemon::Daemon;

/// One HTTP/1.1 request; returns the status code and the body.
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let r = logbook_tests::http::request(addr, method, path, &[("Host", "test")], b"").await;
    let (status, head, body) = (r.status, r.head.clone(), r.text());
    if method == "GET" && status == 200 && path == "/metrics" {
        assert!(
            head.contains("Content-Type: application/openmetrics-text"),
            "{head}"
        );
    }
    (status, body)
}

/// A parsed scrape: each family's type, and each sample's value by its name
/// with labels (`logbook_x_bucket{le="0.5"}`).
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
    /// Histogram buckets by family, in exposition order.
    buckets: BTreeMap<String, Vec<(f64, f64)>>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("TYPE name type");
                s.types.insert(name.to_owned(), ty.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (key, value) = line.rsplit_once(' ').expect("sample: name value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            assert!(
                key.starts_with("logbook_"),
                "every family is prefixed: {line}"
            );
            if let Some((family, labels)) = key.split_once("_bucket{le=\"") {
                let le = labels.trim_end_matches("\"}");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                s.buckets
                    .entry(family.to_owned())
                    .or_default()
                    .push((le, value));
            }
            assert!(
                s.samples.insert(key.to_owned(), value).is_none(),
                "duplicate sample {key}"
            );
        }
        s
    }

    fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in {:#?}", self.samples.keys()))
    }

    /// Checks a histogram family's shape; returns its count and sum.
    fn histogram(&self, family: &str) -> (f64, f64) {
        assert_eq!(
            self.types.get(family).map(String::as_str),
            Some("histogram")
        );
        let buckets = &self.buckets[family];
        assert!(buckets.len() >= 2, "{family}: {buckets:?}");
        for w in buckets.windows(2) {
            assert!(w[0].0 < w[1].0, "{family}: bounds ascend: {buckets:?}");
            assert!(
                w[0].1 <= w[1].1,
                "{family}: buckets are cumulative: {buckets:?}"
            );
        }
        let (last_le, last) = *buckets.last().unwrap();
        assert_eq!(last_le, f64::INFINITY, "{family} ends with +Inf");
        let count = self.get(&format!("{family}_count"));
        assert_eq!(last, count, "{family}: +Inf bucket equals the count");
        (count, self.get(&format!("{family}_sum")))
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = http(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

fn event(n: u128, data: &str) -> NewEvent {
    NewEvent::new(EventId::from_u128(n), "Happened", data.to_owned())
}

#[tokio::test]
async fn metrics_health_and_ready_of_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let m = d.metrics_addr.expect("the daemon logs its metrics address");

    assert_eq!(http(m, "GET", "/health").await, (200, "ok\n".to_owned()));
    assert_eq!(http(m, "GET", "/ready").await.0, 200);
    assert_eq!(http(m, "GET", "/nope").await.0, 404);
    assert_eq!(http(m, "DELETE", "/metrics").await.0, 405);

    // Idle: the engine's families are there, at zero.
    let s = scrape(m).await;
    assert_eq!(s.get("logbook_appends_total"), 0.0);
    assert_eq!(s.get("logbook_ready"), 1.0);
    assert_eq!(s.histogram("logbook_append_latency_seconds").0, 0.0);

    let client = Client::connect(d.addr).await.unwrap();
    // A subscriber that takes everything.
    let mut all = client
        .subscribe_all(SubscribeAllOptions::default())
        .await
        .unwrap();
    const APPENDS: u128 = 30;
    for i in 0..APPENDS {
        let stream = format!("acct-{}", i % 3);
        let batch = vec![event(2 * i + 1, "a"), event(2 * i + 2, "b")];
        client
            .append(stream.as_str(), ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    let events = 2 * APPENDS as u64;
    // One conflict.
    let refused = client
        .append("acct-0", ExpectedVersion::NoStream, vec![event(999, "x")])
        .await;
    assert!(
        matches!(refused, Err(Error::WrongExpectedVersion { .. })),
        "{refused:?}"
    );

    // Reads.
    let stream: Vec<_> = client
        .read_stream("acct-0", ReadStreamOptions::default())
        .try_collect()
        .await
        .unwrap();
    let log: Vec<_> = client
        .read_all(ReadAllOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(log.len() as u64, events);
    let read = (stream.len() + log.len()) as u64;

    // The subscriber receives every event.
    let mut seen = 0;
    while seen < events {
        if let Some(SubscriptionMessage::Event(_)) = all.try_next().await.unwrap() {
            seen += 1;
        }
    }
    // A subscriber that takes nothing: the server sends its window of 10
    // and stops, 50 events behind the head.
    let _stuck = client
        .subscribe_all(SubscribeAllOptions::default().window(10))
        .await
        .unwrap();
    let behind = events - 10;
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = scrape(m).await;
        if s.get("logbook_subscription_max_lag_events") == behind as f64 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "lag never reached {behind}: {:?}",
            s.samples
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Every family is there with the right type.
    for (family, ty) in [
        ("logbook_uptime_seconds", "gauge"),
        ("logbook_ready", "gauge"),
        ("logbook_connections", "gauge"),
        ("logbook_connections_refused", "counter"),
        ("logbook_subscriptions", "gauge"),
        ("logbook_events_read", "counter"),
        ("logbook_events_pushed", "counter"),
        ("logbook_outbox_bytes", "gauge"),
        ("logbook_outbox_peak_bytes", "gauge"),
        ("logbook_subscription_max_lag_events", "gauge"),
        ("logbook_subscription_total_lag_events", "gauge"),
        ("logbook_head_position", "gauge"),
        ("logbook_appends", "counter"),
        ("logbook_events_written", "counter"),
        ("logbook_group_commits", "counter"),
        ("logbook_fsyncs", "counter"),
        ("logbook_written_bytes", "counter"),
        ("logbook_conflicts", "counter"),
        ("logbook_streams", "gauge"),
        ("logbook_segments", "gauge"),
        ("logbook_log_bytes", "gauge"),
        ("logbook_index_bytes", "gauge"),
        ("logbook_index_tables", "gauge"),
        ("logbook_memtable_entries", "gauge"),
        ("logbook_index_flushes", "counter"),
        ("logbook_index_merges", "counter"),
        ("logbook_lifecycle_streams", "gauge"),
        ("logbook_deleted_streams", "gauge"),
        ("logbook_erasures_owed", "gauge"),
        ("logbook_scavenges", "counter"),
        ("logbook_scavenge_segments", "counter"),
        ("logbook_scavenge_bytes_reclaimed", "counter"),
        ("logbook_scavenge_segments_todo", "gauge"),
        ("logbook_scavenge_segments_done", "gauge"),
        ("logbook_writer_failed", "gauge"),
        ("logbook_append_latency_seconds", "histogram"),
        ("logbook_fsync_latency_seconds", "histogram"),
        ("logbook_group_commit_appends", "histogram"),
    ] {
        assert_eq!(
            s.types.get(family).map(String::as_str),
            Some(ty),
            "family {family}"
        );
    }

    // The values match what the client did.
    assert!(s.get("logbook_uptime_seconds") > 0.0);
    assert_eq!(s.get("logbook_ready"), 1.0);
    assert_eq!(s.get("logbook_writer_failed"), 0.0);
    assert_eq!(s.get("logbook_lifecycle_streams"), 0.0);
    assert_eq!(s.get("logbook_deleted_streams"), 0.0);
    assert_eq!(s.get("logbook_erasures_owed"), 0.0);
    assert_eq!(s.get("logbook_scavenges_total"), 0.0);
    assert_eq!(s.get("logbook_scavenge_segments_total"), 0.0);
    assert_eq!(s.get("logbook_scavenge_bytes_reclaimed_total"), 0.0);
    assert_eq!(s.get("logbook_scavenge_segments_todo"), 0.0);
    assert_eq!(s.get("logbook_scavenge_segments_done"), 0.0);
    assert!(s.get("logbook_connections") >= 1.0);
    assert_eq!(s.get("logbook_subscriptions"), 2.0);
    assert_eq!(s.get("logbook_appends_total"), APPENDS as f64);
    assert_eq!(s.get("logbook_conflicts_total"), 1.0);
    assert_eq!(s.get("logbook_events_written_total"), events as f64);
    assert_eq!(s.get("logbook_head_position"), events as f64);
    assert!(s.get("logbook_written_bytes_total") > 0.0);
    assert_eq!(s.get("logbook_segments"), 1.0);
    assert_eq!(s.get("logbook_streams"), 3.0);
    assert!(s.get("logbook_log_bytes") > 0.0);
    assert_eq!(s.get("logbook_events_read_total"), read as f64);
    // Everything to the first subscriber, a window to the second.
    assert_eq!(s.get("logbook_events_pushed_total"), (events + 10) as f64);
    assert_eq!(
        s.get("logbook_subscription_total_lag_events"),
        behind as f64
    );

    // Histograms: every reply timed, every fsync timed, every group sized.
    let (count, sum) = s.histogram("logbook_append_latency_seconds");
    assert_eq!(count, APPENDS as f64 + 1.0, "appends and the conflict");
    assert!(sum > 0.0);
    let fsyncs = s.get("logbook_fsyncs_total");
    assert!(fsyncs > 0.0);
    let (count, sum) = s.histogram("logbook_fsync_latency_seconds");
    assert_eq!(count, fsyncs);
    assert!(sum > 0.0);
    let (count, sum) = s.histogram("logbook_group_commit_appends");
    assert_eq!(count, s.get("logbook_group_commits_total"));
    assert!(
        (APPENDS as f64..=APPENDS as f64 + 1.0).contains(&sum),
        "{sum}"
    );

    // A scavenge after a delete: its counters and progress move.
    client
        .delete_stream("acct-0", ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    let report = client.scavenge(ScavengeOptions::default()).await.unwrap();
    assert!(report.segments_rewritten >= 1, "{report:?}");
    let s = scrape(m).await;
    assert_eq!(s.get("logbook_scavenges_total"), 1.0);
    assert_eq!(
        s.get("logbook_scavenge_segments_total"),
        report.segments_rewritten as f64
    );
    assert_eq!(
        s.get("logbook_scavenge_bytes_reclaimed_total"),
        report.bytes_reclaimed() as f64
    );
    assert_eq!(
        s.get("logbook_scavenge_segments_todo"),
        report.segments_considered as f64
    );
    assert_eq!(
        s.get("logbook_scavenge_segments_done"),
        report.segments_considered as f64
    );

    drop(all);
    drop(client);
    let mut d = d;
    d.signal("TERM");
    assert!(d.wait().success(), "{}", d.log_text());
}

/// Each consumer group's figures, labelled by group: floor, lag, in
/// flight, consumers, parked, and the counters.
#[tokio::test]
async fn consumer_groups_have_their_own_figures() {
    use logbook_client::{GroupSettings, GroupSource, GroupStart, NackAction};
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let m = d.metrics_addr.expect("the daemon logs its metrics address");
    let client = Client::connect(d.addr).await.unwrap();
    for i in 0..4u128 {
        client
            .append("job-1", ExpectedVersion::Any, vec![event(i + 1, "x")])
            .await
            .unwrap();
    }
    client
        .create_group(
            "billing",
            GroupSource::All { filter: None },
            GroupStart::Start,
            GroupSettings::default(),
        )
        .await
        .unwrap();
    let mut c = client.join_group("billing", 10).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(c.next().await.unwrap().unwrap().id);
    }
    c.ack(&ids[..2]).unwrap();
    c.nack(
        &ids[2..3],
        NackAction::Park {
            reason: "bad".into(),
        },
    )
    .unwrap();
    // Behind the settles on the same connection: they have been read.
    client.ping().await.unwrap();
    // The park is written by the group's task: wait for it in the figures
    // (the scrape itself is the synchronisation, bounded).
    let mut s = scrape(m).await;
    for _ in 0..1000 {
        if s.get("logbook_group_parked_events_total{group=\"billing\"}") == 1.0 {
            break;
        }
        tokio::task::yield_now().await;
        s = scrape(m).await;
    }
    let g = |name: &str| s.get(&format!("logbook_{name}{{group=\"billing\"}}"));
    assert_eq!(
        s.types.get("logbook_group_floor").map(String::as_str),
        Some("gauge")
    );
    assert_eq!(
        s.types.get("logbook_group_acked").map(String::as_str),
        Some("counter")
    );
    assert_eq!(g("group_parked"), 1.0);
    assert_eq!(g("group_in_flight"), 1.0);
    assert_eq!(g("group_consumers"), 1.0);
    assert_eq!(g("group_acked_total"), 2.0);
    assert_eq!(g("group_delivered_total"), 4.0);
    assert_eq!(g("group_parked_events_total"), 1.0);
    // The floor waits on the event still in flight (the fourth).
    assert_eq!(g("group_floor"), 3.0);
    // Lag counts log positions up to the head, the group's own system
    // events (its definition, checkpoint, parked record) included.
    assert!(g("group_lag_events") >= 1.0);
}
