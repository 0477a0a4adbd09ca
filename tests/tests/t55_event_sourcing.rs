//! The client's event-sourcing layer (`logbook_client::es`) against a real
//! daemon in this process: typed round trips in both formats, an upcaster
//! chain over a fixture of events written under old schemas, the
//! repository's conflict retries with no lost update, snapshots written
//! and used, a command re-sent after a lost reply applied once, and
//! correlation and causation across a handler reacting to an event.

use std::sync::Arc;

use futures::TryStreamExt;
use logbook_client::es::{
    Aggregate, CommandId, EventMeta, ExecuteError, Executed, Format, Repository, RepositoryOptions,
    SerdeEvent, Typed, TypedMessage, Upcasters, decode, encode,
};
use logbook_client::{
    Client, EventId, ExpectedVersion, NewEvent, ReadStreamOptions, StreamVersion,
};
use logbook_tests::{LosingProxy, TestServer};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The application's events, at their current schemas: `Deposited` is at
/// schema 3 (v1 had whole `amount`s, v2 `cents` without a currency), and
/// `Withdrawn` was renamed `Debited` at schema 2.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { cents: i64, currency: String },
    Debited { cents: i64 },
    Closed,
}

impl SerdeEvent for AccountEvent {
    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            "Deposited" => 3,
            "Debited" => 2,
            _ => 1,
        }
    }
}

fn upcasters() -> Upcasters {
    Upcasters::new()
        .register("Deposited", 1, |v| {
            let amount = v["amount"].as_i64().ok_or("amount is not a number")?;
            Ok(json!({ "cents": amount * 100 }))
        })
        .register("Deposited", 2, |mut v| {
            v["currency"] = json!("EUR");
            Ok(v)
        })
        .register_renaming("Withdrawn", 1, |v| {
            let amount = v["amount"].as_i64().ok_or("amount is not a number")?;
            Ok(("Debited".to_owned(), json!({ "cents": amount * 100 })))
        })
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Account {
    owner: Option<String>,
    balance: i64,
    events: u64,
    closed: bool,
}

impl Aggregate for Account {
    type Event = AccountEvent;
    fn apply(&mut self, event: &AccountEvent) {
        self.events += 1;
        match event {
            AccountEvent::Opened { owner } => self.owner = Some(owner.clone()),
            AccountEvent::Deposited { cents, .. } => self.balance += cents,
            AccountEvent::Debited { cents } => self.balance -= cents,
            AccountEvent::Closed => self.closed = true,
        }
    }
}

fn deposit(cents: i64) -> AccountEvent {
    AccountEvent::Deposited {
        cents,
        currency: "EUR".into(),
    }
}

async fn read_typed(client: &Client, stream: &str) -> Vec<Typed<AccountEvent>> {
    client
        .read_typed::<AccountEvent>(stream, ReadStreamOptions::default(), Arc::new(upcasters()))
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn typed_events_round_trip_in_both_formats() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let events = vec![
        AccountEvent::Opened {
            owner: "Grace Hopper".into(),
        },
        deposit(1_050),
        AccountEvent::Debited { cents: 50 },
        AccountEvent::Closed,
    ];
    for (stream, format) in [("json-1", Format::Json), ("msgpack-1", Format::MessagePack)] {
        let batch: Vec<NewEvent> = events
            .iter()
            .map(|e| encode(e, EventId::new_v7(), &EventMeta::default(), format).unwrap())
            .collect();
        client
            .append(stream, ExpectedVersion::NoStream, batch)
            .await
            .unwrap();
        let read = read_typed(&client, stream).await;
        assert_eq!(
            read.iter().map(|t| t.event.clone()).collect::<Vec<_>>(),
            events
        );
        // Types are the variant names; the schema travels in the metadata.
        let types: Vec<&str> = read
            .iter()
            .map(|t| t.recorded.event_type.as_str())
            .collect();
        assert_eq!(types, ["Opened", "Deposited", "Debited", "Closed"]);
        let meta: serde_json::Value = serde_json::from_slice(&read[1].recorded.metadata).unwrap();
        assert_eq!(meta["$schema"], 3);
        // An event with no correlation is its own.
        assert_eq!(read[0].meta.correlation_id, Some(read[0].recorded.id));
    }
    // JSON data is plain JSON, readable by any tool.
    let raw: Vec<_> = client
        .read_stream("json-1", ReadStreamOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(&raw[1].data[..], br#"{"cents":1050,"currency":"EUR"}"#);
    server.stop().await;
}

/// The fixture's events, written as an old version of the application
/// wrote them (old schemas, a type since renamed).
fn old_events() -> Vec<NewEvent> {
    let fixture = include_str!("../fixtures/account_events_v1.jsonl");
    fixture
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            NewEvent::new(
                EventId::new_v7(),
                v["type"].as_str().unwrap(),
                serde_json::to_vec(&v["data"]).unwrap(),
            )
            .with_metadata(serde_json::to_vec(&json!({ "$schema": v["schema"] })).unwrap())
        })
        .collect()
}

/// The fixture's events as the current application reads them.
fn old_events_upcast() -> Vec<AccountEvent> {
    vec![
        AccountEvent::Opened {
            owner: "Ada Lovelace".into(),
        },
        deposit(1_200),
        deposit(350),
        AccountEvent::Debited { cents: 200 },
        deposit(100),
    ]
}

/// Events as an older program wrote them (a fixture), read through the
/// chain v1 -> v2 -> v3 and a renaming; the stored events stay as they
/// were.
#[tokio::test]
async fn old_events_are_upcast_through_the_chain_as_they_are_read() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    client
        .append("old-account", ExpectedVersion::NoStream, old_events())
        .await
        .unwrap();
    let read: Vec<AccountEvent> = read_typed(&client, "old-account")
        .await
        .into_iter()
        .map(|t| t.event)
        .collect();
    assert_eq!(read, old_events_upcast());
    // The stored bytes are untouched.
    let raw: Vec<_> = client
        .read_stream("old-account", ReadStreamOptions::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(&raw[1].data[..], br#"{"amount":12}"#);
    assert_eq!(raw[3].event_type.as_str(), "Withdrawn");
    // Without the upcasters, an old event is an error, never a misread.
    let err = decode::<AccountEvent>(raw[1].clone(), &Upcasters::new()).unwrap_err();
    assert!(err.to_string().contains("no upcaster"), "{err}");
    // The repository reads through them too.
    let repo = Repository::<Account>::new(client.clone()).with_upcasters(upcasters());
    let loaded = repo.load("old-account").await.unwrap();
    assert_eq!(loaded.state.balance, 1_200 + 350 - 200 + 100);
    server.stop().await;
}

/// Two handlers withdraw from one account concurrently, each deciding from
/// the balance it loaded: every success is applied exactly once, the
/// balance never goes negative, and some decisions were made again after a
/// conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_handlers_never_lose_an_update() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let repo = Repository::<Account>::new(client.clone())
        .with_options(RepositoryOptions::default().snapshot_every(7));
    repo.execute("acct", CommandId::new(), EventMeta::default(), |_| {
        Ok::<_, String>(vec![
            AccountEvent::Opened {
                owner: "Ada".into(),
            },
            deposit(10_000),
        ])
    })
    .await
    .unwrap();
    let handlers: Vec<_> = (0..2)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move {
                let (mut applied, mut rejected, mut retried) = (0i64, 0, 0);
                for _ in 0..60 {
                    let r = repo
                        .execute(
                            "acct",
                            CommandId::new(),
                            EventMeta::default(),
                            |a: &Account| {
                                if a.balance < 150 {
                                    Err("insufficient funds")
                                } else {
                                    Ok(vec![AccountEvent::Debited { cents: 150 }])
                                }
                            },
                        )
                        .await;
                    match r {
                        Ok(Executed::Appended { attempts, .. }) => {
                            applied += 1;
                            retried += u32::from(attempts > 1);
                        }
                        Err(ExecuteError::Rejected(_)) => rejected += 1,
                        other => panic!("{other:?}"),
                    }
                }
                (applied, rejected, retried)
            })
        })
        .collect();
    let mut applied = 0;
    let mut retried = 0;
    for h in handlers {
        let (a, _, r) = h.await.unwrap();
        applied += a;
        retried += r;
    }
    let loaded = repo.load("acct").await.unwrap();
    // 10,000 allows 66 withdrawals of 150: exactly those, no more, none lost.
    assert_eq!(applied, 66);
    assert_eq!(loaded.state.balance, 10_000 - 66 * 150);
    assert_eq!(loaded.version, Some(StreamVersion(1 + 66)));
    eprintln!("{retried} withdrawals were decided again after a conflict");
    server.stop().await;
}

/// A conflict, made to happen: while one handler decides, another
/// applies a command to the same aggregate. The first one's append is
/// refused, it loads again and decides against the new state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_is_decided_again_against_the_new_state() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let repo = Repository::<Account>::new(client.clone());
    repo.execute("race", CommandId::new(), EventMeta::default(), |_| {
        Ok::<_, String>(vec![deposit(200)])
    })
    .await
    .unwrap();
    let addr = server.addr;
    let seen = std::sync::Mutex::new(Vec::new());
    let r = repo
        .execute(
            "race",
            CommandId::new(),
            EventMeta::default(),
            |a: &Account| {
                let mut seen = seen.lock().unwrap();
                seen.push(a.balance);
                if seen.len() == 1 {
                    // The other handler, on its own thread and runtime, takes
                    // 150 while this one decides.
                    std::thread::spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        rt.block_on(async {
                            let other =
                                Repository::<Account>::new(Client::connect(addr).await.unwrap());
                            other
                                .execute("race", CommandId::new(), EventMeta::default(), |_| {
                                    Ok::<_, String>(vec![AccountEvent::Debited { cents: 150 }])
                                })
                                .await
                                .unwrap();
                        });
                    })
                    .join()
                    .unwrap();
                }
                if a.balance < 100 {
                    Err("insufficient funds")
                } else {
                    Ok(vec![AccountEvent::Debited { cents: 100 }])
                }
            },
        )
        .await;
    // Decided from 200 first; the append was refused; decided again from
    // 50, and refused by the rule: no overdraft, nothing lost.
    assert_eq!(*seen.lock().unwrap(), vec![200, 50]);
    assert!(
        matches!(r, Err(ExecuteError::Rejected("insufficient funds"))),
        "{r:?}"
    );
    assert_eq!(repo.load("race").await.unwrap().state.balance, 50);
    server.stop().await;
}

/// Snapshots are written every N events and loading starts from the latest:
/// with the events below it truncated away, the state is still whole.
#[tokio::test]
async fn snapshots_are_taken_and_used() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let repo = Repository::<Account>::new(client.clone())
        .with_options(RepositoryOptions::default().snapshot_every(5));
    let mut snapshots = 0;
    for i in 0..23 {
        let r = repo
            .execute("snap", CommandId::new(), EventMeta::default(), |_| {
                Ok::<_, String>(vec![deposit(i + 1)])
            })
            .await
            .unwrap();
        if let Executed::Appended { snapshot: true, .. } = r {
            snapshots += 1;
        }
    }
    assert_eq!(snapshots, 4, "at versions 4, 9, 14, 19");
    let loaded = repo.load("snap").await.unwrap();
    assert_eq!(loaded.snapshot_version, Some(StreamVersion(19)));
    assert_eq!(loaded.replayed, 3);
    let total: i64 = (1..=23).sum();
    assert_eq!(loaded.state.balance, total);
    // The events the snapshot covers are no longer needed.
    client
        .truncate_stream("snap", StreamVersion(20))
        .await
        .unwrap();
    let loaded = repo.load("snap").await.unwrap();
    assert_eq!(loaded.state.balance, total);
    assert_eq!(loaded.state.events, 23);
    server.stop().await;
}

/// A command whose reply was lost: the client's own retry is answered with
/// the original result, and the same command sent again is found and not
/// applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_resent_after_a_lost_reply_applies_once() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let repo = Repository::<Account>::new(client.clone());
    repo.execute("lost", CommandId::new(), EventMeta::default(), |_| {
        Ok::<_, String>(vec![AccountEvent::Opened {
            owner: "Ada".into(),
        }])
    })
    .await
    .unwrap();
    let proxy = LosingProxy::start(server.addr).await;
    let lossy = Repository::<Account>::new(Client::connect(proxy.addr).await.unwrap());
    let command = CommandId::new();
    let first = tokio::spawn(async move {
        lossy
            .execute("lost", command, EventMeta::default(), |_| {
                Ok::<_, String>(vec![deposit(500)])
            })
            .await
    });
    // The deposit is durable, its reply gone; another writer goes first.
    proxy.lost().await;
    repo.execute("lost", CommandId::new(), EventMeta::default(), |_| {
        Ok::<_, String>(vec![deposit(7)])
    })
    .await
    .unwrap();
    proxy.release();
    assert!(matches!(
        first.await.unwrap().unwrap(),
        Executed::Appended { .. } | Executed::AlreadyApplied
    ));
    // Sent again (after a crash, say): found, not applied again.
    let again = repo
        .execute("lost", command, EventMeta::default(), |_| {
            Ok::<_, String>(vec![deposit(500)])
        })
        .await
        .unwrap();
    assert_eq!(again, Executed::AlreadyApplied);
    let loaded = repo.load("lost").await.unwrap();
    assert_eq!(loaded.state.balance, 507);
    assert_eq!(loaded.state.events, 3);
    server.stop().await;
}

/// A chain: a command's event, a handler reacting to it, a handler
/// reacting to that. Every event names the first as its correlation and
/// its cause as its causation, and they share a trace context.
#[tokio::test]
async fn correlation_and_causation_follow_a_chain_of_handlers() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let repo = Repository::<Account>::new(client.clone());
    let root_meta = EventMeta::default()
        .with_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .with("user", "ada");
    repo.execute("orders-1", CommandId::new(), root_meta, |_| {
        Ok::<_, String>(vec![AccountEvent::Opened {
            owner: "Ada".into(),
        }])
    })
    .await
    .unwrap();
    let root = read_typed(&client, "orders-1").await.remove(0);
    assert_eq!(root.meta.correlation_id, Some(root.recorded.id));
    assert_eq!(root.meta.extra.get("user"), Some(&json!("ada")));
    // A handler reacts to it in another aggregate.
    repo.execute(
        "ledger-1",
        CommandId::new(),
        EventMeta::caused_by(&root.recorded),
        |_| Ok::<_, String>(vec![deposit(1)]),
    )
    .await
    .unwrap();
    let second = read_typed(&client, "ledger-1").await.remove(0);
    assert_eq!(second.meta.correlation_id, Some(root.recorded.id));
    assert_eq!(second.meta.causation_id, Some(root.recorded.id));
    // The same trace, a span of its own.
    let trace = |t: &Typed<AccountEvent>| t.meta.traceparent.clone().unwrap();
    assert_eq!(trace(&second)[..36], trace(&root)[..36]);
    assert_ne!(trace(&second), trace(&root));
    // And another to that.
    repo.execute(
        "audit-1",
        CommandId::new(),
        EventMeta::caused_by(&second.recorded),
        |_| Ok::<_, String>(vec![AccountEvent::Closed]),
    )
    .await
    .unwrap();
    let third = read_typed(&client, "audit-1").await.remove(0);
    assert_eq!(third.meta.correlation_id, Some(root.recorded.id));
    assert_eq!(third.meta.causation_id, Some(second.recorded.id));
    assert!(trace(&third).starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(trace(&third).ends_with("-01"));
    server.stop().await;
}

/// A soft-deleted aggregate starts over: its snapshot is not applied to
/// the events written after the delete, whose versions go on.
#[tokio::test]
async fn a_soft_deleted_aggregate_starts_over() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let repo = Repository::<Account>::new(client.clone())
        .with_options(RepositoryOptions::default().snapshot_every(5));
    for _ in 0..6 {
        repo.execute("gone", CommandId::new(), EventMeta::default(), |_| {
            Ok::<_, String>(vec![deposit(10)])
        })
        .await
        .unwrap();
    }
    assert_eq!(
        repo.load("gone").await.unwrap().snapshot_version,
        Some(StreamVersion(4))
    );
    client
        .delete_stream("gone", ExpectedVersion::Any, logbook_client::Deletion::Soft)
        .await
        .unwrap();
    let loaded = repo.load("gone").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (0, None));
    let r = repo
        .run("gone", CommandId::new(), EventMeta::default(), |_| {
            Ok::<_, String>(vec![deposit(3)])
        })
        .await
        .unwrap();
    assert_eq!(r.state.balance, 3);
    assert_eq!(r.version, Some(StreamVersion(6)));
    let loaded = repo.load("gone").await.unwrap();
    assert_eq!(loaded.state.balance, 3);
    assert_eq!(loaded.state.events, 1);
    server.stop().await;
}

/// A command sent again long after (its id no longer among the remembered
/// ones) is still applied once, whether it decides the same events (an
/// exact resend the server answers with the original result) or other ones
/// (refused as duplicates); the same command id on another aggregate is
/// an error, not "applied".
#[tokio::test]
async fn old_commands_sent_again_apply_once_and_ids_are_not_shared() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    let repo = Repository::<Account>::new(client.clone()).with_options(
        RepositoryOptions::default()
            .snapshot_every(0)
            .remembered_commands(1),
    );
    let meta = EventMeta::default()
        .with_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    let old = CommandId::new();
    repo.execute("once", old, meta.clone(), |_| {
        Ok::<_, String>(vec![deposit(5)])
    })
    .await
    .unwrap();
    for _ in 0..3 {
        repo.execute("once", CommandId::new(), EventMeta::default(), |_| {
            Ok::<_, String>(vec![deposit(1)])
        })
        .await
        .unwrap();
    }
    let same = repo
        .execute("once", old, meta.clone(), |_| {
            Ok::<_, String>(vec![deposit(5)])
        })
        .await
        .unwrap();
    assert_eq!(same, Executed::AlreadyApplied);
    let other = repo
        .execute("once", old, EventMeta::default(), |_| {
            Ok::<_, String>(vec![deposit(6), deposit(7)])
        })
        .await
        .unwrap();
    assert_eq!(other, Executed::AlreadyApplied);
    assert_eq!(repo.load("once").await.unwrap().state.balance, 8);
    let elsewhere = repo
        .execute("twice", old, EventMeta::default(), |_| {
            Ok::<_, String>(vec![deposit(5)])
        })
        .await;
    assert!(
        matches!(
            elsewhere,
            Err(ExecuteError::Client(
                logbook_client::Error::DuplicateEventId { .. }
            ))
        ),
        "{elsewhere:?}"
    );
    server.stop().await;
}

/// A typed subscription to `$all` from the start: old events come upcast,
/// an event of a type the application does not know comes as
/// `Undecodable` (and the subscription goes on), a deletion as a system
/// event (the deleted stream's events not at all), and every message can
/// be checkpointed past.
#[tokio::test]
async fn typed_subscriptions_upcast_and_pass_system_events_on() {
    let server = TestServer::start().await;
    let client = Client::connect(server.addr).await.unwrap();
    client
        .append("old-account", ExpectedVersion::NoStream, old_events())
        .await
        .unwrap();
    client
        .append(
            "other-1",
            ExpectedVersion::NoStream,
            vec![NewEvent::new(EventId::new_v7(), "Mystery", &b"{}"[..])],
        )
        .await
        .unwrap();
    let gone = encode(
        &deposit(1),
        EventId::new_v7(),
        &EventMeta::default(),
        Format::Json,
    )
    .unwrap();
    client
        .append("gone-1", ExpectedVersion::NoStream, vec![gone])
        .await
        .unwrap();
    client
        .delete_stream(
            "gone-1",
            ExpectedVersion::Any,
            logbook_client::Deletion::Soft,
        )
        .await
        .unwrap();
    let fresh = encode(
        &deposit(5),
        EventId::new_v7(),
        &EventMeta::default(),
        Format::MessagePack,
    )
    .unwrap();
    client
        .append("old-account", ExpectedVersion::Any, vec![fresh])
        .await
        .unwrap();

    let mut sub = client
        .subscribe_all(logbook_client::SubscribeAllOptions::default())
        .await
        .unwrap()
        .typed::<AccountEvent>(Arc::new(upcasters()));
    let (mut events, mut undecodable, mut system) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_checkpoint = None;
    while let Some(message) = sub.try_next().await.unwrap() {
        let checkpoint = sub.checkpoint_after(&message);
        match message {
            TypedMessage::Event(t) => events.push(t.event),
            TypedMessage::Undecodable { event, error } => {
                assert!(error.to_string().contains("Mystery"), "{error}");
                undecodable.push(event.stream.to_string());
            }
            TypedMessage::System(event) => system.push(event.event_type.to_string()),
            TypedMessage::Progress(logbook_client::SubscriptionMessage::CaughtUp { .. }) => {
                break;
            }
            TypedMessage::Progress(_) => {}
        }
        let checkpoint = checkpoint.expect("every message of an $all subscription checkpoints");
        if let Some(before) = last_checkpoint.replace(checkpoint) {
            assert!(checkpoint.log_position() >= before.log_position());
        }
    }
    let mut expected = old_events_upcast();
    expected.push(deposit(5));
    assert_eq!(events, expected);
    assert_eq!(undecodable, vec!["other-1".to_owned()]);
    assert_eq!(system, vec!["$deleted".to_owned()]);
    // The resume point is past everything seen.
    assert_eq!(sub.resume_point(), last_checkpoint.unwrap());
    server.stop().await;
}
