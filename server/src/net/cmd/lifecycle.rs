//! `SetMetadata`, `GetMetadata`, `Truncate` and `DeleteStream`: a stream's
//! lifecycle (PROTOCOL.md §5.10).
//!
//! The three writes are events of the metadata stream `$$stream`, which the
//! engine's writer resolves against the stream's head and commits like an
//! append; each is answered once durable, and takes effect on every read
//! path (stream reads, the global log, subscriptions) by then.
//! `GetMetadata` reads the engine's published state, in memory.
//!
//! Lifecycle operations are rare, so on a single server the connection
//! awaits each write in place instead of through `in_flight` as appends
//! do. Order is kept: the connection's earlier appends are already queued
//! to the writer, so they commit first, and its later requests wait until
//! the operation is durable (as they wait behind a read). The earlier
//! appends' replies wait too, which costs nothing the client can see but
//! their latency.
//!
//! On a cluster node the operation is proposed in place (so it takes its
//! place in the replicated log after the connection's earlier appends and
//! before its later ones), and its outcome is awaited in the connection's
//! `jobs`: without a quorum it may take up to 30 s, and the connection
//! goes on serving meanwhile. A read sent before its reply may not see it
//! yet.

use logbook_consensus::LifecycleChange;
use logbook_protocol::lifecycle::meta_target;
use logbook_protocol::{
    DeleteStream, ErrorCode, ErrorReply, ExpectedVersion, GetMetadata, LifecycleOk, Opcode,
    Response, SetMetadata, StreamName, Text, Truncate,
};
use logbook_storage::LifecycleWritten;

use crate::net::connection::{Connection, with_ok};
use crate::net::errors::append_error;

impl Connection {
    /// Sets a stream's metadata if its metadata stream is at the expected
    /// version.
    pub(in crate::net) async fn set_metadata(&mut self, corr_id: u32, m: SetMetadata) {
        let opcode = Opcode::SetMetadata;
        let Some(stream) = self.lifecycle_stream(opcode, corr_id, m.stream) else {
            return;
        };
        if self.shared.config.cluster.is_some() {
            // A refusal of the metadata stream's expected version names
            // that stream, as on a single server.
            let meta = logbook_storage::Store::metadata_stream(&stream)
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            let replicated = Replicated {
                opcode,
                corr_id,
                meta_expected: m.expected,
                change: LifecycleChange::SetMetadata {
                    metadata: m.metadata.to_json(),
                },
                refused: (meta, m.expected),
                ok: Response::SetMetadataOk,
                audit: None,
            };
            return self.lifecycle_replicated(stream, replicated).await;
        }
        let r = self
            .shared
            .store
            .set_metadata(&stream, m.expected, m.metadata)
            .await
            .map_err(|e| append_error(&e));
        self.reply_lifecycle(opcode, corr_id, r, Response::SetMetadataOk);
    }

    /// Answers with a stream's lifecycle state, if it has one.
    pub(in crate::net) fn get_metadata(&self, corr_id: u32, g: GetMetadata) {
        let opcode = Opcode::GetMetadata;
        let Some(stream) = self.lifecycle_stream(opcode, corr_id, g.stream) else {
            return;
        };
        let state = self.shared.store.stream_lifecycle(stream.as_str());
        self.send(
            corr_id,
            opcode,
            &Response::GetMetadataOk(state.map(lifecycle_ok)),
        );
    }

    /// Removes a stream's events below a version from every read.
    pub(in crate::net) async fn truncate(&mut self, corr_id: u32, t: Truncate) {
        let opcode = Opcode::Truncate;
        let Some(stream) = self.lifecycle_stream(opcode, corr_id, t.stream) else {
            return;
        };
        let audit = serde_json::json!({ "stream": stream.as_str(), "before": t.before.0 });
        if self.shared.config.cluster.is_some() {
            let any = ExpectedVersion::Any;
            let replicated = Replicated {
                opcode,
                corr_id,
                meta_expected: any,
                change: LifecycleChange::Truncate { before: t.before.0 },
                refused: (stream.as_str().to_owned(), any),
                ok: Response::TruncateOk,
                audit: Some(("truncate", audit)),
            };
            return self.lifecycle_replicated(stream, replicated).await;
        }
        let r = self
            .shared
            .store
            .truncate(&stream, t.before)
            .await
            .map_err(|e| append_error(&e));
        self.audit("truncate", with_ok(audit, r.is_ok()));
        self.reply_lifecycle(opcode, corr_id, r, Response::TruncateOk);
    }

    /// Deletes a stream, softly or for ever, if it is at the expected
    /// version.
    pub(in crate::net) async fn delete_stream(&mut self, corr_id: u32, d: DeleteStream) {
        let opcode = Opcode::DeleteStream;
        let Some(stream) = self.lifecycle_stream(opcode, corr_id, d.stream) else {
            return;
        };
        let hard = d.mode == logbook_protocol::lifecycle::Deletion::Hard;
        let audit = serde_json::json!({ "stream": stream.as_str(), "hard": hard });
        if self.shared.config.cluster.is_some() {
            let replicated = Replicated {
                opcode,
                corr_id,
                meta_expected: ExpectedVersion::Any,
                change: LifecycleChange::Delete {
                    hard,
                    expected: d.expected,
                },
                refused: (stream.as_str().to_owned(), d.expected),
                ok: Response::DeleteStreamOk,
                audit: Some(("delete", audit)),
            };
            return self.lifecycle_replicated(stream, replicated).await;
        }
        let r = self
            .shared
            .store
            .delete_stream(&stream, d.expected, d.mode)
            .await
            .map_err(|e| append_error(&e));
        self.audit("delete", with_ok(audit, r.is_ok()));
        self.reply_lifecycle(opcode, corr_id, r, Response::DeleteStreamOk);
    }

    /// The stream a lifecycle request (or an `Erase`) names, validated as
    /// an append's is; `None` once the request is answered with
    /// `BadRequest`. A metadata stream (`$$S`) has no lifecycle of its own:
    /// the engine would refuse the writes, and refusing `GetMetadata` too
    /// keeps the four alike.
    pub(super) fn lifecycle_stream(
        &self,
        opcode: Opcode,
        corr_id: u32,
        stream: Text,
    ) -> Option<StreamName> {
        let refused = match StreamName::new(stream) {
            Ok(s) if crate::net::groups::is_reserved(s.as_str()) => {
                format!("stream {s} is the server's own: use the group or user requests")
            }
            Ok(s) if meta_target(s.as_str()).is_none() => return Some(s),
            Ok(s) => format!(
                "stream {s} is the metadata stream of {}: name the stream itself",
                meta_target(s.as_str()).unwrap_or_default()
            ),
            Err(e) => e.to_string(),
        };
        self.send_error(
            opcode,
            corr_id,
            ErrorReply::new(ErrorCode::BadRequest, refused),
        );
        None
    }

    /// A cluster node's lifecycle write: proposed to the replicated log
    /// with an event id and a time the leader chose (so every replica
    /// writes the same event), then its outcome awaited in `jobs` and the
    /// state it left read back from this node's store, which applied it
    /// before the outcome came.
    async fn lifecycle_replicated(&mut self, stream: StreamName, r: Replicated) {
        use logbook_consensus::Command;
        let Some(node) = self.shared.config.cluster.clone() else {
            return;
        };
        let command = Command::Lifecycle {
            stream: stream.as_str().to_owned(),
            meta_expected: r.meta_expected,
            change: r.change,
            id: logbook_protocol::EventId::new_v7().0,
            timestamp_us: self.shared.store.now_us(),
        };
        let pending = match crate::net::writes::propose(&node, command).await {
            Ok(p) => p,
            Err(reply) => {
                if let Some((event, fields)) = r.audit {
                    self.audit(event, with_ok(fields, false));
                }
                return self.send_error(r.opcode, r.corr_id, reply);
            }
        };
        let shared = std::sync::Arc::clone(&self.shared);
        let (refused, ok) = (r.refused, r.ok);
        let written = async move {
            let result = crate::net::writes::result_of(&refused.0, refused.1, pending.await?)?;
            let written = shared
                .store
                .lifecycle_written(&stream, &result)
                .map_err(|e| Box::new(append_error(&e)))?;
            Ok(ok(lifecycle_ok(written)))
        };
        self.spawn_job(r.opcode, r.corr_id, r.audit, written);
    }

    /// Answers a lifecycle write with its result: `ok` builds the success
    /// reply of the request's opcode.
    fn reply_lifecycle(
        &self,
        opcode: Opcode,
        corr_id: u32,
        r: Result<LifecycleWritten, ErrorReply>,
        ok: fn(LifecycleOk) -> Response,
    ) {
        match r {
            Ok(w) => self.send(corr_id, opcode, &ok(lifecycle_ok(w))),
            Err(e) => self.send_error(opcode, corr_id, e),
        }
    }
}

/// A lifecycle write on a cluster node, as `lifecycle_replicated` proposes
/// it.
struct Replicated {
    opcode: Opcode,
    corr_id: u32,
    /// The metadata stream's expected version.
    meta_expected: ExpectedVersion,
    change: LifecycleChange,
    /// The stream and expected version a `WrongExpectedVersion` names.
    refused: (String, ExpectedVersion),
    /// The success reply of the request's opcode.
    ok: fn(LifecycleOk) -> Response,
    /// The audit line (its event and fields; `ok` and the user are added).
    audit: Option<(&'static str, serde_json::Value)>,
}

/// The engine's record of a lifecycle operation as its wire reply.
fn lifecycle_ok(w: LifecycleWritten) -> LifecycleOk {
    LifecycleOk {
        position: w.position,
        meta_version: w.meta_version,
        state: w.state,
    }
}
