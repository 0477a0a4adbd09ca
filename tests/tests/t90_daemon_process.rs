//! The built `logbookd` binary as a subprocess: serve, SIGTERM, restart,
//! SIGKILL, the directory lock, `verify`, and `--help`.

use std::process::Command;

use logbook_protocol::{
    Append, Direction, EventId, ExpectedVersion, NewEvent, ReadAll, RecordedEvent, Request,
    Response, ServerMessage, Text,
};
use logbook_tests::RawConn;
use logbook_tests::daemon::{Daemon, logbookd};

async fn append(c: &mut RawConn, stream: &str, n: u128) {
    let (_, m) = c
        .call(&Request::Append(Append {
            stream: Text::from(stream),
            expected: ExpectedVersion::Any,
            events: vec![NewEvent::new(
                EventId::from_u128(n),
                "E",
                format!("event {n}"),
            )],
        }))
        .await;
    assert!(
        matches!(m, ServerMessage::Response(Response::AppendOk(_))),
        "{m:?}"
    );
}

async fn all(c: &mut RawConn) -> Vec<RecordedEvent> {
    let (_, m) = c
        .call(&Request::ReadAll(ReadAll {
            from: None,
            direction: Direction::Forward,
            max_count: 10_000,
            min_position: None,
        }))
        .await;
    let ServerMessage::Response(Response::ReadAllOk(a)) = m else {
        panic!("{m:?}")
    };
    a.events
}

async fn connect(d: &Daemon) -> RawConn {
    let mut c = RawConn::connect(d.addr).await;
    c.hello().await;
    c
}

#[tokio::test]
async fn serve_sigterm_restart_sigkill_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let mut c = connect(&d).await;
    for i in 1..=50 {
        append(&mut c, &format!("s-{}", i % 4), i).await;
    }
    assert_eq!(all(&mut c).await.len(), 50);

    // SIGTERM: a clean stop, exit code 0.
    d.signal("TERM");
    let status = d.wait();
    assert!(status.success(), "exit {status:?}; log:\n{}", d.log_text());
    assert!(d.log_text().contains("stopped cleanly"));

    // Restart: everything is there, and a clean stop left nothing to replay.
    let d = Daemon::start(dir.path(), &[]);
    assert!(d.log_text().contains("replayed=0"), "{}", d.log_text());
    let mut c = connect(&d).await;
    let events = all(&mut c).await;
    assert_eq!(events.len(), 50);
    assert_eq!(events[49].data, "event 50");
    for i in 51..=80 {
        append(&mut c, "after", i).await;
    }
    // SIGKILL: no clean stop; acknowledged events survive anyway.
    d.kill();

    // The directory lock: while one daemon runs, a second fails at once.
    let mut d = Daemon::start(dir.path(), &[]);
    let second = Command::new(logbookd())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("locked by another process"));

    let mut c = connect(&d).await;
    let events = all(&mut c).await;
    assert_eq!(events.len(), 80);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.position.0 == i as u64)
    );
    d.signal("INT");
    assert!(d.wait().success());

    // Offline verify of the stopped store.
    let out = Command::new(logbookd())
        .arg("--data-dir")
        .arg(dir.path())
        .arg("verify")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("80 events"), "{text}");
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(logbookd()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--segment-bytes",
        "--max-connections",
        "--max-in-flight",
        "--max-frame-bytes",
        "--durability",
        "LOGBOOK_DATA_DIR",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

/// `logbookd verify` over a store whose sealed segment has a flipped byte:
/// exit code 1, the file and offset of the damaged record on stdout, and
/// one progress line per segment on stderr (not a terminal here).
#[tokio::test]
async fn verify_names_the_damaged_record_and_shows_progress() {
    let dir = tempfile::tempdir().unwrap();
    let mut small = logbook_tests::daemon::SMALL_SEGMENTS.to_vec();
    small.extend(["--durability", "os"]);
    let mut d = Daemon::start(dir.path(), &small);
    let client = logbook_client::Client::connect(d.addr).await.unwrap();
    for i in 0..100u128 {
        let e = NewEvent::new(EventId::from_u128(i + 1), "E", "x".repeat(2000));
        client
            .append(
                format!("s-{}", i % 5).as_str(),
                ExpectedVersion::Any,
                vec![e],
            )
            .await
            .unwrap();
    }
    drop(client);
    d.signal("TERM");
    assert!(d.wait().success(), "{}", d.log_text());

    let verify = || {
        Command::new(logbookd())
            .arg("--data-dir")
            .arg(dir.path())
            .args(&small[..6])
            .arg("verify")
            .output()
            .unwrap()
    };
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "{segments:?}");

    // Healthy first: one progress line per segment.
    let out = verify();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("100 events"), "{stdout}");
    for (i, seg) in segments.iter().enumerate() {
        let line = format!(
            "verify: segment {}/{} {}:",
            i + 1,
            segments.len(),
            seg.display()
        );
        assert!(stderr.contains(&line), "{line:?} in\n{stderr}");
    }

    // Flip a byte inside the first record of the first (sealed) segment.
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let record = logbook_storage::internals::SEGMENT_HEADER_LEN;
    bytes[record as usize + 40] ^= 0x55;
    std::fs::write(first, &bytes).unwrap();

    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let located = format!("PROBLEM {} at offset {record}: ", first.display());
    assert!(stdout.contains(&located), "{located:?} in\n{stdout}");
    assert!(stdout.contains("problem(s) found"), "{stdout}");
    assert!(
        stderr.contains(&format!("verify: segment 1/{} ", segments.len())),
        "{stderr}"
    );
}
