//! `loadgen`: Logbook's network load generator. Drives a running `logbookd`
//! over TCP and prints a table row and one JSON line per measurement.
//!
//! ```sh
//! cargo build --release -p logbook-server -p logbook-bench
//! target/release/logbookd --data-dir /data/logbook &          # durable by default
//! target/release/loadgen --fsync-probe-dir /data               # all workloads, 10 s each
//! target/release/loadgen --workload w1,w6 --duration 5
//! target/release/loadgen --workload w2 --clients 128           # one W2 row, 128 clients
//! target/release/loadgen --json-only | grep '"workload":"w5"'
//! ```
//!
//! Workloads (details: `logbook_bench::loadgen` and `benches/README.md`):
//!
//! - **W1**: one client, single-event appends; latency p50/p99/p999.
//! - **W2**: 64 and 512 clients, single-event appends, each to its own
//!   stream.
//! - **W3**: 8 clients appending batches of 100.
//! - **W4**: full reads of a 10,000-event stream (ms per read), and random
//!   full reads of ten-event streams by 16 tasks (reads/s).
//! - **W5**: reading the global log from position 0 over >= 1,000,000
//!   events (filled first if needed); events/s.
//! - **W6**: 16 clients racing on one stream with the same expected
//!   version; rounds/s, conflicts/s, and exactly one winner per round (or
//!   a non-zero exit).
//!
//! Events carry `--payload` bytes (200). "Clients" are separate
//! connections, each driven by its own task. Each measurement warms up for
//! `--warmup` seconds, then runs for `--duration` seconds. With
//! `--fsync-probe-dir DIR` (a directory on the daemon's disk), the disk's
//! `fdatasync` p50 is measured first and W1 is compared with it.
//!
//! Exit status: 0 if every workload ran; 1 if one failed (a client error,
//! or a failed check such as a W6 round without exactly one winner); the
//! rows measured until then are still printed. Targets missed do not
//! change the status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use logbook_bench::disk::measure_overwrite_fsync;
use logbook_bench::latency::ms;
use logbook_bench::loadgen::report::{Row, evaluate_target, utc_date};
use logbook_bench::loadgen::{Settings, Workload, client_options};
use logbook_client::Client;

/// `fdatasync`s timed by `--fsync-probe-dir`.
const FSYNC_PROBE_SAMPLES: usize = 1000;

/// Drives a running logbookd over TCP and reports throughput and latency
/// per workload (W1-W6, S1-S3; see `benches/README.md`).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// The server's address.
    #[arg(long, env = "LOGBOOK_SERVER", default_value = "127.0.0.1:7117")]
    server: String,

    /// Workloads to run, comma-separated, in the order given.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    workload: Vec<WorkloadArg>,

    /// Measured seconds per measurement (each W2 and W4 row, and W5's
    /// passes, get it whole).
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    duration: f64,

    /// Unmeasured seconds before each measurement.
    #[arg(long, default_value_t = 1.0, value_parser = non_negative_secs)]
    warmup: f64,

    /// Overrides every workload's client count (W2 then runs one row; W4
    /// random_short: reader tasks, four per connection). W4 stream_10k and
    /// W5 always read with one client.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    clients: Option<u32>,

    /// Events per append for W1, W2 and W3 (defaults 1, 1, 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,

    /// Payload bytes per event.
    #[arg(long, default_value_t = logbook_bench::events::DEFAULT_DATA_BYTES)]
    payload: usize,

    /// Print only the JSON lines on stdout (the header goes to stderr).
    #[arg(long)]
    json_only: bool,

    /// Measure the disk's fdatasync p50 (4 KiB overwrite) in this
    /// directory first, and compare W1's p50 with it. Must be on the disk
    /// the daemon writes to.
    #[arg(long)]
    fsync_probe_dir: Option<PathBuf>,

    /// W4: how many ten-event streams the random reads pick from (created
    /// on first use).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    short_streams: u64,

    /// W5: events the global log must hold before it is read (appended in
    /// batches of 1,000 if it holds fewer).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    log_events: u64,

    /// W1-W3: each append goes to one of this many streams, picked at
    /// random (`loadgen-s-<k>`, created first with one event each, once),
    /// instead of each client appending to its own.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    streams: Option<u64>,

    /// S3: connections the live subscribers share (default: one each).
    #[arg(long)]
    sub_connections: Option<usize>,

    /// S1: subscribe with this server-side filter, which must let every
    /// event through (to measure what filtering costs): `prefix` (an empty
    /// stream prefix) or `regex` (the stream regex `.`).
    #[arg(long, value_parser = ["prefix", "regex"])]
    s1_filter: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WorkloadArg {
    W1,
    W2,
    W3,
    W4,
    W5,
    W6,
    S1,
    S2,
    S3,
    All,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{s:?} is not a number of seconds")),
    }
}

/// The workloads asked for, in order, each once.
fn selected(args: &[WorkloadArg]) -> Vec<Workload> {
    let mut out: Vec<Workload> = Vec::new();
    for arg in args {
        let add: &[Workload] = match arg {
            WorkloadArg::W1 => &[Workload::W1],
            WorkloadArg::W2 => &[Workload::W2],
            WorkloadArg::W3 => &[Workload::W3],
            WorkloadArg::W4 => &[Workload::W4],
            WorkloadArg::W5 => &[Workload::W5],
            WorkloadArg::W6 => &[Workload::W6],
            WorkloadArg::S1 => &[Workload::S1],
            WorkloadArg::S2 => &[Workload::S2],
            WorkloadArg::S3 => &[Workload::S3],
            WorkloadArg::All => &Workload::ALL,
        };
        for w in add {
            if !out.contains(w) {
                out.push(*w);
            }
        }
    }
    out
}

/// Where people-facing lines go: stdout, or stderr with `--json-only`.
struct Out {
    json_only: bool,
}

impl Out {
    fn line(&self, s: &str) {
        if self.json_only {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let out = Out {
        json_only: args.json_only,
    };
    let settings = Settings {
        server: args.server.clone(),
        duration: Duration::from_secs_f64(args.duration),
        warmup: Duration::from_secs_f64(args.warmup),
        payload: args.payload,
        clients: args.clients.map(|n| n as usize),
        batch: args.batch.map(|n| n as usize),
        short_streams: args.short_streams,
        log_events: args.log_events,
        streams: args.streams,
        sub_connections: args.sub_connections,
        s1_filter: args.s1_filter,
        run_id: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let workloads = selected(&args.workload);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };

    // Header: the machine, the date, the server.
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let server_version = runtime.block_on(async {
        Client::connect_with(settings.server.as_str(), client_options("probe"))
            .await
            .map(|c| c.server_info())
    });
    let info = match server_version {
        Ok(info) => info,
        Err(e) => {
            eprintln!("loadgen: cannot reach logbookd at {}: {e}", settings.server);
            return ExitCode::FAILURE;
        }
    };
    out.line(&format!(
        "loadgen {}: server {} (logbookd {}), {cores} cores, {}",
        env!("CARGO_PKG_VERSION"),
        settings.server,
        info.server_version,
        utc_date()
    ));
    out.line(&format!(
        "workloads {}; {} s each after {} s warm-up; payload {} B",
        workloads
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(","),
        args.duration,
        args.warmup,
        settings.payload
    ));

    let mut fsync_p50 = None;
    if let Some(dir) = &args.fsync_probe_dir {
        match measure_overwrite_fsync(dir, FSYNC_PROBE_SAMPLES) {
            Ok(s) => {
                out.line(&format!(
                    "disk: fdatasync (4 KiB overwrite) in {}: p50={} p99={} n={}; \
                     W1 target: p50 <= {}",
                    dir.display(),
                    ms(s.p50),
                    ms(s.p99),
                    s.count,
                    ms(s.p50 + Duration::from_micros(100))
                ));
                fsync_p50 = Some(s.p50);
            }
            Err(e) => {
                eprintln!("loadgen: fsync probe in {} failed: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        }
    }

    out.line("");
    out.line(&Row::table_header());
    let mut rows: Vec<Row> = Vec::new();
    let mut failure = None;
    for workload in workloads {
        match runtime.block_on(workload.run(&settings)) {
            Ok(new_rows) => {
                for mut row in new_rows {
                    row.target = evaluate_target(&row, &rows, fsync_p50);
                    out.line(&row.table_row());
                    if args.json_only {
                        println!("{}", row.json());
                    }
                    rows.push(row);
                }
            }
            Err(e) => {
                failure = Some(format!("{} failed: {e}", workload.name()));
                break;
            }
        }
    }
    if !args.json_only {
        println!();
        for row in &rows {
            println!("{}", row.json());
        }
    }
    // Drop connections and tasks before exiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match failure {
        Some(f) => {
            eprintln!("loadgen: {f}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_keeps_order_and_dedups() {
        use WorkloadArg as A;
        assert_eq!(selected(&[A::All]), Workload::ALL.to_vec());
        assert_eq!(
            selected(&[A::W6, A::W1, A::W6]),
            vec![Workload::W6, Workload::W1]
        );
        assert_eq!(selected(&[A::W3, A::All]).first(), Some(&Workload::W3));
        assert_eq!(selected(&[A::W3, A::All]).len(), Workload::ALL.len());
    }

    #[test]
    fn cli_parses() {
        let a = Args::try_parse_from([
            "loadgen",
            "--workload",
            "w1,w6",
            "--duration",
            "0.5",
            "--clients",
            "4",
        ])
        .expect("parse");
        assert_eq!(a.workload, vec![WorkloadArg::W1, WorkloadArg::W6]);
        assert_eq!(a.clients, Some(4));
        assert!(Args::try_parse_from(["loadgen", "--duration", "0"]).is_err());
        assert!(Args::try_parse_from(["loadgen", "--clients", "0"]).is_err());
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
