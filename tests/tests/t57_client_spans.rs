//! Client calls and repository commands run in `tracing` spans, in a test
//! binary of their own: `tracing` caches per call site whether anyone is
//! interested in its spans, and a test in the same process registering a
//! call site at the same moment (with no subscriber of its own) could
//! leave it cached as uninteresting for this test's scoped subscriber
//! (seen once in a loaded `.ci/run`).

use logbook_client::Client;
use logbook_client::es::{Aggregate, CommandId, EventMeta, Repository, SerdeEvent};
use logbook_tests::TestServer;
use serde::{Deserialize, Serialize};

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

/// A `tracing` subscriber that records the names (and `traceparent`
/// fields) of the spans created.
#[derive(Default)]
struct Spans {
    seen: std::sync::Mutex<Vec<(String, String)>>,
    next: std::sync::atomic::AtomicU64,
}

struct Field<'a>(&'a mut String);

impl tracing::field::Visit for Field<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "traceparent" {
            *self.0 = format!("{value:?}");
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "traceparent" {
            *self.0 = value.to_owned();
        }
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut traceparent = String::new();
        span.record(&mut Field(&mut traceparent));
        self.seen
            .lock()
            .unwrap()
            .push((span.metadata().name().to_owned(), traceparent));
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::span::Id::from_u64(id)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Client calls and repository commands run in spans; a command's span
/// carries its trace context, the one its events store.
#[test]
fn calls_and_commands_run_in_spans() {
    let spans = std::sync::Arc::new(Spans::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = tracing::subscriber::set_default(std::sync::Arc::clone(&spans));
    rt.block_on(async {
        let server = TestServer::start().await;
        let client = Client::connect(server.addr).await.unwrap();
        let repo = Repository::<Account>::new(client.clone());
        let meta = EventMeta::default()
            .with_traceparent("00-11111111111111111111111111111111-2222222222222222-01");
        repo.execute("traced", CommandId::new(), meta, |_| {
            Ok::<_, String>(vec![deposit(1)])
        })
        .await
        .unwrap();
        server.stop().await;
    });
    let seen = spans.seen.lock().unwrap().clone();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"logbook.request"), "{names:?}");
    assert!(
        seen.iter().any(|(n, t)| n == "logbook.execute"
            && t == "00-11111111111111111111111111111111-2222222222222222-01"),
        "{seen:?}"
    );
}
