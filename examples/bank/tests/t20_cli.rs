//! The built `bank` binary as a user runs it: the account id on the last
//! line, exit codes of rejected commands, queries from the read model, and
//! a projector killed mid-transaction.

mod common;

use common::{Env, assert_read_model_matches_log, stderr, stdout};
use logbook_bank::Money;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_the_command_line() {
    let env = Env::start().await;

    let out = env
        .bank_cli(&["open", "--owner", "Alice", "--initial", "1000"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let id = text.lines().last().expect("a last line").trim().to_owned();
    let account: logbook_bank::AccountId = id.parse().expect("the last line is the account id");

    let out = env
        .bank_cli(&["deposit", &id, "250", "--description", "Salary"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env
        .bank_cli(&["withdraw", &id, "75.50", "--description", "Groceries"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("balance 1174.50 EUR"),
        "{}",
        stdout(&out)
    );

    // Rejections: one line on stderr, exit code 1, nothing written.
    for args in [
        vec!["withdraw", &id, "5000"],
        vec!["withdraw", &id, "-5"],
        vec!["deposit", &id, "0"],
        vec!["deposit", "6f1c1f1e-0000-4000-8000-000000000000", "10"],
    ] {
        let out = env.bank_cli(&args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("rejected: "), "{err}");
    }
    let out = env.bank_cli(&["withdraw", &id, "5000"]).await;
    assert!(
        stderr(&out).contains("insufficient funds"),
        "{}",
        stderr(&out)
    );
    let out = env
        .bank_cli(&["deposit", "6f1c1f1e-0000-4000-8000-000000000000", "10"])
        .await;
    assert!(stderr(&out).contains("no such account"), "{}", stderr(&out));

    // Queries before projecting: nothing there yet, and they say so.
    let out = env.bank_cli(&["balance", &id]).await;
    assert!(out.status.success());
    assert!(stdout(&out).contains("not in the read model"));
    assert!(
        stderr(&out).contains("3 log events behind"),
        "{}",
        stderr(&out)
    );

    let out = env.bank_cli(&["project", "--until-caught-up"]).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = env.bank_cli(&["balance", &id]).await;
    assert_eq!(stdout(&out).trim(), "1174.50 EUR");
    assert!(stderr(&out).contains("up to date"), "{}", stderr(&out));
    let out = env.bank_cli(&["history", &id]).await;
    let history = stdout(&out);
    let kinds: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(kinds, ["open", "deposit", "withdrawal"], "{history}");
    let out = env.bank_cli(&["accounts"]).await;
    assert!(stdout(&out).contains(&id) && stdout(&out).contains("Alice"));

    let row = env.model().account(account).expect("query").expect("row");
    assert_eq!(row.balance, Money(117_450));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_when_the_server_is_gone() {
    let env = Env::start().await;
    let id = env.open("Alice", 4_200).await;
    env.project(Default::default()).await.expect("project");
    let (addr, db, dir) = (env.server.addr.to_string(), env.db.clone(), env.dir);
    env.server.stop().await;

    let out = common::run_bank(addr, db, dir.path(), &["balance", &id.to_string()]).await;
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "42.00 EUR");
    assert!(
        stderr(&out).contains("cannot reach logbookd"),
        "{}",
        stderr(&out)
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_transaction_resumes_exactly_once() {
    let env = Env::start().await;
    let mut ids = Vec::new();
    for owner in ["Alice", "Bob", "Carol"] {
        ids.push(env.open(owner, 10_000).await);
    }
    for round in 1..=8 {
        for id in &ids {
            env.bank
                .deposit(*id, Money(round * 100), "in")
                .await
                .expect("deposit");
            env.bank
                .withdraw(*id, Money(round * 10), "out")
                .await
                .expect("withdraw");
        }
    }

    // The process aborts with its third transaction applied but not
    // committed: SQLite finds the debris at the next open.
    let out = env
        .bank_cli(&[
            "project",
            "--until-caught-up",
            "--batch-events",
            "4",
            "--crash-after-commits",
            "2",
        ])
        .await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(6),
        "the projector should have aborted (SIGABRT): {out:?}"
    );
    {
        let model = env.model();
        let committed = model.transaction_count().expect("count");
        assert!(
            (1..=8).contains(&committed),
            "{committed} rows after 2 commits"
        );
        assert_read_model_matches_log(&env.client, &model).await;
    }

    let out = env.bank_cli(&["project", "--until-caught-up"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let model = env.model();
    assert_eq!(model.transaction_count().expect("count"), 3 + 3 * 16);
    assert_read_model_matches_log(&env.client, &model).await;
}
