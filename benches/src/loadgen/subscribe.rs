//! S1, S2, S3: catch-up subscriptions.
//!
//! - [`catch_up`] (S1): one subscription to the global log from the start
//!   of a log of at least `--log-events` events (filled as W5 does),
//!   consumed until it has every event that was there when it started;
//!   events/s, median over passes.
//! - [`live_latency`] (S2): one live subscriber (from `End`), one client
//!   appending single events one at a time. For each append, the time from
//!   its acknowledgement to the subscriber's receipt of that event (0 when
//!   the push beat the acknowledgement, which happens: they travel on
//!   different connections), p50/p99.
//! - [`writer_with_subscribers`] (S3): 64 clients appending single events,
//!   as W2, with 0, then 10, then 100 live subscribers to the global log
//!   consuming everything (each on its own connection, or sharing
//!   `--sub-connections` connections); appends/s, and the loss against 0
//!   subscribers.
//!
//! Every subscriber checks that positions arrive dense and in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;
use logbook_client::{
    Client, EventId, ExpectedVersion, Filter, LogPosition, SubscribeAllOptions, SubscribeFrom,
    Subscription, SubscriptionMessage, Text,
};
use tokio::sync::mpsc;

use crate::events::EventFactory;
use crate::latency::Recorder;
use crate::loadgen::append::{AppendLoad, run as run_appends};
use crate::loadgen::read::{ensure_log, log_head};
use crate::loadgen::report::{Row, Value};
use crate::loadgen::{During, Error, Result, Settings, connect};

/// Credit window of every loadgen subscription: large enough that the
/// consumer, not flow control, sets the pace.
pub const WINDOW: u32 = 8_192;

/// Takes the next event of `sub`, skipping notices; checks that it follows
/// `expect` (the next position), if known.
async fn next_event(
    sub: &mut Subscription,
    expect: &mut Option<u64>,
) -> Result<Option<logbook_client::RecordedEvent>> {
    while let Some(m) = sub.next().await {
        match m.during(|| "subscription".to_owned())? {
            SubscriptionMessage::Event(e) => {
                if let Some(p) = *expect
                    && e.position.0 != p
                {
                    return Err(Error::Check(format!(
                        "subscription got position {} after {}",
                        e.position.0,
                        p - 1
                    )));
                }
                *expect = Some(e.position.0 + 1);
                return Ok(Some(e));
            }
            _ => continue,
        }
    }
    Ok(None)
}

/// S1: catch-up throughput from the start of the log.
pub async fn catch_up(settings: &Settings) -> Result<Row> {
    let client = ensure_log(settings, "s1").await?;
    // The first --log-events events (the log grows with every run).
    let head = log_head(&client).await?.min(settings.log_events);
    let deadline = Instant::now() + settings.duration;
    let mut rates = Vec::new();
    let mut latency = Recorder::new();
    let (mut events, mut seconds) = (0u64, 0.0);
    let filter = match settings.s1_filter.as_deref() {
        Some("prefix") => Some(Filter {
            stream_prefixes: vec![String::new()],
            ..Filter::default()
        }),
        Some("regex") => Some(Filter {
            stream_regex: Some(".".to_owned()),
            ..Filter::default()
        }),
        _ => None,
    };
    loop {
        let mut options = SubscribeAllOptions::default().window(WINDOW);
        if let Some(f) = &filter {
            options = options.filter(f.clone());
        }
        let start = Instant::now();
        let mut sub = client
            .subscribe_all(options)
            .await
            .during(|| "subscribe_all from the start".to_owned())?;
        let mut expect = Some(0);
        let mut n = 0u64;
        while n < head {
            match next_event(&mut sub, &mut expect).await? {
                Some(_) => n += 1,
                None => return Err(Error::Check("subscription ended early".into())),
            }
        }
        let took = start.elapsed();
        drop(sub);
        latency.record(took);
        rates.push(n as f64 / took.as_secs_f64());
        events += n;
        seconds += took.as_secs_f64();
        if Instant::now() >= deadline {
            break;
        }
    }
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    let mut row = Row::timed(
        "s1",
        None,
        1,
        WINDOW as usize,
        events,
        rates.len() as u64,
        seconds,
        latency.summary(),
        settings.payload,
    );
    row.events_per_sec = median;
    row.extra.push(("passes", Value::U64(rates.len() as u64)));
    row.extra.push(("log_events", Value::U64(head)));
    if let Some(f) = &settings.s1_filter {
        row.extra.push(("filter", Value::Str(f.clone())));
    }
    row.notes = format!(
        "{} pass(es) over {} events, median {:.2}M events/s",
        rates.len(),
        head,
        median / 1e6
    );
    Ok(row)
}

/// S2: live delivery latency, acknowledgement to receipt.
pub async fn live_latency(settings: &Settings) -> Result<Row> {
    let mut clients = connect(settings, "s2", 2).await?;
    let (Some(appender), Some(subscriber)) = (clients.pop(), clients.pop()) else {
        return Err(Error::Check("no clients".into()));
    };
    let options = SubscribeAllOptions::default()
        .from(SubscribeFrom::End)
        .window(WINDOW);
    let mut sub = subscriber
        .subscribe_all(options)
        .await
        .during(|| "subscribe_all from the end".to_owned())?;
    // The subscriber reports (event id, time received) for each event.
    let (tx, mut rx) = mpsc::unbounded_channel::<(EventId, Instant)>();
    let reader = tokio::spawn(async move {
        let mut expect = None;
        while let Ok(Some(e)) = next_event(&mut sub, &mut expect).await {
            if tx.send((e.id, Instant::now())).is_err() {
                break;
            }
        }
    });
    let factory = EventFactory::new(settings.payload);
    let stream = Text::from(format!("loadgen-s2-{}", settings.run_id));
    let mut latency = Recorder::new();
    let mut early = 0u64;
    let warmup_end = Instant::now() + settings.warmup;
    let end = warmup_end + settings.duration;
    let mut n = 0u64;
    while Instant::now() < end {
        let event = factory.event();
        let id = event.id;
        appender
            .append(stream.clone(), ExpectedVersion::Any, vec![event])
            .await
            .during(|| format!("append to {stream}"))?;
        let acked = Instant::now();
        let received = loop {
            match rx.recv().await {
                Some((got, at)) if got == id => break at,
                Some(_) => continue,
                None => return Err(Error::Check("the subscriber stopped".into())),
            }
        };
        if acked >= warmup_end {
            if received < acked {
                early += 1;
            }
            latency.record(received.saturating_duration_since(acked));
            n += 1;
        }
    }
    reader.abort();
    let mut row = Row::timed(
        "s2",
        None,
        1,
        1,
        n,
        n,
        settings.duration.as_secs_f64(),
        latency.summary(),
        settings.payload,
    );
    row.extra.push(("push_before_ack", Value::U64(early)));
    row.notes = format!("{n} events; the push arrived before the ack for {early}");
    Ok(row)
}

/// S3: writer throughput with 0, 10 and 100 live subscribers.
pub async fn writer_with_subscribers(settings: &Settings) -> Result<Vec<Row>> {
    let counts: Vec<usize> = match settings.clients {
        Some(n) => vec![0, n],
        None => vec![0, 10, 100],
    };
    let mut rows: Vec<Row> = Vec::new();
    for subscribers in counts {
        // Subscriptions share connections when asked to (the protocol
        // multiplexes them: one write carries pushes for many).
        let conns = settings
            .sub_connections
            .map_or(subscribers, |c| c.clamp(1, subscribers.max(1)));
        let clients = connect(settings, "s3-sub", conns).await?;
        let received = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..subscribers {
            let Some(client) = clients.get(i % clients.len().max(1)).cloned() else {
                break;
            };
            tasks.push(tokio::spawn(follow(client, Arc::clone(&received))));
        }
        let mut row = run_appends(settings, AppendLoad::new("s3", 64, 1)).await?;
        for t in tasks {
            t.abort();
        }
        row.part = Some(match subscribers {
            0 => "subs_0",
            10 => "subs_10",
            100 => "subs_100",
            _ => "subs_n",
        });
        row.extra
            .push(("subscribers", Value::U64(subscribers as u64)));
        row.extra.push((
            "subscriber_connections",
            Value::U64(if subscribers == 0 { 0 } else { conns as u64 }),
        ));
        row.extra.push((
            "events_delivered",
            Value::U64(received.load(Ordering::Relaxed)),
        ));
        if let Some(base) = rows.first() {
            let loss = 1.0 - row.events_per_sec / base.events_per_sec.max(1.0);
            row.extra.push(("loss_vs_0", Value::F64(loss)));
            row.notes = format!(
                "{subscribers} subscribers on {conns} connection(s); writer loss vs none {:.1}%",
                loss * 100.0
            );
        } else {
            row.notes = "no subscribers".to_owned();
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A live subscriber that consumes everything until its task is aborted.
async fn follow(client: Client, received: Arc<AtomicU64>) -> Result<()> {
    let options = SubscribeAllOptions::default()
        .from(SubscribeFrom::<LogPosition>::End)
        .window(WINDOW);
    let mut sub = client
        .subscribe_all(options)
        .await
        .during(|| "subscribe_all from the end".to_owned())?;
    let mut expect = None;
    while next_event(&mut sub, &mut expect).await?.is_some() {
        received.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
