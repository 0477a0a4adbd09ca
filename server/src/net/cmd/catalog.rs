//! `ListStreams`: a page of the stream catalog (PROTOCOL.md §5.12), built
//! in the reader pool (never on the runtime's threads: each listed stream
//! costs an index lookup, which may be cold, and the names come from the
//! index tables) within room on the outbox budget for the page.

use logbook_protocol::{
    ErrorCode, ErrorReply, ListStreams, ListStreamsOk, MAX_LIST_STREAMS, MAX_STREAM_NAME_BYTES,
    Opcode, Response,
};

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
        let (mut prefix, after) = (l.prefix.to_string(), l.after.map(|a| a.to_string()));
        // A tenant's user lists inside its namespace only.
        if let Some(ns) = self.access.namespace() {
            if ns.starts_with(prefix.as_str()) {
                prefix = ns.to_owned();
            } else if !prefix.starts_with(ns) {
                let empty = ListStreamsOk {
                    streams: Vec::new(),
                    next: None,
                };
                self.send(corr_id, opcode, &Response::ListStreamsOk(empty));
                return;
            }
        }
        let page = self
            .shared
            .reads
            .blocking(move || store.list_streams(&prefix, after.as_deref(), limit, bytes))
            .await;
        match page {
            Ok(mut p) => {
                // Only the streams the user may read are listed; `next`
                // still goes past the others.
                if !self.access.reads_everything() {
                    let a = &self.access;
                    p.streams
                        .retain(|s| a.can(crate::auth::Right::Read, &s.stream));
                }
                self.send(
                    corr_id,
                    opcode,
                    &Response::ListStreamsOk(ListStreamsOk {
                        streams: p.streams,
                        next: p.next,
                    }),
                )
            }
            Err(e) => self.send_error(opcode, corr_id, read_error(&e)),
        }
        drop(room);
    }
}
