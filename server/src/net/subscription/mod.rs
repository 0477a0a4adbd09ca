//! Catch-up subscriptions: history, then live, in order, exactly once.
//!
//! A subscription is in one of two modes, and exactly one party sends its
//! pushes at any time, so history and live can never disagree:
//!
//! - **Catching up** (`catchup`): its own task reads the log (the global
//!   log from its cursor, or its stream from its last version), within its
//!   credit. When a read finds nothing new, it asks the [`Hub`] to take it
//!   live.
//! - **Live** (`hub`, `fanout`): the hub's single dispatcher task delivers
//!   it. On each new durable head the dispatcher reads the new events once,
//!   from the log, and hands the same reference-counted event buffers to
//!   every live subscription (no copy per subscriber), encoding each one's
//!   push into its connection's outbox. One task wakes per commit, not one
//!   per subscriber.
//!
//! The handover is exact because the hub's registry lock covers both sides
//! (`hub` keeps this invariant and states it beside its code): the
//! dispatcher holds it while delivering a range `[next, head)` and then
//! sets `next = head`; a catching-up subscription whose cursor is `c` goes
//! live under the same lock only if `c >= next` (else it reads on), and the
//! dispatcher delivers each live subscription only events at or after its
//! own cursor. Stream subscriptions also skip versions they already sent,
//! because their catch-up reads may run past the cursor.
//!
//! Flow control (`hub`'s dispatcher, `catchup`'s task): the dispatcher
//! never sends more than the subscription's credit and never writes to a
//! connection whose outbox is over its high water mark. When either stops
//! it, the subscription drops back to catching up (with a `fell_behind`
//! push) and its task resumes from the log when credit and room return.
//! Nothing is queued per subscriber beyond what sits in its connection's
//! outbox, so a slow consumer costs the server a bounded amount of memory
//! and never slows the writer or other subscribers.
//!
//! Credit holds back events only: a subscription that has no credit goes
//! on scanning (a filtered one, sending checkpoints) and goes live with a
//! `caught_up` if it finds nothing to deliver; it stops only at an event it
//! cannot send, until a `Credit` arrives.
//!
//! One job per file:
//! - `start`: where a subscription starts: its `from` checked against the
//!   log (a position or version past the end is refused) and resolved
//!   consistently with the head `SubscribeOk` reports.
//! - `filter`: [`CompiledFilter`], an `All` subscription's filter, its
//!   regular expressions compiled within limits.
//! - `catchup`: [`Sub`], one subscription: its state, the delivery of a
//!   batch within its credit, and its catch-up task reading the log.
//! - `fanout`: `FanOut`, one live batch's pushes encoded once and copied
//!   to every live subscription that wants the same range.
//! - `hub`: [`Hub`], the registry of live subscriptions, the live
//!   dispatcher, the handover from history to live, and the end of a
//!   subscription.

mod catchup;
mod fanout;
mod filter;
mod hub;
mod start;

pub(crate) use catchup::Sub;
pub(crate) use filter::{CompiledFilter, SUBSCRIPTION_BASE_BYTES};
pub(crate) use hub::Hub;
pub(crate) use start::{StartError, resolve};

/// Most events read from the log per catch-up step or dispatch step.
const READ_BATCH: u64 = 2_000;
/// Most bytes read per step (an event past it may still be taken): with the
/// connection's high-water mark, this bounds the memory a subscriber costs.
const READ_BYTES: usize = 1 << 20;
