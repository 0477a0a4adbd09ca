//! A segment of arbitrary records: recovery refuses or opens, and what it
//! opens reads back.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| logbook_storage::fuzzing::recover_segment(data));
