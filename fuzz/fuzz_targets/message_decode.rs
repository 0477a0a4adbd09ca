//! Arbitrary message bodies in well-formed frames of every kind and opcode.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| logbook_protocol::fuzzing::bodies(data));
