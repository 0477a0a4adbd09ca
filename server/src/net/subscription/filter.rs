//! Filters of `All` subscriptions: prefixes and regular expressions,
//! compiled once when the subscription starts, within size limits.

use logbook_protocol::{Filter, RecordedEvent};

/// Events scanned between checkpoints of a filtered subscription when the
/// client leaves the interval to the server.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 1_000;

/// A filter ready to test events.
#[derive(Debug)]
pub(crate) struct CompiledFilter {
    streams: PrefixSet,
    types: PrefixSet,
    stream_regex: Option<regex::Regex>,
    type_regex: Option<regex::Regex>,
    pub(super) checkpoint_interval: u64,
    /// The subscriber's rights, when it may not read every stream: events
    /// of streams it may not read are filtered out (and counted as scanned
    /// for checkpoints, like any event the filter drops).
    access: Option<std::sync::Arc<crate::auth::Access>>,
}

/// A filter's prefixes, kept so that testing a name costs one binary
/// search however many there are (the protocol allows
/// `MAX_FILTER_PREFIXES`, and the live dispatcher tests every event):
/// sorted, with every prefix that a shorter one covers removed. No prefix
/// left is then a prefix of another, so at most one can match a name, and
/// it is the greatest one not above the name (anything between a prefix of
/// the name and the name itself starts with that prefix).
#[derive(Debug, Default)]
struct PrefixSet {
    sorted: Vec<String>,
}

impl PrefixSet {
    fn new(prefixes: Vec<String>) -> PrefixSet {
        PrefixSet {
            sorted: crate::auth::minimal_prefixes(prefixes),
        }
    }

    /// Whether `name` passes: no prefixes, or one of them starts it.
    fn admits(&self, name: &str) -> bool {
        if self.sorted.is_empty() {
            return true;
        }
        let i = self.sorted.partition_point(|p| p.as_str() <= name);
        i.checked_sub(1)
            .and_then(|i| self.sorted.get(i))
            .is_some_and(|p| name.starts_with(p.as_str()))
    }
}

/// Longest regular expression accepted in a filter.
pub(crate) const MAX_REGEX_LEN: usize = 1024;
/// Memory one compiled regular expression may take, and its lazy DFA's
/// cache (the `regex` crate's limits; matching is linear time whatever the
/// pattern).
const REGEX_SIZE_LIMIT: usize = 256 << 10;

/// What one subscription is charged on the server's subscription budget
/// besides its filter: its state, its task, its tracking.
pub(crate) const SUBSCRIPTION_BASE_BYTES: usize = 4 << 10;

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
            streams: PrefixSet::new(f.stream_prefixes),
            types: PrefixSet::new(f.type_prefixes),
            access: None,
        })
    }

    /// Whether the filter only hides what the subscriber may not read (its
    /// client asked for no filter): its pushes then say where their
    /// coverage starts, as an unfiltered subscription's do, the hidden
    /// events counting as removed ones.
    pub(crate) fn is_access_only(&self) -> bool {
        self.access.is_some()
            && self.streams.sorted.is_empty()
            && self.types.sorted.is_empty()
            && self.stream_regex.is_none()
            && self.type_regex.is_none()
    }

    /// This filter, passing only events of streams `access` may read.
    pub(crate) fn restricted_to(mut self, access: crate::auth::Access) -> CompiledFilter {
        self.access = Some(std::sync::Arc::new(access));
        self
    }

    /// An upper bound on the memory this filter holds: its prefixes, and
    /// each regular expression at its limits (the program, and a lazy DFA
    /// cache for each of two threads matching at once).
    pub(crate) fn memory_bytes(&self) -> usize {
        let prefixes = |p: &PrefixSet| p.sorted.iter().map(|s| s.len() + 32).sum::<usize>();
        let regexes =
            usize::from(self.stream_regex.is_some()) + usize::from(self.type_regex.is_some());
        prefixes(&self.streams) + prefixes(&self.types) + regexes * 3 * REGEX_SIZE_LIMIT
    }

    pub(crate) fn matches(&self, e: &RecordedEvent) -> bool {
        self.access
            .as_ref()
            .is_none_or(|a| a.can(crate::auth::Right::Read, &e.stream))
            && self.streams.admits(&e.stream)
            && self.types.admits(&e.event_type)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// One binary search gives the answer of testing every prefix.
        #[test]
        fn a_prefix_set_admits_what_any_of_its_prefixes_does(
            prefixes in proptest::collection::vec("[ab]{0,4}", 0..12),
            names in proptest::collection::vec("[abc]{0,6}", 1..30),
        ) {
            let set = PrefixSet::new(prefixes.clone());
            for name in names {
                let want = prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p.as_str()));
                prop_assert_eq!(set.admits(&name), want, "{:?} {}", prefixes, name);
            }
        }
    }
}
