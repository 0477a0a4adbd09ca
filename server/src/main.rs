//! `logbookd`: the Logbook daemon.
//!
//! Opens (and if needed recovers) the store in the data directory and
//! keeps it open until SIGINT/SIGTERM. The network server arrives with the
//! protocol work; until then the daemon is useful to recover and check a
//! data directory.

use std::path::PathBuf;

use clap::Parser;
use logbook_server::storage::{Store, StoreConfig};

/// The Logbook event-store daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Data directory (created if missing).
    #[arg(long, env = "LOGBOOK_DATA_DIR", default_value = "./logbook-data")]
    data_dir: PathBuf,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let store = match Store::open(StoreConfig::new(&args.data_dir)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, data_dir = %args.data_dir.display(), "cannot open the store");
            return std::process::ExitCode::FAILURE;
        }
    };
    let r = store.recovery_report();
    tracing::info!(
        data_dir = %args.data_dir.display(),
        events = r.events,
        segments = r.segments,
        replayed = r.replayed_events,
        truncated = ?r.truncated,
        took_ms = r.duration.as_millis() as u64,
        "store open"
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    match store.close() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "closing the store failed");
            std::process::ExitCode::FAILURE
        }
    }
}
