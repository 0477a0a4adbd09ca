//! Bytes from disk, checked and parsed as a log record.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| logbook_storage::fuzzing::record(data));
