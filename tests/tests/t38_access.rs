//! Users, roles, API tokens, per-stream rights and tenants, end to end:
//! every request a user makes is answered as its rights say (refused with
//! `AccessDenied`, or filtered: the global log, subscriptions to it and the
//! catalog show only streams the user may read); changes take effect at
//! once on open connections; users survive restarts; a server reachable
//! beyond loopback starts with an admin whose password only its operator
//! can read.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use logbook_client::{
    Client, ClientOptions, Error, EventId, ExpectedVersion, Grant, NewEvent, PutUser,
    ReadAllOptions, RetryPolicy, SubscribeAllOptions, SubscriptionMessage,
};
use logbook_server::net::audit::AuditTarget;
use logbook_tests::TestServer;
use logbook_tests::daemon::Daemon;

fn ev() -> NewEvent {
    NewEvent::new(EventId::new_v7(), "Happened", "{}")
}

fn options() -> ClientOptions {
    ClientOptions::default()
        .retry(RetryPolicy::none())
        .resubscribe(RetryPolicy::none())
        .connect_timeout(Some(Duration::from_secs(10)))
}

async fn login(server: &TestServer, user: &str, password: &str) -> logbook_client::Result<Client> {
    Client::connect_with(server.addr, options().credentials(user, password)).await
}

fn user(name: &str, password: Option<&str>, roles: &[&str], tenant: Option<&str>) -> PutUser {
    PutUser {
        name: name.into(),
        password: password.map(str::to_owned),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        tenant: tenant.map(str::to_owned),
        disabled: false,
    }
}

fn grant(prefix: &str, rights: &[&str]) -> Grant {
    Grant {
        prefix: prefix.into(),
        rights: rights.iter().map(|r| (*r).to_owned()).collect(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn denied<T: std::fmt::Debug>(r: logbook_client::Result<T>) {
    match r {
        Err(Error::AccessDenied { .. }) => {}
        other => panic!("expected AccessDenied, got {other:?}"),
    }
}

/// Streams of every event the user can read of the global log.
async fn streams_in_all(c: &Client) -> BTreeSet<String> {
    let mut read = c.read_all(ReadAllOptions::default().page_size(7));
    let mut seen = BTreeSet::new();
    while let Some(e) = read.next().await {
        seen.insert(e.unwrap().stream.to_string());
    }
    seen
}

/// Makes the first user (an admin) over the anonymous connection of a
/// server that has none, and logs in as it.
async fn first_admin(server: &TestServer) -> Client {
    let anonymous = Client::connect_with(server.addr, options()).await.unwrap();
    assert_eq!(anonymous.who_am_i().await.unwrap().user, "anonymous");
    anonymous
        .put_user(user("root", Some("root-pw"), &["admin"], None))
        .await
        .unwrap();
    // Authentication is on now: anonymous connections are closed.
    let err = anonymous.who_am_i().await.unwrap_err();
    assert!(
        matches!(err, Error::Disconnected | Error::NotAuthenticated),
        "{err:?}"
    );
    let err = Client::connect_with(server.addr, options())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    login(server, "root", "root-pw").await.unwrap()
}

#[tokio::test]
async fn every_request_is_answered_as_the_users_rights_say() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = TestServer::start_tuned(|_, s| {
        s.audit_log = Some(AuditTarget::File(log.clone()));
    })
    .await;
    let root = first_admin(&server).await;
    for s in ["invoice-1", "invoice-2", "ledger-1", "account-1"] {
        root.append(s, ExpectedVersion::Any, vec![ev(), ev()])
            .await
            .unwrap();
    }
    root.put_role(
        "billing",
        vec![
            grant("invoice-", &["read", "write"]),
            grant("ledger-", &["read"]),
        ],
        strings(&["catalog", "read_all"]),
    )
    .await
    .unwrap();
    root.put_user(user("bob", Some("bob-pw"), &["billing"], None))
        .await
        .unwrap();
    let err = login(&server, "bob", "wrong").await.unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    let err = login(&server, "nobody", "bob-pw").await.unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    let bob = login(&server, "bob", "bob-pw").await.unwrap();
    assert_eq!(bob.server_info().user.as_deref(), Some("bob"));

    bob.append("invoice-1", ExpectedVersion::Any, vec![ev()])
        .await
        .unwrap();
    bob.append("invoice-9", ExpectedVersion::NoStream, vec![ev()])
        .await
        .unwrap();
    denied(
        bob.append("ledger-1", ExpectedVersion::Any, vec![ev()])
            .await,
    );
    denied(
        bob.append("account-1", ExpectedVersion::Any, vec![ev()])
            .await,
    );
    denied(bob.append("$auth", ExpectedVersion::Any, vec![ev()]).await);
    let page = bob
        .read_stream_page("ledger-1", Default::default())
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2);
    denied(bob.read_stream_page("account-1", Default::default()).await);
    denied(
        bob.delete_stream(
            "invoice-1",
            ExpectedVersion::Any,
            logbook_client::Deletion::Soft,
        )
        .await,
    );
    denied(bob.stats().await);
    denied(bob.list_users().await);
    denied(
        bob.put_user(user("mallory", Some("x"), &["admin"], None))
            .await,
    );
    // The global log and the catalog show what bob may read, and nothing
    // of the server's own streams ($auth holds password hashes).
    assert_eq!(
        streams_in_all(&bob).await,
        BTreeSet::from(["invoice-1", "invoice-2", "invoice-9", "ledger-1"].map(String::from))
    );
    let catalog = bob.list_streams("", None, 100).await.unwrap();
    let listed: Vec<_> = catalog.streams.iter().map(|s| s.stream.as_str()).collect();
    assert_eq!(listed, ["invoice-1", "invoice-2", "invoice-9", "ledger-1"]);
    // The admin sees everything, the users stream included.
    let all = streams_in_all(&root).await;
    assert!(
        all.contains("account-1") && all.contains("$auth"),
        "{all:?}"
    );
    // A subscription to the global log delivers bob's streams only, and
    // still reaches the head through the events it may not see.
    let mut sub = bob
        .subscribe_all(SubscribeAllOptions::default())
        .await
        .unwrap();
    root.append("account-1", ExpectedVersion::Any, vec![ev()])
        .await
        .unwrap();
    root.append("invoice-2", ExpectedVersion::Any, vec![ev()])
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        match sub.next().await.unwrap().unwrap() {
            SubscriptionMessage::Event(e) => {
                got.push(e.stream.to_string());
                // 8 of history, then the live one.
                if got.len() == 9 {
                    break;
                }
            }
            _ => continue,
        }
    }
    assert!(
        got.iter()
            .all(|s| s.starts_with("invoice-") || s.starts_with("ledger-")),
        "{got:?}"
    );
    assert_eq!(got.last().map(String::as_str), Some("invoice-2"));
    drop(sub);

    // Who am I, with the merged rights.
    let me = bob.who_am_i().await.unwrap();
    assert_eq!(me.user, "bob");
    assert!(!me.admin);
    assert_eq!(me.ops, strings(&["read_all", "catalog"]));

    // Every refusal is in the audit log, with the user.
    server.stop().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let refusals = text
        .lines()
        .filter(|l| l.contains("\"access_denied\"") && l.contains("\"user\":\"bob\""))
        .count();
    assert!(refusals >= 8, "{refusals} refusals in\n{text}");
    assert!(text.contains("\"user_put\""));
    assert!(text.contains("\"role_put\""));
    assert!(!text.contains("bob-pw"), "no password in the audit log");
}

#[tokio::test]
async fn a_tenant_sees_only_its_namespace() {
    let mut server = TestServer::start().await;
    let root = first_admin(&server).await;
    for s in ["acme/a", "acme/b", "globex/a", "acme-not-tenant", "plain"] {
        root.append(s, ExpectedVersion::Any, vec![ev()])
            .await
            .unwrap();
    }
    root.put_user(user("acme-app", Some("pw"), &["writer"], Some("acme")))
        .await
        .unwrap();
    root.put_user(user("acme-boss", Some("pw"), &["admin"], Some("acme")))
        .await
        .unwrap();
    let app = login(&server, "acme-app", "pw").await.unwrap();
    app.append("acme/c", ExpectedVersion::NoStream, vec![ev()])
        .await
        .unwrap();
    denied(
        app.append("globex/a", ExpectedVersion::Any, vec![ev()])
            .await,
    );
    denied(
        app.append("acme-not-tenant", ExpectedVersion::Any, vec![ev()])
            .await,
    );
    denied(app.read_stream_page("plain", Default::default()).await);
    let acme = BTreeSet::from(["acme/a", "acme/b", "acme/c"].map(String::from));
    assert_eq!(streams_in_all(&app).await, acme);
    let listed: BTreeSet<String> = app
        .list_streams("", None, 100)
        .await
        .unwrap()
        .streams
        .into_iter()
        .map(|s| s.stream)
        .collect();
    assert_eq!(listed, acme);
    assert!(
        app.list_streams("globex/", None, 100)
            .await
            .unwrap()
            .streams
            .is_empty()
    );
    // A tenant's admin is the tenant's only: no server-wide figures,
    // backups, scavenges, users or groups.
    let boss = login(&server, "acme-boss", "pw").await.unwrap();
    boss.delete_stream(
        "acme/b",
        ExpectedVersion::Any,
        logbook_client::Deletion::Soft,
    )
    .await
    .unwrap();
    denied(
        boss.delete_stream(
            "globex/a",
            ExpectedVersion::Any,
            logbook_client::Deletion::Soft,
        )
        .await,
    );
    denied(boss.stats().await);
    denied(boss.list_users().await);
    denied(boss.list_groups().await);
    let me = boss.who_am_i().await.unwrap();
    assert!(!me.admin);
    assert_eq!(me.tenant.as_deref(), Some("acme"));

    // Users survive a restart.
    drop((app, boss, root));
    server.restart().await;
    let app = login(&server, "acme-app", "pw").await.unwrap();
    assert_eq!(
        streams_in_all(&app).await,
        BTreeSet::from(["acme/a", "acme/c"].map(String::from))
    );
    let err = Client::connect_with(server.addr, options())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn tokens_and_changes_of_rights_take_effect_at_once() {
    let server = TestServer::start().await;
    let root = first_admin(&server).await;
    root.put_role("r", vec![grant("s-", &["read", "write"])], vec![])
        .await
        .unwrap();
    root.put_user(user("ci", None, &["r"], None)).await.unwrap();
    // No password: tokens only.
    let err = login(&server, "ci", "").await.unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    let t1 = root.create_token("ci", "pipeline").await.unwrap();
    assert!(t1.token.starts_with("lbk_"));
    let by_token =
        |token: &str| Client::connect_with(server.addr, options().auth_token(token.to_owned()));
    let ci = by_token(&t1.token).await.unwrap();
    assert_eq!(ci.who_am_i().await.unwrap().user, "ci");
    ci.append("s-1", ExpectedVersion::Any, vec![ev()])
        .await
        .unwrap();
    // A session opened with a token cannot mint another (a stolen token
    // must not outlive its revocation); an admin makes the second.
    denied(ci.create_token("ci", "laptop").await);
    let t2 = root.create_token("ci", "laptop").await.unwrap();
    denied(root_only(&ci).await);
    let listed = root.list_users().await.unwrap();
    let ci_info = listed.iter().find(|u| u.name == "ci").unwrap();
    assert_eq!(ci_info.tokens.len(), 2);
    assert!(!ci_info.password);
    let ci2 = by_token(&t2.token).await.unwrap();

    // Revoking t1 closes the session opened with it, not the other.
    root.revoke_token("ci", &t1.id).await.unwrap();
    let err = ci.who_am_i().await.unwrap_err();
    assert!(
        matches!(err, Error::Disconnected | Error::NotAuthenticated),
        "{err:?}"
    );
    let err = by_token(&t1.token).await.unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    assert_eq!(ci2.who_am_i().await.unwrap().user, "ci");

    // A wrong secret with a real id, and garbage.
    let forged = format!("{}x", &t2.token[..t2.token.len() - 1]);
    let forged = if forged == t2.token {
        format!("{}y", &t2.token[..t2.token.len() - 1])
    } else {
        forged
    };
    assert!(matches!(
        by_token(&forged).await.unwrap_err(),
        Error::NotAuthenticated
    ));

    // Rights granted while connected apply to the next request.
    denied(ci2.append("t-1", ExpectedVersion::Any, vec![ev()]).await);
    root.put_role(
        "r",
        vec![grant("s-", &["read", "write"]), grant("t-", &["write"])],
        vec![],
    )
    .await
    .unwrap();
    ci2.append("t-1", ExpectedVersion::Any, vec![ev()])
        .await
        .unwrap();
    // A subscriber whose rights change is disconnected (its client
    // subscribes again under the new ones).
    let mut sub = ci2
        .subscribe_stream("s-1", Default::default())
        .await
        .unwrap();
    root.put_role("r", vec![grant("t-", &["write"])], vec![])
        .await
        .unwrap();
    let ended = loop {
        match sub.next().await {
            Some(Ok(SubscriptionMessage::Event(_))) | Some(Ok(_)) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(ended, Some(Err(_)) | None),
        "the subscription must end: {ended:?}"
    );
    // Disabling the user closes its sessions and refuses its tokens.
    let ci3 = by_token(&t2.token).await.unwrap();
    root.put_user(PutUser {
        disabled: true,
        ..user("ci", None, &["r"], None)
    })
    .await
    .unwrap();
    assert!(ci3.who_am_i().await.is_err());
    assert!(matches!(
        by_token(&t2.token).await.unwrap_err(),
        Error::NotAuthenticated
    ));
    // Roles in use stay; built-in ones cannot change.
    assert!(matches!(
        root.delete_role("r").await.unwrap_err(),
        Error::BadRequest(_)
    ));
    assert!(matches!(
        root.put_role("admin", vec![], vec![]).await.unwrap_err(),
        Error::BadRequest(_)
    ));
    root.delete_user("ci").await.unwrap();
    root.delete_role("r").await.unwrap();
    let roles: Vec<String> = root
        .list_roles()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(roles, strings(&["admin", "reader", "writer", "operator"]));
    // The server's own streams cannot be written, even by an admin.
    assert!(matches!(
        root.append("$auth", ExpectedVersion::Any, vec![ev()])
            .await
            .unwrap_err(),
        Error::BadRequest(_)
    ));
    server.stop().await;
}

/// A request only holders of the `users` right may make.
async fn root_only(c: &Client) -> logbook_client::Result<Vec<logbook_client::UserInfo>> {
    c.list_users().await
}

#[test]
fn a_server_reachable_beyond_loopback_starts_with_a_secret_admin_password() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let daemon = Daemon::start_on(&data, "0.0.0.0:0", &[]);
    let file = data.join(logbook_server::net::INITIAL_ADMIN_PASSWORD);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner may read it");
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(password.len() >= 32);
    assert!(daemon.log_text().contains("initial-admin-password"));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", daemon.addr.port()).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let err = Client::connect_with(addr, options()).await.unwrap_err();
        assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
        let admin = Client::connect_with(addr, options().credentials("admin", password.clone()))
            .await
            .unwrap();
        assert!(admin.who_am_i().await.unwrap().admin);
        // Deleting the last user would open a server reachable from the
        // network: refused.
        let err = admin.delete_user("admin").await.unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
        let err = Client::connect_with(addr, options()).await.unwrap_err();
        assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    });
    daemon.kill();
    // A restart keeps the admin and writes no new password.
    std::fs::remove_file(&file).unwrap();
    let daemon = Daemon::start_on(&data, "0.0.0.0:0", &[]);
    assert!(!file.exists());
    daemon.kill();
}

#[test]
fn the_cli_manages_users_roles_and_tokens() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&dir.path().join("data"), &[]);
    let server = daemon.addr.to_string();
    let run = |args: &[&str], env: &[(&str, &str)], stdin: Option<&str>| {
        let mut child = Command::new(logbook_tests::daemon::logbook_cli())
            .args(["--server", &server])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run logbook");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    };
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let out = ok(run(&["whoami"], &[], None));
    assert!(out.contains("user anonymous"), "{out}");
    ok(run(
        &["user", "put", "root", "--role", "admin", "--password-stdin"],
        &[],
        Some("s3cret\n"),
    ));
    // Authentication is on now.
    let out = run(&["whoami"], &[], None);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let root = [("LOGBOOK_USER", "root"), ("LOGBOOK_PASSWORD", "s3cret")];
    ok(run(
        &[
            "role",
            "put",
            "feeds",
            "--grant",
            "feed-=read,write",
            "--op",
            "catalog",
        ],
        &root,
        None,
    ));
    ok(run(&["user", "put", "svc", "--role", "feeds"], &root, None));
    let out = ok(run(
        &["token", "create", "svc", "--label", "deploy"],
        &root,
        None,
    ));
    let token = out.lines().last().unwrap().to_owned();
    assert!(token.starts_with("lbk_"), "{out}");
    let svc = [("LOGBOOK_AUTH_TOKEN", token.as_str())];
    let out = ok(run(&["whoami"], &svc, None));
    assert!(
        out.contains("user svc") && out.contains("feed-*=read,write"),
        "{out}"
    );
    ok(run(
        &["append", "feed-1", "--type", "T", "--data", "{}"],
        &svc,
        None,
    ));
    let out = run(
        &["append", "other", "--type", "T", "--data", "{}"],
        &svc,
        None,
    );
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("access denied"));
    let out = ok(run(&["--json", "users"], &root, None));
    let users: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(users.len(), 2);
    let id = users[1]["tokens"][0]["id"].as_str().unwrap().to_owned();
    ok(run(&["token", "revoke", "svc", &id], &root, None));
    let out = run(&["whoami"], &svc, None);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    ok(run(&["user", "passwd", "root"], &root, Some("n3w\n")));
    let out = run(&["whoami"], &root, None);
    assert_eq!(
        out.status.code(),
        Some(6),
        "the old password no longer works"
    );
    let out = ok(run(
        &["roles"],
        &[("LOGBOOK_USER", "root"), ("LOGBOOK_PASSWORD", "n3w")],
        None,
    ));
    assert!(out.contains("feeds") && out.contains("built-in"), "{out}");
    daemon.kill();
}

/// The second pair of eyes' findings, each reproduced: the last admin
/// cannot be removed; guesses sent in parallel are counted before they are
/// checked; the `users` right lists but does not change; catalog cursors
/// and duplicate-id refusals name no hidden stream; retention needs the
/// delete right; a new password ends the old one's sessions; backups are
/// the admins'.
#[tokio::test]
async fn what_the_review_found_stays_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let server = TestServer::start_tuned(|_, s| {
        s.audit_log = Some(AuditTarget::File(log.clone()));
    })
    .await;
    let root = first_admin(&server).await;
    // The last admin stays.
    root.put_user(user("bob", Some("bob-pw"), &["reader"], None))
        .await
        .unwrap();
    for change in [
        root.delete_user("root").await.map(drop),
        root.put_user(PutUser {
            disabled: true,
            ..user("root", None, &["admin"], None)
        })
        .await
        .map(drop),
        root.put_user(user("root", None, &["reader"], None))
            .await
            .map(drop),
        root.put_user(user("root", None, &["admin"], Some("acme")))
            .await
            .map(drop),
    ] {
        assert!(matches!(change, Err(Error::BadRequest(_))), "{change:?}");
    }
    assert!(root.who_am_i().await.unwrap().admin);

    // The `users` right lists users; it changes nothing.
    root.put_role("helpdesk", vec![], strings(&["users"]))
        .await
        .unwrap();
    root.put_user(user("helen", Some("helen-pw"), &["helpdesk"], None))
        .await
        .unwrap();
    let helen = login(&server, "helen", "helen-pw").await.unwrap();
    assert_eq!(helen.list_users().await.unwrap().len(), 3);
    denied(helen.put_user(user("helen", None, &["admin"], None)).await);
    denied(helen.create_token("root", "mine now").await);
    denied(
        helen
            .put_role("helpdesk", vec![], strings(&["users"]))
            .await,
    );
    denied(helen.backup(dir.path().join("copy"), |_| {}).await);
    assert!(matches!(
        root.put_role("ops", vec![], strings(&["backup"])).await,
        Err(Error::BadRequest(_))
    ));

    // Catalog cursors name only readable streams.
    for s in ["pub-1", "pub-2", "secret-alice@example.com", "zzz"] {
        root.append(s, ExpectedVersion::Any, vec![ev()])
            .await
            .unwrap();
    }
    root.put_role(
        "public",
        vec![grant("pub-", &["read", "write"])],
        strings(&["catalog"]),
    )
    .await
    .unwrap();
    root.put_user(user("pat", Some("pat-pw"), &["public"], None))
        .await
        .unwrap();
    let pat = login(&server, "pat", "pat-pw").await.unwrap();
    let mut after: Option<String> = None;
    let mut listed = Vec::new();
    loop {
        let page = pat.list_streams("", after.as_deref(), 1).await.unwrap();
        listed.extend(page.streams.iter().map(|s| s.stream.clone()));
        if let Some(n) = &page.next {
            assert!(n.starts_with("pub-"), "a cursor names {n:?}");
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(listed, ["pub-1", "pub-2"]);

    // A duplicate id stored in a hidden stream: refused, without saying
    // where.
    let secret = root
        .read_stream_page("secret-alice@example.com", Default::default())
        .await
        .unwrap();
    let id = secret.events[0].id;
    let err = pat
        .append(
            "pub-9",
            ExpectedVersion::Any,
            vec![NewEvent::new(id, "Happened", "{}")],
        )
        .await
        .unwrap_err();
    match &err {
        Error::DuplicateEventId { position, .. } => assert_eq!(*position, None),
        other => panic!("{other:?}"),
    }
    assert!(!format!("{err:?}").contains("secret"), "{err:?}");

    // Retention removes events: it needs the delete right.
    root.put_role("meta", vec![grant("pub-", &["read", "metadata"])], vec![])
        .await
        .unwrap();
    root.put_user(user("mia", Some("mia-pw"), &["meta"], None))
        .await
        .unwrap();
    let mia = login(&server, "mia", "mia-pw").await.unwrap();
    let mut custom = logbook_client::StreamMetadata::default();
    custom
        .custom
        .insert("owner".into(), serde_json::json!("team-a"));
    mia.set_stream_metadata("pub-1", ExpectedVersion::Any, custom)
        .await
        .unwrap();
    let truncate = logbook_client::StreamMetadata {
        truncate_before: Some(5),
        ..Default::default()
    };
    denied(
        mia.set_stream_metadata("pub-1", ExpectedVersion::Any, truncate)
            .await,
    );

    // A new password ends the sessions of the old one.
    let bob = login(&server, "bob", "bob-pw").await.unwrap();
    assert_eq!(bob.who_am_i().await.unwrap().user, "bob");
    root.put_user(user("bob", Some("new-pw"), &["reader"], None))
        .await
        .unwrap();
    let after_change = bob.who_am_i().await;
    assert!(
        after_change.is_err(),
        "{after_change:?}\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(matches!(
        login(&server, "bob", "bob-pw").await.unwrap_err(),
        Error::NotAuthenticated
    ));
    login(&server, "bob", "new-pw").await.unwrap();

    // Guesses in parallel: each counts before it is checked, so at most
    // MAX_FAILURES of them reach a password check.
    let passwords: Vec<String> = (0..20).map(|i| format!("guess-{i}")).collect();
    let guesses = passwords.iter().map(|p| login(&server, "root", p));
    let results = futures::future::join_all(guesses).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(Error::NotAuthenticated | Error::ServerBusy))),
        "{results:?}"
    );
    server.stop().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let checked = text
        .lines()
        .filter(|l| l.contains("\"login_failed\"") && l.contains("\"user\":\"root\""))
        .count();
    let refused = text
        .lines()
        .filter(|l| l.contains("\"login_refused\""))
        .count();
    assert!(
        checked <= logbook_server::net::audit::MAX_FAILURES as usize,
        "{checked} guesses were checked"
    );
    assert!(refused >= 20 - checked, "{refused} refused");
}

#[tokio::test]
async fn users_travel_in_backups() {
    let server = TestServer::start().await;
    let root = first_admin(&server).await;
    root.put_user(user("bob", Some("bob-pw"), &["reader"], None))
        .await
        .unwrap();
    root.append("a-1", ExpectedVersion::Any, vec![ev()])
        .await
        .unwrap();
    let copy = tempfile::tempdir().unwrap();
    root.backup(copy.path(), |_| {}).await.unwrap();
    drop(root);
    server.stop().await;
    // The copy, served: the same users, the same rights.
    let restored = TestServer::start_with(
        logbook_storage::StoreConfig::new(copy.path()),
        logbook_server::net::ServerConfig::default(),
    )
    .await;
    let err = Client::connect_with(restored.addr, options())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAuthenticated), "{err:?}");
    let bob = login(&restored, "bob", "bob-pw").await.unwrap();
    assert_eq!(
        bob.read_stream_page("a-1", Default::default())
            .await
            .unwrap()
            .events
            .len(),
        1
    );
    denied(bob.append("a-1", ExpectedVersion::Any, vec![ev()]).await);
    restored.stop().await;
}

/// The second review's findings: an admin nobody can log in as does not
/// count; token sessions outlive a password change, subscriptions
/// included; many good logins at once from one address are told to retry,
/// never refused as failures; a reader's catalog pages keep to their byte
/// budget whatever the metadata.
#[tokio::test]
async fn what_the_second_review_found_stays_fixed() {
    let server = TestServer::start().await;
    let root = first_admin(&server).await;
    // An admin without password or token cannot take over.
    root.put_user(user("ghost", None, &["admin"], None))
        .await
        .unwrap();
    assert!(matches!(
        root.delete_user("root").await,
        Err(Error::BadRequest(_))
    ));

    // A token session with a subscription survives its user's new password.
    root.put_user(user("svc", Some("pw-1"), &["reader"], None))
        .await
        .unwrap();
    let t = root.create_token("svc", "job").await.unwrap();
    let by_token = Client::connect_with(server.addr, options().auth_token(t.token.clone()))
        .await
        .unwrap();
    root.append("feed-1", ExpectedVersion::Any, vec![ev()])
        .await
        .unwrap();
    let mut sub = by_token
        .subscribe_stream("feed-1", Default::default())
        .await
        .unwrap();
    loop {
        if let SubscriptionMessage::Event(_) = sub.next().await.unwrap().unwrap() {
            break;
        }
    }
    root.put_user(user("svc", Some("pw-2"), &["reader"], None))
        .await
        .unwrap();
    root.append("feed-1", ExpectedVersion::Any, vec![ev()])
        .await
        .unwrap();
    loop {
        match sub.next().await.unwrap().unwrap() {
            SubscriptionMessage::Event(e) => {
                assert_eq!(e.version.0, 1);
                break;
            }
            SubscriptionMessage::FellBehind { .. } => panic!("the token session was closed"),
            _ => continue,
        }
    }
    drop(sub);

    // Ten good logins at once from one address: they wait their turn,
    // none is refused or taken for a failure, and the address is not
    // blocked after. Fifty token logins at once are never held back.
    let logins = (0..10).map(|_| login(&server, "svc", "pw-2"));
    for r in futures::future::join_all(logins).await {
        assert!(r.is_ok(), "{:?}", r.err());
    }
    let tokens =
        (0..50).map(|_| Client::connect_with(server.addr, options().auth_token(t.token.clone())));
    for r in futures::future::join_all(tokens).await {
        assert!(r.is_ok(), "{:?}", r.err());
    }
    login(&server, "svc", "pw-2").await.unwrap();

    // Streams with large metadata: a reader's catalog pages stay within
    // their budget (one page once ran past the frame limit).
    let mut big = logbook_client::StreamMetadata::default();
    big.custom
        .insert("blob".into(), serde_json::json!("x".repeat(1 << 20)));
    for i in 0..6 {
        let s = format!("pub-{i}");
        root.append(s.as_str(), ExpectedVersion::Any, vec![ev()])
            .await
            .unwrap();
        root.set_stream_metadata(s.as_str(), ExpectedVersion::Any, big.clone())
            .await
            .unwrap();
    }
    let reader = login(&server, "svc", "pw-2").await.unwrap();
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let page = reader
            .list_streams("pub-", after.as_deref(), 100)
            .await
            .unwrap();
        assert!(page.streams.len() <= 2, "a page of {}", page.streams.len());
        seen.extend(page.streams.iter().map(|s| s.stream.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    server.stop().await;
}
