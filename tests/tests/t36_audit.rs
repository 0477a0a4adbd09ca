//! The audit log and the slowing of failed logins: each login, failed
//! login and refused login is a JSON line; after five failures from one
//! address, its logins are refused even with the right token; deletes,
//! truncations, erases, backups and group changes are recorded with who
//! asked.

use logbook_client::{
    Client, ClientOptions, Deletion, Error, EventId, ExpectedVersion, GroupSettings, GroupSource,
    GroupStart, NewEvent, RetryPolicy, StreamVersion,
};
use logbook_server::net::audit::{AuditTarget, MAX_FAILURES};
use logbook_tests::TestServer;
use serde_json::Value;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn events(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|l| l["event"].as_str().unwrap()).collect()
}

async fn connect(server: &TestServer, token: &str) -> logbook_client::Result<Client> {
    Client::connect_with(
        server.addr,
        ClientOptions::default()
            .auth_token(token)
            .retry(RetryPolicy::none()),
    )
    .await
}

#[tokio::test]
async fn failed_logins_are_recorded_and_slowed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = TestServer::start_tuned(|_, s| {
        s.auth_token = Some("sesame".into());
        s.audit_log = Some(AuditTarget::File(log.clone()));
    })
    .await;
    connect(&server, "sesame").await.unwrap();
    for _ in 0..MAX_FAILURES {
        let err = connect(&server, "guess").await.unwrap_err();
        assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    }
    // Blocked now: the right token is refused too.
    let err = connect(&server, "sesame").await.unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    server.stop().await;
    let l = lines(&log);
    let mut expected = vec!["login"];
    expected.extend(std::iter::repeat_n("login_failed", MAX_FAILURES as usize));
    expected.push("login_refused");
    assert_eq!(events(&l), expected);
    assert_eq!(l[MAX_FAILURES as usize]["blocked"], true);
    assert_eq!(l[1]["blocked"], false);
    for line in &l {
        assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    }
}

#[tokio::test]
async fn deletes_erases_backups_and_group_changes_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = TestServer::start_tuned(|_, s| {
        s.audit_log = Some(AuditTarget::File(log.clone()));
    })
    .await;
    let client = Client::connect(server.addr).await.unwrap();
    for s in ["a", "b", "c"] {
        client
            .append(
                s,
                ExpectedVersion::Any,
                vec![NewEvent::new(EventId::new_v7(), "T", &b"{}"[..])],
            )
            .await
            .unwrap();
    }
    client
        .delete_stream("a", ExpectedVersion::Any, Deletion::Hard)
        .await
        .unwrap();
    client.truncate_stream("b", StreamVersion(1)).await.unwrap();
    client.erase("c").await.unwrap();
    let backup = dir.path().join("backup");
    client.backup(&backup, |_| {}).await.unwrap();
    client
        .create_group(
            "g",
            GroupSource::All { filter: None },
            GroupStart::Start,
            GroupSettings::default(),
        )
        .await
        .unwrap();
    client.delete_group("g").await.unwrap();
    server.stop().await;
    let l = lines(&log);
    assert_eq!(
        events(&l),
        [
            "delete",
            "truncate",
            "erase",
            "backup",
            "group_create",
            "group_delete"
        ]
    );
    assert_eq!(l[0]["stream"], "a");
    assert_eq!(l[0]["hard"], true);
    assert_eq!(l[1]["before"], 1);
    assert_eq!(l[2]["stream"], "c");
    assert_eq!(l[4]["group"], "g");
}
