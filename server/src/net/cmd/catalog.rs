//! `ListStreams`: a page of the stream catalog (PROTOCOL.md §5.12), built
//! in the reader pool (never on the runtime's threads: each listed stream
//! costs an index lookup, which may be cold, and the names come from the
//! index tables) within room on the outbox budget for the page.

use logbook_protocol::{
    ErrorCode, ErrorReply, ListStreams, ListStreamsOk, MAX_LIST_STREAMS, MAX_STREAM_NAME_BYTES,
    Opcode, Response, StreamInfo,
};
use logbook_storage::{ReadError, Store};

use crate::auth::{Access, Right};

use crate::net::connection::Connection;
use crate::net::errors::read_error;

/// About how many bytes of names and metadata one page holds at most.
const PAGE_BYTES: usize = 1 << 20;

impl Connection {
    /// Lists streams by prefix, a page at a time.
    pub(in crate::net) async fn list_streams(&self, corr_id: u32, l: ListStreams) {
        let opcode = Opcode::ListStreams;
        let bad = |why: &str| ErrorReply::new(ErrorCode::BadRequest, why.to_owned());
        if l.limit == 0 {
            self.send_error(opcode, corr_id, bad("limit must be at least 1"));
            return;
        }
        if l.prefix.len() > MAX_STREAM_NAME_BYTES
            || l.after
                .as_ref()
                .is_some_and(|a| a.len() > MAX_STREAM_NAME_BYTES)
        {
            self.send_error(
                opcode,
                corr_id,
                bad("prefix and after are at most the length of a stream name"),
            );
            return;
        }
        let Some(room) = self.reply_room(PAGE_BYTES).await else {
            return;
        };
        let limit = l.limit.min(MAX_LIST_STREAMS) as usize;
        let bytes = room.bytes().min(PAGE_BYTES);
        let store = self.shared.store.clone();
        let (prefix, after) = (l.prefix.to_string(), l.after.map(|a| a.to_string()));
        let page = if self.access.reads_everything() {
            self.shared
                .reads
                .blocking(move || store.list_streams(&prefix, after.as_deref(), limit, bytes))
                .await
                .map(|p| (p.streams, p.next))
        } else {
            let access = self.access.clone();
            self.shared
                .reads
                .blocking(move || readable_page(&store, &access, &prefix, after, limit, bytes))
                .await
        };
        match page {
            Ok((streams, next)) => self.send(
                corr_id,
                opcode,
                &Response::ListStreamsOk(ListStreamsOk { streams, next }),
            ),
            Err(e) => self.send_error(opcode, corr_id, read_error(&e)),
        }
        drop(room);
    }
}

/// A name after (nearly) every stream name starting with `$`: the names
/// after it are scanned one by one like any other (only a jump from below
/// it is taken, so a scan always moves on).
const PAST_SYSTEM: &str =
    "$\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}\u{10FFFF}";

/// A catalog page of the streams `access` may read, for a user who may not
/// read them all: the names under the user's readable prefixes (within
/// the tenant's namespace), read prefix by prefix, each checked, and
/// `next` always a name the page holds (the store's own cursor may name a
/// stream the user must not learn of). Stops early, with a `next`, only
/// once the page holds a stream: a user who may read few of many names
/// still gets them all, in as many pages as needed.
fn readable_page(
    store: &Store,
    access: &Access,
    prefix: &str,
    after: Option<String>,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<StreamInfo>, Option<String>), ReadError> {
    // The ranges to read: each readable prefix, narrowed to the request's.
    let readable = access.read_prefixes();
    let ranges = crate::auth::minimal_prefixes(
        readable
            .iter()
            .filter_map(|p| {
                if p.starts_with(prefix) {
                    Some(p.clone())
                } else if prefix.starts_with(p.as_str()) {
                    Some(prefix.to_owned())
                } else {
                    None
                }
            })
            .collect(),
    );
    // Without a grant on system streams, the `$` block under a `""` range
    // is jumped over, not scanned name by name.
    let reads_system = readable.iter().any(|p| p.starts_with('$'));
    let mut out: Vec<StreamInfo> = Vec::new();
    let mut bytes = 0usize;
    for range in ranges {
        // Where to start in this range: after `after`, if it falls in it;
        // a range wholly before `after` is passed.
        let mut cursor = match &after {
            Some(a) if a.starts_with(range.as_str()) => Some(a.clone()),
            Some(a) if a.as_str() > range.as_str() => continue,
            _ => None,
        };
        loop {
            let want = limit - out.len();
            // The store's page within what is left of the byte budget (it
            // returns one entry at least).
            let left = max_bytes.saturating_sub(bytes).max(1);
            let page = store.list_streams(&range, cursor.as_deref(), want, left)?;
            if page.streams.is_empty() {
                break;
            }
            let mut jump = false;
            for info in page.streams {
                if access.can(Right::Read, &info.stream) {
                    let size = info.reply_bytes();
                    if bytes.saturating_add(size) > max_bytes && !out.is_empty() {
                        let next = out.last().map(|i| i.stream.clone());
                        return Ok((out, next));
                    }
                    bytes += size;
                    out.push(info);
                } else if !reads_system
                    && info.stream.starts_with('$')
                    && info.stream.as_str() < PAST_SYSTEM
                {
                    jump = true;
                    break;
                }
            }
            if out.len() >= limit {
                let next = out.last().map(|i| i.stream.clone());
                return Ok((out, next));
            }
            if jump {
                // Past every name starting with `$`.
                cursor = Some(PAST_SYSTEM.to_owned());
                continue;
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
    }
    Ok((out, None))
}
