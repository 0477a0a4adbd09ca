//! W1, W2, W3: appends from concurrent clients.
//!
//! Every client is its own connection and its own task, and appends
//! batches of `batch` events to its own stream
//! (`loadgen-<workload>-<run id>-<client>`, fresh for each run) with
//! `ExpectedVersion::Any`, one append at a time, back to back, for the
//! warm-up and then the measured window. Latency is per append, as the
//! task saw it (call to reply, durable).

use std::sync::Arc;
use std::time::Instant;

use logbook_client::{Client, ExpectedVersion, Text};

use crate::events::EventFactory;
use crate::latency::Recorder;
use crate::loadgen::report::{Row, Value};
use crate::loadgen::{During, Result, Settings, Window, connect};

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
    let factory = Arc::new(EventFactory::new(settings.payload));
    let window = Window::after_warmup(settings);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let stream = Text::from(format!("loadgen-{}-{}-{i}", load.workload, settings.run_id));
            tokio::spawn(client_loop(
                client,
                stream,
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
    Ok(row)
}

/// One client: append until the window ends.
async fn client_loop(
    client: Client,
    stream: Text,
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
