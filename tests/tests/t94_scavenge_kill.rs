//! SIGKILL during scavenges of the built `logbookd`: the daemon is killed
//! before a scavenge rewrites anything, while it rewrites each segment in
//! turn (throttled, so that a rewrite is in progress when the kill lands),
//! and restarted each time. After every restart the live events are
//! exactly those before the first scavenge, the deleted streams stay
//! deleted, and at the end `logbookd verify` passes on the store.

use std::process::Command;
use std::time::Duration;

use futures::TryStreamExt;
use logbook_client::{
    Client, ClientOptions, Deletion, Error, EventId, ExpectedVersion, NewEvent, ReadAllOptions,
    ReadStreamOptions, RecordedEvent, RetryPolicy, ScavengeOptions,
};
use logbook_tests::daemon::{Daemon, SMALL_SEGMENTS, logbookd};

const STREAMS: usize = 120;
const EVENTS: usize = 8;

/// Small segments, and an index flushed often.
fn flags() -> Vec<&'static str> {
    let mut f = SMALL_SEGMENTS.to_vec();
    f.extend(["--index-flush-entries", "256"]);
    f
}

fn stream(i: usize) -> String {
    format!("acct-{i}")
}

async fn connect(d: &Daemon) -> Client {
    Client::connect_with(
        d.addr,
        ClientOptions::default()
            .connect_timeout(Some(Duration::from_secs(5)))
            .retry(RetryPolicy::none()),
    )
    .await
    .unwrap()
}

/// The live events, without the scavenges' own reports.
async fn live(client: &Client) -> Vec<RecordedEvent> {
    client
        .read_all(ReadAllOptions::default())
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.stream.as_str() != "$scavenges")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_every_step_of_a_scavenge_loses_nothing_live() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &flags());
    let client = connect(&d).await;
    for n in 0..EVENTS {
        for s in 0..STREAMS {
            let data = format!("{{\"s\":{s},\"n\":{n},\"pad\":\"{}\"}}", "p".repeat(400));
            client
                .append(
                    stream(s),
                    ExpectedVersion::Any,
                    vec![NewEvent::new(EventId::new_v7(), "Deposited", data)],
                )
                .await
                .unwrap();
        }
    }
    for s in (0..STREAMS).step_by(2) {
        let mode = if s % 4 == 0 {
            Deletion::Soft
        } else {
            Deletion::Hard
        };
        client
            .delete_stream(stream(s), ExpectedVersion::Any, mode)
            .await
            .unwrap();
    }
    let expected = live(&client).await;
    let segments = client.stats().await.unwrap().segments;
    assert!(segments >= 6, "{segments} segments");
    drop(client);

    // Kill after k segments were rewritten, for k = 0, 1, 2, ...: each time
    // the next rewrite is in progress (or about to start).
    let mut killed_mid_run = 0;
    for k in 0..segments {
        let client = connect(&d).await;
        let scavenger = {
            let c = connect(&d).await;
            tokio::spawn(async move {
                c.scavenge(ScavengeOptions::default().max_bytes_per_sec(48 << 10))
                    .await
            })
        };
        // Wait (on the daemon's own progress figures) until k segments
        // are done in this run, or the run ends.
        let finished = loop {
            if scavenger.is_finished() {
                break true;
            }
            let s = client.stats().await.unwrap();
            if s.scavenge_todo > 0 && s.scavenge_done >= k.min(s.scavenge_todo) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        drop(client);
        let listen = d.addr.to_string();
        d.signal("KILL");
        d.wait();
        let _ = scavenger.await;
        killed_mid_run += u32::from(!finished);
        d = Daemon::start_on(dir.path(), &listen, &flags());
        let client = connect(&d).await;
        assert_eq!(live(&client).await, expected, "after the kill at step {k}");
        for s in [0usize, 1, 2, 3] {
            let r: Result<Vec<RecordedEvent>, Error> = client
                .read_stream(stream(s), ReadStreamOptions::default())
                .try_collect()
                .await;
            match (s % 4, r) {
                (0, Err(Error::StreamNotFound { .. })) => {}
                (2, Err(Error::StreamDeleted { .. })) => {}
                (_, Ok(events)) if s % 2 == 1 => assert_eq!(events.len(), EVENTS),
                (_, other) => panic!("stream {s} after step {k}: {other:?}"),
            }
        }
    }
    assert!(killed_mid_run > 0, "no kill landed during a scavenge");
    // A last scavenge runs to the end; then the store verifies.
    let client = connect(&d).await;
    let r = client.scavenge(ScavengeOptions::default()).await.unwrap();
    assert_eq!(live(&client).await, expected);
    drop(client);
    let _ = r;
    d.signal("INT");
    assert!(d.wait().success());
    let out = Command::new(logbookd())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("verify")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
}
