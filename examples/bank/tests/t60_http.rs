//! The bank's two HTTP services against a real daemon: the classic flow
//! over HTTP (open Alice with 1,000, deposit 250, withdraw 75, a refused
//! overdraft; then balance 1,175 and the history from the query side once
//! the projector caught up), clear JSON errors, and re-sent commands
//! applied once (by `command_id` and by `Idempotency-Key`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Env;
use logbook_bank::http;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request (`Connection: close`); the status and the JSON
/// body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8(out).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, json)
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    call(addr, "POST", path, Some(&body.to_string()), &[]).await
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    call(addr, "GET", path, None, &[]).await
}

/// Both services on free ports.
struct Services {
    command: SocketAddr,
    query: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Services {
    async fn start(env: &Env) -> Services {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let commands = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let command = commands.local_addr().unwrap();
        let mut tasks = vec![tokio::spawn(http::serve(
            commands,
            http::command_router(env.bank.clone()),
            until(stopped.clone()),
        ))];
        let queries = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let query = queries.local_addr().unwrap();
        let service = http::QueryService::start(env.client.clone(), env.db.clone()).unwrap();
        tasks.push(tokio::spawn(http::serve(
            queries,
            service.router(),
            until(stopped),
        )));
        Services {
            command,
            query,
            stop,
            tasks,
        }
    }

    /// Stops both gracefully: each serve returns once its requests end.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.expect("serve task").expect("serve");
        }
    }
}

/// Waits until the projector has caught up with the log (its `/health`
/// says nothing is behind; bounded at 30 s), then reads `id`'s
/// transactions.
async fn transactions(query: SocketAddr, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, health) = get(query, "/health").await;
        if status == 200 && health["projection"]["events_behind"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the projector never caught up: {status} {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = get(query, &format!("/accounts/{id}/transactions")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_classic_flow_over_http() {
    // A snapshot every 2 events: snapshots at the end of the log must not
    // hold the projection's checkpoint back.
    let env = Env::start_with(logbook_bank::BankOptions {
        snapshot_every: 2,
        ..Default::default()
    })
    .await;
    let services = Services::start(&env).await;
    let (command, query) = (services.command, services.query);

    let (status, health) = get(command, "/health").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let (status, opened) = post(
        command,
        "/commands/open-account",
        json!({ "owner_name": "Alice", "initial_balance": 1000 }),
    )
    .await;
    assert_eq!(status, 201, "{opened}");
    let id = opened["account_id"].as_str().unwrap().to_owned();
    assert_eq!(opened["balance"], "1000.00");
    let (status, body) = post(
        command,
        "/commands/deposit",
        json!({ "account_id": id, "amount": 250, "description": "Salary" }),
    )
    .await;
    assert_eq!((status, body["balance"].as_str()), (200, Some("1250.00")));
    let (status, body) = post(
        command,
        "/commands/withdraw",
        json!({ "account_id": id, "amount": "75", "description": "Groceries" }),
    )
    .await;
    assert_eq!((status, body["balance"].as_str()), (200, Some("1175.00")));
    // An overdraft is refused, and nothing changes.
    let (status, body) = post(
        command,
        "/commands/withdraw",
        json!({ "account_id": id, "amount": 5000 }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["code"], "insufficient_funds");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("insufficient funds")
    );

    // Clear errors for the rest.
    let (status, body) = call(command, "POST", "/commands/deposit", Some("{not json"), &[]).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    assert!(
        body["error"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (status, body) = post(
        command,
        "/commands/deposit",
        json!({ "account_id": unknown, "amount": 1 }),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("account_not_found"))
    );
    let (status, body) = post(
        command,
        "/commands/deposit",
        json!({ "account_id": id, "amount": -5 }),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, _) = post(
        command,
        "/commands/deposit",
        json!({ "account_id": "not-an-id", "amount": 5 }),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        command,
        "/commands/deposit",
        json!({ "account_id": id, "amount": "ten" }),
    )
    .await;
    assert_eq!(status, 400);

    // The query side, once the projector caught up.
    let history = transactions(query, &id).await;
    let kinds: Vec<&str> = history["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["open", "deposit", "withdrawal"]);
    assert_eq!(history["transactions"][1]["description"], "Salary");
    let (status, account) = get(query, &format!("/accounts/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(account["balance"], "1175.00");
    assert_eq!(account["owner_name"], "Alice");
    let (_, all) = get(query, "/accounts").await;
    assert_eq!(all["accounts"].as_array().unwrap().len(), 1);
    let (status, health) = get(query, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["projection"]["events_behind"], 0, "{health}");
    let (status, _) = get(query, &format!("/accounts/{unknown}")).await;
    assert_eq!(status, 404);
    services.stop().await;
}

#[tokio::test]
async fn a_resent_command_applies_once() {
    let env = Env::start().await;
    let services = Services::start(&env).await;
    let (command, query) = (services.command, services.query);
    let open = json!({ "owner_name": "Bob", "initial_balance": 100, "command_id": "open-bob-1" });
    let (first, a) = post(command, "/commands/open-account", open.clone()).await;
    let (second, b) = post(command, "/commands/open-account", open).await;
    assert_eq!((first, second), (201, 200), "{a} {b}");
    assert_eq!(a["account_id"], b["account_id"], "the same account");
    assert_eq!(
        (a["applied_earlier"].clone(), b["applied_earlier"].clone()),
        (json!(false), json!(true))
    );
    let id = a["account_id"].as_str().unwrap().to_owned();
    // The same key for someone else's account opens another one.
    let (status, other) = post(
        command,
        "/commands/open-account",
        json!({ "owner_name": "Mallory", "initial_balance": 1, "command_id": "open-bob-1" }),
    )
    .await;
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["account_id"], a["account_id"]);
    let other = other["account_id"].as_str().unwrap().to_owned();

    let deposit = json!({ "account_id": id, "amount": 10, "command_id": "dep-1" });
    let (s1, d1) = post(command, "/commands/deposit", deposit.clone()).await;
    let (s2, d2) = post(command, "/commands/deposit", deposit).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(
        (d1["balance"].as_str(), d2["balance"].as_str()),
        (Some("110.00"), Some("110.00"))
    );
    assert_eq!(
        (d1["applied_earlier"].clone(), d2["applied_earlier"].clone()),
        (json!(false), json!(true))
    );
    // The same key on another endpoint, amount or account is another
    // command: never silently taken for the first.
    let (_, w) = post(
        command,
        "/commands/withdraw",
        json!({ "account_id": id, "amount": 10, "command_id": "dep-1" }),
    )
    .await;
    assert_eq!(
        (w["balance"].as_str(), w["applied_earlier"].clone()),
        (Some("100.00"), json!(false))
    );
    let (_, d3) = post(
        command,
        "/commands/deposit",
        json!({ "account_id": id, "amount": 7, "command_id": "dep-1" }),
    )
    .await;
    assert_eq!(
        (d3["balance"].as_str(), d3["applied_earlier"].clone()),
        (Some("107.00"), json!(false))
    );
    let (status, d4) = post(
        command,
        "/commands/deposit",
        json!({ "account_id": other, "amount": 10, "command_id": "dep-1" }),
    )
    .await;
    assert_eq!(
        (status, d4["balance"].as_str()),
        (200, Some("11.00")),
        "{d4}"
    );
    // An empty key is refused.
    let (status, body) = post(
        command,
        "/commands/deposit",
        json!({ "account_id": id, "amount": 1, "command_id": "" }),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("bad_request")));
    // The header works as well.
    let withdraw = json!({ "account_id": id, "amount": 5 }).to_string();
    for round in 0..3 {
        let (status, body) = call(
            command,
            "POST",
            "/commands/withdraw",
            Some(&withdraw),
            &[("Idempotency-Key", "wd-7")],
        )
        .await;
        assert_eq!((status, body["balance"].as_str()), (200, Some("102.00")));
        assert_eq!(body["applied_earlier"], json!(round > 0));
    }
    // open, deposit 10, withdraw 10, deposit 7, withdraw 5: nothing twice.
    let history = transactions(query, &id).await;
    let (_, account) = get(query, &format!("/accounts/{id}")).await;
    assert_eq!(account["balance"], "102.00");
    assert_eq!(history["transactions"].as_array().unwrap().len(), 5);
    services.stop().await;
}
