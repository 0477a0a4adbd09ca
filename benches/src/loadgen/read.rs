//! W4 and W5: reads.
//!
//! - [`stream_10k`] (W4, `stream_10k`): one client reads
//!   [`STREAM_10K`] in full with `read_stream` (page size [`READ_PAGE`]),
//!   back to back; latency = one full read.
//! - [`random_short`] (W4, `random_short`): reader tasks, four per client,
//!   each reading a random one of the ten-event streams
//!   `loadgen-w4-short-<i>` in full; latency = one read.
//! - [`read_log`] (W5): the global log from position 0 with `read_all`,
//!   whole passes; median events/s over the passes.
//!
//! Their data is created on first use with the run's payload size and kept
//! for later runs (the reported `payload_bytes` is what the data holds).
//! Every read is checked: the stream's versions, or the log's positions,
//! run densely from 0, and the count is the expected one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use logbook_client::{
    Client, Error as ClientError, ExpectedVersion, LogPosition, ReadAllOptions, ReadStreamOptions,
    StreamVersion, Text,
};

use crate::events::EventFactory;
use crate::latency::Recorder;
use crate::loadgen::report::{Row, Value};
use crate::loadgen::{During, Error, Result, Rng, Settings, Window, connect};

/// Page size of every read: the server's default maximum (`--max-read-count`).
pub const READ_PAGE: u32 = 10_000;
/// W4's long stream.
pub const STREAM_10K: &str = "loadgen-w4-stream-10k";
/// Events in [`STREAM_10K`].
pub const STREAM_10K_EVENTS: u64 = 10_000;
/// Events per append when creating [`STREAM_10K`].
const STREAM_10K_BATCH: usize = 100;
/// Events in each of W4's short streams.
pub const SHORT_EVENTS: u64 = 10;
/// W4 `random_short`: reader tasks per client connection.
pub const TASKS_PER_CLIENT: usize = 4;
/// Concurrent appends while creating the short streams.
const CREATE_CONCURRENCY: usize = 64;
/// W5: events per append when filling the log.
const FILL_BATCH: u32 = 1_000;
/// W5: clients and concurrent appends filling the log.
const FILL_CLIENTS: usize = 4;
const FILL_CONCURRENCY: usize = 8;
/// W5: events read before the measured passes.
const LOG_WARMUP_EVENTS: u64 = 100_000;

/// Name of W4's `i`-th short stream.
pub fn short_stream(i: u64) -> String {
    format!("loadgen-w4-short-{i}")
}

/// W4 `stream_10k`.
pub async fn stream_10k(settings: &Settings) -> Result<Row> {
    let client = first(connect(settings, "w4", 1).await?)?;
    let factory = EventFactory::new(settings.payload);
    let created = ensure_stream(
        &client,
        &factory,
        STREAM_10K,
        STREAM_10K_EVENTS,
        STREAM_10K_BATCH,
    )
    .await?;
    let len = stream_len(&client, STREAM_10K).await?;
    let mut payload = 0;
    let mut latency = Recorder::new();
    let mut reads = 0u64;
    let window = Window::after_warmup(settings);
    loop {
        let start = Instant::now();
        if window.over(start) {
            break;
        }
        payload = read_stream_checked(&client, STREAM_10K, len).await?;
        let done = Instant::now();
        if window.counts(done) {
            latency.record(done - start);
            reads += 1;
        }
    }
    let summary = latency.summary();
    let mut row = Row::timed(
        "w4",
        Some("stream_10k"),
        1,
        READ_PAGE as usize,
        reads * len,
        reads,
        window.seconds(),
        summary,
        payload,
    );
    row.extra.push(("stream_events", Value::U64(len)));
    row.extra.push(("reads", Value::U64(reads)));
    row.extra.push(("read_ms_p50", Value::Ms(summary.p50)));
    row.extra.push(("read_ms_p99", Value::Ms(summary.p99)));
    if let Some(took) = created {
        row.extra
            .push(("created_seconds", Value::F64(took.as_secs_f64())));
    }
    row.notes = format!(
        "full reads of {len} events: {reads}, {:.3} ms p50",
        summary.p50.as_secs_f64() * 1e3
    );
    Ok(row)
}

/// W4 `random_short`.
pub async fn random_short(settings: &Settings) -> Result<Row> {
    let tasks = settings.clients.unwrap_or(16).max(1);
    let connections = tasks.div_ceil(TASKS_PER_CLIENT);
    let clients = connect(settings, "w4", connections).await?;
    let n = settings.short_streams.max(1);
    let names: Arc<[Text]> = (0..n).map(|i| Text::from(short_stream(i))).collect();
    let created = ensure_short_streams(settings, &clients, &names).await?;
    let window = Window::after_warmup(settings);
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let client = clients[t % clients.len()].clone();
            let names = Arc::clone(&names);
            let rng = Rng::new(settings.run_id ^ (t as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            tokio::spawn(short_reader(client, names, rng, window))
        })
        .collect();
    let mut latency = Recorder::new();
    let mut reads = 0u64;
    let mut payload = 0;
    for handle in handles {
        let (rec, n, p) = handle.await??;
        latency.merge(&rec);
        reads += n;
        payload = p;
    }
    let mut row = Row::timed(
        "w4",
        Some("random_short"),
        tasks,
        READ_PAGE as usize,
        reads * SHORT_EVENTS,
        reads,
        window.seconds(),
        latency.summary(),
        payload,
    );
    row.extra
        .push(("connections", Value::U64(connections as u64)));
    row.extra.push(("streams", Value::U64(n)));
    row.extra.push(("reads", Value::U64(reads)));
    if let Some(took) = created {
        row.extra
            .push(("created_seconds", Value::F64(took.as_secs_f64())));
    }
    row.notes =
        format!("{tasks} tasks on {connections} connections, {n} streams of {SHORT_EVENTS}");
    Ok(row)
}

/// One `random_short` task: read random short streams until the window
/// ends. Returns its latencies, counted reads and the payload size seen.
async fn short_reader(
    client: Client,
    names: Arc<[Text]>,
    mut rng: Rng,
    window: Window,
) -> Result<(Recorder, u64, usize)> {
    let mut latency = Recorder::new();
    let mut reads = 0u64;
    let mut payload = 0;
    loop {
        let name = &names[rng.below(names.len() as u64) as usize];
        let start = Instant::now();
        if window.over(start) {
            return Ok((latency, reads, payload));
        }
        payload = read_stream_checked(&client, name, SHORT_EVENTS).await?;
        let done = Instant::now();
        if window.counts(done) {
            latency.record(done - start);
            reads += 1;
        }
    }
}

/// Makes sure the log holds at least `--log-events` events (filling it as
/// W5 describes); returns a client to read it with, and what filling took.
pub async fn ensure_log_filled(
    settings: &Settings,
    label: &str,
) -> Result<(Client, Option<(u64, Duration)>)> {
    let clients = connect(settings, label, FILL_CLIENTS).await?;
    let reader = first(clients.clone())?;
    let head = log_head(&reader).await?;
    let mut fill = None;
    if head < settings.log_events {
        fill = Some(fill_log(settings, &clients, settings.log_events - head).await?);
    }
    Ok((reader, fill))
}

/// [`ensure_log_filled`], for workloads that do not report the filling.
pub async fn ensure_log(settings: &Settings, label: &str) -> Result<Client> {
    Ok(ensure_log_filled(settings, label).await?.0)
}

/// W5.
pub async fn read_log(settings: &Settings) -> Result<Row> {
    let (reader, fill) = ensure_log_filled(settings, "w5").await?;

    read_log_checked(&reader, Some(LOG_WARMUP_EVENTS)).await?;
    let deadline = Instant::now() + settings.duration;
    let mut latency = Recorder::new();
    let mut rates = Vec::new();
    let mut events = 0u64;
    let mut seconds = 0.0;
    let (mut last, mut payload);
    loop {
        let start = Instant::now();
        // The first --log-events events, not the whole log: the log grows
        // with every run, and the workload is defined over 1,000,000.
        let (n, p) = read_log_checked(&reader, Some(settings.log_events)).await?;
        let took = start.elapsed();
        if n < settings.log_events {
            return Err(Error::Check(format!(
                "read_all from 0 returned {n} events; the log should hold at least {}",
                settings.log_events
            )));
        }
        latency.record(took);
        rates.push(n as f64 / took.as_secs_f64());
        events += n;
        seconds += took.as_secs_f64();
        last = n;
        payload = p;
        if Instant::now() >= deadline {
            break;
        }
    }
    let passes = rates.len() as u64;
    let summary = latency.summary();
    let mut row = Row::timed(
        "w5",
        None,
        1,
        READ_PAGE as usize,
        events,
        passes,
        seconds,
        summary,
        payload,
    );
    row.events_per_sec = median(&mut rates);
    let best = rates.iter().copied().fold(0.0, f64::max);
    row.extra.push(("passes", Value::U64(passes)));
    row.extra.push(("log_events", Value::U64(last)));
    row.extra.push(("pass_ms_p50", Value::Ms(summary.p50)));
    row.extra.push(("best_events_per_sec", Value::F64(best)));
    if let Some((n, took)) = fill {
        row.extra.push(("fill_events", Value::U64(n)));
        row.extra
            .push(("fill_seconds", Value::F64(took.as_secs_f64())));
    }
    row.notes = format!(
        "{passes} pass(es) over {} events, median {:.0} ms, best {}/s",
        crate::si(last as f64),
        summary.p50.as_secs_f64() * 1e3,
        crate::si(best)
    );
    if let Some((n, took)) = fill {
        row.notes.push_str(&format!(
            "; filled {} events in {:.1} s",
            crate::si(n as f64),
            took.as_secs_f64()
        ));
    }
    Ok(row)
}

/// W5: appends at least `need` events in batches, spread over
/// `clients`. Returns the events appended and how long it took.
async fn fill_log(settings: &Settings, clients: &[Client], need: u64) -> Result<(u64, Duration)> {
    let limit = clients[0].server_info().max_events_per_append;
    let batch = if limit == 0 {
        FILL_BATCH
    } else {
        FILL_BATCH.min(limit)
    } as u64;
    let batches = need.div_ceil(batch);
    eprintln!(
        "w5: the log holds fewer than {} events; appending {} in batches of {batch}...",
        settings.log_events,
        batches * batch
    );
    let factory = Arc::new(EventFactory::new(settings.payload));
    let start = Instant::now();
    futures::stream::iter(0..batches)
        .map(|b| {
            let client = clients[b as usize % clients.len()].clone();
            let stream = Text::from(format!("loadgen-w5-fill-{}-{}", settings.run_id, b % 64));
            let events = factory.batch(batch as usize);
            async move {
                client
                    .append(stream.clone(), ExpectedVersion::Any, events)
                    .await
                    .during(|| format!("filling the log: append of {batch} events to {stream}"))
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await?;
    let took = start.elapsed();
    eprintln!(
        "w5: appended {} events in {:.1} s ({}/s)",
        batches * batch,
        took.as_secs_f64(),
        crate::si((batches * batch) as f64 / took.as_secs_f64())
    );
    Ok((batches * batch, took))
}

/// Median of `xs` (sorts them); 0 if empty.
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn first(clients: Vec<Client>) -> Result<Client> {
    clients
        .into_iter()
        .next()
        .ok_or_else(|| Error::Check("connect returned no client".to_owned()))
}

/// Events in `stream` (last version + 1; 0 if it has none).
pub async fn stream_len(client: &Client, stream: &str) -> Result<u64> {
    let options = ReadStreamOptions::default().backward().max_count(1);
    match client.read_stream_page(stream, options).await {
        Ok(page) => Ok(page.last_version.map_or(0, |v| v.0 + 1)),
        // PROTOCOL.md (5.4) says a stream with no events reads as an empty
        // page, but logbookd answers StreamNotFound: accept both.
        Err(ClientError::StreamNotFound { .. }) => Ok(0),
        Err(e) => Err(e).during(|| format!("read_stream_page({stream}, backward, 1)")),
    }
}

/// The log's head: how many events it holds.
pub async fn log_head(client: &Client) -> Result<u64> {
    let page = client
        .read_all_page(ReadAllOptions::default().backward().max_count(1))
        .await
        .during(|| "read_all_page(backward, 1)".to_owned())?;
    Ok(page.head.0)
}

/// Makes `stream` hold at least `len` events, appending batches of `batch`
/// with exact expected versions. Returns how long that took, if anything
/// was appended.
async fn ensure_stream(
    client: &Client,
    factory: &EventFactory,
    stream: &str,
    len: u64,
    batch: usize,
) -> Result<Option<Duration>> {
    let mut have = stream_len(client, stream).await?;
    if have >= len {
        return Ok(None);
    }
    eprintln!("w4: creating {stream} ({len} events in batches of {batch}; first run only)...");
    let start = Instant::now();
    while have < len {
        let n = (len - have).min(batch as u64) as usize;
        let expected = match have {
            0 => ExpectedVersion::NoStream,
            h => ExpectedVersion::Exact(StreamVersion(h - 1)),
        };
        let done = client
            .append(stream, expected, factory.batch(n))
            .await
            .during(|| format!("append of {n} events to {stream} expecting {expected}"))?;
        have = done.last_version.0 + 1;
    }
    Ok(Some(start.elapsed()))
}

/// Makes every stream of `names` hold [`SHORT_EVENTS`] events, unless the
/// marker stream of an earlier run says they do. Returns how long that
/// took, if anything was appended.
async fn ensure_short_streams(
    settings: &Settings,
    clients: &[Client],
    names: &[Text],
) -> Result<Option<Duration>> {
    let marker = format!("loadgen-w4-short-ready-{}", names.len());
    if stream_len(&clients[0], &marker).await? > 0 {
        return Ok(None);
    }
    eprintln!(
        "w4: creating {} streams of {SHORT_EVENTS} events (first run only)...",
        names.len()
    );
    let factory = EventFactory::new(settings.payload);
    let start = Instant::now();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let client = clients[i % clients.len()].clone();
            let events = factory.batch(SHORT_EVENTS as usize);
            create_once(client, name.clone(), events)
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .try_for_each(|()| futures::future::ready(Ok(())))
        .await?;
    create_once(clients[0].clone(), Text::from(marker), factory.batch(1)).await?;
    Ok(Some(start.elapsed()))
}

/// Appends `events` to `stream` if it has none; a stream that already
/// holds exactly as many events (an earlier, interrupted creation) is
/// fine too.
async fn create_once(
    client: Client,
    stream: Text,
    events: Vec<logbook_client::NewEvent>,
) -> Result<()> {
    let n = events.len() as u64;
    match client
        .append(stream.clone(), ExpectedVersion::NoStream, events)
        .await
    {
        Ok(_) => Ok(()),
        Err(ClientError::WrongExpectedVersion {
            actual: Some(v), ..
        }) if v.0 + 1 == n => Ok(()),
        Err(e) => Err(e).during(|| format!("append of {n} events to {stream} expecting no stream")),
    }
}

/// Reads `stream` in full and checks it holds exactly `len` events with
/// versions 0, 1, 2, ...; returns the first event's payload size.
async fn read_stream_checked(client: &Client, stream: &str, len: u64) -> Result<usize> {
    let mut events = client.read_stream(stream, ReadStreamOptions::default().page_size(READ_PAGE));
    let mut n = 0u64;
    let mut payload = 0;
    while let Some(e) = events
        .try_next()
        .await
        .during(|| format!("read_stream({stream}) at version {n}"))?
    {
        if e.version.0 != n {
            return Err(Error::Check(format!(
                "read_stream({stream}): event {n} has version {}",
                e.version
            )));
        }
        if n == 0 {
            payload = e.data.len();
        }
        n += 1;
    }
    if n != len {
        return Err(Error::Check(format!(
            "read_stream({stream}) returned {n} events, expected {len}"
        )));
    }
    Ok(payload)
}

/// Reads the log from position 0 (at most `max` events) and checks the
/// positions are 0, 1, 2, ...; returns the events read and the first
/// event's payload size.
async fn read_log_checked(client: &Client, max: Option<u64>) -> Result<(u64, usize)> {
    let mut options = ReadAllOptions::default()
        .from(LogPosition(0))
        .page_size(READ_PAGE);
    if let Some(max) = max {
        options = options.max_count(max);
    }
    let mut events = client.read_all(options);
    let mut n = 0u64;
    let mut payload = 0;
    while let Some(e) = events
        .try_next()
        .await
        .during(|| format!("read_all from 0 at position {n}"))?
    {
        if e.position.0 != n {
            return Err(Error::Check(format!(
                "read_all from 0: event {n} has position {}",
                e.position
            )));
        }
        if n == 0 {
            payload = e.data.len();
        }
        n += 1;
    }
    Ok((n, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
