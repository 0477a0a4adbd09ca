//! The projector: the read model equals what the events say, every event
//! applied exactly once across crashes, incremental runs, and a rebuild.

mod common;

use common::{Env, assert_read_model_matches_log, read_model_state, truth};
use logbook_bank::projector::{self, CrashAfter, CrashMode, ProjectorOptions};
use logbook_bank::{AccountId, BankOptions, Money, ProjectorError};

/// Three accounts with a few dozen events between them, and snapshots
/// (which the projector must skip).
async fn some_history(env: &Env) -> Vec<AccountId> {
    let mut ids = Vec::new();
    for (owner, initial) in [("Alice", 100_000), ("Bob", 5_000), ("Carol", 0)] {
        ids.push(env.open(owner, initial).await);
    }
    for round in 1..=10_i64 {
        for (n, id) in ids.iter().enumerate() {
            let description = format!("round {round}");
            env.bank
                .deposit(*id, Money(round * 100 + n as i64), &description)
                .await
                .expect("deposit");
            if round % 3 == 0 {
                env.bank
                    .withdraw(*id, Money(round * 50), &description)
                    .await
                    .expect("withdraw");
            }
        }
    }
    ids
}

fn small_snapshots() -> BankOptions {
    BankOptions {
        snapshot_every: 5,
        ..BankOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_matches_the_events() {
    let env = Env::start_with(small_snapshots()).await;
    let ids = some_history(&env).await;

    let report = env
        .project(ProjectorOptions::default())
        .await
        .expect("project");
    assert_eq!(report.events_applied, 3 + 3 * 13);
    let model = env.model();
    assert_read_model_matches_log(&env.client, &model).await;

    let alice = model.account(ids[0]).expect("query").expect("row");
    let expected: i64 = 100_000 + (1..=10).map(|r| r * 100).sum::<i64>() - (50 * (3 + 6 + 9));
    assert_eq!(alice.balance, Money(expected));
    assert_eq!(alice.version.0, 13);
    let history = model.history(ids[0]).expect("history");
    assert_eq!(history.len(), 14);
    assert_eq!(history[1].description, "round 1");

    // Caught up: the checkpoint is the log's head, snapshots included.
    let lag = projector::lag(&env.client, &model).await.expect("lag");
    assert_eq!(lag.events_behind(), 0);
    assert_eq!(Some(lag.head), report.checkpoint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_pick_up_where_the_last_one_stopped() {
    let env = Env::start().await;
    let id = env.open("Alice", 1_000).await;
    let first = env
        .project(ProjectorOptions::default())
        .await
        .expect("project");
    assert_eq!(first.events_applied, 1);

    env.bank.deposit(id, Money(1), "a").await.expect("deposit");
    env.bank.deposit(id, Money(2), "b").await.expect("deposit");
    let model = env.model();
    let lag = projector::lag(&env.client, &model).await.expect("lag");
    assert_eq!(lag.events_behind(), 2);

    let second = env
        .project(ProjectorOptions::default())
        .await
        .expect("project");
    assert_eq!(second.events_applied, 2, "only the new events");
    assert_read_model_matches_log(&env.client, &model).await;
    assert_eq!(
        model.account(id).expect("q").expect("row").balance,
        Money(1_003)
    );

    // Nothing new: nothing applied, nothing committed.
    let third = env
        .project(ProjectorOptions::default())
        .await
        .expect("project");
    assert_eq!((third.events_applied, third.commits), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_between_any_two_transactions_apply_each_event_once() {
    let env = Env::start_with(small_snapshots()).await;
    some_history(&env).await;

    // Every run commits one batch of at most 4 events, then crashes with the
    // next batch applied but not committed, until a run catches up first.
    let crashing = ProjectorOptions {
        batch_events: 4,
        crash: Some(CrashAfter {
            commits: 1,
            mode: CrashMode::Error,
        }),
        ..ProjectorOptions::default()
    };
    let mut crashes = 0;
    loop {
        match env.project(crashing).await {
            Err(ProjectorError::InjectedCrash(1)) => crashes += 1,
            Ok(_) => break,
            Err(e) => panic!("{e}"),
        }
        // After every crash: exactly the events before the checkpoint.
        assert_read_model_matches_log(&env.client, &env.model()).await;
        assert!(crashes < 100, "the projector makes no progress");
    }
    assert!(crashes >= 5, "only {crashes} crashes");
    let model = env.model();
    assert_eq!(model.transaction_count().expect("count"), 3 + 3 * 13);
    assert_read_model_matches_log(&env.client, &model).await;
    assert_eq!(read_model_state(&model), truth(&env.client, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_equals_the_incremental_projection() {
    let env = Env::start_with(small_snapshots()).await;
    let ids = some_history(&env).await;
    env.project(ProjectorOptions {
        batch_events: 7,
        ..ProjectorOptions::default()
    })
    .await
    .expect("project");
    // More events, projected incrementally.
    for id in &ids {
        env.bank
            .deposit(*id, Money(99), "late")
            .await
            .expect("deposit");
    }
    env.project(ProjectorOptions::default())
        .await
        .expect("project");
    let incremental = read_model_state(&env.model());
    let incremental_times: Vec<_> = env.model().history(ids[1]).expect("history");

    let rebuilt = env
        .project(ProjectorOptions {
            rebuild: true,
            ..ProjectorOptions::default()
        })
        .await
        .expect("rebuild");
    assert_eq!(rebuilt.events_applied, 3 + 3 * 14);
    assert_eq!(read_model_state(&env.model()), incremental);
    assert_eq!(
        env.model().history(ids[1]).expect("history"),
        incremental_times
    );
    assert_read_model_matches_log(&env.client, &env.model()).await;
}

#[test]
fn two_projectors_on_one_database_do_not_double_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bank.db");
    let mut first = logbook_bank::ReadModel::open(&db).expect("open");
    let mut second = logbook_bank::ReadModel::open(&db).expect("open");
    // Both start from the same (empty) checkpoint; once one has committed
    // from it, the other may not.
    let tx = first.begin(None).expect("begin");
    tx.set_checkpoint(logbook_client::LogPosition(1))
        .expect("checkpoint");
    tx.commit().expect("commit");
    let err = second
        .begin(None)
        .map(|_| ())
        .expect_err("the checkpoint moved");
    assert!(err.to_string().contains("another projector"), "{err}");
}
