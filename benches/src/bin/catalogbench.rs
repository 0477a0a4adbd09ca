//! Stream catalog figures, in process against the engine (see
//! BENCHMARKS.md, "Stream catalog"): for stores of N streams (one event
//! each, filled without fsync: the figures are of listing), after a clean
//! restart (every name in index tables):
//!
//! - a page of 1,000 streams from the start and from the middle (median of
//!   several), and a page of 100 with a prefix matching 1%;
//! - a walk of the whole catalog in pages of 1,000 (streams/s);
//! - what the names cost on disk (index bytes per stream) and at start-up.
//!
//! `cargo run --release -p logbook-bench --bin catalogbench -- --streams 10000,100000,1000000`

use std::time::Instant;

use clap::Parser;
use logbook_protocol::{EventId, ExpectedVersion, NewEvent, StreamName};
use logbook_storage::{Durability, Store, StoreConfig};

#[derive(Parser, Debug)]
struct Args {
    /// Store sizes, in streams.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    streams: Vec<u64>,
    /// Parent of the data directories (on the disk measured).
    #[arg(long, default_value = "/work/benchdir")]
    dir: String,
}

fn name(i: u64) -> String {
    // Spread the names: 100 prefixes (`tenant-NN/`), each a 1% slice.
    format!("tenant-{:02}/account-{i:09}", i % 100)
}

fn config(dir: &str) -> StoreConfig {
    StoreConfig {
        durability: Durability::Os,
        ..StoreConfig::new(dir)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let args = Args::parse();
    println!(
        "{:>9}  {:>10}  {:>10}  {:>11}  {:>13}  {:>12}  {:>10}",
        "streams",
        "page0 ms",
        "pagemid ms",
        "prefix1% ms",
        "walk stream/s",
        "idx B/stream",
        "reopen ms"
    );
    for &n in &args.streams {
        let dir = format!("{}/catalogbench-{}-{n}", args.dir, std::process::id());
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(config(&dir)).unwrap_or_else(|e| panic!("{e}"));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut i = t;
                    while i < n {
                        let s = StreamName::new(name(i)).unwrap_or_else(|e| panic!("{e}"));
                        let e = NewEvent::new(EventId::new_v7(), "Opened", vec![b'd'; 50]);
                        store
                            .append_blocking(&s, ExpectedVersion::NoStream, vec![e])
                            .unwrap_or_else(|e| panic!("{e}"));
                        i += 4;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_else(|_| panic!("filler panicked"));
        }
        store.close().unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let store = Store::open(config(&dir)).unwrap_or_else(|e| panic!("{e}"));
        let reopen = started.elapsed().as_secs_f64() * 1e3;
        let stats = store.stats();
        assert_eq!(stats.streams, n);
        let page = |prefix: &str, after: Option<&str>, limit: usize| {
            let t = Instant::now();
            let p = store
                .list_streams(prefix, after, limit, usize::MAX)
                .unwrap_or_else(|e| panic!("{e}"));
            (t.elapsed().as_secs_f64() * 1e3, p)
        };
        let page0 = median((0..7).map(|_| page("", None, 1000).0).collect());
        let mid = name(n / 2);
        let pagemid = median((0..7).map(|_| page("", Some(&mid), 1000).0).collect());
        let prefix = median((0..7).map(|_| page("tenant-42/", None, 100).0).collect());
        let started = Instant::now();
        let mut after: Option<String> = None;
        let mut listed = 0u64;
        loop {
            let (_, p) = page("", after.as_deref(), 1000);
            listed += p.streams.len() as u64;
            match p.next {
                Some(x) => after = Some(x),
                None => break,
            }
        }
        assert_eq!(listed, n);
        let walk = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "{n:>9}  {page0:>10.2}  {pagemid:>10.2}  {prefix:>11.2}  {walk:>13.0}  {:>12.1}  {reopen:>10.1}",
            stats.index_bytes as f64 / n as f64,
        );
        store.close().unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
