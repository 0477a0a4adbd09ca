//! The bank as two HTTP services, on the same aggregate and projector as
//! the command line (CQRS: commands and queries apart).
//!
//! **Command side** ([`command_router`], `bank serve-commands`, default
//! `127.0.0.1:8001`): `POST /commands/open-account` `{"owner_name":
//! "Alice", "initial_balance": 1000, "currency": "EUR"}` answers `{"account_id":
//! ..., "balance": "1000.00", ...}`; `POST /commands/deposit` and `POST
//! /commands/withdraw` `{"account_id": ..., "amount": 250, "description":
//! "Salary"}`; `GET /health`. Amounts are major units, as a number (`250`,
//! `10.5`) or a string (`"10.50"`). A command with a `command_id` (1 to
//! 256 bytes; or an `Idempotency-Key` header) applies once however often it
//! is sent: a re-sent open-account opens the same account, a re-sent
//! deposit changes nothing and answers `"applied_earlier": true`. The key
//! names the request with its endpoint, account and amounts: the same key
//! on another of them is another command. Concurrency
//! conflicts are retried inside (load, decide, append with the expected
//! version). Errors are JSON `{"error": ..., "code": ...}`: 400 bad JSON,
//! field or key, 404 unknown account, 409 already open or an idempotency
//! key's events stored for another command, 422 a business rule (overdraft,
//! non-positive amount, empty owner, bad currency), 503 with `Retry-After`
//! the event store unreachable or the account too busy, 500 anything else.
//!
//! **Query side** ([`QueryService`], `bank serve-queries`, default
//! `127.0.0.1:8002`): runs the projector (a catch-up subscription writing
//! the SQLite read model, its checkpoint in the same transaction) and
//! serves `GET /accounts`, `GET /accounts/{id}` (balance), `GET
//! /accounts/{id}/transactions` (history) and `GET /health` (with the
//! projection's lag). Reads are eventually consistent: a command's effect
//! shows once the projector has applied it (`/health` says how far behind
//! it is).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use logbook_client::{Client, ReadAllOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::commands::{Bank, CommandError, CommandId, Outcome};
use crate::domain::{AccountId, DomainError, Money};
use crate::projector::{self, ProjectorOptions};
use crate::read_model::ReadModel;

/// An error answer: status and JSON body.
struct HttpError(StatusCode, &'static str, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let HttpError(status, code, message) = self;
        let body = axum::Json(json!({ "error": message, "code": code }));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Worth trying again shortly.
            return (status, [("retry-after", "1")], body).into_response();
        }
        (status, body).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError(StatusCode::BAD_REQUEST, "bad_request", message.into())
}

impl From<CommandError> for HttpError {
    fn from(e: CommandError) -> HttpError {
        let message = e.to_string();
        match &e {
            CommandError::Rejected { reason, .. } => match reason {
                DomainError::AccountNotFound => {
                    HttpError(StatusCode::NOT_FOUND, "account_not_found", message)
                }
                DomainError::AlreadyOpen => {
                    HttpError(StatusCode::CONFLICT, "already_open", message)
                }
                DomainError::InsufficientFunds { .. } => HttpError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "insufficient_funds",
                    message,
                ),
                _ => HttpError(StatusCode::UNPROCESSABLE_ENTITY, "rejected", message),
            },
            CommandError::Contention { .. } => {
                HttpError(StatusCode::SERVICE_UNAVAILABLE, "contention", message)
            }
            CommandError::BadEvent { .. } => {
                HttpError(StatusCode::INTERNAL_SERVER_ERROR, "bad_event", message)
            }
            // An idempotency key's events already stored elsewhere: no
            // detail (it would name another account).
            CommandError::Store(logbook_client::Error::DuplicateEventId { .. }) => HttpError(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this idempotency key was used for another command".to_owned(),
            ),
            CommandError::Store(e) if e.is_retryable() => HttpError(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                message,
            ),
            _ => HttpError(StatusCode::INTERNAL_SERVER_ERROR, "store_error", message),
        }
    }
}

/// Parses a JSON body into `T`, with an error that says what is wrong.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, HttpError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// An amount in major units: a JSON number or string.
fn money(v: &Value, field: &str) -> Result<Money, HttpError> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return Err(bad_request(format!(
                "{field} must be an amount, like 250 or \"10.50\""
            )));
        }
    };
    text.parse::<Money>()
        .map_err(|e| bad_request(format!("{field}: {e}")))
}

fn account_id(text: &str) -> Result<AccountId, HttpError> {
    text.parse::<AccountId>().map_err(bad_request)
}

/// The command's id, when the request names a key (`command_id` in the
/// body, else the `Idempotency-Key` header): a name-based UUID of the
/// endpoint, the `scope` (the account and the request's amounts) and the
/// key. A key thus names one request: sent again, it applies once; used on
/// another endpoint or account, or with another amount or description, it
/// is another command (never one silently taken for an earlier one). An
/// empty, overlong or unreadable key is refused.
fn command_id(
    endpoint: &str,
    scope: &str,
    body: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<CommandId>, HttpError> {
    let key = match body {
        Some(k) => Some(k.to_owned()),
        None => match headers.get("idempotency-key") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| bad_request("the Idempotency-Key header must be visible ASCII"))?
                    .to_owned(),
            ),
        },
    };
    let Some(key) = key else {
        return Ok(None);
    };
    if key.is_empty() || key.len() > 256 {
        return Err(bad_request("an idempotency key has 1 to 256 bytes"));
    }
    Ok(Some(CommandId(uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("logbook-bank/{endpoint}/{scope}/{key}").as_bytes(),
    ))))
}

fn outcome_json(o: &Outcome) -> Value {
    let account = o.state.as_open();
    json!({
        "account_id": o.id.to_string(),
        "owner_name": account.map(|a| a.owner.clone()),
        "balance": o.balance().to_string(),
        "balance_cents": o.balance().cents(),
        "currency": account.map(|a| a.currency.clone()),
        "version": o.version.0,
        "applied_earlier": o.applied_earlier,
    })
}

#[derive(Deserialize)]
struct OpenBody {
    owner_name: String,
    #[serde(default)]
    initial_balance: Option<Value>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    command_id: Option<String>,
}

#[derive(Deserialize)]
struct MoveBody {
    account_id: String,
    amount: Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    command_id: Option<String>,
}

async fn open_account(
    State(bank): State<Arc<Bank>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let b: OpenBody = parse(&body)?;
    let initial = match &b.initial_balance {
        None => Money::ZERO,
        Some(v) => money(v, "initial_balance")?,
    };
    let currency = b.currency.as_deref().unwrap_or("EUR");
    let scope = format!("{}/{}/{currency}", b.owner_name, initial.cents());
    let outcome = match command_id("open-account", &scope, b.command_id.as_deref(), &headers)? {
        // Keyed: the account's id comes from the key and the request, so
        // a re-sent open finds the account it opened and applies nothing.
        Some(command) => {
            let id = AccountId::from_uuid(command.0);
            bank.run(id, command, |a| a.open(&b.owner_name, initial, currency))
                .await?
        }
        None => bank.open(None, &b.owner_name, initial, currency).await?,
    };
    let status = if outcome.applied_earlier {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(outcome_json(&outcome))).into_response())
}

async fn movement(
    bank: &Bank,
    headers: &HeaderMap,
    body: &Bytes,
    deposit: bool,
) -> Result<Response, HttpError> {
    let b: MoveBody = parse(body)?;
    let id = account_id(&b.account_id)?;
    let amount = money(&b.amount, "amount")?;
    let description = b.description.as_deref().unwrap_or("");
    let endpoint = if deposit { "deposit" } else { "withdraw" };
    let scope = format!("{id}/{}/{description}", amount.cents());
    let command =
        command_id(endpoint, &scope, b.command_id.as_deref(), headers)?.unwrap_or_default();
    let outcome = if deposit {
        bank.deposit_once(command, id, amount, description).await?
    } else {
        bank.withdraw_once(command, id, amount, description).await?
    };
    Ok(axum::Json(outcome_json(&outcome)).into_response())
}

async fn deposit(
    State(bank): State<Arc<Bank>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    movement(&bank, &headers, &body, true).await
}

async fn withdraw(
    State(bank): State<Arc<Bank>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    movement(&bank, &headers, &body, false).await
}

async fn command_health(State(bank): State<Arc<Bank>>) -> Response {
    match bank.client().ping().await {
        Ok(rtt) => axum::Json(json!({
            "status": "ok",
            "event_store_rtt_ms": rtt.as_secs_f64() * 1e3,
        }))
        .into_response(),
        Err(e) => HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

/// The command side's routes.
pub fn command_router(bank: Bank) -> Router {
    Router::new()
        .route("/commands/open-account", post(open_account))
        .route("/commands/deposit", post(deposit))
        .route("/commands/withdraw", post(withdraw))
        .route("/health", get(command_health))
        .with_state(Arc::new(bank))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests under way finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Read connections of the query side.
const READERS: usize = 4;

/// The query side: the read model, fed by its projector.
#[derive(Clone)]
pub struct QueryService {
    client: Client,
    /// Read connections (WAL lets them read while the projector writes):
    /// a slow query holds one, not the service.
    readers: Arc<Vec<Mutex<ReadModel>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    /// The projector's last failure and when it happened.
    projector_error: Arc<Mutex<Option<(String, std::time::Instant)>>>,
    /// Dropped with the last clone of the service: the projector stops.
    projector_stop: Arc<tokio::sync::watch::Sender<()>>,
}

impl QueryService {
    /// Opens the read model at `db` (a connection for queries; the
    /// projector opens its own) and starts the projector, which follows the
    /// log until the process ends, starting again after a failure.
    pub fn start(client: Client, db: PathBuf) -> Result<QueryService, String> {
        let readers = (0..READERS)
            .map(|_| {
                ReadModel::open(&db)
                    .map(Mutex::new)
                    .map_err(|e| format!("{}: {e}", db.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let service = QueryService {
            client: client.clone(),
            readers: Arc::new(readers),
            next_reader: Arc::default(),
            projector_error: Arc::default(),
            projector_stop: Arc::new(tokio::sync::watch::channel(()).0),
        };
        let errors = Arc::clone(&service.projector_error);
        let mut stop = service.projector_stop.subscribe();
        // The projector commits to SQLite synchronously: it runs on a
        // blocking thread of its own (its I/O still driven by the runtime),
        // never on the threads that serve requests.
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            runtime.block_on(async move {
                // Until the service is dropped (its last clone holds the
                // sender).
                loop {
                    let run = async {
                        let mut model = ReadModel::open(&db)?;
                        projector::project(&client, &mut model, ProjectorOptions::default()).await
                    };
                    let failed = tokio::select! {
                        r = run => match r {
                            Ok(_) => "the projection ended".to_owned(),
                            Err(e) => e.to_string(),
                        },
                        _ = stop.changed() => return,
                    };
                    tracing::warn!(error = %failed, "projector stopped; starting again in 1 s");
                    *errors.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((failed, std::time::Instant::now()));
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return,
                    }
                }
            })
        });
        Ok(service)
    }

    /// Runs `query` on the read model off the async threads.
    async fn query<T: Send + 'static>(
        &self,
        query: impl FnOnce(&ReadModel) -> Result<T, crate::read_model::ReadModelError> + Send + 'static,
    ) -> Result<T, HttpError> {
        let readers = Arc::clone(&self.readers);
        let start = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            // A free connection if there is one, else wait for one in turn.
            let n = readers.len();
            let free = (0..n).find_map(|i| readers[(start + i) % n].try_lock().ok());
            let model = match free {
                Some(m) => m,
                None => readers[start % n].lock().unwrap_or_else(|e| e.into_inner()),
            };
            query(&model)
        })
        .await
        .map_err(|e| HttpError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| {
            HttpError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "read_model",
                e.to_string(),
            )
        })
    }

    /// The query side's routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/accounts", get(list_accounts))
            .route("/accounts/{id}", get(get_account))
            .route("/accounts/{id}/transactions", get(transactions))
            .route("/health", get(query_health))
            .with_state(self)
    }
}

fn account_json(a: &crate::read_model::AccountRow) -> Value {
    json!({
        "account_id": a.id.to_string(),
        "owner_name": a.owner,
        "balance": a.balance.to_string(),
        "balance_cents": a.balance.cents(),
        "currency": a.currency,
        "version": a.version.0,
    })
}

/// The query side's answer for an account it has not seen.
fn not_projected(id: AccountId) -> HttpError {
    HttpError(
        StatusCode::NOT_FOUND,
        "account_not_found",
        format!("no account {id} in the read model (yet: it may not be projected)"),
    )
}

async fn list_accounts(State(q): State<QueryService>) -> Result<Response, HttpError> {
    let rows = q.query(|m| m.accounts()).await?;
    let accounts: Vec<Value> = rows.iter().map(account_json).collect();
    Ok(axum::Json(json!({ "accounts": accounts })).into_response())
}

async fn get_account(
    State(q): State<QueryService>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let id = account_id(&id)?;
    match q.query(move |m| m.account(id)).await? {
        Some(a) => Ok(axum::Json(account_json(&a)).into_response()),
        None => Err(not_projected(id)),
    }
}

async fn transactions(
    State(q): State<QueryService>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let id = account_id(&id)?;
    let (account, history) = q.query(move |m| m.account_with_history(id)).await?;
    if account.is_none() {
        return Err(not_projected(id));
    }
    let rows: Vec<Value> = history
        .iter()
        .map(|t| {
            json!({
                "kind": t.kind,
                "amount": t.amount.to_string(),
                "amount_cents": t.amount.cents(),
                "description": t.description,
                "position": t.position.0,
                "time": t.time,
            })
        })
        .collect();
    Ok(axum::Json(json!({ "account_id": id.to_string(), "transactions": rows })).into_response())
}

async fn query_health(State(q): State<QueryService>) -> Response {
    let checkpoint = q
        .query(|m| Ok(m.checkpoint()?.and_then(|c| c.log_position())))
        .await;
    let head = q
        .client
        .read_all_page(ReadAllOptions::default().backward().max_count(1))
        .await;
    let projector_error = q
        .projector_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // A failure within the last 10 s (the projector restarts a second
    // after each) marks the projection degraded.
    let failing = projector_error
        .as_ref()
        .is_some_and(|(_, at)| at.elapsed() < Duration::from_secs(10));
    match (checkpoint, head) {
        (Ok(checkpoint), Ok(page)) => {
            let at = checkpoint.map_or(0, |p| p.0);
            let body = json!({
                "status": if failing { "degraded" } else { "ok" },
                "projection": {
                    "checkpoint": at,
                    "head": page.head.0,
                    "events_behind": page.head.0.saturating_sub(at),
                    "last_error": projector_error.map(|(e, _)| e),
                },
            });
            let status = if failing {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, axum::Json(body)).into_response()
        }
        (Err(e), _) => e.into_response(),
        (_, Err(e)) => HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}
