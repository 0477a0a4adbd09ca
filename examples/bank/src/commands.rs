//! The command side: load an account, decide, append with the exact
//! expected version, and on a conflict load and decide again, through the
//! client's aggregate repository ([`logbook_client::es::Repository`]): this
//! module is the worked example of it.
//!
//! ```text
//! Bank::withdraw(id, 75.00)
//!   Repository::<BankAccount>::run(account-<id>, command id, decide):
//!   loop (at most max_attempts):
//!     load:   latest snapshot of account-<id>-snapshots (read backward, 1)
//!             + events of account-<id> after the version it covers
//!     decide: BankAccount::withdraw(state)  -> events, or DomainError
//!     append: account-<id>, Exact(version loaded) (NoStream if none)
//!             WrongExpectedVersion -> someone else wrote: loop again
//!   snapshot: if the stream grew N events past the snapshot loaded,
//!             append the new state to account-<id>-snapshots
//! ```
//!
//! **Why this never overdraws or loses a deposit.** A decision is only
//! written if the stream is still exactly at the version the decision was
//! made from; otherwise the server writes nothing and reports the conflict.
//! Two withdrawals racing from the same balance cannot both land: the
//! second is decided again against the balance the first left. Each
//! conflict means another command succeeded, so under contention some
//! command always makes progress; the bound on attempts only guards
//! against a pathological storm.
//!
//! **A command applies once, however often it is sent.** Each command has
//! an id ([`CommandId`]; fresh by default, or the caller's, e.g. an
//! idempotency key). The ids of the events it decides are derived from it
//! (a name-based UUID of the command id and the event's index), and each
//! event's metadata names it (`"$commandId"`). So:
//! - a retry of the very append (a lost reply) carries the same event ids
//!   and content: the server answers with the original result, even if
//!   other commands wrote to the account in between (event ids are unique
//!   in the store, and an exact resend of any stored batch is recognised);
//! - a command sent again after a crash is first looked for in the
//!   account: loading collects the command ids of the events it replays
//!   and the snapshot's list of the latest ones, and a command already
//!   there is answered as done without deciding again;
//! - if it was applied before all of those, deciding again yields the same
//!   event ids, and the server refuses them as duplicates
//!   (`DuplicateEventId`), which also means "already applied" (accounts
//!   written by earlier versions of the demo, whose metadata said
//!   `command_id`, are covered by this rule).
//!
//! **Snapshots are a cache.** An account's state after version `v` is
//! appended to its snapshot stream as `Snapshot {"version": v, "state":
//! ..., "commands": [...]}`; loading starts from the latest one. They are
//! never needed for correctness: an unreadable snapshot (say, from an older
//! program with a different state shape) is ignored and the account
//! replayed from the start, and a failed snapshot write only makes the next
//! load longer.

use std::collections::VecDeque;

use logbook_client::es::{
    Aggregate, Event, EventError, EventMeta, ExecuteError, Executed, Repository, RepositoryOptions,
};
use logbook_client::{Client, Error as ClientError, StreamVersion};
use serde::{Deserialize, Serialize};

use crate::domain::{AccountEvent, AccountId, BankAccount, DomainError, Money};

pub use logbook_client::es::CommandId;

/// Event type of the snapshot events in `account-<id>-snapshots`.
pub const SNAPSHOT_TYPE: &str = logbook_client::es::SNAPSHOT_TYPE;

/// Command ids a snapshot remembers (the latest ones applied to the
/// account), so that a command sent again is found even when its events
/// are older than the snapshot.
pub const REMEMBERED_COMMANDS: usize = 256;

/// The account's events as the repository stores them: the domain's own
/// encoding (event type and JSON payload), schema 1.
impl Event for AccountEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }

    fn encode(&self) -> Result<(String, serde_json::Value), EventError> {
        let (event_type, data) = AccountEvent::encode(self);
        let data = serde_json::from_slice(&data).map_err(|e| EventError::Encode(e.to_string()))?;
        Ok((event_type.to_owned(), data))
    }

    fn decode(event_type: &str, data: serde_json::Value) -> Result<Self, EventError> {
        let bad = |reason: String| EventError::Decode {
            event_type: event_type.to_owned(),
            version: 1,
            reason,
        };
        let bytes = serde_json::to_vec(&data).map_err(|e| bad(e.to_string()))?;
        AccountEvent::decode(event_type, &bytes).map_err(|e| bad(e.to_string()))
    }
}

impl Aggregate for BankAccount {
    type Event = AccountEvent;
    fn apply(&mut self, event: &AccountEvent) {
        *self = std::mem::take(self).apply(event);
    }
}

/// How the command side behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BankOptions {
    /// Write a snapshot once an account's stream has grown this many events
    /// past its latest snapshot. Default 100; 0 turns snapshots off
    /// (loading still uses existing ones).
    pub snapshot_every: u64,
    /// Load-decide-append rounds before a command gives up under
    /// contention. Default 50.
    pub max_attempts: u32,
}

impl Default for BankOptions {
    fn default() -> Self {
        BankOptions {
            snapshot_every: 100,
            max_attempts: 50,
        }
    }
}

/// Why a command did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A business rule refused the command; nothing was written.
    #[error("account {account}: {reason}")]
    Rejected {
        /// The account concerned.
        account: AccountId,
        /// The rule that refused it.
        reason: DomainError,
    },
    /// Every attempt met a concurrent write; nothing was written.
    #[error("account {account}: gave up after {attempts} attempts, the account kept changing")]
    Contention {
        /// The account concerned.
        account: AccountId,
        /// Attempts made.
        attempts: u32,
    },
    /// An event of the account cannot be read, so no decision is safe.
    #[error("an event of {stream} is unreadable: {source}")]
    BadEvent {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: EventError,
    },
    /// The event store failed (unreachable, timed out, ...).
    #[error("{0}")]
    Store(#[from] ClientError),
}

/// An account as loaded from the event store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The account.
    pub id: AccountId,
    /// Its state.
    pub state: BankAccount,
    /// The stream's last version; `None` if the stream has no events.
    pub version: Option<StreamVersion>,
    /// The version covered by the snapshot loading started from, if any.
    pub snapshot: Option<StreamVersion>,
    /// Events replayed on top of the snapshot (or from the start).
    pub events_replayed: u64,
    /// The latest command ids applied to the account (oldest first): the
    /// snapshot's list, then those of the events replayed.
    pub commands: VecDeque<CommandId>,
}

impl Loaded {
    /// Whether `command` is among the account's latest commands.
    pub fn applied(&self, command: CommandId) -> bool {
        self.commands.contains(&command)
    }

    fn of(id: AccountId, l: logbook_client::es::Loaded<BankAccount>) -> Loaded {
        Loaded {
            id,
            state: l.state,
            version: l.version,
            snapshot: l.snapshot_version,
            events_replayed: l.replayed,
            commands: l.commands,
        }
    }
}

/// What a successful command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The account.
    pub id: AccountId,
    /// Its state after the command.
    pub state: BankAccount,
    /// The stream's version after the command.
    pub version: StreamVersion,
    /// Load-decide-append rounds it took (1 without contention).
    pub attempts: u32,
    /// The command had been applied before (it was sent again); nothing
    /// was written this time.
    pub applied_earlier: bool,
}

impl Outcome {
    /// The balance after the command.
    pub fn balance(&self) -> Money {
        self.state.as_open().map_or(Money::ZERO, |a| a.balance)
    }
}

/// A snapshot event's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last stream version the state includes.
    pub version: StreamVersion,
    /// The state after that version.
    pub state: BankAccount,
    /// The latest command ids applied up to that version, oldest first.
    #[serde(default)]
    pub commands: VecDeque<CommandId>,
}

/// The command side, over one client connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Bank {
    accounts: Repository<BankAccount>,
}

impl Bank {
    /// The command side over `client`.
    pub fn new(client: Client, options: BankOptions) -> Bank {
        let mut repo_options = RepositoryOptions::default()
            .snapshot_every(options.snapshot_every)
            .max_attempts(options.max_attempts);
        repo_options.remembered_commands = REMEMBERED_COMMANDS;
        Bank {
            accounts: Repository::new(client).with_options(repo_options),
        }
    }

    /// The client it writes through.
    pub fn client(&self) -> &Client {
        self.accounts.client()
    }

    /// Opens account `id` (a fresh one if `None`).
    pub async fn open(
        &self,
        id: Option<AccountId>,
        owner: &str,
        initial_balance: Money,
        currency: &str,
    ) -> Result<Outcome, CommandError> {
        let id = id.unwrap_or_default();
        self.execute(id, |account| account.open(owner, initial_balance, currency))
            .await
    }

    /// Deposits `amount` into account `id`.
    pub async fn deposit(
        &self,
        id: AccountId,
        amount: Money,
        description: &str,
    ) -> Result<Outcome, CommandError> {
        self.deposit_once(CommandId::new(), id, amount, description)
            .await
    }

    /// [`Bank::deposit`] as command `command`: sent again with the same
    /// id, it applies once.
    pub async fn deposit_once(
        &self,
        command: CommandId,
        id: AccountId,
        amount: Money,
        description: &str,
    ) -> Result<Outcome, CommandError> {
        self.run(id, command, |account| account.deposit(amount, description))
            .await
    }

    /// Withdraws `amount` from account `id`.
    pub async fn withdraw(
        &self,
        id: AccountId,
        amount: Money,
        description: &str,
    ) -> Result<Outcome, CommandError> {
        self.withdraw_once(CommandId::new(), id, amount, description)
            .await
    }

    /// [`Bank::withdraw`] as command `command`: sent again with the same
    /// id, it applies once.
    pub async fn withdraw_once(
        &self,
        command: CommandId,
        id: AccountId,
        amount: Money,
        description: &str,
    ) -> Result<Outcome, CommandError> {
        self.run(id, command, |account| account.withdraw(amount, description))
            .await
    }

    /// Runs a decision against account `id`: load, decide, append with the
    /// exact expected version, and again on a conflict (up to
    /// [`BankOptions::max_attempts`] rounds). `decide` may run several
    /// times and must depend only on the state it is given.
    pub async fn execute<F>(&self, id: AccountId, decide: F) -> Result<Outcome, CommandError>
    where
        F: Fn(&BankAccount) -> Result<Vec<AccountEvent>, DomainError>,
    {
        self.run(id, CommandId::new(), decide).await
    }

    /// [`Bank::execute`] as command `command`: sent again with the same id
    /// (after a lost reply or a crash), it applies once (see the module
    /// docs).
    pub async fn run<F>(
        &self,
        id: AccountId,
        command: CommandId,
        decide: F,
    ) -> Result<Outcome, CommandError>
    where
        F: Fn(&BankAccount) -> Result<Vec<AccountEvent>, DomainError>,
    {
        let stream = id.stream();
        let ran = self
            .accounts
            .run(&stream, command, EventMeta::default(), decide)
            .await
            .map_err(|e| match e {
                ExecuteError::Rejected(reason) => CommandError::Rejected {
                    account: id,
                    reason,
                },
                ExecuteError::Conflict { attempts } => CommandError::Contention {
                    account: id,
                    attempts,
                },
                ExecuteError::Event(source) => CommandError::BadEvent {
                    stream: stream.clone(),
                    source,
                },
                ExecuteError::Client(e) => CommandError::Store(e),
            })?;
        Ok(Outcome {
            id,
            state: ran.state,
            version: ran.version.unwrap_or(StreamVersion(0)),
            attempts: ran.attempts,
            applied_earlier: matches!(ran.executed, Executed::AlreadyApplied),
        })
    }

    /// Loads account `id`: its latest snapshot, then the events after it.
    pub async fn load(&self, id: AccountId) -> Result<Loaded, CommandError> {
        let stream = id.stream();
        self.accounts
            .load(&stream)
            .await
            .map(|l| Loaded::of(id, l))
            .map_err(|e| load_error(stream, e))
    }

    /// Loads account `id` from its first event, ignoring snapshots: what
    /// loading costs without them (`bank bench-load`), and a cross-check.
    pub async fn load_without_snapshot(&self, id: AccountId) -> Result<Loaded, CommandError> {
        let stream = id.stream();
        self.accounts
            .load_without_snapshot(&stream)
            .await
            .map(|l| Loaded::of(id, l))
            .map_err(|e| load_error(stream, e))
    }
}

fn load_error(stream: String, e: ExecuteError<std::convert::Infallible>) -> CommandError {
    match e {
        ExecuteError::Event(source) => CommandError::BadEvent { stream, source },
        ExecuteError::Client(e) => CommandError::Store(e),
        ExecuteError::Rejected(never) => match never {},
        ExecuteError::Conflict { .. } => {
            CommandError::Store(ClientError::Internal("a load does not conflict".into()))
        }
    }
}
