//! `Append`: the batch is queued to the engine's group-commit writer in
//! arrival order, and its reply is sent when the connection's in-flight
//! set sees it durable (or refused).

use logbook_protocol::{Append, AppendResult, ErrorCode, ErrorReply, Opcode, Response, StreamName};

use crate::net::connection::{Connection, InFlight, Pending};
use crate::net::errors::append_error;
use crate::net::limits;
use crate::otlp::{Attr, Started, TraceParent};

/// A traced append's span while it runs: its start, and what its
/// attributes name.
#[derive(Debug)]
pub(in crate::net) struct AppendTrace {
    started: Started,
    stream: String,
    events: usize,
}

impl Connection {
    /// Validates the stream name and queues the batch; the result is
    /// awaited in `in_flight`.
    pub(in crate::net) async fn append(&mut self, corr_id: u32, a: Append) {
        let opcode = Opcode::Append;
        let stream = match StreamName::new(a.stream) {
            Ok(s) if crate::net::groups::is_reserved(s.as_str()) => {
                self.send_error(
                    opcode,
                    corr_id,
                    ErrorReply::new(
                        ErrorCode::BadRequest,
                        format!("stream {s} is the server's own (consumer groups, users)"),
                    ),
                );
                return;
            }
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
        // The caller's trace context (the client's metadata convention,
        // `"$traceparent"` in the first event's metadata), looked for only
        // when spans are exported or debug logging is on: nothing is parsed
        // otherwise.
        let debug = tracing::enabled!(tracing::Level::DEBUG);
        let traceparent = if self.shared.tracer.is_some() || debug {
            a.events.first().and_then(|e| traceparent_of(&e.metadata))
        } else {
            None
        };
        let trace = traceparent
            .filter(|_| self.shared.tracer.is_some())
            .and_then(TraceParent::parse)
            .filter(TraceParent::sampled)
            .map(|parent| {
                Box::new(AppendTrace {
                    started: Started::now(parent),
                    stream: stream.as_str().to_owned(),
                    events: a.events.len(),
                })
            });
        if debug {
            // In the server's own log too, so that an append can be found
            // by the caller's trace id without a collector.
            tracing::debug!(
                stream = stream.as_str(),
                events = a.events.len(),
                traceparent = traceparent.unwrap_or(""),
                "append queued"
            );
        }
        if let Some(node) = &self.shared.config.cluster {
            return self
                .append_replicated(node.clone(), corr_id, stream, a.expected, a.events, trace)
                .await;
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
            Err(e) => return self.reply_append(corr_id, Err(append_error(&e)), trace),
        };
        // Queue in arrival order; only the wait for the result is
        // concurrent. A full writer queue pauses this connection.
        match self
            .shared
            .store
            .submit_checked(&stream, a.expected, a.events, checked)
            .await
        {
            Ok(pending) => self.in_flight.push(InFlight {
                corr_id,
                pending: Pending::Local(pending),
                trace,
            }),
            Err(e) => self.reply_append(corr_id, Err(append_error(&e)), trace),
        }
    }

    /// A cluster node's append: proposed to the replicated log in arrival
    /// order (so a connection's appends commit in the order sent), its
    /// outcome awaited in `in_flight`. Only the leader proposes; a follower
    /// answers `NotLeader` with the leader's address.
    async fn append_replicated(
        &mut self,
        node: std::sync::Arc<logbook_consensus::node::Node>,
        corr_id: u32,
        stream: StreamName,
        expected: logbook_protocol::ExpectedVersion,
        events: Vec<logbook_protocol::NewEvent>,
        trace: Option<Box<AppendTrace>>,
    ) {
        use logbook_consensus::{Command, EventData};
        let name = stream.as_str().to_owned();
        let command = Command::Append {
            stream: name.clone(),
            expected,
            events: events.into_iter().map(EventData::from).collect(),
            timestamp_us: self.shared.store.now_us(),
        };
        let pending = match crate::net::writes::propose(&node, command).await {
            Ok(p) => p,
            Err(refused) => return self.reply_append(corr_id, Err(refused), trace),
        };
        let pending = async move {
            crate::net::writes::result_of(&name, expected, pending.await?).map_err(|e| *e)
        };
        self.in_flight.push(InFlight {
            corr_id,
            pending: Pending::Replicated(Box::pin(pending)),
            trace,
        });
    }

    /// Answers an append with its result, and ends its span if traced.
    pub(in crate::net) fn reply_append(
        &self,
        corr_id: u32,
        r: Result<AppendResult, ErrorReply>,
        trace: Option<Box<AppendTrace>>,
    ) {
        let error = match r {
            Ok(res) => {
                self.send(corr_id, Opcode::Append, &Response::AppendOk(res));
                Ok(res)
            }
            Err(mut reply) => {
                // An id stored in a stream the user may not read: the
                // refusal must not say where (nor that stream's name).
                if reply.code == ErrorCode::DuplicateEventId
                    && reply
                        .stream
                        .as_ref()
                        .is_some_and(|s| !self.access.can(crate::auth::Right::Read, s))
                {
                    let hidden = ErrorReply::new(
                        ErrorCode::DuplicateEventId,
                        "an event id of the append is already stored, in a stream this user may not read",
                    );
                    reply = match reply.event_id {
                        Some(id) => hidden.with_event_id(id, None),
                        None => hidden,
                    };
                }
                let code = reply.code;
                self.send_error(Opcode::Append, corr_id, reply);
                Err(code)
            }
        };
        if let (Some(t), Some(tracer)) = (trace, &self.shared.tracer) {
            let mut attributes = vec![
                ("logbook.stream", Attr::Str(t.stream)),
                ("logbook.events", Attr::Int(t.events as i64)),
            ];
            let error = match error {
                Ok(res) => {
                    attributes.push((
                        "logbook.first_position",
                        Attr::Int(res.first_position.0 as i64),
                    ));
                    attributes.push(("logbook.last_version", Attr::Int(res.last_version.0 as i64)));
                    None
                }
                Err(code) => {
                    let code = format!("{code:?}");
                    attributes.push(("error.type", Attr::Str(code.clone())));
                    Some(code)
                }
            };
            tracer.record(t.started.finish("logbook.append", attributes, error));
        }
    }
}

/// The W3C trace context in an event's metadata (`"$traceparent":"00-..."`
/// in a JSON object, as the client's event layer writes it), if there is a
/// well-formed one.
fn traceparent_of(metadata: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"$traceparent\"";
    let at = metadata.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    // `:` and the opening quote, with the whitespace JSON allows around.
    let rest = metadata.get(at..)?;
    let skip_ws = |b: &[u8]| {
        b.iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(b.len())
    };
    let rest = rest.get(skip_ws(rest)..)?.strip_prefix(b":")?;
    let rest = rest.get(skip_ws(rest)..)?.strip_prefix(b"\"")?;
    // The value, up to its closing quote (a traceparent has no escapes).
    let end = rest.iter().take(256).position(|&c| c == b'"')?;
    let value = std::str::from_utf8(rest.get(..end)?).ok()?;
    crate::otlp::TraceParent::parse(value).map(|_| value)
}

#[cfg(test)]
mod tests {
    use super::traceparent_of;

    #[test]
    fn the_trace_context_is_found_or_not_invented() {
        let t = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let meta = format!("{{\"$schema\":1,\"$traceparent\":\"{t}\",\"k\":2}}");
        assert_eq!(traceparent_of(meta.as_bytes()), Some(t));
        // With the spaces some JSON writers put around the colon.
        let spaced = format!("{{\"$traceparent\" : \"{t}\"}}");
        assert_eq!(traceparent_of(spaced.as_bytes()), Some(t));
        for bad in [
            "{}".to_owned(),
            "{\"$traceparent\":\"00-short\"}".to_owned(),
            format!("{{\"$traceparent\":\"{}\"}}", t.replace('-', "x")),
            // Version 00 is exactly 55 characters.
            format!("{{\"$traceparent\":\"{t}-garbage\"}}"),
            format!("{{\"$traceparent\":\"{t}abc\"}}"),
            // Lower-case hex only.
            format!("{{\"$traceparent\":\"{}\"}}", t.to_uppercase()),
        ] {
            assert_eq!(traceparent_of(bad.as_bytes()), None, "{bad}");
        }
    }
}
