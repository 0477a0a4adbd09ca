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

use logbook_protocol::lifecycle::META_STREAM_PREFIX;
use logbook_protocol::{Direction, StreamInfo, StreamVersion};

use crate::error::{ReadError, StorageError};
use crate::index::names;
use crate::read::Visit;
use crate::shared::Shared;

/// The name that sorts right after every `$$` name (`'%'` follows `'$'`).
const PAST_META: &str = "$%";

/// A page of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPage {
    /// The streams, by name.
    pub streams: Vec<StreamInfo>,
    /// Where the next page starts (exclusive); `None`: none left.
    pub next: Option<String>,
}

/// Up to `take` names of one sorted source from `start` on that start
/// with `prefix`, skipping metadata streams. `from(start)` reads the source
/// from a name on.
fn take_names<I>(
    mut from: impl FnMut(&str) -> I,
    start: &str,
    prefix: &str,
    take: usize,
) -> Result<Vec<String>, StorageError>
where
    I: Iterator<Item = Result<String, StorageError>>,
{
    let mut out = Vec::new();
    let mut it = from(start);
    while out.len() < take {
        let Some(name) = it.next().transpose()? else {
            break;
        };
        if !name.starts_with(prefix) {
            if name.as_str() > prefix {
                break;
            }
            continue;
        }
        if name.starts_with(META_STREAM_PREFIX) {
            // Jump over every metadata stream at once.
            it = from(PAST_META);
            continue;
        }
        out.push(name);
    }
    Ok(out)
}

impl Shared {
    /// Up to `limit` streams named `prefix...`, after `after` (exclusive),
    /// in name order, and stopping early once about `max_bytes` of names
    /// and metadata are listed.
    pub(crate) fn list_streams(
        self: &Arc<Self>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<StreamPage, ReadError> {
        if limit == 0 || prefix.starts_with(META_STREAM_PREFIX) {
            return Ok(StreamPage::default());
        }
        // Inclusive start; `after` itself is dropped below.
        let start = match after {
            Some(a) if a > prefix => a,
            _ => prefix,
        };
        // A page and one more name (to know whether there is a next page),
        // and `after` itself, which the start includes.
        let take = limit.saturating_add(2);
        let head = self.head();
        let (tables, mut sources) = {
            let g = self.index.read();
            let mut mems = g.active.new_stream_names(start, prefix, head);
            for m in &g.frozen {
                mems.extend(m.new_stream_names(start, prefix, head));
            }
            mems.retain(|n| !n.starts_with(META_STREAM_PREFIX));
            mems.sort_unstable();
            mems.truncate(take);
            (Arc::clone(&g.tables), vec![mems])
        };
        let mut states: Vec<String> = self
            .lifecycle
            .all()
            .iter()
            .map(|e| &e.state.stream)
            .filter(|n| n.as_str() >= start && n.starts_with(prefix))
            .cloned()
            .collect();
        states.sort_unstable();
        states.truncate(take);
        sources.push(states);
        for t in tables.iter() {
            sources.push(take_names(|s| t.names_from(s), start, prefix, take)?);
        }
        let merged = names::merge(sources.into_iter().map(|v| v.into_iter().map(Ok)).collect())
            .filter(|n| !matches!((n, after), (Ok(n), Some(a)) if n.as_str() <= a));
        let mut page = StreamPage::default();
        let mut bytes = 0usize;
        for name in merged {
            let name = name?;
            if page.streams.len() == limit || bytes >= max_bytes {
                page.next = page.streams.last().map(|s| s.stream.clone());
                break;
            }
            let info = self.stream_info(name)?;
            bytes += 64
                + info.stream.len()
                + if info.metadata.custom.is_empty() {
                    0
                } else {
                    info.metadata.to_json().len()
                };
            page.streams.push(info);
        }
        Ok(page)
    }

    /// One stream's catalog entry.
    fn stream_info(&self, stream: String) -> Result<StreamInfo, ReadError> {
        let entry = self.lifecycle_of(&stream);
        let indexed = self.stream_last_version(&stream)?;
        let last = indexed.max(
            entry
                .as_ref()
                .and_then(|e| e.last().max(e.state.last_version)),
        );
        let mut info = StreamInfo {
            last_version: last.map(StreamVersion),
            ..StreamInfo::default()
        };
        let Some(e) = entry else {
            info.first_version = last.map(|_| StreamVersion(0));
            info.event_count = last.map_or(0, |l| l + 1);
            info.stream = stream;
            return Ok(info);
        };
        info.metadata = e.state.metadata.clone();
        info.meta_version = Some(StreamVersion(e.meta_version));
        if e.state.is_hard_deleted() || e.state.is_soft_deleted(last) {
            info.deleted = e.state.deleted;
        } else if let Some(l) = last {
            // The first live event: by version, then by age when the stream
            // has one (its oldest events may have expired).
            let mut first = e.first_live();
            let min_ts = e.state.min_timestamp(self.now_us());
            if let Some(min_ts) = min_ts
                && first <= l
            {
                let mut found = None;
                self.visit_stream(&stream, first, Direction::Forward, 64, |x, loc| {
                    if loc.record.timestamp_us >= min_ts {
                        found = Some(x.version);
                        return Ok(Visit::Stop);
                    }
                    Ok(Visit::Continue)
                })?;
                first = found.unwrap_or(l + 1);
            }
            if first <= l {
                info.first_version = Some(StreamVersion(first));
                info.event_count = l - first + 1;
            }
        }
        info.stream = stream;
        Ok(info)
    }
}
