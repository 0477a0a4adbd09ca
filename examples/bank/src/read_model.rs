//! The query side's SQLite database: schema, the projector's transactions,
//! and the queries `bank accounts`, `bank balance` and `bank history` run.
//!
//! ```text
//! accounts             one row per opened account
//!   id TEXT PK           the account id (UUID)
//!   owner TEXT
//!   balance INTEGER      cents
//!   currency TEXT        ISO 4217
//!   version INTEGER      stream version of the last event applied
//!
//! transactions         one row per account event
//!   account TEXT         -> accounts.id
//!   kind TEXT            'open' | 'deposit' | 'withdrawal'
//!   amount INTEGER       cents, positive (the initial balance for 'open')
//!   description TEXT
//!   position INTEGER     global log position of the event, UNIQUE
//!   time INTEGER         server commit time, microseconds since the epoch
//!
//! projector_checkpoint at most one row
//!   next_position INTEGER  every log position before it has been applied
//! ```
//!
//! **Exactly once.** The projector changes the tables and moves the
//! checkpoint in one SQLite transaction ([`ProjectionTx`]), so after a
//! crash the database holds either both (and the projector resumes after
//! the events) or neither (and it applies them again, for the first time as
//! far as the database knows). Two guards make a bug or a second projector
//! fail loudly instead of counting twice: the transaction starts by
//! checking the checkpoint is still where the projector left it, and each
//! event must be the account's next stream version (`UNIQUE(position)`
//! backs this up).

use std::path::Path;
use std::time::Duration;

use logbook_client::{Checkpoint, LogPosition, RecordedEvent, StreamVersion};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::domain::{AccountEvent, AccountId, Money};

/// Schema version, kept in SQLite's `user_version`: a database written by
/// another version is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE accounts (
    id       TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    balance  INTEGER NOT NULL,
    currency TEXT NOT NULL,
    version  INTEGER NOT NULL
);
CREATE TABLE transactions (
    account     TEXT NOT NULL REFERENCES accounts(id),
    kind        TEXT NOT NULL CHECK (kind IN ('open', 'deposit', 'withdrawal')),
    amount      INTEGER NOT NULL,
    description TEXT NOT NULL,
    position    INTEGER NOT NULL UNIQUE,
    time        INTEGER NOT NULL
);
CREATE INDEX transactions_by_account ON transactions (account, position);
CREATE TABLE projector_checkpoint (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    next_position INTEGER NOT NULL
);
";

/// What reading or writing the read model fails with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadModelError {
    /// SQLite failed.
    #[error("read model database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database has a schema this program does not know.
    #[error(
        "the read model has schema version {found}, this program writes {SCHEMA_VERSION}: run `bank project --rebuild`"
    )]
    SchemaVersion {
        /// `user_version` of the file.
        found: i64,
    },
    /// The stored checkpoint moved while this projector was running:
    /// another projector writes to the same database.
    #[error(
        "the read model's checkpoint is {found:?}, this projector left it at {expected:?}: is another projector running on the same database?"
    )]
    CheckpointMoved {
        /// Where this projector left it.
        expected: Option<LogPosition>,
        /// Where it is.
        found: Option<LogPosition>,
    },
    /// An event does not follow the read model's state of its account
    /// (applied twice, skipped, or for an account never opened).
    #[error(
        "event {version} of account {account} at log position {position} does not follow the read model ({reason})"
    )]
    OutOfOrder {
        /// The account.
        account: AccountId,
        /// The event's stream version.
        version: StreamVersion,
        /// The event's log position.
        position: LogPosition,
        /// What did not fit.
        reason: &'static str,
    },
    /// A number too large for SQLite's signed 64-bit integers.
    #[error("{0} does not fit in a SQLite integer")]
    TooLarge(u64),
}

/// Result of the read model's operations.
pub type Result<T, E = ReadModelError> = std::result::Result<T, E>;

/// One row of `accounts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    /// The account.
    pub id: AccountId,
    /// Its owner.
    pub owner: String,
    /// Its balance.
    pub balance: Money,
    /// Its currency.
    pub currency: String,
    /// Stream version of the last event applied.
    pub version: StreamVersion,
}

/// One row of `transactions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionRow {
    /// `open`, `deposit` or `withdrawal`.
    pub kind: String,
    /// The amount (the initial balance for `open`).
    pub amount: Money,
    /// The description (`Account opened` for `open`).
    pub description: String,
    /// Global log position of the event.
    pub position: LogPosition,
    /// Commit time, microseconds since the Unix epoch.
    pub time_us: i64,
    /// Commit time, `YYYY-MM-DD HH:MM:SS` UTC (formatted by SQLite).
    pub time: String,
}

/// The read model: one SQLite database file.
#[derive(Debug)]
pub struct ReadModel {
    conn: Connection,
}

fn sql_int(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| ReadModelError::TooLarge(n))
}

fn from_sql_int(n: i64) -> u64 {
    // Only ever written from u64 through `sql_int`, so never negative.
    u64::try_from(n).unwrap_or(0)
}

impl ReadModel {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<ReadModel> {
        let conn = Connection::open(path)?;
        // WAL lets `bank balance` read while the projector writes.
        // synchronous=NORMAL syncs the WAL only at checkpoints: a power
        // failure may lose the last transactions, but never half of one, and
        // since each carries its own log checkpoint the projector then
        // simply applies those events again. Exactly-once needs atomicity,
        // not an fsync per batch.
        let _mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // A reader may briefly hold the lock the projector needs (and vice
        // versa): wait instead of failing at once with SQLITE_BUSY.
        conn.busy_timeout(Duration::from_secs(5))?;
        let mut model = ReadModel { conn };
        model.create_schema()?;
        Ok(model)
    }

    fn create_schema(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        match found {
            0 => {
                tx.execute_batch(SCHEMA)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            SCHEMA_VERSION => {}
            found => return Err(ReadModelError::SchemaVersion { found }),
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops every table and creates them empty, checkpoint included, in
    /// one transaction: `bank project --rebuild`.
    pub fn reset(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "DROP TABLE IF EXISTS transactions;
             DROP TABLE IF EXISTS accounts;
             DROP TABLE IF EXISTS projector_checkpoint;",
        )?;
        tx.execute_batch(SCHEMA)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// Where the projector resumes: every log position before it has been
    /// applied. `None` before the first commit.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self.stored_checkpoint()?.map(Checkpoint::all))
    }

    fn stored_checkpoint(&self) -> Result<Option<LogPosition>> {
        stored_checkpoint(&self.conn)
    }

    /// Starts a projector transaction, checking that the stored checkpoint
    /// is still `expected` (where this projector last left it).
    pub fn begin(&mut self, expected: Option<LogPosition>) -> Result<ProjectionTx<'_>> {
        // IMMEDIATE takes the write lock now: a deferred transaction that
        // read first could fail with SQLITE_BUSY when it upgrades.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found = stored_checkpoint(&tx)?;
        if found != expected {
            return Err(ReadModelError::CheckpointMoved { expected, found });
        }
        Ok(ProjectionTx { tx })
    }

    /// Every account, by owner then id.
    pub fn accounts(&self) -> Result<Vec<AccountRow>> {
        let mut statement = self.conn.prepare(
            "SELECT id, owner, balance, currency, version FROM accounts ORDER BY owner, id",
        )?;
        let rows = statement.query_map([], account_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// One account; `None` if the read model has not seen it (yet).
    pub fn account(&self, id: AccountId) -> Result<Option<AccountRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, owner, balance, currency, version FROM accounts WHERE id = ?1",
                [id.to_string()],
                account_row,
            )
            .optional()?)
    }

    /// An account's transactions, oldest first.
    pub fn history(&self, id: AccountId) -> Result<Vec<TransactionRow>> {
        let mut statement = self.conn.prepare(
            "SELECT kind, amount, description, position, time,
                    strftime('%Y-%m-%d %H:%M:%S', time / 1000000, 'unixepoch')
             FROM transactions WHERE account = ?1 ORDER BY position",
        )?;
        let rows = statement.query_map([id.to_string()], |row| {
            Ok(TransactionRow {
                kind: row.get(0)?,
                amount: Money(row.get(1)?),
                description: row.get(2)?,
                position: LogPosition(from_sql_int(row.get(3)?)),
                time_us: row.get(4)?,
                time: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// One account and its transactions, read in one transaction (the
    /// same projected state for both).
    pub fn account_with_history(
        &self,
        id: AccountId,
    ) -> Result<(Option<AccountRow>, Vec<TransactionRow>)> {
        let tx = self.conn.unchecked_transaction()?;
        let account = self.account(id)?;
        let history = self.history(id)?;
        tx.finish()?;
        Ok((account, history))
    }

    /// Rows in `transactions`, over all accounts.
    pub fn transaction_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM transactions", [], |row| row.get(0))?;
        Ok(from_sql_int(n))
    }
}

fn stored_checkpoint(conn: &Connection) -> Result<Option<LogPosition>> {
    let next: Option<i64> = conn
        .query_row(
            "SELECT next_position FROM projector_checkpoint WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(next.map(|n| LogPosition(from_sql_int(n))))
}

fn account_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    let id: String = row.get(0)?;
    Ok(AccountRow {
        id: id.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        owner: row.get(1)?,
        balance: Money(row.get(2)?),
        currency: row.get(3)?,
        version: StreamVersion(from_sql_int(row.get(4)?)),
    })
}

/// One projector transaction: events applied and the checkpoint moved
/// together. Dropped without [`ProjectionTx::commit`], it rolls back, as a
/// crash would.
pub struct ProjectionTx<'a> {
    tx: rusqlite::Transaction<'a>,
}

impl ProjectionTx<'_> {
    /// Applies one account event, recorded at `recorded`'s position and
    /// version.
    pub fn apply(
        &self,
        account: AccountId,
        event: &AccountEvent,
        recorded: &RecordedEvent,
    ) -> Result<()> {
        let id = account.to_string();
        let version = sql_int(recorded.version.0)?;
        let position = sql_int(recorded.position.0)?;
        let out_of_order = |reason| ReadModelError::OutOfOrder {
            account,
            version: recorded.version,
            position: recorded.position,
            reason,
        };
        let (kind, amount, description) = match event {
            AccountEvent::AccountOpened(e) => {
                if version != 0 {
                    return Err(out_of_order("an account opens at version 0"));
                }
                let inserted = self.tx.execute(
                    "INSERT INTO accounts (id, owner, balance, currency, version)
                     VALUES (?1, ?2, ?3, ?4, 0) ON CONFLICT (id) DO NOTHING",
                    params![id, e.owner, e.initial_balance.cents(), e.currency],
                )?;
                if inserted == 0 {
                    return Err(out_of_order("the account is already in the read model"));
                }
                ("open", e.initial_balance, "Account opened")
            }
            AccountEvent::MoneyDeposited(m) | AccountEvent::MoneyWithdrawn(m) => {
                let (kind, delta) = match event {
                    AccountEvent::MoneyDeposited(_) => ("deposit", m.amount.cents()),
                    _ => ("withdrawal", -m.amount.cents()),
                };
                // Only the next version applies: an event seen twice, or
                // after a gap, changes nothing and stops the projector.
                let updated = self.tx.execute(
                    "UPDATE accounts SET balance = balance + ?2, version = ?3
                     WHERE id = ?1 AND version = ?3 - 1",
                    params![id, delta, version],
                )?;
                if updated == 0 {
                    return Err(out_of_order(
                        "not the next version of an account in the read model",
                    ));
                }
                (kind, m.amount, m.description.as_str())
            }
        };
        self.tx.execute(
            "INSERT INTO transactions (account, kind, amount, description, position, time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                kind,
                amount.cents(),
                description,
                position,
                recorded.timestamp_us
            ],
        )?;
        Ok(())
    }

    /// Moves the checkpoint: every log position before `next` is applied.
    pub fn set_checkpoint(&self, next: LogPosition) -> Result<()> {
        self.tx.execute(
            "INSERT INTO projector_checkpoint (id, next_position) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET next_position = excluded.next_position",
            [sql_int(next.0)?],
        )?;
        Ok(())
    }

    /// Commits the events and the checkpoint together.
    pub fn commit(self) -> Result<()> {
        self.tx.commit()?;
        Ok(())
    }
}
