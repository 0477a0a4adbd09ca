//! Criterion benches of the storage engine, durable (`Durability::Fsync`) on
//! a real directory: a temporary directory inside `$LOGBOOK_BENCH_DIR` if
//! set, else the system temp dir. **That directory must be on the disk being
//! measured.** See `benches/README.md` for what every figure means.
//!
//! Groups (names are stable; compare runs by them):
//! - `disk`: the machine's own limits on the same file system:
//!   `fdatasync_4k_overwrite`, `fdatasync_4k_append`, `seq_write`. Prints
//!   `LIMIT ...` lines (p50/p99 of each fdatasync, fsyncs/s, MB/s).
//! - `append`: `single/{1,64,512}` (single-event appends from that many
//!   concurrent tokio tasks, one stream each), `batch100/8` and
//!   `batch100_4KiB/8` (8 tasks
//!   appending batches of 100). Prints one `RATIO ...` line per bench:
//!   appends per fsync, append latency, and the ratio to the disk's limit.
//! - `read`: `stream_10k_batched`, `stream_10k_interleaved`, `all_1m`
//!   (page-cache reads: the store was just written, so the cache is warm).
//! - `startup`: `1m/clean`, `1m/crash` and, with `LOGBOOK_BENCH_BIG=1`,
//!   `10m/clean`, `10m/crash`: wall time of `Store::open`. Prints one
//!   `STARTUP ...` line per bench. The 10M store takes a few minutes to
//!   build and ~2.5 GB of disk, so it is opt-in: a default `cargo bench`
//!   stays under ~10 minutes on 2 cores.
//!
//! Environment:
//! - `LOGBOOK_BENCH_DIR`: where to put the data (must be on the measured
//!   disk).
//! - `LOGBOOK_BENCH_BIG=1`: also run the 10M-event start-up benches.
//! - `LOGBOOK_BENCH_CRASH_TAIL=N`: events left unindexed before the crash
//!   start-up benches (default 100,000; the worst case is the engine's
//!   `index_flush_entries`, 1,000,000).
//! - `LOGBOOK_BENCH_SMOKE=1`: tiny sizes and short times, to check that
//!   everything runs (figures meaningless; names unchanged).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use logbook_bench::disk::{self, AppendSyncer, OverwriteSyncer, SeqWriter};
use logbook_bench::events::{EventFactory, stream_name};
use logbook_bench::latency::{Recorder, Summary, ms};
use logbook_bench::{bench_dir, env_flag, env_u64, si};
use logbook_protocol::{Direction, ExpectedVersion, LogPosition, StreamName};
use logbook_storage::{Durability, RecoveryReport, Store, StoreConfig, StoreStats};
use tempfile::TempDir;
use tokio::runtime::Runtime;

// ---------------------------------------------------------------------------
// Scale and timing.

/// `LOGBOOK_BENCH_SMOKE=1`: tiny sizes and short times.
fn smoke() -> bool {
    static SMOKE: OnceLock<bool> = OnceLock::new();
    *SMOKE.get_or_init(|| {
        let on = env_flag("LOGBOOK_BENCH_SMOKE");
        if on {
            eprintln!("SMOKE mode: sizes and times scaled down; the figures mean nothing");
        }
        on
    })
}

/// `LOGBOOK_BENCH_DEBUG=1`: print every timed call of the append benches.
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| env_flag("LOGBOOK_BENCH_DEBUG"))
}

/// A size, divided by 50 in smoke mode.
fn size(n: u64) -> u64 {
    if smoke() { (n / 50).max(100) } else { n }
}

/// A duration in seconds, a tenth of it in smoke mode.
fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if smoke() { s / 10.0 } else { s })
}

/// Events per second, bytes per second etc. over a wall time.
fn rate(n: u64, wall: Duration) -> f64 {
    let s = wall.as_secs_f64();
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

// ---------------------------------------------------------------------------
// The disk's limits, shared by every group of this process run.

/// p50/p99 of a 4 KiB overwrite + fdatasync, from `disk/fdatasync_4k_overwrite`
/// or, if that bench was filtered out, from a quick inline probe.
static FSYNC_OVERWRITE: OnceLock<Summary> = OnceLock::new();
/// Sequential write bandwidth, bytes/s, from `disk/seq_write` or a probe.
static SEQ_WRITE_BPS: OnceLock<f64> = OnceLock::new();

fn fsync_limit() -> Summary {
    *FSYNC_OVERWRITE.get_or_init(|| {
        let dir = bench_dir("fsync-probe").expect("bench dir");
        let s = disk::measure_overwrite_fsync(dir.path(), 200).expect("fsync probe");
        eprintln!(
            "LIMIT fdatasync_overwrite (inline probe) p50={} p99={} fsyncs/s={:.0} n={}",
            ms(s.p50),
            ms(s.p99),
            s.per_second_at_p50(),
            s.count
        );
        s
    })
}

fn seq_limit() -> f64 {
    *SEQ_WRITE_BPS.get_or_init(|| {
        let dir = bench_dir("seq-probe").expect("bench dir");
        let bps = disk::measure_seq_write(dir.path(), size(256 << 20).max(8 << 20))
            .expect("seq write probe");
        eprintln!("LIMIT seq_write (inline probe) MB/s={:.1}", bps / 1e6);
        bps
    })
}

fn disk_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("disk");
    g.sample_size(50)
        .warm_up_time(secs(1.0))
        .measurement_time(secs(5.0));

    // One fdatasync per iteration: criterion's elements/s is fsyncs/s.
    g.throughput(Throughput::Elements(1));
    let mut over: Option<(TempDir, OverwriteSyncer, Recorder)> = None;
    g.bench_function("fdatasync_4k_overwrite", |b| {
        let (_, s, rec) = over.get_or_insert_with(|| {
            let dir = bench_dir("disk").expect("bench dir");
            let s = OverwriteSyncer::create(&dir.path().join("overwrite.dat"), 16 << 20)
                .expect("zero-filled file");
            (dir, s, Recorder::new())
        });
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let st = s.step().expect("pwrite + fdatasync");
                rec.record(st.sync);
                total += st.total;
            }
            total
        });
    });
    if let Some((_, _, rec)) = &over {
        let s = rec.summary();
        eprintln!(
            "LIMIT fdatasync_overwrite p50={} p99={} fsyncs/s={:.0} (1/p50) max={} n={}",
            ms(s.p50),
            ms(s.p99),
            s.per_second_at_p50(),
            ms(s.max),
            s.count
        );
        let _ = FSYNC_OVERWRITE.set(s);
    }
    drop(over);

    let mut app: Option<(TempDir, AppendSyncer, Recorder)> = None;
    g.bench_function("fdatasync_4k_append", |b| {
        let (_, s, rec) = app.get_or_insert_with(|| {
            let dir = bench_dir("disk").expect("bench dir");
            // Emptied (untimed) every 256 MiB.
            let s = AppendSyncer::create(&dir.path().join("append.dat"), 256 << 20)
                .expect("empty file");
            (dir, s, Recorder::new())
        });
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let st = s.step().expect("pwrite + fdatasync");
                rec.record(st.sync);
                total += st.total;
            }
            total
        });
    });
    if let Some((_, _, rec)) = &app {
        let s = rec.summary();
        let over = FSYNC_OVERWRITE.get().map(|o| o.p50.as_secs_f64());
        eprintln!(
            "LIMIT fdatasync_append p50={} p99={} fsyncs/s={:.0} (1/p50) max={} n={}{}",
            ms(s.p50),
            ms(s.p99),
            s.per_second_at_p50(),
            ms(s.max),
            s.count,
            over.map(|o| format!(" append/overwrite_p50={:.2}", s.p50.as_secs_f64() / o))
                .unwrap_or_default()
        );
    }
    drop(app);

    // 64 MiB per iteration (64 x 1 MiB pwrite, one fdatasync).
    let seq_bytes = size(disk::SEQ_SYNC_EVERY).max(disk::SEQ_CHUNK as u64);
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(seq_bytes));
    let mut seq: Option<(TempDir, SeqWriter, u64, Duration)> = None;
    g.bench_function("seq_write", |b| {
        let (_, w, bytes, wall) = seq.get_or_insert_with(|| {
            let dir = bench_dir("disk").expect("bench dir");
            let w = SeqWriter::create(&dir.path().join("seq.dat")).expect("file");
            (dir, w, 0, Duration::ZERO)
        });
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += w.run(seq_bytes).expect("sequential write");
            }
            *bytes += iters * seq_bytes;
            *wall += total;
            total
        });
    });
    if let Some((_, _, bytes, wall)) = &seq {
        let bps = rate(*bytes, *wall);
        eprintln!(
            "LIMIT seq_write MB/s={:.1} (1 MiB pwrites, fdatasync every 64 MiB; {} MB in {:.2}s)",
            bps / 1e6,
            bytes / 1_000_000,
            wall.as_secs_f64()
        );
        let _ = SEQ_WRITE_BPS.set(bps);
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// Appends.

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Counters summed over timed calls of one append bench.
#[derive(Default)]
struct Totals {
    calls: u64,
    events: u64,
    wall: Duration,
    appends: u64,
    events_written: u64,
    fsyncs: u64,
    groups: u64,
    bytes: u64,
    latency: Recorder,
}

impl Totals {
    fn add(
        &mut self,
        events: u64,
        wall: Duration,
        before: &StoreStats,
        after: &StoreStats,
        rec: &Recorder,
    ) {
        self.calls += 1;
        self.events += events;
        self.wall += wall;
        self.appends += after.appends - before.appends;
        self.events_written += after.events_written - before.events_written;
        self.fsyncs += after.fsyncs - before.fsyncs;
        self.groups += after.groups - before.groups;
        self.bytes += after.bytes_written - before.bytes_written;
        self.latency.merge(rec);
    }
}

/// A durable store and the bookkeeping of one append bench.
struct AppendBench {
    _dir: TempDir,
    store: Store,
    streams: Arc<Vec<StreamName>>,
    factory: Arc<EventFactory>,
    batch: usize,
    /// Every timed call (criterion's warm-up and ramp-up included).
    all: Totals,
    /// Calls in which every task made at least [`STEADY_PER_TASK`] appends:
    /// the figures reported. Criterion's first warm-up calls have fewer
    /// iterations than there are tasks, so most tasks sit idle in them.
    steady: Totals,
}

/// Appends per task for a timed call to count as steady state.
const STEADY_PER_TASK: u64 = 4;

impl AppendBench {
    fn open(clients: usize, batch: usize, data_bytes: usize) -> AppendBench {
        let dir = bench_dir("append").expect("bench dir");
        let mut config = StoreConfig::new(dir.path().join("data"));
        // LOGBOOK_BENCH_SYNC_LANES compares commit pipelines (default: the
        // engine's).
        if let Some(lanes) = std::env::var("LOGBOOK_BENCH_SYNC_LANES")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.sync_lanes = lanes;
        }
        // LOGBOOK_BENCH_PREALLOC: bytes of zeros written ahead of the
        // writer (0 disables preallocation; default: the engine's).
        if let Some(bytes) = std::env::var("LOGBOOK_BENCH_PREALLOC")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.preallocate_bytes = bytes;
        }
        let store = Store::open(config).expect("open store");
        assert_eq!(store.config().durability, Durability::Fsync);
        AppendBench {
            _dir: dir,
            store,
            streams: Arc::new(
                (0..clients as u64)
                    .map(|i| stream_name("account", i))
                    .collect(),
            ),
            factory: Arc::new(EventFactory::new(data_bytes)),
            batch,
            all: Totals::default(),
            steady: Totals::default(),
        }
    }

    /// `iters` appends split over the tasks (one per stream); returns the
    /// wall time from the first spawn to the last reply.
    fn run(&mut self, rt: &Runtime, iters: u64) -> Duration {
        let clients = self.streams.len() as u64;
        let before = self.store.stats();
        let (wall, rec) = rt.block_on(async {
            let t = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for i in 0..clients {
                let n = iters / clients + u64::from(i < iters % clients);
                if n == 0 {
                    continue;
                }
                let (store, streams, factory) = (
                    self.store.clone(),
                    Arc::clone(&self.streams),
                    Arc::clone(&self.factory),
                );
                let batch = self.batch;
                set.spawn(async move {
                    let stream = &streams[i as usize];
                    let mut rec = Recorder::new();
                    for _ in 0..n {
                        let events = factory.batch(batch);
                        let a = Instant::now();
                        store
                            .append(stream, ExpectedVersion::Any, events)
                            .await
                            .expect("append");
                        rec.record(a.elapsed());
                    }
                    rec
                });
            }
            let mut all = Recorder::new();
            while let Some(r) = set.join_next().await {
                all.merge(&r.expect("append task"));
            }
            (t.elapsed(), all)
        });
        let after = self.store.stats();
        let events = iters * self.batch as u64;
        if debug() {
            eprintln!(
                "DEBUG append clients={clients} batch={} iters={iters} wall={} appends={} fsyncs={}",
                self.batch,
                ms(wall),
                after.appends - before.appends,
                after.fsyncs - before.fsyncs
            );
        }
        self.all.add(events, wall, &before, &after, &rec);
        if iters >= STEADY_PER_TASK * clients {
            self.steady.add(events, wall, &before, &after, &rec);
        }
        wall
    }

    fn report(&self, name: &str) {
        let t = if self.steady.calls > 0 {
            &self.steady
        } else {
            &self.all
        };
        let clients = self.streams.len();
        let events_s = rate(t.events, t.wall);
        let lat = t.latency.summary();
        let mut line = format!(
            "RATIO {name} events/s={} appends/s={} appends/fsync={:.1} events/fsync={:.1} \
             fsyncs={} groups={} engine_fsyncs/s={:.0} append_p50={} append_p99={} \
             steady_calls={}/{}{}",
            si(events_s),
            si(rate(t.appends, t.wall)),
            ratio(t.appends, t.fsyncs),
            ratio(t.events_written, t.fsyncs),
            t.fsyncs,
            t.groups,
            rate(t.fsyncs, t.wall),
            ms(lat.p50),
            ms(lat.p99),
            self.steady.calls,
            self.all.calls,
            if self.steady.calls == 0 {
                " (none steady: all calls used)"
            } else {
                ""
            },
        );
        if self.batch == 1 {
            // Ideal: every fsync of the disk alone carries all C clients.
            let disk = fsync_limit().per_second_at_p50();
            let r = events_s / (clients as f64 * disk);
            line.push_str(&format!(
                " disk_fsyncs/s={disk:.0} ratio_to_disk={r:.3} (events/s / ({clients} x disk_fsyncs/s))"
            ));
        } else {
            let bw = seq_limit();
            let bps = rate(t.bytes, t.wall);
            line.push_str(&format!(
                " MB/s={:.1} disk_seq_MB/s={:.1} ratio_to_disk={:.3} (bytes/s / seq write bytes/s)",
                bps / 1e6,
                bw / 1e6,
                bps / bw
            ));
        }
        eprintln!("{line}");
    }
}

fn append_bench(
    g: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    clients: usize,
    batch: usize,
    data_bytes: usize,
) {
    // Events of another size than the default are named by it.
    let size = if data_bytes == logbook_bench::events::DEFAULT_DATA_BYTES {
        String::new()
    } else {
        format!("_{}KiB", data_bytes / 1024)
    };
    let (kind, name) = if batch == 1 {
        (
            format!("single{size}"),
            format!("append/single{size}/{clients}"),
        )
    } else {
        (
            format!("batch{batch}{size}"),
            format!("append/batch{batch}{size}/{clients}"),
        )
    };
    // One iteration = one append of `batch` events.
    g.throughput(Throughput::Elements(batch as u64));
    let mut state: Option<AppendBench> = None;
    g.bench_function(BenchmarkId::new(kind, clients), |b| {
        let st = state.get_or_insert_with(|| AppendBench::open(clients, batch, data_bytes));
        b.iter_custom(|iters| st.run(rt, iters));
    });
    if let Some(st) = state {
        st.report(&name);
        st.store.close().expect("close");
    }
}

fn append_group(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .warm_up_time(secs(1.0))
        .measurement_time(secs(4.0));
    let small = logbook_bench::events::DEFAULT_DATA_BYTES;
    for clients in [1, 64, 512] {
        append_bench(&mut g, &rt, clients, 1, small);
    }
    append_bench(&mut g, &rt, 8, 100, small);
    // Bandwidth: with 200-byte events the CPU per event decides, not the
    // disk; 4 KiB events show what the write path does with bytes.
    append_bench(&mut g, &rt, 8, 100, 4096);
    g.finish();
}

// ---------------------------------------------------------------------------
// Building stores fast (Durability::Os), for reads and start-up.

fn os_config(data: &Path) -> StoreConfig {
    StoreConfig {
        durability: Durability::Os,
        ..StoreConfig::new(data)
    }
}

/// Appends `events` events in batches of up to `batch` over `streams`
/// streams named `{prefix}-{i}`, round-robin.
fn fill(
    store: &Store,
    factory: &EventFactory,
    prefix: &str,
    events: u64,
    batch: u64,
    streams: u64,
) {
    let mut left = events;
    let mut i = 0u64;
    while left > 0 {
        let n = left.min(batch);
        store
            .append_blocking(
                &stream_name(prefix, i % streams),
                ExpectedVersion::Any,
                factory.batch(n as usize),
            )
            .expect("append");
        left -= n;
        i += 1;
    }
}

// ---------------------------------------------------------------------------
// Reads.

struct ReadStore {
    _dir: TempDir,
    store: Store,
    batched: StreamName,
    interleaved: StreamName,
    stream_len: usize,
    total: u64,
}

/// One store for all read benches: 10 streams appended one event at a time
/// round-robin (`inter-0` is the interleaved stream), one stream appended in
/// batches of 100, and filler up to the total in batches of 1000 over 1000
/// streams. Built with `Durability::Os`, closed, and reopened with the
/// default configuration: the index is in tables and the page cache is warm.
fn build_read_store() -> ReadStore {
    let stream_len = size(10_000);
    let total = size(1_000_000);
    let dir = bench_dir("read").expect("bench dir");
    let data = dir.path().join("data");
    let t = Instant::now();
    let f = EventFactory::default();
    {
        let store = Store::open(os_config(&data)).expect("open store");
        for _ in 0..stream_len {
            for s in 0..10 {
                store
                    .append_blocking(
                        &stream_name("inter", s),
                        ExpectedVersion::Any,
                        vec![f.event()],
                    )
                    .expect("append");
            }
        }
        fill(&store, &f, "batched", stream_len, 100, 1);
        let filler = total.saturating_sub(11 * stream_len);
        fill(&store, &f, "filler", filler, 1000, 1000);
        store.close().expect("close");
    }
    let store = Store::open(StoreConfig::new(&data)).expect("reopen store");
    let s = store.stats();
    eprintln!(
        "READ store built: {} events, {} segments, {} index tables, in {:.1}s (page cache warm)",
        s.head,
        s.segments,
        s.index_tables,
        t.elapsed().as_secs_f64()
    );
    ReadStore {
        _dir: dir,
        store,
        batched: stream_name("batched", 0),
        interleaved: stream_name("inter", 0),
        stream_len: stream_len as usize,
        total: s.head,
    }
}

fn read_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    g.sample_size(10)
        .warm_up_time(secs(1.0))
        .measurement_time(secs(4.0));
    let mut rs: Option<ReadStore> = None;

    for (id, interleaved) in [
        ("stream_10k_batched", false),
        ("stream_10k_interleaved", true),
    ] {
        g.throughput(Throughput::Elements(size(10_000)));
        g.bench_function(id, |b| {
            let r = rs.get_or_insert_with(build_read_store);
            let stream = if interleaved {
                &r.interleaved
            } else {
                &r.batched
            };
            let len = r.stream_len;
            b.iter(|| {
                let s = r
                    .store
                    .read_stream(stream, None, Direction::Forward, len)
                    .expect("read_stream");
                assert_eq!(s.events.len(), len);
                s
            });
        });
    }

    // One iteration reads the whole log: 100 pages of 10,000.
    let all = size(1_000_000);
    g.throughput(Throughput::Elements(all));
    g.sampling_mode(SamplingMode::Flat);
    g.bench_function("all_1m", |b| {
        let r = rs.get_or_insert_with(build_read_store);
        assert!(r.total >= all);
        b.iter(|| {
            let mut from = LogPosition(0);
            let mut read = 0u64;
            while read < all {
                let page = r
                    .store
                    .read_all(
                        Some(from),
                        Direction::Forward,
                        10_000.min((all - read) as usize),
                    )
                    .expect("read_all");
                read += page.events.len() as u64;
                match page.next {
                    Some(n) => from = n,
                    None => break,
                }
            }
            assert_eq!(read, all);
            read
        });
    });
    g.finish();
    if let Some(r) = rs {
        r.store.close().expect("close");
    }
}

// ---------------------------------------------------------------------------
// Start-up.

/// A store left closed (clean) or abandoned (crashed), reopened by the
/// benches.
struct StartupStore {
    _dir: TempDir,
    data: PathBuf,
    label: &'static str,
    /// Whether the crash state (an unindexed tail and unsynced, untrimmed
    /// preallocated space) has been created; a clean close would undo it.
    crashed: bool,
}

/// `events` events of ~200 bytes in batches of 1000 over 1000 streams,
/// written with `Durability::Os` and closed cleanly.
fn build_startup_store(label: &'static str, events: u64) -> StartupStore {
    let dir = bench_dir("startup").expect("bench dir");
    let data = dir.path().join("data");
    let t = Instant::now();
    let store = Store::open(os_config(&data)).expect("open store");
    fill(
        &store,
        &EventFactory::default(),
        "account",
        events,
        1000,
        1000,
    );
    store.close().expect("close");
    let s = store.stats();
    eprintln!(
        "STARTUP store {label} built: {} events, {} segments, {} MB of records, in {:.1}s",
        s.head,
        s.segments,
        s.bytes_written / 1_000_000,
        t.elapsed().as_secs_f64()
    );
    StartupStore {
        _dir: dir,
        data,
        label,
        crashed: false,
    }
}

/// Leaves `tail` more events unindexed and the store abandoned.
fn make_crash_state(st: &mut StartupStore, tail: u64) {
    let store = Store::open(os_config(&st.data)).expect("open store");
    fill(&store, &EventFactory::default(), "tail", tail, 1000, 1000);
    store.abandon();
    st.crashed = true;
}

fn report_startup(name: &str, lat: &Recorder, last: Option<&RecoveryReport>) {
    let s = lat.summary();
    let Some(r) = last else { return };
    eprintln!(
        "STARTUP {name} events={} open_p50={} open_max={} n={} segments={} index_tables={} \
         replayed_events={} truncated={} index_rebuilt={}",
        r.events,
        ms(s.p50),
        ms(s.max),
        s.count,
        r.segments,
        r.index_tables,
        r.replayed_events,
        r.truncated
            .as_ref()
            .map(|t| format!("{}B", t.bytes))
            .unwrap_or_else(|| "no".into()),
        r.index_rebuilt.as_deref().unwrap_or("no"),
    );
}

/// Runs the clean and crash start-up benches of one store size; returns
/// whether either ran (was not filtered out).
fn startup_size(g: &mut BenchmarkGroup<'_, WallTime>, label: &'static str, events: u64) -> bool {
    let crash_tail = size(env_u64("LOGBOOK_BENCH_CRASH_TAIL", 100_000));
    let mut st: Option<StartupStore> = None;

    // Clean: open, then close (untimed), which leaves the store as it was.
    let mut lat = Recorder::new();
    let mut last = None;
    g.bench_function(format!("{label}/clean"), |b| {
        let s = st.get_or_insert_with(|| build_startup_store(label, events));
        assert!(!s.crashed, "the clean bench must run before the crash one");
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let store = Store::open(StoreConfig::new(&s.data)).expect("open");
                let d = t.elapsed();
                total += d;
                lat.record(d);
                last = Some(store.recovery_report().clone());
                store.close().expect("close");
            }
            total
        });
    });
    report_startup(&format!("startup/{label}/clean"), &lat, last.as_ref());

    // Crash: open (recovery replays the unindexed tail and finds the
    // untrimmed preallocated zeros), then (untimed) append a few durable
    // events and abandon again, which restores the crash state.
    let mut lat = Recorder::new();
    let mut last = None;
    g.bench_function(format!("{label}/crash"), |b| {
        let s = st.get_or_insert_with(|| build_startup_store(label, events));
        if !s.crashed {
            make_crash_state(s, crash_tail);
        }
        let f = EventFactory::default();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let store = Store::open(StoreConfig::new(&s.data)).expect("open");
                let d = t.elapsed();
                total += d;
                lat.record(d);
                last = Some(store.recovery_report().clone());
                store
                    .append_blocking(&stream_name("crash", 0), ExpectedVersion::Any, f.batch(10))
                    .expect("append");
                store.abandon();
            }
            total
        });
    });
    if let Some(s) = &st {
        report_startup(&format!("startup/{}/crash", s.label), &lat, last.as_ref());
    }
    st.is_some()
}

fn startup_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("startup");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(secs(1.0))
        .measurement_time(secs(3.0));
    let ran = startup_size(&mut g, "1m", size(1_000_000));
    if env_flag("LOGBOOK_BENCH_BIG") {
        startup_size(&mut g, "10m", size(10_000_000));
    } else if ran {
        eprintln!("STARTUP 10m skipped: set LOGBOOK_BENCH_BIG=1 to run it (builds ~2.5 GB)");
    }
    g.finish();
}

criterion_group!(benches, disk_group, append_group, read_group, startup_group);
criterion_main!(benches);
