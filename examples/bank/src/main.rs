//! `bank`: the command line of the bank-account demo. Parses arguments,
//! calls the library, prints; see `examples/bank/README.md`.
//!
//! Exit codes: 0 done; 1 a business rule rejected the command; 2 bad usage
//! (clap); 3 anything else failed (server unreachable, database error).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use logbook_bank::bench::{self, BenchOptions};
use logbook_bank::http;
use logbook_bank::projector::{self, CrashAfter, CrashMode, ProjectorOptions};
use logbook_bank::{
    AccountId, Bank, BankOptions, CommandError, CommandId, Money, Outcome, ReadModel,
};
use logbook_client::{Client, ClientOptions};

/// Bank accounts on Logbook: commands append events, `project` keeps a
/// SQLite read model, queries read it.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Address of the logbookd server.
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_SERVER",
        default_value = "127.0.0.1:7117"
    )]
    server: String,

    /// SQLite file of the read model (project, accounts, balance, history).
    #[arg(long, global = true, default_value = "./bank.db")]
    db: PathBuf,

    /// Write an account snapshot every this many events (0: never).
    #[arg(long, global = true, default_value_t = 100)]
    snapshot_every: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open an account; prints its id alone on the last line.
    Open {
        /// The owner's name.
        #[arg(long)]
        owner: String,
        /// Opening balance, in major units: 1000 or 10.50.
        #[arg(long, default_value = "0", allow_negative_numbers = true)]
        initial: Money,
        /// ISO 4217 currency code.
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// Use this id instead of a fresh one.
        #[arg(long)]
        id: Option<AccountId>,
    },
    /// Pay money in: `bank deposit <ID> 250 --description Salary`.
    Deposit {
        /// The account.
        id: AccountId,
        /// Amount in major units: 250 or 10.50.
        #[arg(allow_negative_numbers = true)]
        amount: Money,
        /// Text for the statement.
        #[arg(long, default_value = "")]
        description: String,
        /// The command's id: sending the same command again with it (after
        /// a timeout, a crash) applies it once. Default: a fresh one.
        #[arg(long)]
        command_id: Option<CommandId>,
    },
    /// Take money out; refused beyond the balance.
    Withdraw {
        /// The account.
        id: AccountId,
        /// Amount in major units: 75 or 10.50.
        #[arg(allow_negative_numbers = true)]
        amount: Money,
        /// Text for the statement.
        #[arg(long, default_value = "")]
        description: String,
        /// The command's id (see `deposit --command-id`).
        #[arg(long)]
        command_id: Option<CommandId>,
    },
    /// Follow the log into the SQLite read model.
    Project {
        /// Exit once the read model has caught up with the log.
        #[arg(long)]
        until_caught_up: bool,
        /// Drop the read model and rebuild it from the start of the log.
        #[arg(long)]
        rebuild: bool,
        /// Most events per SQLite transaction.
        #[arg(long, default_value_t = 500)]
        batch_events: usize,
        /// Test hook: abort the process mid-transaction after N commits.
        #[arg(long, hide = true)]
        crash_after_commits: Option<u64>,
    },
    /// List the accounts (from the read model).
    Accounts,
    /// Show one account's balance (from the read model).
    Balance {
        /// The account.
        id: AccountId,
    },
    /// Show one account's transactions (from the read model).
    History {
        /// The account.
        id: AccountId,
    },
    /// Serve the command side over HTTP: POST /commands/open-account,
    /// /commands/deposit, /commands/withdraw; GET /health.
    ServeCommands {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8001")]
        listen: std::net::SocketAddr,
    },
    /// Serve the query side over HTTP, projecting the log into --db: GET
    /// /accounts, /accounts/{id}, /accounts/{id}/transactions, /health.
    ServeQueries {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8002")]
        listen: std::net::SocketAddr,
    },
    /// Build an account of N events and time loading it with and without
    /// snapshots.
    BenchLoad {
        /// Events in the account.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Loads timed each way.
        #[arg(long, default_value_t = 5)]
        runs: u32,
    },
}

/// A failure and its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl From<CommandError> for Failure {
    fn from(e: CommandError) -> Failure {
        match e {
            CommandError::Rejected { .. } => Failure {
                code: 1,
                message: format!("rejected: {e}"),
            },
            e => failed(e),
        }
    }
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 3,
        message: format!("error: {e}"),
    }
}

/// Resolves at Ctrl-C or SIGTERM: the services finish their requests
/// under way and exit.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = ctrl_c => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let options = BankOptions {
        snapshot_every: cli.snapshot_every,
        ..BankOptions::default()
    };
    match cli.command {
        Command::Open {
            owner,
            initial,
            currency,
            id,
        } => {
            let bank = Bank::new(connect(&cli.server).await?, options);
            let done = match bank.open(id, &owner, initial, &currency).await {
                Ok(done) => done,
                // The fresh id of an account never opened means nothing to
                // the user: give just the reason.
                Err(CommandError::Rejected { reason, .. }) if id.is_none() => {
                    return Err(Failure {
                        code: 1,
                        message: format!("rejected: {reason}"),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            println!("opened an account for {owner} with {initial} {currency}");
            println!("{}", done.id);
        }
        Command::Deposit {
            id,
            amount,
            description,
            command_id,
        } => {
            let bank = Bank::new(connect(&cli.server).await?, options);
            let command = command_id.unwrap_or_default();
            let done = bank.deposit_once(command, id, amount, &description).await?;
            report("deposited", amount, &done);
        }
        Command::Withdraw {
            id,
            amount,
            description,
            command_id,
        } => {
            let bank = Bank::new(connect(&cli.server).await?, options);
            let command = command_id.unwrap_or_default();
            let done = bank
                .withdraw_once(command, id, amount, &description)
                .await?;
            report("withdrew", amount, &done);
        }
        Command::Project {
            until_caught_up,
            rebuild,
            batch_events,
            crash_after_commits,
        } => {
            let client = connect(&cli.server).await?;
            let mut model = ReadModel::open(&cli.db).map_err(failed)?;
            let options = ProjectorOptions {
                until_caught_up,
                rebuild,
                batch_events,
                crash: crash_after_commits.map(|commits| CrashAfter {
                    commits,
                    mode: CrashMode::Abort,
                }),
            };
            if !until_caught_up {
                // Stopping at any moment is safe: each batch commits with
                // its checkpoint, so a restart resumes exactly after it.
                eprintln!(
                    "projecting account events into {} (Ctrl-C to stop)",
                    cli.db.display()
                );
            }
            let done = projector::project(&client, &mut model, options)
                .await
                .map_err(failed)?;
            println!(
                "caught up: {} events applied in {} SQLite transaction(s); checkpoint {}",
                done.events_applied,
                done.commits,
                done.checkpoint.map_or(0, |c| c.0)
            );
        }
        Command::Accounts => {
            let model = ReadModel::open(&cli.db).map_err(failed)?;
            let accounts = model.accounts().map_err(failed)?;
            if accounts.is_empty() {
                println!("no accounts (yet)");
            }
            for a in &accounts {
                println!(
                    "{}  {:<16} {:>14} {}  v{}",
                    a.id, a.owner, a.balance, a.currency, a.version
                );
            }
            freshness(&cli.server, &model).await;
        }
        Command::Balance { id } => {
            let model = ReadModel::open(&cli.db).map_err(failed)?;
            match model.account(id).map_err(failed)? {
                Some(a) => println!("{} {}", a.balance, a.currency),
                None => println!("account {id} is not in the read model"),
            }
            freshness(&cli.server, &model).await;
        }
        Command::History { id } => {
            let model = ReadModel::open(&cli.db).map_err(failed)?;
            let rows = model.history(id).map_err(failed)?;
            if rows.is_empty() {
                println!("account {id} has no transactions in the read model");
            }
            for t in &rows {
                println!(
                    "{}  #{:<8} {:<10} {:>14}  {}",
                    t.time, t.position, t.kind, t.amount, t.description
                );
            }
            freshness(&cli.server, &model).await;
        }
        Command::ServeCommands { listen } => {
            let bank = Bank::new(connect(&cli.server).await?, options);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(failed)?;
            eprintln!(
                "command service listening on http://{}",
                listener.local_addr().map_err(failed)?
            );
            http::serve(listener, http::command_router(bank), shutdown_signal())
                .await
                .map_err(failed)?;
        }
        Command::ServeQueries { listen } => {
            let client = connect(&cli.server).await?;
            let service = http::QueryService::start(client, cli.db.clone()).map_err(failed)?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(failed)?;
            eprintln!(
                "query service listening on http://{}",
                listener.local_addr().map_err(failed)?
            );
            http::serve(listener, service.router(), shutdown_signal())
                .await
                .map_err(failed)?;
        }
        Command::BenchLoad { events, runs } => {
            let bank = Bank::new(connect(&cli.server).await?, options);
            let bench_options = BenchOptions {
                events,
                runs,
                ..BenchOptions::default()
            };
            let r = bench::bench_load(&bank, bench_options).await?;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "account {}: {} events (built in {:.1} s), latest snapshot at version {}, snapshot every {}",
                r.account,
                r.version.map_or(0, |v| v.0 + 1),
                r.build.as_secs_f64(),
                r.snapshot.map_or("none".to_owned(), |v| v.to_string()),
                cli.snapshot_every,
            );
            for (label, t) in [
                ("full replay", &r.full),
                ("from snapshot", &r.from_snapshot),
            ] {
                println!(
                    "{label:<14} {:>7} events replayed  median {:>9.3} ms  (min {:.3}, max {:.3}, {} runs)",
                    t.events_replayed,
                    ms(t.median()),
                    ms(t.samples.first().copied().unwrap_or_default()),
                    ms(t.samples.last().copied().unwrap_or_default()),
                    t.samples.len(),
                );
            }
        }
    }
    Ok(())
}

async fn connect(server: &str) -> Result<Client, Failure> {
    Client::connect(server)
        .await
        .map_err(|e| failed(format!("logbookd at {server}: {e}")))
}

fn report(verb: &str, amount: Money, done: &Outcome) {
    let currency = done.state.as_open().map_or("", |a| a.currency.as_str());
    if done.applied_earlier {
        println!(
            "this command was applied before; not applied again. balance {} {currency} (account {}, version {})",
            done.balance(),
            done.id,
            done.version
        );
        return;
    }
    println!(
        "{verb} {amount} {currency}; balance {} {currency} (account {}, version {})",
        done.balance(),
        done.id,
        done.version
    );
}

/// Says on stderr how far behind the log the read model is; answers from
/// SQLite whatever the server says, or if it says nothing.
async fn freshness(server: &str, model: &ReadModel) {
    // Short bounds: a query should not hang because the server is down.
    let options = ClientOptions::default()
        .connect_timeout(Some(Duration::from_secs(1)))
        .request_timeout(Some(Duration::from_secs(2)));
    let lag = match Client::connect_with(server, options).await {
        Ok(client) => projector::lag(&client, model).await,
        Err(e) => Err(e.into()),
    };
    match lag {
        Ok(lag) if lag.events_behind() == 0 => {
            eprintln!(
                "(read model up to date with the log at position {})",
                lag.head
            )
        }
        Ok(lag) => eprintln!(
            "(read model {} log events behind: at {} of {}; run `bank project`)",
            lag.events_behind(),
            lag.checkpoint,
            lag.head
        ),
        Err(e) => eprintln!(
            "(cannot reach logbookd at {server} to tell how far behind the log this is: {e}; \
             answered from the read model as last projected)"
        ),
    }
}
