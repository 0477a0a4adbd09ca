//! The audit log (`--audit-log FILE`, or `-` for stderr; off by default):
//! one JSON object per line for each security-relevant event: logins (ok,
//! failed, refused while an address is blocked), deletes, truncations,
//! erases, scavenges, backups, consumer group changes. Each line has `ts`
//! (RFC 3339, UTC, microseconds), `event`, `peer`, and the event's own
//! fields. Written synchronously (these events are rare), flushed per line.
//!
//! Also here: failed logins are slowed per source address (IPv6 addresses
//! by /64, what one host usually holds). After [`MAX_FAILURES`] failures
//! within [`WINDOW`], the address's logins are refused (even with the right
//! credentials) for [`BLOCK`]. At most as many logins of an address are
//! checked at once as it has failures left, the others answered busy (and
//! retried by their clients), so guesses sent in parallel cannot pass the
//! limit before their failures are counted; a success clears nothing, so
//! logging in as one user between guesses at another's password gains
//! nothing. The table of addresses is bounded.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{Map, Value};

/// Failed logins from one address within [`WINDOW`] before it is blocked.
pub const MAX_FAILURES: u32 = 5;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a blocked address stays blocked.
pub const BLOCK: Duration = Duration::from_secs(60);
/// Addresses tracked at most (past it, the oldest entries are dropped).
const MAX_TRACKED: usize = 10_000;

/// Where audit lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditTarget {
    /// Standard error.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

impl std::str::FromStr for AuditTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<AuditTarget, String> {
        match s {
            "" => Err("an audit log path, or - for stderr".into()),
            "-" => Ok(AuditTarget::Stderr),
            path => Ok(AuditTarget::File(PathBuf::from(path))),
        }
    }
}

/// The audit log and the failed-login table.
pub(crate) struct Audit {
    sink: Option<Mutex<Box<dyn Write + Send>>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    /// Wakes logins waiting for a check of their address to end.
    ended: tokio::sync::Notify,
}

#[derive(Clone, Copy)]
struct Failures {
    /// Failed logins within the window.
    count: u32,
    /// Logins being checked now.
    pending: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

/// Whether a login may be checked now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Checked; say how it ended with [`Audit::end_attempt`].
    Go,
    /// The address is blocked (too many failures).
    Blocked,
    /// As many logins of the address are being checked as it has failures
    /// left: this one waits for them (the client retries).
    Busy,
}

impl Audit {
    /// Opens the audit log, if one is configured.
    pub(crate) fn open(target: Option<&AuditTarget>) -> std::io::Result<Audit> {
        let sink: Option<Box<dyn Write + Send>> = match target {
            None => None,
            Some(AuditTarget::Stderr) => Some(Box::new(std::io::stderr())),
            Some(AuditTarget::File(path)) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
        };
        Ok(Audit {
            sink: sink.map(Mutex::new),
            failures: Mutex::new(HashMap::new()),
            ended: tokio::sync::Notify::new(),
        })
    }

    /// Writes one line: `event`, `peer`, and `fields` (an object).
    pub(crate) fn record(&self, event: &str, peer: std::net::SocketAddr, fields: Value) {
        let Some(sink) = &self.sink else {
            return;
        };
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(rfc3339_now()));
        line.insert("event".into(), Value::String(event.into()));
        line.insert("peer".into(), Value::String(peer.to_string()));
        if let Value::Object(f) = fields {
            line.extend(f);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut sink = sink.lock();
        if let Err(e) = sink.write_all(text.as_bytes()).and_then(|()| sink.flush()) {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }

    /// Whether logins from `ip` are refused now (too many failures).
    #[cfg(test)]
    pub(crate) fn is_blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.failures
            .lock()
            .get(&source(ip))
            .and_then(|f| f.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Asks to check a login from `ip`. A password check (`guessable`)
    /// goes only while fewer are under way for the address than it has
    /// failures left before it is blocked, so that guesses sent in parallel
    /// cannot pass the limit before their failures are counted (the others
    /// wait: [`Audit::wait_for_attempt`]); a token's check (256 random
    /// bits: nothing to guess) is never held back, only refused once the
    /// address is blocked.
    pub(crate) fn begin_attempt(&self, ip: IpAddr, guessable: bool) -> Attempt {
        let ip = source(ip);
        let now = Instant::now();
        let mut table = self.failures.lock();
        if table.len() >= MAX_TRACKED && !table.contains_key(&ip) {
            // Keep the table bounded: forget the entries whose window and
            // block are over (and nothing pending), or, if none, the oldest.
            table.retain(|_, f| {
                f.pending > 0
                    || now.duration_since(f.since) < WINDOW
                    || f.blocked_until.is_some_and(|u| now < u)
            });
            if table.len() >= MAX_TRACKED
                && let Some(oldest) = table.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| *k)
            {
                table.remove(&oldest);
            }
        }
        let f = table.entry(ip).or_insert(Failures {
            count: 0,
            pending: 0,
            since: now,
            blocked_until: None,
        });
        if f.blocked_until.is_some_and(|until| now < until) {
            return Attempt::Blocked;
        }
        if now.duration_since(f.since) >= WINDOW {
            f.count = 0;
            f.since = now;
            f.blocked_until = None;
        }
        if guessable {
            if f.count + f.pending >= MAX_FAILURES {
                return Attempt::Busy;
            }
            f.pending += 1;
        }
        Attempt::Go
    }

    /// Waits until a password check of `ip` may go (or the address is
    /// blocked), at most until `deadline`: [`Attempt::Busy`] then.
    pub(crate) async fn wait_for_attempt(
        &self,
        ip: IpAddr,
        deadline: tokio::time::Instant,
    ) -> Attempt {
        loop {
            // Registered before the check, so an end in between wakes it.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            match self.begin_attempt(ip, true) {
                Attempt::Busy => {}
                other => return other,
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return Attempt::Busy;
            }
        }
    }

    /// Ends a login check that [`Audit::begin_attempt`] let go (`guessable`
    /// as it was asked): a failure counts (and may block the address); true
    /// if it is blocked now.
    pub(crate) fn end_attempt(&self, ip: IpAddr, guessable: bool, failed: bool) -> bool {
        let now = Instant::now();
        let mut table = self.failures.lock();
        let Some(f) = table.get_mut(&source(ip)) else {
            return false;
        };
        if guessable {
            f.pending = f.pending.saturating_sub(1);
            self.ended.notify_waiters();
        }
        if failed {
            f.count += 1;
            if f.count >= MAX_FAILURES {
                f.blocked_until = Some(now + BLOCK);
            }
        }
        f.blocked_until.is_some_and(|until| now < until)
    }
}

/// The address failures are counted under: an IPv4 address, or an IPv6
/// address's /64 (one host can hold a whole /64).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("enabled", &self.sink.is_some())
            .finish_non_exhaustive()
    }
}

/// Now as RFC 3339 UTC with microseconds (`2026-12-03T04:05:06.123456Z`).
fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_checks_stay_within_the_failures_left_and_failures_block() {
        let a = Audit::open(None).unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        // Parallel logins: as many are checked as failures are left.
        for _ in 0..MAX_FAILURES {
            assert_eq!(a.begin_attempt(ip, true), Attempt::Go);
        }
        assert_eq!(a.begin_attempt(ip, true), Attempt::Busy);
        assert_eq!(a.begin_attempt(other, true), Attempt::Go, "per address");
        // Good ones end and make room; they clear no failure.
        assert!(!a.end_attempt(ip, true, false));
        assert_eq!(a.begin_attempt(ip, true), Attempt::Go);
        for _ in 0..MAX_FAILURES - 1 {
            assert!(!a.end_attempt(ip, true, true));
        }
        assert!(!a.is_blocked(ip));
        // One failure left, one check pending: nothing more goes.
        assert_eq!(a.begin_attempt(ip, true), Attempt::Busy);
        assert!(a.end_attempt(ip, true, true), "the fifth failure blocks");
        assert!(a.is_blocked(ip));
        assert_eq!(a.begin_attempt(ip, true), Attempt::Blocked);
        // The other address had no failure.
        assert!(!a.end_attempt(other, true, false));
        assert!(!a.is_blocked(other));
        // An IPv6 host is one /64.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(a.begin_attempt(v6a, true), Attempt::Go);
            a.end_attempt(v6a, true, true);
        }
        assert!(a.is_blocked(v6b));
    }

    #[test]
    fn the_table_stays_bounded() {
        let a = Audit::open(None).unwrap();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::from(i.to_be_bytes());
            a.begin_attempt(ip, true);
            a.end_attempt(ip, true, true);
        }
        assert!(a.failures.lock().len() <= MAX_TRACKED);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = rfc3339_now();
        assert_eq!(t.len(), 27, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}
