//! W1, W2, W3: appends from concurrent clients.
//!
//! Every client is its own connection and its own task, and appends
//! batches of `batch` events to its own stream
//! (`loadgen-<workload>-<run id>-<client>`, fresh for each run) with
//! `ExpectedVersion::Any`, one append at a time, back to back, for the
//! warm-up and then the measured window. Latency is per append, as the
//! task saw it (call to reply, durable).
//!
//! With `--streams N`, each append goes to one of N existing streams
//! (`loadgen-s-<k>`) picked uniformly at random instead: the cost of a
//! store with many streams, whose heads mostly miss the writer's cache.
//! The N streams are created first (one event each) unless a marker
//! stream says an earlier run did.

use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use logbook_client::{Client, ExpectedVersion, Text};

use crate::events::EventFactory;
use crate::latency::Recorder;
use crate::loadgen::report::{Row, Value};
use crate::loadgen::{During, Result, Rng, Settings, Window, connect};

/// Appends in flight while `--streams` creates its streams.
const CREATE_CONCURRENCY: usize = 512;

/// The name of stream `k` of `--streams`.
fn random_stream(k: u64) -> Text {
    Text::from(format!("loadgen-s-{k}"))
}

/// Where a client appends.
#[derive(Clone, Debug)]
enum Target {
    /// Its own stream.
    Own(Text),
    /// One of `n` streams at random.
    Random { n: u64, rng: Rng },
}

impl Target {
    fn next(&mut self) -> Text {
        match self {
            Target::Own(s) => s.clone(),
            Target::Random { n, rng } => random_stream(rng.below(*n)),
        }
    }
}

/// Makes streams `0..n` of `--streams` exist (one event each), unless the
/// marker of an earlier run says they do.
async fn ensure_streams(settings: &Settings, clients: &[Client], n: u64) -> Result<()> {
    let marker = Text::from(format!("loadgen-s-ready-{n}"));
    if crate::loadgen::read::stream_len(&clients[0], &marker).await? > 0 {
        return Ok(());
    }
    eprintln!("--streams: creating {n} streams of one event (first run only)...");
    let factory = Arc::new(EventFactory::new(settings.payload));
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|k| {
            let client = clients[k as usize % clients.len()].clone();
            let events = factory.batch(1);
            async move {
                if k > 0 && k % 1_000_000 == 0 {
                    eprintln!(
                        "--streams: {k} of {n}, {:.0} s",
                        start.elapsed().as_secs_f64()
                    );
                }
                client
                    .append(random_stream(k), ExpectedVersion::Any, events)
                    .await
                    .during(|| format!("creating stream {k}"))
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await?;
    clients[0]
        .append(marker.clone(), ExpectedVersion::Any, factory.batch(1))
        .await
        .during(|| format!("appending to {marker}"))?;
    eprintln!(
        "--streams: created {n} streams in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The shape of an append workload.
#[derive(Clone, Copy, Debug)]
pub struct AppendLoad {
    /// `w1`, `w2` or `w3`.
    pub workload: &'static str,
    /// Clients (connections, tasks, streams).
    pub clients: usize,
    /// Events per append.
    pub batch: usize,
}

impl AppendLoad {
    /// `clients` clients appending `batch` events at a time (both at
    /// least 1).
    pub fn new(workload: &'static str, clients: usize, batch: usize) -> AppendLoad {
        AppendLoad {
            workload,
            clients: clients.max(1),
            batch: batch.max(1),
        }
    }
}

/// What one client task measured.
struct Tally {
    latency: Recorder,
    appends: u64,
}

/// Runs `load` and reports it.
pub async fn run(settings: &Settings, load: AppendLoad) -> Result<Row> {
    let clients = connect(settings, load.workload, load.clients).await?;
    if let Some(n) = settings.streams {
        ensure_streams(settings, &clients, n).await?;
    }
    let factory = Arc::new(EventFactory::new(settings.payload));
    let window = Window::after_warmup(settings);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let target = match settings.streams {
                Some(n) => Target::Random {
                    n,
                    rng: Rng::new(settings.run_id ^ (i as u64).wrapping_mul(0x9e37_79b9)),
                },
                None => Target::Own(Text::from(format!(
                    "loadgen-{}-{}-{i}",
                    load.workload, settings.run_id
                ))),
            };
            tokio::spawn(client_loop(
                client,
                target,
                Arc::clone(&factory),
                load.batch,
                window,
            ))
        })
        .collect();
    let mut latency = Recorder::new();
    let mut appends = 0u64;
    for task in tasks {
        let tally = task.await??;
        latency.merge(&tally.latency);
        appends += tally.appends;
    }
    let mut row = Row::timed(
        load.workload,
        None,
        load.clients,
        load.batch,
        appends * load.batch as u64,
        appends,
        window.seconds(),
        latency.summary(),
        settings.payload,
    );
    row.extra.push(("appends", Value::U64(appends)));
    row.notes = format!("appends={appends}");
    if let Some(n) = settings.streams {
        row.extra.push(("streams", Value::U64(n)));
        row.notes = format!("appends={appends} streams={n} (random)");
    }
    Ok(row)
}

/// One client: append until the window ends.
async fn client_loop(
    client: Client,
    mut target: Target,
    factory: Arc<EventFactory>,
    batch: usize,
    window: Window,
) -> Result<Tally> {
    let mut tally = Tally {
        latency: Recorder::new(),
        appends: 0,
    };
    loop {
        let events = factory.batch(batch);
        let stream = target.next();
        let start = Instant::now();
        if window.over(start) {
            return Ok(tally);
        }
        client
            .append(stream.clone(), ExpectedVersion::Any, events)
            .await
            .during(|| format!("append of {batch} event(s) to {stream}"))?;
        let done = Instant::now();
        if window.counts(done) {
            tally.latency.record(done - start);
            tally.appends += 1;
        }
    }
}
