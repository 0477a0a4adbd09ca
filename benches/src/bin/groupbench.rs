//! Consumer group throughput (see BENCHMARKS.md, "Consumer groups"): a
//! store of `--events` events over `--streams` streams (filled without
//! fsync), served in process; a group created from the start, then
//! `--consumers` consumers (each its own connection, window `--window`)
//! take and acknowledge every event, one ack per event as it arrives.
//! Reported: events acknowledged per second from the first join to the
//! last ack, for round-robin and per-stream, median of `--runs`.
//!
//! `cargo run --release -p logbook-bench --bin groupbench -- --consumers 1,8`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::Parser;
use logbook_client::{Client, GroupSettings, GroupSource, GroupStart, GroupStrategy};
use logbook_protocol::{EventId, ExpectedVersion, NewEvent, StreamName};
use logbook_server::net::{self, ServerConfig};
use logbook_storage::{Durability, Store, StoreConfig};

#[derive(Parser, Debug)]
struct Args {
    /// Streams the events are spread over.
    #[arg(long, default_value_t = 10_000)]
    streams: u64,
    /// Events in the store.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Consumer counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    consumers: Vec<usize>,
    /// Each consumer's window.
    #[arg(long, default_value_t = 100)]
    window: u32,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Parent of the data directory (on the disk measured).
    #[arg(long, default_value = "/work/benchdir")]
    dir: String,
    /// Then park this many events (records written straight to the parked
    /// list) and replay them to 8 consumers: replay rate and the process's
    /// resident memory before and at its peak during the replay.
    #[arg(long, default_value_t = 0)]
    parked: u64,
}

/// The process's resident memory now, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn replay_parked(store: &Store, addr: std::net::SocketAddr, parked: u64, events: u64) {
    let admin = Client::connect(addr).await.expect("connect");
    admin
        .create_group(
            "replay",
            GroupSource::All { filter: None },
            GroupStart::End,
            GroupSettings::default(),
        )
        .await
        .expect("create");
    let stream = StreamName::new("$group:replay:parked").expect("name");
    let t = Instant::now();
    for batch in 0..parked.div_ceil(1000) {
        let n = (parked - batch * 1000).min(1000);
        let records: Vec<NewEvent> = (0..n)
            .map(|i| {
                let p = (batch * 1000 + i) % events;
                let json = format!(
                    r#"{{"seq":{p},"position":{p},"stream":"acct-{}","version":0,"reason":"bench","deliveries":10}}"#,
                    p % 10_000
                );
                NewEvent::new(EventId::new_v7(), "$parked", json.into_bytes())
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, records)
            .await
            .expect("park");
    }
    eprintln!("parked {parked} in {:.1} s", t.elapsed().as_secs_f64());
    let before = rss_kib();
    let peak = Arc::new(AtomicU64::new(before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
    };
    admin.replay_parked("replay", None).await.expect("replay");
    let rate = consume(addr, "replay", 8, 100, parked).await;
    sampler.abort();
    println!(
        "replayed {parked} parked events to 8 consumers: {rate:.0}/s; resident memory {} MiB before, peak {} MiB during",
        before / 1024,
        peak.load(Ordering::Relaxed) / 1024
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn fill(store: &Store, streams: u64, events: u64) {
    let per = events / streams;
    let mut id = 0u128;
    for v in 0..per {
        for s in 0..streams {
            id += 1;
            let stream = StreamName::new(format!("acct-{s}")).expect("name");
            let _ = v;
            store
                .append_blocking(
                    &stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new(
                        EventId::from_u128(id),
                        "Deposited",
                        vec![b'x'; 64],
                    )],
                )
                .expect("append");
        }
    }
}

async fn consume(
    addr: std::net::SocketAddr,
    group: &str,
    consumers: usize,
    window: u32,
    total: u64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let tx = Arc::new(tx);
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (done, tx, mut rx) = (Arc::clone(&done), Arc::clone(&tx), rx.clone());
        let group = group.to_owned();
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(addr).await.expect("connect");
            let mut c = client.join_group(&group, window).await.expect("join");
            loop {
                let d = tokio::select! {
                    d = c.next() => d.expect("open").expect("delivery"),
                    _ = rx.wait_for(|d| *d) => return,
                };
                c.ack(&[d.id]).expect("ack");
                if done.fetch_add(1, Ordering::Relaxed) + 1 == total {
                    tx.send_replace(true);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("consumer");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = format!("{}/groupbench-{}", args.dir, std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    let config = StoreConfig {
        durability: Durability::Os,
        ..StoreConfig::new(&dir)
    };
    let store = Store::open(config).expect("open");
    let t = Instant::now();
    fill(&store, args.streams, args.events);
    let total = args.events / args.streams * args.streams;
    eprintln!(
        "filled {total} events over {} streams in {:.1} s",
        args.streams,
        t.elapsed().as_secs_f64()
    );
    println!(
        "{:>9}  {:>11}  {:>14}  {:>14}",
        "consumers", "window", "round-robin/s", "per-stream/s"
    );
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(net::run(
            listener,
            store.clone(),
            ServerConfig::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let admin = Client::connect(addr).await.expect("connect");
        let mut n = 0;
        for &consumers in &args.consumers {
            let mut row = Vec::new();
            for strategy in [GroupStrategy::RoundRobin, GroupStrategy::PerStream] {
                let mut rates = Vec::new();
                for _ in 0..args.runs {
                    n += 1;
                    let group = format!("bench-{n}");
                    let settings = GroupSettings {
                        strategy,
                        max_in_flight: (args.window as usize * consumers).min(100_000) as u32,
                        ..GroupSettings::default()
                    };
                    admin
                        .create_group(
                            &group,
                            GroupSource::All { filter: None },
                            GroupStart::Start,
                            settings,
                        )
                        .await
                        .expect("create");
                    rates.push(consume(addr, &group, consumers, args.window, total).await);
                    admin.delete_group(&group).await.expect("delete");
                }
                row.push(median(rates));
            }
            println!(
                "{:>9}  {:>11}  {:>14.0}  {:>14.0}",
                consumers, args.window, row[0], row[1]
            );
        }
        if args.parked > 0 {
            replay_parked(&store, addr, args.parked, total).await;
        }
        let _ = stop.send(());
        let _ = server.await;
    });
    let _ = store.close();
    let _ = std::fs::remove_dir_all(&dir);
}
