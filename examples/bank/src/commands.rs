//! The command side: load an account, decide, append with the exact
//! expected version, and on a conflict load and decide again.
//!
//! ```text
//! Bank::withdraw(id, 75.00)
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
//! event's metadata names it (`{"command_id": "..."}`). So:
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
//!   (`DuplicateEventId`), which also means "already applied".
//!
//! **Snapshots are a cache.** An account's state after version `v` is
//! appended to its snapshot stream as `Snapshot {"version": v, "state":
//! ...}`; loading starts from the latest one. They are never needed for
//! correctness: an unreadable snapshot (say, from an older program with a
//! different state shape) is ignored and the account replayed from the
//! start, and a failed snapshot write only makes the next load longer.

use std::collections::VecDeque;

use futures::TryStreamExt;
use logbook_client::{
    Client, Error as ClientError, EventId, ExpectedVersion, NewEvent, ReadStreamOptions,
    RecordedEvent, StreamVersion,
};
use serde::{Deserialize, Serialize};
use tracing::warn;
use uuid::Uuid;

use crate::domain::{AccountEvent, AccountId, BankAccount, DecodeError, DomainError, Money};

/// Event type of the snapshot events in `account-<id>-snapshots`.
pub const SNAPSHOT_TYPE: &str = "Snapshot";

/// Command ids a snapshot remembers (the latest ones applied to the
/// account), so that a command sent again is found even when its events
/// are older than the snapshot.
pub const REMEMBERED_COMMANDS: usize = 256;

/// A command's identity: the same id sent again applies once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommandId(pub Uuid);

impl CommandId {
    /// A fresh id (time-ordered).
    pub fn new() -> CommandId {
        CommandId(Uuid::now_v7())
    }

    /// The id of the `index`-th event the command decides: a name-based
    /// (v5) UUID of the command id and the index, so that deciding again
    /// gives the same ids.
    pub fn event_id(&self, index: usize) -> EventId {
        EventId(*Uuid::new_v5(&self.0, &(index as u64).to_le_bytes()).as_bytes())
    }
}

impl Default for CommandId {
    fn default() -> Self {
        CommandId::new()
    }
}

impl std::fmt::Display for CommandId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for CommandId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<CommandId, uuid::Error> {
        Uuid::parse_str(s).map(CommandId)
    }
}

/// The metadata of an event a command decided.
#[derive(Serialize, Deserialize)]
struct EventMetadata {
    command_id: CommandId,
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
    #[error("event {version} of {stream} is unreadable: {source}")]
    BadEvent {
        /// The stream.
        stream: String,
        /// The event's version.
        version: StreamVersion,
        /// Why.
        #[source]
        source: DecodeError,
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

    fn remember(&mut self, command: CommandId) {
        if self.commands.back() != Some(&command) {
            self.commands.push_back(command);
            while self.commands.len() > REMEMBERED_COMMANDS {
                self.commands.pop_front();
            }
        }
    }

    /// Events in the stream past the snapshot loaded.
    fn since_snapshot(&self) -> u64 {
        let version = |v: Option<StreamVersion>| v.map_or(0, |v| v.0 + 1);
        version(self.version).saturating_sub(version(self.snapshot))
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
    client: Client,
    options: BankOptions,
}

impl Bank {
    /// The command side over `client`.
    pub fn new(client: Client, options: BankOptions) -> Bank {
        Bank { client, options }
    }

    /// The client it writes through.
    pub fn client(&self) -> &Client {
        &self.client
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
    /// times, must depend only on the state it is given, and returns at
    /// least one event (the server refuses an empty append).
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
        for attempt in 1..=self.options.max_attempts.max(1) {
            let loaded = self.load(id).await?;
            if loaded.applied(command) {
                return Ok(Outcome {
                    id,
                    version: loaded.version.unwrap_or(StreamVersion(0)),
                    state: loaded.state,
                    attempts: attempt,
                    applied_earlier: true,
                });
            }
            let events = decide(&loaded.state).map_err(|reason| CommandError::Rejected {
                account: id,
                reason,
            })?;
            let expected = match loaded.version {
                Some(version) => ExpectedVersion::Exact(version),
                None => ExpectedVersion::NoStream,
            };
            let batch = events
                .iter()
                .enumerate()
                .map(|(i, e)| encode(e, command, i))
                .collect();
            match self.client.append(stream.as_str(), expected, batch).await {
                Ok(appended) => {
                    let state = events.iter().fold(loaded.state.clone(), BankAccount::apply);
                    let grown = events.len() as u64;
                    if self.options.snapshot_every > 0
                        && loaded.since_snapshot() + grown >= self.options.snapshot_every
                    {
                        let mut commands = loaded.commands.clone();
                        commands.push_back(command);
                        self.write_snapshot(id, appended.last_version, &state, commands)
                            .await;
                    }
                    return Ok(Outcome {
                        id,
                        state,
                        version: appended.last_version,
                        attempts: attempt,
                        applied_earlier: false,
                    });
                }
                Err(ClientError::WrongExpectedVersion { .. }) => continue,
                // Our own event ids are stored, with other content: this
                // command was applied before, decided from an older state.
                Err(ClientError::DuplicateEventId { id: stored, .. })
                    if (0..events.len()).any(|i| command.event_id(i) == stored) =>
                {
                    let now = self.load(id).await?;
                    return Ok(Outcome {
                        id,
                        version: now.version.unwrap_or(StreamVersion(0)),
                        state: now.state,
                        attempts: attempt,
                        applied_earlier: true,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(CommandError::Contention {
            account: id,
            attempts: self.options.max_attempts.max(1),
        })
    }

    /// Loads account `id`: its latest snapshot, then the events after it.
    pub async fn load(&self, id: AccountId) -> Result<Loaded, CommandError> {
        match self.latest_snapshot(id).await? {
            Some(snapshot) => {
                self.replay(
                    id,
                    snapshot.state,
                    Some(snapshot.version),
                    snapshot.commands,
                )
                .await
            }
            None => {
                self.replay(id, BankAccount::default(), None, VecDeque::new())
                    .await
            }
        }
    }

    /// Loads account `id` from its first event, ignoring snapshots: what
    /// loading costs without them (`bank bench-load`), and a cross-check.
    pub async fn load_without_snapshot(&self, id: AccountId) -> Result<Loaded, CommandError> {
        self.replay(id, BankAccount::default(), None, VecDeque::new())
            .await
    }

    /// The latest readable snapshot of account `id`, if any.
    async fn latest_snapshot(&self, id: AccountId) -> Result<Option<Snapshot>, CommandError> {
        let stream = id.snapshot_stream();
        let newest = ReadStreamOptions::default().backward().max_count(1);
        let page = match self.client.read_stream_page(stream.as_str(), newest).await {
            Ok(page) => page,
            Err(ClientError::StreamNotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(event) = page.events.first() else {
            return Ok(None);
        };
        match serde_json::from_slice::<Snapshot>(&event.data) {
            Ok(snapshot) if event.event_type.as_str() == SNAPSHOT_TYPE => Ok(Some(snapshot)),
            Ok(_) => Ok(None),
            Err(e) => {
                warn!(%stream, version = %event.version, error = %e, "ignoring an unreadable snapshot");
                Ok(None)
            }
        }
    }

    /// Folds the events of account `id` after `from` (all of them if
    /// `None`) into `state`.
    async fn replay(
        &self,
        id: AccountId,
        state: BankAccount,
        from: Option<StreamVersion>,
        commands: VecDeque<CommandId>,
    ) -> Result<Loaded, CommandError> {
        let mut loaded = Loaded {
            id,
            state,
            version: from,
            snapshot: from,
            events_replayed: 0,
            commands,
        };
        let stream = id.stream();
        let mut options = ReadStreamOptions::default();
        if let Some(covered) = from {
            options = options.from(StreamVersion(covered.0 + 1));
        }
        let mut events = self.client.read_stream(stream.as_str(), options);
        loop {
            let recorded = match events.try_next().await {
                Ok(Some(recorded)) => recorded,
                Ok(None) => break,
                // A stream nobody wrote to: an account never opened.
                Err(ClientError::StreamNotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            let event = decode(&stream, &recorded)?;
            loaded.state = loaded.state.apply(&event);
            loaded.version = Some(recorded.version);
            loaded.events_replayed += 1;
            // Events of older programs carry no command id.
            if let Ok(meta) = serde_json::from_slice::<EventMetadata>(&recorded.metadata) {
                loaded.remember(meta.command_id);
            }
        }
        Ok(loaded)
    }

    /// Appends a snapshot of `state` at `version`. A failure is logged, not
    /// returned: the command it follows has already succeeded, and a
    /// missing snapshot only makes loading longer.
    async fn write_snapshot(
        &self,
        id: AccountId,
        version: StreamVersion,
        state: &BankAccount,
        mut commands: VecDeque<CommandId>,
    ) {
        while commands.len() > REMEMBERED_COMMANDS {
            commands.pop_front();
        }
        let snapshot = Snapshot {
            version,
            state: state.clone(),
            commands,
        };
        let data = match serde_json::to_vec(&snapshot) {
            Ok(data) => data,
            Err(e) => {
                warn!(account = %id, error = %e, "cannot encode a snapshot");
                return;
            }
        };
        let event = NewEvent::new(EventId::new_v7(), SNAPSHOT_TYPE, data);
        // `Any`: snapshots of racing commands may land out of order. That is
        // harmless: each says which version it covers, and loading replays
        // whatever follows it.
        let stream = id.snapshot_stream();
        if let Err(e) = self
            .client
            .append(stream.as_str(), ExpectedVersion::Any, vec![event])
            .await
        {
            warn!(account = %id, error = %e, "snapshot not written");
        }
    }
}

/// The `index`-th event decided by `command`, with its derived id and the
/// command id in its metadata.
fn encode(event: &AccountEvent, command: CommandId, index: usize) -> NewEvent {
    let (event_type, data) = event.encode();
    let metadata = serde_json::to_vec(&EventMetadata {
        command_id: command,
    })
    .unwrap_or_default();
    NewEvent::new(command.event_id(index), event_type, data).with_metadata(metadata)
}

fn decode(stream: &str, recorded: &RecordedEvent) -> Result<AccountEvent, CommandError> {
    AccountEvent::decode(&recorded.event_type, &recorded.data).map_err(|source| {
        CommandError::BadEvent {
            stream: stream.to_owned(),
            version: recorded.version,
            source,
        }
    })
}
