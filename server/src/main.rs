//! `logbookd`: the Logbook daemon. Parses its configuration, opens the
//! store, and hands both to [`logbook_server::net::run`]; `verify` checks a
//! stopped store instead.

use std::process::ExitCode;

use clap::Parser;
use logbook_server::config::{Args, Command};
use logbook_server::net;
use logbook_server::storage::{Store, verify};

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for people: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match args.command {
        Some(Command::Verify) => run_verify(&args),
        None => serve(&args),
    }
}

fn run_verify(args: &Args) -> ExitCode {
    let config = args.store_config();
    match verify(&config, |_| {}) {
        Ok(report) => {
            println!(
                "{} segments, {} records, {} events, {} bytes; {} index tables, {} index entries",
                report.segments,
                report.records,
                report.events,
                report.bytes,
                report.index_tables,
                report.index_entries
            );
            for p in &report.problems {
                println!("PROBLEM {p}");
            }
            if report.is_ok() {
                println!("OK");
                ExitCode::SUCCESS
            } else {
                println!("{} problem(s) found", report.problems.len());
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("logbookd verify: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: &Args) -> ExitCode {
    let store = match Store::open(args.store_config()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, data_dir = %args.data_dir.display(), "cannot open the store");
            return ExitCode::FAILURE;
        }
    };
    let r = store.recovery_report();
    tracing::info!(
        data_dir = %args.data_dir.display(),
        events = r.events,
        segments = r.segments,
        index_tables = r.index_tables,
        replayed = r.replayed_events,
        truncated = ?r.truncated,
        sealed = r.sealed.len(),
        index_rebuilt = ?r.index_rebuilt,
        took_ms = r.duration.as_millis() as u64,
        "store open"
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, "accepting clients");
        net::run(
            listener,
            store.clone(),
            args.server_config(),
            shutdown_signal(),
        )
        .await
    });
    if let Err(e) = served {
        tracing::error!(error = %e, listen = %args.listen, "server failed");
        let _ = store.close();
        return ExitCode::FAILURE;
    }
    // Sync, write the index so the next start replays nothing, release the
    // directory lock.
    match store.close() {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "closing the store failed (recovery will repair on next start)");
            ExitCode::FAILURE
        }
    }
}

/// Resolves at the first SIGINT or SIGTERM. A second one exits at once:
/// whatever was acknowledged is already durable, and recovery handles the
/// rest.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: shutting down (send another to exit at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}
