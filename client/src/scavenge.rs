//! Giving disk back: [`Client::scavenge`] and [`Client::erase`], with
//! [`ScavengeOptions`], [`ScavengeReport`] and [`EraseReceipt`].
//!
//! Both calls may take long (a scavenge of a large log, minutes), so
//! neither is bounded by
//! [`ClientOptions::request_timeout`](crate::ClientOptions::request_timeout):
//! they wait for the server's reply however long it takes (connecting is
//! still bounded by the connect timeout). To bound one, wrap it in
//! `tokio::time::timeout`; the server carries on regardless. The server
//! runs them off the connection, so the client's other calls on the same
//! connection go on meanwhile.
//!
//! Retries: a scavenge is never retried. It is harmless to run again (a
//! second only rewrites what the first left), but one whose reply was
//! lost keeps running on the server, so a retry would only be refused
//! with [`Error::ServerBusy`](crate::Error::ServerBusy) until it ends;
//! the caller decides, watching `scavenge_done` of `scavenge_todo` in
//! [`Client::stats`]. An erase follows the
//! [`RetryPolicy`](crate::RetryPolicy): erasing an erased stream again is
//! allowed and rewrites whatever still holds its events, so a retry after
//! a lost reply finishes the work and answers with the same tombstone
//! position.

use std::time::Duration;

use logbook_protocol::{Erase, LogPosition, Request, Response, Scavenge, Text};

use crate::client::{Client, check_stream};
use crate::error::{Error, Result};
use crate::options::RetryPolicy;

/// How a scavenge runs ([`Client::scavenge`]).
///
/// ```
/// use logbook_client::ScavengeOptions;
///
/// // At most 50 MiB per second, so appends and reads keep most of the disk.
/// let options = ScavengeOptions::default().max_bytes_per_sec(50 << 20);
/// assert_eq!(options.max_bytes_per_sec, Some(50 << 20));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScavengeOptions {
    /// Most bytes per second the scavenge reads and writes on the server.
    /// Default `None`: as fast as the disk goes. Must not be 0.
    pub max_bytes_per_sec: Option<u64>,
}

impl ScavengeOptions {
    /// Sets [`ScavengeOptions::max_bytes_per_sec`].
    pub fn max_bytes_per_sec(mut self, bytes: u64) -> Self {
        self.max_bytes_per_sec = Some(bytes);
        self
    }
}

/// What a scavenge did ([`Client::scavenge`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScavengeReport {
    /// Sealed segments that held a removed event.
    pub segments_considered: u64,
    /// Segments rewritten without their removed events (merged ones
    /// included).
    pub segments_rewritten: u64,
    /// Of those, segments merged with the one before (each result fits in
    /// one segment): gone as files.
    pub segments_merged: u64,
    /// Events removed from disk.
    pub events_removed: u64,
    /// Bytes of the rewritten segments before.
    pub bytes_before: u64,
    /// Bytes of the rewritten segments after.
    pub bytes_after: u64,
    /// How long the scavenge took on the server.
    pub duration: Duration,
}

impl ScavengeReport {
    /// Bytes of disk given back.
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// What an erase did ([`Client::erase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EraseReceipt {
    /// Log position of the stream's tombstone (in `$$stream`).
    pub position: LogPosition,
    /// Segments rewritten (0 for a stream whose events were already gone
    /// from disk).
    pub segments_rewritten: u64,
    /// Events removed from disk: the stream's, and other removed events
    /// the same segments held.
    pub events_removed: u64,
    /// Bytes of the rewritten segments before.
    pub bytes_before: u64,
    /// Bytes of the rewritten segments after.
    pub bytes_after: u64,
    /// How long the erase took on the server.
    pub duration: Duration,
}

impl Client {
    /// Gives back the disk that removed events (deleted, truncated,
    /// expired, superseded metadata) still take, and waits until done.
    ///
    /// The server seals its active segment, then rewrites the sealed
    /// segments holding removed events one at a time, without them (extra
    /// disk: one segment at most). Positions and versions never change, and
    /// every read goes on meanwhile. It records a `$scavenge-started` and a
    /// `$scavenged` event (the report, as JSON) in the `$scavenges` stream.
    ///
    /// Not bounded by the request timeout, and never retried (see the
    /// module docs). A scavenge or an erase already running makes it fail
    /// with [`Error::ServerBusy`]; a rate of 0 fails early with
    /// [`Error::BadRequest`].
    ///
    /// ```no_run
    /// use logbook_client::ScavengeOptions;
    ///
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// let report = client
    ///     .scavenge(ScavengeOptions::default().max_bytes_per_sec(100 << 20))
    ///     .await?;
    /// println!(
    ///     "{} segments rewritten, {} bytes given back",
    ///     report.segments_rewritten,
    ///     report.bytes_reclaimed()
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub async fn scavenge(&self, options: ScavengeOptions) -> Result<ScavengeReport> {
        if options.max_bytes_per_sec == Some(0) {
            return Err(Error::BadRequest(
                "a scavenge's max_bytes_per_sec must be at least 1 (leave it unset for no limit)"
                    .to_owned(),
            ));
        }
        let request = Request::Scavenge(Scavenge {
            max_bytes_per_sec: options.max_bytes_per_sec,
        });
        let pick = |r| match r {
            Response::ScavengeOk(ok) => Some(ScavengeReport {
                segments_considered: ok.segments_considered,
                segments_rewritten: ok.segments_rewritten,
                segments_merged: ok.segments_merged,
                events_removed: ok.events_removed,
                bytes_before: ok.bytes_before,
                bytes_after: ok.bytes_after,
                duration: Duration::from_micros(ok.duration_us),
            }),
            _ => None,
        };
        self.call_with(&request, pick, None, RetryPolicy::none())
            .await
    }

    /// Erases `stream` for good (the right to be forgotten), and waits
    /// until done.
    ///
    /// A hard delete (reads, appends and lifecycle operations of the stream
    /// then fail with [`Error::StreamDeleted`], for ever), then a rewrite
    /// of exactly the segment files that hold the stream's events. Once
    /// this returns, none of the stream's event bytes are in any file of
    /// the server's data directory. **Backups taken before still hold
    /// them.** Event ids of the erased events stay reserved: an append
    /// reusing one fails with [`Error::DuplicateEventId`].
    ///
    /// Not bounded by the request timeout; retried under the
    /// [`RetryPolicy`](crate::RetryPolicy), which is safe (see the module
    /// docs): erasing a stream already erased or hard-deleted succeeds. An
    /// invalid name, or a `$$` metadata stream, is [`Error::BadRequest`].
    ///
    /// ```no_run
    /// # async fn demo(client: logbook_client::Client) -> logbook_client::Result<()> {
    /// let receipt = client.erase("customer-1234").await?;
    /// println!("tombstone at {}; {} segments rewritten", receipt.position, receipt.segments_rewritten);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn erase(&self, stream: impl Into<Text>) -> Result<EraseReceipt> {
        let stream = stream.into();
        check_stream(&stream)?;
        let request = Request::Erase(Erase { stream });
        let pick = |r| match r {
            Response::EraseOk(ok) => Some(EraseReceipt {
                position: ok.position,
                segments_rewritten: ok.segments_rewritten,
                events_removed: ok.events_removed,
                bytes_before: ok.bytes_before,
                bytes_after: ok.bytes_after,
                duration: Duration::from_micros(ok.duration_us),
            }),
            _ => None,
        };
        self.call_with(&request, pick, None, self.options().retry)
            .await
    }
}
