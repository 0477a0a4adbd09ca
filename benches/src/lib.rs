//! # logbook-bench
//!
//! Helpers shared by Logbook's criterion benches (`benches/engine.rs`,
//! `benches/components.rs`) and the `loadgen` binary (`src/bin/loadgen.rs`).
//! Nothing here depends on criterion, so every helper works in an ordinary
//! binary too.
//!
//! ## Layout
//! - [`events`]: event and stream-name generation (unique ids, ~200-byte
//!   payloads).
//! - [`latency`]: a latency recorder (HDR histogram) and its summary.
//! - [`disk`]: the machine's own limits on a given directory: `fdatasync`
//!   latency (overwriting preallocated blocks, or growing a file) and
//!   sequential write bandwidth.
//! - [`loadgen`]: the workloads of the network load generator (W1-W6) and
//!   its report (table rows, JSON lines, targets).
//! - This file: where benches put their data ([`bench_dir`]) and small
//!   environment-variable readers.
//!
//! Run `cargo bench -p logbook-bench`, or `loadgen` against a running
//! daemon; `benches/README.md` explains every figure and environment
//! variable.

pub mod disk;
pub mod events;
pub mod latency;
pub mod loadgen;

use std::path::PathBuf;

use tempfile::TempDir;

/// Environment variable naming the directory benches create their data in.
/// It must be on the disk being measured; default: the system temp dir.
pub const BENCH_DIR_VAR: &str = "LOGBOOK_BENCH_DIR";

/// The directory benches create their temporary directories in:
/// `$LOGBOOK_BENCH_DIR` if set, else the system temp dir.
pub fn bench_root() -> PathBuf {
    std::env::var_os(BENCH_DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A fresh temporary directory under [`bench_root`], removed when dropped.
/// `label` becomes part of its name, to tell leftovers apart.
pub fn bench_dir(label: &str) -> std::io::Result<TempDir> {
    let root = bench_root();
    std::fs::create_dir_all(&root)?;
    tempfile::Builder::new()
        .prefix(&format!("logbook-bench-{label}-"))
        .tempdir_in(root)
}

/// Whether the environment variable `name` is set to a true value
/// (`1`, `true`, `yes`, `on`; case-insensitive).
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// The environment variable `name` as a number, or `default` if it is unset
/// or not a number (`_` separators allowed: `1_000_000`).
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Human-readable count: `1234567` -> `1.23M`.
pub fn si(n: f64) -> String {
    let a = n.abs();
    if a >= 1e9 {
        format!("{:.2}G", n / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", n / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", n / 1e3)
    } else {
        format!("{n:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_formats() {
        assert_eq!(si(12.0), "12.0");
        assert_eq!(si(1234.0), "1.2k");
        assert_eq!(si(2_500_000.0), "2.50M");
        assert_eq!(si(3e9), "3.00G");
    }

    #[test]
    fn bench_dir_is_created_under_the_root() {
        let d = bench_dir("unit").expect("tempdir");
        assert!(d.path().starts_with(bench_root()));
        assert!(d.path().is_dir());
    }
}
