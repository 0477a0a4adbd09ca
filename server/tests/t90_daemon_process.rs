//! The built `logbookd` binary as a subprocess: serve, SIGTERM, restart,
//! SIGKILL, the directory lock, `verify`, and `--help`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use logbook_protocol::frame::decode_frame;
use logbook_protocol::{
    Append, Direction, EventId, ExpectedVersion, Hello, NewEvent, ReadAll, Request, Response,
    ServerMessage, Text,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_logbookd");

struct Daemon {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// Starts logbookd on port 0 and learns its address from its log.
fn start(dir: &std::path::Path, extra: &[&str]) -> Daemon {
    let mut child = Command::new(BIN)
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--log",
            "info",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn logbookd");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(at) = line.find("listen=")
                && line.contains("accepting clients")
                && let Some(tx) = tx.take()
            {
                let addr: SocketAddr = line[at + 7..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                let _ = tx.send(addr);
            }
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("daemon did not start: {}", log.lock().unwrap()));
    Daemon { child, addr, log }
}

/// Sends a signal by name (`TERM`, `INT`) with kill(1): the workspace
/// forbids `unsafe`, and kill(1) is on every Unix.
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("daemon did not exit");
}

struct Conn {
    s: TcpStream,
    buf: BytesMut,
    id: u32,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).await.unwrap();
        let mut c = Conn {
            s,
            buf: BytesMut::new(),
            id: 0,
        };
        let m = c
            .call(Request::Hello(Hello {
                protocol_version: 1,
                client_name: "t90".into(),
                token: None,
            }))
            .await;
        assert!(matches!(m, ServerMessage::Response(Response::HelloOk(_))));
        c
    }

    async fn call(&mut self, req: Request) -> ServerMessage {
        self.id += 1;
        let mut out = BytesMut::new();
        req.encode(&mut out, self.id, 16 << 20).unwrap();
        self.s.write_all(&out).await.unwrap();
        loop {
            if let Some(f) = decode_frame(&mut self.buf, 16 << 20).unwrap() {
                assert_eq!(f.header.corr_id, self.id);
                return ServerMessage::decode(&f).unwrap();
            }
            assert!(
                self.s.read_buf(&mut self.buf).await.unwrap() > 0,
                "connection closed"
            );
        }
    }

    async fn append(&mut self, stream: &str, n: u128) {
        let m = self
            .call(Request::Append(Append {
                stream: Text::from(stream),
                expected: ExpectedVersion::Any,
                events: vec![NewEvent::new(
                    EventId::from_u128(n),
                    "E",
                    format!("event {n}"),
                )],
            }))
            .await;
        assert!(
            matches!(m, ServerMessage::Response(Response::AppendOk(_))),
            "{m:?}"
        );
    }

    async fn all(&mut self) -> Vec<logbook_protocol::RecordedEvent> {
        let m = self
            .call(Request::ReadAll(ReadAll {
                from: None,
                direction: Direction::Forward,
                max_count: 10_000,
            }))
            .await;
        let ServerMessage::Response(Response::ReadAllOk(a)) = m else {
            panic!("{m:?}")
        };
        a.events
    }
}

#[tokio::test]
async fn serve_sigterm_restart_sigkill_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), &[]);
    let mut c = Conn::open(d.addr).await;
    for i in 1..=50 {
        c.append(&format!("s-{}", i % 4), i).await;
    }
    assert_eq!(c.all().await.len(), 50);

    // SIGTERM: a clean stop, exit code 0.
    signal(&d.child, "TERM");
    let status = wait(&mut d.child);
    assert!(
        status.success(),
        "exit {status:?}; log:\n{}",
        d.log.lock().unwrap()
    );
    assert!(d.log.lock().unwrap().contains("stopped cleanly"));

    // Restart: everything is there, and a clean stop left nothing to replay.
    let mut d = start(dir.path(), &[]);
    assert!(
        d.log.lock().unwrap().contains("replayed=0"),
        "{}",
        d.log.lock().unwrap()
    );
    let mut c = Conn::open(d.addr).await;
    let all = c.all().await;
    assert_eq!(all.len(), 50);
    assert_eq!(all[49].data, "event 50");
    for i in 51..=80 {
        c.append("after", i).await;
    }
    // SIGKILL: no clean stop; acknowledged events survive anyway.
    d.child.kill().unwrap();
    wait(&mut d.child);

    // The directory lock: while one daemon runs, a second fails at once.
    let mut d = start(dir.path(), &[]);
    let second = Command::new(BIN)
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("locked by another process"));

    let mut c = Conn::open(d.addr).await;
    let all = c.all().await;
    assert_eq!(all.len(), 80);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, e)| e.position.0 == i as u64)
    );
    signal(&d.child, "INT");
    assert!(wait(&mut d.child).success());

    // Offline verify of the stopped store.
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap(), "verify"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("80 events"), "{text}");
}

#[test]
fn help_explains_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--segment-bytes",
        "--max-connections",
        "--max-in-flight",
        "--max-frame-bytes",
        "--durability",
        "LOGBOOK_DATA_DIR",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}
