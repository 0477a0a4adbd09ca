//! The workloads of `loadgen`, the network load generator (binary:
//! `src/bin/loadgen.rs`; how to run it: `benches/README.md`, "loadgen").
//!
//! `loadgen` drives a running `logbookd` over TCP through
//! [`logbook_client`], one [`Client`] (one TCP connection) per simulated
//! client, each driven by its own tokio task unless a workload says
//! otherwise. Events are [`EventFactory`](crate::events::EventFactory)
//! events: type `MoneyDeposited`, `--payload` bytes of data (200 by
//! default), unique ids.
//!
//! ## Workloads
//!
//! - **W1** ([`append`]): one client, single-event appends, one at a time,
//!   to its own stream (`ExpectedVersion::Any`). Latency p50/p99/p999: each
//!   append waits for its own `fdatasync`, so p50 is compared with the
//!   disk's `fdatasync` p50 (`--fsync-probe-dir`).
//! - **W2** ([`append`]): 64, then 512 clients (two rows), each appending
//!   single events to its own stream: how well group commit shares syncs.
//! - **W3** ([`append`]): 8 clients appending batches of 100 events, each to
//!   its own stream: bandwidth.
//! - **W4** ([`read`]), two rows. `stream_10k`: one client reads the
//!   10,000-event stream `loadgen-w4-stream-10k` in full, again and again
//!   (`read_stream`, page size 10,000); ms per full read. `random_short`:
//!   16 tasks on 4 clients each read a random one of the 10,000
//!   ten-event streams `loadgen-w4-short-<i>` in full; reads/s. Both data
//!   sets are created on first use and reused by later runs.
//! - **W5** ([`read`]): makes sure the global log holds at least 1,000,000
//!   events (appending batches of 1,000 if not, and reporting how long that
//!   took), then reads its first 1,000,000 events from position 0 with `read_all` (page
//!   size 10,000, the server's default maximum) as many times as the
//!   duration allows (at least once); median events/s over the passes.
//! - **W6** ([`race`]): 16 clients race on one fresh stream. Each round all
//!   16 append one event with the same expected version (`NoStream` first,
//!   then `Exact` of the round's winner); exactly one must win and the 15
//!   others must get `WrongExpectedVersion` naming the winner's version. A
//!   round that breaks this fails the run (non-zero exit).
//!
//! - **S1, S2, S3** ([`subscribe`]): catch-up subscriptions: S1 catch-up
//!   throughput from the start of the (W5) log; S2 live delivery latency,
//!   from an append's acknowledgement to the subscriber's receipt; S3 the
//!   W2 writer with 0, 10 and 100 live subscribers.
//!
//! ## Timing
//!
//! Every timed workload first runs for `warmup`, then for `duration`
//! (a [`Window`]). An operation counts when it *completes* inside the
//! window; its latency is recorded then (an HDR histogram per task, merged
//! at the end). Tasks stop starting operations at the end of the window,
//! so throughput is operations completed in the window / window length.
//! W5 times whole passes instead (see above).
//!
//! ## Checks
//!
//! Errors are never retried (the clients use `RetryPolicy::none()`): any
//! failed call ends the workload with an [`Error`] naming the call. Reads
//! check what they got: the right number of events, versions or positions
//! dense from the start.

pub mod append;
pub mod race;
pub mod read;
pub mod report;
pub mod subscribe;

use std::time::{Duration, Instant};

use logbook_client::{Client, ClientOptions, RetryPolicy};

use crate::loadgen::report::Row;

/// What every workload needs to know: the command line, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The server's address (`host:port`).
    pub server: String,
    /// Measured time of each workload (each W2 and W4 row gets it whole).
    pub duration: Duration,
    /// Unmeasured time before each measurement.
    pub warmup: Duration,
    /// Payload bytes per event.
    pub payload: usize,
    /// Overrides every workload's number of clients (W4 `random_short`:
    /// of reader tasks; ignored by W4 `stream_10k` and W5, which read with
    /// one client).
    pub clients: Option<usize>,
    /// Overrides the events per append of W1, W2 and W3.
    pub batch: Option<usize>,
    /// W4 `random_short`: how many ten-event streams to read from.
    pub short_streams: u64,
    /// W5: events the global log must hold before it is read.
    pub log_events: u64,
    /// W1-W3: append to one of this many streams at random (created
    /// first) instead of each client to its own.
    pub streams: Option<u64>,
    /// S3: connections the subscribers share (`None`: one each).
    pub sub_connections: Option<usize>,
    /// S1: a filter that passes every event (`prefix` or `regex`), to
    /// measure the cost of filtering.
    pub s1_filter: Option<String>,
    /// Distinguishes the streams of this run from earlier runs' (W1-W3
    /// write to fresh streams, W6 needs a fresh one).
    pub run_id: u64,
}

/// One workload of the issue; [`Workload::run`] runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// One client, single-event appends.
    W1,
    /// 64 and 512 clients, single-event appends.
    W2,
    /// 8 clients, batches of 100.
    W3,
    /// A 10,000-event stream read in full; random short-stream reads.
    W4,
    /// The global log from position 0 over 1,000,000 events.
    W5,
    /// 16 clients racing on one stream with the same expected version.
    W6,
    /// Catch-up subscription throughput from the start of the log.
    S1,
    /// Live delivery latency, acknowledgement to receipt.
    S2,
    /// The writer with 0, 10 and 100 live subscribers.
    S3,
}

impl Workload {
    /// Every workload, in the order `all` runs them.
    pub const ALL: [Workload; 9] = [
        Workload::W1,
        Workload::W2,
        Workload::W3,
        Workload::W4,
        Workload::W5,
        Workload::W6,
        Workload::S1,
        Workload::S2,
        Workload::S3,
    ];

    /// The name in the JSON lines and on the command line: `w1` ... `w6`.
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "w1",
            Workload::W2 => "w2",
            Workload::W3 => "w3",
            Workload::W4 => "w4",
            Workload::W5 => "w5",
            Workload::W6 => "w6",
            Workload::S1 => "s1",
            Workload::S2 => "s2",
            Workload::S3 => "s3",
        }
    }

    /// Runs the workload against `settings.server`; one [`Row`] per
    /// measurement (two for W2 unless `--clients` is given, two for W4).
    pub async fn run(self, settings: &Settings) -> Result<Vec<Row>> {
        use append::AppendLoad;
        let batch = settings.batch.unwrap_or(1);
        match self {
            Workload::W1 => {
                let load = AppendLoad::new("w1", settings.clients.unwrap_or(1), batch);
                Ok(vec![append::run(settings, load).await?])
            }
            Workload::W2 => {
                let counts = match settings.clients {
                    Some(n) => vec![n],
                    None => vec![64, 512],
                };
                let mut rows = Vec::new();
                for clients in counts {
                    let load = AppendLoad::new("w2", clients, batch);
                    rows.push(append::run(settings, load).await?);
                }
                Ok(rows)
            }
            Workload::W3 => {
                let load = AppendLoad::new(
                    "w3",
                    settings.clients.unwrap_or(8),
                    settings.batch.unwrap_or(100),
                );
                Ok(vec![append::run(settings, load).await?])
            }
            Workload::W4 => Ok(vec![
                read::stream_10k(settings).await?,
                read::random_short(settings).await?,
            ]),
            Workload::W5 => Ok(vec![read::read_log(settings).await?]),
            Workload::W6 => Ok(vec![race::run(settings).await?]),
            Workload::S1 => Ok(vec![subscribe::catch_up(settings).await?]),
            Workload::S2 => Ok(vec![subscribe::live_latency(settings).await?]),
            Workload::S3 => subscribe::writer_with_subscribers(settings).await,
        }
    }
}

/// Why a workload stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client call failed.
    #[error("{during}: {source}")]
    Client {
        /// The call, with its arguments.
        during: String,
        /// What the client reported.
        #[source]
        source: logbook_client::Error,
    },
    /// The server answered, but not what it should have (a race round with
    /// two winners, a read with missing events, ...).
    #[error("check failed: {0}")]
    Check(String),
    /// A workload task panicked or was cancelled.
    #[error("a workload task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Result of the workload functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the failed call to a client error.
pub(crate) trait During<T> {
    /// `Err(e)` becomes [`Error::Client`] with `what()` as the call.
    fn during(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> During<T> for logbook_client::Result<T> {
    fn during(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Client {
            during: what(),
            source,
        })
    }
}

/// Options of every `loadgen` client: named after the workload, and no
/// retries (a failure must show, not be papered over).
pub fn client_options(label: &str) -> ClientOptions {
    ClientOptions::default()
        .client_name(format!("loadgen/{label}"))
        .retry(RetryPolicy::none())
}

/// Opens `n` clients (`n` TCP connections), concurrently.
pub async fn connect(settings: &Settings, label: &str, n: usize) -> Result<Vec<Client>> {
    let attempts = (0..n.max(1)).map(|_| {
        let options = client_options(label);
        async move { Client::connect_with(settings.server.as_str(), options).await }
    });
    futures::future::try_join_all(attempts)
        .await
        .during(|| format!("connecting {n} clients to {}", settings.server))
}

/// The measured time of a workload: `warmup` from now, `duration` long.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Measurement starts (the warm-up ends).
    pub start: Instant,
    /// Measurement ends; no operation starts after it.
    pub end: Instant,
}

impl Window {
    /// The window of `settings`, starting its warm-up now.
    pub fn after_warmup(settings: &Settings) -> Window {
        let start = Instant::now() + settings.warmup;
        Window {
            start,
            end: start + settings.duration,
        }
    }

    /// Whether an operation that completed at `done` counts.
    pub fn counts(&self, done: Instant) -> bool {
        done >= self.start && done <= self.end
    }

    /// Whether it is too late to start an operation at `now`.
    pub fn over(&self, now: Instant) -> bool {
        now >= self.end
    }

    /// Length of the measured part, in seconds.
    pub fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// A small, fast, seedable generator (SplitMix64) for picking random
/// streams; statistical quality is beside the point.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; 0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_stays_below_and_spreads() {
        let mut r = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let i = r.below(10) as usize;
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
        assert_eq!(Rng::new(1).below(0), 0);
    }

    #[test]
    fn window_counts_completions_inside_it() {
        let settings = Settings {
            server: String::new(),
            duration: Duration::from_secs(2),
            warmup: Duration::from_secs(1),
            payload: 200,
            clients: None,
            batch: None,
            short_streams: 10,
            streams: None,
            log_events: 10,
            sub_connections: None,
            s1_filter: None,
            run_id: 0,
        };
        let now = Instant::now();
        let w = Window::after_warmup(&settings);
        assert!(!w.counts(now));
        assert!(w.counts(now + Duration::from_millis(1500)));
        assert!(!w.over(now + Duration::from_millis(2900)));
        assert!(w.over(now + Duration::from_millis(3100)));
        assert!(!w.counts(now + Duration::from_millis(3100)));
        assert!((w.seconds() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn workload_names() {
        let names: Vec<_> = Workload::ALL.iter().map(|w| w.name()).collect();
        assert_eq!(
            names,
            ["w1", "w2", "w3", "w4", "w5", "w6", "s1", "s2", "s3"]
        );
    }
}
