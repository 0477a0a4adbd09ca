//! `bank bench-load`: what snapshots save when loading a long account.
//!
//! Builds one account with `events` events through the ordinary command
//! path ([`Bank::execute`], in batches of deposits so that building 100,000
//! events takes seconds, not minutes), ending with a tail of single
//! deposits so the latest snapshot is some events behind the head, as it
//! would be in real use. Then loads the account `runs` times each way,
//! from the first event and from the latest snapshot, and reports the
//! median, checking that both give the same state.

use std::time::{Duration, Instant};

use logbook_client::StreamVersion;

use crate::commands::{Bank, CommandError, Loaded};
use crate::domain::{AccountEvent, AccountId, BankAccount, DomainError, Money};

/// What to build and measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Events in the account, `AccountOpened` included. Default 100,000.
    pub events: u64,
    /// Deposits per append while building. Default 1,000.
    pub batch: u64,
    /// Single deposits at the end, after the last batch. Default 50.
    pub tail: u64,
    /// Loads measured each way. Default 5.
    pub runs: u32,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            events: 100_000,
            batch: 1_000,
            tail: 50,
            runs: 5,
        }
    }
}

/// Timings of one way of loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Events read and applied per load.
    pub events_replayed: u64,
    /// Every load's duration, sorted.
    pub samples: Vec<Duration>,
}

impl Timing {
    /// The median load time.
    pub fn median(&self) -> Duration {
        self.samples
            .get(self.samples.len() / 2)
            .copied()
            .unwrap_or_default()
    }
}

/// What `bench-load` measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchReport {
    /// The account built.
    pub account: AccountId,
    /// Its last version (events - 1).
    pub version: Option<StreamVersion>,
    /// The version its latest snapshot covers.
    pub snapshot: Option<StreamVersion>,
    /// How long building it took.
    pub build: Duration,
    /// Loading from the first event.
    pub full: Timing,
    /// Loading from the latest snapshot.
    pub from_snapshot: Timing,
}

/// Builds the account and measures its loads.
pub async fn bench_load(bank: &Bank, options: BenchOptions) -> Result<BenchReport, CommandError> {
    let started = Instant::now();
    let opened = bank.open(None, "Bench", Money::ZERO, "EUR").await?;
    let id = opened.id;
    let deposits = options.events.saturating_sub(1);
    let tail = options.tail.min(deposits);
    let mut bulk = deposits - tail;
    while bulk > 0 {
        let n = bulk.min(options.batch.max(1));
        bank.execute(id, |account| deposits_of(account, n)).await?;
        bulk -= n;
    }
    for _ in 0..tail {
        bank.deposit(id, Money(100), "bench tail").await?;
    }
    let build = started.elapsed();

    let (mut full, mut snap) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (None, None);
    for _ in 0..options.runs.max(1) {
        let (loaded, took) = timed(bank.load_without_snapshot(id)).await?;
        full.push(took);
        a = Some(loaded);
        let (loaded, took) = timed(bank.load(id)).await?;
        snap.push(took);
        b = Some(loaded);
    }
    full.sort();
    snap.sort();
    let (Some(a), Some(b)) = (a, b) else {
        unreachable!("at least one run");
    };
    // A snapshot that changed the answer would be a bug, not a speed-up.
    assert_eq!(a.state, b.state, "snapshot and full replay disagree");
    Ok(BenchReport {
        account: id,
        version: a.version,
        snapshot: b.snapshot,
        build,
        full: Timing {
            events_replayed: a.events_replayed,
            samples: full,
        },
        from_snapshot: Timing {
            events_replayed: b.events_replayed,
            samples: snap,
        },
    })
}

/// `n` deposits of 1.00, decided one after the other.
fn deposits_of(account: &BankAccount, n: u64) -> Result<Vec<AccountEvent>, DomainError> {
    let mut state = account.clone();
    let mut events = Vec::new();
    for _ in 0..n {
        let decided = state.deposit(Money(100), "bench")?;
        state = decided.iter().fold(state, BankAccount::apply);
        events.extend(decided);
    }
    Ok(events)
}

async fn timed(
    load: impl Future<Output = Result<Loaded, CommandError>>,
) -> Result<(Loaded, Duration), CommandError> {
    let started = Instant::now();
    let loaded = load.await?;
    Ok((loaded, started.elapsed()))
}
