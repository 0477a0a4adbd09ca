//! The projector: follows the global log and keeps the SQLite read model
//! in step with the account events, exactly once across crashes and
//! restarts.
//!
//! ```text
//! subscribe_all(from: checkpoint in SQLite,
//!               filter: streams "account-", types AccountOpened/Money*)
//!   Event           -> batch
//!   Checkpoint, ... -> batch's checkpoint moves (filtered-out stretches)
//!   nothing ready, batch full, or CaughtUp
//!                   -> one SQLite transaction: apply the batch's events
//!                      + store the checkpoint after them, commit
//!   CaughtUp        -> with --until-caught-up: return
//! ```
//!
//! Batching: events are gathered while the subscription has more ready
//! and committed as soon as it has none (or `batch_events` are gathered),
//! so a backlog is applied in large transactions and a live event
//! reaches SQLite without waiting for company.
//!
//! The server filters by prefix, so snapshot streams
//! (`account-<id>-snapshots`) pass the stream filter; the type filter
//! drops their `Snapshot` events, and any other stream under `account-`
//! that is not an account's is skipped here.

use futures::{FutureExt, StreamExt};
use logbook_client::{
    Checkpoint, Client, Error as ClientError, Filter, LogPosition, ReadAllOptions, RecordedEvent,
    StreamVersion, SubscribeAllOptions, SubscriptionMessage,
};
use tracing::{debug, warn};

use crate::domain::{AccountEvent, AccountId, DecodeError, STREAM_PREFIX};
use crate::read_model::{ReadModel, ReadModelError};

/// How [`project`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProjectorOptions {
    /// Return once the read model has caught up with the log (the
    /// subscription's first `CaughtUp`). Default false: run until stopped.
    pub until_caught_up: bool,
    /// Drop the read model and project from the start of the log. Default
    /// false.
    pub rebuild: bool,
    /// Most events per SQLite transaction. Default 500.
    pub batch_events: usize,
    /// Test hook: simulate a crash in the middle of the transaction after
    /// this many commits. Default `None`.
    pub crash: Option<CrashAfter>,
}

impl Default for ProjectorOptions {
    fn default() -> Self {
        ProjectorOptions {
            until_caught_up: false,
            rebuild: false,
            batch_events: 500,
            crash: None,
        }
    }
}

/// Test hook: crash after `commits` transactions, with the next one's
/// changes applied but not committed, the worst moment for exactly-once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashAfter {
    /// Transactions committed before the crash.
    pub commits: u64,
    /// How to crash.
    pub mode: CrashMode,
}

/// How [`CrashAfter`] crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Return [`ProjectorError::InjectedCrash`]; the open transaction is
    /// rolled back as it is dropped (in-process tests).
    Error,
    /// `std::process::abort()` with the transaction open: SQLite finds
    /// the debris at the next open (`bank project --crash-after-commits`).
    Abort,
}

/// Why the projector stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectorError {
    /// The event store failed, or the subscription ended with an error.
    #[error("event store: {0}")]
    Store(#[from] ClientError),
    /// The read model failed.
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    /// An account event's payload is unreadable: applying the rest would
    /// leave the read model wrong, so the projector stops on it.
    #[error("event at log position {position} ({stream} version {version}): {source}")]
    BadEvent {
        /// Its stream.
        stream: String,
        /// Its version.
        version: StreamVersion,
        /// Its log position.
        position: LogPosition,
        /// Why it is unreadable.
        #[source]
        source: DecodeError,
    },
    /// The subscription ended without an error (it should not).
    #[error("the subscription ended")]
    SubscriptionEnded,
    /// [`CrashMode::Error`] fired.
    #[error("injected crash after {0} commits")]
    InjectedCrash(u64),
}

/// What a projector run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProjectionReport {
    /// Account events applied.
    pub events_applied: u64,
    /// SQLite transactions committed.
    pub commits: u64,
    /// The checkpoint at the end: every log position before it is applied.
    pub checkpoint: Option<LogPosition>,
}

/// The server-side filter: account streams, account event types.
pub fn account_filter() -> Filter {
    Filter {
        stream_prefixes: vec![STREAM_PREFIX.to_owned()],
        type_prefixes: AccountEvent::TYPES
            .iter()
            .map(|t| (*t).to_owned())
            .collect(),
        // A checkpoint after every event the filter drops: the stored
        // checkpoint then reaches the log's head when the projection is
        // current (a snapshot at the end of the log would otherwise hold
        // it back until 1,000 more were scanned, and the lag would never
        // read 0). The pushes are small and batched with the rest.
        checkpoint_interval: 1,
        ..Filter::default()
    }
}

/// Runs the projector over `model` until the subscription fails or, with
/// [`ProjectorOptions::until_caught_up`], until it has caught up.
pub async fn project(
    client: &Client,
    model: &mut ReadModel,
    options: ProjectorOptions,
) -> Result<ProjectionReport, ProjectorError> {
    if options.rebuild {
        model.reset()?;
    }
    let stored = model.checkpoint()?;
    let mut batch = Batch {
        committed: position_of(stored),
        ..Batch::default()
    };
    let mut report = ProjectionReport {
        checkpoint: batch.committed,
        ..ProjectionReport::default()
    };
    let from = SubscribeAllOptions::default()
        .from_checkpoint(stored)
        .filter(account_filter());
    let mut subscription = client.subscribe_all(from).await?;
    loop {
        let next = match subscription.next().now_or_never() {
            Some(next) => next,
            None => {
                // Nothing more ready: commit what we have, then wait.
                batch.commit(model, &options, &mut report)?;
                subscription.next().await
            }
        };
        let message = next.ok_or(ProjectorError::SubscriptionEnded)??;
        if let Some(checkpoint) = subscription.checkpoint_after(&message) {
            batch.checkpoint = position_of(Some(checkpoint));
        }
        match message {
            SubscriptionMessage::Event(event) => batch.events.push(event),
            SubscriptionMessage::CaughtUp { position, .. } => {
                debug!(%position, "caught up");
                if options.until_caught_up {
                    batch.commit(model, &options, &mut report)?;
                    return Ok(report);
                }
            }
            _ => {}
        }
        if batch.events.len() >= options.batch_events.max(1) {
            batch.commit(model, &options, &mut report)?;
        }
    }
}

/// The log position a global-log checkpoint names.
fn position_of(checkpoint: Option<Checkpoint>) -> Option<LogPosition> {
    checkpoint?.log_position()
}

/// Events received but not yet committed, and where the checkpoint goes
/// once they are.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<RecordedEvent>,
    /// The checkpoint after the last message received.
    checkpoint: Option<LogPosition>,
    /// The checkpoint as last committed.
    committed: Option<LogPosition>,
}

impl Batch {
    /// Applies the batch and stores its checkpoint in one transaction.
    fn commit(
        &mut self,
        model: &mut ReadModel,
        options: &ProjectorOptions,
        report: &mut ProjectionReport,
    ) -> Result<(), ProjectorError> {
        let Some(next) = self.checkpoint.filter(|&c| Some(c) != self.committed) else {
            return Ok(());
        };
        let tx = model.begin(self.committed)?;
        for recorded in &self.events {
            let Some(account) = AccountId::from_stream(&recorded.stream) else {
                continue;
            };
            let event = match AccountEvent::decode(&recorded.event_type, &recorded.data) {
                Ok(event) => event,
                // A type a newer writer added: not ours to interpret.
                Err(DecodeError::UnknownType(t)) => {
                    warn!(stream = %recorded.stream, event_type = %t, "skipping an unknown event type");
                    continue;
                }
                Err(source) => {
                    return Err(ProjectorError::BadEvent {
                        stream: recorded.stream.to_string(),
                        version: recorded.version,
                        position: recorded.position,
                        source,
                    });
                }
            };
            tx.apply(account, &event, recorded)?;
        }
        tx.set_checkpoint(next)?;
        if let Some(crash) = options.crash
            && crash.commits == report.commits
        {
            match crash.mode {
                CrashMode::Abort => std::process::abort(),
                // Dropping `tx` rolls the batch back.
                CrashMode::Error => return Err(ProjectorError::InjectedCrash(report.commits)),
            }
        }
        tx.commit()?;
        report.events_applied += self.events.len() as u64;
        report.commits += 1;
        report.checkpoint = Some(next);
        self.committed = Some(next);
        self.events.clear();
        Ok(())
    }
}

/// How far the read model is behind the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lag {
    /// The read model's checkpoint (0: nothing projected yet).
    pub checkpoint: LogPosition,
    /// The log's head: the number of events committed.
    pub head: LogPosition,
}

impl Lag {
    /// Log events the projector has not examined yet (of any stream: the
    /// log does not say which are account events until they are read).
    pub fn events_behind(&self) -> u64 {
        self.head.0.saturating_sub(self.checkpoint.0)
    }
}

/// Compares the read model's checkpoint with the server's head (one
/// `ReadAll` of the newest event).
pub async fn lag(client: &Client, model: &ReadModel) -> Result<Lag, ProjectorError> {
    let checkpoint = position_of(model.checkpoint()?).unwrap_or(LogPosition(0));
    let newest = ReadAllOptions::default().backward().max_count(1);
    let page = client.read_all_page(newest).await?;
    Ok(Lag {
        checkpoint,
        head: page.head,
    })
}
