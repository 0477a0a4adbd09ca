//! Stream lifecycle figures, in process against the engine (see
//! BENCHMARKS.md, "Stream lifecycle"):
//!
//! - read-all events per second with 0% and 50% of the log deleted but not
//!   scavenged (what filtering costs, and what skipping saves);
//! - scavenge MB/s (bytes of the segments rewritten, read and written, per
//!   second of the whole scavenge);
//! - durable single-event append latency (p50, p99) alone, during an
//!   unthrottled scavenge, and during a throttled one;
//! - erase time of a stream spread over the whole log.
//!
//! With `--replica`, the store is a cluster node's (`keep_removed_ids`):
//! its scavenges keep the removed events' ids and seal nothing, and the
//! erase is the replicated one (the tombstone, then `finish_erasures`).
//!
//! `cargo run --release -p logbook-bench --bin lifebench -- --events 10000000`
//! (the data directory, under `--dir`, must be on the disk measured).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use logbook_protocol::lifecycle::Deletion;
use logbook_protocol::{Direction, EventId, ExpectedVersion, LogPosition, NewEvent, StreamName};
use logbook_storage::scavenge::ScavengeOptions;
use logbook_storage::{Store, StoreConfig};

#[derive(Parser, Debug)]
struct Args {
    /// Events in the store.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Streams they are spread over.
    #[arg(long, default_value_t = 100_000)]
    streams: u64,
    /// Bytes of each event's data.
    #[arg(long, default_value_t = 100)]
    data_bytes: usize,
    /// Parent of the data directory (on the disk measured).
    #[arg(long, default_value = "/work/benchdir")]
    dir: String,
    /// Throttle of the throttled scavenge, MB/s.
    #[arg(long, default_value_t = 20)]
    throttle_mb: u64,
    /// A cluster node's store (`StoreConfig::keep_removed_ids`).
    #[arg(long)]
    replica: bool,
}

fn name(s: u64) -> StreamName {
    StreamName::new(format!("acct-{s}")).unwrap_or_else(|e| panic!("{e}"))
}

/// Reads the whole log forward; returns (live events, seconds).
fn read_all(store: &Store) -> (u64, f64) {
    let started = Instant::now();
    let mut from = Some(LogPosition(0));
    let mut n = 0u64;
    while let Some(f) = from {
        let s = store
            .read_all(Some(f), Direction::Forward, 10_000)
            .unwrap_or_else(|e| panic!("{e}"));
        n += s.events.len() as u64;
        from = s.next;
    }
    (n, started.elapsed().as_secs_f64())
}

/// Durable single-event appends on one thread until `stop`; their latency.
fn appender(store: Store, stop: Arc<AtomicBool>, base: u128) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).unwrap_or_else(|e| panic!("{e}"));
    let s = StreamName::new("latency-probe").unwrap_or_else(|e| panic!("{e}"));
    let mut i = 0u128;
    while !stop.load(Ordering::Relaxed) {
        let e = NewEvent::new(EventId::from_u128(base + i), "Probe", vec![b'x'; 100]);
        let t = Instant::now();
        store
            .append_blocking(&s, ExpectedVersion::Any, vec![e])
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = h.record(t.elapsed().as_micros() as u64);
        i += 1;
    }
    h
}

/// Runs `f` while an appender measures append latency.
fn with_appender<T>(store: &Store, base: u128, f: impl FnOnce() -> T) -> (T, Histogram<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        std::thread::spawn(move || appender(store, stop, base))
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let h = t.join().unwrap_or_else(|_| panic!("appender panicked"));
    (out, h)
}

fn lat(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} us, p99 {} us, n {}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.len()
    )
}

fn main() {
    let args = Args::parse();
    let dir = format!("{}/lifebench-{}", args.dir, std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(StoreConfig {
        keep_removed_ids: args.replica,
        ..StoreConfig::new(&dir)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));

    // Fill: batches of 100 events of one stream, streams round robin, on 4
    // threads; the erased stream gets one event every 100k.
    let started = Instant::now();
    let per = args.events / 4;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            let (streams, bytes) = (args.streams, args.data_bytes);
            std::thread::spawn(move || {
                let mut id = u128::from(t) << 64;
                let mut done = 0u64;
                let mut k = t;
                while done < per {
                    let events: Vec<NewEvent> = (0..100)
                        .map(|_| {
                            id += 1;
                            NewEvent::new(EventId::from_u128(id), "Deposited", vec![b'd'; bytes])
                        })
                        .collect();
                    store
                        .append_blocking(&name(k % streams), ExpectedVersion::Any, events)
                        .unwrap_or_else(|e| panic!("{e}"));
                    done += 100;
                    k += 4;
                    if t == 0 && done.is_multiple_of(100_000) {
                        id += 1;
                        let e =
                            NewEvent::new(EventId::from_u128(id), "Personal", vec![b'p'; bytes]);
                        store
                            .append_blocking(
                                &StreamName::new("person-1").unwrap_or_else(|e| panic!("{e}")),
                                ExpectedVersion::Any,
                                vec![e],
                            )
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap_or_else(|_| panic!("filler panicked"));
    }
    let s = store.stats();
    println!(
        "filled {} events, {} segments, {:.1} MB log in {:.1} s",
        s.head,
        s.segments,
        s.log_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    // Read-all, nothing deleted (median of 3).
    let mut runs: Vec<f64> = (0..3)
        .map(|_| {
            let (n, secs) = read_all(&store);
            n as f64 / secs
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("read-all, 0% deleted: {:.0} events/s", runs[1]);

    // Appends alone.
    let (_, alone) = with_appender(&store, 1 << 100, || {
        std::thread::sleep(Duration::from_secs(3))
    });
    println!("appends alone: {}", lat(&alone));

    // Half the streams deleted, not scavenged.
    let started = Instant::now();
    for k in (0..args.streams).step_by(2) {
        rt.block_on(store.delete_stream(&name(k), ExpectedVersion::Any, Deletion::Soft))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    println!(
        "deleted {} streams in {:.1} s",
        args.streams / 2,
        started.elapsed().as_secs_f64()
    );
    let mut runs: Vec<(f64, f64)> = (0..3)
        .map(|_| {
            let (n, secs) = read_all(&store);
            (n as f64 / secs, store.head().0 as f64 / secs)
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "read-all, 50% deleted: {:.0} live events/s ({:.0} positions/s scanned)",
        runs[1].0, runs[1].1
    );

    // Scavenge, unthrottled, with appends running.
    let (report, during) = with_appender(&store, 2 << 100, || {
        store
            .scavenge(ScavengeOptions::default())
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let secs = report.duration.as_secs_f64();
    println!(
        "scavenge: {} segments, {:.1} -> {:.1} MB in {:.2} s = {:.0} MB/s read ({:.0} MB/s written); appends during: {}",
        report.segments_rewritten,
        report.bytes_before as f64 / 1e6,
        report.bytes_after as f64 / 1e6,
        secs,
        report.bytes_before as f64 / 1e6 / secs,
        report.bytes_after as f64 / 1e6 / secs,
        lat(&during)
    );

    // A quarter more deleted, scavenged throttled, with appends running.
    for k in (1..args.streams).step_by(4) {
        rt.block_on(store.delete_stream(&name(k), ExpectedVersion::Any, Deletion::Soft))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let (report, during) = with_appender(&store, 3 << 100, || {
        store
            .scavenge(ScavengeOptions {
                max_bytes_per_sec: Some(args.throttle_mb << 20),
            })
            .unwrap_or_else(|e| panic!("{e}"))
    });
    let secs = report.duration.as_secs_f64();
    println!(
        "scavenge throttled to {} MB/s: {} segments, {:.1} -> {:.1} MB in {:.2} s; appends during: {}",
        args.throttle_mb,
        report.segments_rewritten,
        report.bytes_before as f64 / 1e6,
        report.bytes_after as f64 / 1e6,
        secs,
        lat(&during)
    );

    // Erase a stream spread over the whole log.
    let person = StreamName::new("person-1").unwrap_or_else(|e| panic!("{e}"));
    let r = if args.replica {
        let started = Instant::now();
        let erase = store.submit_lifecycle_at(
            &person,
            ExpectedVersion::Any,
            logbook_storage::LifecycleChange::Erase,
            EventId::new_v7(),
            store.now_us(),
        );
        rt.block_on(async { erase.await?.await })
            .unwrap_or_else(|e| panic!("{e}"));
        store.finish_erasures().unwrap_or_else(|e| panic!("{e}"));
        let mut r = store
            .wait_erased(&person, None)
            .unwrap_or_else(|e| panic!("{e}"));
        r.duration = started.elapsed();
        r
    } else {
        store.erase(&person).unwrap_or_else(|e| panic!("{e}"))
    };
    println!(
        "erase of a stream with an event every 100k: {} segments rewritten, {} events removed, {:.2} s",
        r.segments_rewritten,
        r.events_removed,
        r.duration.as_secs_f64()
    );
    store.close().unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&dir);
}
