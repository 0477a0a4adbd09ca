//! The web console (`/console` on the metrics port) of a real `logbookd`:
//! its JSON API under users and rights, over plain HTTP, and its pages in a
//! real headless Chromium (logging in through the form, the catalog, a
//! stream's events, the live log following appends, groups, charts), with
//! screenshots saved under `target/tmp/console/`.

use std::net::SocketAddr;
use std::path::PathBuf;

use logbook_client::{
    Client, ClientOptions, EventId, ExpectedVersion, Grant, GroupSettings, GroupSource, GroupStart,
    NewEvent, PutUser,
};
use logbook_tests::browser::Browser;
use logbook_tests::daemon::Daemon;
use logbook_tests::http::{Response, request};

const ADMIN_PASSWORD: &str = "correct horse battery staple";
const READER_PASSWORD: &str = "reader's secret";

fn user(name: &str, password: &str, roles: &[&str]) -> PutUser {
    PutUser {
        name: name.into(),
        password: Some(password.into()),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        tenant: None,
        disabled: false,
    }
}

/// A daemon with a metrics port, `admin` and a reader of `acct-` only, and
/// some events: `acct-1..3` (JSON, one with a number no double holds) and
/// `secret-1`, and a consumer group. Returns the daemon and an admin client.
async fn store_with_users(dir: &std::path::Path, extra: &[&str]) -> (Daemon, Client) {
    let mut flags = vec!["--metrics-listen", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let daemon = Daemon::start(dir, &flags);
    // Authentication is off until the first user exists.
    let anonymous = Client::connect(daemon.addr).await.unwrap();
    anonymous
        .put_user(user("admin", ADMIN_PASSWORD, &["admin"]))
        .await
        .unwrap();
    let admin = Client::connect_with(
        daemon.addr,
        ClientOptions::default().credentials("admin", ADMIN_PASSWORD),
    )
    .await
    .unwrap();
    admin
        .put_role(
            "acct-reader",
            vec![Grant {
                prefix: "acct-".into(),
                rights: vec!["read".into()],
            }],
            vec!["catalog".into(), "read_all".into()],
        )
        .await
        .unwrap();
    admin
        .put_user(user("reader", READER_PASSWORD, &["acct-reader"]))
        .await
        .unwrap();
    for (stream, data) in [
        ("acct-1", r#"{"owner": "Alice", "balance": 1000}"#),
        (
            "acct-2",
            r#"{"owner": "Bob", "balance": 12345678901234567890.25}"#,
        ),
        ("acct-3", r#"{"owner": "Carol", "balance": 7}"#),
        ("secret-1", r#"{"launch_code": "0000"}"#),
    ] {
        append(&admin, stream, "Opened", data).await;
    }
    admin
        .create_group(
            "projector",
            GroupSource::All { filter: None },
            GroupStart::Start,
            GroupSettings::default(),
        )
        .await
        .unwrap();
    (daemon, admin)
}

async fn append(client: &Client, stream: &str, kind: &str, data: &str) {
    client
        .append(
            stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(EventId::new_v7(), kind, data.to_owned())],
        )
        .await
        .unwrap();
}

/// The console as a browser's script calls it: `X-Logbook-Console: 1` and
/// the session cookie, if any.
struct Api {
    addr: SocketAddr,
    cookie: Option<String>,
}

impl Api {
    async fn get(&self, path: &str) -> Response {
        let cookie = self.cookie.clone().unwrap_or_default();
        let mut headers = vec![("X-Logbook-Console", "1")];
        if self.cookie.is_some() {
            headers.push(("Cookie", &cookie));
        }
        request(self.addr, "GET", path, &headers, b"").await
    }

    async fn post(&self, path: &str, body: &str) -> Response {
        let cookie = self.cookie.clone().unwrap_or_default();
        let mut headers = vec![
            ("X-Logbook-Console", "1"),
            ("Content-Type", "application/json"),
        ];
        if self.cookie.is_some() {
            headers.push(("Cookie", &cookie));
        }
        request(self.addr, "POST", path, &headers, body.as_bytes()).await
    }

    /// Logs in; keeps the session cookie.
    async fn login(&mut self, user: &str, password: &str) -> Response {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        let r = self.post("/console/api/login", &body).await;
        if r.status == 200 {
            let set = r.header("Set-Cookie").expect("a session cookie").to_owned();
            assert!(set.contains("HttpOnly"), "{set}");
            assert!(set.contains("SameSite=Strict"), "{set}");
            self.cookie = Some(set.split(';').next().unwrap().to_owned());
        }
        r
    }
}

fn streams_of(v: &serde_json::Value) -> Vec<String> {
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stream"].as_str().unwrap().to_owned())
        .collect()
}

fn event_streams(v: &serde_json::Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_shows_each_user_what_they_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, admin) = store_with_users(dir.path(), &[]).await;
    let metrics = daemon.metrics_addr.unwrap();
    let mut api = Api {
        addr: metrics,
        cookie: None,
    };

    // The page itself needs no login; its data does.
    let page = request(metrics, "GET", "/console", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("/console/app.js"));
    let csp = page.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert_eq!(page.header("X-Frame-Options"), Some("DENY"));
    for asset in ["/console/app.js", "/console/style.css"] {
        assert_eq!(request(metrics, "GET", asset, &[], b"").await.status, 200);
    }
    let r = api.get("/console/api/session").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["login"], true);

    // Wrong password, bad bodies, and requests without the console's mark
    // or from another origin are refused.
    assert_eq!(api.login("reader", "wrong").await.status, 401);
    assert_eq!(api.post("/console/api/login", "{nope").await.status, 400);
    assert_eq!(
        api.post("/console/api/login", r#"{"user": "reader"}"#)
            .await
            .status,
        400
    );
    let body = serde_json::json!({ "user": "reader", "password": READER_PASSWORD }).to_string();
    let unmarked = request(
        metrics,
        "POST",
        "/console/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(unmarked.status, 403, "{}", unmarked.text());
    let foreign = request(
        metrics,
        "POST",
        "/console/api/login",
        &[
            ("X-Logbook-Console", "1"),
            ("Origin", "http://evil.example"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(foreign.status, 403, "{}", foreign.text());
    let huge = vec![b'x'; 64 * 1024];
    let r = request(
        metrics,
        "POST",
        "/console/api/login",
        &[("X-Logbook-Console", "1")],
        &huge,
    )
    .await;
    assert_eq!(r.status, 413);

    // The reader sees its streams only, in the catalog and the global log.
    let r = api.login("reader", READER_PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let who = api.get("/console/api/session").await.json();
    assert_eq!(who["user"], "reader");
    assert_eq!(who["admin"], false);
    assert_eq!(who["logged_in"], true);
    let streams = api.get("/console/api/streams").await.json();
    assert_eq!(streams_of(&streams), ["acct-1", "acct-2", "acct-3"]);
    let log = api.get("/console/api/log?limit=100").await.json();
    assert_eq!(event_streams(&log), ["acct-1", "acct-2", "acct-3"]);
    let back = api.get("/console/api/log?dir=back&limit=2").await.json();
    assert_eq!(event_streams(&back), ["acct-3", "acct-2"]);
    // A stream's events, its catalog entry, and a payload number that a
    // double would round, served digit for digit.
    let r = api.get("/console/api/stream?name=acct-2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains(r#""balance":12345678901234567890.25"#),
        "{}",
        r.text()
    );
    let v = r.json();
    assert_eq!(v["info"]["event_count"], 1);
    assert_eq!(v["events"][0]["type"], "Opened");
    assert_eq!(v["events"][0]["data_encoding"], "json");
    // What it may not read is refused, as on the client port.
    let r = api.get("/console/api/stream?name=secret-1").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(api.get("/console/api/groups").await.status, 403);
    assert_eq!(api.get("/console/api/stats").await.status, 403);
    let r = api
        .post("/console/api/groups/replay?group=projector", "")
        .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // Bad queries are 400s, unknown paths 404s.
    assert_eq!(api.get("/console/api/stream").await.status, 400);
    assert_eq!(api.get("/console/api/log?from=minus-one").await.status, 400);
    assert_eq!(api.get("/console/api/log?dir=up").await.status, 400);
    assert_eq!(api.get("/console/api/nothing").await.status, 404);
    assert_eq!(api.get("/console/api/login").await.status, 405);

    // The admin sees everything, groups and figures included.
    let mut root = Api {
        addr: metrics,
        cookie: None,
    };
    assert_eq!(root.login("admin", ADMIN_PASSWORD).await.status, 200);
    let streams = root.get("/console/api/streams").await.json();
    assert!(streams_of(&streams).contains(&"secret-1".to_owned()));
    let groups = root.get("/console/api/groups").await.json();
    assert_eq!(groups["groups"][0]["group"], "projector");
    assert_eq!(groups["groups"][0]["source"], "$all");
    let stats = root.get("/console/api/stats").await.json();
    assert!(stats["now"]["events"].as_u64().unwrap() >= 4, "{stats}");
    assert!(stats["history"].is_array());
    let r = root
        .post("/console/api/groups/replay?group=projector", "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Rights apply at once: a narrower role narrows the open session.
    admin
        .put_role(
            "acct-reader",
            vec![Grant {
                prefix: "acct-1".into(),
                rights: vec!["read".into()],
            }],
            vec!["catalog".into(), "read_all".into()],
        )
        .await
        .unwrap();
    let streams = api.get("/console/api/streams").await.json();
    assert_eq!(streams_of(&streams), ["acct-1"]);
    // A password change ends the session: its reconnect is refused.
    admin
        .put_user(user("reader", "a new secret", &["acct-reader"]))
        .await
        .unwrap();
    let r = api.get("/console/api/streams").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["login"], true);
    // And the cookie is spent.
    assert_eq!(api.get("/console/api/session").await.status, 401);

    // Logging out ends a session.
    assert_eq!(root.post("/console/api/logout", "").await.status, 200);
    assert_eq!(root.get("/console/api/session").await.status, 401);

    // A user keeps at most 8 sessions: a ninth login ends the oldest.
    let mut first = Api {
        addr: metrics,
        cookie: None,
    };
    assert_eq!(first.login("admin", ADMIN_PASSWORD).await.status, 200);
    for _ in 0..8 {
        let mut more = Api {
            addr: metrics,
            cookie: None,
        };
        assert_eq!(more.login("admin", ADMIN_PASSWORD).await.status, 200);
    }
    assert_eq!(first.get("/console/api/session").await.status, 401);

    // Payloads: whole on a stream's page, a 2 KiB preview in the log.
    let big = format!(r#"{{"blob": "{}"}}"#, "x".repeat(10_000));
    append(&admin, "acct-big", "Big", &big).await;
    let mut root = Api {
        addr: metrics,
        cookie: None,
    };
    assert_eq!(root.login("admin", ADMIN_PASSWORD).await.status, 200);
    let v = root.get("/console/api/stream?name=acct-big").await.json();
    assert_eq!(
        v["events"][0]["data"]["blob"].as_str().unwrap().len(),
        10_000
    );
    let v = root.get("/console/api/log?dir=back&limit=1").await.json();
    assert_eq!(v["events"][0]["stream"], "acct-big");
    assert_eq!(v["events"][0]["data_encoding"], "base64");
    assert_eq!(v["preview_bytes"], 2048);
    assert!(v["events"][0]["data"].as_str().unwrap().len() < 2800);

    // HTTP odds and ends: HEAD on the API, several session cookies, a
    // chunked body, a DEL byte inside a JSON password.
    let r = request(metrics, "HEAD", "/console/api/session", &[], b"").await;
    assert_eq!(r.status, 405);
    let two = format!("{}; lbk_console=other", root.cookie.clone().unwrap());
    let r = request(
        metrics,
        "GET",
        "/console/api/session",
        &[("Cookie", &two)],
        b"",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        metrics,
        "POST",
        "/console/api/login",
        &[("X-Logbook-Console", "1"), ("Transfer-Encoding", "chunked")],
        b"",
    )
    .await;
    assert_eq!(r.status, 501);
    let r = api
        .post(
            "/console/api/login",
            "{\"user\": \"nobody\", \"password\": \"a\u{7f}b\"}",
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text());

    // Sessions the server ended do not try their password again: five
    // stale tabs after a password change do not count as five failed
    // logins of this address (which would block it).
    let mut tabs = Vec::new();
    for _ in 0..5 {
        let mut tab = Api {
            addr: metrics,
            cookie: None,
        };
        assert_eq!(tab.login("reader", "a new secret").await.status, 200);
        tabs.push(tab);
    }
    admin
        .put_user(user("reader", "yet another", &["acct-reader"]))
        .await
        .unwrap();
    for tab in &tabs {
        let r = tab.get("/console/api/streams").await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    assert_eq!(
        Api {
            addr: metrics,
            cookie: None
        }
        .login("admin", ADMIN_PASSWORD)
        .await
        .status,
        200,
        "stale sessions did not count as failed logins"
    );
    // Console logins are throttled by the browser's address, as on the
    // client port: five wrong passwords, and the right one is refused too.
    // (The wrong password above made one failure already.)
    for _ in 0..4 {
        assert_eq!(api.login("admin", "guess").await.status, 401);
    }
    let r = api.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status, 401, "blocked: {}", r.text());
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_users_the_console_serves_local_browsers_only_at_local_names() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = daemon.metrics_addr.unwrap();
    let r = request(
        metrics,
        "GET",
        "/console/api/session",
        &[("Host", "localhost:1234")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["user"], "anonymous");
    assert_eq!(r.json()["logged_in"], false);
    // A DNS name pointing at 127.0.0.1 could be another site's.
    let r = request(
        metrics,
        "GET",
        "/console/api/session",
        &[("Host", "evil.example:1234")],
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // With nothing to log in to, a login is refused: the server would let
    // any password in as the anonymous admin, and a login skips the
    // loopback and local-name rules (a rebound name, or another machine).
    let body = serde_json::json!({ "user": "nobody", "password": "x" }).to_string();
    for host in ["localhost:1234", "evil.example:1234"] {
        let r = request(
            metrics,
            "POST",
            "/console/api/login",
            &[("X-Logbook-Console", "1"), ("Host", host)],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 409, "{host}: {}", r.text());
        assert!(r.header("Set-Cookie").is_none());
    }

    // --no-console: no console.
    let dir = tempfile::tempdir().unwrap();
    let off = Daemon::start(
        dir.path(),
        &["--metrics-listen", "127.0.0.1:0", "--no-console"],
    );
    let r = request(off.metrics_addr.unwrap(), "GET", "/console", &[], b"").await;
    assert_eq!(r.status, 404);
    let r = request(off.metrics_addr.unwrap(), "GET", "/health", &[], b"").await;
    assert_eq!(r.status, 200);
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, admin) = store_with_users(dir.path(), &[]).await;
    let base = format!("http://{}/console", daemon.metrics_addr.unwrap());
    let browser = Browser::start().await;
    let shots = screenshots();

    // The login form, filled in and sent as a user would.
    browser.goto(&base).await;
    browser
        .wait_for("!document.getElementById('login').hidden")
        .await;
    browser.type_into("#login-user", "admin").await;
    browser.type_into("#login-password", ADMIN_PASSWORD).await;
    browser.click("#login-submit").await;

    // The catalog lists the streams.
    let listed = browser
        .wait_for(
            "document.querySelectorAll('#streams tbody tr[data-stream]').length >= 4 && \
             [...document.querySelectorAll('#streams tbody tr[data-stream]')].map(r => r.dataset.stream).join(',')",
        )
        .await;
    // The admin sees the system streams ($auth, $groups, ...) too.
    let listed: Vec<&str> = listed
        .as_str()
        .unwrap()
        .split(',')
        .filter(|s| !s.starts_with('$'))
        .collect();
    assert_eq!(listed, ["acct-1", "acct-2", "acct-3", "secret-1"]);
    assert_eq!(
        browser
            .eval("return document.getElementById('who').textContent")
            .await,
        "admin (admin)"
    );
    browser.screenshot(&shots.join("streams.png")).await;

    // Searching narrows the catalog.
    browser.type_into("#stream-search", "secret").await;
    browser.click("form.toolbar button[type=submit]").await;
    browser
        .wait_for(
            "location.hash.includes('prefix=secret') && \
             document.querySelectorAll('#streams tbody tr[data-stream]').length === 1",
        )
        .await;
    browser.goto(&format!("{base}#/streams")).await;

    // A stream's events: pretty-printed JSON, every digit kept.
    browser
        .wait_for("document.querySelector('#streams a.stream')")
        .await;
    browser
        .click("#streams tr[data-stream='acct-2'] a.stream")
        .await;
    let shown = browser
        .wait_for("document.querySelector('#events .event pre.data')?.textContent")
        .await;
    assert_eq!(
        shown,
        "{\n  \"owner\": \"Bob\",\n  \"balance\": 12345678901234567890.25\n}"
    );
    let name = browser
        .eval("return document.getElementById('stream-name').textContent")
        .await;
    assert_eq!(name, "acct-2");
    browser.screenshot(&shots.join("stream.png")).await;

    // The live log follows appends made while it is open (the admin's
    // log holds the system streams' events too: users, groups).
    browser.goto(&format!("{base}#/log")).await;
    let head = browser
        .wait_for(
            "document.querySelectorAll('#log tbody tr').length > 0 && \
             document.getElementById('log-head').textContent",
        )
        .await;
    let head: u64 = head.as_str().unwrap().replace(',', "").parse().unwrap();
    for i in 0..3 {
        append(
            &admin,
            "acct-live",
            "Deposited",
            &format!(r#"{{"amount": {}}}"#, 10 + i),
        )
        .await;
    }
    let newest = browser
        .wait_for(&format!(
            "document.querySelector('#log tbody tr')?.dataset.position === '{}' && \
             document.querySelectorAll('#log tbody a.stream').length",
            head + 2
        ))
        .await;
    assert!(newest.as_u64().unwrap() >= 7, "{newest}");
    let live = browser
        .eval(
            "return [...document.querySelectorAll('#log tbody tr')].slice(0, 3).map(r => r.dataset.position + ' ' + r.cells[2].textContent + ' ' + r.cells[5].textContent)",
        )
        .await;
    assert_eq!(
        live,
        serde_json::json!([
            format!("{} acct-live {{ \"amount\": 12 }}", head + 2),
            format!("{} acct-live {{ \"amount\": 11 }}", head + 1),
            format!("{} acct-live {{ \"amount\": 10 }}", head),
        ])
    );
    let now = browser
        .eval("return document.getElementById('log-head').textContent")
        .await;
    assert_eq!(now, (head + 3).to_string());
    browser.screenshot(&shots.join("log.png")).await;

    // Groups and subscriptions.
    browser.goto(&format!("{base}#/groups")).await;
    browser
        .wait_for("document.querySelector('#groups tr[data-group=projector]')")
        .await;
    browser
        .wait_for("document.getElementById('subscriptions-open')")
        .await;
    browser.screenshot(&shots.join("groups.png")).await;

    // Stats as charts.
    browser.goto(&format!("{base}#/stats")).await;
    let charts = browser
        .wait_for("document.querySelectorAll('#charts .chart svg polyline').length")
        .await;
    assert_eq!(charts, 8);
    browser.screenshot(&shots.join("stats.png")).await;

    // Logging out shows the form again.
    browser.click("#logout").await;
    browser
        .wait_for("!document.getElementById('login').hidden")
        .await;
    browser.close().await;
    eprintln!("console screenshots in {}", shots.display());
    drop(daemon);
}
