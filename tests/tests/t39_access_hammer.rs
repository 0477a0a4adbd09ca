//! Rights under load, checked against a model: users hammer appends,
//! reads, global-log reads and catalog pages on connections that stay open
//! while an admin rewrites their roles between rounds (and rewrites an
//! unrelated role all the time); every answer must be what the rights of
//! that round say: allowed or `AccessDenied`, and a filtered read shows
//! exactly the streams the user may read.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use logbook_client::{
    Client, ClientOptions, Error, EventId, ExpectedVersion, Grant, NewEvent, PutUser,
    ReadAllOptions, RetryPolicy,
};
use logbook_tests::TestServer;

const STREAMS: [&str; 6] = ["a-1", "a-2", "b-1", "b-2", "c-1", "ab-1"];
const PREFIXES: [&str; 5] = ["a-", "b-", "", "c-1", "ab"];
const USERS: usize = 3;
const ROUNDS: usize = 10;
const OPS_PER_ROUND: usize = 25;

/// A tiny deterministic generator (xorshift), seeded per test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// One role in the model: (prefix, read, write) grants, and store rights.
#[derive(Clone, Debug, Default)]
struct Model {
    grants: Vec<(String, bool, bool)>,
    read_all: bool,
    catalog: bool,
}

impl Model {
    fn random(rng: &mut Rng) -> Model {
        let mut m = Model::default();
        for p in PREFIXES {
            if rng.below(3) == 0 {
                let (r, w) = (rng.chance(), rng.chance());
                if r || w {
                    m.grants.push((p.to_owned(), r, w));
                }
            }
        }
        m.read_all = rng.chance();
        m.catalog = rng.chance();
        m
    }

    fn may_read(&self, s: &str) -> bool {
        self.grants
            .iter()
            .any(|(p, r, _)| *r && s.starts_with(p.as_str()))
    }

    fn may_write(&self, s: &str) -> bool {
        self.grants
            .iter()
            .any(|(p, _, w)| *w && s.starts_with(p.as_str()))
    }

    fn readable(&self) -> BTreeSet<String> {
        STREAMS
            .iter()
            .filter(|s| self.may_read(s))
            .map(|s| (*s).to_owned())
            .collect()
    }

    fn grants(&self) -> Vec<Grant> {
        self.grants
            .iter()
            .map(|(p, r, w)| Grant {
                prefix: p.clone(),
                rights: [(*r, "read"), (*w, "write")]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, n)| (*n).to_owned())
                    .collect(),
            })
            .collect()
    }

    fn ops(&self) -> Vec<String> {
        [(self.read_all, "read_all"), (self.catalog, "catalog")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| (*n).to_owned())
            .collect()
    }
}

fn options() -> ClientOptions {
    ClientOptions::default()
        .retry(RetryPolicy::none())
        .request_timeout(Some(Duration::from_secs(60)))
}

fn ev() -> NewEvent {
    NewEvent::new(EventId::new_v7(), "Tick", "{}")
}

/// Checks that `r` is allowed exactly when `allowed` says.
fn check<T: std::fmt::Debug>(what: &str, allowed: bool, r: logbook_client::Result<T>) -> Option<T> {
    match (allowed, r) {
        (true, Ok(v)) => Some(v),
        (false, Err(Error::AccessDenied { .. })) => None,
        (allowed, r) => panic!("{what}: allowed={allowed} but got {r:?}"),
    }
}

/// One user's requests of a round, each answer checked against `model`.
async fn hammer(client: Client, model: Model, seed: u64) -> Client {
    let mut rng = Rng(seed | 1);
    for _ in 0..OPS_PER_ROUND {
        let stream = STREAMS[rng.below(STREAMS.len())];
        match rng.below(5) {
            0 | 1 => {
                let r = client
                    .append(stream, ExpectedVersion::Any, vec![ev()])
                    .await;
                check(&format!("append {stream}"), model.may_write(stream), r);
            }
            2 => {
                let r = client.read_stream_page(stream, Default::default()).await;
                if let Some(page) = check(&format!("read {stream}"), model.may_read(stream), r) {
                    assert!(!page.events.is_empty());
                }
            }
            3 => {
                // The global log, a small page at a time: only the streams
                // the user may read, every one of them.
                let mut read = client.read_all(ReadAllOptions::default().page_size(5));
                let mut seen = BTreeSet::new();
                let mut refused = false;
                while let Some(e) = read.next().await {
                    match e {
                        Ok(e) => {
                            seen.insert(e.stream.to_string());
                        }
                        Err(Error::AccessDenied { .. }) => {
                            refused = true;
                            break;
                        }
                        Err(e) => panic!("read_all: {e:?}"),
                    }
                }
                assert_eq!(refused, !model.read_all, "read_all allowed");
                if model.read_all {
                    assert_eq!(seen, model.readable(), "read_all streams for {model:?}");
                }
            }
            _ => {
                let r = client.list_streams("", None, 100).await;
                if let Some(page) = check("catalog", model.catalog, r) {
                    let listed: BTreeSet<String> =
                        page.streams.into_iter().map(|s| s.stream).collect();
                    assert_eq!(listed, model.readable(), "catalog for {model:?}");
                }
            }
        }
    }
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_follows_the_rights_of_its_round() {
    let server = TestServer::start().await;
    let anonymous = Client::connect_with(server.addr, options()).await.unwrap();
    anonymous
        .put_user(PutUser {
            name: "root".into(),
            password: Some("root".into()),
            roles: vec!["admin".into()],
            ..PutUser::default()
        })
        .await
        .unwrap();
    drop(anonymous);
    let root = Client::connect_with(server.addr, options().credentials("root", "root"))
        .await
        .unwrap();
    for s in STREAMS {
        root.append(s, ExpectedVersion::Any, vec![ev()])
            .await
            .unwrap();
    }
    root.put_role("noise", vec![], vec![]).await.unwrap();
    let mut users = Vec::new();
    for u in 0..USERS {
        root.put_role(&format!("r{u}"), vec![], vec![])
            .await
            .unwrap();
        root.put_user(PutUser {
            name: format!("u{u}"),
            password: Some(format!("pw{u}")),
            roles: vec![format!("r{u}"), "noise".into()],
            ..PutUser::default()
        })
        .await
        .unwrap();
    }
    for u in 0..USERS {
        users.push(
            Client::connect_with(
                server.addr,
                options().credentials(format!("u{u}"), format!("pw{u}")),
            )
            .await
            .unwrap(),
        );
    }
    // Another role rewritten without pause: every change makes each
    // connection compute its rights again; they must come out the same.
    let noise = {
        let root = root.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let grants = vec![Grant {
                    prefix: format!("zz-{n}"),
                    rights: vec!["read".into()],
                }];
                if root.put_role("noise", grants, vec![]).await.is_err() {
                    return n;
                }
                n += 1;
            }
        })
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..ROUNDS {
        let models: Vec<Model> = (0..USERS).map(|_| Model::random(&mut rng)).collect();
        for (u, m) in models.iter().enumerate() {
            root.put_role(&format!("r{u}"), m.grants(), m.ops())
                .await
                .unwrap();
        }
        let tasks: Vec<_> = users
            .drain(..)
            .zip(models)
            .enumerate()
            .map(|(u, (client, model))| {
                tokio::spawn(hammer(client, model, (round * USERS + u) as u64 + 7))
            })
            .collect();
        for t in tasks {
            users.push(t.await.expect("a user's round"));
        }
    }
    noise.abort();
    let _ = noise.await;
    drop(users);
    server.stop().await;
}
