//! The stream catalog: which streams exist, a page at a time, by prefix.
//!
//! The names come from three sources, merged in name order without
//! repeats:
//! - each index table's sorted names (the streams whose version 0 it
//!   indexes: see `index::names`);
//! - the memtables' streams whose version 0 they hold, below the durable
//!   head;
//! - the lifecycle states (a stream with metadata set before its first
//!   event, or whose first events a scavenge removed, is named there).
//!
//! Metadata streams (`$$S`) are skipped: their state is `S`'s entry. Each
//! source gives its first `limit + 2` names from the start, so a page costs
//! about `limit` names per table (a fence search and a few 4 KiB blocks)
//! whatever the store holds, plus one pass over the lifecycle states in
//! memory; then one stream-head lookup per listed stream (and one read of
//! its first live event when it has a `max_age`). The merge is exact: the
//! catalog's smallest names past a point are among each source's own
//! smallest, and `limit + 2` covers the page, one name more (to know
//! whether another page follows) and `after` itself (the start includes
//! it).

use std::sync::Arc;

use logbook_protocol::lifecycle::meta_target;
use logbook_protocol::{Direction, StreamInfo, StreamVersion};

use crate::error::{ReadError, StorageError};
use crate::index::names;
use crate::read::Visit;
use crate::shared::Shared;

/// The name that sorts right after every `$$` name (`'%'` follows `'$'`).
const PAST_META: &str = "$%";
/// Bytes a listed stream takes in a reply besides its name and metadata
/// (field names and numbers, MessagePack), rounded up.
const INFO_BYTES: usize = 128;
/// Index entries one probe of a `max_age` stream's first live event looks
/// at (entries of removed events are passed over one by one).
const PROBE_ENTRIES: usize = 64;

/// A page of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPage {
    /// The streams, by name.
    pub streams: Vec<StreamInfo>,
    /// Where the next page starts (exclusive); `None`: none left.
    pub next: Option<String>,
}

/// The names of one sorted source from a start on that begin with a
/// prefix, without metadata streams (`$$S`): `from(name)` reads the source
/// from a name on, and is called again to jump over the metadata streams
/// at once. Ends at the first name past the prefix's range, or the first
/// error.
struct Names<I, F> {
    from: F,
    inner: I,
    prefix: String,
    done: bool,
}

impl<I, F> Names<I, F>
where
    I: Iterator<Item = Result<String, StorageError>>,
    F: FnMut(&str) -> I,
{
    fn new(mut from: F, start: &str, prefix: &str) -> Names<I, F> {
        let inner = from(start);
        Names {
            from,
            inner,
            prefix: prefix.to_owned(),
            done: false,
        }
    }
}

impl<I, F> Iterator for Names<I, F>
where
    I: Iterator<Item = Result<String, StorageError>>,
    F: FnMut(&str) -> I,
{
    type Item = Result<String, StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let name = match self.inner.next() {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => break,
            };
            if !name.starts_with(self.prefix.as_str()) {
                // Names with the prefix are one range: past it, done.
                if name.as_str() > self.prefix.as_str() {
                    break;
                }
                continue;
            }
            if meta_target(&name).is_some() {
                // Every metadata stream sorts before `$%` (and after the
                // start, which is never one of them): jump past them all.
                self.inner = (self.from)(PAST_META);
                continue;
            }
            return Some(Ok(name));
        }
        self.done = true;
        None
    }
}

/// The names of `names` after `after` that a page may need: `take` of
/// them, or fewer once they pass `max_bytes` (as a page counts them, less
/// their metadata) with two at least. A page holds only names whose total
/// stays within `max_bytes` (one at least), so it can never use up what a
/// source gave and go on with another's names past them: the next one
/// always stops it.
fn collect_bounded(
    names: impl Iterator<Item = Result<String, StorageError>>,
    after: Option<&str>,
    take: usize,
    max_bytes: usize,
) -> Result<Vec<String>, StorageError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for n in names {
        let n = n?;
        if after.is_some_and(|a| n.as_str() <= a) {
            continue;
        }
        bytes = bytes.saturating_add(n.len() + INFO_BYTES);
        out.push(n);
        if out.len() >= take || (bytes > max_bytes && out.len() >= 2) {
            break;
        }
    }
    Ok(out)
}

impl Shared {
    /// Up to `limit` streams named `prefix...`, after `after` (exclusive),
    /// in name order; the page stops before it would hold more than
    /// `max_bytes` as a reply (one stream at least).
    pub(crate) fn list_streams(
        self: &Arc<Self>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<StreamPage, ReadError> {
        if limit == 0 {
            return Ok(StreamPage::default());
        }
        // Inclusive start; `after` itself is dropped below.
        let start = match after {
            Some(a) if a > prefix => a,
            _ => prefix,
        };
        // A page, one name more (to know whether another page follows),
        // and `after` itself; no source needs more names than a page's
        // bytes hold.
        let take = limit.saturating_add(2);
        let head = self.head();
        // The memtables' and the lifecycle states' names: bounded ranges of
        // sorted maps, under their locks.
        let (tables, mut mems) = {
            let g = self.index.read();
            let mut mems = Vec::new();
            for m in std::iter::once(&g.active).chain(g.frozen.iter().map(|m| &**m)) {
                let from = |s: &str| {
                    m.new_stream_names_from(s, head)
                        .map(|n| Ok::<String, StorageError>(n.to_owned()))
                };
                mems.extend(collect_bounded(
                    Names::new(from, start, prefix),
                    after,
                    take,
                    max_bytes,
                )?);
            }
            (Arc::clone(&g.tables), mems)
        };
        mems.sort_unstable();
        mems.dedup();
        let states = collect_bounded(
            Names::new(
                |s| self.lifecycle.names_from(s, take).into_iter().map(Ok),
                start,
                prefix,
            ),
            after,
            take,
            max_bytes,
        )?;
        // The tables' names, read lazily, a block at a time.
        let mut sources: Vec<Box<dyn Iterator<Item = Result<String, StorageError>>>> = vec![
            Box::new(std::mem::take(&mut mems).into_iter().map(Ok)),
            Box::new(states.into_iter().map(Ok)),
        ];
        for t in tables.iter() {
            let t = Arc::clone(t);
            sources.push(Box::new(Names::new(
                move |s| t.names_from(s),
                start,
                prefix,
            )));
        }
        let merged = names::merge(sources)
            .filter(|n| !matches!((n, after), (Ok(n), Some(a)) if n.as_str() <= a));
        let mut page = StreamPage::default();
        let mut bytes = 0usize;
        for name in merged {
            let name = name?;
            if page.streams.len() == limit {
                page.next = page.streams.last().map(|s| s.stream.clone());
                break;
            }
            let info = self.stream_info(name)?;
            let size = info.reply_bytes();
            if bytes.saturating_add(size) > max_bytes && !page.streams.is_empty() {
                page.next = page.streams.last().map(|s| s.stream.clone());
                break;
            }
            bytes += size;
            page.streams.push(info);
        }
        Ok(page)
    }

    /// One stream's catalog entry.
    fn stream_info(&self, stream: String) -> Result<StreamInfo, ReadError> {
        let Some(e) = self.lifecycle_of(&stream) else {
            let last = self.stream_last_version(&stream)?;
            return Ok(StreamInfo {
                stream,
                last_version: last.map(StreamVersion),
                first_version: last.map(|_| StreamVersion(0)),
                event_count: last.map_or(0, |l| l + 1),
                ..StreamInfo::default()
            });
        };
        // The commit pipeline keeps a stream with a state's last version
        // (no index walk, which would pass over every removed entry).
        let last = match e.last().max(e.state.last_version) {
            Some(l) => Some(l),
            None => self.stream_last_version(&stream)?,
        };
        let mut info = StreamInfo {
            last_version: last.map(StreamVersion),
            metadata: e.state.metadata.clone(),
            meta_version: Some(StreamVersion(e.meta_version)),
            ..StreamInfo::default()
        };
        if e.state.is_hard_deleted() || e.state.is_soft_deleted(last) {
            info.deleted = e.state.deleted;
        } else if let Some(l) = last {
            let mut first = e.first_live();
            if let Some(min_ts) = e.state.min_timestamp(self.now_us())
                && first <= l
            {
                first = self.first_younger(&stream, first, l, min_ts)?;
            }
            if first <= l {
                info.first_version = Some(StreamVersion(first));
                info.event_count = l - first + 1;
            }
        }
        info.stream = stream;
        Ok(info)
    }

    /// The first version in `[first, last]` of `stream` committed at or
    /// after `min_ts` (`last + 1`: none), by a binary search over versions
    /// (commit times only rise along the log), each probe looking at a few
    /// index entries: bounded work however many events expired or were
    /// removed.
    pub(crate) fn first_younger(
        &self,
        stream: &str,
        first: u64,
        last: u64,
        min_ts: i64,
    ) -> Result<u64, StorageError> {
        let (mut lo, mut hi) = (first, last + 1);
        let mut best = last + 1;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // The first event at or after `mid` still on disk, among the
            // next few entries.
            let mut found: Option<(u64, i64)> = None;
            let mut seen = 0usize;
            self.visit_stream(stream, mid, Direction::Forward, PROBE_ENTRIES, |x, loc| {
                seen += 1;
                if let Some(loc) = loc.filter(|l| !l.record.is_removed()) {
                    found = Some((x.version, loc.record.timestamp_us));
                    return Ok(Visit::Stop);
                }
                Ok(if seen >= PROBE_ENTRIES {
                    Visit::Stop
                } else {
                    Visit::Continue
                })
            })?;
            match found {
                Some((v, ts)) if ts >= min_ts => {
                    best = best.min(v);
                    hi = mid;
                }
                // Everything up to `v` is older.
                Some((v, _)) => lo = v.saturating_add(1).max(mid + 1),
                // Removed (so not live) or none: look higher.
                None => lo = mid + 1,
            }
        }
        Ok(best)
    }
}
