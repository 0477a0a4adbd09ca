//! A deposit whose reply is lost, another deposit to the same account in
//! between, then the retry: the money is applied exactly once. This is the
//! scenario that paid twice when only a stream's last batch was recognised
//! as a retry: the retry was no longer the last batch, got
//! WrongExpectedVersion, and the command was decided and applied again.
//!
//! Against a real daemon, through a proxy that drops the append's reply
//! and cuts the connection after the daemon made the deposit durable.

mod common;

use common::*;
use logbook_bank::{Bank, BankOptions, CommandId, Money};
use logbook_client::{Client, ClientOptions, ReadStreamOptions, RetryPolicy};
use logbook_tests::LosingProxy;

/// The descriptions of the account's deposits, in order.
async fn deposits(env: &Env, id: logbook_bank::AccountId) -> Vec<String> {
    use futures::TryStreamExt;
    let events: Vec<_> = env
        .client
        .read_stream(id.stream().as_str(), ReadStreamOptions::default())
        .try_collect()
        .await
        .expect("read");
    events
        .iter()
        .filter(|e| e.event_type.as_str() == "MoneyDeposited")
        .map(|e| {
            let v: serde_json::Value = serde_json::from_slice(&e.data).expect("json");
            v["description"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// The client retries the append on a new connection by itself (its retry
/// policy), after the other deposit: the daemon recognises the resent
/// batch by its event ids and answers with the original result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_append_after_a_lost_reply_and_another_write_deposits_once() {
    let env = Env::start().await;
    let id = env.open("Alice", 100_000).await;
    let proxy = LosingProxy::start(env.server.addr).await;
    let lossy = Client::connect(proxy.addr).await.expect("connect");
    let bank = Bank::new(lossy, BankOptions::default());
    let command = CommandId::new();
    let salary = tokio::spawn(async move {
        bank.deposit_once(command, id, Money(25_000), "Salary")
            .await
    });
    // The deposit is durable; its reply is gone; the client is reconnecting.
    proxy.lost().await;
    env.bank
        .deposit(id, Money(1_000), "Interest")
        .await
        .expect("the other deposit");
    proxy.release();
    let outcome = salary.await.expect("task").expect("the retried deposit");
    assert!(!outcome.applied_earlier, "answered by the resend itself");
    assert_eq!(deposits(&env, id).await, vec!["Salary", "Interest"]);
    let now = env.bank.load(id).await.expect("load");
    assert_eq!(now.state.as_open().map(|a| a.balance), Some(Money(126_000)));

    // The same command sent again later (after a crash, say) applies once.
    let again = env
        .bank
        .deposit_once(command, id, Money(25_000), "Salary")
        .await
        .expect("sent again");
    assert!(again.applied_earlier);
    assert_eq!(deposits(&env, id).await, vec!["Salary", "Interest"]);
}

/// The client does not retry: the caller gets the connection error, and
/// sends the command again itself, after the other deposit. Loading finds
/// the command among the account's events: not applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_again_after_a_lost_reply_deposits_once() {
    let env = Env::start().await;
    let id = env.open("Bob", 100_000).await;
    let proxy = LosingProxy::start(env.server.addr).await;
    let lossy = Client::connect_with(
        proxy.addr,
        ClientOptions::default().retry(RetryPolicy::none()),
    )
    .await
    .expect("connect");
    let bank = Bank::new(lossy, BankOptions::default());
    let command = CommandId::new();
    let failed = bank
        .deposit_once(command, id, Money(25_000), "Salary")
        .await;
    assert!(failed.is_err(), "the reply was lost: {failed:?}");
    env.bank
        .deposit(id, Money(1_000), "Interest")
        .await
        .expect("the other deposit");
    let again = env
        .bank
        .deposit_once(command, id, Money(25_000), "Salary")
        .await
        .expect("sent again");
    assert!(again.applied_earlier);
    assert_eq!(deposits(&env, id).await, vec!["Salary", "Interest"]);
}

/// Sent again once its events are older than the account's latest
/// snapshot and than the command ids it remembers: deciding again gives
/// the same event ids, which the daemon refuses as duplicates when the
/// decision differs, and that too means "already applied".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_older_than_the_snapshot_is_still_applied_once() {
    let env = Env::start_with(BankOptions {
        snapshot_every: 2,
        ..BankOptions::default()
    })
    .await;
    let id = env.open("Carol", 100_000).await;
    let command = CommandId::new();
    env.bank
        .withdraw_once(command, id, Money(100), "Rent")
        .await
        .expect("withdraw");
    // Push the command out of what loading replays and remembers.
    for i in 0..(logbook_bank::commands::REMEMBERED_COMMANDS + 3) {
        env.bank
            .deposit(id, Money(1), &format!("d{i}"))
            .await
            .expect("deposit");
    }
    let loaded = env.bank.load(id).await.expect("load");
    assert!(!loaded.applied(command), "no longer remembered");
    // Same command, different decision: refused as a duplicate by the
    // daemon, reported as applied earlier.
    let again = env
        .bank
        .withdraw_once(command, id, Money(100), "Rent (again)")
        .await
        .expect("sent again");
    assert!(again.applied_earlier);
    let rents: Vec<_> = {
        use futures::TryStreamExt;
        let events: Vec<_> = env
            .client
            .read_stream(id.stream().as_str(), ReadStreamOptions::default())
            .try_collect()
            .await
            .expect("read");
        events
            .into_iter()
            .filter(|e| e.event_type.as_str() == "MoneyWithdrawn")
            .collect()
    };
    assert_eq!(rents.len(), 1);
}
