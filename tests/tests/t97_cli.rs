//! The `logbook` command-line tool, run as a subprocess against a
//! `logbookd` subprocess: stdout in both forms, and the exit codes
//! (0 ok, 2 bad input, 3 unreachable, 4 wrong expected version, 5 stream
//! not found).
//!
//! Each test starts its own daemon over its own directory on port 0, so
//! they run in parallel. Nothing sleeps: a test that follows live events
//! reads the tool's output until it says it caught up, then appends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use logbook_tests::daemon::{Daemon, logbook_cli};
use serde_json::{Value, json};

/// A daemon of this test's own.
struct Env {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(&dir.path().join("data"), &["--durability", "os"]);
        Env { daemon, dir }
    }

    fn addr(&self) -> SocketAddr {
        self.daemon.addr
    }

    /// Runs `logbook --server <this daemon> args...`.
    fn run(&self, args: &[&str]) -> Output {
        logbook(self.addr(), args)
    }

    /// Runs the tool and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "logbook {args:?} failed ({:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the tool with `--json`, expects success; returns its lines.
    fn json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        lines(&self.ok(&all))
    }

    /// Appends an event with JSON data; returns the append's JSON result.
    fn append(&self, stream: &str, event_type: &str, data: &str) -> Value {
        let out = self.json(&["append", stream, "--type", event_type, "--data", data]);
        assert_eq!(out.len(), 1, "{out:?}");
        out.into_iter().next().unwrap()
    }

    /// Runs the tool and expects it to fail with `code` and one
    /// `logbook: error:` line on stderr; returns that line.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        fails_with(&self.run(args), code, args)
    }
}

fn logbook(server: SocketAddr, args: &[&str]) -> Output {
    Command::new(logbook_cli())
        .arg("--server")
        .arg(server.to_string())
        .args(args)
        .env_remove("LOGBOOK_SERVER")
        .env_remove("LOGBOOK_AUTH_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run logbook")
}

fn fails_with(out: &Output, code: i32, args: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "logbook {args:?}: stdout {:?}, stderr {stderr:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.starts_with("logbook: error: ") && stderr.lines().count() == 1,
        "one error line expected: {stderr:?}"
    );
    stderr
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn field(values: &[Value], name: &str) -> Vec<Value> {
    values.iter().map(|v| v[name].clone()).collect()
}

fn nums(values: &[Value], name: &str) -> Vec<u64> {
    values.iter().map(|v| v[name].as_u64().unwrap()).collect()
}

#[test]
fn ping_answers_in_both_forms() {
    let env = Env::start();
    let human = env.ok(&["ping"]);
    assert!(human.starts_with("pong from logbookd "), "{human}");
    assert!(human.contains(&env.addr().to_string()), "{human}");
    let json = env.json(&["ping"]);
    assert_eq!(json.len(), 1);
    assert!(json[0]["server_version"].is_string(), "{json:?}");
    assert!(json[0]["rtt_ms"].as_f64().unwrap() >= 0.0, "{json:?}");

    // The address can come from the environment too.
    let out = Command::new(logbook_cli())
        .arg("ping")
        .env("LOGBOOK_SERVER", env.addr().to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn append_checks_each_kind_of_expected_version() {
    let env = Env::start();
    let args = |expected: &'static str| {
        [
            "append",
            "acct-1",
            "--type",
            "Opened",
            "--data",
            r#"{"n":1}"#,
            "--expected",
            expected,
        ]
    };
    let first = env.json(&args("no-stream"));
    assert_eq!(
        first,
        vec![json!({
            "stream": "acct-1",
            "id": first[0]["id"],
            "first_version": 0,
            "last_version": 0,
            "first_position": 0,
            "last_position": 0,
        })]
    );
    // The stream exists now: no-stream fails, and writes nothing.
    let err = env.fails(4, &args("no-stream"));
    assert!(err.contains("wrong expected version"), "{err}");
    let second = env.json(&args("exists"));
    assert_eq!(second[0]["last_version"], 1);
    let err = env.fails(
        4,
        &[
            "append",
            "new-1",
            "--type",
            "T",
            "--data",
            "1",
            "--expected",
            "exists",
        ],
    );
    assert!(err.contains("no stream"), "{err}");
    let third = env.json(&args("1"));
    assert_eq!(third[0]["first_version"], 2);
    assert_eq!(third[0]["first_position"], 2);
    env.fails(4, &args("1"));
    env.fails(4, &args("7"));
    let fourth = env.json(&args("any"));
    assert_eq!(fourth[0]["last_version"], 3);
    // The default is any.
    let fifth = env.append("acct-1", "Opened", "{}");
    assert_eq!(fifth["last_version"], 4);

    // Nothing was written by the failed appends.
    let events = env.json(&["read", "acct-1"]);
    assert_eq!(nums(&events, "version"), vec![0, 1, 2, 3, 4]);
    assert_eq!(nums(&events, "position"), vec![0, 1, 2, 3, 4]);

    // People get the same facts, aligned.
    let human = env.ok(&["append", "acct-1", "--type", "T", "--data", "[]"]);
    let rows: Vec<Vec<&str>> = human.lines().map(|l| l.split("  ").collect()).collect();
    assert!(human.starts_with("stream          acct-1\n"), "{human}");
    assert!(human.contains("\nfirst version   5\n"), "{human}");
    assert!(human.contains("\nlast position   5\n"), "{human}");
    assert_eq!(rows.len(), 6, "{human}");

    // A retry of the last event (same id) is answered with the original
    // result.
    let id = "0190b5a4-3c5e-7cc0-8000-000000000001";
    let retry = [
        "append",
        "acct-1",
        "--type",
        "T",
        "--data",
        "{}",
        "--id",
        id,
        "--expected",
        "5",
    ];
    let once = env.json(&retry);
    let again = env.json(&retry);
    assert_eq!(once, again);
    assert_eq!(once[0]["id"], id);
}

#[test]
fn read_pages_both_ways_with_every_field() {
    let env = Env::start();
    let id = "0190b5a4-3c5e-7cc0-8000-00000000abcd";
    env.ok(&[
        "append",
        "order-9",
        "--type",
        "Placed",
        "--data",
        "{ \"items\": [1, 2],\n \"big\": 123456789012345678901234567890 }",
        "--metadata",
        r#"{"user":"ada"}"#,
        "--id",
        id,
    ]);
    for n in 1..5 {
        env.append("order-9", "Changed", &format!(r#"{{"n":{n}}}"#));
    }

    let events = env.json(&["read", "order-9"]);
    assert_eq!(nums(&events, "version"), vec![0, 1, 2, 3, 4]);
    let first = &events[0];
    assert_eq!(first["stream"], "order-9");
    assert_eq!(first["version"], 0);
    assert_eq!(first["position"], 0);
    assert_eq!(first["id"], id);
    assert_eq!(first["type"], "Placed");
    assert_eq!(first["data_encoding"], "json");
    assert_eq!(first["metadata"], json!({"user": "ada"}));
    assert_eq!(first["metadata_encoding"], "json");
    // The payload is embedded as written (minified): the big number keeps
    // every digit.
    let raw = env.ok(&["--json", "read", "order-9", "--limit", "1"]);
    assert!(
        raw.contains(r#""data":{"items":[1,2],"big":123456789012345678901234567890}"#),
        "{raw}"
    );
    let timestamp = first["timestamp"].as_str().unwrap();
    assert_eq!(
        timestamp.len(),
        "2025-01-01T00:00:00.000000Z".len(),
        "{timestamp}"
    );
    assert!(
        timestamp.ends_with('Z') && timestamp.as_bytes()[10] == b'T',
        "{timestamp}"
    );
    // No metadata: base64 of nothing.
    assert_eq!(events[1]["metadata"], "");
    assert_eq!(events[1]["metadata_encoding"], "base64");
    assert_eq!(events[3]["data"], json!({"n": 3}));

    let backward = env.json(&["read", "order-9", "--backward"]);
    assert_eq!(nums(&backward, "version"), vec![4, 3, 2, 1, 0]);
    let limited = env.json(&["read", "order-9", "--limit", "2"]);
    assert_eq!(nums(&limited, "version"), vec![0, 1]);
    let window = env.json(&["read", "order-9", "--from", "2", "--limit", "2"]);
    assert_eq!(nums(&window, "version"), vec![2, 3]);
    let back_window = env.json(&[
        "read",
        "order-9",
        "--from",
        "3",
        "--backward",
        "--limit",
        "2",
    ]);
    assert_eq!(nums(&back_window, "version"), vec![3, 2]);
    assert!(env.json(&["read", "order-9", "--from", "5"]).is_empty());

    // For people: a header and aligned columns, data as JSON.
    let human = env.ok(&["read", "order-9", "--limit", "3"]);
    let rows: Vec<&str> = human.lines().collect();
    assert_eq!(rows.len(), 4, "{human}");
    assert!(rows[0].starts_with("VERSION  POSITION  TYPE "), "{human}");
    assert!(rows[0].ends_with("DATA"), "{human}");
    let data_at = rows[0].find("DATA").unwrap();
    assert_eq!(&rows[2][data_at..], r#"{"n":1}"#, "{human}");
    assert!(rows[1].contains(r#"metadata: {"user":"ada"}"#), "{human}");
    assert!(rows[1].contains("Placed "), "{human}");
    let type_at = rows[0].find("TYPE").unwrap();
    assert!(
        rows.iter()
            .skip(1)
            .all(|r| r[type_at - 2..type_at] == *"  "),
        "{human}"
    );
}

#[test]
fn payloads_that_are_not_json_are_base64_or_a_hex_preview() {
    let env = Env::start();
    let binary: Vec<u8> = (0..=255).collect();
    let bin_path = env.dir.path().join("blob.bin");
    std::fs::write(&bin_path, &binary).unwrap();
    let text_path = env.dir.path().join("note.txt");
    std::fs::write(&text_path, "hello").unwrap();
    let json_path = env.dir.path().join("doc.json");
    std::fs::write(&json_path, "{\n  \"k\": \"v\"\n}\n").unwrap();
    for path in [&bin_path, &text_path, &json_path] {
        env.ok(&[
            "append",
            "files",
            "--type",
            "File",
            "--data-file",
            path_str(path),
        ]);
    }

    let events = env.json(&["read", "files"]);
    assert_eq!(
        field(&events, "data_encoding"),
        vec!["base64", "base64", "json"]
    );
    let blob = events[0]["data"].as_str().unwrap();
    assert!(blob.starts_with("AAECAwQFBgcICQoLDA0ODx"), "{blob}");
    assert_eq!(blob.len(), 344); // 256 bytes in base64 with padding
    assert_eq!(events[1]["data"], "aGVsbG8=");
    assert_eq!(events[2]["data"], json!({"k": "v"}));

    let human = env.ok(&["read", "files"]);
    assert!(
        human.contains("0x000102030405060708090a0b0c0d0e0f... (256 bytes)"),
        "{human}"
    );
    assert!(human.contains("0x68656c6c6f (5 bytes)"), "{human}");
    assert!(human.contains(r#"{"k":"v"}"#), "{human}");
}

#[test]
fn read_all_follows_the_global_log() {
    let env = Env::start();
    for (stream, n) in [("a-1", 0), ("b-1", 1), ("a-2", 2), ("a-1", 3)] {
        env.append(stream, "E", &n.to_string());
    }
    let all = env.json(&["read-all"]);
    assert_eq!(nums(&all, "position"), vec![0, 1, 2, 3]);
    assert_eq!(field(&all, "stream"), vec!["a-1", "b-1", "a-2", "a-1"]);
    assert_eq!(nums(&all, "version"), vec![0, 0, 0, 1]);
    assert_eq!(nums(&all, "data"), vec![0, 1, 2, 3]);
    let back = env.json(&["read-all", "--backward", "--limit", "2"]);
    assert_eq!(nums(&back, "position"), vec![3, 2]);
    let from = env.json(&["read-all", "--from", "1", "--limit", "2"]);
    assert_eq!(nums(&from, "position"), vec![1, 2]);

    let human = env.ok(&["read-all"]);
    let rows: Vec<&str> = human.lines().collect();
    assert_eq!(rows.len(), 5, "{human}");
    assert!(
        rows[0].starts_with("POSITION  STREAM  VERSION  TYPE"),
        "{human}"
    );
    assert!(
        rows[2].starts_with("       1  b-1           0  E "),
        "{human}"
    );
}

#[test]
fn tail_prints_history_and_stops_when_told() {
    let env = Env::start();
    for (stream, event_type) in [
        ("acct-1", "Deposited"),
        ("user-1", "Registered"),
        ("acct-2", "Withdrawn"),
        ("acct-1", "Deposited"),
        ("user-1", "Renamed"),
    ] {
        env.append(stream, event_type, "{}");
    }

    // Everything, then the caught-up notice as an object of its own.
    let all = env.json(&["tail", "--all", "--until-caught-up"]);
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(nums(&all[..5], "position"), vec![0, 1, 2, 3, 4]);
    assert_eq!(all[5], json!({"caught_up": {"position": 5}}));

    // Server-side filters.
    let accounts = env.json(&[
        "tail",
        "--all",
        "--stream-prefix",
        "acct-",
        "--until-caught-up",
    ]);
    let events: Vec<Value> = accounts
        .iter()
        .filter(|v| v.get("stream").is_some())
        .cloned()
        .collect();
    assert_eq!(nums(&events, "position"), vec![0, 2, 3]);
    assert_eq!(
        accounts.last().unwrap(),
        &json!({"caught_up": {"position": 5}})
    );
    let typed = env.json(&[
        "tail",
        "--all",
        "--type-prefix",
        "Re",
        "--type-prefix",
        "With",
        "--until-caught-up",
    ]);
    let events: Vec<Value> = typed
        .iter()
        .filter(|v| v.get("stream").is_some())
        .cloned()
        .collect();
    assert_eq!(
        field(&events, "type"),
        vec!["Registered", "Withdrawn", "Renamed"]
    );
    // Regular expressions, filtered by the server; a bad one is bad input.
    let regexed = env.json(&[
        "tail",
        "--all",
        "--stream-regex",
        "^(acct|user)-1$",
        "--type-regex",
        "ed$",
        "--until-caught-up",
    ]);
    let events: Vec<Value> = regexed
        .iter()
        .filter(|v| v.get("stream").is_some())
        .cloned()
        .collect();
    assert_eq!(nums(&events, "position"), vec![0, 1, 3, 4]);
    let bad = env.run(&["tail", "--all", "--stream-regex", "(", "--until-caught-up"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    // Any notice other than events is one of the documented ones.
    for v in &typed {
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert!(
            v.get("stream").is_some() || keys == ["caught_up"] || keys == ["checkpoint"],
            "{v}"
        );
    }

    // --count stops after N events; --from is inclusive.
    let two = env.json(&["tail", "--all", "--count", "2", "--from", "1"]);
    assert_eq!(nums(&two, "position"), vec![1, 2]);

    // One stream, with a type filter applied by the tool.
    let user = env.json(&["tail", "user-1", "--until-caught-up"]);
    assert_eq!(field(&user[..2], "type"), vec!["Registered", "Renamed"]);
    assert_eq!(user[2]["caught_up"]["position"], 5);
    let renamed = env.json(&["tail", "user-1", "--type-prefix", "Ren", "--count", "1"]);
    assert_eq!(nums(&renamed, "version"), vec![1]);

    // For people: the table on stdout, the notice on stderr.
    let out = env.run(&["tail", "acct-1", "--until-caught-up"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.starts_with("VERSION  POSITION  TYPE"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("caught up at log position 5"));
}

#[test]
fn tail_follows_live_appends() {
    let env = Env::start();
    env.append("live-1", "Before", "0");
    let mut child = Command::new(logbook_cli())
        .args([
            "--server",
            &env.addr().to_string(),
            "--json",
            "tail",
            "--all",
            "--count",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A deadline, not a synchronisation: a hung tail fails the test
    // instead of hanging it.
    let pid = child.id();
    let (done, deadline) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if deadline.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
    });

    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // History, then the notice that the tail is live.
    for line in stdout.by_ref() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let caught_up = v.get("caught_up").is_some();
        seen.push(v);
        if caught_up {
            break;
        }
    }
    assert_eq!(
        seen.last().unwrap(),
        &json!({"caught_up": {"position": 1}}),
        "{seen:?}"
    );
    env.append("live-2", "After", "1");
    env.append("live-1", "After", "2");
    for line in stdout {
        seen.push(serde_json::from_str(&line.unwrap()).unwrap());
    }
    let status = child.wait().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    assert!(status.success(), "{status:?}");
    let events: Vec<Value> = seen
        .iter()
        .filter(|v| v.get("stream").is_some())
        .cloned()
        .collect();
    assert_eq!(nums(&events, "position"), vec![0, 1, 2]);
    assert_eq!(field(&events, "stream"), vec!["live-1", "live-2", "live-1"]);
    assert_eq!(nums(&events, "data"), vec![0, 1, 2]);
}

#[test]
fn a_missing_stream_is_exit_code_5() {
    let env = Env::start();
    let err = env.fails(5, &["read", "nobody-home"]);
    assert!(err.contains("not found"), "{err}");
    let out = env.run(&["--json", "read", "nobody-home"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(out.stdout.is_empty());
}

#[test]
fn an_unreachable_server_is_exit_code_3() {
    // A port that was just free: nothing listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for args in [
        &["ping"][..],
        &["read", "s"],
        &["append", "s", "--type", "T", "--data", "{}"],
    ] {
        let err = fails_with(&logbook(addr, args), 3, args);
        assert!(err.contains(&addr.to_string()), "{err}");
    }
}

#[test]
fn bad_input_is_exit_code_2() {
    let env = Env::start();
    let err = env.fails(2, &["append", "s", "--type", "T", "--data", "{not json"]);
    assert!(err.contains("--data is not valid JSON"), "{err}");
    let err = env.fails(
        2,
        &[
            "append",
            "s",
            "--type",
            "T",
            "--data",
            "{}",
            "--metadata",
            "nope",
        ],
    );
    assert!(err.contains("--metadata is not valid JSON"), "{err}");
    env.fails(
        2,
        &[
            "append",
            "s",
            "--type",
            "T",
            "--data",
            "{}",
            "--expected",
            "maybe",
        ],
    );
    env.fails(2, &["append", "s", "--data", "{}"]);
    env.fails(2, &["append", "s", "--type", "T"]);
    let missing = env.dir.path().join("missing.bin");
    env.fails(
        2,
        &[
            "append",
            "s",
            "--type",
            "T",
            "--data-file",
            path_str(&missing),
        ],
    );
    // Rejected by the client's checks: an empty event type.
    env.fails(2, &["append", "s", "--type", "", "--data", "{}"]);
    env.fails(2, &["read", "s", "--limit", "0"]);
    env.fails(2, &["no-such-command"]);
    // Nothing was written.
    env.fails(5, &["read", "s"]);

    // Help documents the codes.
    let help = Command::new(logbook_cli()).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("  4  wrong expected version"), "{help}");
}

#[test]
fn metadata_is_set_then_shown() {
    let env = Env::start();
    env.append("acct", "Opened", "{}");

    // No lifecycle state yet.
    let shown = env.json(&["metadata", "acct"]);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["stream"], "acct");
    assert_eq!(shown[0]["position"], Value::Null, "{shown:?}");
    assert_eq!(shown[0]["metadata"], json!({}), "{shown:?}");
    assert!(env.ok(&["metadata", "acct"]).contains("none"));

    let set = env.json(&[
        "metadata",
        "acct",
        "--set",
        r#"{"max_count":5,"custom":{"owner":"ada"}}"#,
        "--expected",
        "no-stream",
    ]);
    assert_eq!(set[0]["meta_version"], 0, "{set:?}");
    let shown = env.json(&["metadata", "acct"]);
    assert_eq!(shown, set);
    assert_eq!(
        shown[0]["metadata"],
        json!({"max_count": 5, "custom": {"owner": "ada"}})
    );
    assert_eq!(shown[0]["deleted"], Value::Null);
    assert_eq!(shown[0]["last_version"], 0);

    // The expected version is the metadata's own: exit 4 when it moved.
    let err = env.fails(
        4,
        &["metadata", "acct", "--set", "{}", "--expected", "no-stream"],
    );
    assert!(err.contains("$$acct"), "{err}");
    env.json(&["metadata", "acct", "--set", "{}", "--expected", "0"]);

    // For people.
    let human = env.ok(&["metadata", "acct"]);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("meta version ") && l.ends_with(" 1")),
        "{human}"
    );

    // Metadata the server would refuse never leaves the tool.
    for bad in [
        "{not json",
        r#"{"max_cuont":3}"#,
        r#"{"max_count":0}"#,
        "[1]",
    ] {
        let err = env.fails(2, &["metadata", "acct", "--set", bad]);
        assert!(err.contains("--set"), "{err}");
    }
    env.fails(2, &["metadata", "acct", "--expected", "0"]);
    // A metadata stream has none of its own.
    env.fails(2, &["metadata", "$$acct"]);
}

#[test]
fn truncate_hides_the_older_events() {
    let env = Env::start();
    for i in 0..4 {
        env.append("t", "E", &i.to_string());
    }
    let out = env.json(&["truncate", "t", "--before", "2"]);
    assert_eq!(out[0]["metadata"]["truncate_before"], 2, "{out:?}");
    assert_eq!(nums(&env.json(&["read", "t"]), "version"), [2, 3]);
    // It only rises.
    let out = env.json(&["truncate", "t", "--before", "1"]);
    assert_eq!(out[0]["metadata"]["truncate_before"], 2, "{out:?}");
    assert_eq!(nums(&env.json(&["read", "t"]), "version"), [2, 3]);
    env.fails(2, &["truncate", "t"]);
}

#[test]
fn delete_soft_then_hard() {
    let env = Env::start();
    env.append("cart", "Added", "1");
    env.append("cart", "Added", "2");

    // Soft: not found, until an append starts it again where it stopped.
    env.fails(4, &["delete", "cart", "--expected", "0"]);
    let out = env.json(&["delete", "cart", "--expected", "1"]);
    assert_eq!(out[0]["deleted"], "soft", "{out:?}");
    env.fails(5, &["read", "cart"]);
    let appended = env.json(&[
        "append",
        "cart",
        "--type",
        "Added",
        "--data",
        "3",
        "--expected",
        "no-stream",
    ]);
    assert_eq!(appended[0]["first_version"], 2, "{appended:?}");
    assert_eq!(nums(&env.json(&["read", "cart"]), "version"), [2]);

    // Hard: for ever.
    let out = env.json(&["delete", "cart", "--hard"]);
    assert_eq!(out[0]["deleted"], "hard", "{out:?}");
    let err = env.fails(5, &["read", "cart"]);
    assert!(err.contains("deleted"), "{err}");
    env.fails(5, &["append", "cart", "--type", "Added", "--data", "4"]);
    env.fails(5, &["truncate", "cart", "--before", "1"]);
    let shown = env.json(&["metadata", "cart"]);
    assert_eq!(shown[0]["deleted"], "hard", "{shown:?}");
    // The global log drops the stream's events and shows its tombstone,
    // whose data is the stream's whole lifecycle state.
    let all = env.json(&["read-all"]);
    assert!(all.iter().all(|e| e["stream"] == "$$cart"), "{all:?}");
    let last = all.last().unwrap();
    assert_eq!(last["type"], "$tombstone", "{all:?}");
    assert_eq!(last["data"]["deleted"], "hard", "{all:?}");
    assert_eq!(last["data"]["last_version"], 2, "{all:?}");
}

#[test]
fn scavenge_gives_the_deleted_events_back() {
    let env = Env::start();
    for i in 0..3 {
        env.append("cart-1", "Added", &i.to_string());
        env.append("cart-2", "Added", &i.to_string());
    }
    env.json(&["delete", "cart-1"]);

    let out = env.json(&["scavenge"]);
    assert_eq!(out.len(), 1, "{out:?}");
    let r = &out[0];
    for field in [
        "segments_considered",
        "segments_rewritten",
        "events_removed",
        "bytes_before",
        "bytes_after",
        "bytes_reclaimed",
    ] {
        assert!(r[field].is_u64(), "{field}: {r:?}");
    }
    assert!(r["duration_ms"].as_f64().unwrap() >= 0.0, "{r:?}");
    assert_eq!(r["segments_rewritten"], 1, "{r:?}");
    assert_eq!(r["events_removed"], 3, "{r:?}");
    let (before, after) = (
        r["bytes_before"].as_u64().unwrap(),
        r["bytes_after"].as_u64().unwrap(),
    );
    assert!(after < before, "{r:?}");
    assert_eq!(r["bytes_reclaimed"], before - after, "{r:?}");
    // The survivor is untouched.
    assert_eq!(nums(&env.json(&["read", "cart-2"]), "version"), [0, 1, 2]);

    // For people; nothing left to do this time.
    let human = env.ok(&["scavenge"]);
    for key in [
        "segments rewritten",
        "bytes before",
        "reclaimed",
        "duration",
    ] {
        assert!(human.lines().any(|l| l.starts_with(key)), "{key}: {human}");
    }
    // Nothing removed; at most the two scavenges' own small sealed
    // segments merged.
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("segments considered") && l.ends_with(" 0")),
        "{human}"
    );
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("events removed") && l.ends_with(" 0")),
        "{human}"
    );
    env.fails(2, &["scavenge", "--max-mb-per-sec", "0"]);
}

/// A throttled scavenge of 1.5 MiB at 1 MiB/s takes over a second: the
/// tool says how far it got while it waits.
#[test]
fn scavenge_prints_its_progress_while_it_runs() {
    let env = Env::start();
    let big = env.dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 3 << 19]).unwrap();
    let append = |stream: &str| {
        env.json(&[
            "append",
            stream,
            "--type",
            "Blob",
            "--data-file",
            path_str(&big),
        ])
    };
    append("keep");
    append("drop");
    env.json(&["delete", "drop", "--hard"]);

    let out = env.run(&["scavenge", "--max-mb-per-sec", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l == "scavenge: rewritten 0 of 1 segments"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("segments rewritten") && l.ends_with(" 1")),
        "{stdout}"
    );
    // With --json, no progress: stdout is one object, stderr is quiet.
    let out = env.run(&["--json", "scavenge"]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lines(&String::from_utf8(out.stdout).unwrap()).len(), 1);
}

#[test]
fn erase_prints_a_receipt_and_warns_about_backups() {
    let env = Env::start();
    env.append("person-7", "Registered", r#"{"name":"ada"}"#);
    env.append("person-7", "Moved", r#"{"city":"paris"}"#);
    env.append("other", "Registered", "{}");

    let out = env.run(&["--json", "erase", "person-7"]);
    assert!(out.status.success(), "{out:?}");
    let receipt = lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(receipt.len(), 1, "{receipt:?}");
    let r = &receipt[0];
    assert_eq!(r["stream"], "person-7");
    assert_eq!(r["position"], 3, "the tombstone comes after the 3 events");
    assert_eq!(r["segments_rewritten"], 1, "{r:?}");
    assert_eq!(r["events_removed"], 2, "{r:?}");
    for field in ["bytes_before", "bytes_after", "bytes_reclaimed"] {
        assert!(r[field].is_u64(), "{field}: {r:?}");
    }
    assert!(r["duration_ms"].is_f64(), "{r:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backups taken before"), "{stderr}");

    // Gone for ever; the other stream stays.
    env.fails(5, &["read", "person-7"]);
    assert_eq!(nums(&env.json(&["read", "other"]), "version"), [0]);

    // Again, for people: allowed, nothing left to rewrite.
    let human = env.ok(&["erase", "person-7"]);
    assert!(human.contains("backups taken before"), "{human}");
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("tombstone position") && l.ends_with(" 3")),
        "{human}"
    );
    env.fails(2, &["erase", "$$other"]);
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn stats_in_both_forms() {
    let env = Env::start();
    env.append("s-1", "E", "1");
    env.append("s-2", "E", "2");
    env.append("s-1", "E", "3");
    let stats = env.json(&["stats"]);
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0]["events"], 3, "{stats:?}");
    assert_eq!(stats[0]["streams"], 2, "{stats:?}");
    assert!(stats[0]["server_version"].is_string(), "{stats:?}");

    // For people: `key  value`, values aligned, nested keys joined by dots.
    let human = env.ok(&["stats"]);
    let value_at = |line: &str| {
        line.find("  ")
            .map(|i| i + line[i..].len() - line[i..].trim_start().len())
    };
    let columns: Vec<Option<usize>> = human.lines().map(value_at).collect();
    assert!(
        columns.iter().all(|c| c.is_some() && *c == columns[0]),
        "{human}"
    );
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("events ") && l.ends_with(" 3")),
        "{human}"
    );
    assert!(human.lines().any(|l| l.starts_with("recovery.")), "{human}");
}

#[test]
fn backup_makes_a_store_logbookd_opens() {
    let env = Env::start();
    for n in 0..20 {
        env.append(&format!("s-{}", n % 3), "E", &n.to_string());
    }
    let target = env.dir.path().join("backup");
    let out = env.run(&["--json", "backup", "--to", path_str(&target)]);
    assert!(out.status.success(), "{out:?}");
    let summary = lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0]["position"], 20, "{summary:?}");
    assert_eq!(summary[0]["directory"], path_str(&target));
    assert!(summary[0]["files"].as_u64().unwrap() >= 1, "{summary:?}");
    assert_eq!(
        summary[0]["bytes_copied"], summary[0]["bytes_total"],
        "{summary:?}"
    );
    // Progress went to stderr as plain lines (it is not a terminal).
    let progress = String::from_utf8(out.stderr).unwrap();
    assert!(
        progress.lines().all(|l| l.starts_with("backup: ")),
        "{progress}"
    );
    assert!(progress.ends_with("(100%)\n"), "{progress}");

    // Again: nothing new to copy.
    let again = env.json(&["backup", "--to", path_str(&target)]);
    assert_eq!(again[0]["bytes_copied"], 0, "{again:?}");
    let human = env.ok(&["backup", "--to", path_str(&target)]);
    assert!(human.contains("\nposition      20 "), "{human}");

    // The backup is a data directory with the same events.
    let original = env.json(&["read-all"]);
    let restored = Daemon::start(&target, &["--durability", "os"]);
    let out = logbook(restored.addr, &["--json", "read-all"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lines(&String::from_utf8(out.stdout).unwrap()), original);
}

#[test]
fn streams_lists_the_catalog() {
    let env = Env::start();
    assert!(env.ok(&["streams"]).contains("no streams"));
    for s in ["acct-2", "acct-1", "cart-9", "acct-3"] {
        env.append(s, "E", "1");
    }
    env.append("acct-1", "E", "2");
    env.json(&["delete", "acct-3"]);
    env.json(&["metadata", "acct-2", "--set", r#"{"max_count":5}"#]);
    let out = env.json(&["streams", "--prefix", "acct-"]);
    assert_eq!(
        field(&out, "stream"),
        [json!("acct-1"), json!("acct-2"), json!("acct-3")]
    );
    assert_eq!(out[0]["last_version"], 1, "{out:?}");
    assert_eq!(out[0]["event_count"], 2, "{out:?}");
    assert_eq!(out[0]["deleted"], Value::Null, "{out:?}");
    assert_eq!(out[0]["metadata"], json!({}), "{out:?}");
    assert_eq!(out[1]["metadata"], json!({"max_count": 5}), "{out:?}");
    assert_eq!(out[1]["meta_version"], 0, "{out:?}");
    assert_eq!(out[2]["deleted"], "soft", "{out:?}");
    assert_eq!(out[2]["event_count"], 0, "{out:?}");
    // Paging by hand, and a limit.
    let out = env.json(&["streams", "--after", "acct-2", "--limit", "2"]);
    assert_eq!(field(&out, "stream"), [json!("acct-3"), json!("cart-9")]);
    // The table.
    let table = env.ok(&["streams"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("STREAM") && header.contains("LIVE"),
        "{table}"
    );
    assert_eq!(lines.count(), 4, "{table}");
    assert!(
        table.contains("soft") && table.contains("max_count"),
        "{table}"
    );
}

#[test]
fn groups_are_created_listed_updated_and_deleted() {
    let env = Env::start();
    env.append("invoice-1", "Invoiced", r#"{"cents":100}"#);
    env.append("invoice-2", "Invoiced", r#"{"cents":200}"#);
    env.append("other", "Noted", "{}");
    let created = env.json(&[
        "group",
        "create",
        "billing",
        "--prefix",
        "invoice-",
        "--strategy",
        "per-stream",
        "--max-deliveries",
        "5",
    ]);
    assert_eq!(created[0]["group"], "billing");
    assert_eq!(created[0]["strategy"], "per_stream");
    assert_eq!(created[0]["max_deliveries"], 5);
    assert_eq!(created[0]["prefixes"], serde_json::json!(["invoice-"]));
    env.ok(&[
        "group", "create", "tail-end", "--stream", "other", "--from", "end",
    ]);
    let listed = env.json(&["groups"]);
    assert_eq!(field(&listed, "group"), ["billing", "tail-end"]);
    assert_eq!(listed[1]["stream"], "other");
    assert_eq!(listed[1]["start"], "end");
    let table = env.ok(&["groups"]);
    assert!(table.starts_with("GROUP"), "{table}");
    assert!(table.contains("per-stream"), "{table}");
    // Update keeps what is not given.
    let updated = env.json(&["group", "update", "billing", "--ack-wait-ms", "5000"]);
    assert_eq!(updated[0]["ack_wait_ms"], 5000);
    assert_eq!(updated[0]["max_deliveries"], 5);
    assert_eq!(updated[0]["strategy"], "per_stream");
    // Errors: an existing name, a bad one, an unknown group.
    env.fails(6, &["group", "create", "billing"]);
    env.fails(2, &["group", "create", "no spaces"]);
    let err = env.fails(5, &["group", "delete", "nobody"]);
    assert!(err.contains("nobody"), "{err}");
    env.ok(&["group", "delete", "billing"]);
    assert_eq!(field(&env.json(&["groups"]), "group"), ["tail-end"]);
    // The server's group streams take no appends.
    env.fails(2, &["append", "$groups", "--type", "X", "--data", "{}"]);
}
