//! The embedded example (`examples/embedded.rs`) runs in CI: it is
//! compiled into this test and its walk-through checked.

#[allow(dead_code)]
#[path = "../examples/embedded.rs"]
mod embedded;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_example_runs() {
    let dir = tempfile::tempdir().unwrap();
    let summary = embedded::run(dir.path()).await.unwrap();
    assert_eq!(
        summary,
        embedded::Summary {
            account_events: 3,
            followed: vec![
                "AccountOpened".to_string(),
                "MoneyDeposited".to_string(),
                "MoneyWithdrawn".to_string(),
            ],
            version_after_reopen: 2,
        }
    );
}
