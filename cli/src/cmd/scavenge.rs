//! `logbook scavenge` and `logbook erase`: disk given back. Both wait for
//! the server to finish (the client call has no timeout) and print what it
//! did as `key  value` lines or as one JSON object ([`ScavengeJson`],
//! [`EraseJson`]).
//!
//! While a scavenge runs, a second connection polls `Stats` every
//! [`POLL`] and prints its progress on stderr (`rewritten D of T
//! segments`) each time it moves, unless `--json`. `erase` says, after its
//! receipt, that backups taken before still hold the stream's events (on
//! stderr with `--json`, so stdout stays one object).

use std::time::Duration;

use logbook_client::{Client, EraseReceipt, ScavengeOptions, ScavengeReport};
use serde::Serialize;

use super::Ctx;
use crate::args::{EraseArgs, ScavengeArgs};
use crate::failure::Failure;
use crate::render::{human_bytes, key_values};

/// How often a scavenge's progress is polled.
const POLL: Duration = Duration::from_millis(500);

/// Bytes in the MiB of `--max-mb-per-sec`.
const MIB: u64 = 1 << 20;

/// What `erase` says about backups, plainly.
const BACKUPS_NOTE: &str = "note: backups taken before this erase still hold the stream's events; \
                            erase or destroy them too if the data must be gone everywhere";

/// The `--json` line of `scavenge`.
#[derive(Serialize)]
struct ScavengeJson {
    segments_considered: u64,
    segments_rewritten: u64,
    /// Of those, merged into the segment before (gone as files).
    segments_merged: u64,
    events_removed: u64,
    bytes_before: u64,
    bytes_after: u64,
    /// `bytes_before - bytes_after`.
    bytes_reclaimed: u64,
    duration_ms: f64,
}

/// The `--json` line of `erase`.
#[derive(Serialize)]
struct EraseJson<'a> {
    stream: &'a str,
    /// Log position of the stream's tombstone (in `$$stream`).
    position: u64,
    segments_rewritten: u64,
    events_removed: u64,
    bytes_before: u64,
    bytes_after: u64,
    /// `bytes_before - bytes_after`.
    bytes_reclaimed: u64,
    duration_ms: f64,
}

/// `logbook scavenge [--max-mb-per-sec N]`.
pub(crate) async fn scavenge(ctx: &mut Ctx, args: ScavengeArgs) -> Result<(), Failure> {
    let mut options = ScavengeOptions::default();
    if let Some(mib) = args.max_mb_per_sec {
        options = options.max_bytes_per_sec(mib.saturating_mul(MIB));
    }
    let client = ctx.connect().await?;
    let report = if ctx.json {
        client.scavenge(options).await
    } else {
        with_progress(ctx, &client, options).await
    }
    .map_err(|e| ctx.failed(e))?;
    let r = &report;
    let json = ScavengeJson {
        segments_considered: r.segments_considered,
        segments_rewritten: r.segments_rewritten,
        segments_merged: r.segments_merged,
        events_removed: r.events_removed,
        bytes_before: r.bytes_before,
        bytes_after: r.bytes_after,
        bytes_reclaimed: r.bytes_reclaimed(),
        duration_ms: millis(r.duration),
    };
    if ctx.json {
        return ctx.out.json(&json);
    }
    let pairs = [
        ("segments considered", r.segments_considered.to_string()),
        ("segments rewritten", r.segments_rewritten.to_string()),
        ("segments merged", r.segments_merged.to_string()),
        ("events removed", r.events_removed.to_string()),
        ("bytes before", bytes(r.bytes_before)),
        ("bytes after", bytes(r.bytes_after)),
        ("reclaimed", bytes(r.bytes_reclaimed())),
        ("duration", seconds(r.duration)),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    ctx.out.text(&key_values(&pairs))
}

/// Runs the scavenge, printing its progress on stderr as `Stats` on a
/// second connection shows it move. The polls use their own connection so
/// that they never queue behind the scavenge, whatever the server does
/// with one connection's requests; without it (it could not be opened)
/// the scavenge runs all the same, silently.
async fn with_progress(
    ctx: &Ctx,
    client: &Client,
    options: ScavengeOptions,
) -> logbook_client::Result<ScavengeReport> {
    let watcher = ctx.connect().await.ok();
    // What the last scavenge left in the figures, not to be taken for
    // this one's progress.
    let mut shown = match &watcher {
        Some(w) => w
            .stats()
            .await
            .ok()
            .map(|s| (s.scavenge_done, s.scavenge_todo)),
        None => None,
    };
    let run = client.scavenge(options);
    tokio::pin!(run);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + POLL, POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = &mut run => return r,
            _ = tick.tick() => {
                let Some(w) = &watcher else { continue };
                if let Ok(s) = w.stats().await {
                    let now = (s.scavenge_done, s.scavenge_todo);
                    if shown != Some(now) {
                        shown = Some(now);
                        eprintln!("scavenge: rewritten {} of {} segments", now.0, now.1);
                    }
                }
            }
        }
    }
}

/// `logbook erase STREAM`.
pub(crate) async fn erase(ctx: &mut Ctx, args: EraseArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let receipt = client
        .erase(args.stream.as_str())
        .await
        .map_err(|e| ctx.failed(e))?;
    let r: &EraseReceipt = &receipt;
    let reclaimed = r.bytes_before.saturating_sub(r.bytes_after);
    if ctx.json {
        let json = EraseJson {
            stream: &args.stream,
            position: r.position.0,
            segments_rewritten: r.segments_rewritten,
            events_removed: r.events_removed,
            bytes_before: r.bytes_before,
            bytes_after: r.bytes_after,
            bytes_reclaimed: reclaimed,
            duration_ms: millis(r.duration),
        };
        ctx.out.json(&json)?;
        eprintln!("{BACKUPS_NOTE}");
        return Ok(());
    }
    let pairs = [
        (
            "stream",
            format!("{} (erased, deleted for ever)", args.stream),
        ),
        ("tombstone position", r.position.0.to_string()),
        ("segments rewritten", r.segments_rewritten.to_string()),
        ("events removed", r.events_removed.to_string()),
        ("bytes before", bytes(r.bytes_before)),
        ("bytes after", bytes(r.bytes_after)),
        ("reclaimed", bytes(reclaimed)),
        ("duration", seconds(r.duration)),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    ctx.out.text(&key_values(&pairs))?;
    ctx.out.text(&format!("{BACKUPS_NOTE}\n"))
}

/// Milliseconds, with a fraction.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Seconds for people.
fn seconds(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// A byte count, and for people too from 1 KiB.
fn bytes(n: u64) -> String {
    if n < 1024 {
        format!("{n}")
    } else {
        format!("{n} ({})", human_bytes(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_both_ways() {
        assert_eq!(bytes(512), "512");
        assert_eq!(bytes(3 << 20), "3145728 (3.0 MiB)");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.500 s");
        assert!((millis(Duration::from_micros(2500)) - 2.5).abs() < 1e-9);
    }
}
