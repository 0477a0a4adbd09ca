//! What `loadgen` prints: one [`Row`] per measurement, as a table row for
//! people and as one JSON line for scripts, plus the issue's targets
//! ([`evaluate_target`]) and the header's date ([`utc_date`]).
//!
//! JSON lines are flat objects with stable field names, always in this
//! order: `workload`, `part` (W4 only), `clients`, `batch`, `events`,
//! `seconds`, `events_per_sec`, `ops_per_sec`, `p50_ms`, `p99_ms`,
//! `p999_ms`, `payload_bytes`, the workload's own fields, then `target` and
//! `target_ok` when the issue sets a target for that configuration.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::latency::Summary;
use crate::si;

/// A workload-specific field's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A count.
    U64(u64),
    /// A number, printed with three decimals.
    F64(f64),
    /// A duration, printed in milliseconds with three decimals.
    Ms(Duration),
    /// A flag.
    Bool(bool),
    /// Text.
    Str(String),
}

impl Value {
    fn json(&self, out: &mut String) {
        match self {
            Value::U64(n) => {
                let _ = write!(out, "{n}");
            }
            Value::F64(x) => json_f64(out, *x, 3),
            Value::Ms(d) => json_f64(out, d.as_secs_f64() * 1e3, 3),
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Value::Str(s) => json_str(out, s),
        }
    }
}

/// How a row compares with the issue's target for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The target, e.g. `events/s >= 26000 (aim 60000)`.
    pub text: String,
    /// Whether the row meets it.
    pub ok: bool,
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Row {
    /// `w1` ... `w6`, `s1` ... `s3`.
    pub workload: &'static str,
    /// Which measurement of a workload with several (W4: `stream_10k`,
    /// `random_short`).
    pub part: Option<&'static str>,
    /// Simulated clients (W4 `random_short`: reader tasks).
    pub clients: usize,
    /// Events per append, or page size asked for by reads.
    pub batch: usize,
    /// Events written or read in the measured time.
    pub events: u64,
    /// Measured time.
    pub seconds: f64,
    /// Events per second.
    pub events_per_sec: f64,
    /// Operations (appends, full reads, race rounds' appends) per second.
    pub ops_per_sec: f64,
    /// Latency per operation.
    pub latency: Summary,
    /// Payload bytes per event.
    pub payload_bytes: usize,
    /// Workload-specific fields, in print order.
    pub extra: Vec<(&'static str, Value)>,
    /// Workload-specific figures for the table's last column.
    pub notes: String,
    /// The issue's target, when it sets one for this configuration.
    pub target: Option<Target>,
}

impl Row {
    /// A row whose rates are `events` and `ops` over `seconds`.
    #[allow(clippy::too_many_arguments)]
    pub fn timed(
        workload: &'static str,
        part: Option<&'static str>,
        clients: usize,
        batch: usize,
        events: u64,
        ops: u64,
        seconds: f64,
        latency: Summary,
        payload_bytes: usize,
    ) -> Row {
        Row {
            workload,
            part,
            clients,
            batch,
            events,
            seconds,
            events_per_sec: per_sec(events, seconds),
            ops_per_sec: per_sec(ops, seconds),
            latency,
            payload_bytes,
            extra: Vec::new(),
            notes: String::new(),
            target: None,
        }
    }

    /// The row's name in the table: `w2` or `w4/stream_10k`.
    pub fn label(&self) -> String {
        match self.part {
            Some(part) => format!("{}/{part}", self.workload),
            None => self.workload.to_owned(),
        }
    }

    /// The workload-specific field `name`, if set.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.extra.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The row as one JSON object on one line.
    pub fn json(&self) -> String {
        let mut o = String::with_capacity(512);
        o.push_str("{\"workload\":");
        json_str(&mut o, self.workload);
        if let Some(part) = self.part {
            o.push_str(",\"part\":");
            json_str(&mut o, part);
        }
        let _ = write!(
            o,
            ",\"clients\":{},\"batch\":{},\"events\":{},\"seconds\":",
            self.clients, self.batch, self.events
        );
        json_f64(&mut o, self.seconds, 3);
        o.push_str(",\"events_per_sec\":");
        json_f64(&mut o, self.events_per_sec, 1);
        o.push_str(",\"ops_per_sec\":");
        json_f64(&mut o, self.ops_per_sec, 1);
        for (name, d) in [
            ("p50_ms", self.latency.p50),
            ("p99_ms", self.latency.p99),
            ("p999_ms", self.latency.p999),
        ] {
            let _ = write!(o, ",\"{name}\":");
            json_f64(&mut o, d.as_secs_f64() * 1e3, 3);
        }
        let _ = write!(o, ",\"payload_bytes\":{}", self.payload_bytes);
        for (name, value) in &self.extra {
            o.push(',');
            json_str(&mut o, name);
            o.push(':');
            value.json(&mut o);
        }
        if let Some(t) = &self.target {
            o.push_str(",\"target\":");
            json_str(&mut o, &t.text);
            let _ = write!(o, ",\"target_ok\":{}", t.ok);
        }
        o.push('}');
        o
    }

    /// The table's header line (see [`Row::table_row`]).
    pub fn table_header() -> String {
        format!(
            "{:<18} {:>7} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8}  {}",
            "workload",
            "clients",
            "batch",
            "events/s",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "target | notes"
        )
    }

    /// The row as a line of the table.
    pub fn table_row(&self) -> String {
        let target = match &self.target {
            Some(t) => format!("{} {}", if t.ok { "ok" } else { "MISS" }, t.text),
            None => "-".to_owned(),
        };
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        format!(
            "{:<18} {:>7} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8}  {target} | {}",
            self.label(),
            self.clients,
            self.batch,
            si(self.events_per_sec),
            si(self.ops_per_sec),
            ms(self.latency.p50),
            ms(self.latency.p99),
            ms(self.latency.p999),
            self.notes
        )
    }
}

/// `n / seconds`, 0 for an empty interval.
pub fn per_sec(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// The issue's targets (2 cores, client and server on one machine,
/// durable), for the default configuration of each workload and a 200-byte
/// payload; `None` elsewhere. `fsync_p50`: the disk's `fdatasync` p50, if
/// measured (W1's target depends on it). `earlier`: rows already measured
/// in this run (W2 at 512 clients must beat W2 at 64).
pub fn evaluate_target(row: &Row, earlier: &[Row], fsync_p50: Option<Duration>) -> Option<Target> {
    if row.payload_bytes != crate::events::DEFAULT_DATA_BYTES {
        return None;
    }
    let at_least = |value: f64, min: f64, text: String| Target {
        text,
        ok: value >= min,
    };
    match (row.workload, row.part, row.clients, row.batch) {
        ("w1", _, 1, 1) => {
            let limit = fsync_p50? + Duration::from_micros(100);
            Some(Target {
                text: format!(
                    "p50 <= fsync p50 + 0.1 ms = {:.3} ms",
                    limit.as_secs_f64() * 1e3
                ),
                ok: row.latency.p50 <= limit,
            })
        }
        ("w2", _, 64, 1) => Some(at_least(
            row.events_per_sec,
            26_000.0,
            "events/s >= 26k (aim 60k)".to_owned(),
        )),
        ("w2", _, 512, 1) => {
            let at_64 = earlier
                .iter()
                .find(|r| r.workload == "w2" && r.clients == 64 && r.batch == 1)?;
            Some(Target {
                text: format!("events/s > w2 at 64 clients ({})", si(at_64.events_per_sec)),
                ok: row.events_per_sec > at_64.events_per_sec,
            })
        }
        ("w3", _, 8, 100) => Some(at_least(
            row.events_per_sec,
            500_000.0,
            "events/s >= 500k".to_owned(),
        )),
        ("w4", Some("stream_10k"), _, _) => Some(Target {
            text: "full read p50 <= 5 ms".to_owned(),
            ok: row.latency.p50 <= Duration::from_millis(5),
        }),
        ("w4", Some("random_short"), 16, _) => Some(at_least(
            row.ops_per_sec,
            42_000.0,
            "reads/s >= 42k".to_owned(),
        )),
        ("w5", _, _, _) => Some(at_least(
            row.events_per_sec,
            1_900_000.0,
            "events/s >= 1.9M".to_owned(),
        )),
        ("s1", _, _, _) => Some(at_least(
            row.events_per_sec,
            1_900_000.0,
            "catch-up events/s >= 1.9M".to_owned(),
        )),
        ("s3", Some(part), _, _) if part != "subs_0" => {
            let base = earlier
                .iter()
                .find(|r| r.workload == "s3" && r.part == Some("subs_0"))?;
            let loss = 1.0 - row.events_per_sec / base.events_per_sec.max(1.0);
            let text = "writer loss vs no subscribers < 20% (at 100)".to_owned();
            if part == "subs_100" {
                Some(Target {
                    text,
                    ok: loss < 0.2,
                })
            } else {
                None
            }
        }
        ("w6", _, 16, _) => {
            let rounds = match row.field("rounds_per_sec") {
                Some(Value::F64(r)) => *r,
                _ => 0.0,
            };
            Some(at_least(
                rounds,
                1_100.0,
                "rounds/s >= 1.1k, one winner each".to_owned(),
            ))
        }
        _ => None,
    }
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `x` with `decimals` decimals (`null` if not finite).
fn json_f64(out: &mut String, x: f64, decimals: usize) {
    if x.is_finite() {
        let _ = write!(out, "{x:.decimals$}");
    } else {
        out.push_str("null");
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_date() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
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
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &'static str, clients: usize, batch: usize, eps: f64) -> Row {
        let mut r = Row::timed(
            workload,
            None,
            clients,
            batch,
            0,
            0,
            1.0,
            Summary::default(),
            200,
        );
        r.events_per_sec = eps;
        r
    }

    #[test]
    fn json_line_has_the_stable_fields_in_order() {
        let mut r = Row::timed(
            "w6",
            None,
            16,
            1,
            1000,
            16_000,
            2.0,
            Summary {
                count: 3,
                p50: Duration::from_micros(250),
                p99: Duration::from_micros(1500),
                p999: Duration::from_millis(3),
                max: Duration::from_millis(4),
                mean: Duration::from_micros(300),
            },
            200,
        );
        r.extra.push(("rounds_per_sec", Value::F64(500.0)));
        r.extra.push(("winners_ok", Value::Bool(true)));
        r.extra.push(("note", Value::Str("a \"q\"\n".to_owned())));
        r.target = evaluate_target(&r, &[], None);
        assert_eq!(
            r.json(),
            "{\"workload\":\"w6\",\"clients\":16,\"batch\":1,\"events\":1000,\
             \"seconds\":2.000,\"events_per_sec\":500.0,\"ops_per_sec\":8000.0,\
             \"p50_ms\":0.250,\"p99_ms\":1.500,\"p999_ms\":3.000,\"payload_bytes\":200,\
             \"rounds_per_sec\":500.000,\"winners_ok\":true,\"note\":\"a \\\"q\\\"\\n\",\
             \"target\":\"rounds/s >= 1.1k, one winner each\",\"target_ok\":false}"
        );
        assert!(r.table_row().starts_with("w6 "));
        assert!(r.table_row().contains("MISS"));
    }

    #[test]
    fn targets_apply_to_default_configurations_only() {
        let w2_64 = row("w2", 64, 1, 30_000.0);
        assert_eq!(evaluate_target(&w2_64, &[], None).map(|t| t.ok), Some(true));
        let w2_512 = row("w2", 512, 1, 20_000.0);
        assert_eq!(
            evaluate_target(&w2_512, std::slice::from_ref(&w2_64), None).map(|t| t.ok),
            Some(false)
        );
        assert_eq!(evaluate_target(&w2_512, &[], None), None);
        assert_eq!(evaluate_target(&row("w2", 32, 1, 1e9), &[], None), None);
        let mut w1 = row("w1", 1, 1, 0.0);
        assert_eq!(evaluate_target(&w1, &[], None), None);
        w1.latency.p50 = Duration::from_micros(240);
        let t = evaluate_target(&w1, &[], Some(Duration::from_micros(150)));
        assert_eq!(t.map(|t| t.ok), Some(true));
        let t = evaluate_target(&w1, &[], Some(Duration::from_micros(130)));
        assert_eq!(t.map(|t| t.ok), Some(false));
        let mut big = row("w3", 8, 100, 1e9);
        big.payload_bytes = 1000;
        assert_eq!(evaluate_target(&big, &[], None), None);
    }

    #[test]
    fn dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }
}
