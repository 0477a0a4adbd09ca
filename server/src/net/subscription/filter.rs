//! Filters of `All` subscriptions: prefixes and regular expressions,
//! compiled once when the subscription starts, within size limits.

use logbook_protocol::{Filter, RecordedEvent};

/// Events scanned between checkpoints of a filtered subscription when the
/// client leaves the interval to the server.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 1_000;

/// A filter ready to test events.
#[derive(Debug)]
pub(crate) struct CompiledFilter {
    streams: Vec<String>,
    types: Vec<String>,
    stream_regex: Option<regex::Regex>,
    type_regex: Option<regex::Regex>,
    pub(super) checkpoint_interval: u64,
}

/// Longest regular expression accepted in a filter.
pub(crate) const MAX_REGEX_LEN: usize = 1024;
/// Memory one compiled regular expression may take (the `regex` crate's
/// limits; matching is linear time whatever the pattern).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn compile(what: &str, pattern: Option<String>) -> Result<Option<regex::Regex>, String> {
    let Some(p) = pattern else {
        return Ok(None);
    };
    if p.len() > MAX_REGEX_LEN {
        return Err(format!(
            "{what} regex is {} bytes; at most {MAX_REGEX_LEN}",
            p.len()
        ));
    }
    regex::RegexBuilder::new(&p)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|e| format!("{what} regex: {e}"))
}

impl CompiledFilter {
    /// Compiles `f`; a bad or oversized regular expression is the error,
    /// for a `BadRequest` reply.
    pub(crate) fn new(f: Filter) -> Result<CompiledFilter, String> {
        Ok(CompiledFilter {
            checkpoint_interval: match f.checkpoint_interval {
                0 => DEFAULT_CHECKPOINT_INTERVAL,
                n => u64::from(n),
            },
            stream_regex: compile("stream", f.stream_regex)?,
            type_regex: compile("type", f.type_regex)?,
            streams: f.stream_prefixes,
            types: f.type_prefixes,
        })
    }

    pub(super) fn matches(&self, e: &RecordedEvent) -> bool {
        (self.streams.is_empty()
            || self
                .streams
                .iter()
                .any(|p| e.stream.starts_with(p.as_str())))
            && (self.types.is_empty()
                || self
                    .types
                    .iter()
                    .any(|p| e.event_type.starts_with(p.as_str())))
            && self
                .stream_regex
                .as_ref()
                .is_none_or(|r| r.is_match(e.stream.as_str()))
            && self
                .type_regex
                .as_ref()
                .is_none_or(|r| r.is_match(e.event_type.as_str()))
    }
}
