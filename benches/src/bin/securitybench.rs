//! Security figures, against an in-process server (see BENCHMARKS.md,
//! "Security"):
//!
//! - logins: connections per second opened with no authentication, with
//!   an API token, and with a password (argon2id), from 1 and from 8
//!   clients at once;
//! - TLS: durable one-event appends (latency, one client), 100-event
//!   appends from 8 clients (events/s), and paging the whole log (events/s
//!   and MB/s), each in clear text and over TLS;
//! - filtered reads: paging the global log and catching up a global-log
//!   subscription as an admin (nothing filtered), as a user who may read
//!   half the streams, and as one who may read 1% of them.
//!
//! `cargo run --release -p logbook-bench --bin securitybench -- --events 1000000`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use logbook_client::{
    Client, ClientOptions, EventId, ExpectedVersion, Grant, NewEvent, PutUser, ReadAllOptions,
    RetryPolicy, SubscribeAllOptions, SubscriptionMessage, TlsOptions,
};
use logbook_protocol::StreamName;
use logbook_server::net::{self, ServerConfig};
use logbook_server::tls::{ServerTls, TlsFiles};
use logbook_storage::{Durability, Store, StoreConfig};

#[derive(Parser, Debug)]
struct Args {
    /// Events in the store for the read figures.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Streams they are spread over.
    #[arg(long, default_value_t = 1_000)]
    streams: u64,
    /// Runs of each figure (the median is printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Parent of the data directories (on the disk measured).
    #[arg(long, default_value = "/work/benchdir")]
    dir: String,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn options() -> ClientOptions {
    ClientOptions::default()
        .retry(RetryPolicy::none())
        .request_timeout(Some(Duration::from_secs(600)))
}

/// Writes a CA and a server certificate for `localhost` into `dir`.
fn certificates(dir: &str) -> (TlsFiles, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    let path = |f: &str| format!("{dir}/{f}");
    std::fs::write(path("ca.pem"), ca.pem()).expect("write");
    std::fs::write(path("server.pem"), cert.pem()).expect("write");
    std::fs::write(path("server.key"), key.serialize_pem()).expect("write");
    (
        TlsFiles {
            cert: path("server.pem").into(),
            key: path("server.key").into(),
            client_ca: None,
        },
        path("ca.pem"),
    )
}

/// Starts a server over `store`; returns its address and its stop.
async fn serve(
    store: &Store,
    tls: Option<ServerTls>,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(net::run(
        listener,
        store.clone(),
        ServerConfig {
            tls,
            ..ServerConfig::default()
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop, task)
}

/// Connections per second, `clients` at a time, `each` per client (a
/// count, not a time: thousands of closed connections a second would
/// exhaust the ephemeral ports).
async fn logins(addr: SocketAddr, options: ClientOptions, clients: usize, each: u64) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let options = options.clone();
            tokio::spawn(async move {
                let mut ok = 0u64;
                for i in 0..each {
                    let t = Instant::now();
                    match Client::connect_with(addr, options.clone()).await {
                        Ok(c) => {
                            drop(c);
                            ok += 1;
                        }
                        Err(e) => eprintln!("connect {i} failed after {:?}: {e}", t.elapsed()),
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.expect("task");
    }
    // Successful logins only.
    ok as f64 / start.elapsed().as_secs_f64()
}

fn ev(i: u64, bytes: usize) -> NewEvent {
    NewEvent::new(
        EventId::from_u128(u128::from(i) + 1),
        "Bench",
        vec![b'x'; bytes],
    )
}

/// p50 of one-event durable appends, in microseconds.
async fn append_latency(c: &Client, n: u64) -> f64 {
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t = Instant::now();
        c.append(
            "latency",
            ExpectedVersion::Any,
            vec![ev(u64::MAX / 2 + i, 100)],
        )
        .await
        .expect("append");
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(lat)
}

/// Events/s of 100-event appends from `clients` clients for `secs`.
async fn batch_rate(addr: SocketAddr, options: &ClientOptions, clients: usize, secs: f64) -> f64 {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|k| {
            let options = options.clone();
            tokio::spawn(async move {
                let c = Client::connect_with(addr, options).await.expect("connect");
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let batch = (0..100)
                        .map(|_| NewEvent::new(EventId::new_v7(), "Bench", vec![b'x'; 100]))
                        .collect();
                    c.append(format!("batch-{k}").as_str(), ExpectedVersion::Any, batch)
                        .await
                        .expect("append");
                    n += 100;
                }
                n
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await.expect("task");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Pages the whole global log; returns (events/s, MB/s, events seen).
async fn read_all(c: &Client) -> (f64, f64, u64) {
    let t = Instant::now();
    let mut read = c.read_all(ReadAllOptions::default().page_size(1000));
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(e) = read.next().await {
        let e = e.expect("event");
        n += 1;
        bytes += e.data.len() as u64;
    }
    let s = t.elapsed().as_secs_f64();
    (n as f64 / s, bytes as f64 / s / 1e6, n)
}

/// Catches a global-log subscription up to `head`; returns
/// (log positions scanned per second, events delivered).
async fn catch_up(c: &Client, head: u64) -> (f64, u64) {
    let t = Instant::now();
    let mut sub = c
        .subscribe_all(SubscribeAllOptions::default())
        .await
        .expect("subscribe");
    let mut n = 0u64;
    while let Some(m) = sub.next().await {
        match m.expect("message") {
            SubscriptionMessage::Event(_) => n += 1,
            SubscriptionMessage::CaughtUp { position, .. } if position.0 >= head => break,
            _ => {}
        }
    }
    (head as f64 / t.elapsed().as_secs_f64(), n)
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = format!("{}/securitybench-{}", args.dir, std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (files, ca) = certificates(&dir);
    let tls = ServerTls::load(&files).expect("TLS");
    let trust = TlsOptions::from_ca_file(&ca, "localhost").expect("CA");

    rt.block_on(async {
        // Logins and TLS, on a durable store.
        let store = Store::open(StoreConfig::new(format!("{dir}/durable"))).expect("open");
        for (label, server_tls) in [("clear", None), ("tls", Some(tls.clone()))] {
            let (addr, stop, task) = serve(&store, server_tls.clone()).await;
            let o = match &server_tls {
                None => options(),
                Some(_) => options().tls(trust.clone()),
            };
            let c = Client::connect_with(addr, o.clone()).await.expect("connect");
            let mut lat = Vec::new();
            let mut rates = Vec::new();
            for _ in 0..args.runs {
                lat.push(append_latency(&c, 500).await);
                rates.push(batch_rate(addr, &o, 8, 3.0).await);
            }
            println!(
                "{label:>5}: 1-event durable append p50 {:.0} us; 100-event appends, 8 clients: {:.0} ev/s; connects/s {:.0} (1 client)",
                median(lat),
                median(rates),
                logins(addr, o.clone(), 1, 1000).await
            );
            drop(c);
            let _ = stop.send(());
            let _ = task.await;
        }
        tokio::task::block_in_place(|| store.close()).expect("close");

        // Filtered reads, on a store filled without fsync.
        let store = Store::open(StoreConfig {
            durability: Durability::Os,
            ..StoreConfig::new(format!("{dir}/reads"))
        })
        .expect("open");
        let t = Instant::now();
        let per = (args.events / args.streams).max(1);
        let i = tokio::task::block_in_place(|| {
            let mut i = 0;
            for _ in 0..per {
                for s in 0..args.streams {
                    let stream = StreamName::new(format!("s{:02}-{s}", s % 100)).expect("name");
                    store
                        .append_blocking(&stream, ExpectedVersion::Any, vec![ev(i, 100)])
                        .expect("append");
                    i += 1;
                }
            }
            i
        });
        eprintln!("filled {i} events in {:.1} s", t.elapsed().as_secs_f64());
        for (label, server_tls) in [("clear", None), ("tls", Some(tls.clone()))] {
            let (addr, stop, task) = serve(&store, server_tls.clone()).await;
            let o = match &server_tls {
                None => options(),
                Some(_) => options().tls(trust.clone()),
            };
            let c = Client::connect_with(addr, o).await.expect("connect");
            let mut rates = Vec::new();
            let mut mbs = Vec::new();
            for _ in 0..args.runs {
                let (r, m, _) = read_all(&c).await;
                rates.push(r);
                mbs.push(m);
            }
            println!(
                "{label:>5}: paging the log as admin: {:.0} ev/s, {:.0} MB/s of data",
                median(rates),
                median(mbs)
            );
            let _ = stop.send(());
            let _ = task.await;
        }

        let (addr, stop, task) = serve(&store, None).await;
        let anonymous = Client::connect_with(addr, options()).await.expect("connect");
        anonymous
            .put_user(PutUser {
                name: "root".into(),
                password: Some("root-password".into()),
                roles: vec!["admin".into()],
                ..PutUser::default()
            })
            .await
            .expect("root");
        drop(anonymous);
        let root = Client::connect_with(addr, options().credentials("root", "root-password"))
            .await
            .expect("root");
        let prefixes = |n: u64| -> Vec<Grant> {
            (0..n)
                .map(|p| Grant {
                    prefix: format!("s{p:02}-"),
                    rights: vec!["read".into()],
                })
                .collect()
        };
        for (role, grants) in [("half", prefixes(50)), ("one", prefixes(1))] {
            root.put_role(role, grants, vec!["read_all".into()])
                .await
                .expect("role");
            root.put_user(PutUser {
                name: role.into(),
                password: Some("pw".into()),
                roles: vec![role.into()],
                ..PutUser::default()
            })
            .await
            .expect("user");
        }
        let token = root.create_token("one", "bench").await.expect("token");
        let head = store.head().0;
        for (label, user) in [("admin", "root"), ("50% readable", "half"), ("1% readable", "one")] {
            let password = if user == "root" { "root-password" } else { "pw" };
            let c = Client::connect_with(addr, options().credentials(user, password))
                .await
                .expect("login");
            let mut reads = Vec::new();
            let mut subs = Vec::new();
            let (mut seen, mut delivered) = (0, 0);
            for _ in 0..args.runs {
                let (r, _, n) = read_all(&c).await;
                reads.push(r * head as f64 / n.max(1) as f64);
                seen = n;
                let (s, d) = catch_up(&c, head).await;
                subs.push(s);
                delivered = d;
            }
            println!(
                "{label:>13}: paging the log {:.0} positions/s ({seen} events seen); subscription catch-up {:.0} positions/s ({delivered} delivered)",
                median(reads),
                median(subs)
            );
        }
        for (label, o, clients, each) in [
            ("token", options().auth_token(token.token.clone()), 1, 1000),
            ("token", options().auth_token(token.token.clone()), 8, 250),
            ("password", options().credentials("one", "pw"), 1, 50),
            ("password", options().credentials("one", "pw"), 8, 25),
        ] {
            let rate = logins(addr, o, clients, each).await;
            println!("logins, {label:>8}, {clients} client(s): {rate:.0}/s");
        }
        let _ = stop.send(());
        let _ = task.await;
        tokio::task::block_in_place(|| store.close()).expect("close");
    });
    let _ = std::fs::remove_dir_all(&dir);
}
