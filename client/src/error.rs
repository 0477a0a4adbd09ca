//! The client's error type, and how server error replies map onto it.
//!
//! Server failures ([`ErrorReply`] codes) become variants that carry the
//! reply's structured details, so callers branch with `match`, never by
//! parsing messages. Transport failures are variants of their own, and
//! [`Error::is_retryable`] tells which failures a retry may cure.

use std::io;

use logbook_protocol::{ErrorCode, ErrorReply, ExpectedVersion, Request, StreamVersion};

/// Result type of every client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a client call can fail with.
///
/// Match on the variants to handle the failures your code can act on:
///
/// ```no_run
/// use logbook_client::{Client, Error, EventId, ExpectedVersion, NewEvent, StreamVersion};
///
/// # async fn demo(client: Client, seen: StreamVersion) -> logbook_client::Result<()> {
/// let event = NewEvent::new(EventId::from_u128(3), "MoneyWithdrawn", r#"{"amount":5}"#);
/// match client.append("account-42", ExpectedVersion::Exact(seen), vec![event]).await {
///     Ok(result) => println!("now at version {}", result.last_version),
///     Err(Error::WrongExpectedVersion { actual, .. }) => {
///         println!("someone else wrote first; the stream is at {actual:?}: reload and retry")
///     }
///     Err(e) if e.is_retryable() => println!("server unavailable for now: {e}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The expected version of an append, a delete or a metadata change
    /// (checked against the metadata stream `$$stream`, which `stream`
    /// then names) did not hold when it was committed; nothing was
    /// written. Never retried: read the stream and decide again.
    #[error("wrong expected version on stream {stream:?}: expected {expected}, actual {}", fmt_actual(.actual))]
    WrongExpectedVersion {
        /// The stream appended to (or deleted, or `$$stream` for a metadata
        /// change).
        stream: String,
        /// What the append expected.
        expected: ExpectedVersion,
        /// The stream's last version at commit time; `None` if it had no
        /// events.
        actual: Option<StreamVersion>,
    },

    /// The stream does not exist where that is an error.
    #[error("stream {stream:?} not found")]
    StreamNotFound {
        /// The stream concerned.
        stream: String,
    },

    /// The stream was hard-deleted: reading it, appending to it and its
    /// lifecycle operations fail, for ever. Never retried.
    #[error("stream {stream:?} is deleted")]
    StreamDeleted {
        /// The stream concerned.
        stream: String,
    },

    /// No consumer group of that name (it was never created, or was
    /// deleted).
    #[error("no consumer group {group:?}")]
    GroupNotFound {
        /// The group.
        group: String,
    },

    /// A consumer group of that name exists already.
    #[error("consumer group {group:?} exists")]
    GroupExists {
        /// The group.
        group: String,
    },

    /// The request is invalid: refused by the server (malformed body, bad
    /// name, ...) or caught by the client before sending (an invalid stream
    /// name or event type, an empty batch, a zero page size).
    #[error("bad request: {0}")]
    BadRequest(String),

    /// The request exceeds a limit: a server limit it reported, the
    /// server's limits announced in `HelloOk` (checked before sending), or
    /// the maximum frame size.
    #[error("request too large: {message}")]
    TooLarge {
        /// The limit that was exceeded, in the limit's own unit (events,
        /// bytes), when known.
        limit: Option<u64>,
        /// What was too large, for people.
        message: String,
    },

    /// The server requires credentials and those in
    /// [`crate::ClientOptions`] are missing or wrong (or the user was
    /// removed or disabled, or its token revoked). Never retried.
    #[error("not authenticated")]
    NotAuthenticated,

    /// The user lacks the right the request needs. Never retried.
    #[error("access denied: {message}")]
    AccessDenied {
        /// The stream concerned, when a stream's right is missing.
        stream: Option<String>,
        /// Which right is missing, for people.
        message: String,
    },

    /// The node is not its cluster's leader, and the request must go to
    /// the leader; nothing was written. `leader` is its client address
    /// when the node knows it. Retried by the retry policy: the client
    /// reconnects to the leader (or, during an election, waits its
    /// back-off and asks again).
    #[error("not the leader{}", match .leader { Some(l) => format!(" (the leader is at {l})"), None => " (no leader is known yet)".into() })]
    NotLeader {
        /// The leader's client address, if known.
        leader: Option<String>,
    },

    /// The server does not serve this request in its present configuration
    /// (on a cluster: requests that change the log other than appends, not
    /// replicated yet). Never retried.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The server is overloaded. Retried by the retry policy.
    #[error("server busy")]
    ServerBusy,

    /// The server is shutting down. Retried (on a new connection) by the
    /// retry policy.
    #[error("server shutting down")]
    ShuttingDown,

    /// The server found corrupt data while serving the request (the message
    /// names file and offset).
    #[error("server reports corruption: {0}")]
    Corruption(String),

    /// The server failed unexpectedly.
    #[error("internal server error: {0}")]
    Internal(String),

    /// An event id of the append is already stored and the append is not
    /// an exact resend of the batch that stored it (the same ids in the
    /// same order, to the same stream, with the same content), or an id
    /// repeats within the append. Nothing was written. Event ids are
    /// unique in a store for ever: give each new event a new id, and
    /// resend a batch only unchanged. Never retried.
    #[error("duplicate event id {id} (stored in stream {stream}{})", match .position { Some(p) => format!(" at position {p}"), None => " earlier in the same append".to_string() })]
    DuplicateEventId {
        /// The id.
        id: logbook_protocol::EventId,
        /// The stream it is stored in.
        stream: String,
        /// Where it is stored; `None` when it repeats within the append.
        position: Option<logbook_protocol::LogPosition>,
    },

    /// A subscription's start is past the end of the log, or of its stream:
    /// its checkpoint is not from this store (or from before the store was
    /// restored from an older backup). Never retried: the events the
    /// checkpoint says were processed are not here.
    #[error("subscription start out of range: {message}")]
    OutOfRange {
        /// The stream, for a stream subscription.
        stream: Option<String>,
        /// The stream's last version then (`None`: it had no events, or
        /// the subscription is to the global log).
        last_version: Option<StreamVersion>,
        /// What was out of range, for people.
        message: String,
    },

    /// The server speaks no protocol version this client speaks.
    #[error("unsupported protocol version (server speaks up to {max_version:?})")]
    UnsupportedVersion {
        /// The highest protocol version the server speaks, if it said.
        max_version: Option<u8>,
    },

    /// The server answered with an error code this client does not know
    /// (a newer server).
    #[error("server error {code}: {message}")]
    Server {
        /// The wire value of the code.
        code: u16,
        /// What went wrong, for people.
        message: String,
    },

    /// The call did not complete within
    /// [`ClientOptions::request_timeout`](crate::ClientOptions::request_timeout)
    /// (retries included). The request may or may not have taken effect.
    #[error("request timed out")]
    Timeout,

    /// Opening a connection failed (TCP connect, or the connection broke
    /// during the handshake), or did not finish within the connect timeout
    /// (kind [`io::ErrorKind::TimedOut`]).
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),

    /// The connection broke before the reply arrived, and the retry policy
    /// gave up (or does not apply).
    #[error("disconnected before the reply arrived")]
    Disconnected,

    /// The server sent bytes that break the protocol (bad frame, malformed
    /// or mismatched reply), or a request could not be encoded. The
    /// connection is dropped and the next call opens a new one.
    #[error("protocol error: {0}")]
    Protocol(#[source] logbook_protocol::Error),

    /// A local file operation failed (a backup's target directory).
    #[error("{context} {}: {source}", path.display())]
    LocalIo {
        /// What was being done.
        context: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn fmt_actual(actual: &Option<StreamVersion>) -> String {
    match actual {
        Some(v) => v.to_string(),
        None => "no stream".to_owned(),
    }
}

impl Error {
    /// Whether the retry policy may send the request again after this
    /// error: the connection broke or could not be opened, or the server
    /// refused the work for now (`ServerBusy`, `ShuttingDown`). Errors about
    /// the request itself (wrong expected version, bad request, ...) are
    /// never retried.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Disconnected
                | Error::Connect(_)
                | Error::ServerBusy
                | Error::ShuttingDown
                | Error::NotLeader { .. }
        )
    }

    /// Maps an error reply to its variant. `request` fills details the
    /// reply left out (the stream, the expected version), so the variant is
    /// as complete as possible.
    pub(crate) fn from_reply(reply: ErrorReply, request: &Request) -> Error {
        let stream = || -> String {
            match (&reply.stream, request) {
                (Some(s), _) => s.to_string(),
                (None, Request::Append(a)) => a.stream.to_string(),
                (None, Request::ReadStream(r)) => r.stream.to_string(),
                (None, Request::SetMetadata(m)) => m.stream.to_string(),
                (None, Request::GetMetadata(g)) => g.stream.to_string(),
                (None, Request::Truncate(t)) => t.stream.to_string(),
                (None, Request::DeleteStream(d)) => d.stream.to_string(),
                (None, Request::Erase(e)) => e.stream.to_string(),
                (None, _) => String::new(),
            }
        };
        let group = || -> String {
            match request {
                Request::CreateGroup(g) => g.group.clone(),
                Request::UpdateGroup(g) => g.group.clone(),
                Request::DeleteGroup(g) => g.group.clone(),
                Request::JoinGroup(g) => g.group.clone(),
                Request::ListParked(g) => g.group.clone(),
                Request::ReplayParked(g) => g.group.clone(),
                Request::DeleteParked(g) => g.group.clone(),
                _ => String::new(),
            }
        };
        match reply.code {
            ErrorCode::WrongExpectedVersion => Error::WrongExpectedVersion {
                stream: stream(),
                expected: reply.expected.unwrap_or(match request {
                    Request::Append(a) => a.expected,
                    Request::SetMetadata(m) => m.expected,
                    Request::DeleteStream(d) => d.expected,
                    _ => ExpectedVersion::Any,
                }),
                actual: reply.actual.flatten(),
            },
            ErrorCode::StreamNotFound => Error::StreamNotFound { stream: stream() },
            ErrorCode::StreamDeleted => Error::StreamDeleted { stream: stream() },
            ErrorCode::GroupNotFound => Error::GroupNotFound { group: group() },
            ErrorCode::GroupExists => Error::GroupExists { group: group() },
            ErrorCode::BadRequest => Error::BadRequest(reply.message),
            ErrorCode::TooLarge => Error::TooLarge {
                limit: reply.limit,
                message: reply.message,
            },
            ErrorCode::NotAuthenticated => Error::NotAuthenticated,
            ErrorCode::AccessDenied => Error::AccessDenied {
                stream: reply.stream.as_ref().map(|s| s.to_string()),
                message: reply.message,
            },
            ErrorCode::ServerBusy => Error::ServerBusy,
            ErrorCode::ShuttingDown => Error::ShuttingDown,
            ErrorCode::NotLeader => Error::NotLeader {
                leader: reply.leader,
            },
            ErrorCode::Unsupported => Error::Unsupported(reply.message),
            ErrorCode::Corruption => Error::Corruption(reply.message),
            ErrorCode::Internal => Error::Internal(reply.message),
            ErrorCode::UnsupportedVersion => Error::UnsupportedVersion {
                max_version: reply.max_version,
            },
            ErrorCode::DuplicateEventId => Error::DuplicateEventId {
                id: reply.event_id.unwrap_or_default(),
                stream: stream(),
                position: reply.position,
            },
            ErrorCode::OutOfRange => Error::OutOfRange {
                stream: reply.stream.as_ref().map(|s| s.to_string()),
                last_version: reply.actual.flatten(),
                message: reply.message,
            },
            code => Error::Server {
                code: code.as_u16(),
                message: reply.message,
            },
        }
    }

    /// Maps a failure to encode an outgoing request.
    pub(crate) fn from_encode(e: logbook_protocol::Error) -> Error {
        match e {
            logbook_protocol::Error::TooLarge { len, max } => Error::TooLarge {
                limit: Some(u64::from(max)),
                message: format!("request frame of at least {len} bytes exceeds {max} bytes"),
            },
            other => Error::Protocol(other),
        }
    }

    /// A copy of a connect failure, for callers that waited on another
    /// caller's connection attempt (`io::Error` is not `Clone`).
    pub(crate) fn replay_connect(kind: io::ErrorKind, message: &str) -> Error {
        Error::Connect(io::Error::new(kind, message.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_protocol::{Append, ReadAll, Text};

    fn append() -> Request {
        Request::Append(Append {
            stream: Text::from("s-1"),
            expected: ExpectedVersion::Exact(StreamVersion(4)),
            events: Vec::new(),
        })
    }

    #[test]
    fn wrong_expected_version_falls_back_to_the_request() {
        let reply = ErrorReply::new(ErrorCode::WrongExpectedVersion, "no");
        match Error::from_reply(reply, &append()) {
            Error::WrongExpectedVersion {
                stream,
                expected,
                actual,
            } => {
                assert_eq!(stream, "s-1");
                assert_eq!(expected, ExpectedVersion::Exact(StreamVersion(4)));
                assert_eq!(actual, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stream_deleted_names_the_stream() {
        let reply = ErrorReply::new(ErrorCode::StreamDeleted, "gone").with_stream("s-2");
        assert!(matches!(
            Error::from_reply(reply, &append()),
            Error::StreamDeleted { stream } if stream == "s-2"
        ));
        // Without the detail, the request's stream.
        let reply = ErrorReply::new(ErrorCode::StreamDeleted, "gone");
        assert!(matches!(
            Error::from_reply(reply, &append()),
            Error::StreamDeleted { stream } if stream == "s-1"
        ));
        assert!(!Error::StreamDeleted { stream: "s".into() }.is_retryable());
    }

    #[test]
    fn unknown_codes_keep_their_value() {
        let reply = ErrorReply::new(ErrorCode::from_u16(77), "new");
        let read = Request::ReadAll(ReadAll {
            from: None,
            direction: logbook_protocol::Direction::Forward,
            max_count: 1,
            min_position: None,
        });
        assert!(matches!(
            Error::from_reply(reply, &read),
            Error::Server { code: 77, .. }
        ));
    }

    #[test]
    fn retryable_errors() {
        assert!(Error::Disconnected.is_retryable());
        assert!(Error::ServerBusy.is_retryable());
        assert!(!Error::Timeout.is_retryable());
        assert!(!Error::BadRequest(String::new()).is_retryable());
    }
}
