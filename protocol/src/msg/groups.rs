//! Persistent subscriptions (consumer groups), opcodes 20 to 27.
//!
//! ```text
//! CreateGroup  { group: str, stream?: str, filter?: Filter,      source: one stream, or $all
//!                start: "start" | "end" | "at", at?: uint64,     (filtered); "at": from this
//!                ack_wait_ms: uint64, max_deliveries: uint32,    position (or version)
//!                max_in_flight: uint32, strategy: "round_robin" | "per_stream" }
//! CreateGroupOk = GroupInfo
//! UpdateGroup  { group: str, ack_wait_ms, max_deliveries, max_in_flight, strategy }
//! UpdateGroupOk = GroupInfo
//! DeleteGroup  { group: str }            DeleteGroupOk { }
//! ListGroups   { }                       ListGroupsOk  { groups: [GroupInfo] }
//! JoinGroup    { group: str, window: uint32 }
//! JoinGroupOk = GroupInfo; then pushes (kind 3, opcode JoinGroup):
//!   { t: "events", events: [RecordedEvent], ids: [uint64], deliveries: [uint32] }
//!   { t: "ended", code: uint16, message?: str }
//! GroupAck     { subscription: uint32, ids: [uint64] }                        (no reply)
//! GroupNack    { subscription: uint32, ids: [uint64],
//!                action: "retry" | "park" | "skip", delay_ms?: uint64, reason?: str } (no reply)
//! GroupExtend  { subscription: uint32, ids: [uint64] }                        (no reply)
//! GroupInfo    { group, stream?, filter?, start, at?, ack_wait_ms, max_deliveries,
//!                max_in_flight, strategy, floor: uint64, cursor: uint64, head: uint64,
//!                outstanding, in_flight, waiting, consumers, oldest_in_flight_ms,
//!                parked, delivered, acked, skipped, failures, parked_total: uint64 }
//! ```
//!
//! See PROTOCOL.md §5.13 for the semantics.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::error_reply::ErrorCode;
use super::event::{put_recorded_events, read_recorded_events, recorded_event_wire_len};
use super::mp;
use super::subscribe::{FilterIn, FilterWire};
use super::wire::{malformed, read_map, required};
use crate::error::Error;
use crate::frame::Opcode;
use crate::msg::Filter;
use crate::types::RecordedEvent;

/// Most ids one ack, nack or extend names.
pub const MAX_GROUP_IDS: usize = 10_000;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 128;
/// Most events a consumer's window may hold.
pub const MAX_GROUP_WINDOW: u32 = 10_000;

/// Checks a group name: 1 to [`MAX_GROUP_NAME_BYTES`] bytes of ASCII
/// letters, digits, `-`, `_` and `.`.
pub fn validate_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_BYTES {
        return Err(format!(
            "a group name has 1 to {MAX_GROUP_NAME_BYTES} bytes; {name:?} has {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "a group name holds ASCII letters, digits, '-', '_' and '.'; {name:?} has {c:?}"
        ));
    }
    Ok(())
}

/// How a group hands out events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GroupStrategy {
    /// Each event to the next consumer with room: no order.
    #[default]
    RoundRobin,
    /// At most one event of each stream in flight at a time: strict order
    /// within a stream, parallel across streams.
    PerStream,
}

impl GroupStrategy {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupStrategy::RoundRobin => "round_robin",
            GroupStrategy::PerStream => "per_stream",
        }
    }

    /// The strategy of a wire name.
    pub fn parse(s: &str) -> Option<GroupStrategy> {
        match s {
            "round_robin" => Some(GroupStrategy::RoundRobin),
            "per_stream" => Some(GroupStrategy::PerStream),
            _ => None,
        }
    }
}

/// A group's tunable settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSettings {
    /// An event not acknowledged within this is delivered again. Default
    /// 30 s.
    pub ack_wait_ms: u64,
    /// A failure after this many deliveries parks the event. Default 10.
    pub max_deliveries: u32,
    /// Most events in flight across the group's consumers. Default 1,000.
    pub max_in_flight: u32,
    /// How events are handed out.
    pub strategy: GroupStrategy,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            ack_wait_ms: 30_000,
            max_deliveries: 10,
            max_in_flight: 1_000,
            strategy: GroupStrategy::RoundRobin,
        }
    }
}

impl GroupSettings {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.ack_wait_ms == 0 || self.ack_wait_ms > 24 * 3600 * 1000 {
            return Err("ack_wait_ms is 1 ms to 24 h".into());
        }
        if self.max_deliveries == 0 || self.max_deliveries > 1_000 {
            return Err("max_deliveries is 1 to 1,000".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 100_000 {
            return Err("max_in_flight is 1 to 100,000".into());
        }
        Ok(())
    }
}

/// What a group reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupSource {
    /// The global log, optionally filtered (a stream prefix is a filter).
    All {
        /// The filter.
        filter: Option<Filter>,
    },
    /// One stream.
    Stream {
        /// Its name.
        stream: String,
    },
}

/// Where a new group starts reading its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupStart {
    /// From the first event.
    Start,
    /// From the events appended after the group is created.
    End,
    /// From this log position (or stream version), inclusive.
    At(u64),
}

/// Creates a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateGroup {
    /// Its name.
    pub group: String,
    /// What it reads.
    pub source: GroupSource,
    /// Where it starts.
    pub start: GroupStart,
    /// Its settings.
    pub settings: GroupSettings,
}

/// Changes a group's settings (its source and start are fixed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateGroup {
    /// Its name.
    pub group: String,
    /// The new settings.
    pub settings: GroupSettings,
}

/// Deletes a group: its consumers' pushes end, its state is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteGroup {
    /// Its name.
    pub group: String,
}

/// Lists the groups, with their figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ListGroups;

/// Joins a group as a consumer: events are pushed, at most `window`
/// unsettled at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinGroup {
    /// The group.
    pub group: String,
    /// Most events this consumer holds unsettled (1 to
    /// [`MAX_GROUP_WINDOW`]).
    pub window: u32,
}

/// Events processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupAck {
    /// The `corr_id` of the consumer's `JoinGroup`.
    pub subscription: u32,
    /// The events' ids, as pushed.
    pub ids: Vec<u64>,
}

/// What to do with events a consumer could not process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NackAction {
    /// Deliver again after a delay.
    Retry {
        /// Milliseconds.
        delay_ms: u64,
    },
    /// Park with a reason.
    Park {
        /// Why.
        reason: String,
    },
    /// Drop without processing.
    Skip,
}

/// Events a consumer could not process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupNack {
    /// The `corr_id` of the consumer's `JoinGroup`.
    pub subscription: u32,
    /// The events' ids.
    pub ids: Vec<u64>,
    /// What to do with them.
    pub action: NackAction,
}

/// Events still being worked on: their ack wait starts again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupExtend {
    /// The `corr_id` of the consumer's `JoinGroup`.
    pub subscription: u32,
    /// The events' ids.
    pub ids: Vec<u64>,
}

/// A group: its definition and its figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub group: String,
    /// What it reads.
    pub source: GroupSource,
    /// Where it started.
    pub start: GroupStart,
    /// Its settings.
    pub settings: GroupSettings,
    /// Every event below it is finished (acknowledged, skipped or parked):
    /// a log position, or a stream version for a stream source.
    pub floor: u64,
    /// How far the source has been read.
    pub cursor: u64,
    /// The source's end: the log head, or the stream's next version.
    pub head: u64,
    /// Events read and not finished.
    pub outstanding: u64,
    /// Events in flight.
    pub in_flight: u64,
    /// Events waiting for a retry.
    pub waiting: u64,
    /// Consumers joined.
    pub consumers: u32,
    /// Age of the oldest event in flight, in milliseconds (0: none).
    pub oldest_in_flight_ms: u64,
    /// Events on the parked list now.
    pub parked: u64,
    /// Deliveries since the server started.
    pub delivered: u64,
    /// Acknowledgements since the server started.
    pub acked: u64,
    /// Skips since the server started.
    pub skipped: u64,
    /// Failed deliveries (nack retry, ack wait passed, consumer gone)
    /// since the server started.
    pub failures: u64,
    /// Events parked since the server started.
    pub parked_total: u64,
}

/// Something a group pushes to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupPush {
    /// Events to process; settle each by its id.
    Events {
        /// The events.
        events: Vec<RecordedEvent>,
        /// Their ids, one per event, to ack, nack or extend by.
        ids: Vec<u64>,
        /// How often each has been delivered, this time included.
        deliveries: Vec<u32>,
    },
    /// The membership is over (the group was deleted, the server is
    /// stopping); no push follows.
    Ended {
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
}

/// Lists a group's parked events, a page at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListParked {
    /// The group.
    pub group: String,
    /// Start after this entry (its `version`; `None`: from the first).
    pub after: Option<u64>,
    /// Most entries (capped at 1,000).
    pub limit: u32,
}

/// One parked event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEntry {
    /// Its entry's version in the parked list (`after` of the next page).
    pub version: u64,
    /// The event's sequence in the group's source.
    pub seq: u64,
    /// The event's log position.
    pub position: u64,
    /// The event's stream.
    pub stream: String,
    /// The event's version in its stream.
    pub event_version: u64,
    /// Why it was parked.
    pub reason: String,
    /// How often it had been delivered.
    pub deliveries: u32,
    /// When it was parked (microseconds since the Unix epoch).
    pub parked_at_us: u64,
}

/// A page of parked events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListParkedOk {
    /// The entries, oldest first.
    pub entries: Vec<ParkedEntry>,
    /// The `after` of the next page; `None`: this was the last.
    #[serde(default)]
    pub next: Option<u64>,
}

/// Delivers the group's parked events again (those parked when asked, up
/// to `max`), read from the parked list as the group has room: bounded
/// memory however many are parked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayParked {
    /// The group.
    pub group: String,
    /// Most entries to replay (`None`: all parked now).
    #[serde(default)]
    pub max: Option<u64>,
}

/// What a replay will take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayParkedOk {
    /// Entries up to this version of the parked list are replayed.
    pub until: u64,
    /// How many entries that is, about (live entries up to `until`).
    pub entries: u64,
}

/// Drops every parked event of the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteParked {
    /// The group.
    pub group: String,
}

/// What was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteParkedOk {
    /// Entries removed.
    pub removed: u64,
}

/// Most entries one `ListParked` page returns.
pub const MAX_LIST_PARKED: u32 = 1_000;

#[derive(Serialize, Deserialize)]
pub(crate) struct ListParkedWire {
    pub(crate) group: String,
    #[serde(default)]
    pub(crate) after: Option<u64>,
    pub(crate) limit: u32,
}

// ------------------------------------------------------------------ wire

#[derive(Serialize)]
pub(crate) struct CreateGroupOut<'a> {
    group: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<FilterWire<&'a [String], &'a str>>,
    start: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
    ack_wait_ms: u64,
    max_deliveries: u32,
    max_in_flight: u32,
    strategy: &'static str,
}

#[derive(Deserialize)]
pub(crate) struct CreateGroupIn {
    group: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    filter: Option<FilterIn>,
    start: String,
    #[serde(default)]
    at: Option<u64>,
    ack_wait_ms: u64,
    max_deliveries: u32,
    max_in_flight: u32,
    strategy: String,
}

fn source_out(source: &GroupSource) -> (Option<&str>, Option<FilterWire<&[String], &str>>) {
    match source {
        GroupSource::Stream { stream } => (Some(stream.as_str()), None),
        GroupSource::All { filter } => (None, filter.as_ref().map(FilterWire::of)),
    }
}

fn start_out(start: GroupStart) -> (&'static str, Option<u64>) {
    match start {
        GroupStart::Start => ("start", None),
        GroupStart::End => ("end", None),
        GroupStart::At(at) => ("at", Some(at)),
    }
}

fn source_in(
    op: Opcode,
    stream: Option<String>,
    filter: Option<FilterIn>,
) -> Result<GroupSource, Error> {
    match (stream, filter) {
        (Some(_), Some(_)) => Err(malformed(op, "a group reads a stream or $all, not both")),
        (Some(stream), None) => Ok(GroupSource::Stream { stream }),
        (None, filter) => Ok(GroupSource::All {
            filter: filter.map(FilterIn::into_filter),
        }),
    }
}

fn start_in(op: Opcode, start: &str, at: Option<u64>) -> Result<GroupStart, Error> {
    match (start, at) {
        ("start", _) => Ok(GroupStart::Start),
        ("end", _) => Ok(GroupStart::End),
        ("at", Some(at)) => Ok(GroupStart::At(at)),
        ("at", None) => Err(malformed(op, "start \"at\" without `at`")),
        (other, _) => Err(malformed(op, format_args!("unknown start {other:?}"))),
    }
}

fn strategy_in(op: Opcode, s: &str) -> Result<GroupStrategy, Error> {
    GroupStrategy::parse(s).ok_or_else(|| malformed(op, format_args!("unknown strategy {s:?}")))
}

/// The settings of a decoded body (CreateGroup, UpdateGroup, GroupInfo).
fn settings_in(
    op: Opcode,
    ack_wait_ms: u64,
    max_deliveries: u32,
    max_in_flight: u32,
    strategy: &str,
) -> Result<GroupSettings, Error> {
    Ok(GroupSettings {
        ack_wait_ms,
        max_deliveries,
        max_in_flight,
        strategy: strategy_in(op, strategy)?,
    })
}

impl CreateGroup {
    pub(crate) fn to_wire(&self) -> CreateGroupOut<'_> {
        let (stream, filter) = source_out(&self.source);
        let (start, at) = start_out(self.start);
        CreateGroupOut {
            group: &self.group,
            stream,
            filter,
            start,
            at,
            ack_wait_ms: self.settings.ack_wait_ms,
            max_deliveries: self.settings.max_deliveries,
            max_in_flight: self.settings.max_in_flight,
            strategy: self.settings.strategy.as_str(),
        }
    }

    pub(crate) fn from_wire(w: CreateGroupIn) -> Result<CreateGroup, Error> {
        let op = Opcode::CreateGroup;
        Ok(CreateGroup {
            group: w.group,
            source: source_in(op, w.stream, w.filter)?,
            start: start_in(op, &w.start, w.at)?,
            settings: settings_in(
                op,
                w.ack_wait_ms,
                w.max_deliveries,
                w.max_in_flight,
                &w.strategy,
            )?,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct UpdateGroupWire {
    group: String,
    ack_wait_ms: u64,
    max_deliveries: u32,
    max_in_flight: u32,
    strategy: String,
}

impl UpdateGroup {
    pub(crate) fn to_wire(&self) -> UpdateGroupWire {
        UpdateGroupWire {
            group: self.group.clone(),
            ack_wait_ms: self.settings.ack_wait_ms,
            max_deliveries: self.settings.max_deliveries,
            max_in_flight: self.settings.max_in_flight,
            strategy: self.settings.strategy.as_str().to_owned(),
        }
    }

    pub(crate) fn from_wire(w: UpdateGroupWire) -> Result<UpdateGroup, Error> {
        Ok(UpdateGroup {
            group: w.group,
            settings: settings_in(
                Opcode::UpdateGroup,
                w.ack_wait_ms,
                w.max_deliveries,
                w.max_in_flight,
                &w.strategy,
            )?,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct GroupNameWire {
    pub(crate) group: String,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct JoinGroupWire {
    pub(crate) group: String,
    pub(crate) window: u32,
}

/// Ids, refused past [`MAX_GROUP_IDS`] before they are decoded.
#[derive(Serialize)]
pub(crate) struct IdsOut<'a> {
    subscription: u32,
    ids: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

pub(crate) fn ids_out(subscription: u32, ids: &[u64]) -> IdsOut<'_> {
    IdsOut {
        subscription,
        ids,
        action: None,
        delay_ms: None,
        reason: None,
    }
}

impl GroupNack {
    pub(crate) fn to_wire(&self) -> IdsOut<'_> {
        let (action, delay_ms, reason) = match &self.action {
            NackAction::Retry { delay_ms } => ("retry", Some(*delay_ms), None),
            NackAction::Park { reason } => ("park", None, Some(reason.as_str())),
            NackAction::Skip => ("skip", None, None),
        };
        IdsOut {
            subscription: self.subscription,
            ids: &self.ids,
            action: Some(action),
            delay_ms,
            reason,
        }
    }
}

/// A decoded ack, nack or extend body.
pub(crate) struct IdsIn {
    pub(crate) subscription: u32,
    pub(crate) ids: Vec<u64>,
    pub(crate) action: Option<String>,
    pub(crate) delay_ms: Option<u64>,
    pub(crate) reason: Option<String>,
}

/// Reads an ack, nack or extend body by hand: the ids are refused past
/// [`MAX_GROUP_IDS`] before they are read.
pub(crate) fn read_ids(body: &[u8], op: Opcode) -> Result<IdsIn, Error> {
    let (mut subscription, mut ids, mut action, mut delay_ms, mut reason) =
        (None, None, None, None, None);
    read_map(body, op, |key, r| {
        match key {
            "subscription" => {
                subscription =
                    Some(u32::try_from(r.uint()?).map_err(|_| "subscription out of range")?)
            }
            "ids" => {
                let n = r.array_len()?;
                if n > MAX_GROUP_IDS {
                    return Err("too many ids");
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.uint()?);
                }
                ids = Some(v);
            }
            "action" => action = Some(r.str()?.to_owned()),
            "delay_ms" => delay_ms = r.opt_uint()?,
            "reason" => reason = Some(r.str()?.to_owned()),
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok(IdsIn {
        subscription: required(subscription, op, "subscription")?,
        ids: required(ids, op, "ids")?,
        action,
        delay_ms,
        reason,
    })
}

impl IdsIn {
    pub(crate) fn into_nack(self) -> Result<GroupNack, Error> {
        let op = Opcode::GroupNack;
        let action = match self.action.as_deref() {
            Some("retry") => NackAction::Retry {
                delay_ms: self.delay_ms.unwrap_or(0),
            },
            Some("park") => NackAction::Park {
                reason: self.reason.unwrap_or_default(),
            },
            Some("skip") => NackAction::Skip,
            Some(other) => return Err(malformed(op, format_args!("unknown action {other:?}"))),
            None => return Err(malformed(op, "missing field `action`")),
        };
        Ok(GroupNack {
            subscription: self.subscription,
            ids: self.ids,
            action,
        })
    }
}

#[derive(Serialize)]
pub(crate) struct GroupInfoOut<'a> {
    group: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<FilterWire<&'a [String], &'a str>>,
    start: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
    ack_wait_ms: u64,
    max_deliveries: u32,
    max_in_flight: u32,
    strategy: &'static str,
    floor: u64,
    cursor: u64,
    head: u64,
    outstanding: u64,
    in_flight: u64,
    waiting: u64,
    consumers: u32,
    oldest_in_flight_ms: u64,
    parked: u64,
    delivered: u64,
    acked: u64,
    skipped: u64,
    failures: u64,
    parked_total: u64,
}

#[derive(Deserialize)]
pub(crate) struct GroupInfoIn {
    group: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    filter: Option<FilterIn>,
    start: String,
    #[serde(default)]
    at: Option<u64>,
    ack_wait_ms: u64,
    max_deliveries: u32,
    max_in_flight: u32,
    strategy: String,
    #[serde(default)]
    floor: u64,
    #[serde(default)]
    cursor: u64,
    #[serde(default)]
    head: u64,
    #[serde(default)]
    outstanding: u64,
    #[serde(default)]
    in_flight: u64,
    #[serde(default)]
    waiting: u64,
    #[serde(default)]
    consumers: u32,
    #[serde(default)]
    oldest_in_flight_ms: u64,
    #[serde(default)]
    parked: u64,
    #[serde(default)]
    delivered: u64,
    #[serde(default)]
    acked: u64,
    #[serde(default)]
    skipped: u64,
    #[serde(default)]
    failures: u64,
    #[serde(default)]
    parked_total: u64,
}

impl GroupInfo {
    pub(crate) fn size_hint(&self) -> usize {
        512 + self.group.len()
            + match &self.source {
                GroupSource::Stream { stream } => stream.len(),
                GroupSource::All { filter } => filter.as_ref().map_or(0, |f| {
                    f.stream_prefixes.iter().map(|p| p.len() + 2).sum::<usize>()
                        + f.type_prefixes.iter().map(|p| p.len() + 2).sum::<usize>()
                        + f.stream_regex.as_ref().map_or(0, String::len)
                        + f.type_regex.as_ref().map_or(0, String::len)
                }),
            }
    }

    pub(crate) fn to_wire(&self) -> GroupInfoOut<'_> {
        let (stream, filter) = source_out(&self.source);
        let (start, at) = start_out(self.start);
        GroupInfoOut {
            group: &self.group,
            stream,
            filter,
            start,
            at,
            ack_wait_ms: self.settings.ack_wait_ms,
            max_deliveries: self.settings.max_deliveries,
            max_in_flight: self.settings.max_in_flight,
            strategy: self.settings.strategy.as_str(),
            floor: self.floor,
            cursor: self.cursor,
            head: self.head,
            outstanding: self.outstanding,
            in_flight: self.in_flight,
            waiting: self.waiting,
            consumers: self.consumers,
            oldest_in_flight_ms: self.oldest_in_flight_ms,
            parked: self.parked,
            delivered: self.delivered,
            acked: self.acked,
            skipped: self.skipped,
            failures: self.failures,
            parked_total: self.parked_total,
        }
    }

    pub(crate) fn from_wire(w: GroupInfoIn, op: Opcode) -> Result<GroupInfo, Error> {
        Ok(GroupInfo {
            group: w.group,
            source: source_in(op, w.stream, w.filter)?,
            start: start_in(op, &w.start, w.at)?,
            settings: settings_in(
                op,
                w.ack_wait_ms,
                w.max_deliveries,
                w.max_in_flight,
                &w.strategy,
            )?,
            floor: w.floor,
            cursor: w.cursor,
            head: w.head,
            outstanding: w.outstanding,
            in_flight: w.in_flight,
            waiting: w.waiting,
            consumers: w.consumers,
            oldest_in_flight_ms: w.oldest_in_flight_ms,
            parked: w.parked,
            delivered: w.delivered,
            acked: w.acked,
            skipped: w.skipped,
            failures: w.failures,
            parked_total: w.parked_total,
        })
    }
}

#[derive(Serialize)]
pub(crate) struct ListGroupsOkOut<'a> {
    pub(crate) groups: Vec<GroupInfoOut<'a>>,
}

#[derive(Deserialize)]
pub(crate) struct ListGroupsOkIn {
    pub(crate) groups: Vec<GroupInfoIn>,
}

const EVENTS: &str = "events";
const ENDED: &str = "ended";

impl GroupPush {
    /// Exact size of the events, and room for the rest.
    pub(crate) fn body_len(&self) -> (usize, usize) {
        match self {
            GroupPush::Events { events, ids, .. } => (
                events.iter().map(recorded_event_wire_len).sum(),
                64 + ids.len() * 14,
            ),
            GroupPush::Ended { message, .. } => (0, 32 + message.len()),
        }
    }

    pub(crate) fn put_body(&self, dst: &mut BytesMut) {
        match self {
            GroupPush::Events {
                events,
                ids,
                deliveries,
            } => {
                mp::put_map_len(dst, 4);
                mp::put_str(dst, "t");
                mp::put_str(dst, EVENTS);
                mp::put_str(dst, "events");
                put_recorded_events(dst, events);
                mp::put_str(dst, "ids");
                mp::put_array_len(dst, ids.len());
                for id in ids {
                    mp::put_uint(dst, *id);
                }
                mp::put_str(dst, "deliveries");
                mp::put_array_len(dst, deliveries.len());
                for d in deliveries {
                    mp::put_uint(dst, u64::from(*d));
                }
            }
            GroupPush::Ended { code, message } => {
                mp::put_map_len(dst, 3);
                mp::put_str(dst, "t");
                mp::put_str(dst, ENDED);
                mp::put_str(dst, "code");
                mp::put_uint(dst, code.as_u16().into());
                mp::put_str(dst, "message");
                mp::put_str(dst, message);
            }
        }
    }

    pub(crate) fn read_body(body: &Bytes) -> Result<GroupPush, Error> {
        let op = Opcode::JoinGroup;
        let (mut tag, mut events, mut ids, mut deliveries, mut code, mut message) =
            (None, None, None, None, None, None);
        read_map(body, op, |key, r| {
            match key {
                "t" => tag = Some(r.str()?),
                "events" => events = Some(read_recorded_events(r, body)?),
                "ids" => {
                    let n = r.array_len()?;
                    let mut v = Vec::with_capacity(n.min(r.remaining()));
                    for _ in 0..n {
                        v.push(r.uint()?);
                    }
                    ids = Some(v);
                }
                "deliveries" => {
                    let n = r.array_len()?;
                    let mut v = Vec::with_capacity(n.min(r.remaining()));
                    for _ in 0..n {
                        v.push(
                            u32::try_from(r.uint()?)
                                .map_err(|_| "a delivery count out of range")?,
                        );
                    }
                    deliveries = Some(v);
                }
                "code" => {
                    let c = u16::try_from(r.uint()?).map_err(|_| "error code out of range")?;
                    code = Some(ErrorCode::from_u16(c));
                }
                "message" => message = Some(r.str()?),
                _ => r.skip()?,
            }
            Ok(())
        })?;
        match required(tag, op, "t")? {
            EVENTS => {
                let events = required(events, op, "events")?;
                let ids = required(ids, op, "ids")?;
                let deliveries = required(deliveries, op, "deliveries")?;
                if ids.len() != events.len() || deliveries.len() != events.len() {
                    return Err(malformed(op, "one id and one delivery count per event"));
                }
                Ok(GroupPush::Events {
                    events,
                    ids,
                    deliveries,
                })
            }
            ENDED => Ok(GroupPush::Ended {
                code: required(code, op, "code")?,
                message: message.unwrap_or_default().to_owned(),
            }),
            other => Err(Error::UnknownPushType {
                tag: other.to_owned(),
            }),
        }
    }
}
