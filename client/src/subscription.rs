//! Catch-up subscriptions: [`Subscription`], its options and messages, flow
//! control, and automatic resubscription.
//!
//! ```text
//!  reader task ──frames──► Subscription (a Stream, polled by the consumer)
//!  (routes pushes           │ decode push ─► check order ─► queue ─► consumer
//!   by corr_id)             │                                 │
//!                           │ ◄── Credit{n} once n events ────┘ were taken
//!                           │
//!                           └ connection lost / server shutting down:
//!                             Subscribe again, from after the last event queued
//! ```
//!
//! - **No task of its own.** A subscription is a state machine driven by
//!   the consumer's polls: the reader task forwards its frames into a
//!   channel, and decoding, ordering checks, credit and resubscription all
//!   happen in `poll_next`. A consumer that stops polling stops everything,
//!   on both sides.
//! - **Flow control follows the consumer.** The server may send `window`
//!   events before the first `Credit`; each event the consumer *takes out
//!   of the stream* is owed back, and the debt is paid in one `Credit` once
//!   it reaches half the window. So events received but not yet taken, plus
//!   the credit the server still holds, never exceed `window`: the window is
//!   the only buffer, and a consumer that stops polling makes the server
//!   stop sending.
//! - **Resubscription.** When the connection breaks or the server ends the
//!   subscription because it is shutting down, the next poll (once the
//!   queue has been drained) subscribes again on a (new) connection under
//!   [`ClientOptions::resubscribe`](crate::ClientOptions::resubscribe),
//!   starting right after the last event queued (see [`Subscription`] for
//!   the exact positions), with a full window.
//! - **Exactly once, in order.** Every incoming event is checked against
//!   the position (global log) or version (stream) expected next: an event
//!   already delivered is dropped (and its credit given back), and a gap
//!   ends the subscription with [`Error::Protocol`], since it would mean a
//!   lost event, unless the push says it covers the gap (its `from`,
//!   PROTOCOL.md §5.7: the positions or versions it skips were removed by
//!   a delete, a truncation or retention). A push whose coverage starts
//!   past what is expected is a gap too.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use logbook_protocol::{
    Credit, ErrorCode, ErrorReply, Filter, Frame, LogPosition, Opcode, Push, RecordedEvent,
    Request, Response, ServerMessage, StreamVersion, Subscribe, SubscribeFrom, SubscriptionTarget,
    Text, Unsubscribe,
};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::checkpoint::Checkpoint;
use crate::client::Client;
use crate::conn::Connection;
use crate::error::{Error, Result};
use crate::options::RetryPolicy;

/// Credit window of a subscription when the options do not say: events the
/// server may send ahead of the consumer, and so the most events a
/// subscription buffers.
pub const DEFAULT_WINDOW: u32 = 1024;

/// What [`Client::subscribe_all`] follows: the global log, from where, with
/// which server-side filter, and how many events may be buffered.
///
/// ```
/// use logbook_client::{Filter, LogPosition, SubscribeAllOptions, SubscribeFrom};
///
/// let options = SubscribeAllOptions::default()
///     .from(SubscribeFrom::After(LogPosition(41)))
///     .filter(Filter {
///         stream_prefixes: vec!["account-".to_owned()],
///         ..Filter::default()
///     })
///     .window(256);
/// assert_eq!(options.window, 256);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeAllOptions {
    /// Where to start: [`SubscribeFrom::Start`] (the default), after a log
    /// position ([`SubscribeFrom::After`], exclusive), or
    /// [`SubscribeFrom::End`]: only events committed after the call starts.
    pub from: SubscribeFrom<LogPosition>,
    /// Server-side filter by stream and event type prefixes. Default `None`:
    /// every event. A filtered subscription also receives
    /// [`SubscriptionMessage::Checkpoint`]s through long stretches of
    /// events that do not match.
    pub filter: Option<Filter>,
    /// Events the server may send ahead of the consumer, which is also the
    /// most events the subscription buffers. Default [`DEFAULT_WINDOW`];
    /// must not be 0.
    pub window: u32,
    /// A checkpoint of the wrong kind given to `from_checkpoint`, reported
    /// by `subscribe_all`.
    wrong_checkpoint: Option<Checkpoint>,
}

/// Where a stored checkpoint says to start (nothing stored: the start), or
/// the checkpoint back if it belongs to the other kind of subscription.
fn start_at<P>(
    checkpoint: Option<Checkpoint>,
    from: impl FnOnce(Checkpoint) -> Option<SubscribeFrom<P>>,
) -> Result<SubscribeFrom<P>, Checkpoint> {
    match checkpoint {
        None => Ok(SubscribeFrom::Start),
        Some(c) => from(c).ok_or(c),
    }
}

impl Default for SubscribeAllOptions {
    fn default() -> Self {
        SubscribeAllOptions {
            from: SubscribeFrom::Start,
            filter: None,
            window: DEFAULT_WINDOW,
            wrong_checkpoint: None,
        }
    }
}

impl SubscribeAllOptions {
    /// Sets [`SubscribeAllOptions::from`].
    pub fn from(mut self, from: SubscribeFrom<LogPosition>) -> Self {
        self.from = from;
        self.wrong_checkpoint = None;
        self
    }

    /// Starts where a stored [`Checkpoint`] says (`None`, nothing stored
    /// yet: from the start). A checkpoint of a stream subscription makes
    /// [`Client::subscribe_all`] fail with [`Error::BadRequest`].
    ///
    /// ```no_run
    /// use logbook_client::{CheckpointStore, Client, FileCheckpointStore, SubscribeAllOptions};
    ///
    /// # async fn demo(client: Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = FileCheckpointStore::new("projector.checkpoint");
    /// let options = SubscribeAllOptions::default().from_checkpoint(store.load().await?);
    /// let subscription = client.subscribe_all(options).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_checkpoint(mut self, checkpoint: Option<Checkpoint>) -> Self {
        match start_at(checkpoint, Checkpoint::all_from) {
            Ok(from) => self.from(from),
            Err(wrong) => {
                self.wrong_checkpoint = Some(wrong);
                self
            }
        }
    }

    pub(crate) fn wrong_checkpoint(&self) -> Option<Checkpoint> {
        self.wrong_checkpoint
    }

    /// Sets [`SubscribeAllOptions::filter`].
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Sets [`SubscribeAllOptions::window`].
    pub fn window(mut self, events: u32) -> Self {
        self.window = events;
        self
    }
}

/// What [`Client::subscribe_stream`] follows: where in the stream to start,
/// and how many events may be buffered.
///
/// ```
/// use logbook_client::{StreamVersion, SubscribeFrom, SubscribeStreamOptions};
///
/// // Everything after version 9 (versions count from 0).
/// let options = SubscribeStreamOptions::default().from(SubscribeFrom::After(StreamVersion(9)));
/// assert_eq!(options.from, SubscribeFrom::After(StreamVersion(9)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeStreamOptions {
    /// Where to start: [`SubscribeFrom::Start`] (the default, version 0),
    /// after a version ([`SubscribeFrom::After`], exclusive), or
    /// [`SubscribeFrom::End`]: only events appended after the call starts.
    /// The stream need not exist yet.
    pub from: SubscribeFrom<StreamVersion>,
    /// Events the server may send ahead of the consumer. Default
    /// [`DEFAULT_WINDOW`]; must not be 0.
    pub window: u32,
    /// A checkpoint of the wrong kind given to `from_checkpoint`.
    wrong_checkpoint: Option<Checkpoint>,
}

impl Default for SubscribeStreamOptions {
    fn default() -> Self {
        SubscribeStreamOptions {
            from: SubscribeFrom::Start,
            window: DEFAULT_WINDOW,
            wrong_checkpoint: None,
        }
    }
}

impl SubscribeStreamOptions {
    /// Sets [`SubscribeStreamOptions::from`].
    pub fn from(mut self, from: SubscribeFrom<StreamVersion>) -> Self {
        self.from = from;
        self.wrong_checkpoint = None;
        self
    }

    /// Starts where a stored [`Checkpoint`] says (`None`: from the start).
    /// A checkpoint of a global-log subscription makes
    /// [`Client::subscribe_stream`] fail with [`Error::BadRequest`].
    ///
    /// ```
    /// use logbook_client::{Checkpoint, StreamVersion, SubscribeFrom, SubscribeStreamOptions};
    ///
    /// let stored = Some(Checkpoint::Stream { next: StreamVersion(5) });
    /// let options = SubscribeStreamOptions::default().from_checkpoint(stored);
    /// assert_eq!(options.from, SubscribeFrom::After(StreamVersion(4)));
    /// ```
    pub fn from_checkpoint(mut self, checkpoint: Option<Checkpoint>) -> Self {
        match start_at(checkpoint, Checkpoint::stream_from) {
            Ok(from) => self.from(from),
            Err(wrong) => {
                self.wrong_checkpoint = Some(wrong);
                self
            }
        }
    }

    pub(crate) fn wrong_checkpoint(&self) -> Option<Checkpoint> {
        self.wrong_checkpoint
    }

    /// Sets [`SubscribeStreamOptions::window`].
    pub fn window(mut self, events: u32) -> Self {
        self.window = events;
        self
    }
}

/// What a [`Subscription`] yields.
///
/// Positions in the markers are global log positions with the server's
/// meaning: every event before `position` has been delivered (or, for a
/// filtered subscription, scanned). [`Checkpoint::from_position_marker`]
/// turns one into a resume point for a global-log subscription. For a
/// stream subscription, `next_version` says the same in the stream's
/// versions, and [`Subscription::checkpoint_after`] turns a marker into the
/// stream's resume point.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionMessage {
    /// The next event, in log order (global log) or version order (stream).
    Event(RecordedEvent),
    /// History is delivered; events from here on are live. Sent when the
    /// subscription first catches up, and again after each
    /// [`SubscriptionMessage::FellBehind`].
    CaughtUp {
        /// Log position reached: everything before it has been delivered.
        position: LogPosition,
        /// Stream subscriptions: the first version of the stream not yet
        /// delivered (every version before it was). `None` for the global
        /// log.
        next_version: Option<StreamVersion>,
    },
    /// The subscription is no longer live: the server could not keep up
    /// with the consumer's pace, or the connection was lost and the client
    /// is subscribing again. Nothing is lost; events keep coming in order,
    /// and a [`SubscriptionMessage::CaughtUp`] follows once it is live
    /// again. Only sent after a `CaughtUp`: the two alternate.
    FellBehind {
        /// Log position reached: everything before it has been delivered.
        position: LogPosition,
        /// Stream subscriptions: the first version of the stream not yet
        /// delivered. `None` for the global log.
        next_version: Option<StreamVersion>,
    },
    /// A filtered global-log subscription scanned everything before
    /// `position` without finding more matches: record it as your resume
    /// point so that a restart does not scan the same stretch again.
    Checkpoint {
        /// Everything before this log position has been scanned.
        position: LogPosition,
    },
}

/// What a subscription follows.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    All { filter: Option<Filter> },
    Stream { name: Text },
}

/// How far a subscription got, through the messages queued or handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    /// Global log: the next log position to deliver. Stream: the next
    /// stream version. Everything before it has been delivered (or, with a
    /// filter, scanned).
    next: u64,
    /// The log position before which everything was delivered or scanned,
    /// as far as known (for stream subscriptions too, where `next` is a
    /// version): what a `FellBehind` reports.
    mark: u64,
}

impl Progress {
    /// Where a Subscribe resumes: `After` is exclusive, so it names the
    /// last delivered one, `next - 1`; with nothing delivered, the start.
    fn resume_from(self) -> SubscribeFrom<u64> {
        match self.next.checked_sub(1) {
            Some(last) => SubscribeFrom::After(last),
            None => SubscribeFrom::Start,
        }
    }

    /// Takes in a message; `all` says whether `next` counts log positions.
    fn advance(&mut self, msg: &SubscriptionMessage, all: bool) {
        match msg {
            SubscriptionMessage::Event(e) => {
                let position = e.position.0.saturating_add(1);
                self.mark = self.mark.max(position);
                self.next = if all {
                    position
                } else {
                    e.version.0.saturating_add(1)
                };
            }
            SubscriptionMessage::CaughtUp {
                position,
                next_version,
            }
            | SubscriptionMessage::FellBehind {
                position,
                next_version,
            } => {
                self.mark = self.mark.max(position.0);
                self.next = self.next.max(if all {
                    position.0
                } else {
                    next_version.map_or(0, |v| v.0)
                });
            }
            SubscriptionMessage::Checkpoint { position } => {
                self.mark = self.mark.max(position.0);
                if all {
                    self.next = self.next.max(position.0);
                }
            }
        }
    }
}

/// A subscription on the server, on one connection. Dropping it while it
/// is armed (the server-side subscription may still be running) sends
/// `Unsubscribe` without waiting for the answer.
struct ServerSub {
    conn: Arc<Connection>,
    /// The Subscribe's `corr_id`, which names the subscription.
    id: u32,
    frames: mpsc::UnboundedReceiver<Frame>,
    armed: bool,
}

impl ServerSub {
    /// The server-side subscription is over (ended by the server, or gone
    /// with its connection): nothing to unsubscribe.
    fn disarm(&mut self) {
        self.armed = false;
        self.conn.forget(self.id);
    }
}

impl Drop for ServerSub {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.conn.forget(self.id);
        let request = Request::Unsubscribe(Unsubscribe {
            subscription: self.id,
        });
        // Dropping the reply future discards the answer; if the connection
        // is gone, so is the subscription.
        drop(self.conn.send(&request));
    }
}

type OpenFuture = Pin<Box<dyn Future<Output = Result<ServerSub>> + Send>>;

enum State {
    /// Subscribed: frames arrive on the server subscription's channel.
    Active(ServerSub),
    /// Subscribing (again).
    Opening(OpenFuture),
    /// Over with an error, yielded once the queue is drained.
    Failed(Error),
    /// Over.
    Done,
}

/// A catch-up subscription: history first, then live events, as an async
/// [`Stream`] of [`SubscriptionMessage`]s. Returned by
/// [`Client::subscribe_all`] and [`Client::subscribe_stream`].
///
/// ```no_run
/// use futures::TryStreamExt;
/// use logbook_client::{Client, SubscribeAllOptions, SubscriptionMessage};
///
/// # async fn demo(client: Client) -> logbook_client::Result<()> {
/// let mut subscription = client.subscribe_all(SubscribeAllOptions::default()).await?;
/// while let Some(message) = subscription.try_next().await? {
///     match message {
///         SubscriptionMessage::Event(event) => println!("{} {}", event.position, event.event_type),
///         SubscriptionMessage::CaughtUp { .. } => println!("live"),
///         _ => {}
///     }
/// }
/// # Ok(())
/// # }
/// ```
///
/// **Exactly once, in order.** Each event of the target is yielded once, in
/// log (or stream version) order, with no gap, however often the
/// connection breaks: the subscription resubscribes on its own (under
/// [`ClientOptions::resubscribe`](crate::ClientOptions::resubscribe)) and
/// starts right after what it already yielded:
///
/// | target      | after the last event `e`          | after a marker (everything before it done)                      | nothing yet        |
/// |-------------|-----------------------------------|------------------------------------------------------------------|--------------------|
/// | global log  | `After(e.position)`               | `After(position - 1)` if later than the last event              | the original start |
/// | stream      | `After(e.version)`                | `After(next_version - 1)` if later than the last event          | the original start |
///
/// While it reconnects, a subscription that had announced
/// [`SubscriptionMessage::CaughtUp`] yields
/// [`SubscriptionMessage::FellBehind`], and `CaughtUp` again once the new
/// server subscription is live; the two always alternate, so no duplicate
/// `CaughtUp` reaches the consumer.
///
/// **Flow control.** The server sends at most `window` events ahead of the
/// consumer: credit is given back as events are *taken* from the stream, in
/// grants of half the window. Events received but not yet taken are the
/// only buffer.
///
/// **Ending.** The stream yields `Err` once and ends when the server refuses
/// the subscription or reports a failure (corruption), the events break
/// order, or the resubscribe policy gives up; events received before the
/// failure are yielded first. [`Subscription::unsubscribe`] ends it and
/// waits for the server's answer; dropping it unsubscribes in the
/// background.
#[must_use = "streams do nothing unless polled"]
pub struct Subscription {
    client: Client,
    target: Target,
    window: u32,
    /// Events taken by the consumer and not yet given back as credit.
    owed: u32,
    /// Decoded messages not yet taken; at most `window` events.
    queue: VecDeque<SubscriptionMessage>,
    /// Events in `queue`.
    queued_events: u32,
    /// Progress through the last message queued: where a resubscription
    /// starts.
    queued: Progress,
    /// Progress through the last message taken: the resume point.
    taken: Progress,
    /// Whether the last of `CaughtUp`/`FellBehind` queued was `CaughtUp`.
    live: bool,
    state: State,
}

impl Subscription {
    /// Subscribes for the first time, under the client's call retry policy,
    /// within the request timeout. `next` is the resolved start (a log
    /// position or a stream version).
    pub(crate) async fn open(
        client: Client,
        target: Target,
        next: u64,
        window: u32,
    ) -> Result<Subscription> {
        if window == 0 {
            return Err(Error::BadRequest(
                "a subscription window must not be 0".to_owned(),
            ));
        }
        let mark = match target {
            Target::All { .. } => next,
            Target::Stream { .. } => 0,
        };
        let progress = Progress { next, mark };
        let mut sub = Subscription {
            client,
            target,
            window,
            owed: 0,
            queue: VecDeque::new(),
            queued_events: 0,
            queued: progress,
            taken: progress,
            live: false,
            state: State::Done,
        };
        let options = sub.client.options();
        let attempts = subscribe_with_retries(
            sub.client.clone(),
            sub.request(),
            options.retry,
            None,
            false,
        );
        let server = match options.request_timeout {
            Some(limit) => tokio::time::timeout(limit, attempts)
                .await
                .unwrap_or(Err(Error::Timeout))?,
            None => attempts.await?,
        };
        sub.state = State::Active(server);
        Ok(sub)
    }

    /// Where a consumer that has processed everything this subscription
    /// yielded so far should resume after a restart: store it (see
    /// [`CheckpointStore`](crate::CheckpointStore)) and pass it to
    /// `from_checkpoint` of the options. For a global-log subscription,
    /// markers count too (a [`SubscriptionMessage::Checkpoint`] moves it
    /// past filtered-out stretches).
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use logbook_client::{CheckpointStore, Client, FileCheckpointStore, SubscribeAllOptions};
    ///
    /// # async fn demo(client: Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let store = FileCheckpointStore::new("projector.checkpoint");
    /// let options = SubscribeAllOptions::default().from_checkpoint(store.load().await?);
    /// let mut subscription = client.subscribe_all(options).await?;
    /// let mut handled = 0u64;
    /// while let Some(message) = subscription.try_next().await? {
    ///     // ... apply the message ...
    ///     handled += 1;
    ///     if handled % 100 == 0 {
    ///         store.save(&subscription.resume_point()).await?;
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn resume_point(&self) -> Checkpoint {
        self.checkpoint_of(self.taken)
    }

    /// The resume point after `message` (one this subscription yielded):
    /// for consumers that process messages out of step with polling (in
    /// batches, on other tasks). A stream subscription's markers resume at
    /// their `next_version`; `None` only for a marker without one (from a
    /// server older than this client).
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use logbook_client::{Client, SubscribeStreamOptions};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let mut subscription = client
    ///     .subscribe_stream("account-42", SubscribeStreamOptions::default())
    ///     .await?;
    /// if let Some(message) = subscription.try_next().await? {
    ///     let checkpoint = subscription.checkpoint_after(&message);
    ///     println!("after this one, resume at {checkpoint:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn checkpoint_after(&self, message: &SubscriptionMessage) -> Option<Checkpoint> {
        match (&self.target, message) {
            (_, SubscriptionMessage::Event(e)) => Some(self.checkpoint_after_event(e)),
            (
                Target::All { .. },
                SubscriptionMessage::CaughtUp { position, .. }
                | SubscriptionMessage::FellBehind { position, .. }
                | SubscriptionMessage::Checkpoint { position },
            ) => Some(Checkpoint::from_position_marker(*position)),
            (
                Target::Stream { .. },
                SubscriptionMessage::CaughtUp { next_version, .. }
                | SubscriptionMessage::FellBehind { next_version, .. },
            ) => next_version.map(|next| Checkpoint::Stream { next }),
            (Target::Stream { .. }, SubscriptionMessage::Checkpoint { .. }) => None,
        }
    }

    /// Ends the subscription: sends `Unsubscribe` and waits for the
    /// server's answer (bounded by the request timeout). Messages not yet
    /// taken are discarded. A subscription whose connection is gone has
    /// nothing to end and returns `Ok`.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use logbook_client::{Client, SubscribeAllOptions};
    ///
    /// # async fn demo(client: Client) -> logbook_client::Result<()> {
    /// let mut subscription = client.subscribe_all(SubscribeAllOptions::default()).await?;
    /// let first = subscription.try_next().await?;
    /// subscription.unsubscribe().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn unsubscribe(mut self) -> Result<()> {
        self.queue.clear();
        // Anything but an established subscription (one being opened is
        // unsubscribed by its guard) has nothing left to wait for.
        let State::Active(mut server) = std::mem::replace(&mut self.state, State::Done) else {
            return Ok(());
        };
        server.disarm();
        let request = Request::Unsubscribe(Unsubscribe {
            subscription: server.id,
        });
        let reply = match server.conn.send(&request) {
            Ok(reply) => reply,
            Err(Error::Disconnected) => return Ok(()),
            Err(e) => return Err(e),
        };
        let frame = match self.client.options().request_timeout {
            Some(limit) => tokio::time::timeout(limit, reply)
                .await
                .unwrap_or(Err(Error::Timeout)),
            None => reply.await,
        };
        let frame = match frame {
            Ok(frame) => frame,
            // The subscription went with its connection.
            Err(Error::Disconnected) => return Ok(()),
            Err(e) => return Err(e),
        };
        match ServerMessage::decode(&frame) {
            Ok(ServerMessage::Response(Response::UnsubscribeOk)) => Ok(()),
            Ok(ServerMessage::Error(reply)) => Err(Error::from_reply(reply, &request)),
            Ok(_) => Err(violation(
                &server.conn,
                "Unsubscribe answered with another reply",
            )),
            Err(e) => {
                server.conn.close(&format!("undecodable reply: {e}"));
                Err(Error::Protocol(e))
            }
        }
    }

    fn checkpoint_of(&self, progress: Progress) -> Checkpoint {
        match self.target {
            Target::All { .. } => Checkpoint::All {
                next: LogPosition(progress.next),
            },
            Target::Stream { .. } => Checkpoint::Stream {
                next: StreamVersion(progress.next),
            },
        }
    }

    fn is_all(&self) -> bool {
        matches!(self.target, Target::All { .. })
    }

    /// The Subscribe that resumes after everything queued, with the credit
    /// the queue leaves of the window.
    fn request(&self) -> Request {
        let from = self.queued.resume_from();
        let target = match &self.target {
            Target::All { filter } => SubscriptionTarget::All {
                from: map_from(from, LogPosition),
                filter: filter.clone(),
            },
            Target::Stream { name } => SubscriptionTarget::Stream {
                stream: name.clone(),
                from: map_from(from, StreamVersion),
            },
        };
        Request::Subscribe(Subscribe {
            target,
            initial_credit: self.window.saturating_sub(self.queued_events),
        })
    }

    /// Hands a message to the consumer: records progress and owes credit.
    fn take(&mut self, msg: &SubscriptionMessage) {
        let all = self.is_all();
        self.taken.advance(msg, all);
        if let SubscriptionMessage::Event(_) = msg {
            self.queued_events = self.queued_events.saturating_sub(1);
            self.owe(1);
        }
    }

    /// Records `n` events consumed (or dropped as duplicates) and grants
    /// them back once the debt reaches half the window: one `Credit` per
    /// half window, not per event.
    fn owe(&mut self, n: u32) {
        self.owed = self.owed.saturating_add(n);
        if self.owed < (self.window / 2).max(1) {
            return;
        }
        if let State::Active(server) = &self.state {
            let credit = Request::Credit(Credit {
                subscription: server.id,
                events: self.owed,
            });
            // Sent under the subscription's own corr_id: Credit gets no
            // reply, and should the server ever refuse one, the error ends
            // this subscription rather than some unrelated request. A
            // failure means the connection is gone, and the resubscription
            // starts with a fresh window anyway.
            if let Err(e) = server.conn.send_oneway(&credit, server.id) {
                debug!(error = %e, "credit not sent");
            }
        }
        // Outside Active, the next Subscribe's initial credit covers it.
        self.owed = 0;
    }

    fn enqueue(&mut self, msg: SubscriptionMessage) {
        let all = self.is_all();
        self.queued.advance(&msg, all);
        if let SubscriptionMessage::Event(_) = msg {
            self.queued_events = self.queued_events.saturating_add(1);
        }
        self.queue.push_back(msg);
    }

    /// Takes in one frame of the server subscription.
    fn accept(&mut self, frame: Frame) {
        let decoded = if frame.header.opcode == Opcode::Subscribe {
            ServerMessage::decode(&frame)
        } else {
            Err(logbook_protocol::Error::Malformed {
                opcode: Opcode::Subscribe,
                reason: format!("a subscription frame with opcode {:?}", frame.header.opcode),
            })
        };
        match decoded {
            Ok(ServerMessage::Push(push)) => self.accept_push(push),
            Ok(ServerMessage::Error(reply)) => {
                // The reader removed the entry with the error: nothing to
                // unsubscribe.
                if let State::Active(server) = &mut self.state {
                    server.disarm();
                }
                let error = Error::from_reply(reply, &self.request());
                self.fail(error);
            }
            Ok(ServerMessage::Response(_)) => {
                if let State::Active(server) = &self.state {
                    let e = violation(&server.conn, "a second reply to Subscribe");
                    self.fail(e);
                }
            }
            Ok(ServerMessage::GroupPush(_)) => {
                if let State::Active(server) = &self.state {
                    let e = violation(&server.conn, "a group's push for a subscription");
                    self.fail(e);
                }
            }
            Err(logbook_protocol::Error::UnknownPushType { tag }) => {
                debug!(%tag, "push of an unknown type ignored");
            }
            Err(e) => {
                if let State::Active(server) = &self.state {
                    server.conn.close(&format!("undecodable push: {e}"));
                }
                self.fail(Error::Protocol(e));
            }
        }
    }

    fn accept_push(&mut self, push: Push) {
        match push {
            Push::Events { events, from } => {
                // A push that says where its coverage starts may skip
                // positions (or versions) after it: those were removed, not
                // lost. Its start must not be past what is expected next.
                if let Some(from) = from
                    && from > self.queued.next
                {
                    let what = if self.is_all() { "position" } else { "version" };
                    self.fail(order_error(format!(
                        "a push covering from {what} {from} where {} was expected: events were lost",
                        self.queued.next
                    )));
                    return;
                }
                for event in events {
                    if let Err(e) = self.accept_event(event, from.is_some()) {
                        self.fail(e);
                        return;
                    }
                }
            }
            Push::CaughtUp {
                position,
                next_version,
            } => {
                let msg = SubscriptionMessage::CaughtUp {
                    position,
                    next_version,
                };
                if self.live {
                    // Already announced: keep the alternation.
                    self.queued.advance(&msg, self.is_all());
                } else {
                    self.live = true;
                    self.enqueue(msg);
                }
            }
            Push::FellBehind {
                position,
                next_version,
            } => {
                let msg = SubscriptionMessage::FellBehind {
                    position,
                    next_version,
                };
                if self.live {
                    self.live = false;
                    self.enqueue(msg);
                } else {
                    self.queued.advance(&msg, self.is_all());
                }
            }
            Push::Checkpoint { position } => {
                self.enqueue(SubscriptionMessage::Checkpoint { position });
            }
            Push::Ended { code, message } => {
                if let State::Active(server) = &mut self.state {
                    server.disarm();
                }
                if code == ErrorCode::ShuttingDown {
                    // The server closes the connection next; do not wait
                    // for it before subscribing elsewhere (or again).
                    if let State::Active(server) = &self.state {
                        server.conn.close("server is shutting down");
                    }
                    self.lost("the server is shutting down");
                } else {
                    let error = Error::from_reply(ErrorReply::new(code, message), &self.request());
                    self.fail(error);
                }
            }
            other => debug!(push = ?other, "push of an unknown kind ignored"),
        }
    }

    /// Checks that `event` is the next one expected and queues it; `covered`:
    /// its push says that what it skips was removed.
    fn accept_event(&mut self, event: RecordedEvent, covered: bool) -> Result<()> {
        let expected = self.queued.next;
        let (got, dense) = match &self.target {
            Target::All { filter } => (event.position.0, filter.is_none()),
            Target::Stream { name } => {
                if event.stream != *name {
                    return Err(order_error(format!(
                        "an event of stream {:?} in the subscription to {:?}",
                        event.stream.as_str(),
                        name.as_str()
                    )));
                }
                (event.version.0, true)
            }
        };
        if got < expected {
            // Already delivered: never hand it out twice, and give its
            // credit back so the window does not shrink.
            warn!(got, expected, "duplicate subscription event dropped");
            self.owe(1);
            return Ok(());
        }
        if dense && !covered && got > expected {
            let what = if self.is_all() { "position" } else { "version" };
            return Err(order_error(format!(
                "event at {what} {got} where {expected} was expected: events were lost"
            )));
        }
        self.enqueue(SubscriptionMessage::Event(event));
        Ok(())
    }

    /// The server subscription is gone with its connection (or its server
    /// is shutting down): subscribe again after everything queued.
    fn lost(&mut self, why: &str) {
        if let State::Active(server) = &mut self.state {
            server.disarm();
        }
        if self.live {
            self.live = false;
            let next_version = match self.target {
                Target::All { .. } => None,
                Target::Stream { .. } => Some(StreamVersion(self.queued.next)),
            };
            self.enqueue(SubscriptionMessage::FellBehind {
                position: LogPosition(self.queued.mark),
                next_version,
            });
        }
        let (policy, timeout) = {
            let options = self.client.options();
            (options.resubscribe, options.request_timeout)
        };
        debug!(why, from = ?self.queued.resume_from(), "subscription lost; subscribing again");
        self.owed = 0;
        self.state = State::Opening(Box::pin(subscribe_with_retries(
            self.client.clone(),
            self.request(),
            policy,
            timeout,
            true,
        )));
    }

    /// The resume point after `event`, one this subscription yielded.
    pub(crate) fn checkpoint_after_event(&self, event: &RecordedEvent) -> Checkpoint {
        match &self.target {
            Target::All { .. } => Checkpoint::all_after(event),
            Target::Stream { .. } => Checkpoint::stream_after(event),
        }
    }

    /// Ends the subscription with `error`, after the queued messages.
    fn fail(&mut self, error: Error) {
        // Dropping an armed server subscription unsubscribes it.
        self.state = State::Failed(error);
    }
}

impl Stream for Subscription {
    type Item = Result<SubscriptionMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(msg) = this.queue.pop_front() {
                this.take(&msg);
                return Poll::Ready(Some(Ok(msg)));
            }
            match &mut this.state {
                State::Active(server) => match server.frames.poll_recv(cx) {
                    Poll::Ready(Some(frame)) => this.accept(frame),
                    Poll::Ready(None) => this.lost("connection closed"),
                    Poll::Pending => return Poll::Pending,
                },
                State::Opening(open) => match open.as_mut().poll(cx) {
                    Poll::Ready(Ok(server)) => {
                        debug!(subscription = server.id, "subscribed again");
                        this.state = State::Active(server);
                    }
                    Poll::Ready(Err(e)) => this.state = State::Failed(e),
                    Poll::Pending => return Poll::Pending,
                },
                State::Failed(_) | State::Done => {
                    return match std::mem::replace(&mut this.state, State::Done) {
                        State::Failed(e) => Poll::Ready(Some(Err(e))),
                        _ => Poll::Ready(None),
                    };
                }
            }
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Active(server) => format!("active ({})", server.id),
            State::Opening(_) => "subscribing".to_owned(),
            State::Failed(e) => format!("failed ({e})"),
            State::Done => "done".to_owned(),
        };
        f.debug_struct("Subscription")
            .field("target", &self.target)
            .field("window", &self.window)
            .field("queued", &self.queue.len())
            .field("resume_point", &self.resume_point())
            .field("state", &state)
            .finish()
    }
}

fn map_from<P>(from: SubscribeFrom<u64>, typed: impl FnOnce(u64) -> P) -> SubscribeFrom<P> {
    match from {
        SubscribeFrom::Start => SubscribeFrom::Start,
        SubscribeFrom::After(n) => SubscribeFrom::After(typed(n)),
        SubscribeFrom::End => SubscribeFrom::End,
    }
}

fn order_error(reason: String) -> Error {
    Error::Protocol(logbook_protocol::Error::Malformed {
        opcode: Opcode::Subscribe,
        reason,
    })
}

/// A reply that breaks the protocol: the connection can no longer be
/// trusted (PROTOCOL.md §3), so it is closed.
fn violation(conn: &Connection, reason: &str) -> Error {
    conn.close(reason);
    Error::Protocol(logbook_protocol::Error::Malformed {
        opcode: Opcode::Subscribe,
        reason: reason.to_owned(),
    })
}

/// Subscribes until an attempt succeeds or `policy` gives up. Each attempt
/// is bounded by `attempt_timeout`; `retry_timeouts` also retries attempts
/// that ran out of it.
async fn subscribe_with_retries(
    client: Client,
    request: Request,
    policy: RetryPolicy,
    attempt_timeout: Option<Duration>,
    retry_timeouts: bool,
) -> Result<ServerSub> {
    let mut failed = 0u32;
    loop {
        let attempt = subscribe_once(&client, &request);
        let result = match attempt_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or(Err(Error::Timeout)),
            None => attempt.await,
        };
        match result {
            Err(e)
                if (e.is_retryable() || (retry_timeouts && matches!(e, Error::Timeout)))
                    && failed.saturating_add(1) < policy.max_attempts =>
            {
                failed += 1;
                let delay = policy.delay(failed);
                debug!(error = %e, failed, ?delay, "subscribe failed; retrying");
                tokio::time::sleep(delay).await;
            }
            result => return result,
        }
    }
}

/// One Subscribe: on the client's live connection (or a new one), up to
/// its `SubscribeOk`.
async fn subscribe_once(client: &Client, request: &Request) -> Result<ServerSub> {
    let conn = client.connection().await?;
    let (id, frames) = conn.subscribe(request)?;
    // Armed from here: if this future is dropped (timeout, the consumer
    // gave up), the server-side subscription is ended.
    let mut server = ServerSub {
        conn,
        id,
        frames,
        armed: true,
    };
    let Some(frame) = server.frames.recv().await else {
        server.armed = false;
        return Err(Error::Disconnected);
    };
    if frame.header.opcode != Opcode::Subscribe {
        return Err(violation(
            &server.conn,
            "Subscribe answered with another opcode",
        ));
    }
    match ServerMessage::decode(&frame) {
        Ok(ServerMessage::Response(Response::SubscribeOk(_))) => Ok(server),
        Ok(ServerMessage::Error(reply)) => {
            // The reader dropped the entry with the error: nothing to end.
            server.armed = false;
            let error = Error::from_reply(reply, request);
            if matches!(error, Error::ShuttingDown) {
                server.conn.close("server is shutting down");
            }
            Err(error)
        }
        Ok(_) => Err(violation(&server.conn, "a push before SubscribeOk")),
        Err(e) => {
            server.conn.close(&format!("undecodable reply: {e}"));
            Err(Error::Protocol(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_moves_between_tasks() {
        fn check<T: Send + Unpin + 'static>() {}
        check::<Subscription>();
    }

    #[test]
    fn resume_is_after_the_last_delivered() {
        let p = Progress { next: 0, mark: 0 };
        assert_eq!(p.resume_from(), SubscribeFrom::Start);
        let p = Progress { next: 8, mark: 8 };
        assert_eq!(p.resume_from(), SubscribeFrom::After(7));
    }

    #[test]
    fn markers_move_global_progress_only_forward() {
        let mut p = Progress { next: 5, mark: 5 };
        p.advance(
            &SubscriptionMessage::Checkpoint {
                position: LogPosition(3),
            },
            true,
        );
        assert_eq!(p, Progress { next: 5, mark: 5 });
        p.advance(
            &SubscriptionMessage::Checkpoint {
                position: LogPosition(9),
            },
            true,
        );
        assert_eq!(p, Progress { next: 9, mark: 9 });
        // A stream's versions are not log positions.
        let mut s = Progress { next: 2, mark: 0 };
        s.advance(
            &SubscriptionMessage::CaughtUp {
                position: LogPosition(40),
                next_version: Some(StreamVersion(2)),
            },
            false,
        );
        assert_eq!(s, Progress { next: 2, mark: 40 });
        // A stream's markers move it by their versions.
        s.advance(
            &SubscriptionMessage::FellBehind {
                position: LogPosition(50),
                next_version: Some(StreamVersion(6)),
            },
            false,
        );
        assert_eq!(s, Progress { next: 6, mark: 50 });
    }
}
