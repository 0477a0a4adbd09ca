//! `logbook`: the command-line tool for a Logbook daemon, built on the
//! public API of `logbook-client` only. `cli/README.md` documents the
//! commands, the `--json` fields and the exit codes.
//!
//! ## Layout
//! - `main.rs`: parses the command line, runs the command on a
//!   single-threaded runtime, prints a failure as one line
//!   (`logbook: error: ...`) and exits with its code.
//! - `args.rs`: the clap definitions, and the parsers of `--expected`
//!   and `tail --from`.
//! - `cmd/`: one module per command (`ping`, `append`, `read` for `read`
//!   and `read-all`, `tail`, `lifecycle` for `metadata`, `truncate` and
//!   `delete`, `scavenge` for `scavenge` and `erase`, `stats`, `streams`,
//!   `backup`),
//!   dispatched by `cmd::run`; each connects, calls the client, prints.
//! - `output.rs`: buffered stdout, aligned tables and the event printer
//!   shared by `read`, `read-all` and `tail`.
//! - `render.rs`: pure formatting: payloads as JSON, base64 or a hex
//!   preview, RFC 3339 timestamps, the JSON line of an event.
//! - `failure.rs`: `Failure`, the exit-code table and how
//!   client errors map onto it.

mod args;
mod cmd;
mod failure;
mod output;
mod render;

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use crate::args::Cli;
use crate::failure::{Exit, Failure, clap_summary};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    // One thread is plenty for one connection, and starts faster.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&Failure::new(Exit::Other, format!("cannot start: {e}"))),
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.quiet => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}

fn fail(failure: &Failure) -> ExitCode {
    eprintln!("logbook: error: {}", failure.message);
    ExitCode::from(failure.exit as u8)
}

/// Help and version go to stdout as clap prints them; usage errors become
/// one `logbook: error:` line and exit code 2.
fn clap_exit(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(e.exit_code().clamp(0, 255) as u8)
        }
        _ => fail(&Failure::usage(format!(
            "{} (see logbook --help)",
            clap_summary(&e.render().to_string())
        ))),
    }
}
