//! `Append`: the batch is queued to the engine's group-commit writer in
//! arrival order, and its reply is sent when the connection's in-flight
//! set sees it durable (or refused).

use logbook_protocol::{Append, AppendResult, ErrorCode, ErrorReply, Opcode, Response, StreamName};

use crate::net::connection::{Connection, InFlight};
use crate::net::errors::append_error;
use crate::net::limits;
use logbook_storage::AppendError;

impl Connection {
    /// Validates the stream name and queues the batch; the result is
    /// awaited in `in_flight`.
    pub(in crate::net) async fn append(&mut self, corr_id: u32, a: Append) {
        let opcode = Opcode::Append;
        let stream = match StreamName::new(a.stream) {
            Ok(s) => s,
            Err(e) => {
                self.send_error(
                    opcode,
                    corr_id,
                    ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
                );
                return;
            }
        };
        // The engine limits the record a batch becomes; the protocol limits
        // what a client can count (PROTOCOL.md §5.1), which `limits` keeps
        // within the record limit.
        let max = limits::max_append_bytes(self.shared.store.config());
        let bytes = limits::append_bytes(&a.events);
        if bytes > max {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::TooLarge,
                    format!("the append holds {bytes} bytes of event types, metadata and data; the limit is {max}"),
                )
                .with_limit(max),
            );
            return;
        }
        // The ids' lookup in the index tables may read the disk (an id
        // file's summary the first time, a block when an id may be there):
        // from the page cache here, else in the reader pool, never waiting
        // on this network thread. This connection waits meanwhile (in
        // order), the others do not.
        // (Its wait for the pool holds this connection's other branches:
        // replies to its earlier appends wait behind it.)
        let store = &self.shared.store;
        let ids: Vec<_> = a.events.iter().map(|e| e.id).collect();
        let checked = match logbook_storage::fs::without_waiting(|| store.check_ids(&ids)) {
            Some(checked) => checked,
            None => {
                let store = store.clone();
                self.shared
                    .reads
                    .blocking(move || store.check_ids(&ids))
                    .await
            }
        };
        let checked = match checked {
            Ok(checked) => checked,
            Err(e) => return self.reply_append(corr_id, Err(e)),
        };
        // Queue in arrival order; only the wait for the result is
        // concurrent. A full writer queue pauses this connection.
        match self
            .shared
            .store
            .submit_checked(&stream, a.expected, a.events, checked)
            .await
        {
            Ok(pending) => self.in_flight.push(InFlight { corr_id, pending }),
            Err(e) => self.reply_append(corr_id, Err(e)),
        }
    }

    /// Answers an append with its result.
    pub(in crate::net) fn reply_append(&self, corr_id: u32, r: Result<AppendResult, AppendError>) {
        match r {
            Ok(res) => self.send(corr_id, Opcode::Append, &Response::AppendOk(res)),
            Err(e) => self.send_error(Opcode::Append, corr_id, append_error(&e)),
        }
    }
}
