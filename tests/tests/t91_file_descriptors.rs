//! The daemon under a low open-file limit: a store of thousands of small
//! segments (and hundreds of index files) opens, is read across every file,
//! rolls over, and restarts, with 128 descriptors in all. Before the
//! store's budget of open files, every segment and table stayed open: such
//! a store failed to open, and a roll-over that met the limit failed the
//! writer until restart.

use futures::TryStreamExt;
use logbook_client::{
    Client, Direction, EventId, ExpectedVersion, LogPosition, NewEvent, ReadAllOptions,
    ReadStreamOptions, RecordedEvent,
};
use logbook_tests::daemon::Daemon;

const NOFILE: u64 = 128;
/// Segments of 4 KiB holding a few 500-byte events each (two batches of up
/// to 3); an index table at
/// every seal and every 40 entries; at most 24 files open for reading.
const FLAGS: &[&str] = &[
    "--segment-bytes",
    "4KiB",
    "--max-append-bytes",
    "2KiB",
    "--max-event-bytes",
    "1KiB",
    "--max-events-per-append",
    "4",
    "--index-flush-entries",
    "40",
    "--durability",
    "os",
    "--max-connections",
    "16",
    "--max-open-files",
    "24",
];
const STREAMS: u64 = 8;

fn event(n: u64) -> NewEvent {
    // 500 bytes, saying which event it is.
    let data = format!("{n:>12}").repeat(42);
    NewEvent::new(EventId::from_u128(u128::from(n) + 1), "E", data)
}

fn number(e: &RecordedEvent) -> u64 {
    String::from_utf8_lossy(&e.data[..12])
        .trim()
        .parse()
        .unwrap()
}

/// Appends events `from..to`, event n to stream `s-{n % STREAMS}`, from
/// `STREAMS` tasks (one per stream, so each stream's order is n's order),
/// in batches of up to 3 events.
async fn append(client: &Client, from: u64, to: u64) {
    let tasks: Vec<_> = (0..STREAMS)
        .map(|s| {
            let client = client.clone();
            tokio::spawn(async move {
                let mine: Vec<u64> = (from..to).filter(|n| n % STREAMS == s).collect();
                for batch in mine.chunks(3) {
                    let events = batch.iter().map(|&n| event(n)).collect();
                    client
                        .append(format!("s-{s}"), ExpectedVersion::Any, events)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Reads everything back: the whole log forward and backward, and every
/// stream forward and backward, and checks each against the events
/// `0..count` appended so far.
async fn check_everything(client: &Client, count: u64) {
    let forward: Vec<RecordedEvent> = client
        .read_all(
            ReadAllOptions::default()
                .from(LogPosition(0))
                .page_size(100),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(forward.len() as u64, count);
    let mut seen: Vec<u64> = forward.iter().map(number).collect();
    seen.sort_unstable();
    assert!(seen.iter().copied().eq(0..count), "every event once");
    let backward: Vec<RecordedEvent> = client
        .read_all(
            ReadAllOptions::default()
                .direction(Direction::Backward)
                .page_size(100),
        )
        .try_collect()
        .await
        .unwrap();
    assert!(backward.iter().rev().eq(forward.iter()));
    for s in 0..STREAMS {
        let expected: Vec<u64> = (0..count).filter(|n| n % STREAMS == s).collect();
        let events: Vec<RecordedEvent> = client
            .read_stream(format!("s-{s}"), ReadStreamOptions::default().page_size(50))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(events.iter().map(number).collect::<Vec<_>>(), expected);
        let back: Vec<RecordedEvent> = client
            .read_stream(
                format!("s-{s}"),
                ReadStreamOptions::default()
                    .direction(Direction::Backward)
                    .page_size(7),
            )
            .try_collect()
            .await
            .unwrap();
        assert!(back.iter().rev().eq(events.iter()));
    }
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("log")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_segments_under_128_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with_fd_limit(dir.path(), NOFILE, FLAGS);
    let client = Client::connect(d.addr).await.unwrap();
    // About 6 events a segment: 2,000 segments, written under the limit
    // (every roll-over opens a file while hundreds are already sealed).
    let first = 12_000;
    append(&client, 0, first).await;
    let n = segments(dir.path());
    assert!(n >= 1_900, "{n} segments");
    check_everything(&client, first).await;
    drop(client);
    d.kill();

    // A restart opens every segment and table under the same limit, and
    // replays the unflushed tail.
    let d = Daemon::start_with_fd_limit(dir.path(), NOFILE, FLAGS);
    assert!(d.log_text().contains("open file limit"), "{}", d.log_text());
    let client = Client::connect(d.addr).await.unwrap();
    check_everything(&client, first).await;
    // More roll-overs after the restart, then everything again.
    append(&client, first, first + 700).await;
    check_everything(&client, first + 700).await;
    drop(client);
    let mut d = d;
    d.signal("TERM");
    assert!(d.wait().success(), "{}", d.log_text());
    // `logbookd verify` checks every file of the stopped store under the
    // same limit.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(logbook_tests::daemon::logbookd())
        .arg("verify")
        .arg("--data-dir")
        .arg(dir.path())
        // The flags verify takes (the store's limits: the first four) and
        // the budget.
        .args(&FLAGS[..8])
        .args(["--max-open-files", "24"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
