//! Shared by the end-to-end tests: a real daemon in this process (port 0,
//! temporary directory), the `bank` binary as a subprocess, and the
//! "truth" the read model is checked against: the account events of the
//! log, folded directly.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use futures::TryStreamExt;
use logbook_bank::projector::{self, ProjectorOptions};
use logbook_bank::read_model::TransactionRow;
use logbook_bank::{
    AccountEvent, AccountId, Bank, BankOptions, Money, ProjectionReport, ProjectorError, ReadModel,
};
use logbook_client::{Client, LogPosition, ReadAllOptions};
use logbook_tests::TestServer;

/// A daemon, a client, the command side and a read-model path.
pub struct Env {
    pub server: TestServer,
    pub client: Client,
    pub bank: Bank,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl Env {
    pub async fn start() -> Env {
        Env::start_with(BankOptions::default()).await
    }

    pub async fn start_with(options: BankOptions) -> Env {
        let server = TestServer::start().await;
        let client = Client::connect(server.addr).await.expect("connect");
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("bank.db");
        Env {
            bank: Bank::new(client.clone(), options),
            server,
            client,
            dir,
            db,
        }
    }

    /// Opens an account with an initial balance in cents.
    pub async fn open(&self, owner: &str, cents: i64) -> AccountId {
        self.bank
            .open(None, owner, Money(cents), "EUR")
            .await
            .expect("open")
            .id
    }

    /// Runs the projector until it has caught up.
    pub async fn project(
        &self,
        options: ProjectorOptions,
    ) -> Result<ProjectionReport, ProjectorError> {
        let mut model = ReadModel::open(&self.db).expect("open read model");
        projector::project(
            &self.client,
            &mut model,
            ProjectorOptions {
                until_caught_up: true,
                ..options
            },
        )
        .await
    }

    pub fn model(&self) -> ReadModel {
        ReadModel::open(&self.db).expect("open read model")
    }

    /// Runs the `bank` binary against this daemon and read model.
    pub async fn bank_cli(&self, args: &[&str]) -> Output {
        run_bank(
            self.server.addr.to_string(),
            self.db.clone(),
            self.dir.path(),
            args,
        )
        .await
    }
}

/// Runs `bank --server <server> --db <db> <args>` in `cwd`, off the async
/// workers (the daemon runs on them).
pub async fn run_bank(server: String, db: PathBuf, cwd: &Path, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let cwd = cwd.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bank"))
            .arg("--server")
            .arg(server)
            .arg("--db")
            .arg(db)
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("run bank")
    })
    .await
    .expect("bank task")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// An account as its events say, with the log positions of its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Truth {
    pub owner: String,
    pub balance: Money,
    pub version: u64,
    /// (kind, amount, description, position) per event, as the read model
    /// names them.
    pub transactions: Vec<(String, Money, String, LogPosition)>,
}

/// Every account folded from the log's events before `until` (all of
/// them if `None`).
pub async fn truth(client: &Client, until: Option<LogPosition>) -> BTreeMap<AccountId, Truth> {
    let events: Vec<_> = client
        .read_all(ReadAllOptions::default())
        .try_collect()
        .await
        .expect("read all");
    let mut accounts: BTreeMap<AccountId, Truth> = BTreeMap::new();
    for recorded in events {
        if until.is_some_and(|u| recorded.position >= u) {
            break;
        }
        let Some(id) = AccountId::from_stream(&recorded.stream) else {
            continue;
        };
        let event = AccountEvent::decode(&recorded.event_type, &recorded.data).expect("decode");
        let account = accounts.entry(id).or_default();
        account.version = recorded.version.0;
        let row = match event {
            AccountEvent::AccountOpened(e) => {
                account.owner = e.owner;
                account.balance = e.initial_balance;
                ("open", e.initial_balance, "Account opened".to_owned())
            }
            AccountEvent::MoneyDeposited(m) => {
                account.balance = Money(account.balance.cents() + m.amount.cents());
                ("deposit", m.amount, m.description)
            }
            AccountEvent::MoneyWithdrawn(m) => {
                account.balance = Money(account.balance.cents() - m.amount.cents());
                assert!(
                    account.balance >= Money::ZERO,
                    "{id} overdrawn at {}",
                    recorded.position
                );
                ("withdrawal", m.amount, m.description)
            }
        };
        account
            .transactions
            .push((row.0.to_owned(), row.1, row.2, recorded.position));
    }
    accounts
}

/// The read model in the same shape as [`truth`].
pub fn read_model_state(model: &ReadModel) -> BTreeMap<AccountId, Truth> {
    model
        .accounts()
        .expect("accounts")
        .into_iter()
        .map(|a| {
            let transactions = model
                .history(a.id)
                .expect("history")
                .into_iter()
                .map(|t: TransactionRow| (t.kind, t.amount, t.description, t.position))
                .collect();
            (
                a.id,
                Truth {
                    owner: a.owner,
                    balance: a.balance,
                    version: a.version.0,
                    transactions,
                },
            )
        })
        .collect()
}

/// Asserts the read model holds exactly the events before its checkpoint,
/// each once.
pub async fn assert_read_model_matches_log(client: &Client, model: &ReadModel) {
    let checkpoint = match model.checkpoint().expect("checkpoint") {
        Some(logbook_client::Checkpoint::All { next }) => Some(next),
        None => Some(LogPosition(0)),
        Some(other) => panic!("unexpected checkpoint {other:?}"),
    };
    let expected = truth(client, checkpoint).await;
    let rows: usize = expected.values().map(|a| a.transactions.len()).sum();
    assert_eq!(model.transaction_count().expect("count"), rows as u64);
    assert_eq!(read_model_state(model), expected);
}
