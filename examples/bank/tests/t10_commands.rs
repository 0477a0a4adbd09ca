//! The command side against a real daemon: open, deposit, withdraw, the
//! rejections, and loading through snapshots.

mod common;

use common::Env;
use logbook_bank::commands::{SNAPSHOT_TYPE, Snapshot};
use logbook_bank::{AccountId, BankOptions, CommandError, DomainError, Money};
use logbook_client::{EventId, ExpectedVersion, NewEvent, ReadStreamOptions, StreamVersion};

fn rejected(result: Result<logbook_bank::Outcome, CommandError>) -> DomainError {
    match result {
        Err(CommandError::Rejected { reason, .. }) => reason,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_deposit_withdraw_and_load() {
    let env = Env::start().await;
    let id = env.open("Alice", 100_000).await;
    let after = env
        .bank
        .deposit(id, Money(25_000), "Salary")
        .await
        .expect("deposit");
    assert_eq!(after.balance(), Money(125_000));
    assert_eq!(after.version, StreamVersion(1));
    let after = env
        .bank
        .withdraw(id, Money(7_550), "Groceries")
        .await
        .expect("withdraw");
    assert_eq!(after.balance(), Money(117_450));
    assert_eq!(after.attempts, 1);

    let loaded = env.bank.load(id).await.expect("load");
    assert_eq!(loaded.state, after.state);
    assert_eq!(loaded.version, Some(StreamVersion(2)));

    // The events are stored under their variant names, as JSON.
    let events: Vec<_> = futures::TryStreamExt::try_collect(
        env.client
            .read_stream(id.stream(), ReadStreamOptions::default()),
    )
    .await
    .expect("read");
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"]);
    assert_eq!(
        &events[1].data[..],
        br#"{"amount":25000,"description":"Salary"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_commands_write_nothing() {
    let env = Env::start().await;
    let id = env.open("Alice", 1_000).await;

    assert_eq!(
        rejected(env.bank.withdraw(id, Money(1_001), "too much").await),
        DomainError::InsufficientFunds {
            balance: Money(1_000),
            requested: Money(1_001),
            currency: "EUR".into()
        }
    );
    assert_eq!(
        rejected(env.bank.deposit(id, Money(0), "nothing").await),
        DomainError::NonPositiveAmount(Money(0))
    );
    assert_eq!(
        rejected(env.bank.withdraw(id, Money(-5), "negative").await),
        DomainError::NonPositiveAmount(Money(-5))
    );
    assert_eq!(
        rejected(env.bank.open(Some(id), "Mallory", Money(0), "EUR").await),
        DomainError::AlreadyOpen
    );
    // An account nobody opened: its stream does not exist.
    let nobody = AccountId::new();
    assert_eq!(
        rejected(env.bank.deposit(nobody, Money(5), "hello?").await),
        DomainError::AccountNotFound
    );
    assert_eq!(
        rejected(env.bank.withdraw(nobody, Money(5), "hello?").await),
        DomainError::AccountNotFound
    );

    let loaded = env.bank.load(id).await.expect("load");
    assert_eq!(loaded.version, Some(StreamVersion(0)), "only AccountOpened");
    let missing = env.bank.load(nobody).await.expect("load");
    assert_eq!(missing.version, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_starts_from_the_latest_snapshot() {
    let env = Env::start_with(BankOptions {
        snapshot_every: 4,
        ..BankOptions::default()
    })
    .await;
    let id = env.open("Alice", 0).await;
    for n in 1..=10 {
        env.bank.deposit(id, Money(n), "d").await.expect("deposit");
    }
    // 11 events; snapshots after versions 3 and 7 (each 4 events past the
    // previous one).
    let snapshots: Vec<Snapshot> = futures::TryStreamExt::try_collect(
        env.client
            .read_stream(id.snapshot_stream(), ReadStreamOptions::default()),
    )
    .await
    .map(|events: Vec<_>| {
        events
            .iter()
            .map(|e| serde_json::from_slice(&e.data).expect("snapshot"))
            .collect()
    })
    .expect("read snapshots");
    let covered: Vec<u64> = snapshots.iter().map(|s| s.version.0).collect();
    assert_eq!(covered, [3, 7]);

    let fast = env.bank.load(id).await.expect("load");
    let slow = env.bank.load_without_snapshot(id).await.expect("load");
    assert_eq!(fast.state, slow.state);
    assert_eq!(fast.version, Some(StreamVersion(10)));
    assert_eq!(fast.snapshot, Some(StreamVersion(7)));
    assert_eq!(fast.events_replayed, 3);
    assert_eq!(slow.events_replayed, 11);
    assert_eq!(
        fast.state.as_open().map(|a| a.balance),
        Some(Money((1..=10).sum()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_snapshot_is_ignored() {
    let env = Env::start().await;
    let id = env.open("Alice", 500).await;
    env.bank
        .deposit(id, Money(250), "d")
        .await
        .expect("deposit");
    let garbage = NewEvent::new(EventId::from_u128(1), SNAPSHOT_TYPE, "{not json");
    env.client
        .append(id.snapshot_stream(), ExpectedVersion::Any, vec![garbage])
        .await
        .expect("append garbage");

    let loaded = env.bank.load(id).await.expect("load");
    assert_eq!(loaded.snapshot, None);
    assert_eq!(loaded.events_replayed, 2);
    assert_eq!(loaded.state.as_open().map(|a| a.balance), Some(Money(750)));
}
