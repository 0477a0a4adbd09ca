//! Commands racing on one account: optimistic concurrency with retries
//! never overdraws and never loses a deposit.

mod common;

use common::{Env, truth};
use logbook_bank::{Bank, BankOptions, CommandError, DomainError, Money};
use logbook_client::Client;

/// Twenty commands on twenty connections, all at once.
async fn race<F, Fut>(env: &Env, command: F) -> Vec<Result<logbook_bank::Outcome, CommandError>>
where
    F: Fn(Bank, usize) -> Fut,
    Fut: Future<Output = Result<logbook_bank::Outcome, CommandError>> + Send + 'static,
{
    let mut banks = Vec::new();
    for _ in 0..20 {
        let client = Client::connect(env.server.addr).await.expect("connect");
        banks.push(Bank::new(client, BankOptions::default()));
    }
    // Every task waits at the barrier, so the loads overlap.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = banks
        .into_iter()
        .enumerate()
        .map(|(n, bank)| {
            let barrier = barrier.clone();
            let run = command(bank, n);
            tokio::spawn(async move {
                barrier.wait().await;
                run.await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_withdrawals_never_overdraw() {
    let env = Env::start().await;
    // 100.00 covers 14 withdrawals of 7.00, leaving 2.00.
    let id = env.open("Alice", 10_000).await;
    let results = race(&env, |bank, _| async move {
        bank.withdraw(id, Money(700), "race").await
    })
    .await;

    let succeeded = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(CommandError::Rejected {
                    reason: DomainError::InsufficientFunds { .. },
                    ..
                })
            )
        })
        .count();
    assert_eq!((succeeded, refused), (14, 6), "{results:?}");
    assert!(
        results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|o| o.attempts > 1)),
        "the race should have caused at least one retry"
    );

    let loaded = env.bank.load(id).await.expect("load");
    assert_eq!(loaded.state.as_open().map(|a| a.balance), Some(Money(200)));
    // `truth` asserts the balance never went below zero along the way.
    let log = truth(&env.client, None).await;
    assert_eq!(log[&id].balance, Money(200));
    assert_eq!(log[&id].version, 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_deposits_are_all_kept() {
    let env = Env::start().await;
    let id = env.open("Bob", 0).await;
    let results = race(&env, |bank, n| async move {
        bank.deposit(id, Money(n as i64 + 1), "race").await
    })
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let loaded = env.bank.load(id).await.expect("load");
    assert_eq!(
        loaded.state.as_open().map(|a| a.balance),
        Some(Money((1..=20).sum()))
    );
    assert_eq!(loaded.version.map(|v| v.0), Some(20));
}
