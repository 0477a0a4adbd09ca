//! `logbookd`: the Logbook daemon. Parses its configuration, starts the
//! metrics listener if asked (before recovery, so that `/health` and
//! `/ready` answer during it), opens the store, and hands it to
//! [`logbook_server::net::run_with_stats`]; `verify` checks a stopped store
//! instead, showing its progress (`progress`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use logbook_server::config::{Args, Command, DurabilityArg};
use logbook_server::console::Console;
use logbook_server::metrics::{self, Metrics, Phase};
use logbook_server::net::{self, NetStats};
use logbook_server::tls::ServerTls;
use logbook_storage::Store;
use logbook_storage::verify::verify_with_progress;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The web console's sessions are clients inside the daemon: their
    // connection notices (one per session at shutdown) are not the
    // operator's business unless asked for.
    if !args.log.contains("logbook_client")
        && let Ok(quiet) = "logbook_client=error".parse()
    {
        filter = filter.add_directive(quiet);
    }
    // openraft tells every vote and election at info; the node's own lines
    // say what an operator needs (roles are in the metrics).
    if !args.log.contains("openraft")
        && let Ok(quiet) = "openraft=warn".parse()
    {
        filter = filter.add_directive(quiet);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for people: log files and pipes get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match args.command {
        Some(Command::Verify) => run_verify(&args),
        None => serve(&args),
    }
}

/// Raises the soft limit on open files to the hard limit, and logs both:
/// each connection takes a descriptor and the store up to
/// `--max-open-files`, so the common soft default of 1,024 is reached by a
/// thousand clients. Returns the soft limit in force (None: unlimited or
/// unknown).
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    if before.current < before.maximum || (before.current.is_some() && before.maximum.is_none()) {
        // An unlimited hard limit still caps open files at the kernel's
        // nr_open (1,048,576 by default), which an unlimited soft one would
        // exceed.
        let raised = Rlimit {
            current: before.maximum.or(Some(1 << 20)),
            maximum: before.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, soft = %show(before.current), hard = %show(before.maximum), "could not raise the open file limit");
            return before.current;
        }
    }
    let after = getrlimit(Resource::Nofile);
    tracing::info!(
        soft_before = %show(before.current),
        soft = %show(after.current),
        hard = %show(after.maximum),
        "open file limit"
    );
    after.current
}

/// The store's budget of open files, lowered if the open-file limit
/// `soft` cannot hold it next to every connection and a margin for the
/// rest (listeners, the directory lock, sync lanes, files being written).
fn open_file_budget(wanted: usize, soft: Option<u64>, connections: usize) -> usize {
    const MARGIN: u64 = 64;
    const LEAST: usize = 16;
    let Some(soft) = soft else { return wanted };
    let room = soft.saturating_sub(connections as u64 + MARGIN);
    if (wanted as u64) <= room {
        return wanted;
    }
    let budget = (room.min(usize::MAX as u64) as usize).max(LEAST);
    tracing::warn!(
        wanted,
        budget,
        soft_limit = soft,
        max_connections = connections,
        "the open file limit cannot hold --max-open-files next to --max-connections: fewer files stay open (reads of cold files reopen them)"
    );
    budget
}

/// Warns when a port listens beyond loopback in clear text: anyone on the
/// network can then read its traffic (tokens and passwords included).
fn warn_if_exposed(port: &str, addr: std::net::SocketAddr, tls: bool) {
    if !tls && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the {port} port listens beyond loopback without TLS: its traffic, credentials included, crosses the network in clear text (see --tls-cert)"
        );
    }
}

fn run_verify(args: &Args) -> ExitCode {
    let soft = raise_open_file_limit();
    let mut config = args.store_config();
    config.max_open_files = open_file_budget(config.max_open_files, soft, 0);
    // A bar for people; one line per file for logs and pipes. Either way on
    // stderr: stdout keeps the summary and the problems.
    let result = if std::io::stderr().is_terminal() {
        let bar = progress::Bar::new();
        let r = verify_with_progress(&config, |step| bar.step(step));
        bar.finish();
        r
    } else {
        let mut lines = progress::Lines::new();
        verify_with_progress(&config, |step| lines.step(step))
    };
    match result {
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
    // The runtime comes first: the metrics listener answers /health and
    // /ready while recovery runs on this thread.
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
    let tls = match args.tls_files().map(|f| ServerTls::load(&f)).transpose() {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the TLS certificate");
            return ExitCode::FAILURE;
        }
    };
    let net_stats = Arc::new(NetStats::default());
    let metrics = Arc::new(Metrics::new(Arc::clone(&net_stats)));
    let (connector, inside) = net::local_channel();
    let metrics_tls = tls.clone().filter(|_| args.metrics_tls);
    let console = (args.metrics_listen.is_some() && !args.no_console)
        .then(|| Console::new(connector, metrics_tls.is_some()));
    if let Some(addr) = args.metrics_listen {
        let bound = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            Ok::<_, std::io::Error>((listener, local))
        });
        match bound {
            Ok((listener, addr)) => {
                tracing::info!(metrics_addr = %addr, tls = metrics_tls.is_some(), console = console.is_some(), "serving /metrics, /health and /ready");
                warn_if_exposed("metrics", addr, metrics_tls.is_some());
                rt.spawn(metrics::http::serve(
                    listener,
                    Arc::clone(&metrics),
                    metrics_tls,
                    console.clone(),
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, metrics_listen = %addr, "cannot listen for metrics");
                return ExitCode::FAILURE;
            }
        }
    }
    let soft = raise_open_file_limit();
    let mut config = args.store_config();
    config.max_open_files = open_file_budget(config.max_open_files, soft, args.max_connections);
    let store = match Store::open(config) {
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
    metrics.store_opened(store.clone());
    if let Some(console) = &console {
        let _in_runtime = rt.enter();
        console.start_sampling(store.clone(), Arc::clone(&net_stats));
    }
    let node = match (&args.cluster, args.node_id) {
        (Some(_), Some(_)) if args.durability != DurabilityArg::Fsync => {
            // An acknowledged append must survive a power cut on the leader
            // too, and the record of what was applied may not run ahead of
            // the events.
            tracing::error!("a cluster node needs --durability fsync");
            let _ = store.close();
            return ExitCode::FAILURE;
        }
        (Some(members), Some(id)) => {
            let config = logbook_consensus::node::NodeConfig {
                id,
                members: members.0.clone(),
                listen: match args.raft_listen {
                    Some(addr) => addr,
                    None => match members.0.get(&id).map(|m| m.raft.parse()) {
                        Some(Ok(addr)) => addr,
                        _ => {
                            tracing::error!(
                                node_id = id,
                                "--cluster names no numeric RAFT_ADDR for this node: set --raft-listen"
                            );
                            let _ = store.close();
                            return ExitCode::FAILURE;
                        }
                    },
                },
                cluster: "logbook".into(),
                secret: args.cluster_secret.clone(),
                dir: args.data_dir.join("raft"),
                join: args.join,
                seed: args.seed,
                snapshot_every: args.snapshot_every,
                tls: match (
                    &args.cluster_tls_cert,
                    &args.cluster_tls_key,
                    &args.cluster_tls_ca,
                ) {
                    (Some(cert), Some(key), Some(ca)) => {
                        match logbook_server::tls::load_peer_tls(cert, key, ca) {
                            Ok(tls) => Some(tls),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot load the replication port's TLS");
                                let _ = store.close();
                                return ExitCode::FAILURE;
                            }
                        }
                    }
                    _ => None,
                },
            };
            let tls_between_nodes = config.tls.is_some();
            let listen = config.listen;
            match rt.block_on(logbook_consensus::node::Node::start(config, store.clone())) {
                Ok(node) => {
                    tracing::info!(node_id = id, members = members.0.len(), raft_listen = %listen, "cluster node started");
                    if !listen.ip().is_loopback() && !tls_between_nodes {
                        tracing::warn!(%listen, secret = args.cluster_secret.is_some(), "the replication port listens beyond loopback in clear text: set --cluster-tls-cert, -key and -ca, or keep it on a private network with --cluster-secret");
                    }
                    Some(Arc::new(node))
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the cluster node");
                    let _ = store.close();
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    metrics.cluster_started(node.clone());
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        // Ready from here: connections queue on the bound socket.
        metrics.set_phase(Phase::Serving);
        let local = listener.local_addr()?;
        warn_if_exposed("client", local, tls.is_some());
        // `net::run_with_stats` says "accepting clients" once the users are
        // loaded (and the first admin made, if it has to be).
        let shutdown = async {
            shutdown_signal().await;
            metrics.set_phase(Phase::Stopping);
        };
        net::run_with_local(
            listener,
            store.clone(),
            net::ServerConfig {
                tls: tls.clone(),
                cluster: node.clone(),
                ..args.server_config()
            },
            net_stats,
            console.is_some().then_some(inside),
            shutdown,
        )
        .await
    });
    metrics.set_phase(Phase::Stopping);
    if let Some(node) = &node {
        // Before the store closes: the state machine applies to it.
        rt.block_on(node.shutdown());
    }
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

/// How `logbookd verify` shows its progress on stderr.
mod progress {
    use std::path::Path;
    use std::time::Instant;

    use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
    use logbook_storage::verify::Step;

    fn name(file: &Path) -> String {
        file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// A progress bar, for a terminal: bytes of segments checked out of the
    /// total, rate, time left, and the file being checked; then index
    /// tables checked out of the total.
    pub struct Bar(ProgressBar);

    /// Two lines, so that an 80-column terminal shows them unwrapped.
    const SEGMENTS: &str = "{spinner} [{elapsed_precise}] [{wide_bar}] {percent:>3}%\n  {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}";
    const TABLES: &str = "{spinner} [{elapsed_precise}] [{wide_bar}] {pos}/{len}\n  {wide_msg}";

    fn style(template: &str) -> ProgressStyle {
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    impl Bar {
        pub fn new() -> Bar {
            Bar(ProgressBar::new(0).with_style(style(SEGMENTS)))
        }

        pub fn step(&self, step: Step<'_>) {
            let bar = &self.0;
            match step {
                Step::SegmentStart {
                    file,
                    number,
                    count,
                    progress,
                    ..
                } => {
                    bar.set_length(progress.total);
                    bar.set_position(progress.done);
                    bar.set_message(format!("segment {number}/{count} {}", name(file)));
                }
                Step::Bytes(p) => bar.set_position(p.done),
                Step::SegmentDone {
                    file,
                    problems,
                    progress,
                    ..
                } => {
                    bar.set_position(progress.done);
                    if problems > 0 {
                        bar.println(format!("{}: {problems} problem(s)", file.display()));
                    }
                }
                Step::IndexStart { tables } => {
                    bar.set_style(style(TABLES));
                    bar.set_length(tables as u64);
                    bar.set_position(0);
                    bar.set_message("stream index tables");
                }
                Step::TableDone {
                    file,
                    number,
                    problems,
                    ..
                } => {
                    bar.set_position(number as u64);
                    bar.set_message(format!("index table {} checked", name(file)));
                    if problems > 0 {
                        bar.println(format!("{}: {problems} problem(s)", file.display()));
                    }
                }
                _ => {}
            }
        }

        pub fn finish(&self) {
            self.0.finish_and_clear();
        }
    }

    /// Plain lines, one per file, for logs and pipes.
    pub struct Lines {
        started: Instant,
    }

    impl Lines {
        pub fn new() -> Lines {
            Lines {
                started: Instant::now(),
            }
        }

        pub fn step(&mut self, step: Step<'_>) {
            match step {
                Step::SegmentDone {
                    file,
                    number,
                    count,
                    records,
                    problems,
                    progress,
                } => {
                    let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                    let pct = if progress.total == 0 {
                        100.0
                    } else {
                        progress.done as f64 * 100.0 / progress.total as f64
                    };
                    eprintln!(
                        "verify: segment {number}/{count} {}: {records} records, {} problem(s); {}/{} ({pct:.0}%), {}/s",
                        file.display(),
                        problems,
                        HumanBytes(progress.done),
                        HumanBytes(progress.total),
                        HumanBytes((progress.done as f64 / secs) as u64),
                    );
                }
                Step::IndexStart { tables } => {
                    eprintln!("verify: stream index: {tables} table(s)");
                }
                Step::TableDone {
                    file,
                    number,
                    count,
                    entries,
                    problems,
                } => {
                    eprintln!(
                        "verify: index table {number}/{count} {}: {entries} entries, {problems} problem(s)",
                        file.display()
                    );
                }
                _ => {}
            }
        }
    }
}
