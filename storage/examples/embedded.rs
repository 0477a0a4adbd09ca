//! Logbook embedded: the whole event store in-process, with no daemon (what
//! SQLite is to Postgres). For tests, command-line tools and single-process
//! applications.
//!
//! ```sh
//! cargo run -p logbook-storage --example embedded            # in a temp dir
//! cargo run -p logbook-storage --example embedded -- ./data  # or in ./data
//! ```
//!
//! It opens a store, appends to a stream with expected versions (and shows
//! a conflict and an idempotent retry), reads the stream both ways, follows
//! the global log as a subscriber would, closes the store and reopens it.
//! The same calls work in any application: `Store` is `Clone` and `Send`,
//! appends are async (or `append_blocking` outside a runtime), reads are
//! synchronous file reads (from an async task, prefer `spawn_blocking` for
//! large ones).

use std::error::Error;
use std::path::Path;

use logbook_protocol::{
    Direction, EventId, ExpectedVersion, LogPosition, NewEvent, RecordedEvent, StreamName,
};
use logbook_storage::{AppendError, Store, StoreConfig};

fn main() -> Result<(), Box<dyn Error>> {
    let temp = tempfile::tempdir()?;
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => temp.path().to_path_buf(),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(run(&dir))?;
    println!("{summary:?}");
    Ok(())
}

/// What [`run`] saw.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// Events of `account-42` after the appends.
    pub account_events: usize,
    /// Event types the follower received, in log order.
    pub followed: Vec<String>,
    /// The stream's last version after reopening.
    pub version_after_reopen: u64,
}

fn event(event_type: &str, data: &str) -> NewEvent {
    NewEvent::new(EventId::new_v7(), event_type, data.to_owned())
}

/// Follows the global log from the start, as a subscription does: read
/// what is durable after the cursor, then wait for the durable head to move.
/// Stops after `want` events.
async fn follow(
    store: Store,
    want: usize,
) -> Result<Vec<RecordedEvent>, Box<dyn Error + Send + Sync>> {
    let mut head = store.watch_head();
    let mut cursor = LogPosition(0);
    let mut seen = Vec::new();
    while seen.len() < want {
        // Mark the current head seen before reading, so that an append
        // landing during the read wakes the next wait.
        head.borrow_and_update();
        let page = store.read_all(Some(cursor), Direction::Forward, 100)?;
        if let Some(last) = page.events.last() {
            cursor = LogPosition(last.position.0 + 1);
        }
        let got_some = !page.events.is_empty();
        seen.extend(page.events);
        if !got_some {
            head.changed().await?;
        }
    }
    Ok(seen)
}

/// The walk-through, in `dir` (created if needed).
pub async fn run(dir: &Path) -> Result<Summary, Box<dyn Error>> {
    let store = Store::open(StoreConfig::new(dir))?;
    let follower = tokio::spawn(follow(store.clone(), 3));

    // Appends with expected versions: the first creates the stream.
    let account = StreamName::new("account-42")?;
    let opened = store
        .append(
            &account,
            ExpectedVersion::NoStream,
            vec![event("AccountOpened", r#"{"owner":"ada"}"#)],
        )
        .await?;
    println!(
        "opened at version {} (position {})",
        opened.last_version, opened.last_position
    );

    let deposit = vec![event("MoneyDeposited", r#"{"amount":100}"#)];
    let deposited = store
        .append(
            &account,
            ExpectedVersion::Exact(opened.last_version),
            deposit.clone(),
        )
        .await?;

    // A second writer that decided on version 0 too is refused, and told
    // the actual version: it reloads and decides again.
    match store
        .append(
            &account,
            ExpectedVersion::Exact(opened.last_version),
            vec![event("MoneyWithdrawn", r#"{"amount":500}"#)],
        )
        .await
    {
        Err(AppendError::WrongExpectedVersion { actual, .. }) => {
            let actual = actual.map_or("no stream".to_string(), |v| v.to_string());
            println!("conflict: the stream is at version {actual}");
        }
        other => return Err(format!("expected a conflict, got {other:?}").into()),
    }

    // Re-sending a batch whose acknowledgement was lost (same event ids)
    // returns the original result instead of writing it twice.
    let retried = store
        .append(
            &account,
            ExpectedVersion::Exact(opened.last_version),
            deposit,
        )
        .await?;
    assert_eq!(retried, deposited, "a retry is answered idempotently");

    let withdrawn = store
        .append(
            &account,
            ExpectedVersion::Exact(deposited.last_version),
            vec![event("MoneyWithdrawn", r#"{"amount":30}"#)],
        )
        .await?;

    // Read the stream forward (replay) and backward (the latest event).
    let forward = store.read_stream("account-42", None, Direction::Forward, 100)?;
    let latest = store.read_stream("account-42", None, Direction::Backward, 1)?;
    println!(
        "account-42: {} events, latest {} at version {}",
        forward.events.len(),
        latest.events[0].event_type,
        latest.events[0].version
    );

    // The follower saw every event, in log order.
    let followed = follower
        .await?
        .map_err(|e| -> Box<dyn Error> { e.to_string().into() })?;
    let followed: Vec<String> = followed.iter().map(|e| e.event_type.to_string()).collect();
    println!("followed: {followed:?}");

    // Close (flushes the index, releases the directory lock) and reopen.
    store.close()?;
    let reopened = Store::open(StoreConfig::new(dir))?;
    let version = reopened
        .stream_version("account-42")?
        .ok_or("the stream vanished")?;
    assert_eq!(version, withdrawn.last_version);
    println!("reopened: account-42 at version {version}");
    reopened.close()?;

    Ok(Summary {
        account_events: forward.events.len(),
        followed,
        version_after_reopen: version.0,
    })
}
