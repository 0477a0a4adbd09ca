//! The aggregate repository: load an aggregate (its latest snapshot and the
//! events after it), decide new events from a command, append them with the
//! exact expected version, decide again on a conflict, take a snapshot
//! every N events; with command ids that make a command sent again apply
//! once.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::TryStreamExt;
use logbook_protocol::{AppendResult, EventId, ExpectedVersion, NewEvent, StreamVersion};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{Instrument, warn};
use uuid::Uuid;

use super::typed::{Event, EventError, EventMeta, Format, decode, encode};
use super::upcast::Upcasters;
use crate::{Client, Error, ReadStreamOptions};

/// Event type of the snapshots in `<stream>-snapshots`.
pub const SNAPSHOT_TYPE: &str = "Snapshot";

/// State rebuilt from events.
///
/// `apply` never fails: events are facts, already decided. Decisions are
/// the closures given to [`Repository::execute`].
pub trait Aggregate:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Its events.
    type Event: Event;
    /// The state after `event`.
    fn apply(&mut self, event: &Self::Event);
}

/// A command's identity: the same id sent again applies once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommandId(pub Uuid);

impl CommandId {
    /// A fresh id (time-ordered).
    pub fn new() -> CommandId {
        CommandId(Uuid::now_v7())
    }

    /// The id of the `index`-th event the command decides: a name-based
    /// (v5) UUID of the command id and the index, so that deciding again
    /// gives the same ids (and the server refuses them a second time).
    pub fn event_id(&self, index: usize) -> EventId {
        EventId(*Uuid::new_v5(&self.0, &(index as u64).to_le_bytes()).as_bytes())
    }
}

impl Default for CommandId {
    fn default() -> Self {
        CommandId::new()
    }
}

impl std::fmt::Display for CommandId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for CommandId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<CommandId, uuid::Error> {
        Uuid::parse_str(s).map(CommandId)
    }
}

/// How a [`Repository`] behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RepositoryOptions {
    /// Write a snapshot once the stream has grown this many events past the
    /// latest one. Default 100; 0: never (existing ones are still used).
    pub snapshot_every: u64,
    /// Load-decide-append rounds before [`ExecuteError::Conflict`]. Default
    /// 100.
    pub max_attempts: u32,
    /// Format of the data of the events it writes. Default JSON.
    pub format: Format,
    /// Command ids a snapshot remembers (the latest applied), so that a
    /// command sent again is found even when its events are older than
    /// the snapshot. Default 256.
    pub remembered_commands: usize,
}

impl Default for RepositoryOptions {
    fn default() -> Self {
        RepositoryOptions {
            snapshot_every: 100,
            max_attempts: 100,
            format: Format::Json,
            remembered_commands: 256,
        }
    }
}

impl RepositoryOptions {
    /// Sets [`RepositoryOptions::snapshot_every`].
    pub fn snapshot_every(mut self, events: u64) -> Self {
        self.snapshot_every = events;
        self
    }

    /// Sets [`RepositoryOptions::max_attempts`].
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Sets [`RepositoryOptions::remembered_commands`].
    pub fn remembered_commands(mut self, commands: usize) -> Self {
        self.remembered_commands = commands;
        self
    }

    /// Sets [`RepositoryOptions::format`].
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }
}

/// An aggregate as loaded.
#[derive(Clone, Debug)]
pub struct Loaded<A> {
    /// Its state.
    pub state: A,
    /// Its stream's version (`None`: no events).
    pub version: Option<StreamVersion>,
    /// The version the snapshot it started from covers (`None`: it was
    /// replayed from the first event).
    pub snapshot_version: Option<StreamVersion>,
    /// Events replayed after the snapshot.
    pub replayed: u64,
    /// The latest command ids applied, oldest first.
    pub commands: VecDeque<CommandId>,
}

/// What [`Repository::execute`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executed {
    /// The decided events were appended.
    Appended {
        /// Where.
        result: AppendResult,
        /// Rounds it took (more than 1: it decided again after conflicts).
        attempts: u32,
        /// Whether a snapshot was written after it.
        snapshot: bool,
    },
    /// The decision was to do nothing.
    Unchanged,
    /// The command was applied before (it was sent again).
    AlreadyApplied,
}

/// What [`Repository::run`] did, and the aggregate after it.
#[derive(Clone, Debug)]
pub struct Ran<A> {
    /// What it did.
    pub executed: Executed,
    /// The aggregate's state after it (as loaded, when nothing was
    /// appended).
    pub state: A,
    /// Its stream's version after it.
    pub version: Option<StreamVersion>,
    /// Load-decide-append rounds it took.
    pub attempts: u32,
}

/// Why [`Repository::execute`] did not apply a command.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The decision refused the command.
    #[error("command rejected: {0}")]
    Rejected(E),
    /// Other writers kept changing the stream for every attempt.
    #[error("gave up after {attempts} conflicting attempts")]
    Conflict {
        /// Rounds tried.
        attempts: u32,
    },
    /// A stored event could not be read as the aggregate's event type.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The server or the connection failed.
    #[error(transparent)]
    Client(#[from] Error),
}

/// A snapshot, as stored in `<stream>-snapshots`.
#[derive(Serialize, Deserialize)]
struct Snapshot<A> {
    version: u64,
    state: A,
    #[serde(default)]
    commands: Vec<CommandId>,
}

/// Loads and changes aggregates of type `A` (one stream each).
///
/// ```no_run
/// use logbook_client::es::{Aggregate, CommandId, EventMeta, SerdeEvent, Repository};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum CounterEvent { Added { n: u64 } }
/// impl SerdeEvent for CounterEvent {}
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Counter { total: u64 }
/// impl Aggregate for Counter {
///     type Event = CounterEvent;
///     fn apply(&mut self, e: &CounterEvent) {
///         match e { CounterEvent::Added { n } => self.total += n }
///     }
/// }
///
/// # async fn demo(client: logbook_client::Client) -> Result<(), Box<dyn std::error::Error>> {
/// let counters = Repository::<Counter>::new(client);
/// counters
///     .execute("counter-1", CommandId::new(), EventMeta::default(), |c: &Counter| {
///         if c.total >= 100 { Err("full") } else { Ok(vec![CounterEvent::Added { n: 1 }]) }
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct Repository<A> {
    client: Client,
    upcasters: Arc<Upcasters>,
    options: RepositoryOptions,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Repository {
            client: self.client.clone(),
            upcasters: Arc::clone(&self.upcasters),
            options: self.options,
            _aggregate: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("options", &self.options)
            .field("upcasters", &self.upcasters)
            .finish()
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `client`, with no upcasters and default options.
    pub fn new(client: Client) -> Repository<A> {
        Repository {
            client,
            upcasters: Arc::new(Upcasters::new()),
            options: RepositoryOptions::default(),
            _aggregate: PhantomData,
        }
    }

    /// Reads events through `upcasters`.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Repository<A> {
        self.upcasters = Arc::new(upcasters);
        self
    }

    /// Sets the options.
    pub fn with_options(mut self, options: RepositoryOptions) -> Repository<A> {
        self.options = options;
        self
    }

    /// The client it reads and writes through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The stream holding `stream`'s snapshots.
    pub fn snapshot_stream(stream: &str) -> String {
        format!("{stream}-snapshots")
    }

    /// Loads the aggregate of `stream`: its latest snapshot, then the
    /// events after it. A snapshot that cannot be read (written by an
    /// older program with another state shape) is ignored: the stream is
    /// replayed from its first event.
    pub async fn load(
        &self,
        stream: &str,
    ) -> Result<Loaded<A>, ExecuteError<std::convert::Infallible>> {
        let span = tracing::debug_span!("logbook.load", stream);
        self.load_inner(stream, true).instrument(span).await
    }

    /// Loads the aggregate of `stream` from its first event, ignoring
    /// snapshots (what loading costs without them; a cross-check).
    pub async fn load_without_snapshot(
        &self,
        stream: &str,
    ) -> Result<Loaded<A>, ExecuteError<std::convert::Infallible>> {
        self.load_inner(stream, false).await
    }

    async fn load_inner<E>(
        &self,
        stream: &str,
        use_snapshot: bool,
    ) -> Result<Loaded<A>, ExecuteError<E>> {
        if use_snapshot && let Some(loaded) = self.load_from(stream, true).await? {
            return Ok(loaded);
        }
        Ok(self
            .load_from::<E>(stream, false)
            .await?
            .unwrap_or_else(|| Loaded {
                state: A::default(),
                version: None,
                snapshot_version: None,
                replayed: 0,
                commands: VecDeque::new(),
            }))
    }

    /// Loads from the latest snapshot (`None` if the events after it do not
    /// follow it: the stream was deleted, or truncated past it, since), or
    /// from the first live event.
    async fn load_from<E>(
        &self,
        stream: &str,
        use_snapshot: bool,
    ) -> Result<Option<Loaded<A>>, ExecuteError<E>> {
        let snapshot = if use_snapshot {
            match self.latest_snapshot(stream).await? {
                Some(s) => Some(s),
                None => return Ok(None),
            }
        } else {
            None
        };
        let (mut state, from, mut commands, snapshot_version) = match snapshot {
            Some(s) => (
                s.state,
                s.version + 1,
                VecDeque::from(s.commands),
                Some(StreamVersion(s.version)),
            ),
            None => (A::default(), 0, VecDeque::new(), None),
        };
        let mut version = snapshot_version;
        let mut replayed = 0;
        let events = self
            .client
            .read_stream(
                stream,
                ReadStreamOptions::default().from(StreamVersion(from)),
            )
            .try_collect::<Vec<_>>()
            .await;
        let events = match events {
            Ok(e) => e,
            // Deleted since the snapshot: start over (as a new aggregate).
            Err(Error::StreamNotFound { .. }) if snapshot_version.is_some() => return Ok(None),
            Err(Error::StreamNotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        // The events must follow the snapshot: a stream soft-deleted and
        // written again, or truncated past the snapshot, starts over from
        // its live events. (Without a snapshot, a stream truncated or kept
        // to a count is folded from its live events: truncate an
        // aggregate's stream only at or below its latest snapshot.)
        if snapshot_version.is_some() && events.first().is_some_and(|e| e.version.0 != from) {
            return Ok(None);
        }
        for recorded in events {
            version = Some(recorded.version);
            let typed = decode::<A::Event>(recorded, &self.upcasters)?;
            state.apply(&typed.event);
            replayed += 1;
            if let Some(c) = typed.meta.command_id
                && commands.back() != Some(&CommandId(c))
            {
                commands.push_back(CommandId(c));
                if commands.len() > self.options.remembered_commands {
                    commands.pop_front();
                }
            }
        }
        Ok(Some(Loaded {
            state,
            version,
            snapshot_version,
            replayed,
            commands,
        }))
    }

    async fn latest_snapshot(&self, stream: &str) -> Result<Option<Snapshot<A>>, Error> {
        let page = self
            .client
            .read_stream(
                Self::snapshot_stream(stream),
                ReadStreamOptions::default().backward().max_count(1),
            )
            .try_collect::<Vec<_>>()
            .await;
        let latest = match page {
            Ok(mut e) => e.pop(),
            Err(Error::StreamNotFound { .. }) => None,
            // A cache: one that cannot be read (hard-deleted, say) is not
            // there; only a failing server or connection is an error.
            Err(e) if !e.is_retryable() => {
                warn!(stream, error = %e, "ignoring the snapshot stream");
                None
            }
            Err(e) => return Err(e),
        };
        let latest = latest.filter(|e| e.event_type.as_str() == SNAPSHOT_TYPE);
        Ok(
            latest.and_then(|e| match serde_json::from_slice::<Snapshot<A>>(&e.data) {
                Ok(s) => Some(s),
                Err(err) => {
                    warn!(stream, error = %err, "ignoring a snapshot that does not read as the state");
                    None
                }
            }),
        )
    }

    /// Runs a command (whose id is `id`) against the aggregate of `stream`:
    /// load, `decide` the events, append them if the stream is still at the
    /// version loaded, else load and decide again (at most
    /// [`RepositoryOptions::max_attempts`] rounds). The events get ids
    /// derived from `id` and `meta` (plus `$commandId`, and a new trace
    /// context if it has none) in their metadata. A command whose id is
    /// among the latest applied, or whose events the server already holds,
    /// is [`Executed::AlreadyApplied`]: sending it again is safe. `decide`
    /// may run several times and must depend only on the state it is given.
    pub async fn execute<E>(
        &self,
        stream: &str,
        id: CommandId,
        meta: EventMeta,
        decide: impl Fn(&A) -> Result<Vec<A::Event>, E>,
    ) -> Result<Executed, ExecuteError<E>> {
        self.run(stream, id, meta, decide).await.map(|r| r.executed)
    }

    /// [`Repository::execute`], returning the aggregate's state and version
    /// after the command too.
    pub async fn run<E>(
        &self,
        stream: &str,
        id: CommandId,
        meta: EventMeta,
        decide: impl Fn(&A) -> Result<Vec<A::Event>, E>,
    ) -> Result<Ran<A>, ExecuteError<E>> {
        let mut meta = meta;
        meta.command_id = Some(id.0);
        // One command's events share a correlation: its first event's id
        // when it starts a chain.
        if meta.correlation_id.is_none() {
            meta.correlation_id = Some(id.event_id(0));
        }
        if meta.traceparent.is_none() {
            meta.traceparent = Some(new_traceparent());
        }
        let span = tracing::info_span!(
            "logbook.execute",
            stream,
            command = %id,
            traceparent = meta.traceparent.as_deref().unwrap_or(""),
        );
        self.run_inner(stream, id, &meta, decide)
            .instrument(span)
            .await
    }

    async fn run_inner<E>(
        &self,
        stream: &str,
        id: CommandId,
        meta: &EventMeta,
        decide: impl Fn(&A) -> Result<Vec<A::Event>, E>,
    ) -> Result<Ran<A>, ExecuteError<E>> {
        let attempts = self.options.max_attempts.max(1);
        for attempt in 1..=attempts {
            let loaded = self.load_inner::<E>(stream, true).await?;
            let unchanged = |executed, loaded: Loaded<A>| Ran {
                executed,
                state: loaded.state,
                version: loaded.version,
                attempts: attempt,
            };
            if loaded.commands.contains(&id) {
                return Ok(unchanged(Executed::AlreadyApplied, loaded));
            }
            let events = decide(&loaded.state).map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                return Ok(unchanged(Executed::Unchanged, loaded));
            }
            let batch = events
                .iter()
                .enumerate()
                .map(|(i, e)| encode(e, id.event_id(i), meta, self.options.format))
                .collect::<Result<Vec<NewEvent>, _>>()?;
            let expected = loaded
                .version
                .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            match self.client.append(stream, expected, batch).await {
                // An exact resend of a batch stored before the version loaded
                // (the same command, sent again with the same metadata) is
                // answered with the original result: applied before.
                Ok(result) if loaded.version.is_some_and(|v| result.first_version <= v) => {
                    return Ok(unchanged(Executed::AlreadyApplied, loaded));
                }
                Ok(result) => {
                    let (state, snapshot) = self
                        .maybe_snapshot(stream, loaded, &events, id, result)
                        .await;
                    return Ok(Ran {
                        executed: Executed::Appended {
                            result,
                            attempts: attempt,
                            snapshot,
                        },
                        state,
                        version: Some(result.last_version),
                        attempts: attempt,
                    });
                }
                Err(Error::WrongExpectedVersion { .. }) => {
                    tracing::debug!(attempt, "conflict: deciding again");
                }
                // Its own events are stored already (decided from an older
                // state by an earlier sending): it was applied before.
                Err(Error::DuplicateEventId {
                    id: stored,
                    stream: ref holder,
                    ..
                }) if (0..events.len()).any(|i| id.event_id(i) == stored)
                    && (holder == stream || holder.is_empty()) =>
                {
                    let now = self.load_inner::<E>(stream, true).await?;
                    return Ok(unchanged(Executed::AlreadyApplied, now));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ExecuteError::Conflict { attempts })
    }

    /// The state after `events`, and whether a snapshot of it was written
    /// (when the stream grew far enough past the last one). A failure only
    /// costs the next load time: it is logged.
    async fn maybe_snapshot(
        &self,
        stream: &str,
        loaded: Loaded<A>,
        events: &[A::Event],
        id: CommandId,
        result: AppendResult,
    ) -> (A, bool) {
        let mut state = loaded.state;
        for e in events {
            state.apply(e);
        }
        let every = self.options.snapshot_every;
        let covered = loaded.snapshot_version.map_or(0, |v| v.0 + 1);
        if every == 0 || (result.last_version.0 + 1).saturating_sub(covered) < every {
            return (state, false);
        }
        let mut commands = loaded.commands;
        commands.push_back(id);
        while commands.len() > self.options.remembered_commands {
            commands.pop_front();
        }
        let snapshot = Snapshot {
            version: result.last_version.0,
            state,
            commands: commands.into(),
        };
        let data = match serde_json::to_vec(&snapshot) {
            Ok(d) => d,
            Err(e) => {
                warn!(stream, error = %e, "cannot encode a snapshot");
                return (snapshot.state, false);
            }
        };
        // `Any`: snapshots of racing commands may land out of order, which
        // is harmless: each says which version it covers.
        let event = NewEvent::new(EventId::new_v7(), SNAPSHOT_TYPE, data);
        let written = self
            .client
            .append(
                Self::snapshot_stream(stream),
                ExpectedVersion::Any,
                vec![event],
            )
            .await;
        if let Err(e) = &written {
            warn!(stream, error = %e, "cannot write a snapshot");
        }
        (snapshot.state, written.is_ok())
    }
}

/// A new W3C trace context: version 00, random trace and span ids,
/// sampled.
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = Uuid::new_v4().simple().to_string();
    format!("00-{trace}-{}-01", &span[..16])
}
