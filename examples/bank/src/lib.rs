//! # logbook-bank
//!
//! A bank-account demo of Logbook, written as an ordinary application on
//! the public client API (`logbook-client`): an event-sourced aggregate,
//! commands guarded by optimistic concurrency, snapshots, and a SQLite
//! read model kept exactly once by a projector. `examples/bank/README.md`
//! walks through it; the `bank` binary is its command line.
//!
//! ## Layout
//! - `domain.rs`: the `BankAccount` aggregate, pure: [`AccountEvent`]s
//!   and their JSON encoding, [`BankAccount::apply`] and the decisions
//!   `open`, `deposit`, `withdraw`, [`Money`] in cents, [`DomainError`].
//! - `commands.rs`: [`Bank`], the command side: load an account (latest
//!   snapshot + the events after it), decide, append with the exact
//!   expected version, retry on conflict, write snapshots.
//! - `projector.rs`: [`projector::project`], which subscribes to the
//!   account events of the global log and applies them to the read model
//!   in batches, each committed together with its checkpoint; and
//!   [`projector::lag`].
//! - `read_model.rs`: [`ReadModel`], the SQLite schema, the projector's
//!   transactions and the queries.
//! - `bench.rs`: `bank bench-load`, the snapshot load-time measurement.
//! - `main.rs`: the `bank` command line (clap), nothing else.
//!
//! ## The path of a command
//! `bank withdraw <id> 75` -> [`Bank::withdraw`] -> `Bank::execute`:
//! `Client::read_stream_page` (newest snapshot) and `Client::read_stream`
//! (the events after it) -> [`BankAccount::withdraw`] decides ->
//! `Client::append(account-<id>, Exact(version))`; on
//! `WrongExpectedVersion`, again from the load.
//!
//! ## The path of an event to SQLite
//! `Client::subscribe_all` (from the checkpoint stored in SQLite) ->
//! [`projector::project`] batches events -> [`ReadModel::begin`] ->
//! `ProjectionTx::apply` for each, `set_checkpoint`, `commit`.

pub mod bench;
pub mod commands;
pub mod domain;
pub mod http;
pub mod projector;
pub mod read_model;

pub use commands::{Bank, BankOptions, CommandError, CommandId, Loaded, Outcome};
pub use domain::{AccountEvent, AccountId, BankAccount, DomainError, Money};
pub use projector::{ProjectionReport, ProjectorError, ProjectorOptions};
pub use read_model::ReadModel;
