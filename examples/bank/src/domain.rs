//! The `BankAccount` aggregate: its events, its state, and the decisions
//! that turn a command into new events. Pure: no I/O, no clock, no
//! randomness, so every rule is a plain unit test (given events, when a
//! command, then events or an error).
//!
//! - [`AccountEvent`]: what happened, one variant per event type. The event
//!   type stored in Logbook is the variant name; the data is the payload
//!   struct as JSON ([`AccountEvent::encode`], [`AccountEvent::decode`]).
//! - [`BankAccount`]: the state rebuilt from the events, with
//!   [`BankAccount::apply`] (event -> next state, never fails) and the
//!   decisions [`BankAccount::open`], [`BankAccount::deposit`],
//!   [`BankAccount::withdraw`] (state + command -> events, or a
//!   [`DomainError`]).
//! - [`Money`]: an amount in integer minor units (cents). Never a float.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Prefix of every account stream: account `<id>` lives in `account-<id>`.
pub const STREAM_PREFIX: &str = "account-";
/// Suffix of an account's snapshot stream, `account-<id>-snapshots`.
pub const SNAPSHOT_SUFFIX: &str = "-snapshots";

/// An account's identity: a random (v4) UUID, so ids can be made by any
/// client without coordination and are not guessable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(Uuid);

impl AccountId {
    /// A fresh random id.
    pub fn new() -> AccountId {
        AccountId(Uuid::new_v4())
    }

    /// The account with this UUID (an id derived from something else, such
    /// as a command's idempotency key).
    pub fn from_uuid(id: Uuid) -> AccountId {
        AccountId(id)
    }

    /// The account's event stream, `account-<id>`.
    pub fn stream(&self) -> String {
        format!("{STREAM_PREFIX}{}", self.0)
    }

    /// The account's snapshot stream, `account-<id>-snapshots`.
    pub fn snapshot_stream(&self) -> String {
        format!("{STREAM_PREFIX}{}{SNAPSHOT_SUFFIX}", self.0)
    }

    /// The account whose event stream is `stream`; `None` for any other
    /// stream (snapshot streams included).
    pub fn from_stream(stream: &str) -> Option<AccountId> {
        stream.strip_prefix(STREAM_PREFIX)?.parse().ok()
    }
}

impl Default for AccountId {
    fn default() -> Self {
        AccountId::new()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for AccountId {
    type Err = String;

    /// Parses the hyphenated UUID form that `bank open` prints.
    fn from_str(s: &str) -> Result<AccountId, String> {
        Uuid::try_parse(s)
            .map(AccountId)
            .map_err(|_| format!("{s:?} is not an account id (a UUID)"))
    }
}

/// An amount of money in minor units (cents): `Money(1050)` is 10.50.
///
/// Integers, because floats cannot represent 0.10 exactly and sums of them
/// drift. Signed, because a command may *ask* for a negative amount (which
/// the decisions reject) and SQLite integers are signed anyway.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    /// Zero.
    pub const ZERO: Money = Money(0);

    /// The amount in minor units.
    pub fn cents(self) -> i64 {
        self.0
    }

    fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }
}

impl fmt::Display for Money {
    /// Major units with two decimals: `Money(-1050)` shows as `-10.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        // `pad`, so that width and alignment (`{:>12}`) apply.
        f.pad(&format!("{sign}{}.{:02}", abs / 100, abs % 100))
    }
}

impl FromStr for Money {
    type Err = String;

    /// Parses an amount in major units with at most two decimals: `10`,
    /// `10.5` and `10.50` are all 1050 cents; `-3` is -300 (parsed so that
    /// the decision can reject it with a clear reason).
    fn from_str(s: &str) -> Result<Money, String> {
        let bad = || format!("{s:?} is not an amount (expected e.g. 250 or 10.50)");
        let (negative, digits) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (whole, fraction) = match digits.split_once('.') {
            Some((_, "")) => return Err(bad()),
            Some(parts) => parts,
            None => (digits, ""),
        };
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(bad());
        }
        let fraction_cents = match fraction.len() {
            0 => 0,
            1 => fraction.parse::<i64>().map_err(|_| bad())? * 10,
            2 => fraction.parse::<i64>().map_err(|_| bad())?,
            _ => return Err(format!("{s:?} has more than two decimals")),
        };
        let cents = whole
            .parse::<i64>()
            .ok()
            .and_then(|w| w.checked_mul(100))
            .and_then(|c| c.checked_add(fraction_cents))
            .ok_or_else(|| format!("{s:?} is too large"))?;
        Ok(Money(if negative { -cents } else { cents }))
    }
}

/// Payload of [`AccountEvent::AccountOpened`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOpened {
    /// Who owns the account.
    pub owner: String,
    /// Balance at opening, in cents; zero or more.
    pub initial_balance: Money,
    /// ISO 4217 code, e.g. `EUR`; every amount of the account is in it.
    pub currency: String,
}

/// Payload of [`AccountEvent::MoneyDeposited`] and
/// [`AccountEvent::MoneyWithdrawn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    /// How much, in cents; always positive.
    pub amount: Money,
    /// Free text for the statement ("Salary", "Groceries").
    pub description: String,
}

/// Everything that can happen to an account. Stored with the variant name
/// as the event type and the payload as JSON:
///
/// ```text
/// AccountOpened   {"owner":"Alice","initial_balance":100000,"currency":"EUR"}
/// MoneyDeposited  {"amount":25000,"description":"Salary"}
/// MoneyWithdrawn  {"amount":7500,"description":"Groceries"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountEvent {
    /// The account was opened.
    AccountOpened(AccountOpened),
    /// Money was paid in.
    MoneyDeposited(Movement),
    /// Money was taken out.
    MoneyWithdrawn(Movement),
}

/// Why stored bytes are not an [`AccountEvent`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The event type is not one of this aggregate's. Projections skip
    /// these (a newer writer may have added types); loading an account
    /// refuses them.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The payload is not the JSON its type promises.
    #[error("bad {event_type} payload: {source}")]
    BadPayload {
        /// The event type.
        event_type: &'static str,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
}

impl AccountEvent {
    /// Event type of [`AccountEvent::AccountOpened`].
    pub const OPENED: &'static str = "AccountOpened";
    /// Event type of [`AccountEvent::MoneyDeposited`].
    pub const DEPOSITED: &'static str = "MoneyDeposited";
    /// Event type of [`AccountEvent::MoneyWithdrawn`].
    pub const WITHDRAWN: &'static str = "MoneyWithdrawn";
    /// Every event type of the aggregate.
    pub const TYPES: [&'static str; 3] = [Self::OPENED, Self::DEPOSITED, Self::WITHDRAWN];

    /// The event type: the variant's name.
    pub fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountOpened(_) => Self::OPENED,
            AccountEvent::MoneyDeposited(_) => Self::DEPOSITED,
            AccountEvent::MoneyWithdrawn(_) => Self::WITHDRAWN,
        }
    }

    /// The event type and its JSON payload.
    pub fn encode(&self) -> (&'static str, Vec<u8>) {
        let data = match self {
            AccountEvent::AccountOpened(e) => serde_json::to_vec(e),
            AccountEvent::MoneyDeposited(e) | AccountEvent::MoneyWithdrawn(e) => {
                serde_json::to_vec(e)
            }
        };
        // Serialising these plain structs (strings and integers) to a Vec
        // cannot fail; an empty payload would be refused by `decode`.
        (self.event_type(), data.unwrap_or_default())
    }

    /// The event stored with `event_type` and payload `data`.
    pub fn decode(event_type: &str, data: &[u8]) -> Result<AccountEvent, DecodeError> {
        fn payload<'a, T: Deserialize<'a>>(
            event_type: &'static str,
            data: &'a [u8],
        ) -> Result<T, DecodeError> {
            serde_json::from_slice(data)
                .map_err(|source| DecodeError::BadPayload { event_type, source })
        }
        match event_type {
            Self::OPENED => payload(Self::OPENED, data).map(AccountEvent::AccountOpened),
            Self::DEPOSITED => payload(Self::DEPOSITED, data).map(AccountEvent::MoneyDeposited),
            Self::WITHDRAWN => payload(Self::WITHDRAWN, data).map(AccountEvent::MoneyWithdrawn),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// Why a command was refused. Each message is one line, meant for the
/// person who typed the command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// Deposit or withdrawal on an account that was never opened.
    #[error("no such account")]
    AccountNotFound,
    /// Opening an account that is already open.
    #[error("the account is already open")]
    AlreadyOpen,
    /// A deposit or withdrawal of zero or less.
    #[error("the amount must be positive, got {0}")]
    NonPositiveAmount(Money),
    /// Opening with a negative balance.
    #[error("the initial balance must not be negative, got {0}")]
    NegativeInitialBalance(Money),
    /// A withdrawal larger than the balance: no overdraft.
    #[error(
        "insufficient funds: the balance is {balance} {currency}, the withdrawal {requested} {currency}"
    )]
    InsufficientFunds {
        /// The balance before the withdrawal.
        balance: Money,
        /// The amount asked for.
        requested: Money,
        /// The account's currency.
        currency: String,
    },
    /// A deposit that would take the balance past what cents in an `i64`
    /// can hold.
    #[error("the deposit would overflow the balance")]
    BalanceOverflow,
    /// An empty owner name.
    #[error("the owner must not be empty")]
    EmptyOwner,
    /// A currency that is not three capital letters.
    #[error("{0:?} is not a currency code (three capital letters, like EUR)")]
    InvalidCurrency(String),
}

/// An open account's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAccount {
    /// Who owns it.
    pub owner: String,
    /// Current balance, in cents; never negative.
    pub balance: Money,
    /// ISO 4217 code.
    pub currency: String,
}

/// The aggregate: an account's state as its events made it.
///
/// Decisions read the state and return the events a command produces;
/// [`BankAccount::apply`] folds an event into the state. Loading an account
/// is `events.fold(BankAccount::default(), BankAccount::apply)`, optionally
/// starting from a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BankAccount {
    /// No `AccountOpened` yet: the stream is empty or absent.
    #[default]
    NotOpened,
    /// Opened.
    Open(OpenAccount),
}

impl BankAccount {
    /// The state after `event`. Never fails: events are facts that a
    /// decision already checked against this very state (the append's
    /// expected version guarantees nobody wrote in between). An event that
    /// does not fit the state (only possible if some other program wrote to
    /// the stream) leaves it unchanged rather than inventing an account.
    pub fn apply(self, event: &AccountEvent) -> BankAccount {
        match (self, event) {
            (BankAccount::NotOpened, AccountEvent::AccountOpened(e)) => {
                BankAccount::Open(OpenAccount {
                    owner: e.owner.clone(),
                    balance: e.initial_balance,
                    currency: e.currency.clone(),
                })
            }
            (BankAccount::Open(mut a), AccountEvent::MoneyDeposited(m)) => {
                a.balance = a.balance.checked_add(m.amount).unwrap_or(a.balance);
                BankAccount::Open(a)
            }
            (BankAccount::Open(mut a), AccountEvent::MoneyWithdrawn(m)) => {
                a.balance = a.balance.checked_sub(m.amount).unwrap_or(a.balance);
                BankAccount::Open(a)
            }
            (state, _) => state,
        }
    }

    /// The open account, if it is open.
    pub fn as_open(&self) -> Option<&OpenAccount> {
        match self {
            BankAccount::Open(a) => Some(a),
            BankAccount::NotOpened => None,
        }
    }

    /// Decides `open`: one `AccountOpened`, if the account is not open
    /// yet, the owner is named, the initial balance is not negative and
    /// the currency is a three-letter code.
    pub fn open(
        &self,
        owner: &str,
        initial_balance: Money,
        currency: &str,
    ) -> Result<Vec<AccountEvent>, DomainError> {
        if self.as_open().is_some() {
            return Err(DomainError::AlreadyOpen);
        }
        let owner = owner.trim();
        if owner.is_empty() {
            return Err(DomainError::EmptyOwner);
        }
        if initial_balance < Money::ZERO {
            return Err(DomainError::NegativeInitialBalance(initial_balance));
        }
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(DomainError::InvalidCurrency(currency.to_owned()));
        }
        Ok(vec![AccountEvent::AccountOpened(AccountOpened {
            owner: owner.to_owned(),
            initial_balance,
            currency: currency.to_owned(),
        })])
    }

    /// Decides `deposit`: one `MoneyDeposited`, if the account is open and
    /// the amount positive.
    pub fn deposit(
        &self,
        amount: Money,
        description: &str,
    ) -> Result<Vec<AccountEvent>, DomainError> {
        let account = self.as_open().ok_or(DomainError::AccountNotFound)?;
        if amount <= Money::ZERO {
            return Err(DomainError::NonPositiveAmount(amount));
        }
        if account.balance.checked_add(amount).is_none() {
            return Err(DomainError::BalanceOverflow);
        }
        Ok(vec![AccountEvent::MoneyDeposited(Movement {
            amount,
            description: description.to_owned(),
        })])
    }

    /// Decides `withdraw`: one `MoneyWithdrawn`, if the account is open,
    /// the amount positive and covered by the balance (no overdraft).
    pub fn withdraw(
        &self,
        amount: Money,
        description: &str,
    ) -> Result<Vec<AccountEvent>, DomainError> {
        let account = self.as_open().ok_or(DomainError::AccountNotFound)?;
        if amount <= Money::ZERO {
            return Err(DomainError::NonPositiveAmount(amount));
        }
        if amount > account.balance {
            return Err(DomainError::InsufficientFunds {
                balance: account.balance,
                requested: amount,
                currency: account.currency.clone(),
            });
        }
        Ok(vec![AccountEvent::MoneyWithdrawn(Movement {
            amount,
            description: description.to_owned(),
        })])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(events: &[AccountEvent]) -> BankAccount {
        events
            .iter()
            .fold(BankAccount::default(), BankAccount::apply)
    }

    fn opened(initial: i64) -> AccountEvent {
        AccountEvent::AccountOpened(AccountOpened {
            owner: "Alice".into(),
            initial_balance: Money(initial),
            currency: "EUR".into(),
        })
    }

    fn deposited(amount: i64) -> AccountEvent {
        AccountEvent::MoneyDeposited(Movement {
            amount: Money(amount),
            description: "in".into(),
        })
    }

    fn withdrawn(amount: i64) -> AccountEvent {
        AccountEvent::MoneyWithdrawn(Movement {
            amount: Money(amount),
            description: "out".into(),
        })
    }

    fn balance(state: &BankAccount) -> Option<Money> {
        state.as_open().map(|a| a.balance)
    }

    #[test]
    fn open_a_new_account() {
        let then = given(&[]).open("Alice", Money(100_000), "EUR");
        assert_eq!(then, Ok(vec![opened(100_000)]));
    }

    #[test]
    fn open_with_a_zero_balance_is_allowed() {
        assert!(given(&[]).open("Bob", Money::ZERO, "USD").is_ok());
    }

    #[test]
    fn open_trims_the_owner() {
        let then = given(&[]).open("  Alice ", Money(100_000), "EUR");
        assert_eq!(then, Ok(vec![opened(100_000)]));
    }

    #[test]
    fn no_second_open() {
        let then = given(&[opened(0)]).open("Alice", Money(5), "EUR");
        assert_eq!(then, Err(DomainError::AlreadyOpen));
    }

    #[test]
    fn open_rejects_a_negative_initial_balance() {
        let then = given(&[]).open("Alice", Money(-1), "EUR");
        assert_eq!(then, Err(DomainError::NegativeInitialBalance(Money(-1))));
    }

    #[test]
    fn open_rejects_an_empty_owner() {
        assert_eq!(
            given(&[]).open("  ", Money(0), "EUR"),
            Err(DomainError::EmptyOwner)
        );
    }

    #[test]
    fn open_rejects_a_bad_currency() {
        for bad in ["eur", "EURO", "E1R", ""] {
            assert_eq!(
                given(&[]).open("Alice", Money(0), bad),
                Err(DomainError::InvalidCurrency(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn deposit_into_an_open_account() {
        let then = given(&[opened(100)]).deposit(Money(250), "in");
        assert_eq!(then, Ok(vec![deposited(250)]));
    }

    #[test]
    fn deposit_needs_an_open_account() {
        assert_eq!(
            given(&[]).deposit(Money(250), "in"),
            Err(DomainError::AccountNotFound)
        );
    }

    #[test]
    fn deposit_must_be_positive() {
        for amount in [0, -250] {
            assert_eq!(
                given(&[opened(100)]).deposit(Money(amount), "in"),
                Err(DomainError::NonPositiveAmount(Money(amount)))
            );
        }
    }

    #[test]
    fn deposit_must_not_overflow_the_balance() {
        assert_eq!(
            given(&[opened(i64::MAX - 5)]).deposit(Money(6), "in"),
            Err(DomainError::BalanceOverflow)
        );
        assert!(
            given(&[opened(i64::MAX - 5)])
                .deposit(Money(5), "in")
                .is_ok()
        );
    }

    #[test]
    fn withdraw_within_the_balance() {
        let then = given(&[opened(100), deposited(50)]).withdraw(Money(150), "out");
        assert_eq!(then, Ok(vec![withdrawn(150)]));
    }

    #[test]
    fn withdraw_no_overdraft() {
        let then = given(&[opened(100), withdrawn(30)]).withdraw(Money(71), "out");
        assert_eq!(
            then,
            Err(DomainError::InsufficientFunds {
                balance: Money(70),
                requested: Money(71),
                currency: "EUR".into(),
            })
        );
    }

    #[test]
    fn withdraw_needs_an_open_account() {
        assert_eq!(
            given(&[]).withdraw(Money(1), "out"),
            Err(DomainError::AccountNotFound)
        );
    }

    #[test]
    fn withdraw_must_be_positive() {
        for amount in [0, -1] {
            assert_eq!(
                given(&[opened(100)]).withdraw(Money(amount), "out"),
                Err(DomainError::NonPositiveAmount(Money(amount)))
            );
        }
    }

    #[test]
    fn apply_folds_the_balance() {
        let state = given(&[opened(1_000), deposited(250), withdrawn(75), deposited(5)]);
        assert_eq!(balance(&state), Some(Money(1_180)));
    }

    #[test]
    fn apply_ignores_events_that_do_not_fit() {
        assert_eq!(given(&[deposited(5)]), BankAccount::NotOpened);
        let state = given(&[opened(10), opened(99)]);
        assert_eq!(balance(&state), Some(Money(10)));
    }

    #[test]
    fn events_round_trip_through_their_encoding() {
        for event in [opened(100_000), deposited(25_000), withdrawn(7_500)] {
            let (event_type, data) = event.encode();
            assert_eq!(AccountEvent::decode(event_type, &data).ok(), Some(event));
        }
        let (_, data) = deposited(25_000).encode();
        assert_eq!(data, br#"{"amount":25000,"description":"in"}"#);
    }

    #[test]
    fn decode_rejects_unknown_types_and_bad_payloads() {
        assert!(matches!(
            AccountEvent::decode("AccountClosed", b"{}"),
            Err(DecodeError::UnknownType(t)) if t == "AccountClosed"
        ));
        assert!(matches!(
            AccountEvent::decode("MoneyDeposited", b"{\"amount\":1.5}"),
            Err(DecodeError::BadPayload { .. })
        ));
    }

    #[test]
    fn money_parses_major_units_with_up_to_two_decimals() {
        let ok = [
            ("10", 1_000),
            ("10.5", 1_050),
            ("10.50", 1_050),
            ("0.07", 7),
            ("+3", 300),
            ("-3", -300),
            ("0", 0),
        ];
        for (text, cents) in ok {
            assert_eq!(text.parse::<Money>(), Ok(Money(cents)), "{text}");
        }
        for bad in [
            "",
            "ten",
            "1.234",
            "1,50",
            ".5",
            "1.",
            "1e3",
            "--1",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn money_displays_two_decimals() {
        assert_eq!(Money(1_050).to_string(), "10.50");
        assert_eq!(Money(7).to_string(), "0.07");
        assert_eq!(Money(-1_050).to_string(), "-10.50");
        assert_eq!(Money(i64::MIN).to_string(), "-92233720368547758.08");
        assert_eq!(format!("[{:>7}]", Money(1_050)), "[  10.50]");
    }

    #[test]
    fn account_ids_name_their_streams() {
        let id = AccountId::new();
        assert_eq!(AccountId::from_stream(&id.stream()), Some(id));
        assert_eq!(AccountId::from_stream(&id.snapshot_stream()), None);
        assert_eq!(AccountId::from_stream("account-42"), None);
        assert_eq!(id.to_string().parse::<AccountId>(), Ok(id));
    }
}
