//! `Scavenge` and `Erase`: giving back the disk that removed events take,
//! and erasing a stream's events from disk for good (PROTOCOL.md §5.11).
//!
//! Both rewrite segment files and may take long (a scavenge of a large
//! log, minutes), so neither runs on the connection task nor on the
//! runtime's threads: the engine's blocking calls run on a blocking thread
//! (`tokio::task::spawn_blocking`), and the connection holds the pending
//! reply in its `jobs` set, as it holds appends in `in_flight`. Meanwhile
//! the connection goes on serving its other requests (a ping, a read, the
//! `Stats` that shows the scavenge's progress); the reply comes when the
//! work is done, in any order with the others. A request sent after one of
//! these is therefore not ordered after it: wait for the reply first (an
//! append to a stream being erased may commit before its tombstone, and
//! is then erased with it).
//!
//! One runs at a time, server-wide (`Shared::maintenance`, the engine's
//! own rule too): a `Scavenge` while another scavenge or an erase runs is
//! refused at once with `ServerBusy`; an `Erase` waits its turn, in an
//! async task rather than on a blocking thread, so that queued erases do
//! not take threads the reader pool needs.
//!
//! If the connection closes first, a job still waiting its turn is
//! dropped; one already running goes on to its end (the engine has no way
//! to stop a rewrite halfway but its shutdown, which stops a scavenge
//! between two segments), and its reply is lost.

use std::sync::Arc;
use std::time::Duration;

use logbook_protocol::{
    Erase, EraseOk, ErrorCode, ErrorReply, Opcode, Response, Scavenge, ScavengeOk,
};
use logbook_storage::EraseReceipt;
use logbook_storage::scavenge::{ScavengeOptions, ScavengeReport};

use crate::net::Shared;
use crate::net::connection::{Connection, Job};
use crate::net::errors::{append_error, storage_error};

impl Connection {
    /// Starts a scavenge on a blocking thread, unless one (or an erase) is
    /// running; its reply is sent when it ends.
    pub(in crate::net) fn scavenge(&mut self, corr_id: u32, s: Scavenge) {
        let opcode = Opcode::Scavenge;
        self.audit(
            "scavenge",
            serde_json::json!({ "max_bytes_per_sec": s.max_bytes_per_sec }),
        );
        let Ok(turn) = Arc::clone(&self.shared.maintenance).try_acquire_owned() else {
            self.send_error(
                opcode,
                corr_id,
                ErrorReply::new(
                    ErrorCode::ServerBusy,
                    "a scavenge or an erase is running (Stats: scavenge_done of scavenge_todo); try again when it ends",
                ),
            );
            return;
        };
        let store = self.shared.store.clone();
        let peer = self.peer;
        tracing::info!(%peer, max_bytes_per_sec = ?s.max_bytes_per_sec, "scavenge started");
        let task = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let options = ScavengeOptions {
                max_bytes_per_sec: s.max_bytes_per_sec,
            };
            match store.scavenge(options) {
                Ok(report) => {
                    tracing::info!(
                        %peer,
                        segments = report.segments_rewritten,
                        events = report.events_removed,
                        reclaimed = report.bytes_before.saturating_sub(report.bytes_after),
                        duration_ms = report.duration.as_millis() as u64,
                        "scavenge done"
                    );
                    Ok(Response::ScavengeOk(scavenge_ok(&report)))
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "scavenge failed");
                    Err(Box::new(storage_error(&e)))
                }
            }
        });
        self.jobs.push(Job {
            corr_id,
            opcode,
            task,
        });
    }

    /// Erases a stream once no scavenge or erase runs, on a blocking
    /// thread; its reply is sent when it ends. The stream's name is
    /// validated as a lifecycle operation's (a `$$` name is `BadRequest`),
    /// and is not written to the server's log (only to the audit log, when
    /// one is kept): it may itself be what is being forgotten.
    pub(in crate::net) async fn erase(&mut self, corr_id: u32, e: Erase) {
        let opcode = Opcode::Erase;
        let Some(stream) = self.lifecycle_stream(opcode, corr_id, e.stream) else {
            return;
        };
        self.audit("erase", serde_json::json!({ "stream": stream.as_str() }));
        if let Some(node) = self.shared.config.cluster.clone() {
            return self.erase_replicated(corr_id, stream, &node).await;
        }
        let maintenance = Arc::clone(&self.shared.maintenance);
        let store = self.shared.store.clone();
        let peer = self.peer;
        let task = tokio::spawn(async move {
            // The semaphore is never closed.
            let turn = maintenance.acquire_owned().await.map_err(|e| {
                Box::new(ErrorReply::new(
                    ErrorCode::Internal,
                    format!("waiting to erase: {e}"),
                ))
            })?;
            let run = tokio::task::spawn_blocking(move || {
                let _turn = turn;
                store.erase(&stream)
            });
            match run.await {
                Ok(Ok(receipt)) => {
                    tracing::info!(
                        %peer,
                        position = receipt.position.0,
                        segments = receipt.segments_rewritten,
                        events = receipt.events_removed,
                        duration_ms = receipt.duration.as_millis() as u64,
                        "stream erased"
                    );
                    Ok(Response::EraseOk(erase_ok(&receipt)))
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "erase failed");
                    Err(Box::new(append_error(&e)))
                }
                Err(e) => Err(Box::new(ErrorReply::new(
                    ErrorCode::Internal,
                    format!("erase task failed: {e}"),
                ))),
            }
        });
        self.jobs.push(Job {
            corr_id,
            opcode,
            task,
        });
    }
}

impl Connection {
    /// A cluster node's erase (on the leader): the tombstone proposed to
    /// the replicated log, then, once this node applied it, its own
    /// rewrite of the segments that hold the stream awaited in `jobs`.
    /// Every other node rewrites its own once it applies the tombstone
    /// (`logbook_consensus::LifecycleChange::Erase`), also after a crash.
    async fn erase_replicated(
        &mut self,
        corr_id: u32,
        stream: logbook_protocol::StreamName,
        node: &logbook_consensus::node::Node,
    ) {
        use logbook_consensus::{Command, LifecycleChange};
        let opcode = Opcode::Erase;
        let command = Command::Lifecycle {
            stream: stream.as_str().to_owned(),
            meta_expected: logbook_protocol::ExpectedVersion::Any,
            change: LifecycleChange::Erase,
            id: logbook_protocol::EventId::new_v7().0,
            timestamp_us: self.shared.store.now_us(),
        };
        let pending = match crate::net::writes::propose(node, command).await {
            Ok(p) => p,
            Err(reply) => return self.send_error(opcode, corr_id, reply),
        };
        let store = self.shared.store.clone();
        let peer = self.peer;
        let erased = async move {
            let any = logbook_protocol::ExpectedVersion::Any;
            let result = crate::net::writes::result_of(stream.as_str(), any, pending.await?)?;
            let wait = tokio::task::spawn_blocking(move || store.wait_erased(&stream, None));
            let receipt = match wait.await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(Box::new(storage_error(&e))),
                Err(e) => {
                    return Err(Box::new(ErrorReply::new(
                        ErrorCode::Internal,
                        format!("erase task failed: {e}"),
                    )));
                }
            };
            tracing::info!(
                %peer,
                position = result.first_position.0,
                segments = receipt.segments_rewritten,
                events = receipt.events_removed,
                "stream erased on this node (the others erase it as they apply it)"
            );
            Ok(Response::EraseOk(erase_ok(&receipt)))
        };
        self.spawn_job(opcode, corr_id, None, erased);
    }
}

/// Runs a scavenge every `every` (`--scavenge-interval-secs`) until the
/// server stops, skipping a turn while one (or an erase) runs. Each writes
/// its report to the log, and (on a single server) to `$scavenges`, as
/// one a client asks for.
pub(in crate::net) async fn scheduled_scavenges(
    shared: Arc<Shared>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !shared.store.scavenge_due() {
            tracing::debug!("scheduled scavenge skipped: nothing to remove");
            continue;
        }
        let Ok(turn) = Arc::clone(&shared.maintenance).try_acquire_owned() else {
            tracing::info!("scheduled scavenge skipped: a scavenge or an erase is running");
            continue;
        };
        let store = shared.store.clone();
        let options = ScavengeOptions {
            max_bytes_per_sec: shared.config.scavenge_max_bytes_per_sec,
        };
        tracing::info!(max_bytes_per_sec = ?options.max_bytes_per_sec, "scheduled scavenge started");
        let job = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            store.scavenge(options)
        });
        match job.await {
            Ok(Ok(report)) => tracing::info!(
                segments = report.segments_rewritten,
                merged = report.segments_merged,
                events = report.events_removed,
                reclaimed = report.bytes_before.saturating_sub(report.bytes_after),
                duration_ms = report.duration.as_millis() as u64,
                "scheduled scavenge done"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "scheduled scavenge failed"),
            Err(e) => tracing::warn!(error = %e, "scheduled scavenge panicked"),
        }
    }
}

/// Microseconds, saturating.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The engine's scavenge report as its wire reply.
fn scavenge_ok(r: &ScavengeReport) -> ScavengeOk {
    ScavengeOk {
        segments_considered: r.segments_considered,
        segments_rewritten: r.segments_rewritten,
        segments_merged: r.segments_merged,
        events_removed: r.events_removed,
        bytes_before: r.bytes_before,
        bytes_after: r.bytes_after,
        duration_us: micros(r.duration),
    }
}

/// The engine's erase receipt as its wire reply.
fn erase_ok(r: &EraseReceipt) -> EraseOk {
    EraseOk {
        position: r.position,
        segments_rewritten: r.segments_rewritten,
        events_removed: r.events_removed,
        bytes_before: r.bytes_before,
        bytes_after: r.bytes_after,
        duration_us: micros(r.duration),
    }
}
