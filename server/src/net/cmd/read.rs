//! `ReadStream` and `ReadAll`: each takes room on the outbox budget for
//! its page first (a smaller page when the server is short of room; it
//! waits only if there is none), reads in the reader pool (never on the
//! runtime's threads: history may be cold), and is cut to the server's
//! limits and to one frame.

use logbook_protocol::{
    Direction, ErrorCode, ErrorReply, LogPosition, Opcode, ReadAll, ReadAllOk, ReadStream,
    ReadStreamOk, Response,
};

use crate::net::connection::Connection;
use crate::net::errors::read_error;
use crate::net::outbox::{Covered, Room};
use logbook_protocol::RecordedEvent;
use logbook_storage::{ReadError, ReadLimit, Store};

/// How long a read waits for its `min_position`.
const MIN_POSITION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Connection {
    /// Waits until the log holds every event before `min` (a cluster
    /// follower applying what the leader committed), at most
    /// [`MIN_POSITION_WAIT`]; past it, answers `ServerBusy` and says
    /// `false`. This connection's other requests wait meanwhile, as they
    /// do for any read.
    async fn reached(&self, opcode: Opcode, corr_id: u32, min: Option<LogPosition>) -> bool {
        let Some(min) = min else { return true };
        let mut head = self.shared.store.watch_head();
        let waited = tokio::time::timeout(MIN_POSITION_WAIT, head.wait_for(|h| *h >= min.0)).await;
        match waited {
            Ok(Ok(_)) => true,
            _ => {
                self.send_error(
                    opcode,
                    corr_id,
                    ErrorReply::new(
                        ErrorCode::ServerBusy,
                        format!(
                            "this server's log has {} events and did not reach position {} within {MIN_POSITION_WAIT:?}",
                            self.shared.store.head().0,
                            min.0
                        ),
                    ),
                );
                false
            }
        }
    }

    /// Reads a stream; a stream with no events is `StreamNotFound`. With
    /// `max_count` 0 the engine reads no event but still says where the
    /// read would start (`next`) and where the stream ends.
    pub(in crate::net) async fn read_stream(&self, corr_id: u32, r: ReadStream) {
        let opcode = Opcode::ReadStream;
        if let Err(e) = logbook_protocol::validate_stream_name(&r.stream) {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
            );
            return;
        }
        if !self.reached(opcode, corr_id, r.min_position).await {
            return;
        }
        let (stream, from, direction) = (r.stream.clone(), r.from, r.direction);
        let Some((read, _room)) = self
            .read_in_room(
                r.max_count,
                move |store, max| store.read_stream(&stream, from, direction, max),
                |slice| (&mut slice.events, &mut slice.next, |e| e.version),
            )
            .await
        else {
            return;
        };
        match read {
            Ok(slice) if slice.last_version.is_none() => self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::StreamNotFound,
                    format!("stream {} has no events", &*r.stream),
                )
                .with_stream(r.stream.clone()),
            ),
            Ok(mut slice) => {
                // Big events: send what fits, and say where to go on.
                if let Some(left) = self.shared.fit(&mut slice.events) {
                    slice.next = Some(left.version);
                }
                self.shared.count_read(slice.events.len());
                self.send(
                    corr_id,
                    opcode,
                    &Response::ReadStreamOk(ReadStreamOk {
                        events: slice.events,
                        last_version: slice.last_version,
                        next: slice.next,
                    }),
                )
            }
            Err(e) => self.send_error(opcode, corr_id, read_error(&e)),
        }
    }

    /// Reads the global log.
    pub(in crate::net) async fn read_all(&self, corr_id: u32, r: ReadAll) {
        let opcode = Opcode::ReadAll;
        if !self.reached(opcode, corr_id, r.min_position).await {
            return;
        }
        if r.max_count == 0 {
            self.send(corr_id, opcode, &Response::ReadAllOk(self.empty_page(r)));
            return;
        }
        let (from, direction) = (r.from, r.direction);
        let Some((read, _room)) = self
            .read_in_room(
                r.max_count,
                move |store, max| store.read_all(from, direction, max),
                |slice| (&mut slice.events, &mut slice.next, |e| e.position),
            )
            .await
        else {
            return;
        };
        match read {
            Ok(mut slice) => {
                if let Some(left) = self.shared.fit(&mut slice.events) {
                    slice.next = Some(left.position);
                }
                // A user who may not read every stream sees only the
                // events of those it may; `next` still goes past the rest
                // (a page may then be empty and name a `next`).
                if !self.access.reads_everything() {
                    let a = &self.access;
                    slice
                        .events
                        .retain(|e| a.can(crate::auth::Right::Read, &e.stream));
                }
                self.shared.count_read(slice.events.len());
                self.send(
                    corr_id,
                    opcode,
                    &Response::ReadAllOk(ReadAllOk {
                        events: slice.events,
                        head: slice.head,
                        next: slice.next,
                    }),
                )
            }
            Err(e) => self.send_error(opcode, corr_id, read_error(&e)),
        }
    }

    /// Runs `read` (in the reader pool) within room on the outbox budget
    /// for its page, and returns its result with the room, which the
    /// caller keeps until the reply is sent. A read returns at least one
    /// event whatever its byte budget: if the result passes the room, the
    /// room grows, or the events past it are left for the next page
    /// (`next` says where: `parts` gives the page's events, its `next`,
    /// and how an event names where to go on), or, if even the first
    /// event does not fit, the result is dropped and read again once the
    /// room has grown to its size. `None` if the connection broke or the
    /// server is shutting down meanwhile.
    async fn read_in_room<S, P, F>(
        &self,
        max_count: u32,
        read: F,
        parts: impl Fn(
            &mut S,
        ) -> (
            &mut Vec<RecordedEvent>,
            &mut Option<P>,
            fn(&RecordedEvent) -> P,
        ),
    ) -> Option<(Result<S, ReadError>, Room)>
    where
        S: Send + 'static,
        F: Fn(&Store, ReadLimit) -> Result<S, ReadError> + Clone + Send + 'static,
    {
        let mut room = self.reply_room(self.shared.read_page_bytes()).await?;
        loop {
            let max = self.shared.read_limit(max_count, room.bytes());
            let (store, read) = (self.shared.store.clone(), read.clone());
            let mut result = self.shared.reads.run(move || read(&store, max)).await;
            if let Ok(slice) = &mut result {
                let (events, next, at) = parts(slice);
                match room.cover(events) {
                    Covered::Send(Some(left)) => *next = Some(at(&left)),
                    Covered::Send(None) => {}
                    Covered::Grow(need) => {
                        drop(result);
                        if !room.wait_grow(need).await {
                            return None;
                        }
                        continue;
                    }
                }
            }
            return Some((result, room));
        }
    }

    /// A ReadAll of no events (PROTOCOL.md §5.5): the head, and in `next`
    /// the position the read would have started at, if there is an event
    /// there.
    fn empty_page(&self, r: ReadAll) -> ReadAllOk {
        let head = self.shared.store.head();
        let last = head.0.checked_sub(1);
        let next = match r.direction {
            Direction::Forward => Some(r.from.unwrap_or(LogPosition(0))).filter(|p| p.0 < head.0),
            Direction::Backward => last.map(|l| LogPosition(r.from.map_or(l, |p| p.0.min(l)))),
        };
        ReadAllOk {
            events: Vec::new(),
            head,
            next,
        }
    }
}
