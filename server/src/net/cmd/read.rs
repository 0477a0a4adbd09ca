//! `ReadStream` and `ReadAll`: served by the connection's task itself
//! (reads come from the page cache, so a thread hop would cost more than
//! it saves), cut to the server's limits and to one frame.

use logbook_protocol::{
    ErrorCode, ErrorReply, Opcode, ReadAll, ReadAllOk, ReadStream, ReadStreamOk, Response,
};

use crate::net::connection::Connection;
use crate::net::errors::read_error;

impl Connection {
    /// Reads a stream; a stream with no events is `StreamNotFound`.
    pub(in crate::net) fn read_stream(&self, corr_id: u32, r: ReadStream) {
        let opcode = Opcode::ReadStream;
        if let Err(e) = logbook_protocol::validate_stream_name(&r.stream) {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
            );
            return;
        }
        let max = self.shared.read_limit(r.max_count);
        match self
            .shared
            .store
            .read_stream(&r.stream, r.from, r.direction, max)
        {
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
    pub(in crate::net) fn read_all(&self, corr_id: u32, r: ReadAll) {
        let opcode = Opcode::ReadAll;
        let max = self.shared.read_limit(r.max_count);
        match self.shared.store.read_all(r.from, r.direction, max) {
            Ok(mut slice) => {
                if let Some(left) = self.shared.fit(&mut slice.events) {
                    slice.next = Some(left.position);
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
}
