//! Reading: options, single pages, and [`EventStream`], which pages through
//! a stream or the global log transparently.
//!
//! An [`EventStream`] asks for the next page as soon as a page arrives
//! (using the page's `next`), before handing out the page's events, so the
//! server works on page `n + 1` while the caller consumes page `n`: a long
//! read costs one round trip in total, not one per page.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use logbook_protocol::{Direction, LogPosition, RecordedEvent, StreamVersion, Text};

use crate::client::Client;
use crate::error::{Error, Result};

/// Events per page when the options do not say: large enough that a page's
/// round trip is small next to its transfer, small enough to keep memory
/// per page modest. The server may cap pages lower.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;

/// What [`Client::read_stream`] and [`Client::read_stream_page`] read.
///
/// ```
/// use logbook_client::{ReadStreamOptions, StreamVersion};
///
/// // The 10 events before version 100, newest first.
/// let options = ReadStreamOptions::default()
///     .from(StreamVersion(99))
///     .backward()
///     .max_count(10);
/// assert_eq!(options.max_count, Some(10));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadStreamOptions {
    /// First version to return, inclusive. Default `None`: the first event
    /// (forward) or the last one (backward).
    pub from: Option<StreamVersion>,
    /// Reading direction. Default forward.
    pub direction: Direction,
    /// Most events to return in total. Default `None`: everything there is.
    pub max_count: Option<u64>,
    /// Most events to ask for per request. Default [`DEFAULT_PAGE_SIZE`];
    /// must not be 0.
    pub page_size: u32,
    /// Read only once the server's log holds every event before this
    /// position: on a cluster follower, a read sees the reader's own
    /// writes made through the leader (pass the `last_position + 1` of
    /// the append). Default `None`: at once.
    pub min_position: Option<LogPosition>,
}

impl Default for ReadStreamOptions {
    fn default() -> Self {
        ReadStreamOptions {
            from: None,
            direction: Direction::Forward,
            max_count: None,
            page_size: DEFAULT_PAGE_SIZE,
            min_position: None,
        }
    }
}

impl ReadStreamOptions {
    /// Sets [`ReadStreamOptions::from`].
    pub fn from(mut self, version: StreamVersion) -> Self {
        self.from = Some(version);
        self
    }

    /// Sets [`ReadStreamOptions::direction`].
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Reads backward (newest first).
    pub fn backward(self) -> Self {
        self.direction(Direction::Backward)
    }

    /// Sets [`ReadStreamOptions::max_count`].
    pub fn max_count(mut self, count: u64) -> Self {
        self.max_count = Some(count);
        self
    }

    /// Sets [`ReadStreamOptions::min_position`].
    pub fn min_position(mut self, position: LogPosition) -> Self {
        self.min_position = Some(position);
        self
    }

    /// Sets [`ReadStreamOptions::page_size`].
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = size;
        self
    }
}

/// What [`Client::read_all`] and [`Client::read_all_page`] read.
///
/// ```
/// use logbook_client::{LogPosition, ReadAllOptions};
///
/// let options = ReadAllOptions::default().from(LogPosition(1_000)).page_size(500);
/// assert_eq!(options.from, Some(LogPosition(1_000)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadAllOptions {
    /// First log position to return, inclusive. Default `None`: position 0
    /// (forward) or the last committed event (backward).
    pub from: Option<LogPosition>,
    /// Reading direction. Default forward.
    pub direction: Direction,
    /// Most events to return in total. Default `None`: everything committed.
    pub max_count: Option<u64>,
    /// Most events to ask for per request. Default [`DEFAULT_PAGE_SIZE`];
    /// must not be 0.
    pub page_size: u32,
    /// Read only once the server's log holds every event before this
    /// position: on a cluster follower, a read sees the reader's own
    /// writes made through the leader (pass the `last_position + 1` of
    /// the append). Default `None`: at once.
    pub min_position: Option<LogPosition>,
}

impl Default for ReadAllOptions {
    fn default() -> Self {
        ReadAllOptions {
            from: None,
            direction: Direction::Forward,
            max_count: None,
            page_size: DEFAULT_PAGE_SIZE,
            min_position: None,
        }
    }
}

impl ReadAllOptions {
    /// Sets [`ReadAllOptions::from`].
    pub fn from(mut self, position: LogPosition) -> Self {
        self.from = Some(position);
        self
    }

    /// Sets [`ReadAllOptions::direction`].
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// Reads backward (newest first).
    pub fn backward(self) -> Self {
        self.direction(Direction::Backward)
    }

    /// Sets [`ReadAllOptions::max_count`].
    pub fn max_count(mut self, count: u64) -> Self {
        self.max_count = Some(count);
        self
    }

    /// Sets [`ReadAllOptions::min_position`].
    pub fn min_position(mut self, position: LogPosition) -> Self {
        self.min_position = Some(position);
        self
    }

    /// Sets [`ReadAllOptions::page_size`].
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = size;
        self
    }
}

/// Events asked for by the first (or only) page: the page size, cut to
/// `max_count`.
pub(crate) fn first_page_count(page_size: u32, max_count: Option<u64>) -> Result<u32> {
    if page_size == 0 {
        return Err(Error::BadRequest("page_size must not be 0".to_owned()));
    }
    match max_count {
        Some(0) => Err(Error::BadRequest("max_count must not be 0".to_owned())),
        Some(n) => Ok(u64::from(page_size).min(n) as u32),
        None => Ok(page_size),
    }
}

/// One page of a stream, as returned by [`Client::read_stream_page`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamPage {
    /// The events, in the requested direction. The server may return fewer
    /// than asked for even when more follow: page by `next`.
    pub events: Vec<RecordedEvent>,
    /// The stream's last version when the page was read; `None` if the
    /// stream has no events.
    pub last_version: Option<StreamVersion>,
    /// Where the next page starts (pass it as `from`); `None` when there is
    /// nothing more in this direction (yet).
    pub next: Option<StreamVersion>,
}

/// One page of the global log, as returned by [`Client::read_all_page`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllPage {
    /// The events, in the requested direction. The server may return fewer
    /// than asked for even when more follow: page by `next`.
    pub events: Vec<RecordedEvent>,
    /// Number of committed events when the page was read: the position the
    /// next commit gets.
    pub head: LogPosition,
    /// Where the next page starts (pass it as `from`); `None` when there is
    /// nothing more in this direction (yet).
    pub next: Option<LogPosition>,
}

impl From<logbook_protocol::ReadStreamOk> for StreamPage {
    fn from(ok: logbook_protocol::ReadStreamOk) -> StreamPage {
        StreamPage {
            events: ok.events,
            last_version: ok.last_version,
            next: ok.next,
        }
    }
}

impl From<logbook_protocol::ReadAllOk> for AllPage {
    fn from(ok: logbook_protocol::ReadAllOk) -> AllPage {
        AllPage {
            events: ok.events,
            head: ok.head,
            next: ok.next,
        }
    }
}

/// What an [`EventStream`] reads.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// One stream.
    Stream(Text),
    /// The global log.
    All,
}

/// A page with its cursor as a bare number (version or position, by
/// target).
struct RawPage {
    events: Vec<RecordedEvent>,
    next: Option<u64>,
    /// The `from` the page was asked for.
    from: Option<u64>,
}

type PageFuture = Pin<Box<dyn Future<Output = Result<RawPage>> + Send>>;

/// The events of a stream or of the global log, fetched page by page as
/// they are consumed: what [`Client::read_stream`] and [`Client::read_all`]
/// return.
///
/// Yields `Ok(event)`s in the requested direction; a failure is yielded
/// once as `Err` and ends the stream. The next page is requested while the
/// current one is being consumed. Each page request is retried and bounded
/// by the client's options like any other call.
#[must_use = "streams do nothing unless polled"]
pub struct EventStream {
    client: Client,
    target: Target,
    direction: Direction,
    page_size: u32,
    /// Pages wait for the server's log to reach it.
    min_position: Option<LogPosition>,
    /// Events still allowed by `max_count`; `None`: no limit.
    remaining: Option<u64>,
    /// The next page to ask for, by its `from` (`Some(None)`: the default
    /// start); `None` when no page is to be asked for.
    to_request: Option<Option<u64>>,
    /// The page request under way.
    fetch: Option<PageFuture>,
    /// A page (or failure) that arrived while events were still buffered.
    ready: Option<Result<RawPage>>,
    /// Events of the current page not yet handed out.
    buffered: std::vec::IntoIter<RecordedEvent>,
}

impl EventStream {
    pub(crate) fn new(
        client: Client,
        target: Target,
        from: Option<u64>,
        direction: Direction,
        max_count: Option<u64>,
        page_size: u32,
        min_position: Option<LogPosition>,
    ) -> EventStream {
        let check = match &target {
            Target::Stream(name) => crate::client::check_stream(name),
            Target::All => Ok(()),
        }
        .and_then(|()| first_page_count(page_size, None).map(drop));
        let (to_request, ready) = match check {
            Err(e) => (None, Some(Err(e))),
            // Nothing to read: end at once, without asking the server.
            Ok(()) if max_count == Some(0) => (None, None),
            Ok(()) => (Some(from), None),
        };
        EventStream {
            client,
            target,
            direction,
            page_size,
            min_position,
            remaining: max_count,
            to_request,
            fetch: None,
            ready,
            buffered: Vec::new().into_iter(),
        }
    }

    /// Starts the request for the page at `from`.
    fn start_fetch(&self, from: Option<u64>) -> PageFuture {
        let count = match self.remaining {
            Some(left) => u64::from(self.page_size).min(left) as u32,
            None => self.page_size,
        };
        let client = self.client.clone();
        let direction = self.direction;
        let min = self.min_position;
        match &self.target {
            Target::Stream(stream) => {
                let stream = stream.clone();
                Box::pin(async move {
                    let page = client
                        .fetch_stream_page(stream, from.map(StreamVersion), direction, count, min)
                        .await?;
                    Ok(RawPage {
                        events: page.events,
                        next: page.next.map(|v| v.0),
                        from,
                    })
                })
            }
            Target::All => Box::pin(async move {
                let page = client
                    .fetch_all_page(from.map(LogPosition), direction, count, min)
                    .await?;
                Ok(RawPage {
                    events: page.events,
                    next: page.next.map(|p| p.0),
                    from,
                })
            }),
        }
    }

    /// Takes in a page: cuts it to `max_count` and decides whether another
    /// follows.
    fn accept(&mut self, page: RawPage) {
        let mut events = page.events;
        if let Some(left) = self.remaining.as_mut() {
            if events.len() as u64 > *left {
                events.truncate(*left as usize);
            }
            *left -= events.len() as u64;
        }
        // An empty page goes on only if its `next` moved past where it was
        // asked from, in the read's direction (a server filtering out
        // events the user may not read answers empty pages that still
        // progress); any other would let a server keep the read going for
        // ever.
        let moved = match (page.next, page.from, self.direction) {
            (None, _, _) => false,
            (Some(_), None, _) => true,
            (Some(next), Some(from), Direction::Forward) => next > from,
            (Some(next), Some(from), Direction::Backward) => next < from,
        };
        let more = (!events.is_empty() || moved) && self.remaining != Some(0);
        self.to_request = page.next.filter(|_| more).map(Some);
        self.buffered = events.into_iter();
    }
}

impl Stream for EventStream {
    type Item = Result<RecordedEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            // Ask for the next page as early as possible; the first poll
            // sends it, and its reply waits in the connection's oneshot
            // until we come back for it.
            if this.fetch.is_none()
                && this.ready.is_none()
                && let Some(from) = this.to_request.take()
            {
                let mut fetch = this.start_fetch(from);
                match fetch.as_mut().poll(cx) {
                    Poll::Ready(result) => this.ready = Some(result),
                    Poll::Pending => this.fetch = Some(fetch),
                }
            }
            if let Some(event) = this.buffered.next() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.ready.is_none()
                && let Some(fetch) = this.fetch.as_mut()
            {
                match fetch.as_mut().poll(cx) {
                    Poll::Ready(result) => {
                        this.fetch = None;
                        this.ready = Some(result);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            match this.ready.take() {
                Some(Ok(page)) => this.accept(page),
                Some(Err(e)) => {
                    this.to_request = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => return Poll::Ready(None),
            }
        }
    }
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("target", &self.target)
            .field("direction", &self.direction)
            .field("remaining", &self.remaining)
            .field("buffered", &self.buffered.len())
            .field("fetching", &self.fetch.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_page_is_cut_to_max_count() {
        assert_eq!(first_page_count(100, None).ok(), Some(100));
        assert_eq!(first_page_count(100, Some(7)).ok(), Some(7));
        assert_eq!(first_page_count(100, Some(u64::MAX)).ok(), Some(100));
        assert!(matches!(
            first_page_count(0, None),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            first_page_count(10, Some(0)),
            Err(Error::BadRequest(_))
        ));
    }
}
