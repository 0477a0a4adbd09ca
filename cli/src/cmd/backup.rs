//! `logbook backup --to DIR`: a consistent copy of the store, written by
//! this process into `DIR` while the server keeps serving. Progress goes to
//! stderr (a bar on a terminal, a line per tenth otherwise); the summary
//! to stdout.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use logbook_client::{BackupProgress, BackupReport};
use serde::Serialize;

use super::Ctx;
use crate::args::BackupArgs;
use crate::failure::Failure;
use crate::render::{human_bytes, key_values};

#[derive(Serialize)]
struct Summary<'a> {
    directory: &'a str,
    /// Every event below this log position is in the backup.
    position: u64,
    files: usize,
    files_copied: usize,
    bytes_copied: u64,
    bytes_total: u64,
}

pub(crate) async fn run(ctx: &mut Ctx, args: BackupArgs) -> Result<(), Failure> {
    let client = ctx.connect().await?;
    let mut progress = Progress::new();
    let report = client
        .backup(&args.to, |p| progress.update(p))
        .await
        .map_err(|e| ctx.failed(e));
    progress.finish();
    let report = report?;
    summary(ctx, &args.to, &report)
}

fn summary(ctx: &mut Ctx, dir: &Path, report: &BackupReport) -> Result<(), Failure> {
    let directory = dir.display().to_string();
    let summary = Summary {
        directory: &directory,
        position: report.position.0,
        files: report.files,
        files_copied: report.files_copied,
        bytes_copied: report.bytes_copied,
        bytes_total: report.bytes_total,
    };
    if ctx.json {
        return ctx.out.json(&summary);
    }
    let pairs = [
        ("directory", directory.clone()),
        (
            "position",
            format!(
                "{} (the backup holds every event below it)",
                summary.position
            ),
        ),
        ("files", summary.files.to_string()),
        ("files copied", summary.files_copied.to_string()),
        (
            "bytes copied",
            format!(
                "{} ({})",
                summary.bytes_copied,
                human_bytes(summary.bytes_copied)
            ),
        ),
        (
            "bytes total",
            format!(
                "{} ({})",
                summary.bytes_total,
                human_bytes(summary.bytes_total)
            ),
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v));
    ctx.out.text(&key_values(&pairs))
}

/// Progress on stderr.
enum Progress {
    /// On a terminal: a bar with bytes, rate and time left, created at the
    /// first report (when the total is known).
    Bar(Option<ProgressBar>),
    /// Elsewhere (a log file, CI): a line at each tenth of the total.
    Lines {
        /// Tenths reported so far.
        tenths: Option<u64>,
    },
}

impl Progress {
    fn new() -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::Bar(None)
        } else {
            Progress::Lines { tenths: None }
        }
    }

    fn update(&mut self, p: &BackupProgress) {
        match self {
            Progress::Bar(bar) => {
                let bar = bar.get_or_insert_with(|| {
                    let style = ProgressStyle::with_template(
                        "{spinner} backup [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    ProgressBar::new(p.total_bytes).with_style(style)
                });
                bar.set_length(p.total_bytes);
                bar.set_position(p.copied_bytes);
            }
            Progress::Lines { tenths } => {
                let now = p.copied_bytes.saturating_mul(10) / p.total_bytes.max(1);
                if *tenths != Some(now) {
                    *tenths = Some(now);
                    eprintln!(
                        "backup: {} of {} ({}%)",
                        human_bytes(p.copied_bytes),
                        human_bytes(p.total_bytes),
                        now * 10
                    );
                }
            }
        }
    }

    fn finish(&mut self) {
        if let Progress::Bar(Some(bar)) = self {
            bar.finish_and_clear();
        }
    }
}
