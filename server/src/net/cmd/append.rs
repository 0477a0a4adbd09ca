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
        // Queue in arrival order; only the wait for the result is
        // concurrent. A full writer queue pauses this connection.
        match self
            .shared
            .store
            .submit(&stream, a.expected, a.events)
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
