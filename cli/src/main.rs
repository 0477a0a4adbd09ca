//! `logbook`: the command-line tool for a Logbook daemon (being built).

use clap::Parser;

/// Talk to a Logbook daemon.
#[derive(Parser, Debug)]
#[command(name = "logbook", version)]
struct Args {}

fn main() {
    let _ = Args::parse();
}
