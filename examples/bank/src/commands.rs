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
//! **Snapshots are a cache.** An account's state after version `v` is
//! appended to its snapshot stream as `Snapshot {"version": v, "state":
//! ...}`; loading starts from the latest one. They are never needed for
//! correctness: an unreadable snapshot (say, from an older program with a
//! different state shape) is ignored and the account replayed from the
//! start, and a failed snapshot write only makes the next load longer.

use futures::TryStreamExt;
use logbook_client::{
    Client, Error as ClientError, EventId, ExpectedVersion, NewEvent, ReadStreamOptions,
    RecordedEvent, StreamVersion,
};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::domain::{AccountEvent, AccountId, BankAccount, DecodeError, DomainError, Money};

/// Event type of the snapshot events in `account-<id>-snapshots`.
pub const SNAPSHOT_TYPE: &str = "Snapshot";

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
}

impl Loaded {
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
        self.execute(id, |account| account.deposit(amount, description))
            .await
    }

    /// Withdraws `amount` from account `id`.
    pub async fn withdraw(
        &self,
        id: AccountId,
        amount: Money,
        description: &str,
    ) -> Result<Outcome, CommandError> {
        self.execute(id, |account| account.withdraw(amount, description))
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
        let stream = id.stream();
        for attempt in 1..=self.options.max_attempts.max(1) {
            let loaded = self.load(id).await?;
            let events = decide(&loaded.state).map_err(|reason| CommandError::Rejected {
                account: id,
                reason,
            })?;
            let expected = match loaded.version {
                Some(version) => ExpectedVersion::Exact(version),
                None => ExpectedVersion::NoStream,
            };
            let batch = events.iter().map(encode).collect();
            match self.client.append(stream.as_str(), expected, batch).await {
                Ok(appended) => {
                    let state = events.iter().fold(loaded.state.clone(), BankAccount::apply);
                    let grown = events.len() as u64;
                    if self.options.snapshot_every > 0
                        && loaded.since_snapshot() + grown >= self.options.snapshot_every
                    {
                        self.write_snapshot(id, appended.last_version, &state).await;
                    }
                    return Ok(Outcome {
                        id,
                        state,
                        version: appended.last_version,
                        attempts: attempt,
                    });
                }
                Err(ClientError::WrongExpectedVersion { .. }) => continue,
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
                self.replay(id, snapshot.state, Some(snapshot.version))
                    .await
            }
            None => self.replay(id, BankAccount::default(), None).await,
        }
    }

    /// Loads account `id` from its first event, ignoring snapshots: what
    /// loading costs without them (`bank bench-load`), and a cross-check.
    pub async fn load_without_snapshot(&self, id: AccountId) -> Result<Loaded, CommandError> {
        self.replay(id, BankAccount::default(), None).await
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
        mut state: BankAccount,
        from: Option<StreamVersion>,
    ) -> Result<Loaded, CommandError> {
        let stream = id.stream();
        let mut options = ReadStreamOptions::default();
        if let Some(covered) = from {
            options = options.from(StreamVersion(covered.0 + 1));
        }
        let mut events = self.client.read_stream(stream.as_str(), options);
        let mut version = from;
        let mut replayed = 0;
        loop {
            let recorded = match events.try_next().await {
                Ok(Some(recorded)) => recorded,
                Ok(None) => break,
                // A stream nobody wrote to: an account never opened.
                Err(ClientError::StreamNotFound { .. }) => break,
                Err(e) => return Err(e.into()),
            };
            let event = decode(&stream, &recorded)?;
            state = state.apply(&event);
            version = Some(recorded.version);
            replayed += 1;
        }
        Ok(Loaded {
            id,
            state,
            version,
            snapshot: from,
            events_replayed: replayed,
        })
    }

    /// Appends a snapshot of `state` at `version`. A failure is logged, not
    /// returned: the command it follows has already succeeded, and a
    /// missing snapshot only makes loading longer.
    async fn write_snapshot(&self, id: AccountId, version: StreamVersion, state: &BankAccount) {
        let snapshot = Snapshot {
            version,
            state: state.clone(),
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

fn encode(event: &AccountEvent) -> NewEvent {
    let (event_type, data) = event.encode();
    NewEvent::new(EventId::new_v7(), event_type, data)
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
