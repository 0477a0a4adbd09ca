//! Why a command failed, and the exit code that tells scripts which way.
//!
//! The codes are part of the interface: `logbook --help` lists them (the
//! table is [`EXIT_CODES`]) and so does `cli/README.md`.

use std::io;

use logbook_client::Error;

/// The exit-code table, shown after `logbook --help`.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure (local I/O error, unexpected error)
  2  bad input or usage: unknown flag or command, invalid JSON in --data or
     --metadata, unreadable --data-file, a request the server or client
     rejects as invalid or too large (bad stream name, empty event type)
  3  the server cannot be reached: connection refused, host unreachable,
     timed out, or connection lost and not regained
  4  wrong expected version: the append's --expected did not hold, nothing
     was written
  5  stream not found (reading a stream that has no events) or deleted for
     ever (delete --hard: reads, appends and metadata changes all fail), or
     no consumer group of that name
  6  any other error reported by the server: not authenticated, access
     denied, busy, shutting down, corruption, internal error, protocol
     mismatch, a consumer group that exists already";

/// What kind of failure, which fixes the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Anything not listed below.
    Other = 1,
    /// Bad input or usage (clap uses 2 for usage errors too).
    Usage = 2,
    /// The server could not be reached, or the connection was lost.
    Unreachable = 3,
    /// An append's expected version did not hold.
    WrongExpectedVersion = 4,
    /// The stream has no events, or was hard-deleted (or the consumer
    /// group does not exist).
    StreamNotFound = 5,
    /// Any other error the server reported.
    Server = 6,
}

/// A failed command: its exit code and the line printed after
/// `logbook: error: `. A `quiet` failure prints nothing (stdout was closed
/// by the reader, as `logbook read-all | head` does).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) message: String,
    pub(crate) quiet: bool,
}

impl Failure {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
            quiet: false,
        }
    }

    /// Bad input or usage: exit code 2.
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message)
    }

    /// A client call failed; `server` is the address it talked to.
    pub(crate) fn client(e: Error, server: &str) -> Failure {
        let exit = exit_of(&e);
        let message = match exit {
            Exit::Unreachable => format!("logbookd at {server}: {e}"),
            _ => e.to_string(),
        };
        Failure::new(exit, message)
    }

    /// Writing to stdout failed. A closed pipe is the reader saying it has
    /// seen enough: end quietly and successfully, like `yes | head` does.
    pub(crate) fn stdout(e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure {
                exit: Exit::Other,
                message: String::new(),
                quiet: true,
            }
        } else {
            Failure::new(Exit::Other, format!("writing to stdout: {e}"))
        }
    }
}

/// The exit code for a client error.
pub(crate) fn exit_of(e: &Error) -> Exit {
    match e {
        Error::WrongExpectedVersion { .. } => Exit::WrongExpectedVersion,
        Error::StreamNotFound { .. }
        | Error::StreamDeleted { .. }
        | Error::GroupNotFound { .. } => Exit::StreamNotFound,
        Error::BadRequest(_) | Error::TooLarge { .. } => Exit::Usage,
        Error::Connect(_) | Error::Disconnected | Error::Timeout => Exit::Unreachable,
        Error::NotAuthenticated
        | Error::AccessDenied { .. }
        | Error::ServerBusy
        | Error::ShuttingDown
        | Error::Corruption(_)
        | Error::Internal(_)
        | Error::UnsupportedVersion { .. }
        | Error::Server { .. }
        | Error::GroupExists { .. }
        | Error::NotLeader { .. }
        | Error::Unsupported(_)
        | Error::Protocol(_) => Exit::Server,
        Error::LocalIo { .. } => Exit::Other,
        // `Error` is non-exhaustive: a variant added later is "other" until
        // it is placed in the table.
        _ => Exit::Other,
    }
}

/// One line for a clap error (the first paragraph of its message, minus
/// clap's `error: ` prefix), so every failure reads `logbook: error: ...`.
pub(crate) fn clap_summary(rendered: &str) -> String {
    let first = rendered.split("\n\n").next().unwrap_or(rendered);
    let first = first.trim().strip_prefix("error:").unwrap_or(first);
    first.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_client::{ExpectedVersion, StreamVersion};

    #[test]
    fn client_errors_map_to_distinct_codes() {
        let wrong = Error::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::NoStream,
            actual: Some(StreamVersion(0)),
        };
        assert_eq!(exit_of(&wrong), Exit::WrongExpectedVersion);
        assert_eq!(
            exit_of(&Error::StreamNotFound { stream: "s".into() }),
            Exit::StreamNotFound
        );
        assert_eq!(
            exit_of(&Error::StreamDeleted { stream: "s".into() }),
            Exit::StreamNotFound
        );
        let refused = Error::Connect(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(exit_of(&refused), Exit::Unreachable);
        assert_eq!(exit_of(&Error::BadRequest("x".into())), Exit::Usage);
        assert_eq!(exit_of(&Error::Internal("x".into())), Exit::Server);
        assert_eq!(exit_of(&Error::ServerBusy), Exit::Server);
        let codes = [1, 2, 3, 4, 5, 6];
        let exits = [
            Exit::Other,
            Exit::Usage,
            Exit::Unreachable,
            Exit::WrongExpectedVersion,
            Exit::StreamNotFound,
            Exit::Server,
        ];
        for (code, exit) in codes.iter().zip(exits) {
            assert_eq!(*code, exit as u8);
            assert!(EXIT_CODES.contains(&format!("  {code}  ")));
        }
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  \
                        --type <TYPE>\n\nUsage: logbook append --type <TYPE> <STREAM>\n\n\
                        For more information, try '--help'.\n";
        assert_eq!(
            clap_summary(rendered),
            "the following required arguments were not provided: --type <TYPE>"
        );
    }
}
