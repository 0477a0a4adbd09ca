//! Engine errors as protocol error replies. One place decides which code a
//! failure gets, so every request kind (and every subscription's `ended`
//! push) reports the same failure the same way.

use logbook_protocol::{ErrorCode, ErrorReply};

use super::subscription::StartError;
use logbook_storage::{AppendError, ReadError, StorageError};

/// The reply for a failed append.
pub fn append_error(e: &AppendError) -> ErrorReply {
    match e {
        AppendError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => ErrorReply::new(ErrorCode::WrongExpectedVersion, e.to_string())
            .with_stream(stream.as_str())
            .with_versions(*expected, *actual),
        AppendError::TooLarge { max, .. } => {
            ErrorReply::new(ErrorCode::TooLarge, e.to_string()).with_limit(*max)
        }
        AppendError::EmptyBatch
        | AppendError::InvalidEventType { .. }
        | AppendError::ReservedStream { .. }
        | AppendError::InvalidMetadata(_) => ErrorReply::new(ErrorCode::BadRequest, e.to_string()),
        AppendError::StreamDeleted { stream } => {
            ErrorReply::new(ErrorCode::StreamDeleted, e.to_string()).with_stream(stream.as_str())
        }
        AppendError::DuplicateEventId {
            id,
            stream,
            position,
        } => ErrorReply::new(ErrorCode::DuplicateEventId, e.to_string())
            .with_stream(stream.as_str())
            .with_event_id(*id, *position),
        AppendError::Storage(s) => storage_error(s),
        // The engine's errors are non-exhaustive: a kind this server does
        // not know yet is the server's trouble, not the request's.
        _ => ErrorReply::new(ErrorCode::Internal, e.to_string()),
    }
}

/// The reply for a failed read.
pub fn read_error(e: &ReadError) -> ErrorReply {
    match e {
        ReadError::StreamDeleted { stream } => {
            ErrorReply::new(ErrorCode::StreamDeleted, e.to_string()).with_stream(stream.as_str())
        }
        ReadError::Storage(s) => storage_error(s),
        _ => ErrorReply::new(ErrorCode::Internal, e.to_string()),
    }
}

/// The reply for a storage failure.
pub fn storage_error(e: &StorageError) -> ErrorReply {
    let code = match e {
        StorageError::ShuttingDown => ErrorCode::ShuttingDown,
        StorageError::Busy(_) => ErrorCode::ServerBusy,
        e if e.is_corruption() => ErrorCode::Corruption,
        // WriterFailed, I/O errors and the rest: the server's own trouble,
        // not the request's. The message says what it was.
        _ => ErrorCode::Internal,
    };
    ErrorReply::new(code, e.to_string())
}

/// The reply for a Subscribe that cannot start.
pub(crate) fn start_error(e: &StartError) -> ErrorReply {
    match e {
        StartError::PastLogEnd { .. } => ErrorReply::new(ErrorCode::OutOfRange, e.to_string()),
        StartError::PastStreamEnd { stream, last, .. } => {
            ErrorReply::new(ErrorCode::OutOfRange, e.to_string())
                .with_stream(stream.clone())
                .with_actual(*last)
        }
        StartError::Read(r) => read_error(r),
    }
}
